"""Shared fixtures: an isolated TSAD_HOME per test and the location of the shared datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from homes import use_home
from prerequisites import require

from pipeline.config import Settings

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def tsad_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh runtime home (data tree, MLflow store) for one test."""
    return use_home(tmp_path / "tsad", monkeypatch)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A runtime home shared by the tests of one module (for fixtures that train models)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield use_home(tmp_path_factory.mktemp("home") / "tsad", monkeypatch)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets``: skipped in a user's fresh clone, required in CI."""
    require(
        SHARED_DATASETS.is_dir(),
        f"{SHARED_DATASETS} not present (clone ../shared beside the repository)",
    )
    return SHARED_DATASETS
