"""Score one landed day as the daily step does, in this fresh process; print seconds and peak RSS.

    python -m benchmarks.score_day BUNDLE_DIR DAY_DIR [--context DIR] --out SCORES_DIR

The day is scored by :func:`pipeline.daily.score_landed`, the code ``tsad score`` runs once it
has validated the day and loaded the model: scores, flags, drift, the daily report and the
summary. Run by ``benchmarks.speed`` once per day size, so each peak RSS belongs to one size
alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import time
from pathlib import Path

from pipeline.daily import score_landed
from pipeline.scoring import ModelBundle


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.score_day")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("day", type=Path, help="a landed partition, <root>/date=YYYY-MM-DD")
    parser.add_argument("--context", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bundle = ModelBundle.load(args.bundle)
    day = dt.date.fromisoformat(args.day.name.removeprefix("date="))
    begin = time.perf_counter()
    summary = score_landed(
        bundle, bundle.spec, day, args.day, args.context, args.out, "benchmark", "1"
    )
    seconds = time.perf_counter() - begin
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "scored": summary["rows"]}))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    Linux's ``VmHWM`` belongs to this program alone; ``ru_maxrss`` would carry over the
    high-water mark of the parent it was forked from.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux units: KiB


if __name__ == "__main__":
    main()
