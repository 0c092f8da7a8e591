"""Drift indicators: PSI against a stored reference profile."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.monitoring import DriftAccumulator, Histogram, ReferenceProfile, drift

FEATURES = ("heart_rate", "spo2")


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    training = rng.standard_normal((5000, 2))
    reference_scores = rng.exponential(1.0, 2000)
    return ReferenceProfile.build(FEATURES, training, reference_scores, threshold=3.0)


def test_a_day_like_the_training_data_is_stable(profile) -> None:
    rng = np.random.default_rng(1)
    report = drift(profile, rng.standard_normal((1440, 2)), rng.exponential(1.0, 1440), 3.0, 0.25)
    assert max(report.feature_psi.values()) < 0.1 and report.score_psi < 0.1
    assert not report.drifted and report.drifted_features == []
    assert report.reference_anomaly_rate == pytest.approx(np.exp(-3.0), abs=0.02)


def test_a_shifted_feature_and_shifted_scores_pass_the_level(profile) -> None:
    rng = np.random.default_rng(2)
    day = rng.standard_normal((1440, 2))
    day[:, 1] += 1.0
    report = drift(profile, day, rng.exponential(2.0, 1440), 3.0, 0.25)
    assert report.drifted_features == ["spo2"]
    assert report.scores_drifted and report.drifted
    assert report.anomaly_rate > report.reference_anomaly_rate
    assert report.to_dict()["drifted_features"] == ["spo2"]


def test_a_day_outside_every_training_bin_gives_a_finite_large_psi() -> None:
    histogram = Histogram.of(np.arange(100.0))
    assert 5.0 < histogram.psi(np.full(50, 1e6)) < np.inf


def test_a_discrete_feature_gets_one_bin_per_value() -> None:
    histogram = Histogram.of(np.repeat([0.0, 1.0, 2.0], [50, 30, 20]))
    np.testing.assert_allclose(histogram.shares, [0.5, 0.3, 0.2])
    assert histogram.psi(np.repeat([0.0, 1.0, 2.0], [5, 3, 2])) == pytest.approx(0.0)


def test_a_day_added_chunk_by_chunk_drifts_as_the_whole_day(profile) -> None:
    rng = np.random.default_rng(4)
    day = rng.standard_normal((3000, 2)) + np.array([0.0, 0.6])
    day[::97, 0] = np.nan  # missing readings count in no bin, as in the whole-day measure
    scores = rng.exponential(1.5, 3000)
    accumulator = DriftAccumulator(profile)
    for rows in np.array_split(np.arange(3000), [5, 1200, 1201, 2999]):
        accumulator.add(day[rows], scores[rows], 3.0)
    whole = drift(profile, day, scores, 3.0, 0.25)
    assert accumulator.report(0.25) == whole
    assert whole.drifted_features == ["spo2"]


def test_the_profile_round_trips_through_json(profile, tmp_path) -> None:
    profile.save(tmp_path / "profile.json")
    loaded = ReferenceProfile.load(tmp_path / "profile.json")
    day = np.random.default_rng(3).standard_normal((100, 2))
    scores = np.linspace(0, 5, 100)
    assert drift(loaded, day, scores, 3.0, 0.25) == drift(profile, day, scores, 3.0, 0.25)


def test_mismatched_shapes_are_named(profile) -> None:
    with pytest.raises(ValueError, match="do not match the profile's 2 features"):
        drift(profile, np.zeros((10, 3)), np.zeros(10), 1.0, 0.25)
    with pytest.raises(ValueError, match="do not match 2 features"):
        ReferenceProfile.build(FEATURES, np.zeros((10, 3)), np.zeros(10), 1.0)
    with pytest.raises(ValueError, match="no finite values"):
        Histogram.of(np.array([np.nan]))


def _quiet_and_busy(
    rng: np.random.Generator, size: int, quiet: float, scale: float, jitter: float = 1e-7
) -> np.ndarray:
    """Scores of a day where a ``quiet`` share of rows (empty hours) all score the same, up
    to the float ``jitter`` of being scored in another batch, and the rest spread out."""
    scores = 0.5 + rng.exponential(scale, size)
    empty = rng.random(size) < quiet
    scores[empty] = np.float32(0.2) * (1 + jitter * rng.standard_normal(int(empty.sum())))
    return scores


def test_a_point_mass_of_identical_scores_stays_in_one_bin() -> None:
    rng = np.random.default_rng(5)
    # The reference day's quiet rows tie exactly; the next day's are a few ulps apart.
    histogram = Histogram.of(_quiet_and_busy(rng, 20_000, quiet=0.4, scale=1.0, jitter=0.0))
    assert np.count_nonzero(histogram.shares > 0.35) == 1
    normal_day = _quiet_and_busy(rng, 10_000, quiet=0.4, scale=1.0)
    assert histogram.psi(normal_day) < 0.05


def test_a_day_with_a_point_mass_still_drifts_when_it_shifts() -> None:
    rng = np.random.default_rng(6)
    histogram = Histogram.of(_quiet_and_busy(rng, 20_000, quiet=0.4, scale=1.0))
    more_quiet = _quiet_and_busy(rng, 10_000, quiet=0.7, scale=1.0)
    higher = _quiet_and_busy(rng, 10_000, quiet=0.4, scale=2.5)
    assert histogram.psi(more_quiet) > 0.25
    assert histogram.psi(higher) > 0.25
