"""Each pipeline step on a small synthetic ward: three patients, one training epoch."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from ward import FIRST_DAY, day, small_run, trained_ward

from pipeline import steps, tracking
from pipeline.config import DatasetSpec, Settings
from pipeline.scoring import ModelMismatchError

FEATURES = DatasetSpec.load("vitals").feature_names


@pytest.fixture(scope="module")
def ward(module_home: Settings):
    """Six days of data for three patients and one trained, registered, promoted model."""
    trained = trained_ward(module_home)
    return trained.settings, trained.run_dir, trained.registered, trained.promotion


def landing_file(settings: Settings, date: dt.date) -> Path:
    return settings.partition("landing", "vitals", date) / "part-0.parquet"


def test_prepare_fits_the_scaler_on_training_days_only(ward):
    settings, run_dir, *_ = ward
    scaler = json.loads((run_dir / "bundle" / "scaler.json").read_text())
    train = pd.concat(pd.read_parquet(landing_file(settings, day(i))) for i in range(2))
    np.testing.assert_allclose(scaler["mean"][0], train["heart_rate"].mean(), rtol=1e-4)
    with np.load(run_dir / "prepared" / "test.npz") as test:
        assert len(test["values"]) == 3 * 1440 and "labels" in test


def test_training_writes_per_epoch_checkpoints_and_a_bundle(ward):
    _, run_dir, *_ = ward
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "bundle" / "detector" / "config.json").is_file()


def test_calibration_and_evaluation_use_their_own_days(ward):
    _, run_dir, *_ = ward
    calibration = json.loads((run_dir / "bundle" / "calibration.json").read_text())
    assert calibration["method"] == "best_f1" and calibration["threshold"] > 0
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "auc_roc", "auc_pr", "vus_pr"} <= set(metrics)
    assert metrics["auc_roc"] > 0.6
    assert (run_dir / "evaluation" / "test_scores.png").stat().st_size > 10_000


def test_event_f1_calibration_targets_episodes_and_reports_them_at_the_budget(ward, tmp_path):
    """The same trained detector calibrated for episodes: the rule comes from the dataset
    spec, and the validation days' episode precision and recall are reported, uncapped and
    at a budget of one episode a day."""
    _, run_dir, *_ = ward
    copied = Path(shutil.copytree(run_dir, tmp_path / "run"))
    config = json.loads((copied / "run.json").read_text()) | {"calibration": "event_f1"}
    (copied / "run.json").write_text(json.dumps(config))
    spec_file = copied / "bundle" / "spec.yaml"
    spec = DatasetSpec.load("vitals").model_dump(mode="json")
    spec["alarms"] = {"max_episodes_per_day": 1, "budget_per": "dataset"}
    spec_file.write_text(yaml.safe_dump(spec))

    steps.evaluate(steps.calibrate(str(copied)))

    calibration = json.loads((copied / "bundle" / "calibration.json").read_text())
    assert calibration["method"] == "event_f1"
    assert calibration["params"] == {"gap_steps": 5, "min_steps": 3}
    report = json.loads((copied / "evaluation" / "calibration_report.json").read_text())
    assert report["threshold"] == calibration["threshold"]
    assert 0 < report["episode_f1"] <= 1
    capped = report["at_budget"]
    assert capped["max_episodes_per_day"] == 1 and capped["episodes"] >= 1
    assert capped["episodes_held_back"] == capped["episodes"] - 1  # one validation day
    assert capped["recall"] <= report["episode_recall"]
    metrics = json.loads((copied / "evaluation" / "metrics.json").read_text())
    assert {"episode_precision", "episode_recall", "episode_f1"} <= set(metrics)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a worker without CUDA")
def test_a_run_trained_on_a_gpu_worker_is_calibrated_and_evaluated_on_a_cpu_worker(ward, tmp_path):
    _, run_dir, *_ = ward
    copied = Path(shutil.copytree(run_dir, tmp_path / "run"))
    # As the GPU worker's training step records it: the device it was told to train on.
    config_file = copied / "bundle" / "detector" / "config.json"
    saved = json.loads(config_file.read_text())
    saved["config"]["device"] = "cuda"
    config_file.write_text(json.dumps(saved))

    steps.evaluate(steps.calibrate(str(copied)))

    expected = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert json.loads((copied / "evaluation" / "metrics.json").read_text()) == expected


def test_register_records_threshold_metrics_and_aliases(ward):
    settings, _, registered, promotion = ward
    client = tracking.connect(settings)
    version = client.get_model_version_by_alias(registered["name"], "production")
    assert str(version.version) == str(registered["version"])
    assert float(version.tags["threshold"]) > 0
    assert {"metric.auc_pr", "metric.f1"} <= set(version.tags)
    assert promotion.promoted and promotion.reason == "no production version yet"


def test_score_gives_every_row_a_score_and_reruns_replace(ward):
    settings, *_ = ward
    path = Path(steps.score("vitals", day(4), settings))
    first = pd.read_parquet(path)
    first_episodes = pd.read_parquet(path.with_name("alarms.parquet"))
    landed = pd.read_parquet(landing_file(settings, day(4)))
    assert len(first) == len(landed)
    assert list(first.columns) == [
        "timestamp",
        "entity",
        "score",
        "threshold",
        "is_anomaly",
        "top_features",
        "contributions",
        "model_name",
        "model_version",
        "flags",
    ]
    assert first["score"].notna().all()
    assert (first["flags"] == "").all()  # a clean day after a validated one: nothing to note
    assert first["timestamp"].min() == pd.Timestamp(day(4), tz="UTC")
    steps.score("vitals", day(4), settings)
    pd.testing.assert_frame_equal(pd.read_parquet(path), first)
    pd.testing.assert_frame_equal(pd.read_parquet(path.with_name("alarms.parquet")), first_episodes)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "alarms.parquet",
        "report.html",
        "scores.parquet",
        "summary.json",
    ]


def test_previous_day_supplies_window_context(ward):
    settings, *_ = ward
    production = tracking.load_production_model(settings, "vitals")
    spec = production.bundle.spec
    today = steps.load_day(settings, spec, day(5))
    yesterday = steps.load_day(settings, spec, day(4))
    alone = production.bundle.score_frame(today)
    with_context = production.bundle.score_frame(today, yesterday)
    assert len(alone) == len(with_context) == len(today)
    first_minutes = with_context["timestamp"] < pd.Timestamp(day(5), tz="UTC") + pd.Timedelta(
        minutes=10
    )
    assert not np.allclose(alone["score"][first_minutes], with_context["score"][first_minutes])


def test_a_broken_day_is_quarantined_and_nothing_is_scored(ward):
    # A day of its own, landed here: the days other tests read stay as generated, whatever
    # the order the tests run in.
    settings, *_ = ward
    broken = day(7)
    frame = pd.read_parquet(landing_file(settings, day(4)))
    frame["timestamp"] += pd.Timedelta(days=3)
    source = landing_file(settings, broken)
    source.parent.mkdir(parents=True)
    frame.drop(columns=["spo2"]).to_parquet(source, index=False)
    original = source.read_bytes()
    with pytest.raises(steps.BatchRejected, match="column 'spo2' missing"):
        steps.score("vitals", broken, settings)
    quarantine = settings.partition("quarantine", "vitals", broken)
    report = json.loads((quarantine / "validation_report.json").read_text())
    assert report["success"] is False
    assert "spo2" in (quarantine / "validation_report.html").read_text()  # GX Data Docs
    assert (quarantine / "part-0.parquet").read_bytes() == original
    assert source.read_bytes() == original
    assert not settings.partition("scores", "vitals", broken).exists()


def test_a_model_for_other_features_is_refused(ward):
    settings, *_ = ward
    bundle = tracking.load_production_model(settings, "vitals").bundle
    other = bundle.spec.model_copy(update={"features": bundle.spec.features[:-1]})
    with pytest.raises(ModelMismatchError, match="expects features"):
        bundle.check_compatible(other)


def test_scoring_without_a_production_model_is_a_clear_error(tsad_home):
    with pytest.raises(tracking.ModelNotFoundError, match="no @production version"):
        steps.score("vitals", "2026-01-05", tsad_home)


def test_training_refuses_a_stuck_sensor_even_with_float_jitter(tsad_home):
    """A value that moves by less than the scaler's floor is constant to the model too."""
    settings = tsad_home
    config = small_run()
    days = steps.run_days(config)
    steps.generate(
        start=FIRST_DAY, days=len(days), patients=2, labeled_from=day(2), settings=settings
    )
    jitter = np.random.default_rng(0)
    for date in days:
        landed = pd.read_parquet(landing_file(settings, date))
        landed["temperature"] = 37.0 + 1e-10 * jitter.standard_normal(len(landed))
        landed.to_parquet(landing_file(settings, date), index=False)
    steps.validate_days("vitals", days, settings)

    with pytest.raises(steps.TrainingDataRejected, match="temperature=37"):
        steps.prepare(config, settings)


