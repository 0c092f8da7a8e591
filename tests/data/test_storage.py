"""The data tree on an S3-compatible server: the commit protocol, its lease, its faults.

Every test talks HTTP to a real server (moto's server mode on 127.0.0.1). A second home with
its own empty working copy stands for another pod reading what the first one committed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.s3_server import BUCKET, bucket_client, keys, s3_server, use_s3
from pipeline.config import Settings
from pipeline.data import storage

DAY = dt.date(2026, 3, 1)
PREFIX = "tree"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


def home(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Settings:
    """A home of its own (its own working copy) on the shared bucket prefix of this test."""
    monkeypatch.setenv("TSAD_HOME", str(tmp_path / name))
    use_s3(endpoint, f"{PREFIX}/{tmp_path.name}", monkeypatch)
    return Settings.from_env()


@pytest.fixture
def writer(tmp_path, monkeypatch, endpoint) -> Settings:
    return home(tmp_path, "writer", monkeypatch, endpoint)


@pytest.fixture
def reader(tmp_path, monkeypatch, endpoint, writer) -> Settings:
    return home(tmp_path, "reader", monkeypatch, endpoint)


def write_day(settings: Settings, files: dict[str, str]) -> Path:
    partition = settings.partition("scores", "vitals", DAY)
    with storage.publish(settings, partition) as staged:
        for name, text in files.items():
            (staged / name).write_text(text)
    return partition


def read_day(settings: Settings) -> dict[str, str] | None:
    partition = storage.fetch(settings, settings.partition("scores", "vitals", DAY))
    if not partition.is_dir():
        return None
    return {
        p.name: p.read_text() for p in sorted(partition.iterdir()) if not p.name.startswith(".")
    }


def stored(endpoint: str, settings: Settings) -> list[str]:
    """The day's object keys, relative to its partition prefix."""
    key = storage.data_store(settings).key(settings.partition("scores", "vitals", DAY))
    return [name.removeprefix(key + "/") for name in keys(endpoint, key + "/")]


def test_a_committed_day_is_read_whole_by_another_home(writer, reader, endpoint):
    assert read_day(reader) is None  # nothing committed: no day
    write_day(writer, {"scores.parquet": "s1", "summary.json": "{}"})
    assert read_day(reader) == {"scores.parquet": "s1", "summary.json": "{}"}
    names = stored(endpoint, writer)
    assert "_manifest.json" in names and "_lease.json" not in names
    assert sum(name.startswith("_attempts/") for name in names) == 2


def test_a_rerun_replaces_the_day_and_removes_the_old_attempt(writer, reader, endpoint):
    write_day(writer, {"scores.parquet": "old", "extra.json": "x"})
    assert read_day(reader) == {"extra.json": "x", "scores.parquet": "old"}
    write_day(writer, {"scores.parquet": "new"})
    assert read_day(reader) == {"scores.parquet": "new"}
    attempts = {name.split("/")[1] for name in stored(endpoint, writer) if "/" in name}
    assert len(attempts) == 1


def test_a_failed_write_leaves_the_previous_day_and_no_new_attempt(writer, reader, endpoint):
    write_day(writer, {"scores.parquet": "old"})
    before = stored(endpoint, writer)
    partition = writer.partition("scores", "vitals", DAY)
    with (
        pytest.raises(RuntimeError, match="scoring broke"),
        storage.publish(writer, partition) as staged,
    ):
        (staged / "scores.parquet").write_text("half")
        raise RuntimeError("scoring broke")
    assert stored(endpoint, writer) == before
    assert read_day(reader) == {"scores.parquet": "old"}


def test_an_orphan_attempt_is_never_read_and_the_next_commit_removes_it(writer, reader, endpoint):
    write_day(writer, {"scores.parquet": "good"})
    key = storage.data_store(writer).key(writer.partition("scores", "vitals", DAY))
    client = bucket_client(endpoint)
    client.put_object(Bucket=BUCKET, Key=f"{key}/_attempts/killed/scores.parquet", Body=b"torn")
    assert read_day(reader) == {"scores.parquet": "good"}
    write_day(writer, {"scores.parquet": "newer"})
    assert not any("killed" in name for name in stored(endpoint, writer))
    assert read_day(reader) == {"scores.parquet": "newer"}


def test_a_producers_plain_export_is_read_as_listed(writer, reader, endpoint):
    landing = writer.partition("landing", "vitals", DAY)
    key = storage.data_store(writer).key(landing)
    client = bucket_client(endpoint)
    client.put_object(Bucket=BUCKET, Key=f"{key}/part-0.csv", Body=b"timestamp\n")
    client.put_object(Bucket=BUCKET, Key=f"{key}/_SUCCESS", Body=b"")
    fetched = storage.fetch(reader, reader.partition("landing", "vitals", DAY))
    assert sorted(p.name for p in fetched.iterdir() if not p.name.startswith(".")) == ["part-0.csv"]


