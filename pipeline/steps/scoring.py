"""The daily scoring step: one validated day scored with the ``@production`` model.

The previous day's partition, when it landed and passed validation, gives each entity's window
its context, so every row of the day gets a score.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import day_shards
from pipeline.config import DatasetSpec, Settings
from pipeline.daily import DAILY_REPORT_FILE, SCORES_FILE, SUMMARY_FILE, finish_day, score_landed
from pipeline.data import storage
from pipeline.sharding import Shard
from pipeline.steps.evidence import link_alarms_to_events
from pipeline.steps.reviews import already_reviewed
from pipeline.steps.series import series_inputs
from pipeline.steps.validation import is_validated, validated_landing

if TYPE_CHECKING:  # MLflow is imported where a model is loaded, not with this module
    from pipeline.tracking import LoadedModel


def _context(settings: Settings, spec: DatasetSpec, day: dt.date) -> Path | None:
    """The previous day's partition, when it landed and passed validation: context for today."""
    previous = day - dt.timedelta(days=1)
    if not is_validated(settings, spec.name, previous):
        return None
    return settings.partition("landing", spec.name, previous)


@dataclass(frozen=True)
class _DayInputs:
    """What scoring reads of a validated day: the partition (an event dataset's series), its
    context, and the spec they are read with."""

    spec: DatasetSpec
    landing: Path
    context: Path | None
    read_spec: DatasetSpec


def _day_inputs(settings: Settings, spec: DatasetSpec, day: dt.date) -> _DayInputs:
    landing = validated_landing(settings, spec, day)
    if spec.events is not None:  # the model reads the day's events as their bucketed series
        return _DayInputs(spec, *series_inputs(settings, spec, day))
    return _DayInputs(spec, landing, _context(settings, spec, day), spec)


def _production(settings: Settings, spec: DatasetSpec) -> LoadedModel:
    """The ``@production`` model, checked against the dataset's current spec."""
    from pipeline import tracking

    model = tracking.load_production_model(settings, spec.name)
    model.bundle.check_compatible(spec)
    return model


def score(dataset: str, day: dt.date, settings: Settings | None = None) -> str:
    """Score one day with the ``@production`` model; write scores, summary and report atomically.

    Beside the scores go ``alarms.parquet`` (the day's alarm episodes, grouped with the
    previous day's scored alarms when an episode crosses midnight), ``summary.json`` (with
    the drift indicators) and ``report.html``, the daily report, which is also logged to the
    day's MLflow scoring run. A rerun for the same day replaces the output. Returns the path
    of the scores file.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    model = _production(settings, spec)

    def write(staged: Path, inputs: _DayInputs, previous: Path) -> dict:
        return score_landed(
            model.bundle,
            inputs.read_spec,
            day,
            inputs.landing,
            inputs.context,
            staged,
            model.name,
            model.version,
            previous_scores=previous,
            reviewed=already_reviewed(settings, dataset, day),
        )

    return _commit_day(settings, spec, day, model, write)


def _commit_day(
    settings: Settings,
    spec: DatasetSpec,
    day: dt.date,
    model: LoadedModel,
    write: Callable[[Path, _DayInputs, Path], dict],
) -> str:
    """Replace the day's scores partition with what ``write`` puts in a staged folder (given
    the day's inputs and the previous day's scores file), link an event dataset's alarms to
    their events, and log the day's MLflow scoring run. Returns the scores file's path.

    The staged folder replaces the partition whole: a reader, or a crash, sees the previous
    output or the new one, never a mix.
    """
    inputs = _day_inputs(settings, spec, day)
    out = settings.partition("scores", spec.name, day)
    previous = _previous_scores(settings, spec.name, day)
    with storage.publish(settings, out) as staged:
        summary = write(staged, inputs, previous)
        _link_events(settings, inputs, day, staged)
    _log_run(settings, spec.name, day, model, summary)
    return str(out / SCORES_FILE)


def _previous_scores(settings: Settings, dataset: str, day: dt.date) -> Path:
    """The previous day's scores file (absent when it was not scored): midnight's episodes."""
    yesterday = settings.partition("scores", dataset, day - dt.timedelta(days=1))
    return storage.fetch(settings, yesterday) / SCORES_FILE


def _link_events(settings: Settings, inputs: _DayInputs, day: dt.date, staged: Path) -> None:
    """An event dataset's alarms linked to the events of their buckets."""
    spec = inputs.spec
    if spec.events is not None:
        landing = settings.partition("landing", spec.name, day)
        link_alarms_to_events(staged, inputs.landing, landing, spec)


