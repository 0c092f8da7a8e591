"""Training steps: prepare the days, train the detector, calibrate its threshold, evaluate it.

Each step reads and writes one run folder (:class:`~pipeline.steps.run_dir.RunDir`) and returns
its path, so the training DAG's tasks and ``tsad train`` chain them alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import budget, episodes, evaluation, monitoring, reviews
from pipeline.calibration import fit_calibrator
from pipeline.checks import alarms
from pipeline.config import (
    ENTITY,
    DatasetSpec,
    RunConfig,
    Settings,
    project_root,
    validate_name,
)
from pipeline.data import storage
from pipeline.data.windows import MIN_SPREAD, Segments, StandardScaler, frame_to_segments
from pipeline.detectors.registry import detector_class, supported_params
from pipeline.detectors.torch_base import TorchDetector
from pipeline.scoring import WORKER_DEVICE, ModelBundle
from pipeline.steps import reviews as steps_reviews
from pipeline.steps.run_dir import PreparedSplit, RunDir, Split
from pipeline.steps.validation import load_day

log = logging.getLogger(__name__)

RUN_OVERRIDES = ("dataset", "detector", "epochs", "window", "calibration", "device")


class TrainingDataRejected(ValueError):
    """Training days that every batch check passed but a model cannot learn from."""


def run_config_from_params(params: dict | None) -> RunConfig:
    """A run config named by ``params['run_config']`` with any non-null overrides applied."""
    params = params or {}
    base = RunConfig.load(params.get("run_config") or "vitals")
    overrides = {key: params[key] for key in RUN_OVERRIDES if params.get(key) is not None}
    if "detector" in overrides:  # one detector asked for by name: train it alone
        overrides["candidates"] = []
    if overrides.get("detector", base.detector) != base.detector:
        overrides["detector_params"] = {}  # tuned for the run config's own detector
    return RunConfig.model_validate(base.model_dump() | overrides)


def retraining_params(params: dict | None, drift_events: list[dict]) -> dict:
    """A run's Params, aimed at the dataset that drifted when drift events triggered the run.

    ``drift_events`` are the extras of the ``tsad_drift`` events that triggered it (none for
    a scheduled or manual run: ``params`` are kept). The latest event names the dataset; its
    own run config (``configs/runs/<dataset>.yaml``) is used when there is one. Other datasets
    among the events are named in a warning: one run trains one dataset.
    """
    params = dict(params or {})
    if not drift_events:
        return params
    dataset = validate_name(str(drift_events[-1]["dataset"]))
    others = sorted({str(event["dataset"]) for event in drift_events} - {dataset})
    if others:
        log.warning("drift of %s not retrained by this run: trigger it for each", others)
    if (project_root() / "configs" / "runs" / f"{dataset}.yaml").is_file():
        params["run_config"] = dataset
    return params | {"dataset": dataset}


def run_days(config: RunConfig) -> list[dt.date]:
    """Every day a training run reads, in order."""
    return [day for days in (config.train, config.validation, config.test) for day in days.dates()]


def prepare(config: RunConfig, settings: Settings | None = None) -> str:
    """Fit the scaler on training days only and store scaled, gap-aware segments per split.

    Reviewed days (:func:`pipeline.steps.reviews.for_calibration`) join the validation days,
    labeled by their reviews, and the verdicts used are kept in the run folder.
    """
    settings = Settings.resolve(settings)
    spec = DatasetSpec.load(config.dataset)
    verdicts = steps_reviews.for_calibration(settings, config)
    calibration_days = sorted(set(config.validation.dates()) | set(reviews.days(verdicts)))
    splits: dict[Split, pd.DataFrame] = {
        "train": _load_days(settings, spec, config.train.dates()),
        "validation": reviews.labeled(_load_days(settings, spec, calibration_days), verdicts),
        "test": _load_days(settings, spec, config.test.dates()),
    }
    _refuse_constant_features(splits["train"], spec)
    run = RunDir.create(settings, config)
    with storage.working_tree(settings, run.path):
        run.save_reviews(reviews.to_records(verdicts))
        _store_splits(run, spec, splits)
    return str(run.path)


def _store_splits(run: RunDir, spec: DatasetSpec, splits: dict[Split, pd.DataFrame]) -> None:
    """The splits segmented and scaled (scaler fitted on training days), and the bundle's
    scaler, spec and entities, written into the run folder."""
    segmented = {
        name: frame_to_segments(frame, spec.feature_names, spec.step)
        for name, frame in splits.items()
    }
    scaler = StandardScaler.fit(segmented["train"][0].values, spec.feature_names)
    for name, (segments, ordered) in segmented.items():
        run.save_split(name, Segments(scaler.transform(segments.values), segments.bounds), ordered)
    ModelBundle.save_scaler(scaler, run.bundle)
    ModelBundle.save_spec(spec, run.bundle)
    ModelBundle.save_entities(splits["train"][ENTITY].unique(), run.bundle)


def _load_days(settings: Settings, spec: DatasetSpec, days: list[dt.date]) -> pd.DataFrame:
    return pd.concat([load_day(settings, spec, day) for day in days])


def _refuse_constant_features(train: pd.DataFrame, spec: DatasetSpec) -> None:
    """A feature without spread over the training days has no normal range to learn.

    Scaled with a unit spread it would turn any later change of a stuck sensor into an alarm
    of arbitrary size, so training stops and names the feature instead. Spread is judged as
    the scaler judges it (:data:`MIN_SPREAD`), so float jitter on a stuck value is constant too.
    """
    spread = train[spec.feature_names].std(ddof=0)
    constant = [name for name in spec.feature_names if not spread[name] > MIN_SPREAD]
    if constant:
        values = ", ".join(f"{name}={train[name].iloc[0]:g}" for name in constant)
        raise TrainingDataRejected(
            f"{spec.name}: constant over the training days ({values}): a detector cannot learn "
            "their normal range; fix the source or choose other training days"
        )


def detector_params(config: RunConfig) -> dict[str, Any]:
    """Run-level settings a detector accepts, overridden by its explicit ``detector_params``."""
    common = {
        "window": config.window,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "device": config.device,
        "seed": config.seed,
    }
    return supported_params(config.detector, common) | config.detector_params


@storage.on_run_folder
def train(run_dir: str, progress: bool = False, resume: bool = False) -> str:
    """Train the configured detector on the prepared training split; save it in the bundle."""
    run = RunDir(Path(run_dir))
    config = run.config()
    detector = detector_class(config.detector)(**detector_params(config))
    detector.fit(
        run.load_split("train").segments,
        checkpoint_dir=run.checkpoints,
        resume=resume,
        progress=progress,
    )
    ModelBundle.save_detector(detector, run.bundle)
    if isinstance(detector, TorchDetector):
        run.history_file.write_text(json.dumps(dataclasses.asdict(detector.history_), indent=2))
    return run_dir


@storage.on_run_folder
def calibrate(run_dir: str) -> str:
    """Fit the threshold on the labeled validation days (training scores when unlabeled).

    On labeled days the detector's metrics there are kept too: what candidates are chosen by.

    The same scores become the bundle's reference profile for drift monitoring, with the
    training values: what a normal day's data and scores look like to this model.
    """
    run = RunDir(Path(run_dir))
    config = run.config()
    detector = ModelBundle.load_detector(run.bundle, device=WORKER_DEVICE)
    validation, train_split = run.load_split("validation"), run.load_split("train")
    if validation.labels is not None and validation.labels.any():
        scores, labels = detector.score(validation.segments), validation.labels
    else:
        log.warning("validation days carry no anomaly labels: calibrating on training scores")
        scores, labels = detector.score(train_split.segments), None
    spec = ModelBundle.load_spec(run.bundle)
    rule = episodes.EpisodeRule.for_spec(spec)
    params = rule.step_params() if config.calibration == "event_f1" else {}
    calibrator = fit_calibrator(config.calibration, scores, labels, **params)
    ModelBundle.save_calibrator(calibrator, run.bundle)
    if labels is not None:
        _report_calibration(run, validation, scores, calibrator.threshold_, spec)
        measured = evaluation.evaluate(labels, scores, calibrator.threshold_)
        run.validation_metrics_file.write_text(json.dumps(measured, indent=2))
    profile = monitoring.ReferenceProfile.build(
        list(ModelBundle.load_scaler(run.bundle).features),
        train_split.segments.values,
        scores,
        calibrator.threshold_,
    )
    ModelBundle.save_profile(profile, run.bundle)
    return run_dir


def _report_calibration(
    run: RunDir, validation: PreparedSplit, scores: np.ndarray, threshold: float, spec: DatasetSpec
) -> None:
    """Episode precision and recall on the validation days at the threshold, and at the budget.

    What a team would have been shown on those days: every episode, and only the alarm
    budget's share of each day (``alarms.max_episodes_per_day``).
    """
    frame = validation.frame(scores)
    alarmed = alarms(scores, threshold)
    rule = episodes.EpisodeRule.for_spec(spec)
    found = episodes.labeled_frame_episodes(frame, alarmed, rule)
    report = {
        "threshold": threshold,
        **episodes.match_events(frame, found, rule),
        "at_budget": budget.at_budget(frame, alarmed, rule, spec.alarms),
    }
    run.evaluation.mkdir(exist_ok=True)
    run.calibration_report.write_text(json.dumps(report, indent=2))


@storage.on_run_folder
def evaluate(run_dir: str) -> str:
    """Score the labeled test days at the calibrated threshold; write metrics and figures."""
    run = RunDir(Path(run_dir))
    bundle = ModelBundle.load(run.bundle, device=WORKER_DEVICE)
    split = run.load_split("test")
    if split.labels is None:
        raise ValueError("test days carry no labels: evaluation needs labeled data")
    scores = bundle.detector.score(split.segments)
    metrics = evaluation.evaluate(split.labels, scores, bundle.threshold)
    frame, rule = split.frame(scores), episodes.EpisodeRule.for_spec(bundle.spec)
    found = episodes.labeled_frame_episodes(frame, bundle.calibrator.predict(scores), rule)
    metrics |= episodes.match_events(frame, found, rule)
    run.evaluation.mkdir(exist_ok=True)
    run.metrics_file.write_text(json.dumps(metrics, indent=2))
    title = f"{bundle.spec.name} / {bundle.detector.name}: test days, entities back to back"
    figures = {
        "test_scores": evaluation.plot_scores(
            np.arange(len(scores)), scores, bundle.threshold, split.labels, title=title
        ),
        "pr_curve": evaluation.plot_pr_curve(split.labels, scores),
        "score_histograms": evaluation.plot_score_histograms(
            split.labels, scores, bundle.threshold
        ),
        "confusion_matrix": evaluation.plot_confusion_matrix(
            split.labels, bundle.calibrator.predict(scores)
        ),
    }
    for name, figure in figures.items():
        figure.savefig(run.figure(name), dpi=110, bbox_inches="tight")
    return run_dir
