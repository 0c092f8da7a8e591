"""A registered version tells its lineage through the MLflow client, the way MLflow 3 records it.

The data each split was read from (source and digest), the loss curves, the evaluation metrics on
the logged model and the promotion decision are what a reviewer reads in the MLflow UI; these
tests read them through the same client API.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from ward import Ward, trained_ward
from ward import day as ward_day

from pipeline import tracking
from pipeline.config import Settings


@pytest.fixture(scope="module")
def ward(module_home: Settings) -> Ward:
    return trained_ward(module_home)


@pytest.fixture(scope="module")
def client(ward: Ward) -> mlflow.MlflowClient:
    return tracking.connect(ward.settings)


def production(ward: Ward, client: mlflow.MlflowClient):
    return client.get_model_version_by_alias(ward.registered["name"], tracking.PRODUCTION)


def test_each_split_is_a_dataset_input_with_its_source_digest_and_days(ward, client):
    inputs = client.get_run(ward.registered["run_id"]).inputs.dataset_inputs
    by_context = {
        tag.value: item for item in inputs for tag in item.tags if tag.key == "mlflow.data.context"
    }
    assert set(by_context) == {"training", "validation", "testing"}
    training = by_context["training"]
    assert training.dataset.name == "vitals-training"
    assert len(training.dataset.digest) >= 8
    assert str(ward.run_dir / "prepared" / "train.npz") in training.dataset.source
    days = {tag.key: tag.value for tag in training.tags}["days"]
    assert days == "2026-01-01..2026-01-02"
    digests = {item.dataset.digest for item in by_context.values()}
    assert len(digests) == 3  # different days, different data


def test_loss_curves_are_step_metrics_and_the_stopping_epoch_is_recorded(ward, client):
    history = json.loads((ward.run_dir / "history.json").read_text())
    run_id = ward.registered["run_id"]
    train = client.get_metric_history(run_id, "train_loss")
    assert [point.step for point in train] == list(range(1, len(history["train_loss"]) + 1))
    assert [point.value for point in train] == pytest.approx(history["train_loss"])
    assert len(client.get_metric_history(run_id, "valid_loss")) == len(history["valid_loss"]) > 0
    metrics = client.get_run(run_id).data.metrics
    assert metrics["best_epoch"] == history["best_epoch"] >= 1
    assert metrics["stopped_epoch"] == len(history["train_loss"])


def test_the_precision_training_ran_in_is_a_run_parameter(ward, client):
    history = json.loads((ward.run_dir / "history.json").read_text())
    params = client.get_run(ward.registered["run_id"]).data.params
    assert params["training_precision"] == history["precision"]
    assert history["precision"] in {"fp32", "bf16"}


def test_evaluation_metrics_are_linked_to_the_logged_model(ward, client):
    version = production(ward, client)
    evaluated = json.loads((ward.run_dir / "evaluation" / "metrics.json").read_text())
    model = mlflow.get_logged_model(tracking.logged_model_id(version))
    logged = {metric.key: metric for metric in model.metrics}
    assert logged["auc_pr"].value == pytest.approx(evaluated["auc_pr"])
    assert logged["vus_pr"].dataset_name == "vitals-testing"
    assert float(version.tags["metric.auc_pr"]) == pytest.approx(evaluated["auc_pr"], rel=1e-5)


def test_the_gate_decision_is_a_run_linked_from_the_version(ward, client):
    version = production(ward, client)
    gate = client.get_run(version.tags["gate.run_id"])
    metric = ward.promotion.metric
    assert gate.data.metrics[f"challenger.{metric}"] == pytest.approx(ward.promotion.challenger)
    assert gate.data.tags["gate.decision"] == "promoted"
    assert gate.data.tags["challenger_version"] == str(version.version)
    compared = [model.model_id for model in gate.inputs.model_inputs]
    assert compared == [tracking.logged_model_id(version)]


def test_each_validation_has_data_docs_beside_its_report_and_on_the_run(ward, client):
    validation = ward.settings.partition("validation", "vitals", ward_day(0))
    page = (validation / "report.html").read_text()
    assert "Great Expectations" in page and "heart_rate" in page
    assert (validation / "report.json").is_file()
    logged = client.list_artifacts(ward.registered["run_id"], "data_docs")
    assert [Path(item.path).name for item in logged] == [
        f"date={ward_day(offset).isoformat()}.html" for offset in range(4)
    ]
