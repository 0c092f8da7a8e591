"""The production stack's MLflow tracking server, started by ``mlflow/start-server.sh`` as a
plain process: PostgreSQL backend and auth stores (databases of its own, dropped afterwards),
artifacts served from a temporary directory, the basic-auth app and an allowed-hosts list.
The pipeline reaches it exactly as on the stack: ``MLFLOW_TRACKING_URI`` plus credentials in
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, no code change."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from homes import use_home
from mlflow.exceptions import MlflowException
from prerequisites import require
from stack_servers import (
    HOST,
    POSTGRES_DSN,
    VENV_BIN,
    Server,
    free_port,
    postgres_available,
    postgres_database,
)

from pipeline import steps, tracking
from pipeline.config import RunConfig, Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ADMIN = ("admin", "admin-" + uuid.uuid4().hex)
PIPELINE_USER = ("tsad-pipeline", "pipeline-" + uuid.uuid4().hex)
STARTUP_TIMEOUT_S = 300


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: Path


@pytest.fixture(scope="module")
def databases() -> Iterator[tuple[str, str]]:
    """A backend store and an auth store of this test's own on the local PostgreSQL."""
    require(postgres_available(), f"PostgreSQL is not reachable at {POSTGRES_DSN!r}")
    with postgres_database("tsad_mlflow") as backend, postgres_database("tsad_mlflow_auth") as auth:
        yield backend, auth


@pytest.fixture(scope="module")
def server(databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    backend, auth = databases
    port = free_port()
    artifacts = tmp_path_factory.mktemp("served-artifacts")
    env = os.environ | {
        "PATH": str(VENV_BIN) + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_BACKEND_STORE_URI": backend,
        "MLFLOW_AUTH_DATABASE_URI": auth,
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLFLOW_ALLOWED_HOSTS": f"{HOST}:{port}",
        "MLFLOW_HOST": HOST,
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    process = Server.start(
        "mlflow-server",
        f"http://{HOST}:{port}",
        ["bash", str(REPO / "mlflow" / "start-server.sh")],
        env,
        tmp_path_factory.mktemp("mlflow-server"),
    )
    try:
        process.wait_ready("/health", STARTUP_TIMEOUT_S)
        yield MlflowServer(process.url, artifacts)
    finally:
        process.stop(grace=30)


@pytest.fixture(scope="module")
def pipeline_account(server: MlflowServer) -> tuple[str, str]:
    """The pipeline's non-admin account, made by ``mlflow/ensure_user.py`` as on the stack;
    a second run (a restarted stack) updates it instead of failing."""
    env = os.environ | {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "TSAD_MLFLOW_USERNAME": PIPELINE_USER[0],
        "TSAD_MLFLOW_PASSWORD": PIPELINE_USER[1],
    }
    script = [sys.executable, str(REPO / "mlflow" / "ensure_user.py")]
    runs = [subprocess.run(script, env=env, capture_output=True, text=True) for _ in range(2)]
    outputs = [run.stdout + run.stderr for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert "created" in outputs[0] and "updated" in outputs[1]
    return PIPELINE_USER


@pytest.fixture
def stack_settings(server, pipeline_account, tmp_path, monkeypatch) -> Settings:
    """The pipeline's environment on the stack: a test's own home, then a remote tracking URI
    and credentials."""
    use_home(tmp_path / "tsad", monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", pipeline_account[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pipeline_account[1])
    return Settings.from_env()


def trained_run(settings: Settings) -> str:
    """A calibrated, evaluated run on three synthetic patients (PCA: quick to fit; the server
    is under test here, not the detector)."""
    config = RunConfig.load("vitals").model_copy(
        update={"detector": "pca", "detector_params": {}, "device": "cpu"}
    )
    days = steps.run_days(config)
    first, labeled = config.train.start, config.validation.start
    steps.generate(first, len(days), patients=3, labeled_from=labeled, settings=settings)
    steps.validate_days(config.dataset, days, settings)
    run_dir = steps.prepare(config, settings)
    return steps.evaluate(steps.calibrate(steps.train(run_dir)))


def test_requests_without_credentials_are_refused(server):
    response = requests.get(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1")
    assert response.status_code == 401
    signed_in = requests.get(
        f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1", auth=ADMIN
    )
    assert signed_in.status_code == 200


def test_a_host_header_not_in_the_allowed_list_is_refused(server):
    response = requests.get(
        f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1",
        auth=ADMIN,
        headers={"Host": "attacker.example:5000"},
    )
    assert response.status_code == 403


def test_register_and_promote_through_the_server(server, stack_settings):
    assert stack_settings.artifact_root is None  # the server decides where artifacts live
    run_dir = trained_run(stack_settings)
    registered = steps.register(run_dir, stack_settings)
    decision = steps.promote_challenger("vitals", settings=stack_settings)
    assert decision.promoted and decision.previous is None
    assert decision.version == registered["version"]
    assert decision.reason == "no production version yet"
    production = tracking.load_production_model(stack_settings, "vitals")
    assert production.version == registered["version"]
    assert production.bundle.spec.name == "vitals"
    served = {path.name for path in server.artifacts.rglob("*") if path.is_file()}
    assert {"MLmodel", "calibration.json", "metrics.json"} <= served
    assert not (stack_settings.home / "mlflow").exists()  # nothing fell back to a local store


def test_wrong_credentials_fail_with_the_reason(server, stack_settings, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(MlflowException, match="401") as refused:
        tracking.load_production_model(stack_settings, "vitals")
    assert "not authenticated" in str(refused.value)
    assert refused.value.error_code == "UNAUTHENTICATED"  # not retried: tracking._is_refused
