"""The DAG files parse without errors, stay light at parse time, set retries and timeouts."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from pipeline.schedules import dataset_schedules

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ("torch", "pandas", "mlflow", "great_expectations", "sklearn", "pipeline.steps")


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The DAG folder parsed under a throwaway ``AIRFLOW_HOME``; the environment is restored.

    A developer's own ``AIRFLOW_HOME`` is never used: parsing may create files in it.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
        monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(DAGS))


def dag_module(name: str) -> ModuleType:
    """A DAG file imported as a module of its own, for the plain functions it defines."""
    spec = importlib.util.spec_from_file_location(f"dag_file_{name}", DAGS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("dagbag")  # Airflow imported under the throwaway home
def test_the_date_param_or_else_the_data_interval_names_the_day_to_score():
    partition_date = dag_module("tsad_score").partition_date
    start = datetime(2026, 1, 9, tzinfo=UTC)
    assert partition_date({"date": "2026-01-03"}, start) == "2026-01-03"
    assert partition_date({"date": None}, start) == "2026-01-09"


@pytest.mark.usefixtures("dagbag")
def test_a_run_without_a_data_interval_or_date_fails_naming_the_param():
    from airflow.exceptions import AirflowFailException

    partition_date = dag_module("tsad_score").partition_date
    with pytest.raises(AirflowFailException, match="no data interval: pass the 'date' Param"):
        partition_date({}, None)


def scoring_dags(dagbag) -> list:
    """Every generated scoring DAG, one per dataset spec."""
    return [dagbag.dags[plan.score_dag_id] for plan in dataset_schedules()]


def training_dags(dagbag) -> list:
    """Every generated training DAG, one per dataset spec with a run config."""
    return [dagbag.dags[plan.train_dag_id] for plan in dataset_schedules() if plan.run_config]


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "tsad_train",
        "tsad_score",
        "tsad_train_transactions",
        "tsad_score_transactions",
    }


def test_adding_a_dataset_spec_adds_its_dags(tmp_path, monkeypatch):
    """A new YAML file under configs/datasets (and its run config) is a new pair of DAGs, on
    the schedules and with the shard count the spec names."""
    from airflow.dag_processing.dagbag import DagBag

    from pipeline.config import project_root

    configs = tmp_path / "configs"
    shutil.copytree(project_root() / "configs", configs)
    shipped = yaml.safe_load((configs / "datasets" / "vitals.yaml").read_text())
    ward = shipped | {
        "name": "ward-b",
        "scoring": {"shards": 4, "schedule": "0 6 * * *"},
        "training": {"schedule": "@monthly"},
    }
    (configs / "datasets" / "ward-b.yaml").write_text(yaml.safe_dump(ward))
    run = yaml.safe_load((configs / "runs" / "vitals.yaml").read_text()) | {"dataset": "ward-b"}
    (configs / "runs" / "ward-b.yaml").write_text(yaml.safe_dump(run))
    monkeypatch.setenv("TSAD_PROJECT_ROOT", str(tmp_path))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    score, train = bag.dags["tsad_score_ward-b"], bag.dags["tsad_train_ward-b"]
    assert score.timetable.summary == "0 6 * * *"
    assert (
        score.params["dataset"] == "ward-b"
        and "(4)" in score.params.get_param("shards").description
    )
    assert train.params["run_config"] == "ward-b"
    assert train.timetable.timetable.expression == "0 0 1 * *"  # @monthly
    drift = score.get_task("signal_drift").outlets
    assert [asset.name for asset in drift] == ["tsad_drift_ward-b"]
    assert list(train.timetable.asset_condition.objects) == drift


def test_every_task_retries_or_is_pure_compute(dagbag):
    compute_only = {"calibrate", "evaluate"}
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.retries > 0 or task.task_id in compute_only, task.task_id


def test_training_runs_on_the_gpu_queue_in_the_gpu_pool(dagbag):
    for train in training_dags(dagbag):
        assert train.get_task("train").queue == "gpu"
        assert [task.task_id for task in train.tasks if task.pool == "gpu"] == ["train"]


def test_training_and_calibration_are_mapped_over_the_candidates(dagbag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    for train in training_dags(dagbag):
        mapped = {task.task_id for task in train.tasks if isinstance(task, MappedOperator)}
        assert mapped == {"train", "calibrate"}
        assert train.get_task("train").upstream_task_ids == {"candidates"}
        assert train.get_task("select").upstream_task_ids == {"prepare", "calibrate"}
        assert train.get_task("evaluate").upstream_task_ids == {"select"}


def test_scoring_is_mapped_over_the_shards_then_finalized(dagbag):
    """One ``score`` task instance per shard (retried alone), then ``finalize`` commits the
    day; every later task reads the finalized day."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    for score in scoring_dags(dagbag):
        mapped = {task.task_id for task in score.tasks if isinstance(task, MappedOperator)}
        assert mapped == {"score"}, score.dag_id
        assert score.get_task("score").upstream_task_ids == {"validate", "plan_shards"}
        assert score.get_task("score").retries > 0
        assert score.get_task("finalize").upstream_task_ids == {"validate", "score"}
        for later in ("deliver", "signal_drift", "send_digest"):
            assert score.get_task(later).upstream_task_ids == {"finalize"}


