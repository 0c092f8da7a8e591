"""A day scored as entity shards gives what the day scored whole gives.

Five patients, a PCA model: the day before is scored whole (its alarms start the episodes that
cross midnight), then the day is scored whole, and as 1, 2, 3 and 8 shards (8: more shards than
patients, so some shards hold nobody and must still be committed and merged), through the
steps, through ``tsad`` itself and with the data tree on an S3 server. Score rows (after
sorting), episodes, drift and summary must be the same; with one shard the files are the same
bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import ROOT, tsad
from ward import day, trained_ward

from benchmarks.s3_server import copy_partition, keys, s3_server, use_s3
from pipeline import steps
from pipeline.config import DatasetSpec, Settings
from pipeline.data import io, storage
from pipeline.day_shards import ShardsIncomplete
from pipeline.sharding import Shard, entity_rows, shard_of

PATIENTS = 5
SCORED = day(5)


@pytest.fixture(scope="module")
def whole(module_home: Settings) -> tuple[Settings, Path]:
    """A PCA model of five patients; day 4 scored whole, then day 5, kept as the reference."""
    settings = module_home
    trained_ward(settings, patients=PATIENTS, detector="pca", detector_params={}, epochs=1)
    steps.score("vitals", day(4), settings)
    out = Path(steps.score("vitals", SCORED, settings)).parent
    reference = settings.home / "reference"
    shutil.copytree(out, reference)
    return settings, reference


def _sorted_scores(folder: Path) -> pd.DataFrame:
    scores = pd.read_parquet(folder / steps.SCORES_FILE)
    return scores.sort_values(["entity", "timestamp"], ignore_index=True)


def _summary(folder: Path) -> dict:
    return json.loads((folder / steps.SUMMARY_FILE).read_text())


def _assert_same_day(folder: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(_sorted_scores(folder), _sorted_scores(reference))
    pd.testing.assert_frame_equal(
        pd.read_parquet(folder / steps.ALARMS_FILE), pd.read_parquet(reference / steps.ALARMS_FILE)
    )
    assert _summary(folder) == _summary(reference)
    assert (folder / steps.DAILY_REPORT_FILE).is_file()


@pytest.mark.parametrize("shards", [2, 3, 8])
def test_sharded_day_equals_the_day_scored_whole(whole, shards):
    settings, reference = whole
    out = Path(steps.score_sharded("vitals", SCORED, shards, settings)).parent
    _assert_same_day(out, reference)
    summary = _summary(out)
    assert summary["drift"] is not None and summary["rows"] == PATIENTS * 1440
    assert summary["anomalies"] > 0  # the comparison covers alarms, not just quiet rows


def test_one_shard_writes_the_same_bytes_as_the_day_scored_whole(whole):
    settings, reference = whole
    out = Path(steps.score_sharded("vitals", SCORED, 1, settings)).parent
    for name in (steps.SCORES_FILE, steps.ALARMS_FILE, steps.SUMMARY_FILE):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_shards_scored_apart_by_the_cli_then_finalized(whole):
    """``tsad score --shard K/N`` on one worker, the other shard elsewhere, then ``tsad
    finalize``; finalizing refuses while a shard is missing and names it."""
    settings, reference = whole
    date = SCORED.isoformat()
    shutil.rmtree(settings.partition("shards", "vitals", SCORED) / "of=2", ignore_errors=True)
    done = tsad("score", "--dataset", "vitals", "--date", date, "--shard", "0/2")
    assert done.returncode == 0, done.stderr
    with pytest.raises(ShardsIncomplete, match="shards 1/2 not scored"):
        steps.finalize("vitals", SCORED, 2, settings)
    steps.score_shard("vitals", SCORED, Shard(1, 2), settings)
    done = tsad("finalize", "--dataset", "vitals", "--date", date, "--shards", "2")
    assert done.returncode == 0, done.stderr
    _assert_same_day(settings.partition("scores", "vitals", SCORED), reference)


def test_shards_reach_the_final_step_through_an_object_store(whole, monkeypatch):
    """With the data tree on an S3 server, each shard commits its part to the bucket and the
    final step reads them from there: the working copy is deleted in between, as a worker
    that did not score them starts without it."""
    settings, reference = whole
    with s3_server() as endpoint:
        use_s3(endpoint, "tree", monkeypatch)
        on_s3 = Settings.from_env()
        for zone, date in [
            ("landing", day(4)),
            ("validation", day(4)),
            ("scores", day(4)),
            ("landing", SCORED),
            ("validation", SCORED),
        ]:
            copy_partition(settings, on_s3, zone, "vitals", date)
        for index in range(3):
            steps.score_shard("vitals", SCORED, Shard(index, 3), on_s3)
        shutil.rmtree(on_s3.data_root)
        steps.finalize("vitals", SCORED, 3, on_s3)
        stored = keys(endpoint, "tree/shards/vitals")
        assert sum(key.endswith("_manifest.json") for key in stored) == 3
        shutil.rmtree(on_s3.data_root)
        out = storage.fetch(on_s3, on_s3.partition("scores", "vitals", SCORED))
        _assert_same_day(out, reference)


def test_finalize_refuses_shards_of_another_count(whole):
    settings, _ = whole
    steps.score_shard("vitals", SCORED, Shard(0, 5), settings)
    with pytest.raises(ShardsIncomplete, match="1/5, 2/5, 3/5, 4/5"):
        steps.finalize("vitals", SCORED, 5, settings)


def test_an_entity_keeps_its_shard_in_every_process():
    """BLAKE2b, not Python's salted hash: the value is fixed, so every worker agrees."""
    assert [shard_of(f"patient-{n:03d}", 4) for n in range(6)] == [
        shard_of(f"patient-{n:03d}", 4) for n in range(6)
    ]
    assert shard_of("patient-000", 1) == 0
    counts = pd.Series([shard_of(f"e{n}", 4) for n in range(4000)]).value_counts()
    assert counts.min() > 900  # spread evenly


def test_a_shard_reads_only_its_entities_rows(whole):
    settings, _ = whole
    spec = DatasetSpec.load("vitals")
    landing = settings.partition("landing", "vitals", SCORED)
    entities = io.partition_entities(landing, spec)
    mine = Shard(1, 2).entities(entities)
    keep = entity_rows(spec.entity_source or "", mine)
    read = pd.concat(io.read_batches(landing, io.scoring_columns(spec), rows=keep))
    assert sorted(read[spec.entity_source].astype(str).unique()) == sorted(mine)
    assert len(read) == 1440 * len(mine)


def test_dates_of_shards_do_not_mix(whole):
    settings, _ = whole
    folder = steps.shard_partition(settings, "vitals", SCORED, Shard(2, 3))
    assert folder.parts[-3:] == (f"date={SCORED.isoformat()}", "of=3", "shard=2")
    assert dt.date.fromisoformat(folder.parts[-3].removeprefix("date=")) == SCORED


def test_a_pca_shard_starts_without_torch_or_scikit_learn():
    """A shard task's start-up is paid once per shard: scoring with a PCA model imports
    neither torch nor scikit-learn (they are imported where a model needs them)."""
    code = (
        "import sys\n"
        "from pipeline import day_shards, daily\n"
        "from pipeline.detectors.registry import detector_class\n"
        "detector_class('pca')\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy.stats') if m in sys.modules))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "[]", found.stderr
