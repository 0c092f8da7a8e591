"""The registered model as a user deploys it: ``mlflow models serve`` answering over HTTP.

The ward's model is served the standard way, from the registry alias
(``models:/tsad-vitals@production``) with the local environment manager, as a real server on
127.0.0.1. A day's frame sent as MLflow's ``dataframe_split`` JSON, timestamps in ISO 8601, must
come back with the rows ``tsad score`` writes for that day. The model must install nothing but
pinned third-party packages: the name ``tsad`` on the public index is not this project's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from stack_servers import HOST, VENV_BIN, Server, free_port
from ward import Ward, day, trained_ward

from pipeline import tracking
from pipeline.config import DatasetSpec, Settings
from pipeline.data import io

REPO = Path(__file__).resolve().parents[2]
MODEL_URI = "models:/tsad-vitals@production"
COMPARED = ["timestamp", "entity", "score", "threshold", "is_anomaly"]
SCORED_DAY = day(5)  # the day before it never passed validation: no context, as online


@pytest.fixture(scope="module")
def ward(module_home: Settings) -> Ward:
    return trained_ward(module_home)


@pytest.fixture(scope="module")
def model_dir(ward: Ward, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The production model's files, downloaded from the registry as a deployment would."""
    tracking.connect(ward.settings)
    target = tmp_path_factory.mktemp("model")
    return Path(mlflow.artifacts.download_artifacts(MODEL_URI, dst_path=str(target)))


@pytest.fixture(scope="module")
def server(ward: Ward, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``mlflow models serve`` on the registry alias, without this checkout on PYTHONPATH."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # it execs uvicorn
        "MLFLOW_TRACKING_URI": ward.settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": ward.settings.registry_uri,
    }
    args = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", MODEL_URI]
    args += ["--env-manager", "local", "--host", HOST, "--port", str(port)]
    served = Server.start(
        "model-server", f"http://{HOST}:{port}", args, env, tmp_path_factory.mktemp("serve")
    )
    try:
        served.wait_ready("/ping", timeout=300)
        yield served
    finally:
        served.stop()


def invoke(server: Server, body: dict) -> pd.DataFrame:
    answer = requests.post(f"{server.url}/invocations", json=body, timeout=120)
    assert answer.ok, answer.text[-2000:]
    rows = pd.DataFrame(answer.json()["predictions"])
    rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True, format="ISO8601")
    return rows


def test_the_model_requires_only_packages_pinned_by_constraints(model_dir: Path):
    pinned = {
        line.split("#", 1)[0].strip()
        for line in (REPO / "constraints.txt").read_text().splitlines()
    }
    requirements = (model_dir / "requirements.txt").read_text().split()
    names = {re.split(r"[=<>!~\[ ]", line)[0].lower() for line in requirements}
    assert "tsad" not in names
    assert not {"apache-airflow", "great-expectations", "great_expectations"} & names
    assert set(requirements) <= pinned, set(requirements) - pinned
    assert {"mlflow", "torch", "pandas"} <= names


def test_the_model_carries_the_pipeline_package(model_dir: Path):
    code = model_dir / "code" / "pipeline"
    assert (code / "scoring.py").is_file() and (code / "packaged_model.py").is_file()
    assert not list(code.rglob("__pycache__"))


def test_the_served_model_answers_with_the_rows_of_batch_scoring(ward: Ward, server: Server):
    settings = ward.settings
    env = os.environ | {"PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "pipeline.cli", "score", "--dataset", "vitals"]
    subprocess.run([*cli, "--date", SCORED_DAY.isoformat()], env=env, check=True, cwd=REPO)
    batch = pd.read_parquet(settings.partition("scores", "vitals", SCORED_DAY) / "scores.parquet")

    spec = DatasetSpec.load("vitals")
    landed = io.read_partition(settings.partition("landing", "vitals", SCORED_DAY))
    frame = io.to_canonical(landed, spec).drop(columns="label")
    split = json.loads(frame.to_json(orient="split", date_format="iso", index=False))
    assert split["data"][0][0].endswith("Z")  # ISO 8601 with its UTC designator, as sent
    online = invoke(server, {"dataframe_split": split})

    assert len(online) == len(batch) == len(frame)
    online = online.sort_values(["entity", "timestamp"], ignore_index=True)
    batch = batch.sort_values(["entity", "timestamp"], ignore_index=True)
    assert (online["timestamp"] == batch["timestamp"]).all()
    assert online["entity"].tolist() == batch["entity"].tolist()
    np.testing.assert_allclose(online["score"], batch["score"], rtol=1e-6)
    np.testing.assert_allclose(online["threshold"], batch["threshold"])
    assert online["is_anomaly"].tolist() == batch["is_anomaly"].tolist()
    alarms = batch["is_anomaly"].to_numpy()
    assert [list(names) for names in online["top_features"][alarms]] == [
        list(names) for names in batch["top_features"][alarms]
    ]


def test_the_logged_example_request_is_answered(model_dir: Path, server: Server):
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    rows = invoke(server, example)
    assert len(rows) == len(example["dataframe_split"]["data"])
    assert rows["score"].notna().all()
