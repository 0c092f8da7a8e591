"""Landed-batch validation: a clean day passes, and each way a batch breaks is named plainly."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DatasetSpec, FeatureSpec
from pipeline.data.validate import ValidationReport, build_suite, validate_batch

DAY = dt.date(2026, 1, 5)
PATIENTS = ("p1", "p2")
MINUTES = 1440


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return DatasetSpec.load("vitals")


@pytest.fixture(scope="module")
def clean(spec: DatasetSpec) -> pd.DataFrame:
    """Two patients by one day of minutes, every value well inside its bounds."""
    rng = np.random.default_rng(7)
    minutes = pd.date_range(DAY.isoformat(), periods=MINUTES, freq="1min", tz="UTC")
    rows = len(PATIENTS) * MINUTES
    features = {f.name: rng.uniform(f.min, f.max, rows).round(1) for f in spec.features}
    return pd.DataFrame(
        {
            "timestamp": np.tile(minutes, len(PATIENTS)),
            "patient_id": np.repeat(PATIENTS, MINUTES),
            **features,
            "label": rng.integers(0, 2, rows),
        }
    )


def failures_of(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """The failure lines of a batch that must fail."""
    report = validate_batch(frame, spec, DAY)
    assert not report.success
    assert report.failures
    return report.failures


def test_clean_batch_passes(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    report = validate_batch(clean, spec, DAY)

    assert report == ValidationReport(
        dataset="vitals",
        date=DAY,
        success=True,
        failures=[],
        n_rows=len(clean),
        result=report.result,
        warnings=[],
    )
    assert report.result["success"]


def test_missing_feature_column_is_named_once(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    assert failures_of(clean.drop(columns="heart_rate"), spec) == ["column 'heart_rate' missing"]


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_numbers_stored_as_text_fail(clean: pd.DataFrame, spec: DatasetSpec, dtype: str) -> None:
    frame = clean.assign(spo2=clean["spo2"].astype(str).astype(dtype))

    [line] = failures_of(frame, spec)

    assert line.startswith("spo2: ")
    assert "not numeric" in line


def test_values_out_of_bounds_are_counted(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.copy()
    frame.loc[:11, "heart_rate"] = 300.0

    assert failures_of(frame, spec) == ["heart_rate: 12 values outside [20, 250]"]


def test_duplicate_entity_timestamp_fails(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = pd.concat([clean, clean.head(10)], ignore_index=True)

    assert failures_of(frame, spec) == ["(patient_id, timestamp): 20 rows with a duplicated key"]


def test_timestamps_outside_the_day_fail(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.copy()
    frame.loc[:29, "timestamp"] -= pd.Timedelta(hours=1)

    assert failures_of(frame, spec) == ["timestamp: 30 rows outside 2026-01-05"]


def test_other_time_zones_are_converted_for_the_day(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.assign(timestamp=clean["timestamp"].dt.tz_convert("America/New_York"))

    assert validate_batch(frame, spec, DAY).success


@pytest.mark.parametrize(
    "timestamps",
    [
        pytest.param(lambda ts: ts.dt.tz_localize(None), id="naive"),
        pytest.param(lambda ts: ts.astype(str), id="text"),
        pytest.param(
            lambda ts: pd.Series(
                [t.tz_convert("Europe/Berlin") if i % 2 else t for i, t in enumerate(ts)],
                dtype=object,
            ),
            id="mixed-zones",
        ),
    ],
)
def test_timestamps_without_a_zone_fail(
    clean: pd.DataFrame, spec: DatasetSpec, timestamps: Callable[[pd.Series], pd.Series]
) -> None:
    lines = failures_of(clean.assign(timestamp=timestamps(clean["timestamp"])), spec)

    assert lines[0].startswith("timestamp: not timezone-aware UTC datetimes (dtype ")


def test_check_that_raises_is_reported_not_raised(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.assign(patient_id=[[pid] for pid in clean["patient_id"]])

    [line] = failures_of(frame, spec)

    assert line.startswith("(patient_id, timestamp): expect_compound_columns_to_be_unique could")
    assert "unhashable type: 'list'" in line


def test_too_few_rows_fail(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    assert failures_of(clean.head(100), spec) == ["table: 100 rows, expected 1440 to 720000"]


def test_too_many_nulls_fail(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.copy()
    frame.loc[: len(frame) // 20 - 1, "sys_bp"] = np.nan

    assert failures_of(frame, spec) == ["sys_bp: 144 nulls (5.00%), at most 2.00% allowed"]


def test_nulls_within_the_allowance_pass(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.copy()
    frame.loc[:9, "sys_bp"] = np.nan

    assert validate_batch(frame, spec, DAY).success


def test_labels_outside_zero_one_fail(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.copy()
    frame.loc[:2, "label"] = 2

    assert failures_of(frame, spec) == ["label: 3 values not in {0, 1}"]


def test_label_column_is_optional(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    assert validate_batch(clean.drop(columns="label"), spec, DAY).success


def test_extra_column_passes_with_a_warning(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    report = validate_batch(clean.assign(ward="icu"), spec, DAY)

    assert report.success
    assert report.warnings == ["unknown column 'ward' ignored"]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_input_frame_is_unchanged(clean: pd.DataFrame, spec: DatasetSpec, zone: str) -> None:
    frame = clean.assign(timestamp=clean["timestamp"].dt.tz_convert(zone))
    frame.loc[:4, "heart_rate"] = 999.0
    before = frame.copy(deep=True)

    validate_batch(frame, spec, DAY)

    pd.testing.assert_frame_equal(frame, before)


def test_report_round_trips_through_json(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    report = validate_batch(clean.drop(columns="temperature"), spec, DAY)

    loaded = json.loads(report.to_json())

    assert loaded["date"] == "2026-01-05"
    assert loaded["failures"] == report.failures == ["column 'temperature' missing"]
    assert loaded["success"] is False
    assert loaded["result"]["success"] is False


def test_dataset_without_entity_keys_on_timestamp() -> None:
    """Entity-less data with renamed source columns: uniqueness is on the timestamp alone."""
    spec = DatasetSpec(
        name="plant",
        frequency="1min",
        entity_source=None,
        label_column=None,
        features=[FeatureSpec(name="pressure", source="p_kpa", min=0, max=500)],
    )
    minutes = pd.date_range(DAY.isoformat(), periods=60, freq="1min", tz="UTC")
    frame = pd.DataFrame({"timestamp": minutes, "p_kpa": np.linspace(90.0, 110.0, 60)})
    repeated = pd.concat([frame, frame.head(3)], ignore_index=True)

    assert validate_batch(frame, spec, DAY).success
    assert failures_of(repeated, spec) == ["timestamp: 6 rows with a duplicated key"]


def test_suite_depends_only_on_spec_and_date(spec: DatasetSpec) -> None:
    first, second = build_suite(spec, DAY), build_suite(spec, DAY)

    assert [e.configuration for e in first.expectations] == [
        e.configuration for e in second.expectations
    ]
    assert first.name == "vitals-2026-01-05"


def test_infinities_are_named(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    frame = clean.assign(sys_bp=clean["sys_bp"].where(clean.index >= 3, np.inf))
    assert "sys_bp: 3 infinite values" in failures_of(frame, spec)


def test_out_of_order_rows_pass_with_a_note(clean: pd.DataFrame, spec: DatasetSpec) -> None:
    shuffled = pd.concat([clean.iloc[:10].iloc[::-1], clean.iloc[10:]], ignore_index=True)
    report = validate_batch(shuffled, spec, DAY)
    assert report.success
    assert report.warnings == ["timestamp: 9 rows out of time order (sorted before scoring)"]


def test_the_report_carries_gx_data_docs_outside_its_json(
    clean: pd.DataFrame, spec: DatasetSpec
) -> None:
    broken = clean.drop(columns=["spo2"])
    report = validate_batch(broken, spec, DAY)

    page = report.data_docs
    assert page.startswith("<!DOCTYPE html>") and "Great Expectations" in page
    assert "spo2" in page and "heart_rate" in page  # the failed check and a passed one
    assert "data_docs" not in json.loads(report.to_json())
