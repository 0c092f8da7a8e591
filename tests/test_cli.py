"""The ``tsad`` command line as a user runs it: a separate process, its output on the terminal."""

from __future__ import annotations

import os
import subprocess

import cli_runner
import pytest
from ward import Ward, day, trained_ward

from pipeline.config import Settings


@pytest.fixture(scope="module")
def ward(module_home: Settings) -> Ward:
    return trained_ward(module_home)


def tsad(*args: str) -> subprocess.CompletedProcess:
    """``tsad <args>`` with none of MLflow's own output settings: the CLI alone decides."""
    env = os.environ | {"PYTHONPATH": str(cli_runner.ROOT)}
    for variable in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        env.pop(variable, None)
    result = cli_runner.tsad(*args, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_a_successful_score_prints_its_result_and_nothing_else(ward: Ward):
    # A day never validated: scoring validates it first (Great Expectations) and loads the
    # model from the registry (MLflow), both of which log INFO lines and warnings of their own.
    result = tsad("score", "--dataset", "vitals", "--date", day(5).isoformat())
    scores = ward.settings.partition("scores", "vitals", day(5)) / "scores.parquet"
    assert result.stdout == f"scores written to {scores}\n"
    assert result.stderr == ""


def test_verbose_brings_the_libraries_logs_back(ward: Ward):
    result = tsad("-v", "score", "--dataset", "vitals", "--date", day(4).isoformat())
    assert result.stdout.startswith("scores written to ")
    assert "INFO great_expectations" in result.stderr
