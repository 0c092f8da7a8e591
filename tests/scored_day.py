"""A scored day's episodes and summary written as daily scoring writes them, without a model.

A module of its own, like ``homes``: the notification and review tests both need a scored day
and neither needs the model that would have scored it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from pipeline import budget, daily, episodes
from pipeline.config import Settings
from pipeline.data import io

DAY = dt.date(2026, 1, 9)
MIDNIGHT = pd.Timestamp(DAY, tz="UTC")


def scored_day(settings: Settings) -> Path:
    """Three episodes of three beds (peak 9.5, 4.2, 1.2), the last held back by a budget of
    two; returns the day's output partition."""
    rows = pd.DataFrame(
        {
            "timestamp": [MIDNIGHT + pd.Timedelta(minutes=m) for m in range(3)] * 3,
            "entity": ["bed-1"] * 3 + ["bed-2"] * 3 + ["bed-3"] * 3,
            "score": [9.0, 9.5, 9.2, 4.0, 4.1, 4.2, 1.0, 1.1, 1.2],
            "top_features": [["spo2", "heart_rate"]] * 9,
            "model_version": "5",
        }
    )
    rule = episodes.EpisodeRule(dt.timedelta(minutes=1), dt.timedelta(minutes=5), dt.timedelta(0))
    found = budget.apply_budget(episodes.day_episodes(rows, rule, 2, MIDNIGHT), 2, "dataset")
    out = settings.partition("scores", "vitals", DAY)
    io.write_parquet_atomic(found, out / daily.ALARMS_FILE, schema=episodes.EPISODES_SCHEMA)
    summary = {
        "entities": 8,
        "alarm_minutes": 9.0,
        "episodes": 3,
        "episodes_held_back": 1,
        "model_name": "tsad-vitals",
        "model_version": "5",
        "drift": {"drifted": False},
    }
    io.write_text_atomic(pd.Series(summary).to_json(), out / daily.SUMMARY_FILE)
    return out
