"""Drift-triggered retraining through Airflow: a drifted day's scoring run emits a ``tsad_drift``
event, Airflow's scheduler creates a ``tsad_train`` run from it, and that run trains the dataset
the event names, not the DAG's default one.

A second dataset, ``ward-b`` (the demo's spec and days under another name, with a run config of
its own that trains PCA), drifts; ``tsad_train``'s Params default to ``vitals``. The scoring
run is ``airflow dags test``; the scheduler runs two loops (``airflow scheduler -n 2``), which
create the runs without executing their tasks; the asset-triggered run's first task then runs
with ``airflow tasks test`` in that very run, with the triggering event in its context.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ward import day, small_run

from pipeline import steps
from pipeline.config import Settings, project_root
from pipeline.orchestration import init_airflow, parse_dags, run_airflow, run_dag

pytestmark = pytest.mark.slow

DRIFTED = day(5)


def second_dataset(root: Path) -> None:
    """A project root whose configs add ``ward-b``: the vitals spec, a PCA run config."""
    shutil.copytree(project_root() / "configs", root / "configs")
    for shared in ("dags", "constraints.txt"):  # the same DAGs; the pins a model records
        (root / shared).symlink_to(project_root() / shared)
    spec = yaml.safe_load((root / "configs" / "datasets" / "vitals.yaml").read_text())
    (root / "configs" / "datasets" / "ward-b.yaml").write_text(
        yaml.safe_dump(spec | {"name": "ward-b"})
    )
    run = small_run(dataset="ward-b", detector="pca", detector_params={}).model_dump(mode="json")
    (root / "configs" / "runs" / "ward-b.yaml").write_text(yaml.safe_dump(run))


def rows(settings: Settings, query: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(settings.home / "airflow" / "airflow.db")) as db:
        return db.execute(query).fetchall()


def test_a_drifted_day_triggers_a_training_run_for_its_dataset(
    tsad_home: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tsad_home
    second_dataset(tmp_path / "project")
    monkeypatch.setenv("TSAD_PROJECT_ROOT", str(tmp_path / "project"))
    steps.generate(start=day(0), days=6, patients=3, labeled_from=day(2), settings=settings)
    shutil.copytree(
        settings.data_root / "landing" / "vitals", settings.data_root / "landing" / "ward-b"
    )
    config = small_run(dataset="ward-b", detector="pca", detector_params={})
    steps.validate_days("ward-b", steps.run_days(config), settings)
    run_dir = steps.evaluate(steps.calibrate(steps.train(steps.prepare(config, settings))))
    steps.register(run_dir, settings)
    steps.promote_challenger("ward-b", settings=settings)
    landed = settings.partition("landing", "ward-b", DRIFTED) / "part-0.parquet"
    shifted = pd.read_parquet(landed)
    shifted["heart_rate"] += 40.0  # a recalibrated monitor: plausible values, a new level
    shifted.to_parquet(landed, index=False)
    init_airflow(settings)
    parse_dags(settings)
    assert run_airflow(["dags", "unpause", "tsad_train"], settings).returncode == 0

    conf = {"dataset": "ward-b", "date": DRIFTED.isoformat()}
    assert run_dag("tsad_score", settings, conf=conf) == "success"
    scheduler = run_airflow(["scheduler", "--num-runs", "2"], settings)
    assert scheduler.returncode == 0, scheduler.stderr[-3000:]

    [(run_id, logical_date)] = rows(
        settings,
        "SELECT run_id, logical_date FROM dag_run "
        "WHERE dag_id = 'tsad_train' AND run_type = 'asset_triggered'",
    )
    assert logical_date is None  # an asset-triggered run has no logical date
    [(extra,)] = rows(
        settings,
        "SELECT asset_event.extra FROM dagrun_asset_event JOIN asset_event "
        "ON asset_event.id = dagrun_asset_event.event_id JOIN dag_run "
        f"ON dag_run.id = dagrun_asset_event.dag_run_id WHERE dag_run.run_id = '{run_id}'",
    )
    assert json.loads(extra)["dataset"] == "ward-b"
    first = run_airflow(["tasks", "test", "tsad_train", "ingest", run_id], settings)
    assert first.returncode == 0, first.stderr[-3000:]
    [(value,)] = rows(
        settings,
        "SELECT value FROM xcom WHERE dag_id = 'tsad_train' AND task_id = 'ingest' "
        f"AND run_id = '{run_id}'",
    )
    trained = json.loads(json.loads(value))
    assert (trained["dataset"], trained["detector"]) == ("ward-b", "pca")  # ward-b's run config
