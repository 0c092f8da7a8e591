"""The public Anomaly Transformer reference's training step, for speed comparison only.

A device-agnostic transcription of the training step of thuml/Anomaly-Transformer (MIT):
convolutional token embedding, anomaly attention whose Gaussian prior is rebuilt on every call
(distances repeated over batch and heads, the normalised prior recomputed inside every loss
term), and a solver that runs two backward passes per step (the maximise phase with
``retain_graph``, then the minimise phase) before one Adam step. Its input path materialises
every batch on the host, one NumPy copy per window, as its ``DataLoader`` does, and copies it
to the device. It is measured against tsad's :mod:`pipeline.detectors.anomaly_transformer` in
the same process; nothing in the product imports it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """Circular 1-D convolution over time (kernel 3), the reference's value embedding."""

    def __init__(self, n_features: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_features, d_model, 3, padding=1, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 2, 1)).transpose(1, 2)


def positional_embedding(window: int, d_model: int) -> torch.Tensor:
    position = torch.arange(window, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
    table = torch.zeros(window, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class ReferenceAnomalyAttention(nn.Module):
    """Projections plus the reference's attention: prior rebuilt from repeated distances."""

    def __init__(self, window: int, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.window, self.n_heads = window, n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.sigma = nn.Linear(d_model, n_heads)
        self.out = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)  # defined and never used, as in the reference
        steps = torch.arange(window, dtype=torch.float32)
        self.register_buffer("distances", (steps[:, None] - steps[None, :]).abs())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, steps, _ = x.shape
        heads = self.n_heads
        query = self.query(x).view(batch, steps, heads, -1)
        key = self.key(x).view(batch, steps, heads, -1)
        value = self.value(x).view(batch, steps, heads, -1)
        sigma = self.sigma(x).view(batch, steps, heads)
        scale = 1.0 / math.sqrt(query.shape[-1])
        scores = torch.einsum("blhe,bshe->bhls", query, key)
        series = torch.softmax(scale * scores, dim=-1)
        sigma = sigma.transpose(1, 2)
        sigma = torch.sigmoid(sigma * 5) + 1e-5
        sigma = torch.pow(3, sigma) - 1
        sigma = sigma.unsqueeze(-1).repeat(1, 1, 1, self.window)
        prior = self.distances.unsqueeze(0).unsqueeze(0).repeat(batch, heads, 1, 1)
        prior = 1.0 / (math.sqrt(2 * math.pi) * sigma) * torch.exp(-(prior**2) / 2 / (sigma**2))
        attended = torch.einsum("bhls,bshd->blhd", series, value).reshape(batch, steps, -1)
        return self.out(attended), series, prior


class ReferenceEncoderLayer(nn.Module):
    def __init__(self, window: int, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.attention = ReferenceAnomalyAttention(window, d_model, n_heads)
        self.conv1 = nn.Conv1d(d_model, d_ff, 1)
        self.conv2 = nn.Conv1d(d_ff, d_model, 1)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, series, prior = self.attention(x)
        x = self.norm1(x + attended)
        y = nn.functional.gelu(self.conv1(x.transpose(-1, 1)))
        y = self.conv2(y).transpose(-1, 1)
        return self.norm2(x + y), series, prior


class ReferenceAnomalyTransformer(nn.Module):
    def __init__(
        self, window: int, n_features: int, d_model: int, n_heads: int, n_layers: int, d_ff: int
    ) -> None:
        super().__init__()
        self.embedding = TokenEmbedding(n_features, d_model)
        self.register_buffer("positions", positional_embedding(window, d_model))
        self.layers = nn.ModuleList(
            ReferenceEncoderLayer(window, d_model, n_heads, d_ff) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.projection = nn.Linear(d_model, n_features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list, list]:
        x = self.embedding(x) + self.positions
        series, priors = [], []
        for layer in self.layers:
            x, layer_series, layer_prior = layer(x)
            series.append(layer_series)
            priors.append(layer_prior)
        return self.projection(self.norm(x)), series, priors


def reference_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The reference's ``my_kl_loss``: KL summed over the window, averaged over heads."""
    return torch.mean(torch.sum(p * (torch.log(p + 1e-4) - torch.log(q + 1e-4)), dim=-1), dim=1)


def _normalised(prior: torch.Tensor, window: int) -> torch.Tensor:
    return prior / torch.unsqueeze(torch.sum(prior, dim=-1), dim=-1).repeat(1, 1, 1, window)


def reference_step(
    model: ReferenceAnomalyTransformer,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    window: int,
    k: float,
) -> None:
    """One optimiser step of the reference solver: two backward passes, stop-gradients as there."""
    optimizer.zero_grad()
    output, series, priors = model(batch)
    series_loss = 0.0
    prior_loss = 0.0
    for layer_series, prior in zip(series, priors, strict=True):
        series_loss += torch.mean(
            reference_kl(layer_series, _normalised(prior, window).detach())
        ) + torch.mean(reference_kl(_normalised(prior, window).detach(), layer_series))
        prior_loss += torch.mean(
            reference_kl(_normalised(prior, window), layer_series.detach())
        ) + torch.mean(reference_kl(layer_series.detach(), _normalised(prior, window)))
    series_loss = series_loss / len(priors)
    prior_loss = prior_loss / len(priors)
    rec_loss = nn.functional.mse_loss(output, batch)
    (rec_loss - k * series_loss).backward(retain_graph=True)
    (rec_loss + k * prior_loss).backward()
    optimizer.step()


def materialised_batch(
    series: np.ndarray, starts: np.ndarray, window: int, device: torch.device
) -> torch.Tensor:
    """A batch as the reference's loader builds it: one host copy per window, then upload."""
    windows = [np.float32(series[start : start + window]) for start in starts]
    return torch.from_numpy(np.stack(windows)).to(device)
