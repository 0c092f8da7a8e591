"""Anomaly Transformer (Xu et al., ICLR 2022): association discrepancy with minimax training.

Each layer's *anomaly attention* computes two distributions over the window for every step:
the **series association** S (ordinary softmax self-attention) and the **prior association** P,
a Gaussian kernel over the distance ``|i - j|`` whose width sigma each step learns through a
linear projection (``sigma = 3 ** (sigmoid(5 x) + 1e-5) - 1`` as in the paper's code), rescaled
so every row sums to one. The **association discrepancy** of a step is the symmetric KL
divergence between its rows of P and S, averaged over heads and layers. A normal step attends
broadly across the window, far from its local prior; an anomaly, hard to relate to the whole
series, attends to its neighbours, so its discrepancy is small.

**Minimax training.** The minimise phase pulls the prior towards the series association
(loss ``rec + k * AssDis(P, S.detach())``, gradients reach P only through the discrepancy);
the maximise phase pushes the series association away from the prior (loss
``rec - k * AssDis(P.detach(), S)``). The reference implementation runs one backward pass per
phase before a single optimiser step, so the parameters receive the *sum* of both phases'
gradients. Gradients are linear in the loss, so one backward of the sum

    2 * rec + k * AssDis(P, S.detach()) - k * AssDis(P.detach(), S)

accumulates exactly the same gradients with one traversal of the graph (verified against the
two-backward form in ``tests/detectors/test_anomaly_transformer.py``); :func:`minimax_loss`
computes it with a single evaluation of the discrepancy. Its *value* is ``2 * rec`` (the two
discrepancy terms are equal numbers with different stop-gradients), so the early-stopping
signal is twice the held-out reconstruction error.

**Score.** ``softmax(-AssDis / temperature)`` over the steps of a window, times each step's
squared reconstruction error (mean over features), then averaged over the windows covering a
step. The paper's formula has no temperature (``temperature = 1``); the reference code
*multiplies* the discrepancy, summed over layers, by 50, i.e. ``temperature = 1 / (50 *
n_layers)`` here, which puts nearly all of a window's weight on one step. The default
``temperature = 50`` divides instead: the association weighting is a gentle re-ranking of
reconstruction errors rather than a near one-hot choice that ranks poorly.

Departures from the reference, by design: the distance matrix is built once per window length
as a buffer (not on every call, and with no hard-coded ``.cuda()``), the prior is normalised
once per layer (the reference rebuilds it inside each of its four KL terms), the two KL
directions share one log-ratio (:func:`symmetric_kl`), and the reference's unused per-layer
LayerNorm in the attention block is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.detectors.precision import at_least_float32
from pipeline.detectors.torch_base import TorchDetector, TorchDetectorConfig
from pipeline.detectors.transformer_ae import sinusoidal_positions

# Added inside the logarithms of the KL divergence so that an association that underflows to
# zero gives a large but finite divergence (the reference's choice).
_KL_EPS = 1e-4


class AnomalyTransformerConfig(TorchDetectorConfig):
    d_model: int = Field(default=64, ge=4)
    n_heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=3, ge=1)
    dim_feedforward: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    k: float = Field(default=3.0, ge=0, description="weight of the discrepancy in the minimax")
    temperature: float = Field(
        default=50.0, gt=0, description="score weights are softmax(-discrepancy / temperature)"
    )

    @model_validator(mode="after")
    def _heads_divide_model(self) -> AnomalyTransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        return self


def underflow_exponent(dtype: torch.dtype) -> float:
    """A whole exponent just above the one at which ``exp`` underflows ``dtype``'s normals.

    A narrow prior puts most of a row far below it. There ``exp`` is zero to within
    ``finfo.tiny`` (about 1e-38 in float32, next to the row's 1 at distance 0), yet on CPU
    it takes a slow underflow path: the profile of a training step at the reference
    configuration showed those exps at 5% of the step, ten times the cost of ordinary
    arguments. Flooring the exponent here leaves the prior unchanged to float precision.
    """
    return float(math.ceil(math.log(torch.finfo(dtype).tiny)))


class AnomalyAttention(nn.Module):
    """Multi-head self-attention that also returns its series and prior associations.

    The associations are computed in float32 at least (:func:`at_least_float32`): under bf16
    autocast only the projections and the attended values run in bf16, while the softmax, the
    prior's exp and the KL terms built on them keep float32 (CPU autocast would leave them in
    bf16); outside autocast the module computes in its own dtype (float64 in the gradient test).
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.sigma = nn.Linear(d_model, n_heads)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, squared_distances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attended values (batch, steps, d_model); series, prior (batch, heads, steps, steps)."""
        batch, steps, d_model = x.shape
        heads = (batch, steps, self.n_heads, d_model // self.n_heads)
        query = self.query(x).view(heads).transpose(1, 2)
        key = self.key(x).view(heads).transpose(1, 2)
        value = self.value(x).view(heads).transpose(1, 2)
        # Scaling the (steps, head_dim) queries costs less than scaling (steps, steps) logits.
        logits = (query / math.sqrt(heads[-1])) @ key.transpose(-1, -2)
        series = torch.softmax(at_least_float32(logits), dim=-1)

        sigma = at_least_float32(self.sigma(x)).transpose(1, 2)  # (batch, heads, steps)
        sigma = 3.0 ** (torch.sigmoid(5.0 * sigma) + 1e-5) - 1.0
        # The Gaussian's 1 / (sqrt(2 pi) sigma) factor cancels in the row normalisation; the
        # per-row coefficient -1 / (2 sigma^2) is formed once, so the (steps, steps) tensors
        # see one multiplication and one exp instead of two divisions.
        exponent = squared_distances * (-0.5 / sigma[..., None].pow(2))
        gaussian = torch.exp(exponent.clamp_min(underflow_exponent(exponent.dtype)))
        prior = gaussian / gaussian.sum(dim=-1, keepdim=True)

        attended = (series @ value).transpose(1, 2).reshape(batch, steps, d_model)
        return self.out(attended), series, prior


class AnomalyTransformerLayer(nn.Module):
    """Anomaly attention and a feed-forward block, each with residual and post-LayerNorm."""

    def __init__(self, config: AnomalyTransformerConfig) -> None:
        super().__init__()
        self.attention = AnomalyAttention(config.d_model, config.n_heads)
        self.norm_attention = nn.LayerNorm(config.d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.d_model, config.dim_feedforward),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.dim_feedforward, config.d_model),
        )
        self.norm_feed_forward = nn.LayerNorm(config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, squared_distances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, series, prior = self.attention(x, squared_distances)
        x = self.norm_attention(x + self.dropout(attended))
        x = self.norm_feed_forward(x + self.dropout(self.feed_forward(x)))
        return x, series, prior


class AnomalyTransformerModel(nn.Module):
    """Embedding, stacked anomaly-attention layers, linear reconstruction head."""

    squared_distances: torch.Tensor  # buffers: step distances for the prior, positions
    positions: torch.Tensor

    def __init__(self, n_features: int, window: int, config: AnomalyTransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(AnomalyTransformerLayer(config) for _ in range(config.n_layers))
        self.head = nn.Linear(config.d_model, n_features)
        steps = torch.arange(window, dtype=torch.float32)
        self.register_buffer(
            "squared_distances", (steps[:, None] - steps[None, :]).pow(2), persistent=False
        )
        self.register_buffer(
            "positions", sinusoidal_positions(window, config.d_model), persistent=False
        )

    def forward(
        self, windows: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Reconstruction of (batch, steps, features) windows, per-layer series and priors."""
        steps = windows.shape[1]
        distances = self.squared_distances[:steps, :steps]
        x = self.dropout(self.embed(windows) + self.positions[:steps])
        series: list[torch.Tensor] = []
        priors: list[torch.Tensor] = []
        for layer in self.layers:
            x, layer_series, layer_prior = layer(x, distances)
            series.append(layer_series)
            priors.append(layer_prior)
        return self.head(x), series, priors


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) along the last dimension, with each logarithm taken once.

    The two divergences share their log-ratio: the sum is ``sum((p - q) * (log p - log q))``,
    half the logarithms and elementwise passes (forward and backward) of two separate calls.
    """
    return ((p - q) * ((p + _KL_EPS).log() - (q + _KL_EPS).log())).sum(dim=-1)


def association_discrepancy(
    priors: Sequence[torch.Tensor], series: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Symmetric KL between prior and series association of each step, shape (batch, steps).

    Averaged over heads and layers, as in the paper's definition.
    """
    per_layer = [
        symmetric_kl(prior, layer_series).mean(dim=1)
        for prior, layer_series in zip(priors, series, strict=True)
    ]
    return torch.stack(per_layer).mean(dim=0)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward (the gradient-reversal layer of DANN)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def minimax_loss(
    windows: torch.Tensor,
    reconstruction: torch.Tensor,
    series: Sequence[torch.Tensor],
    priors: Sequence[torch.Tensor],
    k: float,
) -> torch.Tensor:
    """Both minimax phases in one loss whose single backward equals the two-backward reference.

    The sum of the phases, ``2 * rec + k * AssDis(P, S.detach()) - k * AssDis(P.detach(), S)``,
    holds the same discrepancy twice with opposite signs and different stop-gradients: its
    gradient is ``+k dAssDis/dP`` for the prior and ``-k dAssDis/dS`` for the series. One
    evaluation of the discrepancy with S behind a gradient reversal gives exactly that (the
    KL terms are computed once, not twice); subtracting its detached value keeps the loss's
    value at ``2 * rec``, as the sum's is.
    """
    reconstruction_loss = nn.functional.mse_loss(at_least_float32(reconstruction), windows)
    reversed_series = [_ReverseGradient.apply(layer_series) for layer_series in series]
    discrepancy = association_discrepancy(priors, reversed_series).mean()
    return 2.0 * reconstruction_loss + k * (discrepancy - discrepancy.detach())


class AnomalyTransformer(TorchDetector):
    """Anomaly Transformer (Xu et al., 2022): association-weighted reconstruction error."""

    name = "anomaly_transformer"
    Config = AnomalyTransformerConfig
    config: AnomalyTransformerConfig

    def build_module(self, n_features: int) -> nn.Module:
        return AnomalyTransformerModel(n_features, self.config.window, self.config)

    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        reconstruction, series, priors = module(windows)
        return minimax_loss(windows, reconstruction, series, priors, self.config.k)

    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Each feature's squared error weighted by its step's association weight.

        The weight ``softmax(-AssDis / temperature)`` over the window belongs to the step, so
        the features are ranked by reconstruction error alone, and their mean, the weight times
        the step's squared error, is the detector's score (:meth:`window_errors`).
        """
        reconstruction, series, priors = module(windows)
        discrepancy = association_discrepancy(priors, series)
        weights = torch.softmax(-discrepancy / self.config.temperature, dim=-1)
        return weights[..., None] * (at_least_float32(reconstruction) - windows).pow(2)
