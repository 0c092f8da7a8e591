"""The pipeline's steps, shared by the Airflow DAGs and the command line.

Each step reads and writes by path (returned as a string so it can travel through XCom) and is
a thin composition of the modules below it: a DAG task or a CLI command calls exactly one step.
A training run works in its own directory under ``TSAD_HOME/runs``::

    run.json            the run configuration
    prepared/*.npz      scaled, segmented train/validation/test rows
    bundle/             scaler.json, spec.yaml, detector/, calibration.json (the model)
    evaluation/         metrics.json and the score plot
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import evaluation, monitoring
from pipeline.calibration import make_calibrator
from pipeline.config import (
    ENTITY,
    LABEL,
    TIMESTAMP,
    DatasetSpec,
    RunConfig,
    Settings,
    parse_date,
)
from pipeline.daily import DAILY_REPORT_FILE, SCORES_FILE, SUMMARY_FILE, score_landed
from pipeline.data import io
from pipeline.data.validate import ValidationReport, validate_batch
from pipeline.data.windows import (
    MIN_SPREAD,
    Segments,
    StandardScaler,
    frame_to_segments,
    timestamps_ns,
)
from pipeline.detectors.registry import detector_class, load_detector, supported_params
from pipeline.detectors.torch_base import TorchDetector
from pipeline.scoring import PROFILE_FILE, WORKER_DEVICE, ModelBundle

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"


class BatchRejected(RuntimeError):
    """A day's batch failed validation; it was quarantined and nothing downstream may run."""


class TrainingDataRejected(ValueError):
    """Training days that every batch check passed but a model cannot learn from."""


def _settings(settings: Settings | None) -> Settings:
    return settings or Settings.from_env()


# --- validation ---------------------------------------------------------------------------


def _fingerprint(directory: Path) -> str:
    """Names, sizes and modification times of a partition's files: changes when data does."""
    digest = hashlib.sha256()
    for path in io.partition_files(directory):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def validate(dataset: str, date: str | dt.date, settings: Settings | None = None) -> str:
    """Validate one landed day; on failure quarantine it with its report and raise.

    Returns the path of the passing report, which also records the landing files' fingerprint
    so later steps can tell the data they read is the data that passed.
    """
    settings = _settings(settings)
    day = parse_date(date)
    spec = DatasetSpec.load(dataset)
    landing = settings.partition("landing", dataset, day)
    try:
        report = validate_batch(io.read_partition(landing), spec, day)
        fingerprint = _fingerprint(landing)
    except io.BatchReadError as exc:
        report = ValidationReport(
            dataset=dataset,
            date=day,
            success=False,
            failures=[str(exc)],
            n_rows=0,
            result={},
            warnings=[],
        )
        fingerprint = ""
    if not report.success:
        quarantine = io.quarantine_batch(
            landing, settings.partition("quarantine", dataset, day), report.to_json()
        )
        failures = "\n".join(f"  - {line}" for line in report.failures)
        raise BatchRejected(
            f"{dataset} {day} failed validation and was quarantined to {quarantine}:\n{failures}"
        )
    for warning in report.warnings:
        log.warning("%s %s: %s", dataset, day, warning)
    record = {"fingerprint": fingerprint, "report": json.loads(report.to_json())}
    target = settings.partition("validation", dataset, day) / REPORT_FILE
    with io.exclusive_partition(target.parent):
        return str(io.write_text_atomic(json.dumps(record, indent=2), target))


def validate_days(
    dataset: str, dates: list[dt.date], settings: Settings | None = None
) -> list[str]:
    """Validate several days; every failing day is quarantined before the step fails."""
    reports, rejected = [], []
    for day in dates:
        try:
            reports.append(validate(dataset, day, settings))
        except BatchRejected as exc:
            rejected.append(str(exc))
    if rejected:
        raise BatchRejected("\n".join(rejected))
    return reports


def is_validated(settings: Settings, dataset: str, day: dt.date) -> bool:
    """True when a passing report exists for exactly the files now in the landing partition."""
    report = settings.partition("validation", dataset, day) / REPORT_FILE
    landing = settings.partition("landing", dataset, day)
    if not report.is_file() or not landing.is_dir():
        return False
    try:
        return json.loads(report.read_text())["fingerprint"] == _fingerprint(landing)
    except (io.BatchReadError, KeyError, json.JSONDecodeError):
        return False


def validated_landing(settings: Settings, spec: DatasetSpec, day: dt.date) -> Path:
    """The landing partition of a day, validated first unless its files already passed."""
    if not is_validated(settings, spec.name, day):
        validate(spec.name, day, settings)
    return settings.partition("landing", spec.name, day)


def load_day(settings: Settings, spec: DatasetSpec, day: dt.date) -> pd.DataFrame:
    """A validated day as a canonical frame (validating it first if it was not)."""
    return io.to_canonical(io.read_partition(validated_landing(settings, spec, day)), spec)


