"""One training and one scoring schedule per dataset spec: what the DAG files generate.

Every ``configs/datasets/<name>.yaml`` gets a scoring DAG and, when its run config exists
(``training.run_config``, default ``configs/runs/<name>.yaml``), a training DAG, each on the
schedule its spec names: adding a dataset is adding its YAML files. The ``vitals`` dataset
keeps the plain ids ``tsad_score`` and ``tsad_train``; the others get ``tsad_score_<name>`` and
``tsad_train_<name>``. Each dataset's drift is its own Asset, so a drifted day retrains its
dataset alone. Nothing here imports Airflow: the DAG files turn these plans into DAGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import project_root, validate_name
from pipeline.spec_parts import ScoringSpec, TrainingSpec

# The dataset whose DAGs keep the plain ids the demo, the tests and the documentation use.
PRIMARY = "vitals"
# The drift Asset of the primary dataset; every other dataset's is this name and its own.
DRIFT_ASSET = "tsad_drift"


@dataclass(frozen=True)
class DatasetSchedule:
    """A dataset's DAG ids, schedules, shard count and run config."""

    dataset: str
    score_schedule: str
    shards: int
    train_schedule: str
    run_config: str | None  # None: the dataset has no run config, so no training DAG

    def _suffix(self) -> str:
        return "" if self.dataset == PRIMARY else f"_{self.dataset}"

    @property
    def score_dag_id(self) -> str:
        return f"tsad_score{self._suffix()}"

    @property
    def train_dag_id(self) -> str:
        return f"tsad_train{self._suffix()}"

    @property
    def drift_asset(self) -> str:
        """The name of the Asset this dataset's scoring emits a drift event on."""
        return f"{DRIFT_ASSET}{self._suffix()}"

    @property
    def drift_uri(self) -> str:
        return "tsad://drift" + ("" if self.dataset == PRIMARY else f"/{self.dataset}")


def dataset_schedules(configs_dir: Path | None = None) -> list[DatasetSchedule]:
    """A schedule for every dataset spec under ``configs/datasets``, in name order."""
    configs = configs_dir or project_root() / "configs"
    plans = []
    for path in sorted((configs / "datasets").glob("*.yaml")):
        # Only the parts a schedule needs are validated: the whole spec would import pandas
        # into every DAG parse (the scoring and training tasks validate all of it).
        raw = yaml.safe_load(path.read_text())
        name = validate_name(str(raw.get("name", path.stem)))
        scoring = ScoringSpec.model_validate(raw.get("scoring") or {})
        training = TrainingSpec.model_validate(raw.get("training") or {})
        run_config = training.run_config or name
        has_run = (configs / "runs" / f"{run_config}.yaml").is_file()
        plans.append(
            DatasetSchedule(
                dataset=name,
                score_schedule=scoring.schedule,
                shards=scoring.shards,
                train_schedule=training.schedule,
                run_config=run_config if has_run else None,
            )
        )
    return plans


def scoring_dag_id(dataset: str) -> str:
    """The id of the DAG that scores ``dataset``."""
    return DatasetSchedule(dataset, "", 1, "", None).score_dag_id


def training_dag_id(dataset: str) -> str:
    """The id of the DAG that trains ``dataset``."""
    return DatasetSchedule(dataset, "", 1, "", None).train_dag_id
