"""Named moments inside the product's writes where a test may have the process killed.

Test-only. ``TSAD_CRASH_AT=<point>`` makes the process send itself SIGKILL the first time it
reaches ``<point>``: the same end as a power cut or the OOM killer, at a moment chosen instead
of guessed, so a crash test proves what a write leaves behind when it is interrupted inside it.
Unset (as everywhere outside the crash tests) a point costs one environment lookup and does
nothing. The points, each reached once per write of the named file or folder:

- ``append:<file>``: a streamed Parquet file has its first rows in its temporary, unfinished;
- ``commit:<file>``: a file's temporary is complete, not yet renamed onto the file
  (``last.pt``, the trainer's checkpoint, included);
- ``staged:<folder>``: a folder staged whole (a scored day, a model's detector) is complete,
  not yet moved onto the folder it replaces;
- ``swap:<folder>``: the folder it replaces has been moved aside, the staged one not yet in;
- ``epoch:<n>``: training has taken the first optimiser step of epoch ``n`` (1-based).
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "TSAD_CRASH_AT"


def reached(point: str) -> None:
    """Die here, by SIGKILL, when ``TSAD_CRASH_AT`` names ``point``; otherwise do nothing."""
    if os.environ.get(CRASH_AT) == point:
        os.kill(os.getpid(), signal.SIGKILL)
