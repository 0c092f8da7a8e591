"""Aggregate and score one landed day of payments in this fresh process; print its figures.

    python -m benchmarks.transactions_day BUNDLE_DIR DAY_DIR --out DIR

The day's events are aggregated into their hourly series as the scoring step does
(:func:`pipeline.steps.series.build_series`: streamed, sharded by account) and the series is
scored by :func:`pipeline.daily.score_landed` (scores, flags, drift, report, summary).
Validation is left out: it is measured apart by the ``score`` item. Run by
``benchmarks.speed`` once per day size, so each peak RSS belongs to one size alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import time
from pathlib import Path

from benchmarks.score_day import peak_rss_mb
from pipeline.daily import score_landed
from pipeline.scoring import ModelBundle
from pipeline.steps.series import build_series, events_in


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transactions_day")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("day", type=Path, help="a landed partition, <root>/date=YYYY-MM-DD")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bundle = ModelBundle.load(args.bundle)
    spec = bundle.spec
    day = dt.date.fromisoformat(args.day.name.removeprefix("date="))
    begin, begin_cpu = time.perf_counter(), cpu_seconds()
    series = build_series(args.day, spec, day, args.out / "series", "benchmark")
    aggregated, aggregated_cpu = time.perf_counter(), cpu_seconds()
    summary = score_landed(
        bundle, spec.series_spec(), day, series, None, args.out / "scores", "benchmark", "1"
    )
    end, end_cpu = time.perf_counter(), cpu_seconds()
    print(
        json.dumps(
            {
                "events": events_in(args.day),
                "rows": summary["rows"],
                "aggregate_s": aggregated - begin,
                "score_s": end - aggregated,
                "seconds": end - begin,
                "aggregate_cpu_s": aggregated_cpu - begin_cpu,
                "cpu_s": end_cpu - begin_cpu,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
