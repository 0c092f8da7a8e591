"""The alarm budget: at most N episodes a day, the highest-ranked kept.

A team can look at a fixed number of events a day. The budget keeps the episodes with the
highest peak score (per dataset, or per entity so that one restless patient cannot crowd out
the ward) and marks the rest as held back: they stay in ``alarms.parquet``, but the report and
the digest show only those within the budget, and say how many were held back. Pure functions
on episode frames (:mod:`pipeline.episodes`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import episodes
from pipeline.choices import BudgetScope
from pipeline.config import ENTITY, AlarmsSpec


def apply_budget(day: pd.DataFrame, cap: int | None, per: BudgetScope) -> pd.DataFrame:
    """One day's episodes with ``within_budget`` set: the ``cap`` highest peaks (per ``per``).

    ``day`` is ranked as :func:`pipeline.episodes.episodes` returns it; no cap keeps all.
    """
    if cap is None:
        return day.assign(within_budget=True)
    ranked = day.sort_values(["peak_score", "start"], ascending=[False, True], kind="stable")
    place = ranked.groupby(ENTITY).cumcount() if per == "entity" else np.arange(len(ranked))
    return day.assign(within_budget=pd.Series(place < cap, index=ranked.index))


def held_back(day: pd.DataFrame) -> int:
    """How many of a day's episodes the budget held back."""
    return int((~day["within_budget"].astype(bool)).sum())


def at_budget(
    frame: pd.DataFrame, alarms: np.ndarray, rule: episodes.EpisodeRule, spec: AlarmsSpec
) -> dict[str, float | int | str | None]:
    """Event precision and recall on labeled days when each day shows only its budget.

    ``frame`` holds ``timestamp``, ``entity``, ``score`` and ``label`` per row, ``alarms``
    the rows at the threshold. Episodes are grouped over the whole period, counted on the day
    they start, capped per day, and only those kept are matched against the labeled events.
    """
    found = episodes.labeled_frame_episodes(frame, alarms, rule)
    kept = pd.concat(
        [
            apply_budget(day, spec.max_episodes_per_day, spec.budget_per)
            for _, day in found.groupby(found["start"].dt.floor("D"), sort=True)
        ]
        or [found]
    )
    metrics = episodes.match_events(frame, kept[kept["within_budget"]], rule)
    return {
        "max_episodes_per_day": spec.max_episodes_per_day,
        "budget_per": spec.budget_per,
        "episodes": len(found),
        "episodes_held_back": held_back(kept),
        "precision": metrics["episode_precision"],
        "recall": metrics["episode_recall"],
    }
