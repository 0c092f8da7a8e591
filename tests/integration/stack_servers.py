"""The stack's servers as plain processes, for integration tests and the UI screenshots.

Each server runs from this virtual environment's ``bin/`` in its own process group, writes to a
log file that failures quote, and is stopped by its process id. Airflow runs as it is deployed
(LocalExecutor on PostgreSQL; scheduler, dag-processor and api-server as separate processes),
MLflow serves the test's own store, and headless Chromium renders both UIs. A test that restarts
PostgreSQL gets a private server of its own (:func:`private_postgres`), never the shared one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import requests
from prerequisites import require

from pipeline.config import Settings
from pipeline.orchestration import airflow_environment

VENV_BIN = Path(sys.executable).parent
POSTGRES_DSN = os.environ.get("TSAD_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres")
HOST = "127.0.0.1"
AIRFLOW_USER = "tsad-admin"


def free_port() -> int:
    """A TCP port nobody listens on now (parallel test sessions must not collide)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 1.0):
    """Poll ``condition`` until it returns something truthy: a bounded wait that names its goal."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return result


# --- PostgreSQL ----------------------------------------------------------------------------


def postgres_available() -> bool:
    try:
        psycopg2.connect(POSTGRES_DSN, dbname="postgres", connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, uniquely named database, dropped afterwards; yields its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_DSN, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        params = admin.get_dsn_parameters()
        yield f"postgresql://{params['user']}@{params['host']}:{params['port']}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


POSTGRES_BIN = Path(os.environ.get("TSAD_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
POSTGRES_OS_USER = "postgres"


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own, so a fault injected into it disturbs nobody else."""

    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_OS_USER}@{HOST}:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl`` as the ``postgres`` OS user (the server refuses to run as root)."""
        command = [str(POSTGRES_BIN / "pg_ctl"), "--wait", "--pgdata", str(self.data_dir), *args]
        result = subprocess.run(
            ["runuser", "-u", POSTGRES_OS_USER, "--", *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl {args[0]} failed: {result.stderr}\n{log}")

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> None:
        """Serve on 127.0.0.1 only, with the socket in the data directory (no shared paths).

        The server logs to a file: writing to ``pg_ctl``'s own pipes would keep them open.
        """
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses={HOST} -c fsync=off"
        self.pg_ctl("start", "--log", str(self.log), "--options", options)

    def client_connections(self) -> int:
        """Other clients' open sessions: the ones a restart drops."""
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        with (
            contextlib.closing(psycopg2.connect(self.url)) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(query)
            return cursor.fetchone()[0]

    def restart(self) -> None:
        """The fault: a fast restart drops every client connection, as a failover does."""
        self.pg_ctl("restart", "--mode", "fast", "--log", str(self.log))


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """``initdb`` into a fresh directory, serve it on a free port with trust auth, stop, delete.

    The directory lies outside pytest's root-only tmp tree because the ``postgres`` user owns
    it.
    """
    initdb = POSTGRES_BIN / "initdb"
    require(initdb.exists(), f"PostgreSQL server binaries are not installed ({initdb})")
    data_dir = Path(tempfile.mkdtemp(prefix="tsad-private-postgres-"))
    shutil.chown(data_dir, POSTGRES_OS_USER, POSTGRES_OS_USER)
    server = PrivatePostgres(data_dir, free_port())
    try:
        result = subprocess.run(
            ["runuser", "-u", POSTGRES_OS_USER, "--", str(initdb), "--pgdata", str(data_dir),
             "--auth", "trust", "--username", POSTGRES_OS_USER, "--no-sync"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb into {data_dir} failed:\n{result.stderr[-3000:]}")
        server.start()
        try:
            yield server
        finally:
            server.pg_ctl("stop", "--mode", "fast")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# --- processes -----------------------------------------------------------------------------


@dataclass
class Server:
    """One long-running process in its own process group, serving HTTP at ``url``."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, name: str, url: str, args: list[str], env: dict[str, str], log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"{name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                args,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return cls(name, url, process, log)

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n{text[-chars:]}"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}\n{self.tail()}")

    def wait_ready(self, health_path: str, timeout: float = 180) -> None:
        """Until ``health_path`` answers 200 (the process dying ends the wait at once)."""

        def healthy() -> bool:
            self.check_alive()
            try:
                return requests.get(f"{self.url}{health_path}", timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_until(healthy, timeout, f"{self.name} at {self.url}\n{self.tail()}")

    def terminate(self) -> None:
        """SIGTERM the whole process group: servers fork workers and task processes."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace: float = 20.0) -> None:
        """Terminate, give the group ``grace`` seconds to exit, then SIGKILL what is left."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def stop_all(servers: list[Server]) -> None:
    """Terminate every server at once, then reap each (shutdowns overlap instead of adding up)."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


# --- Airflow -------------------------------------------------------------------------------


@dataclass
class AirflowStack:
    """Airflow 3 as deployed: LocalExecutor on PostgreSQL, one process per component."""

    settings: Settings
    database_url: str
    home: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    servers: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_server(self) -> Server:
        return self.servers[0]

    def environment(self, port: int, all_admins: bool = False) -> dict[str, str]:
        """The product's Airflow variables, pointed at PostgreSQL and tuned for a short test.

        ``all_admins`` turns authentication off: only for a second api-server that a headless
        browser screenshots, never for the one the API tests talk to.
        """
        return (
            os.environ
            | airflow_environment(self.settings)
            | {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(all_admins),
                # Tasks report to the authenticated api-server, whichever one is being started.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": self.jwt_secret,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                # Runs come from the REST API only: no scheduled run competes with them.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
                "OMP_NUM_THREADS": "1",
            }
        )

    @property
    def _passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    def migrate(self) -> None:
        """Create the schema, the ``gpu`` pool the training task runs in, and the API user (the
        simple auth manager keeps a known password)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self._passwords_file.write_text(json.dumps({AIRFLOW_USER: self.password}))
        for args in (["db", "migrate"], ["pools", "set", "gpu", "1", "training tasks"]):
            result = subprocess.run(
                [str(VENV_BIN / "airflow"), *args],
                env=self.environment(self.port),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stderr[-3000:]}")

    def _launch(self, name: str, command: list[str], url: str, env: dict[str, str]) -> Server:
        airflow = str(VENV_BIN / "airflow")
        server = Server.start(name, url, [airflow, *command], env, self.home / "process-logs")
        self.servers.append(server)
        return server

    def start(self) -> None:
        """Launch api-server, scheduler and dag-processor; :meth:`wait_ready` waits for them."""
        env = self.environment(self.port)
        self._launch("api-server", ["api-server"], self.url, env)
        self._launch("scheduler", ["scheduler", "--skip-serve-logs"], self.url, env)
        self._launch("dag-processor", ["dag-processor"], self.url, env)

    def start_browsable_api_server(self) -> Server:
        """A second api-server on the same database with login disabled, for screenshots."""
        port = free_port()
        env = self.environment(port, all_admins=True)
        return self._launch("api-server-browsable", ["api-server"], f"http://{HOST}:{port}", env)

    def wait_ready(self, timeout: float = 180) -> None:
        self.api_server.wait_ready("/api/v2/monitor/health", timeout)

    def open_api(self, dag_ids: Sequence[str]) -> AirflowApi:
        """Wait for the components :meth:`start` launched, sign in, and unpause ``dag_ids``
        once parsed: an API ready to trigger runs.

        Separate from :meth:`start` so that servers launched in between (the UIs) come up
        while this waits.
        """
        self.wait_ready()
        api = AirflowApi(self)
        api.login(AIRFLOW_USER, self.password)
        for dag_id in dag_ids:
            api.wait_for_dag(dag_id)
            api.unpause(dag_id)
        return api

    def check_alive(self) -> None:
        for server in self.servers:
            server.check_alive()

    def logs(self) -> str:
        return "\n".join(server.tail() for server in self.servers)

    def stop(self) -> None:
        stop_all(self.servers)
        self.servers.clear()


class AirflowApi:
    """The public REST API (v2) with a JWT from the simple auth manager's token endpoint."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        self.session = requests.Session()

    def login(self, username: str, password: str) -> None:
        response = requests.post(
            f"{self.stack.url}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        url = f"{self.stack.url}/api/v2{path}"
        response = self.session.request(method, url, timeout=30, **kwargs)
        if not response.ok:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed ``dag_id`` into the database."""

        def parsed() -> bool:
            self.stack.check_alive()
            return self.session.get(f"{self.stack.url}/api/v2/dags/{dag_id}", timeout=30).ok

        wait_until(parsed, timeout, f"the dag-processor to parse {dag_id}\n{self.stack.logs()}")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, conf: dict | None = None, logical_date: str | None = None
    ) -> str:
        """A manual run; ``logical_date`` None is how a run without a schedule slot looks."""
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.request("GET", path).json()["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {item["task_id"]: item["state"] for item in self.task_instances(dag_id, run_id)}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """The run once it is ``success`` or ``failed``, within ``timeout`` seconds."""

        def finished() -> dict | None:
            self.stack.check_alive()
            run = self.run(dag_id, run_id)
            return run if run["state"] in {"success", "failed"} else None

        try:
            return wait_until(finished, timeout, f"{dag_id} run {run_id} to finish", poll=2)
        except TimeoutError as exc:
            states = self.task_states(dag_id, run_id)
            raise TimeoutError(f"{exc}; task states {states}\n{self.stack.logs()}") from exc


# --- MLflow --------------------------------------------------------------------------------


def start_mlflow_server(settings: Settings, log_dir: Path) -> Server:
    """A plain ``mlflow server`` on the product's store (its health path is ``/health``)."""
    port = free_port()
    args = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", settings.tracking_uri]
    if settings.artifact_root:
        args += ["--default-artifact-root", settings.artifact_root]
    args += ["--host", HOST, "--port", str(port), "--workers", "1"]
    env = os.environ | {
        "PYTHONWARNINGS": "ignore",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The job runner serves GenAI features the product does not use (seven processes).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return Server.start("mlflow-server", f"http://{HOST}:{port}", args, env, log_dir)