# --- training -----------------------------------------------------------------------------

RUN_OVERRIDES = ("dataset", "detector", "epochs", "window", "calibration", "device")


def run_config_from_params(params: dict | None) -> RunConfig:
    """A run config named by ``params['run_config']`` with any non-null overrides applied."""
    params = params or {}
    base = RunConfig.load(params.get("run_config") or "vitals")
    overrides = {key: params[key] for key in RUN_OVERRIDES if params.get(key) is not None}
    if overrides.get("detector", base.detector) != base.detector:
        overrides["detector_params"] = {}  # tuned for the run config's own detector
    return RunConfig.model_validate(base.model_dump() | overrides)


def run_days(config: RunConfig) -> list[dt.date]:
    """Every day a training run reads, in order."""
    return [day for days in (config.train, config.validation, config.test) for day in days.dates()]


def _run_config(run_dir: Path) -> RunConfig:
    return RunConfig.model_validate_json((run_dir / "run.json").read_text())


def _save_split(path: Path, segments: Segments, frame: pd.DataFrame) -> None:
    arrays = {
        "values": segments.values,
        "bounds": segments.bounds,
        "timestamps": timestamps_ns(frame[TIMESTAMP]),
    }
    if LABEL in frame:
        arrays["labels"] = frame[LABEL].to_numpy(dtype=np.int8)
    np.savez(path, **arrays)


@dataclass(frozen=True)
class PreparedSplit:
    segments: Segments
    timestamps: np.ndarray
    labels: np.ndarray | None


def _load_split(run_dir: Path, name: str) -> PreparedSplit:
    with np.load(run_dir / "prepared" / f"{name}.npz") as data:
        labels = data.get("labels")
        timestamps = data["timestamps"].astype("datetime64[ns]")
        return PreparedSplit(Segments(data["values"], data["bounds"]), timestamps, labels)


def prepare(config: RunConfig, settings: Settings | None = None) -> str:
    """Fit the scaler on training days only and store scaled, gap-aware segments per split."""
    settings = _settings(settings)
    spec = DatasetSpec.load(config.dataset)
    splits = {
        name: pd.concat([load_day(settings, spec, day) for day in days.dates()])
        for name, days in (
            ("train", config.train),
            ("validation", config.validation),
            ("test", config.test),
        )
    }
    _refuse_constant_features(splits["train"], spec)
    run_key = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S") + "-" + uuid.uuid4().hex[:6]
    run_dir = settings.run_dir(config.dataset, run_key)
    (run_dir / "prepared").mkdir(parents=True)
    (run_dir / "bundle").mkdir()
    (run_dir / "run.json").write_text(config.model_dump_json(indent=2))
    scaler = None
    for name, frame in splits.items():
        segments, ordered = frame_to_segments(frame, spec.feature_names, spec.step)
        if scaler is None:
            scaler = StandardScaler.fit(segments.values, spec.feature_names)
        scaled = Segments(scaler.transform(segments.values), segments.bounds)
        _save_split(run_dir / "prepared" / f"{name}.npz", scaled, ordered)
    scaler.save(run_dir / "bundle" / "scaler.json")
    ModelBundle.save_spec(spec, run_dir / "bundle")
    ModelBundle.save_entities(splits["train"][ENTITY].unique(), run_dir / "bundle")
    return str(run_dir)


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


def detector_params(config: RunConfig) -> dict:
    """Run-level settings a detector accepts, overridden by its explicit ``detector_params``."""
    common = {
        "window": config.window,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "device": config.device,
        "seed": config.seed,
    }
    return supported_params(config.detector, common) | config.detector_params


def train(run_dir: str, progress: bool = False, resume: bool = False) -> str:
    """Train the configured detector on the prepared training split; save it in the bundle."""
    path = Path(run_dir)
    config = _run_config(path)
    detector = detector_class(config.detector)(**detector_params(config))
    train_split = _load_split(path, "train")
    if isinstance(detector, TorchDetector):
        detector.fit(
            train_split.segments,
            checkpoint_dir=path / "checkpoints",
            resume=resume,
            progress=progress,
        )
    else:
        detector.fit(train_split.segments)
    detector.save(path / "bundle" / "detector")
    return run_dir


def _bundle_features(run_dir: Path) -> list[str]:
    """The feature names of a run's bundle, in the model's column order."""
    return list(StandardScaler.load(run_dir / "bundle" / "scaler.json").features)


