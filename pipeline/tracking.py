"""Everything that talks to MLflow: runs, the model registry and its aliases.

The production model is the registered model's ``@production`` alias (registry stages are
deprecated); a new version arrives as ``@challenger`` and is promoted by the gate of
:mod:`pipeline.promotion` or by hand. The model is logged as a pyfunc *from code*
(``pipeline/packaged_model.py``) around a bundle of plain files, so loading it never unpickles an
object; it carries the ``pipeline`` package and pins only scoring's requirements
(:mod:`pipeline.model_package`), so serving it never asks a package index for this project.

Lineage is recorded the MLflow 3 way: the training, validation and test splits are the run's
dataset inputs, the per-epoch losses are step metrics, the evaluation metrics are linked to the
logged model, and each promotion decision is a run of its own that the version's tags point to.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.numpy_dataset import from_numpy
from mlflow.entities import LoggedModelInput, Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

from pipeline import model_package
from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec, Settings
from pipeline.scoring import ModelBundle

log = logging.getLogger(__name__)

PACKAGED_MODEL = Path(__file__).with_name("packaged_model.py")
CHALLENGER = "challenger"
PRODUCTION = "production"
T = TypeVar("T")


class ModelNotFoundError(LookupError):
    """No model version answers to the requested alias."""


# MLflow's HTTP client retries a refused connection 7 times with doubling pauses (minutes);
# :func:`with_retries` owns the backoff, so the client's own retries are kept short by default.
HTTP_RETRIES_VARIABLE = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_RETRIES_DEFAULT = "2"


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured stores (creating the embedded SQLite directory)."""
    os.environ.setdefault(HTTP_RETRIES_VARIABLE, HTTP_RETRIES_DEFAULT)
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    return MlflowClient(settings.tracking_uri, settings.registry_uri)