def _log_run(
    settings: Settings, dataset: str, day: dt.date, model: LoadedModel, summary: dict
) -> None:
    from pipeline import tracking_scoring

    out = settings.partition("scores", dataset, day)
    tracking_scoring.log_scoring_run(
        settings,
        dataset,
        day.isoformat(),
        model,
        summary,
        artifacts=[out / DAILY_REPORT_FILE],
        validation=settings.partition("validation", dataset, day),
    )


def shard_partition(settings: Settings, dataset: str, day: dt.date, shard: Shard) -> Path:
    """``<data>/shards/<dataset>/date=D/of=N/shard=K``: one shard's committed part of a day.

    The count is part of the path, so the parts of an earlier run with another count are
    never mistaken for this one's.
    """
    day_folder = settings.partition("shards", dataset, day)
    return day_folder / f"of={shard.count}" / f"shard={shard.index}"


def score_shard(
    dataset: str,
    day: dt.date,
    shard: Shard,
    settings: Settings | None = None,
    model: LoadedModel | None = None,
) -> str:
    """Score one shard of a day and commit its part; the day is committed by :func:`finalize`.

    A rerun replaces the shard's part whole. ``model`` (the ``@production`` one, loaded once
    by a caller scoring several shards) is loaded here when not given. Returns the folder.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    model = model or _production(settings, spec)
    inputs = _day_inputs(settings, spec, day)
    out = shard_partition(settings, dataset, day, shard)
    with storage.publish(settings, out) as staged:
        day_shards.score_shard(
            model.bundle,
            inputs.read_spec,
            day,
            inputs.landing,
            inputs.context,
            staged,
            (model.name, model.version),
            shard,
        )
    return str(out)


def finalize(
    dataset: str,
    day: dt.date,
    shards: int,
    settings: Settings | None = None,
    model: LoadedModel | None = None,
) -> str:
    """Commit a day scored as ``shards`` shards: one scores file, episodes, report, summary.

    Refuses (:class:`~pipeline.day_shards.ShardsIncomplete`, naming them) unless every shard
    of that count is committed and was scored by the ``@production`` version. The day's
    partition is then replaced whole, as :func:`score` replaces it, with the same files, and
    the same MLflow scoring run is logged. Returns the path of the scores file.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    model = model or _production(settings, spec)
    folders = [
        storage.fetch(settings, shard_partition(settings, dataset, day, Shard(index, shards)))
        for index in range(shards)
    ]
    parts = [day_shards.read_part(folder) for folder in folders]
    day_shards.check_complete(parts, shards, model.version)
    loaded = model

    def write(staged: Path, inputs: _DayInputs, previous: Path) -> dict:
        return finish_day(
            loaded.bundle,
            inputs.read_spec,
            day,
            inputs.landing,
            staged,
            day_shards.merge_shards(loaded.bundle, folders, staged),
            (loaded.name, loaded.version),
            previous,
            already_reviewed(settings, dataset, day),
        )

    return _commit_day(settings, spec, day, model, write)


def score_sharded(dataset: str, day: dt.date, shards: int, settings: Settings | None = None) -> str:
    """Score every shard of a day in this process (the model loaded once), then finalize."""
    settings = Settings.resolve(settings)
    model = _production(settings, DatasetSpec.load(dataset))
    for index in range(shards):
        score_shard(dataset, day, Shard(index, shards), settings, model)
    return finalize(dataset, day, shards, settings, model)


def drift_status(scores_path: str) -> dict:
    """The drift verdict of a scored day, read from the summary beside its scores.

    ``{"drifted": bool, ...}`` with the dataset, date, model version and drifted features:
    what a retraining trigger needs. A model without a reference profile never drifts.
    """
    partition = storage.fetch(Settings.from_env(), Path(scores_path).parent)
    summary = json.loads((partition / SUMMARY_FILE).read_text())
    verdict = summary.get("drift") or {"drifted": False}
    return {
        "dataset": summary["dataset"],
        "date": summary["date"],
        "model_version": summary["model_version"],
        "drifted": bool(verdict["drifted"]),
        "drifted_features": verdict.get("drifted_features", []),
        "score_psi": verdict.get("score_psi"),
    }
