"""Each entry point once, as a user runs it from a shell: ``tsad generate``, ``train``,
``promote --version``, ``eval "$(tsad airflow-env)"`` then ``airflow``, and the scoring DAG for
a chosen day.

One small home for the module: six demo days of two patients and a PCA model trained for one
epoch. The fixtures run the commands that build it; each test checks one of them and depends
on no other test having run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from smtp_inbox import Inbox, local_smtp

from pipeline import steps, tracking
from pipeline.config import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCORED_BY_DATE_PARAM = "2026-01-06"  # the run config's test day: landed and validated


@dataclass(frozen=True)
class UserHome:
    settings: Settings
    env: dict[str, str]
    generated: subprocess.CompletedProcess
    trained: subprocess.CompletedProcess


def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``command`` run by bash in the repository, as typed at a prompt."""
    return subprocess.run(
        ["bash", "-c", command], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def home(module_home: Settings) -> UserHome:
    """A user's first steps: generate the demo days, train and promote a model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TSAD_", "AIRFLOW"))}
    env |= {
        "TSAD_HOME": str(module_home.home),
        "TSAD_PROJECT_ROOT": str(REPO),
        "PYTHONPATH": str(REPO),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    generated = shell("tsad generate --days 6 --patients 2", env)
    trained = shell("tsad train --detector pca --epochs 1", env)
    return UserHome(module_home, env, generated, trained)


@pytest.fixture(scope="module")
def airflow_home(home: UserHome) -> Iterator[tuple[UserHome, Inbox]]:
    """Airflow's database created and the DAGs parsed, in the environment tsad prints, with
    a local mail server for the owners' notifications."""
    with local_smtp() as (inbox, uri):
        env = home.env | {"AIRFLOW_CONN_SMTP_DEFAULT": uri}
        made = shell(
            'eval "$(tsad airflow-env)" && airflow db migrate && airflow dags reserialize', env
        )
        assert made.returncode == 0, made.stderr[-3000:]
        yield dataclasses.replace(home, env=env), inbox


def test_generate_lands_the_demo_days(home: UserHome) -> None:
    assert home.generated.returncode == 0, home.generated.stderr[-2000:]
    assert home.generated.stdout.startswith("wrote 6 daily partitions")
    landing = home.settings.home / "data" / "landing" / "vitals"
    assert len(list(landing.glob("date=*/part-0.parquet"))) == 6


def test_train_registers_and_promotes_the_first_model(home: UserHome) -> None:
    assert home.trained.returncode == 0, home.trained.stderr[-2000:]
    printed = json.loads(home.trained.stdout)
    assert printed["promotion"]["promoted"] is True
    assert printed["promotion"]["reason"] == "no production version yet"
    production = tracking.load_production_model(home.settings, "vitals")
    assert production.bundle.detector.name == "pca"


def test_promote_by_hand_moves_production_to_the_named_version(home: UserHome) -> None:
    [run_dir] = (home.settings.home / "runs" / "vitals").iterdir()
    version = str(steps.register(str(run_dir), home.settings)["version"])
    promoted = shell(f"tsad promote --dataset vitals --version {version}", home.env)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert tracking.alias_version(home.settings, "vitals", "production") == version


def test_airflow_env_points_airflow_at_this_projects_dags(airflow_home) -> None:
    home, _ = airflow_home
    listed = shell('eval "$(tsad airflow-env)" && airflow dags list -o json', home.env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    dags = {dag["dag_id"]: dag["fileloc"] for dag in json.loads(listed.stdout)}
    # One training and one scoring DAG per dataset spec.
    assert set(dags) == {
        "tsad_train",
        "tsad_score",
        "tsad_train_transactions",
        "tsad_score_transactions",
    }
    assert all(Path(path).parent == REPO / "dags" for path in dags.values())


def test_the_scoring_dag_scores_the_day_its_date_param_names(airflow_home) -> None:
    """Run now (a logical date months after the data): only the Param can point at the day."""
    home, inbox = airflow_home
    conf = json.dumps({"date": SCORED_BY_DATE_PARAM})
    ran = shell(
        f"eval \"$(tsad airflow-env)\" && airflow dags test tsad_score --conf '{conf}'",
        home.env,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ["ward-owner@example.org"] in [to for to, _ in inbox.messages]  # the day's digest
    out = home.settings.home / "data" / "scores" / "vitals"
    summary = json.loads((out / f"date={SCORED_BY_DATE_PARAM}" / "summary.json").read_text())
    assert summary["date"] == SCORED_BY_DATE_PARAM
    assert [path.name for path in out.iterdir() if not path.name.startswith(".")] == [
        f"date={SCORED_BY_DATE_PARAM}"
    ]


def test_tasks_reach_mlflow_through_the_airflow_connection(airflow_home, tmp_path) -> None:
    """With the store named only by ``mlflow_default`` (the variable points nowhere useful),
    the scoring DAG still finds the production model: tasks read the connection first."""
    home, _ = airflow_home
    connection = {"conn_type": "generic", "extra": {"tracking_uri": home.settings.tracking_uri}}
    env = home.env | {"AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(connection)}
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    conf = json.dumps({"date": SCORED_BY_DATE_PARAM})
    ran = shell(
        f'eval "$(tsad airflow-env)" && export MLFLOW_TRACKING_URI={empty} '
        f"MLFLOW_REGISTRY_URI={empty} && airflow dags test tsad_score --conf '{conf}'",
        env,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert not (tmp_path / "empty.db").exists()