def test_two_writers_of_one_day_take_turns(writer, reader, endpoint):
    """The second writer waits for the first one's lease: the day is one or the other."""
    partition = writer.partition("scores", "vitals", DAY)
    inside, order = threading.Event(), []

    def first() -> None:
        with storage.publish(writer, partition) as staged:
            inside.set()
            (staged / "scores.parquet").write_text("first")
            time.sleep(1.5)  # longer than a lease renewal interval: the lease must be renewed
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait()
    write_day(reader, {"scores.parquet": "second"})
    order.append("second done")
    thread.join()
    assert order == ["first done", "second done"]
    assert read_day(writer) == {"scores.parquet": "second"}


def test_a_lease_left_by_a_dead_writer_is_taken_over_once_expired(writer, endpoint):
    key = storage.data_store(writer).key(writer.partition("scores", "vitals", DAY))
    body = json.dumps({"owner": "dead-pod:1", "expires": time.time() + 1}).encode()
    bucket_client(endpoint).put_object(Bucket=BUCKET, Key=f"{key}/_lease.json", Body=body)
    write_day(writer, {"scores.parquet": "after"})
    assert read_day(writer) == {"scores.parquet": "after"}


def test_an_unreachable_store_fails_naming_it_and_writes_nothing(tmp_path, monkeypatch, endpoint):
    broken = home(tmp_path, "broken", monkeypatch, endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("TSAD_S3_ATTEMPTS", "2")
    with pytest.raises(storage.StorageError, match=rf"s3://{BUCKET}/{PREFIX}/"):
        write_day(broken, {"scores.parquet": "lost"})
    assert not broken.partition("scores", "vitals", DAY).exists()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the store is back: a rerun completes
    write_day(broken, {"scores.parquet": "rerun"})
    assert read_day(broken) == {"scores.parquet": "rerun"}


def test_a_run_folder_moves_between_homes_with_its_links(writer, reader):
    run = writer.home / "runs" / "vitals" / "20260301t000000-abcdef"
    with storage.working_tree(writer, run):
        (run / "prepared").mkdir(parents=True)
        (run / "prepared" / "train.npz").write_bytes(b"npz")
        (run / "candidates" / "pca").mkdir(parents=True)
        (run / "candidates" / "pca" / "prepared").symlink_to(Path("..", "..", "prepared"))
    copy = reader.home / "runs" / "vitals" / run.name
    with storage.working_tree(reader, copy / "candidates" / "pca"):
        assert (copy / "candidates" / "pca" / "prepared" / "train.npz").read_bytes() == b"npz"
        (copy / "candidates" / "pca" / "weights.json").write_text("{}")
    with storage.working_tree(writer, run):
        assert (run / "candidates" / "pca" / "weights.json").read_text() == "{}"


PUBLISH_THREE_FILES = """
import sys
from pipeline.config import Settings, parse_date
from pipeline.data import storage
settings = Settings.from_env()
partition = settings.partition("scores", "vitals", parse_date(sys.argv[1]))
with storage.publish(settings, partition) as staged:
    for name in ("alarms.parquet", "scores.parquet", "summary.json"):  # FILES
        (staged / name).write_text(name + ":" + sys.argv[2])
"""
FILES = ("alarms.parquet", "scores.parquet", "summary.json")
CRASH_POINTS = [
    "s3-lease:scores",
    "s3-upload:scores/alarms.parquet",
    "s3-upload:scores/scores.parquet",
    "s3-upload:scores/summary.json",
    "s3-uploaded:scores",
    "s3-manifest:scores",
    "s3-cleanup:scores",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_writer_killed_at_each_commit_step_leaves_old_or_new_day(
    point, writer, reader, endpoint, monkeypatch
):
    monkeypatch.setenv("TSAD_S3_LEASE_SECONDS", "1")  # the killed writer's lease soon expires
    write_day(writer, {name: f"{name}:old" for name in FILES})
    env = os.environ | {"PYTHONPATH": str(Path.cwd()), "TSAD_CRASH_AT": point}
    command = [sys.executable, "-c", PUBLISH_THREE_FILES, DAY.isoformat(), "new"]
    assert subprocess.run(command, env=env).returncode == -9  # SIGKILL, at the named point
    seen = read_day(reader)
    committed = point in ("s3-manifest:scores", "s3-cleanup:scores")
    assert seen == {name: f"{name}:{'new' if committed else 'old'}" for name in FILES}
    write_day(writer, {name: f"{name}:rerun" for name in FILES})  # the rerun completes
    assert read_day(reader) == {name: f"{name}:rerun" for name in FILES}
    assert len({name.split("/")[1] for name in stored(endpoint, writer) if "/" in name}) == 1
