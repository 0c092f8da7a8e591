"""Threshold calibrators: exact best-F1, label-free rules, POT tail fit, persistence, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.calibration import (
    CALIBRATORS,
    BestF1Threshold,
    MeanStdThreshold,
    PercentileThreshold,
    PotThreshold,
    calibrator_from_dict,
    fit_calibrator,
    make_calibrator,
)
from pipeline.checks import NotFittedError
from pipeline.evaluation import point_metrics


def brute_force_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Highest threshold reaching the best F1, trying every distinct score one by one."""
    best_threshold, best_f1 = math.nan, -1.0
    for threshold in np.unique(scores)[::-1]:
        f1 = point_metrics(labels, scores >= threshold)["f1"]
        if f1 > best_f1:
            best_threshold, best_f1 = threshold, f1
    return float(best_threshold), best_f1


@pytest.mark.parametrize("seed", range(8))
def test_best_f1_finds_the_exact_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    labels = rng.random(n) < rng.uniform(0.02, 0.4)
    labels[rng.integers(n)] = True
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if seed % 2:
        scores = np.round(scores, 1)  # ties: a cut must keep all tied points together
    calibrator = BestF1Threshold().fit(scores, labels)
    expected_threshold, expected_f1 = brute_force_best_f1(scores, labels)
    assert calibrator.threshold_ == expected_threshold
    assert point_metrics(labels, calibrator.predict(scores))["f1"] == pytest.approx(expected_f1)


def test_best_f1_separable_scores_give_perfect_alarms() -> None:
    labels = np.array([0, 0, 1, 0, 1, 0])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.2])
    calibrator = BestF1Threshold().fit(scores, labels)
    assert calibrator.threshold_ == 0.8  # predict is score >= threshold
    assert calibrator.predict(scores).tolist() == labels.astype(bool).tolist()


def test_percentile_threshold() -> None:
    scores = np.arange(1001, dtype=float)
    calibrator = PercentileThreshold(q=99.0).fit(scores)
    assert calibrator.threshold_ == pytest.approx(990.0)
    assert calibrator.predict(scores).sum() == 11


def test_mean_std_threshold() -> None:
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    calibrator = MeanStdThreshold(k=2.0).fit(scores, labels=[0, 0, 0, 1])
    assert calibrator.threshold_ == pytest.approx(2.5 + 2.0 * np.std(scores))


def test_pot_recovers_the_tail_quantile_of_an_exponential() -> None:
    scores = np.random.default_rng(0).exponential(size=200_000)
    calibrator = PotThreshold(risk=1e-4, init_quantile=0.98).fit(scores)
    true_quantile = -math.log(1e-4)  # P(X > x) = exp(-x)
    assert calibrator.threshold_ == pytest.approx(true_quantile, rel=0.05)


def test_pot_uses_the_exponential_limit_for_a_flat_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class ExponentialTail:
        @staticmethod
        def fit(excesses: np.ndarray, floc: float) -> tuple[float, float, float]:
            return 0.0, floc, 2.0

    monkeypatch.setattr("scipy.stats.genpareto", ExponentialTail)  # imported where it fits
    scores = np.arange(1000, dtype=float)
    calibrator = PotThreshold(risk=1e-3, init_quantile=0.9).fit(scores)
    initial = np.quantile(scores, 0.9)
    n_excesses = np.count_nonzero(scores > initial)
    assert calibrator.threshold_ == pytest.approx(
        initial - 2.0 * math.log(1e-3 * 1000 / n_excesses)
    )


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_round_trip_through_json(method: str) -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(5000) < 0.05
    scores = rng.exponential(size=5000) + 3 * labels
    fitted = make_calibrator(method).fit(scores, labels)
    restored = calibrator_from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert type(restored) is type(fitted)
    assert restored.params == fitted.params
    assert restored.threshold_ == fitted.threshold_
    assert np.array_equal(restored.predict(scores), fitted.predict(scores))


def test_to_dict_is_plain_json() -> None:
    data = make_calibrator("percentile", q=95.0).fit(np.arange(100.0)).to_dict()
    assert data == {
        "method": "percentile",
        "params": {"q": 95.0},
        "threshold": pytest.approx(94.05),
    }
    assert type(data["threshold"]) is float


def test_unfitted_calibrator_refuses_to_predict() -> None:
    calibrator = PercentileThreshold()
    with pytest.raises(NotFittedError, match="not fitted"):
        _ = calibrator.threshold_
    with pytest.raises(NotFittedError, match="not fitted"):
        calibrator.predict([1.0, 2.0])
    with pytest.raises(NotFittedError):
        calibrator_from_dict(calibrator.to_dict()).predict([1.0])


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown calibration method 'otsu'"):
        make_calibrator("otsu")
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrator_from_dict({"method": "otsu", "params": {}, "threshold": 1.0})
    with pytest.raises(ValueError, match="cannot load method"):
        PotThreshold.from_dict({"method": "percentile", "params": {}, "threshold": 1.0})


@pytest.mark.parametrize("labels", [None, np.zeros(10)])
def test_best_f1_needs_a_positive_label(labels: np.ndarray | None) -> None:
    with pytest.raises(ValueError, match="at least one positive"):
        BestF1Threshold().fit(np.arange(10.0), labels)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_nan_scores_are_an_error(method: str) -> None:
    scores = np.array([0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        make_calibrator(method).fit(scores, [0, 1, 0])


def test_predict_rejects_nan_scores() -> None:
    calibrator = PercentileThreshold().fit(np.arange(10.0))
    with pytest.raises(ValueError, match="NaN"):
        calibrator.predict([1.0, np.nan])


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("percentile", {"q": 0.0}),
        ("percentile", {"q": 100.0}),
        ("mean_std", {"k": -1.0}),
        ("mean_std", {"k": math.nan}),
        ("pot", {"risk": 0.0}),
        ("pot", {"init_quantile": 1.0}),
        ("pot", {"risk": 0.05, "init_quantile": 0.98}),  # risk beyond the initial tail
    ],
)
def test_invalid_parameters_are_rejected(method: str, params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        make_calibrator(method, **params)


def test_pot_needs_enough_excesses() -> None:
    with pytest.raises(ValueError, match="at least 10 scores above"):
        PotThreshold().fit(np.arange(100.0))


def test_labels_must_match_scores() -> None:
    with pytest.raises(ValueError, match="labels have 2 points"):
        BestF1Threshold().fit([0.1, 0.2, 0.3], [0, 1])


def test_event_f1_looks_past_isolated_spikes_to_the_events_people_act_on() -> None:
    """Single-step spikes outscore the two labeled events; grouped into episodes they are too
    short to count, so the event-F1 cut sits at the events with every episode right."""
    scores = np.zeros(1000)
    labels = np.zeros(1000, dtype=bool)
    scores[[100, 300, 500]] = 10.0
    for start in (600, 800):
        scores[start : start + 20] = 5.0
        labels[start : start + 20] = True
    calibrator = fit_calibrator("event_f1", scores, labels, gap_steps=5, min_steps=3)
    assert calibrator.threshold_ == 5.0 and calibrator.params == {"gap_steps": 5, "min_steps": 3}
    assert calibrator_from_dict(calibrator.to_dict()).threshold_ == 5.0
    with pytest.raises(ValueError, match="min_steps >= 1"):
        make_calibrator("event_f1", gap_steps=5, min_steps=0)
