"""Scoring a day: streamed from its partition in chunks of entities, equal to in-memory scoring."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import budget, daily, episodes, monitoring, tracking
from pipeline.calibration import make_calibrator
from pipeline.config import DatasetSpec
from pipeline.data import flags, io
from pipeline.data.synthetic import ENTITY_COLUMN, VitalsScenario, generate_vitals
from pipeline.data.windows import StandardScaler, frame_to_segments
from pipeline.detectors.base import Detector
from pipeline.detectors.registry import detector_class
from pipeline.monitoring import ReferenceProfile
from pipeline.report import DailyReport, entity_ranking, render
from pipeline.scoring import ModelBundle

START = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def days() -> list[pd.DataFrame]:
    """Three days of five patients, each day's rows in time order (patients interleaved)."""
    scenario = VitalsScenario(n_patients=5, start=START, n_days=3, labeled_from=START, seed=3)
    frames = generate_vitals(scenario).values()
    return [frame.sort_values(["timestamp", ENTITY_COLUMN], kind="stable") for frame in frames]


def fitted_bundle(day: pd.DataFrame, detector: Detector) -> ModelBundle:
    """``detector`` fitted on ``day``, with a percentile threshold."""
    spec = DatasetSpec.load("vitals")
    segments, _ = frame_to_segments(io.to_canonical(day, spec), spec.feature_names, spec.step)
    scaler = StandardScaler.fit(segments.values, spec.feature_names)
    scaled = type(segments)(scaler.transform(segments.values), segments.bounds)
    detector.fit(scaled)
    calibrator = make_calibrator("percentile").fit(detector.score(scaled))
    return ModelBundle(spec, scaler, detector, calibrator)


@pytest.fixture(scope="module")
def bundle(days: list[pd.DataFrame]) -> ModelBundle:
    """A small dense autoencoder fitted on the first day, with a fixed threshold."""
    detector = detector_class("dense_ae")(window=16, epochs=1, train_stride=8, device="cpu")
    return fitted_bundle(days[0], detector)


def landed(directory: Path, frame: pd.DataFrame, parts: int) -> Path:
    """Write ``frame`` as a partition of ``parts`` Parquet files, plus a column nobody reads."""
    directory.mkdir(parents=True)
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    for index, (begin, end) in enumerate(itertools.pairwise(bounds)):
        part = frame.iloc[begin:end].assign(note="free text")
        part.to_parquet(directory / f"part-{index}.parquet", index=False)
    return directory


def scored_in_memory(
    bundle: ModelBundle, today: pd.DataFrame, previous: pd.DataFrame, **constants: str
) -> pd.DataFrame:
    """Landed ``today`` scored whole in memory with ``previous`` as context, then flagged:
    the rows streaming must write."""
    frame = io.to_canonical(today, bundle.spec)
    context = io.to_canonical(previous, bundle.spec)
    scores = bundle.score_frame(frame, context).assign(**constants)
    notes = flags.row_flags(frame, context, bundle.entities, bundle.spec.step, bundle.window)
    return flags.annotate(scores, notes)


@pytest.mark.parametrize("entities_per_chunk", [1, 2, 64])
def test_streamed_partition_scores_equal_in_memory_scores(
    tmp_path: Path, days: list[pd.DataFrame], bundle: ModelBundle, entities_per_chunk: int
) -> None:
    previous = landed(tmp_path / "previous", days[1], parts=1)
    today = landed(tmp_path / "today", days[2], parts=3)
    target = tmp_path / "scores" / "scores.parquet"

    totals = bundle.score_partition(
        today,
        target,
        context=previous,
        constants={"model_version": "7"},
        entities_per_chunk=entities_per_chunk,
    )

    expected = scored_in_memory(bundle, days[2], days[1])
    written = pd.read_parquet(target)
    assert written["model_version"].eq("7").all()
    pd.testing.assert_frame_equal(
        written.drop(columns="model_version"), expected, check_dtype=False, rtol=1e-6
    )
    assert (totals.rows, totals.entities) == (len(days[2]), 5)
    assert totals.anomalies == int(expected["is_anomaly"].sum())
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.parquet"]


