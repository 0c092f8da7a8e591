"""Candidate detectors through Airflow itself (``airflow dags test``): training and calibration
mapped over two cheap candidates, the validation winner registered, every candidate a child
run in MLflow."""

from __future__ import annotations

import contextlib
import math
import sqlite3

import pytest

from pipeline import steps, tracking
from pipeline.config import RunConfig, Settings
from pipeline.orchestration import init_airflow, parse_dags, run_dag

pytestmark = pytest.mark.slow

RUN_CONFIG = "vitals_candidates"
CONFIG = RunConfig.load(RUN_CONFIG)


@pytest.fixture(scope="module")
def trained(module_home: Settings) -> tuple[Settings, str]:
    settings = module_home
    days = (CONFIG.test.end - CONFIG.train.start).days + 1
    steps.generate(
        start=CONFIG.train.start,
        days=days,
        patients=2,
        labeled_from=CONFIG.validation.start,
        settings=settings,
    )
    init_airflow(settings)
    parse_dags(settings)
    return settings, run_dag("tsad_train", settings, conf={"run_config": RUN_CONFIG})


def task_instances(settings: Settings) -> list[tuple]:
    """``(task_id, map_index, state, queue, pool, rendered_map_index)`` of every task of the
    training run, from Airflow's database."""
    database = settings.home / "airflow" / "airflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute(
            "SELECT task_id, map_index, state, queue, pool, rendered_map_index FROM task_instance "
            "WHERE dag_id = 'tsad_train' ORDER BY task_id, map_index"
        ).fetchall()


def test_training_and_calibration_run_once_per_candidate_on_the_gpu_queue(trained):
    settings, state = trained
    assert state == "success"
    instances = task_instances(settings)
    mapped = {(task, index) for task, index, *_ in instances if index >= 0}
    assert mapped == {(task, index) for task in ("train", "calibrate") for index in (0, 1)}
    assert all(state == "success" for _, _, state, *_ in instances)
    trains = [(queue, pool) for task, _, _, queue, pool, _ in instances if task == "train"]
    assert trains == [("gpu", "gpu"), ("gpu", "gpu")]
    names = [str(candidate.name) for candidate in CONFIG.candidates]
    for mapped_task in ("train", "calibrate"):  # shown by candidate in the grid
        assert [shown for task, *_, shown in instances if task == mapped_task] == names
    assert [task for task, *_ in instances].count("evaluate") == 1


def test_the_validation_winner_is_registered_and_every_candidate_is_a_child_run(trained):
    settings, _ = trained
    client = tracking.connect(settings)
    version = client.get_model_version_by_alias(settings.model_name("vitals"), "challenger")
    children = client.search_runs(
        [client.get_run(version.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{version.run_id}'",
    )
    on_validation = {
        child.info.run_name: child.data.metrics.get("validation.vus_pr", math.nan)
        for child in children
    }
    assert set(on_validation) == {str(candidate.name) for candidate in CONFIG.candidates}
    best = max(on_validation.values())
    order = [str(candidate.name) for candidate in CONFIG.candidates]
    winner = next(name for name in order if on_validation[name] == best)
    assert version.tags["selection.winner"] == winner == version.tags["detector"]
    assert float(version.tags["metric.vus_pr"]) > 0  # the winner's test days, measured once
