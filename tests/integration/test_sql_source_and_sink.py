"""A dataset read from PostgreSQL and its alarms written back to it, as a user runs it.

The machine's PostgreSQL holds a database of the test's own: a source table with the demo's
days and the sink table. The same day scored from files and from SQL gives identical scores;
a rerun leaves one copy in the sink; bad queries and empty days are quarantined with their
report, and the URL's password appears nowhere.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy
import yaml
from prerequisites import require
from stack_servers import postgres_available, postgres_database

from pipeline import steps
from pipeline.config import RunConfig, Settings, SinkSpec, project_root
from pipeline.data import sinks

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals").model_copy(
    update={"detector": "pca", "detector_params": {}, "epochs": 1}
)
DAY = CONFIG.test.end + dt.timedelta(days=2)
BEFORE = DAY - dt.timedelta(days=1)
EMPTY = DAY + dt.timedelta(days=1)
PASSWORD = "s3cr3t-pw"  # trust authentication ignores it: it is there to be masked
COLUMNS = "timestamp, patient_id, heart_rate, spo2, resp_rate, sys_bp, dia_bp, temperature, label"
QUERY = f"SELECT {COLUMNS} FROM ward_rows WHERE timestamp >= :start AND timestamp < :end"


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def project(root: Path, source: dict, sinks_: list[dict]) -> Path:
    """A project root whose ``vitals`` spec reads from ``source`` and writes ``sinks_``."""
    spec = yaml.safe_load((project_root() / "configs" / "datasets" / "vitals.yaml").read_text())
    spec |= {"source": source, "sinks": sinks_, "notifications": {"owners": []}}
    (root / "configs" / "datasets").mkdir(parents=True)
    (root / "configs" / "datasets" / "vitals.yaml").write_text(yaml.safe_dump(spec))
    return root


def tsad(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Days landed as files, a PCA model in production, the same days in PostgreSQL."""
    require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    root = tmp_path_factory.mktemp("sql")
    with postgres_database("tsad_sql") as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSAD_HOME", str(root / "tsad"))
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TSAD_DATA_URI"):
            patch.delenv(variable, raising=False)
        settings = Settings.from_env()
        steps.generate(
            start=CONFIG.train.start, days=(DAY - CONFIG.train.start).days + 1, patients=3,
            labeled_from=CONFIG.validation.start, settings=settings,
        )  # fmt: skip
        steps.validate_days("vitals", steps.run_days(CONFIG), settings)
        run_dir = steps.prepare(CONFIG, settings)
        steps.evaluate(steps.calibrate(steps.train(run_dir)))
        steps.register(run_dir, settings)
        steps.promote_challenger("vitals", settings=settings)
        engine = sqlalchemy.create_engine(url)
        for day in (BEFORE, DAY):
            landed = settings.partition("landing", "vitals", day) / "part-0.parquet"
            pd.read_parquet(landed).to_sql("ward_rows", engine, if_exists="append", index=False)
        engine.dispose()
        source = {"kind": "sql", "url_env": "WARD_DB_URL", "query": QUERY, "batch_rows": 1000}
        sink = {"kind": "sql", "url_env": "WARD_DB_URL", "table": "tsad_alarms"}
        env = os.environ | {
            "PYTHONPATH": str(project_root()),
            "TSAD_PROJECT_ROOT": str(project(root / "project", source, [sink])),
            "TSAD_DATA_URI": (root / "sql-tree").as_uri(),
            "WARD_DB_URL": with_password(url),
        }
        # The day before is validated in neither tree: both score DAY without its context.
        from_files = pd.read_parquet(steps.score("vitals", DAY, settings))
        outputs = []
        for command in ("ingest", "score"):
            result = tsad(command, "--dataset", "vitals", "--date", DAY.isoformat(), env=env)
            assert result.returncode == 0, result.stderr[-2000:]
            outputs.append(result.stdout + result.stderr)
        yield {"url": url, "env": env, "root": root, "files": from_files, "outputs": outputs}


