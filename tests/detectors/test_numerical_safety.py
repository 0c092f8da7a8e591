"""A detector that cannot produce a finite number says so, by name, instead of writing NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checks import NonFiniteScoreError
from pipeline.data.windows import Segments
from pipeline.detectors.registry import load_detector, make_detector

_SMALL_AE = {"window": 16, "epochs": 1, "hidden": [16], "code_size": 4, "device": "cpu"}


@pytest.mark.parametrize("magnitude", [1e3, 1e4, 1e6])
def test_vae_scores_values_that_overflowed_its_latent_draw(
    train_segments: Segments, magnitude: float
) -> None:
    """A briefly trained VAE met standardised values of 1e3 and more (SMD's test part holds
    values near 1000) with an encoder log-variance whose exp() overflowed: 24 to 54 NaN scores
    per spike before the log-variances were clamped. Now they are finite and the highest."""
    vae = make_detector("vae", window=24, epochs=2, hidden=[64], train_stride=2, device="cpu").fit(
        train_segments
    )
    for feature in range(train_segments.n_features):
        values = train_segments.values[:400].copy()
        values[100:110, feature] = magnitude
        scores = vae.score(Segments.single(values))
        assert np.isfinite(scores).all()
        assert scores[100:110].min() > scores[200:].max()


def test_training_that_diverges_names_the_detector(train_segments: Segments) -> None:
    """Values beyond float32's square root overflow the reconstruction loss to infinity."""
    values = train_segments.values[:400] * np.float32(1e20)
    with pytest.raises(NonFiniteScoreError, match="dense_ae training diverged at epoch 1"):
        make_detector("dense_ae", **_SMALL_AE).fit(Segments.single(values))


def test_a_model_with_broken_weights_refuses_to_score(
    train_segments: Segments, tmp_path: Path
) -> None:
    """A saved model whose weights hold NaN scores nothing: neither the scores nor the
    explained scores daily scoring writes may carry a NaN."""
    series = Segments.single(train_segments.values[:400])
    detector = make_detector("dense_ae", **_SMALL_AE).fit(series)
    detector.save(tmp_path / "model")
    weights = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)
    first = next(iter(weights))
    weights[first][0] = float("nan")
    torch.save(weights, tmp_path / "model" / "weights.pt")
    broken = load_detector(tmp_path / "model")
    with pytest.raises(NonFiniteScoreError, match=r"dense_ae produced \d+ NaN or infinite scores"):
        broken.score(series)
    with pytest.raises(NonFiniteScoreError, match="dense_ae"):
        broken.explained_scores(series, threshold=1.0)
