"""The scoring DAG on a distributed executor: CeleryExecutor with two workers.

Redis is the broker, PostgreSQL holds Airflow's metadata and Celery's results, and two
``airflow celery worker`` processes with names of their own run the tasks, beside the
scheduler, dag-processor and api-server of the stack test. A day is scored through the REST
API as the DAG maps it over shards; the test reads which worker ran each shard (printed under
``pytest -s``), checks that the day was committed once, and compares its scores with the same
day scored unsharded by ``tsad score``. Then one worker is killed while it runs a shard and
started again, as a lost machine comes back: the shard is retried alone (on whichever worker
takes it) and the day still commits once, with the same scores.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
from celery_stack import CeleryStack, redis_available
from homes import use_home
from prerequisites import require
from stack_servers import AirflowApi, postgres_available, postgres_database, wait_until

from pipeline import cli, steps, tracking
from pipeline.config import RunConfig, Settings
from pipeline.data import storage

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals")
SCORED_DAY = CONFIG.test.end + dt.timedelta(days=1)
PATIENTS = 8
WORKERS = ("worker-a", "worker-b")
DAG = "tsad_score"
SHARDS = 4
SHARD_TASK = "score"
COMMIT_TASK = "finalize"
RUN_TIMEOUT_S = 300
SORT = ["entity", "timestamp"]


@dataclass
class CeleryRun:
    settings: Settings
    stack: CeleryStack
    api: AirflowApi
    unsharded: pd.DataFrame


def day_scores(settings: Settings) -> pd.DataFrame:
    """The committed day's score rows in a fixed order (shards commit them in any order)."""
    folder = storage.fetch(settings, settings.partition("scores", "vitals", SCORED_DAY))
    frame = pd.read_parquet(folder / steps.SCORES_FILE)
    return frame.sort_values(SORT, ignore_index=True)


def commits(settings: Settings) -> int:
    """How many times the day was committed: each commit records one MLflow scoring run."""
    client = tracking.connect(settings)
    experiment = client.get_experiment_by_name(f"{settings.model_name('vitals')}-scoring")
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], f"tags.date = '{SCORED_DAY}'")
    return len(runs)


def tsad(*args: str) -> None:
    """``tsad <args>`` in this process (the interpreter is warm: seconds saved per command);
    its report is dropped so that ``pytest -s`` shows the shard tables alone."""
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(list(args)) == 0, f"tsad {' '.join(args)} failed"


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryRun]:
    """A production PCA model, the day scored unsharded by the CLI, and the Celery stack."""
    require(postgres_available(), "PostgreSQL is not reachable")
    require(redis_available(), "Redis is not reachable")
    root = tmp_path_factory.mktemp("celery")
    with pytest.MonkeyPatch.context() as patch, postgres_database("tsad_celery") as database:
        settings = use_home(root / "tsad", patch)
        steps.generate(
            start=CONFIG.train.start,
            days=(SCORED_DAY - CONFIG.train.start).days + 1,
            patients=PATIENTS,
            labeled_from=CONFIG.validation.start,
            settings=settings,
        )
        stack = CeleryStack(settings, database, root / "airflow")
        try:
            stack.migrate()
            stack.start()  # the servers come up while the model trains
            for name in WORKERS:
                stack.start_worker(name)
            tsad("train", "--detector", "pca")
            tsad("validate", "--dataset", "vitals", "--date", str(SCORED_DAY))
            tsad("score", "--dataset", "vitals", "--date", str(SCORED_DAY), "--shards", "1")
            unsharded = day_scores(settings)
            api = stack.open_api([DAG])
            yield CeleryRun(settings, stack, api, unsharded)
        finally:
            stack.stop()


def trigger(run: CeleryRun) -> str:
    return run.api.trigger(DAG, conf={"date": str(SCORED_DAY), "shards": SHARDS})


def shard_instances(run: CeleryRun, run_id: str) -> list[dict]:
    instances = run.api.task_instances(DAG, run_id)
    return sorted(
        (ti for ti in instances if ti["task_id"] == SHARD_TASK), key=lambda ti: ti["map_index"]
    )


