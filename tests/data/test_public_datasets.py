"""Benchmark loaders on the shared public data; telemanom and error cases on tiny files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ENTITY, LABEL, TIMESTAMP
from pipeline.data.public_datasets import (
    BenchmarkSeries,
    has_evaluation_anomalies,
    load_benchmark,
    load_telemanom,
    load_ucr,
    split_for_evaluation,
)


@pytest.fixture(scope="module")
def machine(shared_datasets: Path) -> BenchmarkSeries:
    (series,) = load_benchmark(shared_datasets, "SMD", series=["machine-1-6"])
    return series


@pytest.fixture(scope="module")
def nab(shared_datasets: Path) -> list[BenchmarkSeries]:
    return load_benchmark(shared_datasets, "nab")


def runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, end)`` stretches of 1s in a label vector."""
    edges = np.diff(np.concatenate([[0], labels.astype(np.int64), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def is_utc(times: pd.Series) -> bool:
    return isinstance(times.dtype, pd.DatetimeTZDtype) and str(times.dtype.tz) == "UTC"


def write_omni(root: Path, train_rows: int, test_rows: int, label_rows: int) -> Path:
    """A one-series OmniAnomaly layout under ``root/SMD``; returns the label file."""
    rng = np.random.default_rng(0)
    for part, rows in (("train", train_rows), ("test", test_rows)):
        (root / "SMD" / part).mkdir(parents=True)
        np.savetxt(root / "SMD" / part / "m.txt", rng.random((rows, 3)), delimiter=",")
    label_path = root / "SMD" / "test_label" / "m.txt"
    label_path.parent.mkdir()
    np.savetxt(label_path, np.zeros(label_rows), fmt="%d")
    return label_path


def test_smd_machine_shapes(machine: BenchmarkSeries) -> None:
    assert (machine.dataset, machine.name) == ("SMD", "machine-1-6")
    assert machine.train.shape == (23688, 38)
    assert machine.test.shape == (23689, 38)
    assert machine.train.dtype == machine.test.dtype == np.float32
    assert machine.test_labels.dtype == np.int8
    assert len(machine.test_labels) == len(machine.test)
    assert set(np.unique(machine.test_labels)) == {0, 1}
    assert len(machine.feature_names) == 38
    assert machine.test_timestamps is None


def test_smd_interpretation_matches_test_labels(machine: BenchmarkSeries) -> None:
    assert machine.interpretation
    interpreted = np.zeros_like(machine.test_labels)
    for start, end, features in machine.interpretation:
        interpreted[start:end] = 1
        assert features and all(0 <= index < 38 for index in features)
    assert machine.test_labels[interpreted == 1].all()
    np.testing.assert_array_equal(interpreted, machine.test_labels)  # [start, end), not inclusive
    assert machine.interpretation[0] == (246, 252, [0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 14])


def test_asd_loads_six_series_of_19_features(shared_datasets: Path) -> None:
    series = load_benchmark(shared_datasets, "ASD")
    assert [item.name for item in series] == [f"omi-{index}" for index in range(1, 7)]
    for item in series:
        assert item.train.shape[1] == item.test.shape[1] == 19
        assert len(item.test_labels) == len(item.test)
        assert item.interpretation is None


def test_nab_labels_come_from_inclusive_windows(
    shared_datasets: Path, nab: list[BenchmarkSeries]
) -> None:
    windows = json.loads((shared_datasets / "NAB" / "labels" / "combined_windows.json").read_text())
    assert len(nab) == 4
    for series in nab:
        key = f"realKnownCause/{series.name}.csv"
        assert series.test_labels.any()
        assert len(runs(series.test_labels)) == len(windows[key])
        rows = len(series.train) + len(series.test)
        assert len(series.train) == int(rows * 0.15)
        assert series.train_timestamps[-1] <= series.test_timestamps[0]
    ambient = next(series for series in nab if series.name == "ambient_temperature_system_failure")
    start = np.flatnonzero(ambient.test_timestamps == np.datetime64("2013-12-15T07:00"))[0]
    end = np.flatnonzero(ambient.test_timestamps == np.datetime64("2013-12-30T09:00"))[0]
    assert (start, end + 1) == runs(ambient.test_labels)[0]


def test_ucr_135_marks_rows_4187_to_4198(shared_datasets: Path) -> None:
    (series,) = load_benchmark(shared_datasets, "UCR", series=["135_InternalBleeding16"])
    assert len(series.train) == 1200
    assert len(series.train) + len(series.test) == 7501
    np.testing.assert_array_equal(np.flatnonzero(series.test_labels) + 1200, np.arange(4187, 4199))


def test_ucr_reads_values_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "UCR").mkdir()
    path = tmp_path / "UCR" / "7_UCR_Anomaly_Toy_4_6_8.txt"
    path.write_text("  ".join(str(value) for value in range(10)) + "\n")
    (series,) = load_ucr(tmp_path)
    assert series.name == "7_Toy"
    np.testing.assert_array_equal(series.train[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(series.test_labels, [0, 0, 1, 1, 0, 0])


@pytest.fixture
def telemanom_root(tmp_path: Path) -> Path:
    """A tiny telemanom release: two SMAP channels, one MSL channel listed but not present."""
    rng = np.random.default_rng(0)
    for chan in ("A-10", "A-2"):
        for part, rows in (("train", 20), ("test", 30)):
            (tmp_path / "SMAP" / part).mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "SMAP" / part / f"{chan}.npy", rng.random((rows, 3)))
    table = pd.DataFrame(
        {
            "chan_id": ["A-2", "A-10", "M-1"],
            "spacecraft": ["SMAP", "SMAP", "MSL"],
            "anomaly_sequences": ["[[2, 4], [10, 10]]", "[[0, 29]]", "[[1, 3]]"],
            "class": ["[point, point]", "[contextual]", "[point]"],
            "num_values": [30, 30, 30],
        }
    )
    table.to_csv(tmp_path / "SMAP" / "labeled_anomalies.csv", index=False)
    return tmp_path


def test_telemanom_honours_inclusive_ranges_and_spacecraft(telemanom_root: Path) -> None:
    series = load_benchmark(telemanom_root, "smap")
    assert [item.name for item in series] == ["A-2", "A-10"]
    np.testing.assert_array_equal(np.flatnonzero(series[0].test_labels), [2, 3, 4, 10])
    assert series[1].test_labels.all()
    assert series[0].dataset == "SMAP"
    assert series[0].train.shape == (20, 3)
    assert series[0].feature_names == ["f0", "f1", "f2"]


def test_telemanom_reads_the_table_from_the_root(telemanom_root: Path) -> None:
    (telemanom_root / "SMAP" / "labeled_anomalies.csv").rename(
        telemanom_root / "labeled_anomalies.csv"
    )
    (series,) = load_telemanom(telemanom_root, "SMAP", series=["A-2"])
    assert series.test_labels.sum() == 4


def test_telemanom_rejects_a_range_beyond_the_test_part(telemanom_root: Path) -> None:
    table_path = telemanom_root / "SMAP" / "labeled_anomalies.csv"
    table = pd.read_csv(table_path)
    table.loc[0, "anomaly_sequences"] = "[[25, 30]]"
    table.to_csv(table_path, index=False)
    with pytest.raises(ValueError, match="outside 30 test rows"):
        load_telemanom(telemanom_root, "SMAP")


def test_telemanom_labels_a_channel_listed_twice_with_the_union_of_its_ranges(
    telemanom_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The published labeled_anomalies.csv lists P-2 twice, each row with its own ranges."""
    table_path = telemanom_root / "SMAP" / "labeled_anomalies.csv"
    table = pd.read_csv(table_path)
    again = table.iloc[[0]].assign(anomaly_sequences="[[3, 6], [20, 21]]", num_values=30)
    pd.concat([table, again]).to_csv(table_path, index=False)
    with caplog.at_level("WARNING", logger="pipeline.data.benchmarks"):
        first, second = load_telemanom(telemanom_root, "SMAP")
    assert first.name == "A-2"
    np.testing.assert_array_equal(np.flatnonzero(first.test_labels), [2, 3, 4, 5, 6, 10, 20, 21])
    assert second.test_labels.all()
    assert "listed more than once: ['A-2']" in caplog.text


def test_split_for_evaluation_cuts_at_30_percent_in_order(machine: BenchmarkSeries) -> None:
    split = split_for_evaluation(machine)
    assert split.cut == round(len(machine.test) * 0.3)
    assert len(split.calib_values) == len(split.calib_labels) == split.cut
    assert len(split.eval_values) == len(split.eval_labels) == len(machine.test) - split.cut
    np.testing.assert_array_equal(
        np.concatenate([split.calib_values, split.eval_values]), machine.test
    )
    np.testing.assert_array_equal(
        np.concatenate([split.calib_labels, split.eval_labels]), machine.test_labels
    )
    assert has_evaluation_anomalies(split)


def test_no_evaluation_anomaly_is_reported() -> None:
    labels = np.zeros(10, dtype=np.int8)
    labels[1] = 1
    series = BenchmarkSeries("toy", "s", np.zeros((5, 1)), np.zeros((10, 1)), labels, ["value"])
    split = split_for_evaluation(series)
    assert split.cut == 3
    assert not has_evaluation_anomalies(split)


def test_to_frame_has_canonical_columns_and_utc_time(machine: BenchmarkSeries) -> None:
    test = machine.to_frame("test")
    train = machine.to_frame("train")
    assert list(test.columns) == [TIMESTAMP, ENTITY, *machine.feature_names, LABEL]
    assert list(train.columns) == [TIMESTAMP, ENTITY, *machine.feature_names]
    assert is_utc(test[TIMESTAMP]) and is_utc(train[TIMESTAMP])
    assert train[TIMESTAMP].iloc[0] == pd.Timestamp("2000-01-01", tz="UTC")
    assert test[TIMESTAMP].iloc[0] - train[TIMESTAMP].iloc[-1] == pd.Timedelta("1min")
    assert (test[ENTITY] == "machine-1-6").all()
    np.testing.assert_array_equal(test[LABEL], machine.test_labels)


def test_to_frame_keeps_real_timestamps(nab: list[BenchmarkSeries]) -> None:
    series = nab[0]
    frame = series.to_frame("test")
    assert is_utc(frame[TIMESTAMP])
    assert frame[TIMESTAMP].iloc[0] == pd.Timestamp(series.test_timestamps[0], tz="UTC")
    assert list(frame.columns) == [TIMESTAMP, ENTITY, "value", LABEL]


def test_unknown_dataset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark dataset 'KDD'"):
        load_benchmark(tmp_path, "KDD")


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "SMD"))):
        load_benchmark(tmp_path, "SMD")


def test_unknown_series_is_rejected(tmp_path: Path) -> None:
    write_omni(tmp_path, train_rows=5, test_rows=5, label_rows=5)
    with pytest.raises(ValueError, match=r"no series \['other'\]"):
        load_benchmark(tmp_path, "SMD", series=["other"])


def test_lenient_selection_skips_unknown_names_and_reads_only_the_named(tmp_path: Path) -> None:
    write_omni(tmp_path, train_rows=5, test_rows=5, label_rows=5)
    # A series without test files: reading it would fail, so it must not be read.
    np.savetxt(tmp_path / "SMD" / "train" / "unread.txt", np.zeros((5, 3)), delimiter=",")
    chosen = load_benchmark(tmp_path, "SMD", series=["m", "other"], strict=False)
    assert [series.name for series in chosen] == ["m"]


def test_label_length_mismatch_names_the_file(tmp_path: Path) -> None:
    label_path = write_omni(tmp_path, train_rows=5, test_rows=6, label_rows=5)
    with pytest.raises(ValueError, match=re.escape(str(label_path))) as error:
        load_benchmark(tmp_path, "SMD")
    assert "5 test labels for 6 test rows" in str(error.value)


def test_non_finite_values_are_rejected(tmp_path: Path) -> None:
    write_omni(tmp_path, train_rows=5, test_rows=5, label_rows=5)
    train_path = tmp_path / "SMD" / "train" / "m.txt"
    train_path.write_text(train_path.read_text().replace("\n", "\nnan,1,2\n", 1))
    with pytest.raises(ValueError, match="train has 1 rows with missing or infinite values"):
        load_benchmark(tmp_path, "SMD")


def test_feature_count_mismatch_is_rejected(tmp_path: Path) -> None:
    write_omni(tmp_path, train_rows=5, test_rows=5, label_rows=5)
    np.savetxt(tmp_path / "SMD" / "test" / "m.txt", np.zeros((5, 2)), delimiter=",")
    with pytest.raises(ValueError, match="train has 3 features but test has 2"):
        load_benchmark(tmp_path, "SMD")
