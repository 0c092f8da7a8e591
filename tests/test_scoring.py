"""Scoring a day: streamed from its partition in chunks of entities, equal to in-memory scoring."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.calibration import make_calibrator
from pipeline.config import DatasetSpec
from pipeline.data import flags, io
from pipeline.data.synthetic import ENTITY_COLUMN, VitalsScenario, generate_vitals
from pipeline.data.windows import StandardScaler, frame_to_segments
from pipeline.detectors.registry import detector_class
from pipeline.scoring import ModelBundle

START = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def days() -> list[pd.DataFrame]:
    """Three days of five patients, each day's rows in time order (patients interleaved)."""
    scenario = VitalsScenario(n_patients=5, start=START, n_days=3, labeled_from=START, seed=3)
    frames = generate_vitals(scenario).values()
    return [frame.sort_values(["timestamp", ENTITY_COLUMN], kind="stable") for frame in frames]


@pytest.fixture(scope="module")
def bundle(days: list[pd.DataFrame]) -> ModelBundle:
    """A small dense autoencoder fitted on the first day, with a fixed threshold."""
    spec = DatasetSpec.load("vitals")
    segments, _ = frame_to_segments(io.to_canonical(days[0], spec), spec.feature_names, spec.step)
    scaler = StandardScaler.fit(segments.values, spec.feature_names)
    scaled = type(segments)(scaler.transform(segments.values), segments.bounds)
    detector = detector_class("dense_ae")(window=16, epochs=1, train_stride=8, device="cpu").fit(
        scaled
    )
    calibration = make_calibrator("percentile").fit(detector.score(scaled)).to_dict()
    return ModelBundle(spec, scaler, detector, calibration)


def landed(directory: Path, frame: pd.DataFrame, parts: int) -> Path:
    """Write ``frame`` as a partition of ``parts`` Parquet files, plus a column nobody reads."""
    directory.mkdir(parents=True)
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    for index, (begin, end) in enumerate(itertools.pairwise(bounds)):
        part = frame.iloc[begin:end].assign(note="free text")
        part.to_parquet(directory / f"part-{index}.parquet", index=False)
    return directory


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

    today_rows = io.to_canonical(days[2], bundle.spec)
    previous_rows = io.to_canonical(days[1], bundle.spec)
    expected = bundle.score_frame(today_rows, previous_rows)
    notes = flags.row_flags(today_rows, previous_rows, None, bundle.spec.step, bundle.window)
    written = pd.read_parquet(target)
    assert written["model_version"].eq("7").all()
    pd.testing.assert_frame_equal(
        written.drop(columns="model_version"),
        flags.annotate(expected, notes),
        check_dtype=False,
        rtol=1e-6,
    )
    assert (totals.rows, totals.entities) == (len(days[2]), 5)
    assert totals.anomalies == int(expected["is_anomaly"].sum())
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.parquet"]


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