def calibrate(run_dir: str) -> str:
    """Fit the threshold on the labeled validation days (training scores when unlabeled).

    The same scores become the bundle's reference profile for drift monitoring, with the
    training values: what a normal day's data and scores look like to this model.
    """
    path = Path(run_dir)
    config = _run_config(path)
    detector = load_detector(path / "bundle" / "detector", device=WORKER_DEVICE)
    split = _load_split(path, "validation")
    train = _load_split(path, "train")
    method = config.calibration
    if split.labels is not None and split.labels.any():
        scores, labels = detector.score(split.segments), split.labels
    else:
        log.warning("validation days carry no anomaly labels: calibrating on training scores")
        if method == "best_f1":
            method = "percentile"
        scores, labels = detector.score(train.segments), None
    calibrator = make_calibrator(method).fit(scores, labels)
    (path / "bundle" / "calibration.json").write_text(json.dumps(calibrator.to_dict(), indent=2))
    profile = monitoring.ReferenceProfile.build(
        _bundle_features(path),
        train.segments.values,
        scores,
        calibrator.threshold_,
    )
    profile.save(path / "bundle" / PROFILE_FILE)
    return run_dir


def evaluate(run_dir: str) -> str:
    """Score the labeled test days at the calibrated threshold; write metrics and a plot."""
    path = Path(run_dir)
    bundle = ModelBundle.load(path / "bundle", device=WORKER_DEVICE)
    split = _load_split(path, "test")
    if split.labels is None:
        raise ValueError("test days carry no labels: evaluation needs labeled data")
    scores = bundle.detector.score(split.segments)
    metrics = evaluation.evaluate(split.labels, scores, bundle.threshold)
    out = path / "evaluation"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    predictions = scores >= bundle.threshold
    title = f"{bundle.spec.name} / {bundle.detector.name}: test days, entities back to back"
    figures = {
        "test_scores": evaluation.plot_scores(
            np.arange(len(scores)), scores, bundle.threshold, split.labels, title=title
        ),
        "pr_curve": evaluation.plot_pr_curve(split.labels, scores),
        "score_histograms": evaluation.plot_score_histograms(
            split.labels, scores, bundle.threshold
        ),
        "confusion_matrix": evaluation.plot_confusion_matrix(split.labels, predictions),
    }
    for name, figure in figures.items():
        figure.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
    return run_dir


def _data_digest(run_dir: Path) -> str:
    digest = hashlib.sha256()
    with np.load(run_dir / "prepared" / "train.npz") as data:
        digest.update(data["values"].tobytes())
        digest.update(data["timestamps"].tobytes())
    return digest.hexdigest()[:16]


def register(run_dir: str, settings: Settings | None = None) -> dict:
    """Log the run to MLflow and register the bundle as the ``@challenger`` version."""
    from pipeline import tracking

    settings = _settings(settings)
    path = Path(run_dir)
    config = _run_config(path)
    metrics = json.loads((path / "evaluation" / "metrics.json").read_text())
    calibration = json.loads((path / "bundle" / "calibration.json").read_text())
    reports = [
        settings.partition("validation", config.dataset, day) / REPORT_FILE
        for day in run_days(config)
    ]
    tags = {
        "dataset": config.dataset,
        "detector": config.detector,
        "window": str(config.window),
        "threshold": f"{calibration['threshold']:.6g}",
        "calibration_method": calibration["method"],
        "data_digest": _data_digest(path),
        "run_dir": str(path),
    }
    params = config.model_dump(mode="json", exclude={"detector_params"})
    params |= {f"detector.{key}": value for key, value in detector_params(config).items()}
    bundled_reports = path / "validation_reports.json"
    bundled_reports.write_text(
        json.dumps({report.parent.name: json.loads(report.read_text()) for report in reports})
    )
    version = tracking.register_training_run(
        settings,
        config.dataset,
        path / "bundle",
        params=params,
        metrics={key: float(value) for key, value in metrics.items()},
        tags=tags,
        artifacts=[
            path / "run.json",
            *sorted((path / "evaluation").iterdir()),
            path / "bundle" / "calibration.json",
            bundled_reports,
        ],
    )
    return {"name": version.name, "version": version.version, "run_id": version.run_id}


