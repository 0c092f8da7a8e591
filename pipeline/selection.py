"""Choosing one detector among candidates, on labeled validation data only.

No detector wins on every dataset, so the choice is made per dataset on its own labeled
validation rows (the days or the calibration part the threshold is fitted on), by VUS-PR:
threshold-free, so the choice does not depend on a threshold fitted on the same rows. Test
rows never enter: they are for reporting the winner once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from pipeline import evaluation


def validation_metric(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """VUS-PR of ``scores`` on labeled validation rows; NaN when they hold no anomaly."""
    if not np.asarray(labels).any():
        return math.nan
    return evaluation.vus_pr(labels, scores)


def choose(metrics: Mapping[str, float]) -> str:
    """The candidate with the highest validation metric.

    Ties go to the earlier candidate, and without any finite metric (no anomaly among the
    validation rows, or every candidate failed) the first candidate wins: the order of the
    list is the user's stated preference, used only where the labels cannot decide.
    """
    if not metrics:
        raise ValueError("no candidate to choose from")
    finite = {name: value for name, value in metrics.items() if math.isfinite(value)}
    if not finite:
        return next(iter(metrics))
    best = max(finite.values())
    return next(name for name, value in finite.items() if value == best)
