"""Raw payments are validated as they landed: ranges, declared sets, unique ids, the day."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from pipeline import steps
from pipeline.config import DatasetSpec, Settings
from pipeline.data.transactions_demo import TransactionsScenario, generate_transactions
from pipeline.data.validate import validate_batch

SPEC = DatasetSpec.load("transactions")
DAY = dt.date(2026, 2, 6)


@pytest.fixture(scope="module")
def payments() -> pd.DataFrame:
    scenario = TransactionsScenario(start=DAY, n_days=1, labeled_from=DAY, n_accounts=120)
    return generate_transactions(scenario)[DAY]


def test_a_generated_day_passes_with_its_ground_truth_column_noted(payments):
    report = validate_batch(payments, SPEC, DAY)
    assert report.success, report.failures
    assert report.warnings == ["unknown column 'fraud_kind' ignored"]


def test_each_broken_rule_is_named(payments):
    broken = payments.copy()
    broken.loc[0, "amount"] = -12.5
    broken.loc[1, "currency"] = "XXX"
    broken.loc[2, "merchant_category"] = "casino"
    broken.loc[3, "txn_id"] = broken.loc[4, "txn_id"]
    broken.loc[5, "timestamp"] = pd.Timestamp(DAY + dt.timedelta(days=1), tz="UTC")
    report = validate_batch(broken, SPEC, DAY)
    assert not report.success
    assert report.failures[0] == "amount: 1 values outside [0, 50000]"
    assert report.failures[1].startswith("currency: 1 values not in {")
    assert report.failures[2].startswith("merchant_category: 1 values not in {")
    assert report.failures[3:] == [
        "txn_id: 2 rows with a duplicated key",
        "timestamp: 1 rows outside 2026-02-06",
    ]


def test_missing_field_is_named_before_anything_else(payments):
    report = validate_batch(payments.drop(columns=["country"]), SPEC, DAY)
    assert report.failures == ["column 'country' missing"]


def test_a_rejected_day_is_quarantined_and_never_aggregated(tsad_home: Settings, payments):
    landing = tsad_home.partition("landing", "transactions", DAY)
    landing.mkdir(parents=True)
    refunds = payments.head(3).assign(amount=lambda rows: -rows["amount"])
    pd.concat([payments, refunds]).to_parquet(landing / "part-0.parquet", index=False)
    with pytest.raises(steps.BatchRejected, match="amount: 3 values outside"):
        steps.load_day(tsad_home, SPEC, DAY)
    quarantine = tsad_home.partition("quarantine", "transactions", DAY)
    report = json.loads((quarantine / "validation_report.json").read_text())
    assert "txn_id: 6 rows with a duplicated key" in report["failures"]
    assert not tsad_home.partition("series", "transactions", DAY).exists()
    assert len(pd.read_parquet(landing)) == len(payments) + 3  # the landing is untouched


def test_a_valid_day_is_aggregated_once_and_again_when_it_changes(tsad_home: Settings, payments):
    landing = tsad_home.partition("landing", "transactions", DAY)
    landing.mkdir(parents=True)
    payments.to_parquet(landing / "part-0.parquet", index=False)
    series = steps.load_day(tsad_home, SPEC, DAY)
    assert list(series.columns) == ["timestamp", "entity", *SPEC.feature_names, "label"]
    assert len(series) == payments["account_id"].nunique() * 24
    built = tsad_home.partition("series", "transactions", DAY) / "part-0.parquet"
    first = built.stat().st_mtime_ns
    steps.load_day(tsad_home, SPEC, DAY)
    assert built.stat().st_mtime_ns == first  # unchanged landing: not aggregated again
    payments.head(len(payments) // 2).to_parquet(landing / "part-0.parquet", index=False)
    halved = steps.load_day(tsad_home, SPEC, DAY)
    assert halved["label"].sum() <= series["label"].sum()
    assert pd.read_parquet(built)["entity"].nunique() == halved["entity"].nunique()
