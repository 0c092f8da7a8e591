"""Metrics against hand cases and VUS against the TSB-AD reference implementation."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from prerequisites import require

from pipeline.evaluation import (
    auc_pr,
    auc_roc,
    check_scores,
    evaluate,
    event_f1,
    pa_f1,
    plot_confusion_matrix,
    plot_pr_curve,
    plot_score_histograms,
    plot_scores,
    point_adjust,
    point_metrics,
    segments,
    vus,
    vus_pr,
    vus_roc,
)

ReferenceVUS = Callable[[np.ndarray, np.ndarray, int], tuple[float, float]]

# Two events, [1, 4) and [6, 8); one hit inside the first, two false alarms at the end.
LABELS = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
PREDICTIONS = np.array([0, 0, 1, 0, 0, 0, 0, 0, 1, 1])


@pytest.fixture(scope="module")
def reference_vus() -> ReferenceVUS:
    """TSB-AD's ``generate_curve`` (what its ``get_metrics`` reports as VUS-ROC / VUS-PR)."""
    try:
        from TSB_AD.evaluation.basic_metrics import generate_curve
    except ImportError as error:
        require(False, f"TSB-AD reference not importable ({error}); see requirements-test.txt")

    def compute(labels: np.ndarray, scores: np.ndarray, window: int) -> tuple[float, float]:
        *_, roc, pr = generate_curve(labels.astype(int), scores, window)
        return roc, pr

    return compute


def random_events(rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels with events of very different lengths, one touching each end of the series."""
    labels = np.zeros(n, dtype=int)
    for length in rng.choice([1, 2, 3, 8, 25, 60, 150], size=rng.integers(2, 6)):
        start = rng.integers(0, n - length)
        labels[start : start + length] = 1
    labels[: rng.integers(1, 20)] = 1
    labels[-rng.integers(1, 20) :] = 1
    return labels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("window", [100, 15])
def test_vus_matches_tsb_ad_on_random_series(
    reference_vus: ReferenceVUS, seed: int, window: int
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(250, 500))
    labels = random_events(rng, n)
    scores = rng.random(n) + labels * rng.random(n)
    if seed % 2:
        scores = np.round(scores, 1)  # heavy ties between cut points
    expected_roc, expected_pr = reference_vus(labels, scores, window)
    result = vus(labels, scores, window)
    assert result.roc == pytest.approx(expected_roc, abs=1e-6)
    assert result.pr == pytest.approx(expected_pr, abs=1e-6)


def test_vus_matches_tsb_ad_when_the_series_is_shorter_than_the_cut_count(
    reference_vus: ReferenceVUS,
) -> None:
    labels = np.zeros(60, dtype=int)
    labels[[0, 1, 20, 21, 22, 59]] = 1
    scores = np.random.default_rng(7).random(60)
    expected_roc, expected_pr = reference_vus(labels, scores, 100)
    result = vus(labels, scores)
    assert result.roc == pytest.approx(expected_roc, abs=1e-6)
    assert result.pr == pytest.approx(expected_pr, abs=1e-6)


def test_vus_matches_tsb_ad_on_smd(reference_vus: ReferenceVUS, shared_datasets: Path) -> None:
    name = "machine-1-6.txt"
    values = np.loadtxt(shared_datasets / "SMD" / "test" / name, delimiter=",", max_rows=5000)
    labels = np.loadtxt(shared_datasets / "SMD" / "test_label" / name, max_rows=5000).astype(int)
    scores = values.mean(axis=1)
    expected_roc, expected_pr = reference_vus(labels, scores, 100)
    assert vus_roc(labels, scores) == pytest.approx(expected_roc, abs=1e-6)
    assert vus_pr(labels, scores) == pytest.approx(expected_pr, abs=1e-6)


def test_vus_of_a_perfect_score_beats_a_random_one() -> None:
    rng = np.random.default_rng(0)
    labels = random_events(rng, 2000)
    perfect, noise = vus(labels, labels.astype(float)), vus(labels, rng.random(2000))
    assert perfect.pr > 0.9 and perfect.roc > 0.9
    assert noise.pr < 0.5  # VUS-ROC of noise stays high on long events, as in TSB-AD


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("labels", [np.zeros(50), np.ones(50)])
def test_ranking_metrics_are_nan_for_a_single_class(labels: np.ndarray) -> None:
    scores = np.linspace(0, 1, 50)
    assert np.isnan(auc_roc(labels, scores))
    assert np.isnan(auc_pr(labels, scores))
    assert all(np.isnan(vus(labels, scores)))


def test_auc_values() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc_roc(labels, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc_pr(labels, [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)


def test_nan_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        check_scores([0.1, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        auc_roc([0, 1], [np.nan, 1.0])


def test_segments_include_the_series_ends() -> None:
    starts, stops = segments([1, 1, 0, 1, 0, 0, 1])
    assert starts.tolist() == [0, 3, 6]
    assert stops.tolist() == [2, 4, 7]


def test_point_metrics() -> None:
    metrics = point_metrics(LABELS, PREDICTIONS)
    assert metrics == pytest.approx({"precision": 1 / 3, "recall": 1 / 5, "f1": 0.25})


def test_point_metrics_are_zero_without_predictions() -> None:
    assert point_metrics(LABELS, np.zeros_like(LABELS)) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }


def test_event_f1_uses_event_recall_and_point_precision() -> None:
    # One of two events detected (recall 1/2), 1 of 3 predicted points correct.
    assert event_f1(LABELS, PREDICTIONS) == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_point_adjustment_fills_detected_events_and_inflates_f1() -> None:
    adjusted = point_adjust(LABELS, PREDICTIONS)
    assert adjusted.astype(int).tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    assert pa_f1(LABELS, PREDICTIONS) == pytest.approx(0.6)
    assert pa_f1(LABELS, PREDICTIONS) >= point_metrics(LABELS, PREDICTIONS)["f1"]


def test_evaluate_reports_every_metric() -> None:
    rng = np.random.default_rng(1)
    labels = random_events(rng, 600)
    scores = rng.random(600) + labels
    result = evaluate(labels, scores, threshold=1.0)
    assert set(result) == {
        "precision",
        "recall",
        "f1",
        "auc_roc",
        "auc_pr",
        "vus_pr",
        "vus_roc",
        "event_f1",
        "pa_f1",
        "n_points",
        "n_anomalies",
        "anomaly_rate",
    }
    assert result["n_points"] == 600
    assert result["n_anomalies"] == labels.sum()
    assert result["anomaly_rate"] == pytest.approx(labels.mean())
    assert result["recall"] == pytest.approx(1.0)  # every anomaly scores >= 1.0
    assert result["f1"] == pytest.approx(point_metrics(labels, scores >= 1.0)["f1"])


def test_plots_return_figures() -> None:
    rng = np.random.default_rng(2)
    labels = random_events(rng, 300)
    scores = rng.random(300) + labels
    predictions = scores >= 1.2
    index = pd.date_range("2024-01-01", periods=300, freq="min", tz="UTC")
    figures = [
        plot_scores(index, scores, 1.2, labels, title="machine"),
        plot_scores(np.arange(300), scores, 1.2),
        plot_pr_curve(labels, scores),
        plot_score_histograms(labels, scores, 1.2),
        plot_confusion_matrix(labels, predictions),
    ]
    for figure in figures:
        assert isinstance(figure, Figure)
        figure.savefig(io.BytesIO(), format="png")
