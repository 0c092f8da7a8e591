"""Errors, input checks and the alarm rule shared by the maths modules and the detectors.

Calibration, evaluation, attribution and monitoring check scores and labels the same way,
detectors and calibrators refuse use before fitting with the same error, and every place that
turns scores into alarms applies :func:`alarms`. Keeping these here lets each of those modules
import only this one, never a detector or a dataset loader.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Interpretation = list[tuple[int, int, list[int]]]
"""Ground truth of which features cause an anomaly: ``(first row, last row, feature indices)``
ranges, as SMD's interpretation labels give them (rows inclusive, features 0-based)."""


class NotFittedError(RuntimeError):
    """Raised when a detector or calibrator is used before ``fit`` (or ``load``)."""


class NonFiniteScoreError(ValueError):
    """A detector produced NaN or infinite scores (or training loss): a number no threshold
    can compare, so the run stops with the detector's name instead of writing it."""


def require_finite(detector: str, values: np.ndarray, what: str = "scores") -> np.ndarray:
    """``values`` unchanged if every entry is finite, else :class:`NonFiniteScoreError`."""
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
        raise NonFiniteScoreError(
            f"{detector} produced {bad} NaN or infinite {what} out of {values.size}: "
            "the model diverged or its arithmetic overflowed on these inputs"
        )
    return values


def check_scores(scores: npt.ArrayLike, n: int | None = None) -> np.ndarray:
    """Return ``scores`` as a finite 1-D float64 array (of length ``n`` when given).

    NaN or infinite scores are rejected rather than dropped: a comparison with NaN is always
    False, so a NaN would silently become "normal" in every threshold and metric.
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"scores have {len(array)} points, labels have {n}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"scores contain {np.count_nonzero(~np.isfinite(array))} NaN or infinite values; "
            "fix the detector output (or drop those points with their labels) first"
        )
    return array


def check_labels(labels: npt.ArrayLike, n: int | None = None) -> np.ndarray:
    """Return 0/1 (or bool) ``labels`` as a 1-D bool array (of length ``n`` when given)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"labels have {len(array)} points, expected {n}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    return array.astype(bool)


def alarms(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The product's one alarm rule: a score at or above the calibrated threshold alarms.

    Calibration, evaluation, monitoring, explanations and daily scoring all flag with this, so
    a threshold means the same everywhere (ties alarm).
    """
    return scores >= threshold
