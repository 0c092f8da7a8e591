"""Both DAGs through Airflow itself (``airflow dags test``: real tasks, real XCom), then the
registry and the outputs are checked as a user would check them."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3

import pandas as pd
import pytest
from smtp_inbox import local_smtp

from pipeline import steps, tracking
from pipeline.config import RunConfig, Settings
from pipeline.orchestration import init_airflow, parse_dags, run_airflow, run_dag

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals")
SCORED = [CONFIG.test.end + dt.timedelta(days=1), CONFIG.test.end + dt.timedelta(days=2)]
BROKEN = SCORED[-1] + dt.timedelta(days=1)
DRIFTED = BROKEN + dt.timedelta(days=1)
WORSE = {"epochs": 1, "window": 2}


@pytest.fixture(scope="module")
def pipeline_run(module_home: Settings) -> tuple[Settings, dict]:
    settings = module_home
    days = (DRIFTED - CONFIG.train.start).days + 1
    steps.generate(
        start=CONFIG.train.start,
        days=days,
        patients=4,
        labeled_from=CONFIG.validation.start,
        settings=settings,
    )
    broken = settings.partition("landing", "vitals", BROKEN) / "part-0.parquet"
    pd.read_parquet(broken).drop(columns=["heart_rate"]).to_parquet(broken, index=False)
    drifted = settings.partition("landing", "vitals", DRIFTED) / "part-0.parquet"
    shifted = pd.read_parquet(drifted)
    shifted["heart_rate"] += 40.0  # a recalibrated monitor: plausible values, new level
    shifted.to_parquet(drifted, index=False)
    init_airflow(settings)
    parse_dags(settings)
    # Unpaused, as on a running deployment: a drift event then queues a retraining run.
    assert run_airflow(["dags", "unpause", "tsad_train"], settings).returncode == 0
    # The owners' mail (failures, quarantine, drift, digests) goes to a local server.
    with local_smtp() as (_, uri), pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", uri)
        states = {"train": run_dag("tsad_train", settings, conf={"epochs": 3})}
        for day in [*SCORED, BROKEN, DRIFTED]:
            run_date = (day + dt.timedelta(days=1)).isoformat()
            states[day] = run_dag("tsad_score", settings, logical_date=run_date)
        # A careless retrain: one epoch on two-minute windows sees no physiology to learn.
        states["worse"] = run_dag("tsad_train", settings, conf=WORSE)
    return settings, states


def test_training_dag_registers_and_promotes(pipeline_run):
    settings, states = pipeline_run
    assert states["train"] == "success"
    client = tracking.connect(settings)
    version = client.get_model_version_by_alias(settings.model_name("vitals"), "production")
    assert float(version.tags["threshold"]) > 0
    assert version.tags["calibration_method"] == "best_f1"
    assert float(version.tags["metric.auc_pr"]) > 0


def test_a_worse_retrain_is_registered_but_the_gate_keeps_the_incumbent(pipeline_run):
    settings, states = pipeline_run
    assert states["worse"] == "success"  # the gate rejecting a model is not a failure
    client = tracking.connect(settings)
    name = settings.model_name("vitals")
    production = client.get_model_version_by_alias(name, "production")
    challenger = client.get_model_version(name, "2")
    assert str(production.version) == "1"
    assert challenger.tags["gate.decision"] == "rejected"
    assert challenger.tags["gate.production_version"] == "1"
    gate = challenger.tags
    assert float(gate["gate.challenger"]) < float(gate["gate.production"]), gate["gate.reason"]


def test_scoring_dag_scores_each_day_and_finds_the_anomalies(pipeline_run):
    settings, states = pipeline_run
    for day in SCORED:
        assert states[day] == "success"
        scores = pd.read_parquet(settings.partition("scores", "vitals", day) / "scores.parquet")
        landed = pd.read_parquet(
            settings.partition("landing", "vitals", day) / "part-0.parquet"
        ).sort_values(["patient_id", "timestamp"])
        assert len(scores) == len(landed)
        assert (scores["timestamp"].dt.date == day).all()
        alarms = scores["is_anomaly"].to_numpy()
        truth = landed["label"].to_numpy() == 1
        recall = (alarms & truth).sum() / truth.sum()
        assert recall > 3 * alarms.mean(), (recall, alarms.mean())


def test_a_broken_day_is_quarantined_while_others_score(pipeline_run):
    settings, states = pipeline_run
    assert states[BROKEN] == "failed"
    quarantine = settings.partition("quarantine", "vitals", BROKEN)
    assert (quarantine / "validation_report.json").is_file()
    assert not settings.partition("scores", "vitals", BROKEN).exists()


def airflow_rows(settings: Settings, query: str) -> list[tuple]:
    """Rows of a query on Airflow's metadata database."""
    database = settings.home / "airflow" / "airflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute(query).fetchall()


def drift_events(settings: Settings) -> list[dict]:
    """The extras of every event on the ``tsad_drift`` Asset, from Airflow's database."""
    rows = airflow_rows(
        settings,
        "SELECT asset_event.extra FROM asset_event JOIN asset "
        "ON asset.id = asset_event.asset_id WHERE asset.name = 'tsad_drift'",
    )
    return [json.loads(extra) for (extra,) in rows]


def test_each_day_has_a_report_and_only_a_drifted_day_triggers_retraining(pipeline_run):
    settings, states = pipeline_run
    assert states[DRIFTED] == "success"
    for day in [*SCORED, DRIFTED]:
        report = settings.partition("scores", "vitals", day) / "report.html"
        assert f"Daily anomaly report: vitals {day}" in report.read_text()
    drifted_days = {
        day.isoformat()
        for day in [*SCORED, DRIFTED]
        if json.loads((settings.partition("scores", "vitals", day) / "summary.json").read_text())[
            "drift"
        ]["drifted"]
    }
    assert drifted_days == {DRIFTED.isoformat()}  # no normal day falsely marked drifted
    events = drift_events(settings)
    assert {event["date"] for event in events} == drifted_days
    shifted = next(event for event in events if event["date"] == DRIFTED.isoformat())
    assert shifted["dataset"] == "vitals" and "heart_rate" in shifted["drifted_features"]
    # The event queued a tsad_train run: the scheduler creates it from this queue and hands the
    # event to its tasks, which train the dataset the extra names.
    queued = airflow_rows(
        settings,
        "SELECT asset_dag_run_queue.target_dag_id FROM asset_dag_run_queue JOIN asset "
        "ON asset.id = asset_dag_run_queue.asset_id WHERE asset.name = 'tsad_drift'",
    )
    assert queued == [("tsad_train",)]
