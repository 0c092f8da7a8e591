"""An isolated runtime home for tests: the one way they point ``TSAD_HOME`` somewhere.

A module of its own, not a conftest function: test modules import it by name, and ``conftest``
is ambiguous as a module name once several test folders each have one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings


def use_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point ``TSAD_HOME`` at ``home`` with the embedded MLflow store and local data tree."""
    monkeypatch.setenv("TSAD_HOME", str(home))
    for variable in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "TSAD_ARTIFACT_ROOT",
        "TSAD_DATA_URI",
    ):
        monkeypatch.delenv(variable, raising=False)
    return Settings.from_env()
