"""``tsad`` run as a user runs it: a subprocess of this interpreter, in the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tsad(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tsad <args>``; without ``env``, this environment with the repository importable."""
    environment = env if env is not None else os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
    )
