"""Alarm episodes: a day's alarm rows grouped, per entity, into the events people act on.

A nurse or an analyst does not act on alarm minutes but on events: per entity, alarm rows whose
quiet gaps last at most ``merge_gap`` are one episode, and an episode shorter than
``min_duration`` is dropped (a single noisy minute is not an event). Everything here is a pure
function on frames or arrays, so daily scoring, evaluation and calibration group alarms alike.

An episode's id is a digest of its entity and start, so a rerun of a day gives the same ids.
An episode that crosses midnight is grouped with the previous day's alarm rows: it keeps the
start (and the id) it had there, and counts its minutes on both sides of midnight.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec, parse_duration

DEFAULT_GAP_STEPS = 5
"""Quiet steps that still join two alarms into one episode, when the spec sets no merge gap."""

DEFAULT_MIN_STEPS = 3
"""Steps in alarm a sub-hourly episode needs, when the spec sets no minimum duration."""

ALARM_ROW_COLUMNS = [TIMESTAMP, ENTITY, "score", "top_features", "model_version"]
"""What grouping reads of each alarm row of a scores file."""

EPISODES_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string()),
        pa.field(ENTITY, pa.string()),
        pa.field("start", pa.timestamp("ns", tz="UTC")),
        pa.field("end", pa.timestamp("ns", tz="UTC")),
        pa.field("duration_minutes", pa.float64()),
        pa.field("alarm_minutes", pa.float64()),
        pa.field("peak_score", pa.float64()),
        pa.field("mean_score", pa.float64()),
        pa.field("top_features", pa.list_(pa.string())),
        pa.field("model_version", pa.string()),
        pa.field("continued", pa.bool_()),
        pa.field("within_budget", pa.bool_()),
    ]
)
"""The columns of ``alarms.parquet``: one row per episode, highest peak score first."""


@dataclass(frozen=True)
class EpisodeRule:
    """How alarm rows group: sampling ``step``, longest quiet ``merge_gap``, ``min_duration``."""

    step: dt.timedelta
    merge_gap: dt.timedelta
    min_duration: dt.timedelta

    @classmethod
    def for_spec(cls, spec: DatasetSpec) -> EpisodeRule:
        """The dataset's rule, its unset durations derived from the sampling step."""
        step = spec.step
        min_steps = DEFAULT_MIN_STEPS if step < dt.timedelta(hours=1) else 1
        gap, shortest = spec.alarms.merge_gap, spec.alarms.min_duration
        return cls(
            step=step,
            merge_gap=parse_duration(gap, "merge_gap") if gap else DEFAULT_GAP_STEPS * step,
            min_duration=parse_duration(shortest, "min_duration") if shortest else min_steps * step,
        )

    @classmethod
    def of_steps(cls, gap_steps: int, min_steps: int) -> EpisodeRule:
        """A rule counted in steps of a series whose positions are consecutive steps."""
        step = dt.timedelta(seconds=1)
        return cls(step=step, merge_gap=gap_steps * step, min_duration=min_steps * step)

    def step_params(self) -> dict[str, float]:
        """The rule as the ``event_f1`` calibrator's parameters."""
        return {"gap_steps": self.gap_steps, "min_steps": self.min_steps}

    @property
    def gap_steps(self) -> int:
        """Quiet steps allowed inside one episode."""
        return self.merge_gap // self.step

    @property
    def min_steps(self) -> int:
        """Steps from first to last alarm an episode needs (at least one)."""
        return max(1, math.ceil(self.min_duration / self.step))


class Spans(NamedTuple):
    """Episodes as inclusive position ranges ``[first, last]`` per entity code, in order."""

    codes: np.ndarray
    first: np.ndarray
    last: np.ndarray


def group_runs(
    codes: np.ndarray, positions: np.ndarray, gap_steps: int
) -> tuple[np.ndarray, Spans]:
    """Each alarm row's run number and the runs, for rows sorted by code then position.

    A run starts at a new entity code or after more than ``gap_steps`` quiet positions.
    """
    starts = np.ones(len(codes), dtype=bool)
    starts[1:] = (codes[1:] != codes[:-1]) | (np.diff(positions) - 1 > gap_steps)
    number = np.cumsum(starts) - 1
    ends = np.append(starts[1:], True)
    return number, Spans(codes[starts], positions[starts], positions[ends])