def with_retries(call: Callable[[], T], what: str, attempts: int = 4, delay: float = 1.0) -> T:
    """Retry a registry call with exponential backoff, then fail with a clear message."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except MlflowException as exc:
            if _is_not_found(exc) or _is_refused(exc):
                raise
            if attempt == attempts:
                raise ConnectionError(
                    f"{what}: no answer from MLflow after {attempts} tries ({exc})"
                ) from exc
            log.warning("%s failed (%s); retry %d/%d", what, exc, attempt, attempts - 1)
        except OSError as exc:
            if attempt == attempts:
                raise ConnectionError(f"{what}: MLflow unreachable after {attempts} tries") from exc
            log.warning("%s: MLflow unreachable (%s); retry %d/%d", what, exc, attempt, attempts)
        time.sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _is_not_found(exc: MlflowException) -> bool:
    return exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def _is_refused(exc: MlflowException) -> bool:
    """Wrong or missing credentials: retrying cannot help."""
    return exc.error_code in {"UNAUTHENTICATED", "PERMISSION_DENIED"}


def experiment_for(client: MlflowClient, settings: Settings, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if settings.artifact_root is None else f"{settings.artifact_root}/{name}"
    return client.create_experiment(name, artifact_location=location)


def model_signature(spec: DatasetSpec) -> ModelSignature:
    """Input: the canonical frame; output: one score row per input row (alarms explained).

    The input timestamp is an ISO 8601 string: MLflow's ``datetime`` type accepts only naive
    times, and a request's times carry their UTC offset (the model parses them).
    """
    inputs = Schema(
        [
            ColSpec("string", TIMESTAMP),
            ColSpec("string", ENTITY),
            *(ColSpec("double", name) for name in spec.feature_names),
        ]
    )
    outputs = Schema(
        [
            ColSpec("datetime", TIMESTAMP),
            ColSpec("string", ENTITY),
            ColSpec("double", "score"),
            ColSpec("double", "threshold"),
            ColSpec("boolean", "is_anomaly"),
            ColSpec(Array("string"), "top_features", required=False),
            ColSpec(Array("double"), "contributions", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str


@dataclass(frozen=True)
class DataSplit:
    """One prepared split of a training run (``values``, optional ``labels`` in an ``.npz``).

    ``context`` is MLflow's name for its role (training, validation, testing); ``days`` the
    landed days it was read from, as ``first..last``.
    """

    context: str
    path: Path
    days: str


def _log_split(dataset: str, split: DataSplit) -> mlflow.data.Dataset:
    """Log a split as a dataset input of the active run: source, digest, schema and days."""
    with np.load(split.path) as data, warnings.catch_warnings():
        # MLflow registers its local file source twice and warns that a path is ambiguous.
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        logged = from_numpy(
            data["values"],
            targets=data.get("labels"),
            source=str(split.path.resolve()),
            name=f"{dataset}-{split.context}",
        )
    mlflow.log_input(logged, context=split.context, tags={"days": split.days})
    return logged


def _log_history(run_id: str, client: MlflowClient, history: dict) -> None:
    """Per-epoch losses as step metrics (the run page draws the curves) and where it stopped.

    ``best_epoch`` is the epoch whose weights were kept, ``stopped_epoch`` the last one run
    (below the configured epochs when early stopping ended training), ``training_precision``
    (a parameter) the arithmetic it ran in: ``fp32`` or ``bf16``.
    """
    now = int(time.time() * 1000)
    curves = [
        Metric(key, float(value), now, epoch)
        for key in ("train_loss", "valid_loss")
        for epoch, value in enumerate(history.get(key, []), start=1)
        if math.isfinite(value)
    ]
    ends = {"best_epoch": history["best_epoch"], "stopped_epoch": len(history["train_loss"])}
    points = [Metric(key, float(value), now, 0) for key, value in ends.items()]
    # The arithmetic training ran in (``precision: auto`` resolves per machine).
    precision = history.get("precision")
    params = [] if precision is None else [Param("training_precision", precision)]
    client.log_batch(run_id, metrics=curves + points, params=params)


def _log_model(bundle_dir: Path, example_start: pd.Timestamp) -> mlflow.models.model.ModelInfo:
    """The pyfunc model with its code, pinned scoring requirements and an example request."""
    bundle = ModelBundle.load(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="tsad-code-") as staging:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PACKAGED_MODEL),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(model_package.stage_code(Path(staging)))],
            signature=model_signature(bundle.spec),
            input_example=model_package.example_frame(bundle, example_start),
            pip_requirements=model_package.scoring_requirements(),
        )


def register_training_run(
    settings: Settings,
    dataset: str,
    bundle_dir: Path,
    params: dict,
    metrics: dict[str, float],
    tags: dict[str, str],
    artifacts: list[Path],
    splits: Sequence[DataSplit],
    history: dict | None,
    example_start: pd.Timestamp,
) -> RegisteredVersion:
    """Log one training run and register its model as the ``@challenger`` version.

    The evaluation ``metrics`` (measured on the ``testing`` split) are linked to the logged
    model and its test dataset, and kept as ``metric.*`` tags on the version for the demo and
    scripts that read them. ``artifacts`` may be files or folders (logged under their name).
    """
    client = connect(settings)
    name = settings.model_name(dataset)
    experiment_id = experiment_for(client, settings, f"{name}-training")
    finite = {key: value for key, value in metrics.items() if math.isfinite(value)}
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
        mlflow.set_tags(tags)
        logged = {split.context: _log_split(dataset, split) for split in splits}
        if history:
            _log_history(run.info.run_id, client, history)
        for path in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
        info = _log_model(bundle_dir, example_start)
        mlflow.log_metrics(finite, model_id=info.model_id, dataset=logged.get("testing"))
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    client.update_registered_model(
        name, description=f"tsad anomaly detector for dataset {dataset!r}"
    )
    for key, value in finite.items():
        client.set_model_version_tag(name, version.version, f"metric.{key}", f"{value:.6g}")
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return RegisteredVersion(name, version.version, run.info.run_id)


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at (None when it points nowhere), retried when unreachable."""

    def resolve():
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if _is_not_found(exc):
                return None
            raise

    return with_retries(resolve, f"resolving {name}@{alias}")


