"""Headless Chromium (Debian's ``chromium`` package) for the tests that render pages.

The flags keep it off the network (this machine and CI have no route out; without them it
retries blocked connections at every start) and away from any GPU or sandbox it cannot have.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from prerequisites import require

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@dataclass
class Browser:
    """Headless Chromium: loads a page once, returns its DOM and saves a screenshot of it.

    ``--virtual-time-budget`` lets a single-page app fetch and render before the capture,
    without a fixed sleep.
    """

    executable: str
    profile_root: Path
    window: tuple[int, int] = (1440, 900)
    budget_ms: int = 15000

    def render(self, url: str, screenshot: Path) -> str:
        """The serialized DOM after the page's scripts ran; the PNG goes to ``screenshot``."""
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        profile = self.profile_root / f"chromium-{uuid.uuid4().hex[:8]}"
        args = [
            self.executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={self.window[0]},{self.window[1]}",
            f"--virtual-time-budget={self.budget_ms}",
            "--dump-dom",
            f"--screenshot={screenshot}",
            url,
        ]
        try:
            result = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if result.returncode != 0 or not screenshot.is_file():
            raise RuntimeError(f"chromium could not render {url}:\n{result.stderr[-2000:]}")
        return result.stdout


def headless_browser(profile_root: Path, budget_ms: int = 15000) -> Browser:
    """A :class:`Browser`, or the calling test skipped (failed in CI) when Chromium is missing."""
    executable = chromium_executable()
    require(executable is not None, "headless Chromium is not installed (apt-get install chromium)")
    return Browser(executable, profile_root, budget_ms=budget_ms)
