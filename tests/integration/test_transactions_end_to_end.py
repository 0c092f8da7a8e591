"""The payments user end to end: ``tsad generate --dataset transactions``, then both DAGs
through Airflow on a small day (PCA alone), checked as an analyst would check them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from pipeline import tracking
from pipeline.config import RunConfig, Settings
from pipeline.orchestration import init_airflow, parse_dags, run_dag

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("transactions")
SCORED = CONFIG.test.end + dt.timedelta(days=1)
BROKEN = SCORED + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def pipeline_run(module_home: Settings) -> tuple[Settings, dict]:
    settings = module_home
    days = (BROKEN - CONFIG.train.start).days + 1
    generate = [sys.executable, "-m", "pipeline.cli", "generate", "--dataset", "transactions"]
    options = ["--days", str(days), "--accounts", "150", "--incidents-per-1000", "40"]
    environment = os.environ | {"TSAD_HOME": str(settings.home)}
    subprocess.run([*generate, *options], check=True, env=environment, capture_output=True)
    broken = settings.partition("landing", "transactions", BROKEN) / "part-0.parquet"
    landed = pd.read_parquet(broken)
    refunds = landed.head(4).assign(amount=lambda rows: -rows["amount"])
    pd.concat([landed, refunds]).to_parquet(broken, index=False)
    init_airflow(settings)
    parse_dags(settings)
    # The dataset's own DAGs, generated from its spec: its run config and dataset by default.
    states = {"train": run_dag("tsad_train_transactions", settings, conf={"detector": "pca"})}
    for day in (SCORED, BROKEN):
        run_date = (day + dt.timedelta(days=1)).isoformat()
        states[day] = run_dag("tsad_score_transactions", settings, logical_date=run_date)
    return settings, states


def test_training_registers_the_transactions_model(pipeline_run):
    settings, states = pipeline_run
    assert states["train"] == "success"
    client = tracking.connect(settings)
    name = settings.model_name("transactions")
    version = client.get_model_version_by_alias(name, "production")
    assert version.tags["detector"] == "pca"
    assert float(version.tags["metric.auc_pr"]) > 0


def test_a_scored_day_has_hourly_scores_whose_alarms_name_their_payments(pipeline_run):
    settings, states = pipeline_run
    assert states[SCORED] == "success"
    out = settings.partition("scores", "transactions", SCORED)
    landed = pd.read_parquet(settings.partition("landing", "transactions", SCORED))
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == landed["account_id"].nunique() * 24
    linked = pd.read_parquet(out / "alarm_events.parquet")
    assert len(linked) == int(scores["is_anomaly"].sum()) > 0
    payments = landed.set_index("txn_id")
    for row in linked.itertuples(index=False):
        for txn in row.event_ids:
            assert payments.loc[txn, "account_id"] == row.entity
            assert payments.loc[txn, "timestamp"].floor("1h") == row.timestamp
    assert "Transactions behind the alarms" in (out / "report.html").read_text()


def test_an_ordinary_day_of_payments_is_not_flagged_as_drifted(pipeline_run):
    settings, states = pipeline_run
    assert states[SCORED] == "success"
    out = settings.partition("scores", "transactions", SCORED)
    drift = json.loads((out / "summary.json").read_text())["drift"]
    assert not drift["drifted"], drift
    assert drift["score_psi"] < drift["level"]


def test_a_day_with_negative_refunds_is_quarantined(pipeline_run):
    settings, states = pipeline_run
    assert states[BROKEN] == "failed"
    quarantine = settings.partition("quarantine", "transactions", BROKEN)
    failures = json.loads((quarantine / "validation_report.json").read_text())["failures"]
    assert "amount: 4 values outside [0, 50000]" in failures
    assert "txn_id: 8 rows with a duplicated key" in failures
    assert not settings.partition("scores", "transactions", BROKEN).exists()
    assert not settings.partition("series", "transactions", BROKEN).exists()
