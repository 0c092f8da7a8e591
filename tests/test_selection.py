"""Choosing a detector on labeled validation rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.selection import choose, validation_metric


def test_the_best_validation_metric_wins_and_ties_keep_the_listed_order() -> None:
    assert choose({"pca": 0.2, "vae": 0.5, "dense_ae": 0.5}) == "vae"


def test_without_any_finite_metric_the_first_candidate_is_kept() -> None:
    """No anomaly among the validation rows: the labels cannot decide, the list order does."""
    assert choose({"pca": math.nan, "vae": math.nan}) == "pca"
    assert choose({"pca": math.nan, "vae": 0.1}) == "vae"
    with pytest.raises(ValueError, match="no candidate"):
        choose({})


def test_validation_without_anomalies_has_no_metric() -> None:
    assert math.isnan(validation_metric(np.zeros(500), np.random.default_rng(0).random(500)))
    labels = np.zeros(500)
    labels[200:220] = 1
    scores = labels + 0.01 * np.random.default_rng(0).random(500)
    assert validation_metric(labels, scores) > 0.9
