"""The scoring DAG maps its ``score`` task over a day's shards and commits the day once.

Four patients, a PCA model trained in-process; the day is scored whole by the step as the
reference, then by ``tsad_score`` with the ``shards`` Param at 3 (``airflow dags test``: real
tasks, real XCom). One ``score`` task instance per shard must succeed, ``finalize`` after them,
and the committed day must equal the reference.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3

import pandas as pd
import pytest
from ward import day, trained_ward

from pipeline import steps
from pipeline.config import Settings
from pipeline.orchestration import init_airflow, parse_dags, run_dag
from pipeline.sharding import Shard

pytestmark = pytest.mark.slow

SCORED = day(5)


def test_the_dag_scores_three_shards_and_commits_the_day_scored_whole(module_home: Settings):
    settings = module_home
    trained_ward(settings, patients=4, detector="pca", detector_params={}, epochs=1)
    steps.score("vitals", day(4), settings)
    out = settings.partition("scores", "vitals", SCORED)
    steps.score("vitals", SCORED, settings)
    reference = settings.home / "reference"
    shutil.copytree(out, reference)
    shutil.rmtree(out)

    init_airflow(settings)
    parse_dags(settings)
    conf = {"date": SCORED.isoformat(), "shards": 3}
    assert run_dag("tsad_score", settings, conf=conf) == "success"

    database = settings.home / "airflow" / "airflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = 'tsad_score'"
        ).fetchall()
    mapped = sorted((index, state) for task, index, state in rows if task == "score")
    assert mapped == [(0, "success"), (1, "success"), (2, "success")]
    assert ("finalize", -1, "success") in rows

    def ordered(folder):
        scores = pd.read_parquet(folder / steps.SCORES_FILE)
        return scores.sort_values(["entity", "timestamp"], ignore_index=True)

    pd.testing.assert_frame_equal(ordered(out), ordered(reference))
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / steps.ALARMS_FILE), pd.read_parquet(reference / steps.ALARMS_FILE)
    )
    summary = json.loads((out / steps.SUMMARY_FILE).read_text())
    assert summary == json.loads((reference / steps.SUMMARY_FILE).read_text())
    for index in range(3):
        part = steps.shard_partition(settings, "vitals", SCORED, Shard(index, 3))
        assert (part / "shard.json").is_file()