def alias_version(settings: Settings, dataset: str, alias: str) -> str | None:
    """The version number ``alias`` points at, or None when it points nowhere."""
    client = connect(settings)
    name = settings.model_name(dataset)
    version = _version_by_alias(client, name, alias)
    return None if version is None else str(version.version)


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, resolved once and loaded (no race with a later promotion)."""

    name: str
    version: str
    run_id: str
    bundle: ModelBundle


def load_model(settings: Settings, dataset: str, alias: str) -> LoadedModel | None:
    """Load the version ``alias`` points at, or None when it points nowhere."""
    client = connect(settings)
    name = settings.model_name(dataset)
    version = _version_by_alias(client, name, alias)
    return None if version is None else _load(name, version)


def load_version(settings: Settings, dataset: str, version: str) -> LoadedModel:
    """Load one version by number.

    A caller that resolved aliases first (see :func:`alias_version`) loads exactly the versions
    it compared, even if an alias has moved in between.
    """
    client = connect(settings)
    name = settings.model_name(dataset)
    resolved = with_retries(
        lambda: client.get_model_version(name, version), f"reading {name} version {version}"
    )
    return _load(name, resolved)


def _load(name: str, version: ModelVersion) -> LoadedModel:
    """Load a resolved version's bundle, retried when the registry is unreachable."""
    model = with_retries(
        lambda: mlflow.pyfunc.load_model(f"models:/{name}/{version.version}"),
        f"loading {name} version {version.version}",
    )
    if version.run_id is None:
        raise ModelNotFoundError(f"{name} version {version.version} was not logged from a run")
    return LoadedModel(
        name, str(version.version), version.run_id, model.unwrap_python_model().bundle
    )


def load_production_model(settings: Settings, dataset: str) -> LoadedModel:
    """The ``@production`` version, loaded; a clear error when there is none yet."""
    model = load_model(settings, dataset, PRODUCTION)
    if model is None:
        raise ModelNotFoundError(
            f"model {settings.model_name(dataset)!r} has no @{PRODUCTION} version: train and "
            f"promote one first (tsad demo, the tsad_train DAG, or tsad promote --dataset "
            f"{dataset} --version N)"
        )
    return model


class ArtifactMissing(LookupError):
    """A run logged no file of that name."""


def read_run_file(settings: Settings, run_id: str, artifact_path: str) -> str:
    """The text of a file logged to a run (e.g. the ``run.json`` of a training run)."""
    connect(settings)
    try:
        return with_retries(
            lambda: mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_path}"),
            f"reading {artifact_path} of run {run_id}",
        )
    except MlflowException as exc:
        if _is_not_found(exc):
            raise ArtifactMissing(f"run {run_id} logged no {artifact_path}") from exc
        raise


def record_promotion(
    settings: Settings, dataset: str, version: str, tags: dict[str, str], promote: bool
) -> None:
    """Tag ``version`` with a promotion decision, then move ``@production`` if it passed.

    Tags come first: should the alias move fail, a retry finds the version still a challenger
    and decides again, instead of finding it in production with its decision unrecorded.
    """
    client = connect(settings)
    name = settings.model_name(dataset)
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if _is_not_found(exc):
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}") from exc
        raise
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if promote:
        client.set_registered_model_alias(name, PRODUCTION, version)


def logged_model_id(version: ModelVersion) -> str | None:
    """The id of the LoggedModel a version was registered from (its ``models:/<id>`` source).

    Registries other than Databricks leave ``ModelVersion.model_id`` empty, so the source says.
    """
    if version.model_id:
        return version.model_id
    source = version.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def log_gate_run(
    settings: Settings,
    dataset: str,
    challenger: str,
    production: str | None,
    metrics: dict[str, float],
    tags: dict[str, str],
) -> str:
    """Record one promotion decision as a run of its own; returns its id.

    Its metrics are both models' numbers on the same labeled days, its tags the decision and
    its reason, its inputs the two logged models compared. The challenger version's
    ``gate.run_id`` tag points here, so the registry page leads to the comparison.
    """
    client = connect(settings)
    name = settings.model_name(dataset)
    experiment_id = experiment_for(client, settings, f"{name}-promotion")
    compared = [version for version in (challenger, production) if version is not None]
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{name} version {challenger} gate"
    ) as run:
        mlflow.set_tags(
            tags | {"challenger_version": challenger, "production_version": production or "none"}
        )
        mlflow.log_metrics({key: value for key, value in metrics.items() if math.isfinite(value)})
        models = [logged_model_id(client.get_model_version(name, v)) for v in compared]
        client.log_inputs(run.info.run_id, models=[LoggedModelInput(m) for m in models if m])
    return run.info.run_id