def tries(run: CeleryRun, run_id: str, ti: dict) -> list[dict]:
    path = f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/{ti['map_index']}/tries"
    return run.api.request("GET", path).json()["task_instances"]


def seconds(attempt: dict) -> str:
    if not (attempt["start_date"] and attempt["end_date"]):
        return "-"
    start, end = (dt.datetime.fromisoformat(attempt[key]) for key in ("start_date", "end_date"))
    return f"{(end - start).total_seconds():.0f}"


def print_table(run: CeleryRun, run_id: str, title: str) -> None:
    """Each shard's tries: which worker ran it, how it ended and how long it took (shown by
    ``pytest -s``)."""
    print(f"\n{title}\n  shard  try  worker     state    seconds")
    for ti in shard_instances(run, run_id):
        for attempt in tries(run, run_id, ti):
            print(
                f"  {ti['map_index']:>5}  {attempt['try_number']:>3}  "
                f"{attempt['hostname'] or '-':<9}  {attempt['state']:<7}  {seconds(attempt):>7}"
            )


def assert_committed_like_unsharded(run: CeleryRun, dag_run: dict, commits_before: int) -> None:
    """The run succeeded, its one commit ran once, and the day is the unsharded day."""
    instances = run.api.task_instances(DAG, dag_run["dag_run_id"])
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert dag_run["state"] == "success", f"task states {states}; logs under {run.stack.home}"
    (commit,) = (ti for ti in instances if ti["task_id"] == COMMIT_TASK)
    assert (commit["state"], commit["try_number"]) == ("success", 1)
    assert commits(run.settings) == commits_before + 1
    pd.testing.assert_frame_equal(day_scores(run.settings), run.unsharded)


def test_shards_spread_over_both_workers_and_commit_the_unsharded_scores(celery_run: CeleryRun):
    before = commits(celery_run.settings)
    run_id = trigger(celery_run)
    dag_run = celery_run.api.wait_for_run(DAG, run_id, RUN_TIMEOUT_S)
    print_table(celery_run, run_id, "shards of the day and the worker that ran each")
    assert_committed_like_unsharded(celery_run, dag_run, before)
    shards = shard_instances(celery_run, run_id)
    assert [ti["map_index"] for ti in shards] == list(range(SHARDS))
    assert {ti["hostname"] for ti in shards} == set(WORKERS)
    assert [ti["try_number"] for ti in shards] == [1] * SHARDS


def test_a_shard_on_a_killed_worker_is_retried_and_the_day_commits_once(celery_run: CeleryRun):
    before = commits(celery_run.settings)
    run_id = trigger(celery_run)

    def running_shard() -> dict | None:
        for ti in shard_instances(celery_run, run_id):
            if ti["state"] == "running" and ti["hostname"] in celery_run.stack.workers:
                return ti
        return None

    victim = wait_until(running_shard, RUN_TIMEOUT_S, "a shard running on a worker", poll=0.25)
    lost = victim["hostname"]
    celery_run.stack.kill_worker(lost)
    killed_at = time.monotonic()
    celery_run.stack.start_worker(lost)  # the machine comes back, with nothing of its past
    dag_run = celery_run.api.wait_for_run(DAG, run_id, RUN_TIMEOUT_S)
    print_table(celery_run, run_id, f"{lost} killed while it ran shard {victim['map_index']}")
    print(f"  the run finished {time.monotonic() - killed_at:.0f} s after the kill")
    assert_committed_like_unsharded(celery_run, dag_run, before)
    attempts = [(a["hostname"], a["state"]) for a in tries(celery_run, run_id, victim)]
    assert len(attempts) == 2, attempts
    assert attempts[0] == (lost, "failed")
    assert attempts[1][1] == "success"
    others = [
        ti for ti in shard_instances(celery_run, run_id) if ti["map_index"] != victim["map_index"]
    ]
    assert all(ti["state"] == "success" and ti["try_number"] == 1 for ti in others)
