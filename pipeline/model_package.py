"""What a registered model carries besides its weights: its code, its pins and an example.

A model served the standard way (``mlflow models serve``, ``mlflow models build-docker``, or a
virtualenv environment manager) installs its ``requirements.txt`` from the package index. This
project's distribution name (``tsad``) is not ours on the public index, so the model never names
it: the ``pipeline`` package travels with the model as code, and the requirements are only the
third-party packages scoring imports, pinned exactly as ``constraints.txt`` pins them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import ENTITY, TIMESTAMP, ConfigError, project_root
from pipeline.scoring import ModelBundle

PACKAGE_DIR = Path(__file__).resolve().parent
CONSTRAINTS_FILE = "constraints.txt"

# The distributions the scoring path imports (pipeline.scoring and what it loads), plus MLflow
# itself to serve. No Airflow, no Great Expectations, no plotting: scoring needs none of them.
SCORING_PACKAGES: tuple[str, ...] = (
    "mlflow",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "PyYAML",
    "scikit-learn",
    "scipy",
    "torch",
    "tqdm",
)
EXAMPLE_ENTITY = "example"


def _normalise(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins(constraints: Path | None = None) -> dict[str, str]:
    """Every ``name==version`` line of ``constraints.txt``, keyed by normalised name."""
    path = constraints or project_root() / CONSTRAINTS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: a model's requirements are pinned from it "
            "(set TSAD_PROJECT_ROOT to the folder holding it)"
        )
    pins = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            pins[_normalise(name)] = f"{name.strip()}=={version.strip()}"
    return pins


def scoring_requirements(constraints: Path | None = None) -> list[str]:
    """The pinned requirements of a logged model: the scoring packages, nothing else."""
    pins = constraint_pins(constraints)
    missing = [name for name in SCORING_PACKAGES if _normalise(name) not in pins]
    if missing:
        raise ConfigError(f"constraints.txt pins no version of {', '.join(missing)}")
    return [pins[_normalise(name)] for name in SCORING_PACKAGES]


def stage_code(target: Path) -> Path:
    """Copy the ``pipeline`` package (sources only) under ``target``, for MLflow's code_paths."""
    return Path(
        shutil.copytree(
            PACKAGE_DIR,
            target / PACKAGE_DIR.name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    )


def example_frame(
    bundle: ModelBundle, start: pd.Timestamp, rows: int | None = None
) -> pd.DataFrame:
    """A request a client can copy: one made-up entity at the training means, one window long.

    Built from the scaler, never from landed rows, so no patient's or account's data is
    published with the model. Timestamps are ISO 8601 strings, as they travel in JSON.
    """
    count = rows or max(bundle.window, 2)
    times = pd.date_range(start.tz_convert("UTC"), periods=count, freq=bundle.spec.step)
    frame = pd.DataFrame(
        np.repeat(bundle.scaler.mean[None, :].astype(np.float64), count, axis=0).round(3),
        columns=list(bundle.scaler.features),
    )
    frame.insert(0, ENTITY, EXAMPLE_ENTITY)
    frame.insert(0, TIMESTAMP, times.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame
