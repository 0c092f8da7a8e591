"""Everything that talks to MLflow: runs, the model registry and its aliases.

The production model is the registered model's ``@production`` alias (registry stages are
deprecated); a new version arrives as ``@challenger`` and is promoted by the gate of
:mod:`pipeline.promotion` or by hand. The model is logged as a pyfunc *from code*
(``pipeline/packaged_model.py``) around a bundle of plain files, so loading it never unpickles an
object.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

import pipeline
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


@contextlib.contextmanager
def quiet_mlflow_hints() -> Iterator[None]:
    """Silence MLflow's advice to add type hints and an input example.

    The model's schema is its explicit signature; type-hint validation would re-check every
    frame, and an input example would make MLflow load and run the model while logging it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
        yield


def _experiment_id(client: MlflowClient, settings: Settings, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if settings.artifact_root is None else f"{settings.artifact_root}/{name}"
    return client.create_experiment(name, artifact_location=location)


def model_signature(spec: DatasetSpec) -> ModelSignature:
    """Input: the canonical frame; output: one score row per input row (alarms explained)."""
    inputs = Schema(
        [
            ColSpec("datetime", TIMESTAMP),
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


def register_training_run(
    settings: Settings,
    dataset: str,
    bundle_dir: Path,
    params: dict,
    metrics: dict[str, float],
    tags: dict[str, str],
    artifacts: list[Path],
) -> RegisteredVersion:
    """Log one training run (params, metrics, files, pyfunc model) and register a challenger."""
    client = connect(settings)
    name = settings.model_name(dataset)
    experiment_id = _experiment_id(client, settings, f"{name}-training")
    bundle = ModelBundle.load(bundle_dir)
    finite = {key: value for key, value in metrics.items() if math.isfinite(value)}
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
        mlflow.log_metrics(finite)
        mlflow.set_tags(tags)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        with quiet_mlflow_hints():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PACKAGED_MODEL),
                artifacts={"bundle": str(bundle_dir)},
                signature=model_signature(bundle.spec),
                pip_requirements=[f"tsad=={pipeline.__version__}"],
            )
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
    with quiet_mlflow_hints():
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


def read_run_file(settings: Settings, run_id: str, artifact_path: str) -> str:
    """The text of a file logged to a run (e.g. the ``run.json`` of a training run)."""
    connect(settings)
    return with_retries(
        lambda: mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact_path}"),
        f"reading {artifact_path} of run {run_id}",
    )


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


def log_scoring_run(
    settings: Settings,
    dataset: str,
    date: str,
    model: LoadedModel,
    summary: dict,
    artifacts: Sequence[Path] = (),
) -> str:
    """Record a day's scoring as its own MLflow run.

    Metrics: rows, anomaly rate and every other number of ``summary`` (drift indicators come
    as a nested ``drift`` dict: the score PSI, one ``psi.<feature>`` per feature, and
    ``drifted`` as 0/1); ``artifacts`` (the daily report) are logged as files.
    """
    client = connect(settings)
    experiment_id = _experiment_id(client, settings, f"{model.name}-scoring")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{dataset} {date}") as run:
        mlflow.set_tags(
            {
                "dataset": dataset,
                "date": date,
                "model_name": model.name,
                "model_version": model.version,
            }
        )
        mlflow.log_metrics(_numbers(summary) | _drift_metrics(summary.get("drift")))
        mlflow.log_dict(summary, "summary.json")
        for path in artifacts:
            mlflow.log_artifact(str(path))
    return run.info.run_id


def _numbers(values: dict) -> dict[str, float]:
    """The numeric entries of a dict (booleans as 0/1), as MLflow metrics."""
    return {key: float(value) for key, value in values.items() if isinstance(value, int | float)}


def _drift_metrics(drift: dict | None) -> dict[str, float]:
    if drift is None:
        return {}
    psi = {f"psi.{name}": value for name, value in drift["feature_psi"].items()}
    return {"score_psi": drift["score_psi"], "drifted": float(drift["drifted"])} | psi