def promote(
    dataset: str,
    metric: str | None = None,
    version: str | None = None,
    settings: Settings | None = None,
) -> dict:
    """Move ``@production`` to the challenger if the gate passes it, or to ``version`` by hand.

    The gate (:mod:`pipeline.promotion`) scores the challenger run's labeled test days with the
    challenger and with the current production model and compares ``metric`` (the run config's
    ``promotion_metric`` when None). Both numbers, the production version compared against, the
    decision and its reason are tagged on the challenger version whatever the outcome; a
    rejected challenger keeps ``@challenger``. An explicit ``version`` is a human decision and
    is applied as is.
    """
    from pipeline import promotion, tracking

    settings = _settings(settings)
    if metric is not None:
        promotion.check_metric(metric)
    if version is not None:
        previous = tracking.alias_version(settings, dataset, tracking.PRODUCTION)
        tracking.record_promotion(
            settings, dataset, str(version), {"promotion": "manual"}, promote=True
        )
        return {
            "promoted": True,
            "version": str(version),
            "previous": previous,
            "reason": "promoted by hand",
        }
    # Versions first, models after: a challenger already in production needs no loading.
    candidate = tracking.alias_version(settings, dataset, tracking.CHALLENGER)
    if candidate is None:
        raise tracking.ModelNotFoundError(
            f"model {settings.model_name(dataset)!r} has no @{tracking.CHALLENGER} version "
            "to promote: train one first"
        )
    previous = tracking.alias_version(settings, dataset, tracking.PRODUCTION)
    if previous == candidate:
        return {
            "promoted": False,
            "version": previous,
            "previous": previous,
            "reason": "already in production",
        }
    challenger = tracking.load_version(settings, dataset, candidate)
    production = None if previous is None else tracking.load_version(settings, dataset, previous)
    config = RunConfig.model_validate_json(
        tracking.read_run_file(settings, challenger.run_id, "run.json")
    )
    spec = challenger.bundle.spec
    test_days = pd.concat([load_day(settings, spec, day) for day in config.test.dates()])
    verdict = promotion.judge(
        challenger.bundle,
        None if production is None else production.bundle,
        previous,
        test_days,
        metric or config.promotion_metric,
    )
    tags = verdict.tags() | {"gate.test_days": f"{config.test.start}..{config.test.end}"}
    tracking.record_promotion(settings, dataset, challenger.version, tags, verdict.promote)
    return {
        "promoted": verdict.promote,
        "version": challenger.version,
        "previous": previous,
        "reason": verdict.reason,
        "metric": verdict.metric,
        "challenger": verdict.challenger,
        "production": verdict.production,
    }


# --- scoring ------------------------------------------------------------------------------


def _context(settings: Settings, spec: DatasetSpec, day: dt.date) -> Path | None:
    """The previous day's partition, when it landed and passed validation: context for today."""
    previous = day - dt.timedelta(days=1)
    if not is_validated(settings, spec.name, previous):
        return None
    return settings.partition("landing", spec.name, previous)


def score(dataset: str, date: str | dt.date, settings: Settings | None = None) -> str:
    """Score one day with the ``@production`` model; write scores, summary and report atomically.

    Beside the scores go ``summary.json`` (with the drift indicators) and ``report.html``, the
    daily report, which is also logged to the day's MLflow scoring run. A rerun for the same
    day replaces the output. Returns the path of the scores file.
    """
    from pipeline import tracking

    settings = _settings(settings)
    day = parse_date(date)
    spec = DatasetSpec.load(dataset)
    model = tracking.load_production_model(settings, dataset)
    model.bundle.check_compatible(spec)
    landing = validated_landing(settings, spec, day)
    context = _context(settings, spec, day)
    out = settings.partition("scores", dataset, day)
    with io.exclusive_partition(out):
        summary = score_landed(
            model.bundle, spec, day, landing, context, out, model.name, model.version
        )
    tracking.log_scoring_run(
        settings, dataset, day.isoformat(), model, summary, artifacts=[out / DAILY_REPORT_FILE]
    )
    return str(out / SCORES_FILE)


def drift_status(scores_path: str) -> dict:
    """The drift verdict of a scored day, read from the summary beside its scores.

    ``{"drifted": bool, ...}`` with the dataset, date, model version and drifted features:
    what a retraining trigger needs. A model without a reference profile never drifts.
    """
    summary = json.loads((Path(scores_path).parent / SUMMARY_FILE).read_text())
    verdict = summary.get("drift") or {"drifted": False}
    return {
        "dataset": summary["dataset"],
        "date": summary["date"],
        "model_version": summary["model_version"],
        "drifted": bool(verdict["drifted"]),
        "drifted_features": verdict.get("drifted_features", []),
        "score_psi": verdict.get("score_psi"),
    }


# --- demo data ----------------------------------------------------------------------------


def generate(
    start: str | dt.date = "2026-01-01",
    days: int = 9,
    patients: int = 8,
    labeled_from: str | dt.date = "2026-01-05",
    seed: int = 7,
    settings: Settings | None = None,
) -> list[str]:
    """Write the synthetic vital-signs demo data as daily landing partitions."""
    from pipeline.data.synthetic import VitalsScenario, generate_vitals

    settings = _settings(settings)
    scenario = VitalsScenario(
        n_patients=patients,
        start=parse_date(start),
        n_days=days,
        labeled_from=parse_date(labeled_from),
        seed=seed,
    )
    written = []
    for day, frame in generate_vitals(scenario).items():
        target = settings.partition("landing", "vitals", day) / "part-0.parquet"
        written.append(str(io.write_parquet_atomic(frame, target)))
    return written
