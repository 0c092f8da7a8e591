import fcntl
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import DatasetSpec
from pipeline.data import io


def test_atomic_write_replaces_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "day" / "scores.parquet"
    io.write_parquet_atomic(pd.DataFrame({"a": [1, 2]}), target)
    io.write_parquet_atomic(pd.DataFrame({"a": [3]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [3]
    assert [p.name for p in target.parent.iterdir()] == ["scores.parquet"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "does not exist"), (b"", "cannot read"), (b"PAR1 not really parquet", "cannot read")],
)
def test_unreadable_partitions_raise_a_clear_error(tmp_path, content, problem):
    directory = tmp_path / "date=2026-01-01"
    if content is not None:
        directory.mkdir()
        (directory / "part-0.parquet").write_bytes(content)
    with pytest.raises(io.BatchReadError, match=problem):
        io.read_partition(directory)


def test_quarantine_copies_the_batch_with_its_report_and_keeps_landing(tmp_path):
    landing = tmp_path / "landing" / "date=2026-01-01"
    landing.mkdir(parents=True)
    (landing / "part-0.parquet").write_bytes(b"data")
    target = io.quarantine_batch(landing, tmp_path / "quarantine" / "date=2026-01-01", "{}")
    assert sorted(p.name for p in target.iterdir()) == ["part-0.parquet", "validation_report.json"]
    assert (landing / "part-0.parquet").read_bytes() == b"data"


def test_to_canonical_maps_source_columns_without_touching_the_input():
    spec = DatasetSpec.load("vitals")
    raw = pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-01", periods=3, freq="1min", tz="UTC"),
            "patient_id": ["p1"] * 3,
            **{name: np.ones(3) for name in spec.feature_names},
            "label": [0, 1, 0],
            "note": ["x"] * 3,
        }
    )
    before = raw.copy()
    frame = io.to_canonical(raw, spec)
    assert list(frame.columns) == ["timestamp", "entity", *spec.feature_names, "label"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    pd.testing.assert_frame_equal(raw, before)


def test_a_writer_sweeps_what_a_killed_writer_left_and_keeps_the_output(tmp_path):
    partition = tmp_path / "scores" / "date=2026-01-01"
    io.write_parquet_atomic(pd.DataFrame({"a": [1]}), partition / "scores.parquet")
    (partition / ".scores.parquet.dead.tmp").write_bytes(b"half a file")
    with io.exclusive_partition(partition):
        assert sorted(p.name for p in partition.iterdir()) == ["scores.parquet"]
    assert pd.read_parquet(partition / "scores.parquet")["a"].tolist() == [1]


def test_a_second_writer_waits_for_the_first(tmp_path):
    partition = tmp_path / "date=2026-01-01"
    script = (
        "import sys, time; from pathlib import Path; from pipeline.data import io\n"
        "with io.exclusive_partition(Path(sys.argv[1])):\n"
        "    print('locked', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(partition)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock = partition.with_name(f".{partition.name}.lock")
        with open(lock) as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.wait()
    with io.exclusive_partition(partition):  # a killed holder's lock is free again
        pass


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
@pytest.mark.parametrize("zone", [None, "UTC", "Europe/Paris"])
def test_batches_read_since_a_moment_keep_exactly_the_rows_at_or_after_it(tmp_path, unit, zone):
    """Rows are dropped in Arrow, before pandas, whatever the unit and zone they landed in;
    naive timestamps count as UTC, as canonical rows do."""
    directory = tmp_path / "date=2026-01-01"
    directory.mkdir()
    utc = pd.date_range("2026-01-01", periods=6, freq="400ms", tz="UTC")
    landed = utc.tz_localize(None) if zone is None else utc.tz_convert(zone)
    frame = pd.DataFrame({"timestamp": landed.as_unit(unit), "x": np.arange(6.0)})
    frame.to_parquet(directory / "part-0.parquet", index=False)
    since = pd.Timestamp("2026-01-01 00:00:00.8000001", tz="UTC")

    read = pd.concat(io.read_batches(directory, ["timestamp", "x"], since=since))

    assert read["x"].tolist() == [3.0, 4.0, 5.0]  # 00:00:01.2 on; 00:00:00.8 is before since


def test_row_groups_that_end_before_the_moment_are_not_decoded(tmp_path):
    """A previous day's tail (scoring's context) is read from the last row groups only."""
    directory = tmp_path / "date=2026-01-01"
    directory.mkdir()
    times = pd.date_range("2026-01-01", periods=1000, freq="min", tz="UTC")
    frame = pd.DataFrame({"timestamp": times, "x": np.arange(1000.0)})
    frame.to_parquet(directory / "part-0.parquet", index=False, row_group_size=100)
    since = times[-150]

    read = pd.concat(io.read_batches(directory, ["timestamp", "x"], since=since))

    assert read["x"].tolist() == list(np.arange(850.0, 1000.0))
    parquet = pq.ParquetFile(directory / "part-0.parquet")
    assert io._row_groups_since(parquet, since) == [8, 9]
    assert io._row_groups_since(parquet, None) == list(range(10))


def test_csv_timestamps_with_one_zone_are_parsed_and_others_stay_text(tmp_path):
    directory = tmp_path / "date=2026-01-01"
    directory.mkdir()
    path = directory / "part-0.csv"
    path.write_text("timestamp,x\n2026-01-01T00:00:00Z,1\n2026-01-01T00:01:00Z,2\n")
    assert str(io.read_partition(directory)["timestamp"].dt.tz) == "UTC"
    path.write_text("timestamp,x\n2026-01-01T00:00:00+00:00,1\n2026-01-01T01:01:00+01:00,2\n")
    assert not pd.api.types.is_datetime64_any_dtype(io.read_partition(directory)["timestamp"])


def test_a_csv_with_another_delimiter_is_named(tmp_path):
    directory = tmp_path / "date=2026-01-01"
    directory.mkdir()
    (directory / "part-0.csv").write_text("timestamp;x\n2026-01-01T00:00:00Z;1\n")
    with pytest.raises(io.BatchReadError, match=r"part-0\.csv: .*separated by ';', not ','"):
        io.read_partition(directory)
