"""Running the product's DAGs through Airflow from outside it (demo, tests, `make up`).

The package never imports Airflow: it prepares the environment Airflow needs (its home and
SQLite database under ``TSAD_HOME``, this repository's ``dags/``) and runs the ``airflow``
command of the same virtual environment as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import Settings, project_root


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Variables that point Airflow and the tasks it runs at this product's stores."""
    airflow_home = settings.home / "airflow"
    venv_bin = str(Path(sys.executable).parent)
    artifact_root = settings.artifact_root
    artifacts = {} if artifact_root is None else {"TSAD_ARTIFACT_ROOT": artifact_root}
    return artifacts | {
        "TSAD_HOME": str(settings.home),
        "TSAD_DATA_URI": settings.data_uri or settings.data_root.as_uri(),
        "TSAD_PROJECT_ROOT": str(project_root()),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.registry_uri,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONWARNINGS": "ignore",
    }


def run_airflow(
    args: list[str], settings: Settings, quiet: bool = True
) -> subprocess.CompletedProcess:
    """Run ``airflow <args>`` with the product's environment; output is captured when quiet."""
    env = os.environ | airflow_environment(settings)
    (settings.home / "airflow").mkdir(parents=True, exist_ok=True)
    executable = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run(
        [executable, *args], env=env, text=True, capture_output=quiet, check=False
    )


GPU_POOL = "gpu"
GPU_POOL_SLOTS_VARIABLE = "TSAD_GPU_POOL_SLOTS"


def gpu_pool_slots() -> int:
    """How many training tasks may run at once (``TSAD_GPU_POOL_SLOTS``, default 1)."""
    return int(os.environ.get(GPU_POOL_SLOTS_VARIABLE) or 1)


def init_airflow(settings: Settings) -> None:
    """Create or upgrade Airflow's metadata database and size the ``gpu`` pool (idempotent)."""
    result = run_airflow(["db", "migrate"], settings)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stderr[-3000:]}")
    pool = ["pools", "set", GPU_POOL, str(gpu_pool_slots()), "training tasks (tsad_train)"]
    result = run_airflow(pool, settings)
    if result.returncode != 0:
        raise RuntimeError(f"airflow pools set failed:\n{result.stderr[-3000:]}")


def parse_dags(settings: Settings) -> None:
    """Parse ``dags/`` into the metadata database; import errors fail loudly."""
    result = run_airflow(["dags", "reserialize"], settings)
    errors = run_airflow(["dags", "list-import-errors", "-o", "json"], settings)
    if result.returncode != 0 or json.loads(errors.stdout or "[]"):
        raise RuntimeError(f"the DAGs do not parse:\n{result.stderr[-2000:]}{errors.stdout}")


def run_dag(
    dag_id: str, settings: Settings, logical_date: str | None = None, conf: dict | None = None
) -> str:
    """Run one DAG run in-process with ``airflow dags test`` (real tasks, real XCom).

    Returns the run's final state (``success`` or ``failed``).
    """
    args = ["dags", "test", dag_id]
    if logical_date:
        args.append(logical_date)
    if conf:
        args += ["--conf", json.dumps(conf)]
    result = run_airflow(args, settings)
    if result.returncode == 0:
        return "success"
    if "DagRun failed" in result.stderr:
        return "failed"
    raise RuntimeError(f"airflow dags test {dag_id} crashed:\n{result.stderr[-3000:]}")
