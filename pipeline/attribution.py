"""Which features drive an alarm, and how well a detector's answer matches the truth.

A detector's ``score_features`` gives one score per row and feature (higher = more responsible).
This module turns those into what a user reads (the top features of a row with their share of
the row's anomaly) and measures them against ground truth: HitRate@P% of OmniAnomaly (Su et al.,
2019), over SMD's interpretation labels, for every anomalous point with true feature set G, the
share of G found among the ``ceil(P% x |G|)`` highest-scored features.

The baseline every detector must beat is the per-feature deviation: the absolute z-score of each
value against the training statistics (the scaled value itself, since inputs are standardised on
the training data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.checks import Interpretation


def check_feature_scores(feature_scores: np.ndarray, n_features: int | None = None) -> np.ndarray:
    """A finite (rows, features) array, or a ValueError saying what is wrong."""
    scores = np.asarray(feature_scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"feature scores must be 2-D (rows, features), got shape {scores.shape}")
    if n_features is not None and scores.shape[1] != n_features:
        raise ValueError(f"{scores.shape[1]} feature scores per row for {n_features} features")
    if not np.isfinite(scores).all():
        raise ValueError("feature scores contain NaN or infinite values")
    return scores


def ranked_features(feature_scores: np.ndarray) -> np.ndarray:
    """Feature indices of each row, most responsible first (ties keep column order)."""
    return np.argsort(-check_feature_scores(feature_scores), axis=1, kind="stable")


def top_features(
    feature_scores: np.ndarray, names: Sequence[str], k: int
) -> tuple[list[list[str]], list[list[float]]]:
    """The ``k`` most responsible features of each row and their contributions.

    A contribution is the feature's share of the row's per-feature scores, so the
    contributions of all features sum to 1 (a score below zero counts as zero).
    """
    scores = check_feature_scores(feature_scores, len(names))
    if k < 1:
        raise ValueError(f"the number of top features must be positive, got {k}")
    order = ranked_features(scores)[:, :k]
    positive = np.maximum(scores, 0.0)
    totals = positive.sum(axis=1, keepdims=True)
    shares = np.divide(positive, totals, out=np.zeros_like(positive), where=totals > 0)
    top_shares = np.take_along_axis(shares, order, axis=1)
    labels = np.asarray(names, dtype=object)[order]
    return labels.tolist(), np.round(top_shares, 4).tolist()


def hit_rate(
    feature_scores: np.ndarray,
    interpretation: Interpretation,
    percent: float,
    rows: slice = slice(None),
) -> float:
    """HitRate@``percent``% over every interpreted anomalous point inside ``rows``.

    ``feature_scores`` covers the whole test part (the row numbers of ``interpretation``);
    ``rows`` restricts the points counted, e.g. to the reported part of the evaluation split.
    Returns NaN when no interpreted point falls inside ``rows``.
    """
    scores = check_feature_scores(feature_scores)
    if percent <= 0:
        raise ValueError(f"HitRate needs a positive percentage, got {percent}")
    first, last, _ = rows.indices(len(scores))
    hits: list[np.ndarray] = []
    for start, end, truth in interpretation:
        begin, stop = max(start, first), min(end, last)
        if begin >= stop:
            continue
        k = min(math.ceil(percent / 100 * len(truth)), scores.shape[1])
        found = np.isin(ranked_features(scores[begin:stop])[:, :k], truth).sum(axis=1)
        hits.append(found / len(truth))
    return float(np.concatenate(hits).mean()) if hits else math.nan


def deviation_scores(standardised: np.ndarray) -> np.ndarray:
    """The baseline attribution: each value's absolute z-score against the training data."""
    return np.abs(np.asarray(standardised, dtype=np.float64))