def test_every_task_times_out_within_its_dag_runs_timeout(dagbag):
    for dag in dagbag.dags.values():
        assert dag.dagrun_timeout is not None, dag.dag_id
        for task in dag.tasks:
            assert task.execution_timeout is not None, task.task_id
            assert task.execution_timeout <= dag.dagrun_timeout, task.task_id


def test_every_task_reads_its_settings_from_airflow_connections_first(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_execute_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert [c.__name__ for c in callbacks] == ["settings_from_connections"], task.task_id


def test_the_gpu_pool_is_sized_by_configuration(tmp_path, monkeypatch):
    from homes import use_home

    from pipeline.orchestration import init_airflow, run_airflow

    settings = use_home(tmp_path / "tsad", monkeypatch)
    monkeypatch.setenv("TSAD_GPU_POOL_SLOTS", "3")
    init_airflow(settings)
    listed = run_airflow(["pools", "get", "gpu", "-o", "json"], settings)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert int(json.loads(listed.stdout)[0]["slots"]) == 3


def test_detector_param_offers_every_registered_detector(dagbag):
    from pipeline.detectors.registry import DETECTORS

    enum = dagbag.dags["tsad_train"].params.get_param("detector").schema["enum"]
    assert set(enum) - {None} == set(DETECTORS)


def test_calibration_param_offers_every_registered_calibrator(dagbag):
    from pipeline.calibration import CALIBRATORS

    enum = dagbag.dags["tsad_train"].params.get_param("calibration").schema["enum"]
    assert set(enum) - {None} == set(CALIBRATORS)


def test_schedules_and_params(dagbag):
    for train in training_dags(dagbag):
        assert {"dataset", "detector", "epochs", "window", "calibration"} <= set(train.params)
    for score, plan in zip(scoring_dags(dagbag), dataset_schedules(), strict=True):
        assert {"date", "shards"} <= set(score.params)
        assert score.params["dataset"] == plan.dataset
        assert score.timetable.summary in {"@daily", "0 0 * * *"}
        assert type(score.timetable).__name__ == "CronDataIntervalTimetable"
    assert dagbag.dags["tsad_train"].params["run_config"] == "vitals"
    assert dagbag.dags["tsad_train_transactions"].params["run_config"] == "transactions"


def test_parsing_imports_no_heavy_library(tmp_path):
    code = (
        "import sys, runpy\n"
        f"for path in {sorted(map(str, DAGS.glob('*.py')))!r}: runpy.run_path(path)\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = os.environ | {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    loaded = [line for line in result.stdout.splitlines() if line.startswith("HEAVY=")]
    assert loaded == ["HEAVY="], result.stdout


def test_scoring_signals_drift_on_its_datasets_asset(dagbag):
    for score, plan in zip(scoring_dags(dagbag), dataset_schedules(), strict=True):
        signal = score.get_task("signal_drift")
        assert [outlet.name for outlet in signal.outlets] == [plan.drift_asset]
        assert signal.upstream_task_ids == {"finalize"}
    assert dagbag.dags["tsad_score"].get_task("signal_drift").outlets[0].name == "tsad_drift"


def test_training_runs_weekly_or_when_a_scored_day_drifts(dagbag, monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    train, score = dagbag.dags["tsad_train"], dagbag.dags["tsad_score"]
    timetable = train.timetable
    assert isinstance(timetable, AssetOrTimeSchedule)
    assert isinstance(timetable.timetable, CronTriggerTimetable)
    assert timetable.timetable.expression == "0 0 * * 0"  # @weekly
    # The very Asset the scoring DAG's drift signal emits on.
    assert list(timetable.asset_condition.objects) == score.get_task("signal_drift").outlets
    monkeypatch.setenv("TSAD_RETRAIN_ON_DRIFT", "false")
    plan = dataset_schedules()[-1]
    assert isinstance(dag_module("tsad_train").schedule(plan), CronTriggerTimetable)


def drift_event(extra: dict):
    """A ``tsad_drift`` event as a task's ``triggering_asset_events`` hands it over."""
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name="tsad_drift", uri="tsad://drift/", extra={}),
        extra=extra,
        source_task_id="signal_drift",
        source_dag_id="tsad_score",
        source_run_id="scheduled__2026-01-10",
        source_map_index=-1,
        source_aliases=[],
        timestamp=datetime(2026, 1, 11, tzinfo=UTC),
    )


@pytest.mark.usefixtures("dagbag")
def test_a_drift_triggered_run_trains_the_dataset_that_drifted(tmp_path, monkeypatch):
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from pipeline import steps
    from pipeline.config import project_root

    configs = tmp_path / "configs"
    shutil.copytree(project_root() / "configs", configs)
    for kind in ("datasets", "runs"):
        shipped = yaml.safe_load((configs / kind / "vitals.yaml").read_text())
        renamed = shipped | ({"name": "ward-b"} if kind == "datasets" else {"dataset": "ward-b"})
        (configs / kind / "ward-b.yaml").write_text(yaml.safe_dump(renamed))
    monkeypatch.setenv("TSAD_PROJECT_ROOT", str(tmp_path))
    run_params = dag_module("tsad_train").run_params
    defaults = {"run_config": "vitals", "dataset": None, "epochs": None}

    events = TriggeringAssetEventsAccessor.build(
        [drift_event({"dataset": "vitals", "date": "2026-01-09"}),
         drift_event({"dataset": "ward-b", "date": "2026-01-10"})]
    )  # fmt: skip
    drifted = run_params(defaults, events)
    assert drifted == {"run_config": "ward-b", "dataset": "ward-b", "epochs": None}
    assert steps.run_config_from_params(drifted).dataset == "ward-b"
    scheduled = run_params(defaults, TriggeringAssetEventsAccessor.build([]))
    assert scheduled == defaults


def test_scoring_waits_for_the_day_then_ingests_it_and_delivers_the_scores(dagbag):
    score = dagbag.dags["tsad_score"]
    wait = score.get_task("wait_for_day")
    assert wait.mode == "reschedule" and not wait.upstream_task_ids
    assert score.get_task("ingest").upstream_task_ids == {"wait_for_day"}
    assert score.get_task("validate").upstream_task_ids == {"ingest"}
    assert score.get_task("deliver").upstream_task_ids == {"finalize"}


def test_training_ingests_its_days_before_validating_them(dagbag):
    train = dagbag.dags["tsad_train"]
    assert not train.get_task("ingest").upstream_task_ids
    assert train.get_task("validate_days").upstream_task_ids == {"ingest"}
