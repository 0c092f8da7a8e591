"""The daily scoring step: one validated day scored with the ``@production`` model.

The previous day's partition, when it landed and passed validation, gives each entity's window
its context, so every row of the day gets a score.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pipeline.config import DatasetSpec, Settings
from pipeline.daily import DAILY_REPORT_FILE, SCORES_FILE, SUMMARY_FILE, score_landed
from pipeline.data import storage
from pipeline.steps.evidence import link_alarms_to_events
from pipeline.steps.reviews import already_reviewed
from pipeline.steps.series import series_inputs
from pipeline.steps.validation import is_validated, validated_landing


def _context(settings: Settings, spec: DatasetSpec, day: dt.date) -> Path | None:
    """The previous day's partition, when it landed and passed validation: context for today."""
    previous = day - dt.timedelta(days=1)
    if not is_validated(settings, spec.name, previous):
        return None
    return settings.partition("landing", spec.name, previous)


def score(dataset: str, day: dt.date, settings: Settings | None = None) -> str:
    """Score one day with the ``@production`` model; write scores, summary and report atomically.

    Beside the scores go ``alarms.parquet`` (the day's alarm episodes, grouped with the
    previous day's scored alarms when an episode crosses midnight), ``summary.json`` (with
    the drift indicators) and ``report.html``, the daily report, which is also logged to the
    day's MLflow scoring run. A rerun for the same day replaces the output. Returns the path
    of the scores file.
    """
    from pipeline import tracking, tracking_scoring

    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(dataset)
    model = tracking.load_production_model(settings, dataset)
    model.bundle.check_compatible(spec)
    landing = validated_landing(settings, spec, day)
    context = _context(settings, spec, day)
    read_spec = spec
    if spec.events is not None:  # the model reads the day's events as their bucketed series
        landing, context, read_spec = series_inputs(settings, spec, day)
    out = settings.partition("scores", dataset, day)
    yesterday = settings.partition("scores", dataset, day - dt.timedelta(days=1))
    previous = storage.fetch(settings, yesterday) / SCORES_FILE
    # The day's files are written into a staged folder that replaces the partition whole: a
    # reader, or a crash, sees the previous day's output or the new one, never a mix.
    with storage.publish(settings, out) as staged:
        summary = score_landed(
            model.bundle,
            read_spec,
            day,
            landing,
            context,
            staged,
            model.name,
            model.version,
            previous_scores=previous,
            reviewed=already_reviewed(settings, dataset, day),
        )
        if spec.events is not None:
            link_alarms_to_events(
                staged, landing, settings.partition("landing", dataset, day), spec
            )
    tracking_scoring.log_scoring_run(
        settings,
        dataset,
        day.isoformat(),
        model,
        summary,
        artifacts=[out / DAILY_REPORT_FILE],
        validation=settings.partition("validation", dataset, day),
    )
    return str(out / SCORES_FILE)


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
