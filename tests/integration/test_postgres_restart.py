"""PostgreSQL restarted under a running Airflow DAG: the task retries and the run completes.

Airflow runs as in ``test_airflow_postgres`` but on a private PostgreSQL server, so the restart
(``pg_ctl restart -m fast``: every connection dropped, as in a failover or a minor upgrade)
disturbs nobody else's database. The restart lands while a task of a ``tsad_train`` run is
executing; the run must still succeed and register its model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stack_servers import AirflowStack, private_postgres, wait_until

from pipeline import steps, tracking
from pipeline.config import RunConfig, Settings

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals")
RUN_TIMEOUT_S = 900


def test_training_run_survives_a_postgres_restart_while_a_task_runs(
    tsad_home: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    steps.generate(
        start=CONFIG.train.start,
        days=(CONFIG.test.end - CONFIG.train.start).days + 1,
        patients=4,
        labeled_from=CONFIG.validation.start,
        settings=tsad_home,
    )
    with private_postgres() as postgres:
        stack = AirflowStack(tsad_home, postgres.url, tmp_path / "airflow")
        try:
            stack.migrate()
            stack.start()
            api = stack.open_api(["tsad_train"])
            run_id = api.trigger("tsad_train", conf={"epochs": 1})

            def running_task() -> str | None:
                states = api.task_states("tsad_train", run_id)
                return next((task for task, state in states.items() if state == "running"), None)

            interrupted = wait_until(running_task, RUN_TIMEOUT_S, "a running task", poll=0.5)
            dropped = postgres.client_connections()
            postgres.restart()
            run = api.wait_for_run("tsad_train", run_id, RUN_TIMEOUT_S)
            instances = api.task_instances("tsad_train", run_id)
        finally:
            stack.stop()

    assert dropped > 0, "the restart dropped no Airflow connection: nothing was tested"
    states = {item["task_id"]: item["state"] for item in instances}
    assert run["state"] == "success", f"task states {states}; logs under {stack.home}"
    assert set(states.values()) == {"success"}, states
    production = tracking.connect(tsad_home).get_model_version_by_alias(
        tsad_home.model_name("vitals"), tracking.PRODUCTION
    )
    assert float(production.tags["threshold"]) > 0
    retried = {item["task_id"]: item["try_number"] for item in instances if item["try_number"] > 1}
    with capsys.disabled():
        print(
            f"\nPostgreSQL restarted while {interrupted} ran ({dropped} connections dropped); "
            f"tasks retried (try_number > 1): {retried or 'none'}"
        )
