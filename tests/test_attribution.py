"""Top features, contributions and HitRate: by hand, and on SMD's interpretation labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import attribution, benchmark
from pipeline.data.public_datasets import load_benchmark

NAMES = ["hr", "spo2", "rr", "bp"]


def test_top_features_rank_and_share_the_anomaly() -> None:
    scores = np.array([[1.0, 6.0, 0.0, 3.0], [-2.0, 0.0, 0.0, 4.0]])
    names, shares = attribution.top_features(scores, NAMES, k=2)
    assert names == [["spo2", "bp"], ["bp", "spo2"]]
    assert shares[0] == [0.6, 0.3]
    assert shares[1] == [1.0, 0.0]  # a negative score counts as zero


def test_bad_feature_scores_are_named() -> None:
    with pytest.raises(ValueError, match="3 feature scores per row for 4 features"):
        attribution.top_features(np.ones((2, 3)), NAMES, k=1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        attribution.ranked_features(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="must be 2-D"):
        attribution.ranked_features(np.ones(3))


def test_hit_rate_counts_true_features_among_the_top_ceil_p_g() -> None:
    scores = np.zeros((6, 4))
    scores[2] = [5.0, 4.0, 3.0, 0.0]  # truth {0, 2}: top 2 = {0, 1} -> 1/2; top 3 -> 2/2
    scores[3] = [5.0, 0.0, 4.0, 0.0]  # both in the top 2 -> 1
    interpretation = [(2, 4, [0, 2])]
    assert attribution.hit_rate(scores, interpretation, 100) == pytest.approx(0.75)
    assert attribution.hit_rate(scores, interpretation, 150) == pytest.approx(1.0)
    assert attribution.hit_rate(scores, interpretation, 100, slice(3, None)) == 1.0
    assert math.isnan(attribution.hit_rate(scores, interpretation, 100, slice(4, None)))


def test_smd_attribution_beats_chance_for_pca_and_the_baseline(shared_datasets) -> None:
    series = load_benchmark(shared_datasets, "SMD", series=["machine-1-6"])[0]
    row = benchmark.run_series(series, "pca", {"device": "cpu"})
    n_features = series.test.shape[1]
    chance = max(len(truth) for _, _, truth in series.interpretation) / n_features
    for value in (row.hitrate_100, row.zscore_hitrate_100):
        assert chance < value <= 1.0
    assert row.hitrate_150 >= row.hitrate_100
    assert row.zscore_hitrate_150 >= row.zscore_hitrate_100
