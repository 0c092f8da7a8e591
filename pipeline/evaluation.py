"""Detection metrics and diagnostic plots.

Threshold-free metrics (AUC-ROC, AUC-PR, VUS-ROC, VUS-PR) rank raw scores; threshold-dependent
ones (point, event and point-adjusted F1) take binary predictions, with a point flagged when its
score is at or above the threshold (:func:`pipeline.checks.alarms`, the rule of every alarm).

VUS (Paparrizos et al., "Volume Under the Surface", VLDB 2022) is computed exactly as the TSB-AD
benchmark does (``TSB_AD.evaluation.basic_metrics.generate_curve``, version ``opt``), so figures
are comparable with published TSB-AD tables, but vectorised over thresholds and buffer sizes.

Plot functions build a bare :class:`matplotlib.figure.Figure` (no pyplot global state, rendered
by Agg when saved) and return it; the caller saves or logs it. matplotlib is imported inside
them so that importing this module stays cheap for workers that only compute metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pipeline.checks import alarms, check_labels, check_scores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VUS_SLIDING_WINDOW = 100
"""Largest label buffer (in steps) of the VUS surface; TSB-AD's benchmark default."""

VUS_THRESHOLDS = 250
"""Number of score cut points per buffer size, as in TSB-AD."""


def _check_pair(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> tuple[np.ndarray, ...]:
    true = check_labels(labels)
    return true, check_labels(predictions, len(true))


def _is_single_class(labels: np.ndarray) -> bool:
    return bool(labels.all() or not labels.any())


def segments(labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) indices of each run of consecutive positive labels."""
    edges = np.diff(np.concatenate(([0], check_labels(labels).astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _hits_per_segment(mask: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Whether ``mask`` is True anywhere inside each ``[start, stop)`` range."""
    counts = np.concatenate(([0], np.cumsum(mask)))
    return counts[stops] > counts[starts]


# --------------------------------------------------------------------------- point metrics


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def point_metrics(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> dict[str, float]:
    """Point-wise precision, recall and F1; a ratio with a zero denominator counts as 0."""
    true, pred = _check_pair(labels, predictions)
    tp = np.count_nonzero(true & pred)
    n_pred, n_true = np.count_nonzero(pred), np.count_nonzero(true)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": _f1(precision, recall)}


def event_f1(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    """Composite F1: event-wise recall with point-wise precision (Garg et al., TNNLS 2021).

    Recall is the fraction of true anomaly events (runs of positive labels) with at least one
    predicted point, so a long event counts once whatever its length. Precision stays
    point-wise, so every false alarm point costs: counting predicted *events* instead would
    let one alarm spanning the whole series score perfectly. This is TSB-AD's
    "Event-based-F1" at a given threshold. With no true event, recall is 0.
    """
    true, pred = _check_pair(labels, predictions)
    starts, stops = segments(true)
    recall = float(_hits_per_segment(pred, starts, stops).mean()) if len(starts) else 0.0
    return _f1(point_metrics(true, pred)["precision"], recall)


def point_adjust(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> np.ndarray:
    """Predictions with every true event that has at least one predicted point filled in."""
    true, pred = _check_pair(labels, predictions)
    starts, stops = segments(true)
    hit = _hits_per_segment(pred, starts, stops)
    marks = np.zeros(len(true) + 1, dtype=np.int64)
    np.add.at(marks, starts[hit], 1)
    np.add.at(marks, stops[hit], -1)
    return pred | (np.cumsum(marks[:-1]) > 0)


def pa_f1(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    """Point-adjusted F1 (Xu et al., WWW 2018): point F1 after :func:`point_adjust`.

    Warning: point adjustment inflates results. One lucky point inside a long event turns the
    whole event into true positives, so random scores can reach a high PA-F1 (Kim et al.,
    AAAI 2022). It is reported only under this name for comparison with papers that use it,
    never as the headline F1.
    """
    true, pred = _check_pair(labels, predictions)
    return point_metrics(true, point_adjust(true, pred))["f1"]


# --------------------------------------------------------------------------- ranking metrics


def auc_roc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve; NaN when the labels hold a single class."""
    true = check_labels(labels)
    score = check_scores(scores, len(true))
    return float("nan") if _is_single_class(true) else float(roc_auc_score(true, score))


def auc_pr(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the precision-recall curve (average precision); NaN for a single class."""
    true = check_labels(labels)
    score = check_scores(scores, len(true))
    return float("nan") if _is_single_class(true) else float(average_precision_score(true, score))


class VUS(NamedTuple):
    """Volume under the range-ROC and range-PR surfaces."""

    roc: float
    pr: float


def vus(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    sliding_window: int = VUS_SLIDING_WINDOW,
    n_thresholds: int = VUS_THRESHOLDS,
) -> VUS:
    """VUS-ROC and VUS-PR as TSB-AD computes them; NaN for labels of a single class.

    For every buffer size ``w`` in ``0..sliding_window`` each anomaly event gets soft labels
    ``sqrt(1 - d / w)`` on the ``w // 2`` points either side (distance ``d``), and a range
    ROC and PR curve is traced over ``n_thresholds`` score cut points (evenly spaced ranks of
    the sorted scores). True-positive rate is range recall times the fraction of buffered
    events touched by a prediction; both VUS values are the mean areas over buffer sizes.
    """
    true = check_labels(labels)
    score = check_scores(scores, len(true))
    if sliding_window < 0 or n_thresholds < 1:
        raise ValueError("sliding_window must be >= 0 and n_thresholds >= 1")
    if _is_single_class(true):
        return VUS(float("nan"), float("nan"))

    first_cut = _first_cut_index(score, n_thresholds)
    tp_core = np.cumsum(np.bincount(first_cut[true], minlength=n_thresholds))
    n_pred = np.cumsum(np.bincount(first_cut, minlength=n_thresholds))
    starts, stops = segments(true)
    tp_soft = _soft_true_positives(true, first_cut, starts, stops, sliding_window, n_thresholds)
    detected = _detected_event_fraction(first_cut, starts, stops, sliding_window, n_thresholds)

    n_true = np.count_nonzero(true)
    tp = tp_core + tp_soft  # (window, threshold)
    positives = n_true + tp_soft / 2  # TSB-AD's mean of hard and prediction-dependent soft count
    tpr = np.minimum(tp / positives, 1.0) * detected
    fpr = (n_pred - tp) / (len(true) - positives)
    precision = tp / n_pred
    roc, pr = _range_auc_roc(tpr, fpr).mean(), _range_ap(tpr, precision).mean()
    return VUS(roc=float(roc), pr=float(pr))


def vus_roc(
    labels: npt.ArrayLike, scores: npt.ArrayLike, sliding_window: int = VUS_SLIDING_WINDOW
) -> float:
    """VUS-ROC; see :func:`vus`."""
    return vus(labels, scores, sliding_window).roc


def vus_pr(
    labels: npt.ArrayLike, scores: npt.ArrayLike, sliding_window: int = VUS_SLIDING_WINDOW
) -> float:
    """VUS-PR, the TSB-AD headline metric; see :func:`vus`."""
    return vus(labels, scores, sliding_window).pr


def _first_cut_index(scores: np.ndarray, n_thresholds: int) -> np.ndarray:
    """For each point, the index of the first (highest) cut point at which it is predicted.

    Cut points are the scores at evenly spaced ranks of the descending sort, so cut ``j``
    predicts ``scores >= cut[j]`` and a point is predicted from its index on. Nesting of the
    predicted sets lets every later count be a cumulative sum over this index.
    """
    ranks = np.linspace(0, len(scores) - 1, n_thresholds).astype(int)
    ascending_cuts = np.sort(scores)[::-1][ranks][::-1]
    return n_thresholds - np.searchsorted(ascending_cuts, scores, side="right")


def _buffer_kernel(sliding_window: int) -> np.ndarray:
    """Soft label ``kernel[w, d] = sqrt(1 - d / w)`` at distance ``1 <= d <= w // 2``, else 0."""
    w = np.arange(sliding_window + 1)[:, None]
    d = np.arange(sliding_window // 2 + 1)[None, :]
    inside = (d >= 1) & (d <= w // 2)
    return np.where(inside, np.sqrt(np.maximum(1 - d / np.maximum(w, 1), 0.0)), 0.0)


def _soft_true_positives(
    true: np.ndarray,
    first_cut: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    sliding_window: int,
    n_thresholds: int,
) -> np.ndarray:
    """Soft-label mass of predicted normal points near events, per (buffer size, cut point).

    Buffers of neighbouring events add up and are capped at 1, as in TSB-AD. Only the points
    within ``sliding_window // 2`` of an event carry soft labels, so the work scales with the
    number of events, not with the series length.
    """
    n, half = len(true), sliding_window // 2
    distance = np.arange(1, half + 1)
    points = np.concatenate([(stops - 1)[:, None] + distance, starts[:, None] - distance]).ravel()
    distances = np.tile(distance, 2 * len(starts))
    inside = (points >= 0) & (points < n)
    points, distances = points[inside], distances[inside]
    normal = ~true[points]  # event points are hard positives already
    buffered, slot = np.unique(points[normal], return_inverse=True)

    soft = np.zeros((len(buffered), sliding_window + 1))
    np.add.at(soft, slot, _buffer_kernel(sliding_window).T[distances[normal]])
    np.minimum(soft, 1.0, out=soft)

    bins = first_cut[buffered][:, None] * (sliding_window + 1) + np.arange(sliding_window + 1)
    mass = np.bincount(
        bins.ravel(), weights=soft.ravel(), minlength=n_thresholds * (sliding_window + 1)
    )
    return np.cumsum(mass.reshape(n_thresholds, sliding_window + 1), axis=0).T


def _detected_event_fraction(
    first_cut: np.ndarray,
    starts: np.ndarray,
    stops: np.ndarray,
    sliding_window: int,
    n_thresholds: int,
) -> np.ndarray:
    """Fraction of buffered events holding a predicted point, per (buffer size, cut point).

    With buffer ``w`` each event widens by ``h = w // 2`` on both sides and events whose
    widened ranges overlap merge into one. An event group is detected from the smallest
    first-cut index inside it, which is the minimum over its members' widened ranges.
    """
    n, half, n_events = len(first_cut), sliding_window // 2, len(starts)
    padded = np.append(first_cut, n_thresholds)  # index n = outside the series
    core = np.minimum.reduceat(padded, np.column_stack([starts, stops]).ravel())[::2]
    reach = np.arange(1, half + 1)
    left = starts[:, None] - reach
    right = (stops - 1)[:, None] + reach
    edge = np.minimum(padded[np.where(left >= 0, left, n)], padded[np.where(right < n, right, n)])
    widened = np.minimum.accumulate(np.column_stack([core, edge]), axis=1).T  # (h, event)

    gaps = starts[1:] - (stops[:-1] - 1)
    opens_group = np.column_stack(
        [np.ones(half + 1, dtype=bool), gaps[None, :] > 2 * np.arange(half + 1)[:, None]]
    )
    group_starts = np.flatnonzero(opens_group)
    group_first_cut = np.minimum.reduceat(widened.ravel(), group_starts)
    group_half = group_starts // n_events

    detected = np.bincount(
        group_half * n_thresholds + group_first_cut, minlength=(half + 1) * n_thresholds
    )
    detected = np.cumsum(detected.reshape(half + 1, n_thresholds), axis=1)
    fraction = detected / np.bincount(group_half, minlength=half + 1)[:, None]
    return fraction[np.arange(sliding_window + 1) // 2]


def _range_auc_roc(tpr: np.ndarray, fpr: np.ndarray) -> np.ndarray:
    """Trapezoidal area per row, with the curve pinned to (0, 0) and (1, 1)."""
    zeros, ones = np.zeros((len(tpr), 1)), np.ones((len(tpr), 1))
    tpr, fpr = np.hstack([zeros, tpr, ones]), np.hstack([zeros, fpr, ones])
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)


def _range_ap(tpr: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Step-wise area under the range-PR curve per row, recall starting from 0."""
    return np.sum(np.diff(tpr, axis=1, prepend=0.0) * precision, axis=1)


# --------------------------------------------------------------------------- summary


def evaluate(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    threshold: float,
    sliding_window: int = VUS_SLIDING_WINDOW,
) -> dict[str, float | int]:
    """Every metric for one series at a calibrated ``threshold`` (alarms by ``checks.alarms``)."""
    true = check_labels(labels)
    score = check_scores(scores, len(true))
    pred = alarms(score, threshold)
    volume = vus(true, score, sliding_window)
    return {
        **point_metrics(true, pred),
        "auc_roc": auc_roc(true, score),
        "auc_pr": auc_pr(true, score),
        "vus_pr": volume.pr,
        "vus_roc": volume.roc,
        "event_f1": event_f1(true, pred),
        "pa_f1": pa_f1(true, pred),
        "n_points": len(true),
        "n_anomalies": int(np.count_nonzero(true)),
        "anomaly_rate": float(true.mean()) if len(true) else float("nan"),
    }


# --------------------------------------------------------------------------- plots


def _figure(width: float = 8.0, height: float = 4.5) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_scores(
    timestamps_or_index: npt.ArrayLike,
    scores: npt.ArrayLike,
    threshold: float,
    labels: npt.ArrayLike | None = None,
    title: str = "",
) -> Figure:
    """Score over time with the threshold line and true anomaly events shaded."""
    x = np.asarray(timestamps_or_index)
    score = check_scores(scores, len(x))
    fig = _figure(12.0, 4.0)
    ax = fig.add_subplot()
    ax.plot(x, score, lw=0.8, color="tab:blue", label="score")
    ax.axhline(threshold, color="tab:red", ls="--", lw=1.0, label=f"threshold {threshold:.4g}")
    if labels is not None:
        starts, stops = segments(check_labels(labels, len(x)))
        for k, (start, stop) in enumerate(zip(starts, stops, strict=True)):
            ax.axvspan(
                x[start],
                x[stop - 1],
                color="tab:orange",
                alpha=0.3,
                lw=0,
                label="true anomaly" if k == 0 else None,
            )
    ax.set(title=title, xlabel="time", ylabel="anomaly score")
    ax.legend(loc="upper right")
    return fig


def plot_pr_curve(labels: npt.ArrayLike, scores: npt.ArrayLike) -> Figure:
    """Point-wise precision-recall curve, with the random-detector baseline."""
    true = check_labels(labels)
    score = check_scores(scores, len(true))
    precision, recall, _ = precision_recall_curve(true, score)
    fig = _figure(5.0, 4.5)
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", label=f"AUC-PR {auc_pr(true, score):.3f}")
    ax.axhline(true.mean(), color="grey", ls=":", label="random")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return fig


def plot_score_histograms(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> Figure:
    """Score distributions of normal and anomalous points on shared bins, log counts."""
    true = check_labels(labels)
    score = check_scores(scores, len(true))
    bins = np.histogram_bin_edges(score, bins=60).tolist()
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    ax.hist(score[~true], bins=bins, alpha=0.6, color="tab:blue", label="normal")
    ax.hist(score[true], bins=bins, alpha=0.6, color="tab:orange", label="anomaly")
    ax.axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="anomaly score", ylabel="points", yscale="log")
    ax.legend(loc="upper right")
    return fig


def plot_confusion_matrix(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> Figure:
    """2x2 point-wise confusion matrix with counts written in the cells."""
    true, pred = _check_pair(labels, predictions)
    counts = np.bincount(2 * true + pred, minlength=4).reshape(2, 2)  # rows true, cols predicted
    fig = _figure(4.5, 4.0)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if count > counts.max() / 2 else "black"
        ax.text(col, row, f"{count:,}", ha="center", va="center", color=color)
    ticks = ["normal", "anomaly"]
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=ticks,
        yticklabels=ticks,
        xlabel="predicted",
        ylabel="true",
    )
    fig.colorbar(image, ax=ax)
    return fig