def test_context_read_from_a_window_before_the_day_gives_the_same_scores_and_flags(
    tmp_path: Path, days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    """Context rows more than a window before the day are skipped, even when an entity's
    previous day ends early or breaks off shortly before midnight."""
    midnight = pd.Timestamp(START + dt.timedelta(days=2), tz="UTC")
    before = days[1].assign(timestamp=pd.to_datetime(days[1]["timestamp"], utc=True))
    patients = sorted(before[ENTITY_COLUMN].unique())
    ends_early = (before[ENTITY_COLUMN] == patients[0]) & (
        before["timestamp"] >= midnight - pd.Timedelta(hours=3)
    )
    breaks_off = (before[ENTITY_COLUMN] == patients[1]) & before["timestamp"].between(
        midnight - pd.Timedelta(minutes=10), midnight - pd.Timedelta(minutes=6)
    )
    previous_frame = before[~(ends_early | breaks_off)]
    previous = landed(tmp_path / "previous", previous_frame, parts=1)
    today = landed(tmp_path / "today", days[2], parts=2)
    target = tmp_path / "scores.parquet"

    bundle.score_partition(today, target, context=previous, day_start=midnight)

    expected = scored_in_memory(bundle, days[2], previous_frame)
    pd.testing.assert_frame_equal(pd.read_parquet(target), expected, check_dtype=False, rtol=1e-6)


def test_output_is_sorted_by_entity_then_time_whatever_the_landing_order(
    days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    frame = io.to_canonical(days[2], bundle.spec)
    scores = bundle.score_frame(frame.sample(frac=1.0, random_state=0), entities_per_chunk=2)
    assert scores.equals(scores.sort_values(["entity", "timestamp"], ignore_index=True))
    chunked = bundle.score_frame(frame, entities_per_chunk=1)
    whole = bundle.score_frame(frame, entities_per_chunk=1000)
    pd.testing.assert_frame_equal(chunked, whole)
    pd.testing.assert_frame_equal(scores, whole)


def test_streaming_reads_only_the_columns_a_model_needs(
    tmp_path: Path, days: list[pd.DataFrame]
) -> None:
    spec = DatasetSpec.load("vitals")
    partition = landed(tmp_path / "day", days[2], parts=2)
    batches = list(io.read_batches(partition, io.scoring_columns(spec)))
    assert set(batches[0].columns) == {"timestamp", ENTITY_COLUMN, *spec.feature_names}
    assert sum(len(batch) for batch in batches) == len(days[2])
    assert io.partition_entities(partition, spec).tolist() == sorted(
        days[2][ENTITY_COLUMN].unique()
    )


def in_memory_day(
    bundle: ModelBundle, today: Path, previous: Path, out: Path
) -> tuple[pd.DataFrame, dict, str]:
    """Scores, summary and report of a day held whole in memory: what streaming must equal."""
    spec = bundle.spec
    landed_today = io.read_partition(today)
    scores = scored_in_memory(
        bundle,
        landed_today,
        io.read_partition(previous),
        model_name="tsad-vitals",
        model_version="3",
    )
    frame = io.to_canonical(landed_today, spec)
    standardised = frame[["timestamp", "entity"]].copy()
    standardised[spec.feature_names] = bundle.scaler.transform(frame[spec.feature_names].to_numpy())
    day_drift = monitoring.drift(
        bundle.profile,
        standardised[spec.feature_names].to_numpy(),
        scores["score"].to_numpy(),
        bundle.threshold,
        spec.monitoring.drift_level,
    )
    found = budget.apply_budget(
        episodes.day_episodes(
            scores.loc[scores["is_anomaly"], episodes.ALARM_ROW_COLUMNS],
            episodes.EpisodeRule.for_spec(spec),
            spec.monitoring.top_features,
            pd.Timestamp(START, tz="UTC"),
        ),
        spec.alarms.max_episodes_per_day,
        spec.alarms.budget_per,
    )
    page = render(
        DailyReport(
            dataset=spec.name,
            date=START.isoformat(),
            model_name="tsad-vitals",
            model_version="3",
            threshold=bundle.threshold,
            rows=len(scores),
            alarms=int(scores["is_anomaly"].sum()),
            ranking=entity_ranking(scores, spec.step),
            scores=scores,
            standardised=standardised,
            drift=day_drift,
            entities_plotted=spec.monitoring.report_entities,
            episodes=found,
            budget=spec.alarms.max_episodes_per_day,
        )
    )
    summary = {
        "dataset": spec.name,
        "date": START.isoformat(),
        "rows": len(scores),
        "entities": int(scores["entity"].nunique()),
        "anomalies": int(scores["is_anomaly"].sum()),
        "anomaly_rate": float(scores["is_anomaly"].mean()),
        "alarm_minutes": float(scores["is_anomaly"].sum()),
        "episodes": len(found),
        "episodes_held_back": budget.held_back(found),
        "threshold": bundle.threshold,
        "model_name": "tsad-vitals",
        "model_version": "3",
        "flagged_rows": flags.counts(scores[flags.FLAGS]),
        "drift": day_drift.to_dict(),
    }
    return pd.read_parquet(io.write_parquet_atomic(scores, out / "scores.parquet")), summary, page


def test_the_streamed_scoring_step_equals_the_day_scored_in_memory(
    tmp_path: Path, days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    """Rows, flags, attributions, summary (drift included) and report, chunk by chunk."""
    previous_day, today_day = days[1], days[2].reset_index(drop=True)
    patients = sorted(today_day[ENTITY_COLUMN].unique())
    # The last patient is new today (no context, unseen in training), the first lost an hour
    # of readings (a gap), and two of the second's rows landed swapped (out of order).
    previous_day = previous_day[previous_day[ENTITY_COLUMN] != patients[-1]]
    first = today_day.index[today_day[ENTITY_COLUMN] == patients[0]]
    today_day = today_day.drop(first[600:660])
    second = today_day.index[today_day[ENTITY_COLUMN] == patients[1]]
    order = today_day.index.to_numpy().copy()
    swap = [order.tolist().index(second[100]), order.tolist().index(second[101])]
    order[swap] = order[swap[::-1]]
    today_day = today_day.loc[order]
    day_rows = io.to_canonical(today_day, bundle.spec)
    scaled = bundle.scaler.transform(day_rows[bundle.spec.feature_names].to_numpy())
    model = replace(
        bundle,
        profile=ReferenceProfile.build(
            bundle.spec.feature_names, scaled, bundle.score_segments(day_rows), bundle.threshold
        ),
        entities=frozenset(patients[:-1]),
    )
    model.score_partition = partial(ModelBundle.score_partition, model, entities_per_chunk=2)
    today = landed(tmp_path / "today", today_day, parts=3)
    previous = landed(tmp_path / "previous", previous_day, parts=2)

    summary = daily.score_landed(
        model, model.spec, START, today, previous, tmp_path / "out", "tsad-vitals", "3"
    )

    scores, expected_summary, expected_page = in_memory_day(
        model, today, previous, tmp_path / "memory"
    )
    assert (
        scores["is_anomaly"].any()
        and (scores["is_anomaly"].groupby(scores["entity"]).sum() > 0).sum() > 1
    )
    assert set(expected_summary["flagged_rows"]) == {
        flags.OUT_OF_ORDER,
        flags.UNSEEN_ENTITY,
        flags.AFTER_GAP,
    }
    # Streamed scores keep nanosecond timestamps, whatever unit the landed files used.
    expected_scores = scores.assign(timestamp=scores["timestamp"].dt.as_unit("ns"))
    written = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    pd.testing.assert_frame_equal(written, expected_scores)
    assert summary == expected_summary
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == expected_summary
    assert (tmp_path / "out" / "report.html").read_text() == expected_page


def test_a_day_without_alarms_gets_its_scores_report_and_summary(
    tmp_path: Path, days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    quiet = replace(bundle, calibrator=make_calibrator("percentile").fit([1e12]))
    today = landed(tmp_path / "today", days[2], parts=1)

    summary = daily.score_landed(
        quiet, quiet.spec, START, today, None, tmp_path / "out", "tsad-vitals", "1"
    )

    assert summary["anomalies"] == 0 and summary["rows"] == len(days[2])
    assert len(pd.read_parquet(tmp_path / "out" / "scores.parquet")) == len(days[2])
    assert "No alarms today." in (tmp_path / "out" / "report.html").read_text()


def test_only_each_entitys_last_window_of_context_reaches_the_scores(
    days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    """Scoring keeps the last ``window - 1`` earlier rows of each entity: the full previous
    day scores as that tail does, and a shorter tail changes the day's first scores."""
    frame = io.to_canonical(days[2], bundle.spec)
    context = io.to_canonical(days[1], bundle.spec).sample(frac=1.0, random_state=1)
    ordered = context.sort_values(["entity", "timestamp"], kind="stable")

    def tail(rows: int) -> pd.DataFrame:
        return ordered.groupby("entity", sort=False).tail(rows)

    full = bundle.score_frame(frame, context, entities_per_chunk=2)
    pd.testing.assert_frame_equal(full, bundle.score_frame(frame, tail(bundle.window - 1)))
    shorter = bundle.score_frame(frame, tail(bundle.window - 2))
    assert not np.allclose(full["score"], shorter["score"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a worker without CUDA")
def test_a_model_trained_on_a_gpu_scores_on_a_cpu_worker(
    tmp_path: Path, days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    """The registered MLflow model, as a scoring worker loads it, runs on the worker's device."""
    bundle_dir = bundle.save(tmp_path / "bundle")
    # As a GPU training run records it: the device it was told to train on.
    config_file = bundle_dir / "detector" / "config.json"
    saved = json.loads(config_file.read_text())
    saved["config"]["device"] = "cuda"
    config_file.write_text(json.dumps(saved))
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=str(tracking.PACKAGED_MODEL),
        artifacts={"bundle": str(bundle_dir)},
    )
    frame = io.to_canonical(days[2], bundle.spec)

    scores = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(frame)

    assert len(scores) == len(frame)
    pd.testing.assert_series_equal(scores["score"], bundle.score_frame(frame)["score"])


def test_an_ensemble_scores_a_day_with_its_widest_members_context(
    tmp_path: Path, days: list[pd.DataFrame]
) -> None:
    """The ensemble's context is its widest member's window (PCA here scores single rows)."""
    members = [
        {"detector": "pca"},
        {"detector": "dense_ae", "params": {"window": 16, "epochs": 1, "train_stride": 8}},
    ]
    ensemble = detector_class("ensemble")(members=members, device="cpu")
    bundle = fitted_bundle(days[0], ensemble)
    assert bundle.window == 16
    target = tmp_path / "scores.parquet"
    previous = landed(tmp_path / "previous", days[1], parts=1)
    bundle.score_partition(landed(tmp_path / "today", days[2], parts=2), target, context=previous)
    written = pd.read_parquet(target)
    expected = scored_in_memory(bundle, days[2], days[1])
    pd.testing.assert_frame_equal(written, expected, check_dtype=False, rtol=1e-6)
    assert np.isfinite(written["score"]).all() and written["is_anomaly"].any()
    assert written.loc[written["is_anomaly"], "top_features"].map(len).gt(0).all()


def test_each_scored_day_writes_its_episodes_and_one_crossing_midnight_keeps_its_id(
    tmp_path: Path, days: list[pd.DataFrame], bundle: ModelBundle
) -> None:
    """Every row alarms: each patient is one episode; the one that alarmed in the last minutes
    of the previous day's scores continues that episode, start and id included."""
    restless = replace(bundle, calibrator=make_calibrator("percentile").fit([-1e12, -1e11]))
    today = landed(tmp_path / "today", days[2], parts=1)
    third_day = START + dt.timedelta(days=2)
    midnight = pd.Timestamp(third_day, tz="UTC")
    patients = sorted(io.to_canonical(days[2], bundle.spec)["entity"].unique())
    yesterday = pd.DataFrame(
        {
            "timestamp": [midnight - pd.Timedelta(minutes=m) for m in (2, 1, 30)],
            "entity": [patients[0], patients[0], patients[1]],
            "score": 1.0,
            "is_anomaly": True,
            "top_features": [["spo2"]] * 3,
            "model_version": "2",
        }
    )
    previous = tmp_path / "previous" / "scores.parquet"
    previous.parent.mkdir()
    yesterday.to_parquet(previous)

    def scored(out: str) -> pd.DataFrame:
        summary = daily.score_landed(
            restless, restless.spec, third_day, today, None, tmp_path / out, "m", "3", previous
        )
        assert summary["episodes"] == len(patients) and summary["episodes_held_back"] == 0
        assert summary["alarm_minutes"] == summary["anomalies"] == len(days[2])
        return pd.read_parquet(tmp_path / out / "alarms.parquet")

    found = scored("first").set_index("entity")
    assert found.loc[patients[0], "start"] == midnight - pd.Timedelta(minutes=2)
    assert found.loc[patients[0], "episode_id"] == episodes.episode_id(
        patients[0], midnight - pd.Timedelta(minutes=2)
    )
    assert found["continued"].tolist() == [entity == patients[0] for entity in found.index]
    assert (found.drop(index=patients[0])["start"] == midnight).all()
    assert (found["model_version"] == "3").all()
    pd.testing.assert_frame_equal(scored("rerun").set_index("entity"), found)
    report = (tmp_path / "first" / "report.html").read_text()
    assert "Alarm episodes" in report and found["episode_id"].iloc[0] in report
