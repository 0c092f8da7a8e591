"""What a test needs from the machine: skipped where a user's machine lacks it, failed in CI.

CI always provides the shared datasets, PostgreSQL, Chromium and the test-only packages, so a
skip there would hide a broken install step.
"""

from __future__ import annotations

import os

import pytest


def require(available: bool, reason: str) -> None:
    """Skip the calling test when ``available`` is false; fail it instead under ``CI=true``."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI always provides it")
    pytest.skip(reason)
