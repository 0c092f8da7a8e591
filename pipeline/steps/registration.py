"""Registration and promotion steps: a trained run into MLflow, and ``@production`` moved.

A registered run arrives as ``@challenger``. The gate (:func:`promote_challenger`) moves
``@production`` to it only when it is at least as good as the current production model on the
challenger run's labeled test days; a person can instead promote any version by hand
(:func:`promote_version`). Both answer with one :class:`PromotionResult`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import reviews
from pipeline.config import DateRange, RunConfig, Settings
from pipeline.data import storage
from pipeline.scoring import ModelBundle
from pipeline.steps.run_dir import RunDir, Split
from pipeline.steps.training import detector_params, run_days
from pipeline.steps.validation import DATA_DOCS_FILE, load_day, report_path


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion decided: the version, the one it replaces, and why.

    ``metric``, ``challenger`` and ``production`` hold the gate's comparison; they are None
    when nothing was measured (a promotion by hand, a challenger already in production) and
    ``production`` alone is None when there was no production model to measure.
    """

    promoted: bool
    version: str | None
    previous: str | None
    reason: str
    metric: str | None = None
    challenger: float | None = None
    production: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for XCom and the command line."""
        return asdict(self)


def _lineage(run: RunDir, config: RunConfig) -> tuple[list, dict | None]:
    """The run's prepared splits as MLflow datasets, and its loss history when it has one."""
    from pipeline import tracking

    roles: tuple[tuple[str, Split, DateRange], ...] = (
        ("training", "train", config.train),
        ("validation", "validation", config.validation),
        ("testing", "test", config.test),
    )
    reviewed = ",".join(day.isoformat() for day in _reviewed_days(run))
    described = {"validation": f" + reviewed {reviewed}" if reviewed else ""}
    splits = [
        tracking.DataSplit(
            context, run.prepared(split), f"{days.start}..{days.end}{described.get(split, '')}"
        )
        for context, split, days in roles
    ]
    history = run.history_file
    return splits, json.loads(history.read_text()) if history.is_file() else None


def _reviewed_days(run: RunDir) -> list[dt.date]:
    """The reviewed days a run calibrated on, beside its configured validation days."""
    return reviews.days(reviews.from_records(run.reviews()))


@storage.on_run_folder
def register(run_dir: str, settings: Settings | None = None) -> dict:
    """Log the run to MLflow and register the bundle as the ``@challenger`` version.

    A run that chose among candidates logs each as a child run with its validation metrics.
    The reviews it calibrated on are logged (``reviews.json``) and summed up in ``reviews.*``
    tags on the version.
    """
    from pipeline import tracking

    settings = Settings.resolve(settings)
    run = RunDir(Path(run_dir))
    config = run.config()
    metrics = run.metrics()
    calibrator = ModelBundle.load_calibrator(run.bundle)
    tags = {
        "dataset": config.dataset,
        "detector": config.detector,
        "window": str(config.window),
        "threshold": f"{calibrator.threshold_:.6g}",
        "calibration_method": calibrator.method,
        "run_dir": str(run.path),
    }
    tags |= reviews.summary(reviews.from_records(run.reviews()))
    params = config.model_dump(mode="json", exclude={"detector_params"})
    params |= {f"detector.{key}": value for key, value in detector_params(config).items()}
    days_read = sorted(set(run_days(config)) | set(_reviewed_days(run)))
    reports = [report_path(settings, config.dataset, day) for day in days_read]
    for report in reports:
        storage.fetch(settings, report.parent)
    run.validation_reports.write_text(
        json.dumps({report.parent.name: json.loads(report.read_text()) for report in reports})
    )
    run.data_docs.mkdir(exist_ok=True)
    for report in reports:
        page = report.with_name(DATA_DOCS_FILE)
        if page.is_file():
            shutil.copy2(page, run.data_docs / f"{report.parent.name}.html")
    splits, history = _lineage(run, config)
    version = tracking.register_training_run(
        settings,
        config.dataset,
        run.bundle,
        params=params,
        metrics={key: float(value) for key, value in metrics.items()},
        tags=tags,
        artifacts=[
            run.config_file,
            *sorted(run.evaluation.iterdir()),
            run.bundle / ModelBundle.CALIBRATION_FILE,
            run.validation_reports,
            run.data_docs,
            *([run.reviews_file] if run.reviews_file.is_file() else []),
        ],
        splits=splits,
        history=history,
        example_start=pd.Timestamp(config.test.start, tz="UTC"),
    )
    if run.selection_file.is_file():
        from pipeline import tracking_candidates

        choice = json.loads(run.selection_file.read_text())
        tracking_candidates.log_candidates(settings, version, choice)
    return {"name": version.name, "version": version.version, "run_id": version.run_id}