def long_enough(spans: Spans, min_steps: int) -> np.ndarray:
    """Which spans last ``min_steps`` positions or more."""
    return spans.last - spans.first + 1 >= min_steps


def mask_spans(alarms: np.ndarray, rule: EpisodeRule, codes: np.ndarray | None = None) -> Spans:
    """Episodes of a boolean series whose positions are consecutive steps.

    ``codes`` (one per position, non-decreasing) keeps entities apart; without it the series
    is one entity, as evaluation treats entities scored back to back.
    """
    positions = np.flatnonzero(alarms)
    owner = np.zeros(len(positions), dtype=np.int64) if codes is None else codes[positions]
    _, spans = group_runs(owner, positions, rule.gap_steps)
    kept = long_enough(spans, rule.min_steps)
    return Spans(spans.codes[kept], spans.first[kept], spans.last[kept])


def _overlapped(spans: Spans, others: Spans) -> np.ndarray:
    """Which of ``spans`` share a position with any of ``others`` (same code)."""
    offset = int(max(spans.last.max(initial=0), others.last.max(initial=0))) + 1
    other_first = others.codes * offset + others.first
    other_last = others.codes * offset + others.last
    first, last = spans.codes * offset + spans.first, spans.codes * offset + spans.last
    nearest = np.searchsorted(other_last, first, side="left")
    inside = nearest < len(other_last)
    hit = np.zeros(len(first), dtype=bool)
    hit[inside] = other_first[nearest[inside]] <= last[inside]
    return hit


def event_metrics(true: Spans, predicted: Spans) -> dict[str, float]:
    """Event-level precision, recall and F1 of predicted episodes against true events.

    An episode is right when it overlaps a true event; an event is found when an episode
    overlaps it. Each counts once whatever its length, so a long event no longer outweighs
    many short ones, and twenty alarm minutes inside one event are one true positive.
    """
    precision = float(_overlapped(predicted, true).mean()) if len(predicted.codes) else 0.0
    recall = float(_overlapped(true, predicted).mean()) if len(true.codes) else 0.0
    total = precision + recall
    f1 = 2 * precision * recall / total if total else 0.0
    return {"episode_precision": precision, "episode_recall": recall, "episode_f1": f1}


