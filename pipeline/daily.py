"""A landed day scored to its output partition: scores, alarm episodes, report and summary.

The day is read once, in chunks of whole entities (:meth:`ModelBundle.score_partition`): each
chunk is scored, flagged and appended to the scores file, and adds to the day's drift counts
(:class:`pipeline.monitoring.DriftAccumulator`) and entity ranking. The report then reads back
only the entities it plots, so memory does not grow with the day. Nothing here knows MLflow,
validation or locks: :func:`pipeline.steps.score` supplies the model and holds the lock, and
the growth benchmark measures this same code.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from pipeline import budget, episodes, monitoring
from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.data import io
from pipeline.report import DailyReport, entity_alarms, plotted_entities, rank_entities, render
from pipeline.scoring import ModelBundle, PartitionScores
from pipeline.sharding import Shard

SCORES_FILE = "scores.parquet"
ALARMS_FILE = "alarms.parquet"
SUMMARY_FILE = "summary.json"
DAILY_REPORT_FILE = "report.html"


def _standardised(
    bundle: ModelBundle, spec: DatasetSpec, landing: Path, plotted: list[str]
) -> pd.DataFrame:
    """The ``plotted`` entities' ``timestamp``, ``entity`` and features as training z-scores.

    A day without alarms plots no entity and the report reads no feature values, so the
    landed day is not read again for it: the frame is empty, with the same columns.
    """
    features = bundle.spec.feature_names
    if not plotted:
        return pd.DataFrame(columns=[TIMESTAMP, ENTITY, *features])
    frame = io.read_entities(landing, spec, plotted)
    standardised = frame[[TIMESTAMP, ENTITY]].copy()
    standardised[features] = bundle.scaler.transform(frame[features].to_numpy())
    return standardised


def _plotted_scores(target: Path, plotted: list[str]) -> pd.DataFrame:
    """The scores of the entities the report plots, read back from the day's scores file.

    A day without alarms plots none; Arrow cannot type an empty ``in`` filter, so then only
    the file's schema is read, for an empty frame with its columns.
    """
    if not plotted:
        return pq.read_schema(target).empty_table().to_pandas()
    return pd.read_parquet(target, filters=[(ENTITY, "in", plotted)])


@dataclass
class DayParts:
    """What a day's scored chunks add up to, apart from the scores file itself.

    Everything here adds up across entities: counts, each entity's alarm row for the ranking,
    the alarm rows episodes are grouped from, and the drift bin counts. So the parts of a day
    scored as shards (:mod:`pipeline.day_shards`) merge into those of the day scored whole.
    """

    totals: PartitionScores
    entity_alarms: pd.DataFrame
    alarm_rows: pd.DataFrame
    drift: monitoring.DriftAccumulator | None

    def ranking(self) -> pd.DataFrame:
        """Entities ranked by their alarms over the whole day."""
        return rank_entities(self.entity_alarms)


class DayObserver:
    """What a day's chunks add up to as they stream by: drift counts and each entity's alarms."""

    def __init__(self, bundle: ModelBundle, spec: DatasetSpec) -> None:
        self._bundle, self._spec = bundle, spec
        self._drift = (
            None if bundle.profile is None else monitoring.DriftAccumulator(bundle.profile)
        )
        self._alarms_by_entity: list[pd.DataFrame] = []
        self._alarm_rows: list[pd.DataFrame] = []

    def __call__(self, own: pd.DataFrame, scores: pd.DataFrame) -> None:
        """Add one chunk: its canonical rows as landed and their scores."""
        self._alarms_by_entity.append(entity_alarms(scores, self._spec.step))
        alarmed = scores["is_anomaly"].to_numpy(dtype=bool)
        self._alarm_rows.append(scores.loc[alarmed, episodes.ALARM_ROW_COLUMNS])
        if self._drift is not None:
            self._drift.add(
                self._bundle.scaler.transform(own[self._spec.feature_names].to_numpy()),
                scores["score"].to_numpy(),
                self._bundle.threshold,
            )

    def parts(self, totals: PartitionScores) -> DayParts:
        """Everything observed, with the ``totals`` the scoring counted."""
        rankings = self._alarms_by_entity or [entity_alarms(_NO_SCORES, self._spec.step)]
        rows = [part for part in self._alarm_rows if len(part)] or self._alarm_rows[:1]
        return DayParts(
            totals,
            pd.concat(rankings, ignore_index=True),
            pd.concat(rows, ignore_index=True)
            if rows
            else pd.DataFrame(columns=episodes.ALARM_ROW_COLUMNS),
            self._drift,
        )


# The columns entity_alarms reads, without rows: the ranking of a shard that scored nothing.
_NO_SCORES = pd.DataFrame(
    {
        ENTITY: pd.Series(dtype=str),
        "score": pd.Series(dtype=float),
        "is_anomaly": pd.Series(dtype=bool),
        "top_features": pd.Series(dtype=object),
    }
)


def day_episodes(
    parts: DayParts, spec: DatasetSpec, day_start: pd.Timestamp, previous: Path | None
) -> pd.DataFrame:
    """The day's episodes, grouped with the ``previous`` day's alarm rows, within budget.

    Alarm rows are a small share of a day, so they are held whole; the previous day's
    are read back from its scores file (only its alarm rows and the columns grouping needs).
    """
    rows = [parts.alarm_rows]
    if previous is not None and previous.is_file():
        earlier = pd.read_parquet(
            previous, columns=episodes.ALARM_ROW_COLUMNS, filters=[("is_anomaly", "==", True)]
        )
        rows.insert(0, earlier[earlier[TIMESTAMP] < day_start])
    found = episodes.day_episodes(
        pd.concat([part for part in rows if len(part)] or [rows[-1]], ignore_index=True),
        episodes.EpisodeRule.for_spec(spec),
        spec.monitoring.top_features,
        day_start,
    )
    return budget.apply_budget(found, spec.alarms.max_episodes_per_day, spec.alarms.budget_per)


def score_landed(
    bundle: ModelBundle,
    spec: DatasetSpec,
    day: dt.date,
    landing: Path,
    context: Path | None,
    out: Path,
    model_name: str,
    model_version: str,
    previous_scores: Path | None = None,
    reviewed: Mapping[str, str] | None = None,
) -> dict:
    """Stream a validated day to ``out``: scores, episodes, daily report and summary.

    The day is read once, chunk by chunk (:meth:`ModelBundle.score_partition`); each chunk
    adds to the drift counts, the entity ranking and the alarm rows, and the report reads back
    only its plotted entities, so memory does not grow with the day. ``previous_scores``, the
    previous day's scores file, lets an episode that crosses midnight keep its start;
    ``reviewed`` (episode id to verdict) marks the episodes already reviewed in the report. The
    caller holds the partition's lock; each file is written atomically, the summary last.
    Returns the summary.
    """
    model = (model_name, model_version)
    parts = score_parts(bundle, spec, day, landing, context, out, model)
    return finish_day(bundle, spec, day, landing, out, parts, model, previous_scores, reviewed)


def score_parts(
    bundle: ModelBundle,
    spec: DatasetSpec,
    day: dt.date,
    landing: Path,
    context: Path | None,
    out: Path,
    model: tuple[str, str],
    shard: Shard | None = None,
) -> DayParts:
    """Stream the day's rows (``shard``'s alone, when given) to ``out``'s scores file and return
    what its chunks add up to. ``model`` is the registered name and version, the scores'
    constant columns."""
    model_name, model_version = model
    observe = DayObserver(bundle, spec)
    totals = bundle.score_partition(
        landing,
        out / SCORES_FILE,
        context,
        constants={"model_name": model_name, "model_version": model_version},
        spec=spec,
        observe=observe,
        day_start=pd.Timestamp(day, tz="UTC"),
        shard=shard,
    )
    return observe.parts(totals)


def finish_day(
    bundle: ModelBundle,
    spec: DatasetSpec,
    day: dt.date,
    landing: Path,
    out: Path,
    parts: DayParts,
    model: tuple[str, str],
    previous_scores: Path | None = None,
    reviewed: Mapping[str, str] | None = None,
) -> dict:
    """Write a day's episodes, report and summary beside its scores file in ``out``.

    ``parts`` are what its chunks added up to (one run's, or its shards' merged); ``model`` is
    the registered name and version that scored it. Returns the summary.
    """
    model_name, model_version = model
    target = out / SCORES_FILE
    totals = parts.totals
    found = day_episodes(parts, spec, pd.Timestamp(day, tz="UTC"), previous_scores)
    io.write_parquet_atomic(found, out / ALARMS_FILE, schema=episodes.EPISODES_SCHEMA)
    drift = None if parts.drift is None else parts.drift.report(spec.monitoring.drift_level)
    ranking = parts.ranking()
    plotted = plotted_entities(ranking, spec.monitoring.report_entities)
    report = DailyReport(
        dataset=spec.name,
        date=day.isoformat(),
        model_name=model_name,
        model_version=model_version,
        threshold=bundle.threshold,
        rows=totals.rows,
        alarms=totals.anomalies,
        ranking=ranking,
        scores=_plotted_scores(target, plotted),
        standardised=_standardised(bundle, spec, landing, plotted),
        drift=drift,
        entities_plotted=spec.monitoring.report_entities,
        episodes=found,
        budget=spec.alarms.max_episodes_per_day,
        reviewed=reviewed or {},
    )
    io.write_text_atomic(render(report), out / DAILY_REPORT_FILE)
    summary = {
        "dataset": spec.name,
        "date": day.isoformat(),
        **_counts(totals),
        **_episode_counts(totals, found, spec),
        "threshold": bundle.threshold,
        "model_name": model_name,
        "model_version": model_version,
        "flagged_rows": totals.flagged_rows,
        "drift": None if drift is None else drift.to_dict(),
    }
    io.write_text_atomic(json.dumps(summary, indent=2), out / SUMMARY_FILE)
    return summary


def _counts(totals: PartitionScores) -> dict[str, float]:
    """The summary's row, entity and alarm counts of a scored day."""
    return {
        "rows": totals.rows,
        "entities": totals.entities,
        "anomalies": totals.anomalies,
        "anomaly_rate": totals.anomalies / totals.rows,
    }


def _episode_counts(
    totals: PartitionScores, found: pd.DataFrame, spec: DatasetSpec
) -> dict[str, float | int]:
    """The summary's alarm minutes beside the episodes they make, and those held back."""
    return {
        "alarm_minutes": totals.anomalies * spec.step.total_seconds() / 60,
        "episodes": len(found),
        "episodes_held_back": budget.held_back(found),
    }