def promote_version(
    dataset: str, version: str, settings: Settings | None = None
) -> PromotionResult:
    """Move ``@production`` to ``version`` by hand: a person's decision, applied as is."""
    from pipeline import tracking

    settings = Settings.resolve(settings)
    previous = tracking.alias_version(settings, dataset, tracking.PRODUCTION)
    tracking.record_promotion(settings, dataset, str(version), {"promotion": "manual"}, True)
    return PromotionResult(True, str(version), previous, "promoted by hand")


def _gate_reviews(settings: Settings, run_id: str) -> pd.DataFrame:
    """The verdicts the challenger's run calibrated on: the gate judges on the same ones.

    A version registered before reviews existed logged none, and is judged on its test days.
    """
    from pipeline import tracking

    try:
        text = tracking.read_run_file(settings, run_id, RunDir.REVIEWS_NAME)
    except tracking.ArtifactMissing:
        return reviews.empty()
    return reviews.from_records(json.loads(text))


def promote_challenger(
    dataset: str, metric: str | None = None, settings: Settings | None = None
) -> PromotionResult:
    """Move ``@production`` to the challenger if the gate passes it.

    The gate (:mod:`pipeline.promotion`) scores the challenger run's labeled test days with the
    challenger and with the current production model and compares ``metric`` (the run config's
    ``promotion_metric`` when None). The days reviewers judged that the challenger's run
    calibrated on join them, labeled by the same verdicts (``gate.reviewed_days``). Both
    numbers, the production version compared against, the decision and its reason are tagged
    on the challenger version whatever the outcome; a rejected challenger keeps ``@challenger``.
    """
    from pipeline import promotion, tracking

    settings = Settings.resolve(settings)
    if metric is not None:
        promotion.check_metric(metric)
    # Versions first, models after: a challenger already in production needs no loading.
    candidate = tracking.alias_version(settings, dataset, tracking.CHALLENGER)
    if candidate is None:
        raise tracking.ModelNotFoundError(
            f"model {settings.model_name(dataset)!r} has no @{tracking.CHALLENGER} version "
            "to promote: train one first"
        )
    previous = tracking.alias_version(settings, dataset, tracking.PRODUCTION)
    if previous == candidate:
        return PromotionResult(False, previous, previous, "already in production")
    challenger = tracking.load_version(settings, dataset, candidate)
    production = None if previous is None else tracking.load_version(settings, dataset, previous)
    config = RunConfig.model_validate_json(
        tracking.read_run_file(settings, challenger.run_id, RunDir.CONFIG_NAME)
    )
    spec = challenger.bundle.spec
    verdicts = _gate_reviews(settings, challenger.run_id)
    gate_days = sorted(set(config.test.dates()) | set(reviews.days(verdicts)))
    labeled = reviews.labeled(
        pd.concat([load_day(settings, spec, day) for day in gate_days]), verdicts
    )
    verdict = promotion.judge(
        challenger.bundle,
        None if production is None else production.bundle,
        previous,
        labeled,
        metric or config.promotion_metric,
    )
    tags = verdict.tags() | {
        "gate.test_days": f"{config.test.start}..{config.test.end}",
        "gate.reviewed_days": ",".join(d.isoformat() for d in reviews.days(verdicts)) or "none",
        "gate.reviews": str(len(verdicts)),
    }
    measured = {"challenger": verdict.challenger, "production": verdict.production}
    tags["gate.run_id"] = tracking.log_gate_run(
        settings,
        dataset,
        challenger.version,
        previous,
        {f"{who}.{verdict.metric}": value for who, value in measured.items() if value is not None},
        tags,
    )
    tracking.record_promotion(settings, dataset, challenger.version, tags, verdict.promote)
    return PromotionResult(
        promoted=verdict.promote,
        version=challenger.version,
        previous=previous,
        reason=verdict.reason,
        metric=verdict.metric,
        challenger=verdict.challenger,
        production=verdict.production,
    )