def frame_spans(
    frame: pd.DataFrame, flag: str, rule: EpisodeRule
) -> tuple[pd.DataFrame, np.ndarray, Spans]:
    """The ``flag`` rows of a frame (``timestamp``, ``entity``) grouped into runs.

    Returns those rows in entity-then-time order, each one's run number, and the runs
    (positions count steps since the earliest row; codes number the sorted entities).
    """
    rows = frame.loc[frame[flag].astype(bool)].sort_values([ENTITY, TIMESTAMP], kind="stable")
    codes = pd.factorize(rows[ENTITY], sort=True)[0].astype(np.int64)
    times = rows[TIMESTAMP]
    positions = ((times - times.min()) // pd.Timedelta(rule.step)).to_numpy(dtype=np.int64)
    number, spans = group_runs(codes, positions, rule.gap_steps)
    return rows.reset_index(drop=True), number, spans


def episode_id(entity: str, start: pd.Timestamp) -> str:
    """A short digest of entity and start: the same episode gets the same id on every rerun."""
    key = f"{entity}|{pd.Timestamp(start).isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _top_features(rows: pd.DataFrame, number: np.ndarray, count: int) -> pd.Series:
    """Per run number, the ``count`` features its rows name most often (ties: first named)."""
    named = pd.DataFrame({"run": number, "feature": rows["top_features"]}).explode("feature")
    named = named.dropna(subset=["feature"])
    counts = named.groupby(["run", "feature"], sort=False).size().reset_index(name="n")
    ranked = counts.sort_values("n", ascending=False, kind="stable")
    return ranked.groupby("run", sort=False).head(count).groupby("run")["feature"].agg(list)


def episodes(alarm_rows: pd.DataFrame, rule: EpisodeRule, top_features: int) -> pd.DataFrame:
    """Alarm rows (:data:`ALARM_ROW_COLUMNS`) grouped into episodes of :data:`EPISODES_SCHEMA`.

    Episodes shorter than the rule's minimum are dropped; the rest are ranked by peak score,
    then start, the order a budget keeps them in. ``within_budget`` is True until a budget
    (:mod:`pipeline.budget`) says otherwise; ``continued`` is False until a day says otherwise.
    """
    if alarm_rows.empty:
        return empty_episodes()
    frame = alarm_rows.assign(alarm=True)
    rows, number, spans = frame_spans(frame, "alarm", rule)
    step_minutes = pd.Timedelta(rule.step).total_seconds() / 60
    grouped = rows.groupby(number, sort=True)
    table = pd.DataFrame(
        {
            ENTITY: grouped[ENTITY].first().astype(str),
            "start": grouped[TIMESTAMP].min(),
            "end": grouped[TIMESTAMP].max() + pd.Timedelta(rule.step),
            "alarm_minutes": grouped.size() * step_minutes,
            "peak_score": grouped["score"].max().astype(float),
            "mean_score": grouped["score"].mean().astype(float),
            "model_version": grouped["model_version"].last().astype(str),
        }
    )
    table["top_features"] = _top_features(rows, number, top_features).reindex(table.index)
    table["top_features"] = table["top_features"].map(lambda x: x if isinstance(x, list) else [])
    table = table[long_enough(spans, rule.min_steps)]
    table["duration_minutes"] = (table["end"] - table["start"]).dt.total_seconds() / 60
    table["episode_id"] = [
        episode_id(entity, start)
        for entity, start in zip(table[ENTITY], table["start"], strict=True)
    ]
    table = table.assign(continued=False, within_budget=True)
    ranked = table.sort_values(["peak_score", "start"], ascending=[False, True], kind="stable")
    return ranked[EPISODES_SCHEMA.names].reset_index(drop=True)


def day_episodes(
    alarm_rows: pd.DataFrame,
    rule: EpisodeRule,
    top_features: int,
    day_start: pd.Timestamp,
) -> pd.DataFrame:
    """The episodes with alarm rows on the day starting at ``day_start``.

    ``alarm_rows`` holds the day's alarm rows and may hold the previous day's: an episode that
    runs on from before midnight is grouped with them, keeps its start and id, and is marked
    ``continued``; one that ended before midnight belongs to the previous day alone.
    """
    grouped = episodes(alarm_rows, rule, top_features)
    today = grouped[grouped["end"] > day_start].reset_index(drop=True)
    return today.assign(continued=today["start"] < day_start)


def empty_episodes() -> pd.DataFrame:
    """An episode frame without rows, with every column of :data:`EPISODES_SCHEMA`."""
    return EPISODES_SCHEMA.empty_table().to_pandas()


class _Grid:
    """Entity codes and step positions shared by the events and episodes of one labeled frame."""

    def __init__(self, frame: pd.DataFrame, step: dt.timedelta) -> None:
        self._entities = np.sort(frame[ENTITY].astype(str).unique())
        self._origin = frame[TIMESTAMP].min()
        self._step = pd.Timedelta(step)

    def codes(self, entities: pd.Series) -> np.ndarray:
        return np.searchsorted(self._entities, entities.astype(str).to_numpy()).astype(np.int64)

    def positions(self, times: pd.Series) -> np.ndarray:
        return ((times - self._origin) // self._step).to_numpy(dtype=np.int64)


def labeled_frame_episodes(
    frame: pd.DataFrame, alarms: np.ndarray, rule: EpisodeRule
) -> pd.DataFrame:
    """Episodes of a labeled frame's ``alarms`` rows (``timestamp``, ``entity``, ``score``).

    Evaluation and calibration read no explanations, so episodes name no features.
    """
    rows = frame.loc[alarms, [TIMESTAMP, ENTITY, "score"]]
    return episodes(rows.assign(top_features=[[]] * len(rows), model_version=""), rule, 1)


def match_events(frame: pd.DataFrame, shown: pd.DataFrame, rule: EpisodeRule) -> dict[str, float]:
    """:func:`event_metrics` of the episodes ``shown`` against a frame's labeled events.

    Events are runs of consecutive labeled steps of one entity (``label`` column).
    """
    grid = _Grid(frame, rule.step)
    labeled = frame.loc[frame["label"].astype(bool)].sort_values([ENTITY, TIMESTAMP])
    _, truth = group_runs(grid.codes(labeled[ENTITY]), grid.positions(labeled[TIMESTAMP]), 0)
    ordered = shown.sort_values([ENTITY, "start"], kind="stable")
    predicted = Spans(
        grid.codes(ordered[ENTITY]),
        grid.positions(ordered["start"]),
        grid.positions(ordered["end"] - pd.Timedelta(rule.step)),
    )
    return event_metrics(truth, predicted)
