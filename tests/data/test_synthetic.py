"""The synthetic vitals generator: shape, spec conformance, labels, realism, determinism."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.config import LABEL, TIMESTAMP, DatasetSpec
from pipeline.data.synthetic import (
    ANOMALY_KINDS,
    ENTITY_COLUMN,
    FEATURES,
    MINUTES_PER_DAY,
    InjectedAnomaly,
    VitalsScenario,
    generate_vitals,
    plan_anomalies,
)

SCENARIO = VitalsScenario(
    start=dt.date(2024, 3, 1), n_days=6, labeled_from=dt.date(2024, 3, 3), seed=7
)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return DatasetSpec.load("vitals")


@pytest.fixture(scope="module")
def frames() -> dict[dt.date, pd.DataFrame]:
    return generate_vitals(SCENARIO)


@pytest.fixture(scope="module")
def anomalies() -> list[InjectedAnomaly]:
    return plan_anomalies(SCENARIO)


@pytest.fixture(scope="module")
def series(frames: dict[dt.date, pd.DataFrame], anomalies: list[InjectedAnomaly]) -> pd.DataFrame:
    """All days back to back per patient, with where the anomalies are."""
    joined = pd.concat(frames.values(), ignore_index=True)
    joined = joined.sort_values([ENTITY_COLUMN, TIMESTAMP], ignore_index=True)
    joined["anomalous"] = _anomaly_mask(joined, anomalies)
    return joined


def _anomaly_mask(frame: pd.DataFrame, anomalies: list[InjectedAnomaly]) -> np.ndarray:
    mask = np.zeros(len(frame), dtype=bool)
    for anomaly in anomalies:
        mask |= (
            (frame[ENTITY_COLUMN] == anomaly.patient_id)
            & (frame[TIMESTAMP] >= anomaly.start)
            & (frame[TIMESTAMP] < anomaly.end)
        ).to_numpy()
    return mask


def test_generator_matches_the_vitals_spec(spec: DatasetSpec) -> None:
    assert list(FEATURES) == spec.feature_names
    assert spec.entity_source == ENTITY_COLUMN
    assert spec.label_column == LABEL


def test_frames_have_canonical_columns_and_dtypes(frames: dict[dt.date, pd.DataFrame]) -> None:
    assert list(frames) == SCENARIO.days
    for day, frame in frames.items():
        expected = [TIMESTAMP, ENTITY_COLUMN, *FEATURES]
        if SCENARIO.is_labeled(day):
            expected.append(LABEL)
        assert list(frame.columns) == expected
        assert isinstance(frame[TIMESTAMP].dtype, pd.DatetimeTZDtype)
        assert str(frame[TIMESTAMP].dt.tz) == "UTC"
        assert (frame[TIMESTAMP].dt.date == day).all()
        assert all(frame[feature].dtype == np.float64 for feature in FEATURES)


def test_one_row_per_patient_minute(frames: dict[dt.date, pd.DataFrame]) -> None:
    for frame in frames.values():
        assert len(frame) == SCENARIO.n_patients * MINUTES_PER_DAY
        assert sorted(frame[ENTITY_COLUMN].unique()) == SCENARIO.patient_ids
        assert (frame.groupby(ENTITY_COLUMN).size() == MINUTES_PER_DAY).all()
        assert not frame.duplicated([ENTITY_COLUMN, TIMESTAMP]).any()
    assert SCENARIO.patient_ids[0] == "p001"


def test_only_days_from_labeled_from_carry_labels(frames: dict[dt.date, pd.DataFrame]) -> None:
    for day, frame in frames.items():
        if day < SCENARIO.labeled_from:
            assert LABEL not in frame.columns
        else:
            assert frame[LABEL].dtype.kind == "i"
            assert set(frame[LABEL].unique()) == {0, 1}


def test_same_seed_same_data_other_seed_other_data() -> None:
    small = VitalsScenario(
        start=dt.date(2024, 1, 1), n_days=2, labeled_from=dt.date(2024, 1, 2), n_patients=2
    )
    first, again = generate_vitals(small), generate_vitals(small)
    other = generate_vitals(replace(small, seed=1))
    for day in small.days:
        pd.testing.assert_frame_equal(first[day], again[day])
        assert not first[day][list(FEATURES)].equals(other[day][list(FEATURES)])
    assert plan_anomalies(small) == plan_anomalies(small)


def test_series_is_continuous_across_midnight(series: pd.DataFrame) -> None:
    steps = series.groupby(ENTITY_COLUMN)[list(FEATURES)].diff().abs()
    normal = ~series["anomalous"] & ~series.groupby(ENTITY_COLUMN)["anomalous"].shift(
        fill_value=True
    )
    midnight = series[TIMESTAMP] == series[TIMESTAMP].dt.normalize()
    at_midnight = steps[normal & midnight & steps.notna().all(axis=1)]
    within_day = steps[normal & ~midnight]
    assert len(at_midnight) >= SCENARIO.n_patients * (SCENARIO.n_days - 1) // 2
    for feature in FEATURES:
        assert at_midnight[feature].median() <= 2 * within_day[feature].median(), feature
        assert at_midnight[feature].max() <= within_day[feature].max(), feature


def test_values_stay_within_spec_bounds(
    frames: dict[dt.date, pd.DataFrame], spec: DatasetSpec
) -> None:
    for frame in frames.values():
        for feature in spec.features:
            values = frame[feature.name].dropna()
            assert values.between(feature.min, feature.max).all(), feature.name


def test_null_share_stays_below_spec_limit(
    frames: dict[dt.date, pd.DataFrame], spec: DatasetSpec
) -> None:
    for frame in frames.values():
        assert frame[[ENTITY_COLUMN, TIMESTAMP]].notna().all().all()
        assert (frame[list(FEATURES)].isna().mean() < spec.max_null_fraction / 2).all()


def test_every_kind_is_injected_and_training_days_see_fewer(
    anomalies: list[InjectedAnomaly],
) -> None:
    labeled_from = pd.Timestamp(SCENARIO.labeled_from, tz="UTC")
    training = [anomaly for anomaly in anomalies if anomaly.start < labeled_from]
    labeled = [anomaly for anomaly in anomalies if anomaly.start >= labeled_from]
    assert {anomaly.kind for anomaly in labeled} == set(ANOMALY_KINDS)
    n_training_days = (SCENARIO.labeled_from - SCENARIO.start).days
    assert 0 < len(training) / n_training_days < len(labeled) / (SCENARIO.n_days - n_training_days)


def test_labels_mark_exactly_the_injected_segments(
    frames: dict[dt.date, pd.DataFrame], anomalies: list[InjectedAnomaly]
) -> None:
    for day, frame in frames.items():
        if SCENARIO.is_labeled(day):
            expected = _anomaly_mask(frame, anomalies).astype(np.int64)
            np.testing.assert_array_equal(frame[LABEL].to_numpy(), expected)


def test_injected_anomalies_show_in_their_features(
    series: pd.DataFrame, anomalies: list[InjectedAnomaly]
) -> None:
    dropouts = [anomaly for anomaly in anomalies if anomaly.kind == "dropout"]
    for feature in FEATURES:
        expected_nan = _anomaly_mask(
            series, [anomaly for anomaly in dropouts if feature in anomaly.features]
        )
        np.testing.assert_array_equal(series[feature].isna().to_numpy(), expected_nan)
    for anomaly in (anomaly for anomaly in anomalies if anomaly.kind == "flatline"):
        stuck = series.loc[_anomaly_mask(series, [anomaly]), anomaly.features[0]]
        assert stuck.nunique() == 1


def test_heart_rate_and_blood_pressure_dip_at_night(series: pd.DataFrame) -> None:
    normal = series[~series["anomalous"]]
    hour = normal[TIMESTAMP].dt.hour
    night, day = normal[hour < 6], normal[(hour >= 12) & (hour < 20)]
    for feature in ("heart_rate", "sys_bp", "temperature"):
        assert night[feature].mean() < day[feature].mean(), feature


@pytest.mark.parametrize(
    "change",
    [
        {"n_days": 0},
        {"n_patients": 0},
        {"anomalies_per_patient_day": -1.0},
        {"train_anomaly_scale": 1.5},
    ],
)
def test_scenario_rejects_impossible_settings(change: dict) -> None:
    settings = {"start": dt.date(2024, 1, 1), "n_days": 1, "labeled_from": dt.date(2024, 1, 1)}
    with pytest.raises(ValueError):
        VitalsScenario(**{**settings, **change})