def test_a_day_scored_from_sql_matches_the_same_day_scored_from_files(ward):
    assert not any(PASSWORD in output for output in ward["outputs"])
    tree = ward["root"] / "sql-tree"
    from_sql = pd.read_parquet(tree / "scores" / "vitals" / f"date={DAY}" / "scores.parquet")
    pd.testing.assert_frame_equal(from_sql, ward["files"])
    assert (tree / "landing" / "vitals" / f"date={DAY}" / "part-0.parquet").is_file()


def sink_rows(url: str) -> pd.DataFrame:
    engine = sqlalchemy.create_engine(url)
    try:
        return pd.read_sql("SELECT * FROM tsad_alarms", engine)
    finally:
        engine.dispose()


def use_project(ward: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This process pointed at the SQL project and its data tree, as the commands were."""
    for name in ("TSAD_PROJECT_ROOT", "TSAD_DATA_URI", "WARD_DB_URL"):
        monkeypatch.setenv(name, ward["env"][name])
    return Settings.from_env()


def test_the_sink_holds_the_days_alarms_once_even_after_a_failed_and_a_repeated_run(
    ward, monkeypatch
):
    url = ward["url"]
    settings = use_project(ward, monkeypatch)
    scores = settings.partition("scores", "vitals", DAY) / "scores.parquet"
    alarms = int(pd.read_parquet(scores)["is_anomaly"].sum())
    first = sink_rows(url)  # written by `tsad score` in the fixture
    assert len(first) == alarms > 0
    assert set(first["dataset"]) == {"vitals"} and set(first["day"]) == {DAY}
    monkeypatch.setenv("WARD_DB_URL", with_password(url).replace(":5432/", ":9/"))
    with pytest.raises(sinks.SinkFailed, match="sink table tsad_alarms") as failed:
        steps.deliver("vitals", DAY, settings)
    assert "after 3 attempts" in str(failed.value) and PASSWORD not in str(failed.value)
    monkeypatch.setenv("WARD_DB_URL", with_password(url))
    assert steps.deliver("vitals", DAY, settings) == {"tsad_alarms": alarms}
    assert len(sink_rows(url)) == alarms  # one copy, after a failed and a repeated delivery


def test_a_failing_query_and_an_empty_day_are_quarantined_without_the_password(ward, tmp_path):
    env = ward["env"]
    result = tsad("ingest", "--dataset", "vitals", "--date", EMPTY.isoformat(), env=env)
    assert result.returncode != 0 and "no rows" in result.stderr
    tree = ward["root"] / "sql-tree"
    report = tree / "quarantine" / "vitals" / f"date={EMPTY}" / "validation_report.json"
    assert "returned no rows" in report.read_text() and PASSWORD not in report.read_text()
    broken = {"kind": "sql", "url_env": "WARD_DB_URL", "query": QUERY.replace("ward_rows", "nope")}
    env = env | {"TSAD_PROJECT_ROOT": str(project(tmp_path / "broken", broken, []))}
    day = EMPTY + dt.timedelta(days=1)
    result = tsad("ingest", "--dataset", "vitals", "--date", day.isoformat(), env=env)
    assert result.returncode != 0 and PASSWORD not in result.stdout + result.stderr
    text = (tree / "quarantine" / "vitals" / f"date={day}" / "validation_report.json").read_text()
    failures = json.loads(text)["failures"]
    assert "query on postgresql://postgres:***@" in failures[0] and "nope" in failures[0]
    assert not (tree / "landing" / "vitals" / f"date={day}").exists()


def test_waiting_counts_the_sources_rows_and_names_the_deadline(ward, monkeypatch):
    settings = use_project(ward, monkeypatch)
    assert steps.has_landed("vitals", DAY, settings)
    later = dt.datetime.combine(EMPTY, dt.time(), tzinfo=dt.UTC)
    assert not steps.has_landed("vitals", EMPTY + dt.timedelta(days=5), settings, now=later)
    with pytest.raises(steps.NotLanded, match=r"not landed by 2026-01-1\dT00:00:00\+00:00"):
        steps.has_landed("vitals", EMPTY + dt.timedelta(days=5), settings)


def test_a_sink_table_name_cannot_inject_sql():
    with pytest.raises(ValueError, match="table"):
        SinkSpec(kind="sql", table="alarms; DROP TABLE x", url_env="X")
