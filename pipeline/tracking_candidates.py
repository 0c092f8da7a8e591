"""A training run's candidate detectors in MLflow: child runs, and the choice on the version.

Each candidate becomes a child run of the training run (MLflow nests a run under the one its
``mlflow.parentRunId`` tag names), holding its detector, its settings and its metrics on the
labeled validation days, tagged ``winner`` true or false: expanding the training run in the
UI, or comparing its children, shows why the winner won. The training run and the registered
version carry the choice too (``selection.*`` tags, one ``validation.<candidate>.<metric>``
tag per candidate on the version), so the registry page answers without opening a run.
"""

from __future__ import annotations

import math
import time
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline.config import Settings
from pipeline.tracking import RegisteredVersion, connect, with_retries

SELECTION_FILE = "selection.json"


def log_candidates(settings: Settings, version: RegisteredVersion, choice: dict[str, Any]) -> None:
    """Log every candidate of ``choice`` (a run's ``selection.json``) under ``version``'s run.

    Called once the training run is registered: a child run is created by its parent tag, so
    the parent need not be active.
    """
    client = connect(settings)
    parent = with_retries(lambda: client.get_run(version.run_id), f"reading run {version.run_id}")
    metric, winner = choice["metric"], choice["winner"]
    now = int(time.time() * 1000)
    for name, record in choice["candidates"].items():
        tags = {
            MLFLOW_PARENT_RUN_ID: version.run_id,
            "candidate": name,
            "detector": record["detector"],
            "dataset": parent.data.tags.get("dataset", ""),
            "selection.metric": metric,
            "winner": str(name == winner).lower(),
        }
        child = client.create_run(parent.info.experiment_id, tags=tags, run_name=name)
        params = {"detector": record["detector"]} | {
            f"detector.{key}": value for key, value in record["params"].items()
        }
        client.log_batch(
            child.info.run_id,
            metrics=[
                Metric(f"validation.{key}", float(value), now, 0)
                for key, value in record["validation"].items()
                if isinstance(value, int | float) and math.isfinite(value)
            ],
            params=[Param(key, str(value)[:500]) for key, value in params.items()],
        )
        client.set_terminated(child.info.run_id)
    summary = {"selection.metric": metric, "selection.winner": winner}
    client.log_batch(version.run_id, tags=[RunTag(k, v) for k, v in summary.items()])
    client.log_dict(version.run_id, choice, SELECTION_FILE)
    for name, record in choice["candidates"].items():
        value = record["validation"].get(metric, math.nan)
        summary[f"validation.{name}.{metric}"] = f"{value:.6g}"
    for key, value in summary.items():
        client.set_model_version_tag(version.name, version.version, key, value)
