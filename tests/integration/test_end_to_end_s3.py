"""Both DAGs through Airflow with the data tree on an S3-compatible server.

The server is moto's, on 127.0.0.1, spoken to over HTTP by the Airflow task processes. Between
the training and the scoring DAG the local working copy is deleted, as a new pod would start
without it: the scoring run finds everything it needs in the bucket. The outputs are then read
back from the bucket by a second home that never ran anything.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.s3_server import keys, s3_server, use_s3
from pipeline import steps, tracking
from pipeline.config import RunConfig, Settings
from pipeline.data import storage
from pipeline.orchestration import init_airflow, parse_dags, run_dag

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals")
SCORED = CONFIG.test.end + dt.timedelta(days=1)
BROKEN = SCORED + dt.timedelta(days=1)


def break_day(settings: Settings, day: dt.date) -> None:
    """Replace a landed day, on the store, by one without its heart rate column."""
    landing = storage.fetch(settings, settings.partition("landing", "vitals", day))
    frame = pd.read_parquet(landing / "part-0.parquet").drop(columns=["heart_rate"])
    with storage.publish(settings, landing) as staged:
        frame.to_parquet(staged / "part-0.parquet", index=False)


@pytest.fixture(scope="module")
def s3_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, Settings, str, dict]]:
    """The trained home, a reader's home on the same bucket, the server's URL, runs' states."""
    root = tmp_path_factory.mktemp("s3-home")
    with s3_server() as endpoint, pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSAD_HOME", str(root / "tsad"))
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TSAD_ARTIFACT_ROOT"):
            patch.delenv(variable, raising=False)
        use_s3(endpoint, "tree", patch)
        settings = Settings.from_env()
        steps.generate(
            start=CONFIG.train.start,
            days=(BROKEN - CONFIG.train.start).days + 1,
            patients=3,
            labeled_from=CONFIG.validation.start,
            settings=settings,
        )
        break_day(settings, BROKEN)
        init_airflow(settings)
        parse_dags(settings)
        states = {"train": run_dag("tsad_train", settings, conf={"detector": "pca"})}
        for local in (settings.data_root, settings.home / "runs"):  # a new pod's empty disk
            shutil.rmtree(local)
        for day in (SCORED, BROKEN):
            states[day] = run_dag("tsad_score", settings, conf={"date": day.isoformat()})
        patch.setenv("TSAD_HOME", str(root / "reader"))  # reads only what the bucket holds
        yield settings, Settings.from_env(), endpoint, states


def test_the_registry_holds_the_model_trained_from_the_bucket(s3_run):
    trained, _, _, states = s3_run
    assert states["train"] == "success"
    client = tracking.connect(trained)
    version = client.get_model_version_by_alias(trained.model_name("vitals"), "production")
    assert version.tags["detector"] == "pca" and float(version.tags["threshold"]) > 0


def test_the_scored_day_is_in_the_bucket_whole(s3_run):
    _, reader, endpoint, states = s3_run
    assert states[SCORED] == "success"
    scores = storage.fetch(reader, reader.partition("scores", "vitals", SCORED))
    landing = storage.fetch(reader, reader.partition("landing", "vitals", SCORED))
    frame = pd.read_parquet(scores / "scores.parquet")
    assert len(frame) == len(pd.read_parquet(landing / "part-0.parquet"))
    assert (frame["timestamp"].dt.date == SCORED).all()
    names = {Path(key).name for key in keys(endpoint, f"tree/scores/vitals/date={SCORED}/")}
    assert {"_manifest.json", "scores.parquet", "summary.json", "report.html"} <= names
    assert "_lease.json" not in names


def test_the_broken_day_is_quarantined_in_the_bucket_and_not_scored(s3_run):
    _, reader, endpoint, states = s3_run
    assert states[BROKEN] == "failed"
    quarantine = storage.fetch(reader, reader.partition("quarantine", "vitals", BROKEN))
    assert "heart_rate" in (quarantine / "validation_report.json").read_text()
    assert not storage.fetch(reader, reader.partition("scores", "vitals", BROKEN)).exists()
    assert not keys(endpoint, f"tree/scores/vitals/date={BROKEN}/")
