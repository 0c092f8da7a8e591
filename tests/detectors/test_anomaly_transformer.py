"""Anomaly Transformer: the minimax gradient identity, the associations and the score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.data.windows import Segments
from pipeline.detectors.anomaly_transformer import (
    AnomalyAttention,
    AnomalyTransformer,
    association_discrepancy,
)

WINDOW = 12
TINY = {"window": WINDOW, "d_model": 16, "n_heads": 2, "n_layers": 2, "dim_feedforward": 32}


def tiny_model(dtype: torch.dtype = torch.float32) -> tuple[AnomalyTransformer, torch.nn.Module]:
    detector = AnomalyTransformer(**TINY)
    torch.manual_seed(0)
    return detector, detector.build_module(3).to(dtype)


def windows(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(4, WINDOW, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)


def gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in module.named_parameters()}


def reference_two_backward(module: torch.nn.Module, x: torch.Tensor, k: float) -> None:
    """The public reference's update: one backward per phase, gradients accumulated."""
    reconstruction, series, priors = module(x)
    rec = torch.nn.functional.mse_loss(reconstruction, x)
    series_loss = association_discrepancy([p.detach() for p in priors], series).mean()
    prior_loss = association_discrepancy(priors, [s.detach() for s in series]).mean()
    (rec - k * series_loss).backward(retain_graph=True)  # maximise phase
    (rec + k * prior_loss).backward()  # minimise phase


def test_single_backward_equals_two_backward_reference() -> None:
    detector, module = tiny_model(torch.float64)
    x = windows(torch.float64)
    reference_two_backward(module, x, detector.config.k)
    expected = gradients(module)
    module.zero_grad()
    detector.training_loss(module, x).backward()
    actual = gradients(module)
    worst = max((actual[name] - expected[name]).abs().max().item() for name in expected)
    assert worst < 1e-6
    assert all(grad.abs().sum() > 0 for grad in actual.values()), "every parameter must learn"


def test_minimise_phase_moves_the_prior_towards_the_series() -> None:
    """The sigma projections feed only the prior: a small step along the combined loss's
    gradient on them must lower the discrepancy (the paper's minimise phase), not raise it."""
    detector, module = tiny_model(torch.float64)
    x = windows(torch.float64)
    detector.training_loss(module, x).backward()

    def discrepancy() -> float:
        with torch.no_grad():
            _, series, priors = module(x)
            return association_discrepancy(priors, series).mean().item()

    before = discrepancy()
    with torch.no_grad():
        for layer in module.layers:
            for param in layer.attention.sigma.parameters():
                param -= 1e-3 * param.grad
    assert discrepancy() < before


def test_associations_are_distributions_and_the_prior_is_the_papers_gaussian() -> None:
    attention = AnomalyAttention(d_model=8, n_heads=2).double()
    with torch.no_grad():
        attention.sigma.weight.zero_()
        attention.sigma.bias.fill_(0.1)
    steps = torch.arange(WINDOW, dtype=torch.float64)
    squared = (steps[:, None] - steps[None, :]) ** 2
    _, series, prior = attention(torch.randn(2, WINDOW, 8, dtype=torch.float64), squared)

    ones = torch.ones(2, 2, WINDOW, dtype=torch.float64)
    torch.testing.assert_close(series.sum(dim=-1), ones)
    torch.testing.assert_close(prior.sum(dim=-1), ones)
    sigma = 3 ** (1 / (1 + math.exp(-0.5)) + 1e-5) - 1
    gaussian = torch.exp(-squared / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    torch.testing.assert_close(prior[0, 0], gaussian / gaussian.sum(dim=-1, keepdim=True))


def test_a_narrow_prior_equals_the_papers_gaussian_where_its_exponent_underflows() -> None:
    """The exponent is floored for speed where exp underflows float32; the prior must not move."""
    attention = AnomalyAttention(d_model=8, n_heads=2)
    with torch.no_grad():
        attention.sigma.weight.zero_()
        attention.sigma.bias.fill_(-1.0)  # sigma about 0.02: exponents down to -1e5
    steps = torch.arange(WINDOW, dtype=torch.float32)
    squared = (steps[:, None] - steps[None, :]) ** 2
    _, _, prior = attention(torch.randn(2, WINDOW, 8), squared)

    sigma = 3 ** (1 / (1 + math.exp(5.0)) + 1e-5) - 1
    exact = torch.exp(-squared.double() / (2 * sigma**2))
    exact = exact / exact.sum(dim=-1, keepdim=True)
    assert (-squared.max() / (2 * sigma**2)) < math.log(torch.finfo(torch.float32).tiny)
    torch.testing.assert_close(prior[0, 0].double(), exact, rtol=0, atol=1e-30)


def test_distance_table_is_a_buffer_built_once_and_not_saved() -> None:
    _, module = tiny_model()
    table = module.squared_distances
    assert table.shape == (WINDOW, WINDOW)
    module(windows())
    assert module.squared_distances is table
    assert not any("distances" in key for key in module.state_dict())
    assert not any("norm" in name for name, _ in module.layers[0].attention.named_parameters())


def test_discrepancy_is_the_symmetric_kl_averaged_over_heads_and_layers() -> None:
    """The shared log-ratio form must equal KL(P || S) + KL(S || P) written out separately."""
    generator = torch.Generator().manual_seed(3)
    priors = [torch.rand(2, 3, 5, 5, generator=generator).softmax(-1) for _ in range(2)]
    series = [torch.rand(2, 3, 5, 5, generator=generator).softmax(-1) for _ in range(2)]

    def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p * ((p + 1e-4).log() - (q + 1e-4).log())).sum(-1)

    per_layer = [(kl(p, s) + kl(s, p)).mean(dim=1) for p, s in zip(priors, series, strict=True)]
    expected = torch.stack(per_layer).mean(dim=0)
    torch.testing.assert_close(association_discrepancy(priors, series), expected)


def test_score_weights_reconstruction_error_by_softmax_of_negative_discrepancy() -> None:
    detector, module = tiny_model()
    x = windows()
    with torch.inference_mode():
        scores = detector.window_errors(module, x)
        reconstruction, series, priors = module(x)
    error = (reconstruction - x).pow(2).mean(dim=-1)
    weights = torch.softmax(-association_discrepancy(priors, series) / 50.0, dim=-1)
    torch.testing.assert_close(scores, weights * error)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(len(x)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_and_scores_on_cuda() -> None:
    values = np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32)
    detector = AnomalyTransformer(**TINY, epochs=2, device="cuda").fit(Segments.single(values))
    scores = detector.score(Segments.single(values[:100]))
    assert scores.shape == (100,) and np.all(np.isfinite(scores))