def test_every_alarm_names_the_features_that_drive_it(ward):
    settings, *_ = ward
    scores = pd.read_parquet(steps.score("vitals", day(4), settings))
    spec = tracking.load_production_model(settings, "vitals").bundle.spec
    alarms = scores[scores["is_anomaly"]]
    assert len(alarms) > 0
    for names, shares in zip(alarms["top_features"], alarms["contributions"], strict=True):
        assert len(names) == spec.monitoring.top_features == len(shares)
        assert set(names) <= set(spec.feature_names)
        assert list(shares) == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-6
    quiet = scores[~scores["is_anomaly"]]
    assert quiet["top_features"].isna().all() and quiet["contributions"].isna().all()


def test_scoring_writes_the_report_and_logs_it_with_drift_to_mlflow(ward):
    settings, *_ = ward
    path = Path(steps.score("vitals", day(4), settings))
    report = (path.parent / "report.html").read_text()
    assert "Daily anomaly report: vitals" in report and "data:image/png;base64," in report
    summary = json.loads((path.parent / "summary.json").read_text())
    assert set(summary["drift"]["feature_psi"]) == set(FEATURES)
    client = tracking.connect(settings)
    experiment = client.get_experiment_by_name("tsad-vitals-scoring")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert "report.html" in {item.path for item in client.list_artifacts(run.info.run_id)}
    validation = client.list_artifacts(run.info.run_id, "validation")
    assert {item.path for item in validation} == {
        "validation/report.html",
        "validation/report.json",
    }
    assert run.data.metrics["score_psi"] == pytest.approx(summary["drift"]["score_psi"])
    assert {f"psi.{name}" for name in FEATURES} <= set(run.data.metrics)
    assert steps.drift_status(str(path))["drifted"] == summary["drift"]["drifted"]


def test_a_shifted_day_is_marked_drifted(ward):
    settings, *_ = ward
    shifted_day = day(6)
    frame = pd.read_parquet(landing_file(settings, day(4)))
    frame["timestamp"] += pd.Timedelta(days=2)
    frame["heart_rate"] += 40.0
    target = landing_file(settings, shifted_day)
    target.parent.mkdir(parents=True)
    frame.to_parquet(target, index=False)
    status = steps.drift_status(steps.score("vitals", shifted_day, settings))
    assert status["drifted"] and status["drifted_features"][0] == "heart_rate"
    report = (settings.partition("scores", "vitals", shifted_day) / "report.html").read_text()
    assert "Drift beyond PSI 0.25" in report and "heart_rate" in report
