"""The stack's Airflow, driven as a team drives it: through the REST API.

Airflow 3 runs with the LocalExecutor on its own PostgreSQL database, with scheduler,
dag-processor and api-server as separate processes. The training DAG and then the scoring DAG
are triggered over the public API (v2) with a JWT from the simple auth manager, and the outcome
is checked where a user looks: the MLflow registry, the scores partition, and both web UIs in
headless Chromium. The UI tests save their screenshots; ``make screenshots`` keeps them in
``docs/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pandas as pd
import pytest
import requests
from headless_chromium import Browser, headless_browser
from homes import use_home
from PIL import Image
from prerequisites import require
from stack_servers import (
    AIRFLOW_USER,
    POSTGRES_DSN,
    AirflowApi,
    AirflowStack,
    Server,
    postgres_available,
    postgres_database,
    start_mlflow_server,
)

from pipeline import steps, tracking
from pipeline.config import RunConfig, Settings

pytestmark = pytest.mark.slow

CONFIG = RunConfig.load("vitals")
SCORED_DAY = CONFIG.test.end + dt.timedelta(days=1)
RUN_TIMEOUT_S = 900
MLFLOW_SCREENSHOT = "mlflow-registered-model.png"
AIRFLOW_SCREENSHOT = "airflow-grid-tsad-train.png"


@dataclass
class StackRun:
    """What the module's one pass through the stack produced."""

    settings: Settings
    stack: AirflowStack
    api: AirflowApi
    train: dict
    score: dict
    ui_servers: dict[str, Server]


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackRun]:
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_DSN!r}")
    root = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as cleanup:
        settings = use_home(root / "tsad", patch)
        steps.generate(
            start=CONFIG.train.start,
            days=(SCORED_DAY - CONFIG.train.start).days + 1,
            patients=4,
            labeled_from=CONFIG.validation.start,
            settings=settings,
        )
        database_url = cleanup.enter_context(postgres_database("tsad_airflow"))
        stack = AirflowStack(settings, database_url, root / "airflow")
        cleanup.callback(stack.stop)
        stack.migrate()
        stack.start()
        # The UIs start now, while the DAGs run, and serve the UI tests once they are up.
        ui_servers = {
            "mlflow": start_mlflow_server(settings, root / "mlflow-logs"),
            "airflow": stack.start_browsable_api_server(),
        }
        cleanup.callback(ui_servers["mlflow"].stop)
        api = stack.open_api(["tsad_train", "tsad_score"])
        train_id = api.trigger("tsad_train", conf={"epochs": 1})
        train = api.wait_for_run("tsad_train", train_id, RUN_TIMEOUT_S)
        # The scheduler's run for a day starts once the day is over: its logical date is the
        # next midnight and its data interval is the day itself.
        next_midnight = f"{SCORED_DAY + dt.timedelta(days=1)}T00:00:00Z"
        score_id = api.trigger("tsad_score", logical_date=next_midnight)
        score = api.wait_for_run("tsad_score", score_id, RUN_TIMEOUT_S)
        yield StackRun(settings, stack, api, train, score, ui_servers)


def assert_succeeded(run: StackRun, dag_run: dict) -> None:
    states = run.api.task_states(dag_run["dag_id"], dag_run["dag_run_id"])
    assert dag_run["state"] == "success", f"task states {states}; logs under {run.stack.home}"
    # A day without drift skips the task that would signal it, and a stack without an SMTP
    # connection skips the digest; every other task succeeds.
    skipped = {"signal_drift", "send_digest"} & set(states)
    expected = {task: "success" for task in states} | dict.fromkeys(skipped, "skipped")
    assert states == expected


def test_the_api_refuses_requests_without_valid_credentials(stack_run: StackRun):
    url = stack_run.stack.url
    assert requests.get(f"{url}/api/v2/dags", timeout=30).status_code == 401
    wrong = {"username": AIRFLOW_USER, "password": "not-the-password"}
    assert requests.post(f"{url}/auth/token", json=wrong, timeout=30).status_code == 401
    # An admin claim signed with any key but the stack's own is no credential either.
    forged = jwt.encode({"sub": AIRFLOW_USER, "role": "admin"}, "not-the-secret" * 5, "HS512")
    headers = {"Authorization": f"Bearer {forged}"}
    assert requests.get(f"{url}/api/v2/dags", headers=headers, timeout=30).status_code == 403


