"""A day's scoring recorded in MLflow: its summary as metrics, its report and validation.

One run per scored day, in the ``<model>-scoring`` experiment, beside the training runs that
:mod:`pipeline.tracking` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mlflow

from pipeline.config import Settings
from pipeline.tracking import LoadedModel, connect, experiment_for


def log_scoring_run(
    settings: Settings,
    dataset: str,
    date: str,
    model: LoadedModel,
    summary: dict,
    artifacts: Sequence[Path] = (),
    validation: Path | None = None,
) -> str:
    """Record a day's scoring as its own MLflow run.

    Metrics: rows, anomaly rate and every other number of ``summary`` (drift indicators come
    as a nested ``drift`` dict: the score PSI, one ``psi.<feature>`` per feature, and
    ``drifted`` as 0/1); ``artifacts`` (the daily report) are logged as files, and the day's
    ``validation`` folder (JSON report and Data Docs page) under ``validation/``.
    """
    client = connect(settings)
    experiment_id = experiment_for(client, settings, f"{model.name}-scoring")
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
        if validation is not None and validation.is_dir():
            mlflow.log_artifacts(str(validation), artifact_path="validation")
    return run.info.run_id


def _numbers(values: dict) -> dict[str, float]:
    """The numeric entries of a dict (booleans as 0/1), as MLflow metrics."""
    return {key: float(value) for key, value in values.items() if isinstance(value, int | float)}


def _drift_metrics(drift: dict | None) -> dict[str, float]:
    if drift is None:
        return {}
    psi = {f"psi.{name}": value for name, value in drift["feature_psi"].items()}
    return {"score_psi": drift["score_psi"], "drifted": float(drift["drifted"])} | psi
