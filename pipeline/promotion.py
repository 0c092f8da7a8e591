"""The promotion gate: challenger and production judged on the same labeled data.

Each version's own evaluation metrics were measured on the test days of its own training run, so
comparing them compares different data (a later run may simply have had an easier week). The
gate instead scores the challenger run's labeled test days with both models, each at its own
calibrated threshold, and promotes the challenger only if it is at least as good on the chosen
metric. A production model that cannot score those rows (its features differ) is not compared
at all: the verdict says so and leaves the choice to a person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import evaluation
from pipeline.choices import PROMOTION_METRICS
from pipeline.config import ENTITY, LABEL, TIMESTAMP, ConfigError
from pipeline.scoring import ModelBundle, ModelMismatchError


def check_metric(metric: str) -> str:
    """Accept only metrics where higher is better (a gate on ``n_points`` would be noise)."""
    if metric not in PROMOTION_METRICS:
        raise ConfigError(
            f"unknown promotion metric {metric!r}: choose one of {', '.join(PROMOTION_METRICS)}"
        )
    return metric


def gate_metric(bundle: ModelBundle, frame: pd.DataFrame, metric: str) -> float:
    """``metric`` of ``bundle`` on a labeled canonical frame, at the bundle's own threshold."""
    if LABEL not in frame or not len(frame):
        raise ValueError("the promotion gate needs labeled evaluation rows, and got none")
    ordered = frame.sort_values([ENTITY, TIMESTAMP], kind="stable").reset_index(drop=True)
    scores = bundle.score_segments(ordered)  # as the evaluate step scores its test split
    labels = ordered[LABEL].to_numpy(dtype=np.int8)
    return float(evaluation.evaluate(labels, scores, bundle.threshold)[metric])


@dataclass(frozen=True)
class GateVerdict:
    """What the gate measured and decided; ``production`` is None when nothing was compared."""

    promote: bool
    reason: str
    metric: str
    challenger: float
    production: float | None
    production_version: str | None

    def tags(self) -> dict[str, str]:
        """The verdict as registry tags on the challenger version (``gate.*``)."""
        return {
            "gate.metric": self.metric,
            "gate.challenger": f"{self.challenger:.6g}",
            "gate.production": "none" if self.production is None else f"{self.production:.6g}",
            "gate.production_version": self.production_version or "none",
            "gate.decision": "promoted" if self.promote else "rejected",
            "gate.reason": self.reason,
        }


def judge(
    challenger: ModelBundle,
    production: ModelBundle | None,
    production_version: str | None,
    frame: pd.DataFrame,
    metric: str,
) -> GateVerdict:
    """Score ``frame`` with both models and decide whether the challenger replaces production."""
    check_metric(metric)
    candidate = gate_metric(challenger, frame, metric)
    if production is None:
        return GateVerdict(True, "no production version yet", metric, candidate, None, None)
    try:
        production.check_compatible(challenger.spec)
    except ModelMismatchError as exc:
        reason = (
            f"production version {production_version} cannot score the challenger's test data "
            f"({exc}); review both and promote by hand if the challenger should serve"
        )
        return GateVerdict(False, reason, metric, candidate, None, production_version)
    incumbent = gate_metric(production, frame, metric)
    if not (math.isfinite(candidate) and math.isfinite(incumbent)):
        reason = f"{metric} is undefined on the test data (does it hold both classes?)"
        return GateVerdict(False, reason, metric, candidate, incumbent, production_version)
    relation = ">=" if candidate >= incumbent else "<"
    reason = (
        f"{metric} {candidate:.4f} {relation} production version {production_version}'s "
        f"{incumbent:.4f} on the same test data"
    )
    promote = candidate >= incumbent
    return GateVerdict(promote, reason, metric, candidate, incumbent, production_version)