def test_training_dag_run_through_the_api_promotes_a_model(stack_run: StackRun):
    assert_succeeded(stack_run, stack_run.train)
    assert stack_run.train["triggered_by"] == "rest_api"
    assert stack_run.train["conf"] == {"epochs": 1}
    client = tracking.connect(stack_run.settings)
    name = stack_run.settings.model_name("vitals")
    production = client.get_model_version_by_alias(name, tracking.PRODUCTION)
    assert float(production.tags["threshold"]) > 0
    assert production.tags["calibration_method"] == CONFIG.calibration


def test_scoring_dag_run_scores_its_data_interval_with_the_production_model(
    stack_run: StackRun,
):
    assert_succeeded(stack_run, stack_run.score)
    assert stack_run.score["data_interval_start"].startswith(SCORED_DAY.isoformat())
    settings = stack_run.settings
    scores = pd.read_parquet(settings.partition("scores", "vitals", SCORED_DAY) / "scores.parquet")
    landed = pd.read_parquet(settings.partition("landing", "vitals", SCORED_DAY))
    production = tracking.connect(settings).get_model_version_by_alias(
        settings.model_name("vitals"), tracking.PRODUCTION
    )
    assert len(scores) == len(landed)
    assert (scores["timestamp"].dt.date == SCORED_DAY).all()
    assert scores["score"].notna().all()
    assert set(scores["model_version"].astype(str)) == {str(production.version)}


# --- the web UIs, as a browser renders them --------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    return headless_browser(tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def ui_servers(stack_run: StackRun) -> dict[str, Server]:
    """MLflow's UI on the run's store, and Airflow's UI with login disabled (screenshots only)."""
    stack_run.ui_servers["mlflow"].wait_ready("/health")
    stack_run.ui_servers["airflow"].wait_ready("/api/v2/monitor/health")
    return stack_run.ui_servers


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the UI tests save their screenshots: ``TSAD_SCREENSHOT_DIR``, else a tmp dir."""
    chosen = os.environ.get("TSAD_SCREENSHOT_DIR")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


def visible_text(dom: str) -> str:
    return dom.replace("&nbsp;", " ").replace("\xa0", " ")


def assert_rendered_screenshot(path: Path, browser: Browser) -> None:
    """A PNG of the browser window with real content, not a blank or error page."""
    with Image.open(path) as image:
        assert image.size == browser.window
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 64, f"{path} looks blank"


def test_mlflow_ui_shows_the_registered_model_with_its_production_alias(
    stack_run: StackRun, ui_servers: dict[str, Server], browser: Browser, screenshot_dir: Path
):
    name = stack_run.settings.model_name("vitals")
    page = f"{ui_servers['mlflow'].url}/#/models/{name}"
    text = visible_text(browser.render(page, screenshot_dir / MLFLOW_SCREENSHOT))
    assert name in text
    assert f"@ {tracking.PRODUCTION}" in text, "the alias tag is not rendered"
    assert_rendered_screenshot(screenshot_dir / MLFLOW_SCREENSHOT, browser)


def test_airflow_ui_grid_shows_every_task_of_the_training_run(
    stack_run: StackRun, ui_servers: dict[str, Server], browser: Browser, screenshot_dir: Path
):
    run_id = urllib.parse.quote(stack_run.train["dag_run_id"], safe="")
    page = f"{ui_servers['airflow'].url}/dags/tsad_train/runs/{run_id}"
    text = visible_text(browser.render(page, screenshot_dir / AIRFLOW_SCREENSHOT))
    tasks = stack_run.api.task_states("tsad_train", stack_run.train["dag_run_id"])
    missing = [task for task in tasks if task not in text]
    assert not missing, f"the grid does not show {missing}"
    assert "Success" in text
    assert_rendered_screenshot(screenshot_dir / AIRFLOW_SCREENSHOT, browser)
