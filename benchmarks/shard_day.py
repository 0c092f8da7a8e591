"""A day scored as shards against the day scored whole, each task a fresh process: CPU time.

    python -m benchmarks.shard_day BUNDLE_DIR DAY_DIR --context DIR --out DIR whole
    python -m benchmarks.shard_day BUNDLE_DIR DAY_DIR --context DIR --out DIR shard K/N
    python -m benchmarks.shard_day BUNDLE_DIR DAY_DIR --context DIR --out DIR finalize N

Each command is what one task of the scoring DAG runs once the day is validated and the model
fetched: ``whole`` is :func:`pipeline.daily.score_landed`, ``shard`` is
:func:`pipeline.day_shards.score_shard` into ``OUT/shard=K``, ``finalize`` merges the ``N``
shard folders and writes the day (:func:`pipeline.daily.finish_day`). Each prints the CPU time
of its whole process (imports and model load included: every task of a distributed run pays
them) and its peak RSS. :func:`bench_shards` runs them for ``benchmarks.speed``'s ``shards``
item.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

SHARDS = 4


def process_cpu_s() -> float:
    """CPU seconds (user and system) this process has used since it started, imports included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_task(bundle_dir: Path, day: Path, context: Path, out: Path, task: list[str]) -> dict:
    """One task in a fresh process, on as many torch threads as this one: its JSON line."""
    import torch

    command = [sys.executable, "-m", "benchmarks.shard_day", str(bundle_dir), str(day)]
    command += ["--context", str(context), "--out", str(out), *task]
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    finished = subprocess.run(
        command, env=os.environ | threads, capture_output=True, text=True, check=True
    )
    return json.loads(finished.stdout.strip().splitlines()[-1])


def bench_shards(root: Path, entities: int, device: str, shards: int = SHARDS) -> dict:
    """A day of ``entities`` scored whole, then as ``shards`` shards plus finalize (PCA).

    The ratio is the CPU time of every shard task and the finalize task over that of the
    whole-day task; rows per second per core are the whole day's rows over its CPU seconds.
    """
    from benchmarks.workloads import DAY, demo_bundle, land, vitals_day

    bundle_dir = demo_bundle(device, min(entities, 200), detector_name="pca").save(root / "pca")
    previous = DAY - dt.timedelta(days=1)
    context = land(root / "landing", vitals_day(entities, previous, seed=1), previous)
    day = land(root / "landing", vitals_day(entities, DAY, seed=2), DAY)
    whole = run_task(bundle_dir, day, context, root / "whole", ["whole"])
    parts = [
        run_task(bundle_dir, day, context, root / "shards", ["shard", f"{index}/{shards}"])
        for index in range(shards)
    ]
    final = run_task(bundle_dir, day, context, root / "shards", ["finalize", str(shards)])
    sharded_cpu = sum(part["cpu_s"] for part in parts) + final["cpu_s"]
    rows = entities * 1440
    return {
        "entities": entities,
        "rows": rows,
        "shards": shards,
        "whole": whole,
        "shard_tasks": parts,
        "finalize": final,
        "sharded_cpu_s": sharded_cpu,
        "ratio": sharded_cpu / whole["cpu_s"],
        "rows_per_cpu_s": rows / whole["cpu_s"],
        "rows_per_cpu_s_sharded": rows / sharded_cpu,
        "same_summary": whole["summary"] == final["summary"],
    }


def shard_rows(figures: dict) -> list[str]:
    """The ``shards`` item's rows of the speed table."""
    if "shards" not in figures:
        return []
    case = figures["shards"]
    return [
        f"| a day of {case['entities']:,} entities ({case['rows']:,} rows, PCA) as "
        f"{case['shards']} shards + finalize, fresh processes (CPU s; baseline: one task; same "
        f"summary: {case['same_summary']}) | {case['sharded_cpu_s']:.1f} "
        f"| {case['whole']['cpu_s']:.1f} | {case['ratio']:.2f}x |",
        f"| scoring rate per core, whole day (rows per CPU-s; sharded) "
        f"| {case['rows_per_cpu_s']:,.0f} | {case['rows_per_cpu_s_sharded']:,.0f} | |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shard_day")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("day", type=Path, help="a landed partition, <root>/date=YYYY-MM-DD")
    parser.add_argument("--context", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("task", choices=("whole", "shard", "finalize"))
    parser.add_argument("arg", nargs="?", help="K/N for a shard, N for finalize")
    args = parser.parse_args()

    from benchmarks.score_day import peak_rss_mb
    from pipeline import day_shards
    from pipeline.daily import finish_day, score_landed
    from pipeline.scoring import ModelBundle
    from pipeline.sharding import Shard

    bundle = ModelBundle.load(args.bundle)
    day = dt.date.fromisoformat(args.day.name.removeprefix("date="))
    model = ("benchmark", "1")
    summary = None
    if args.task == "whole":
        summary = score_landed(bundle, bundle.spec, day, args.day, args.context, args.out, *model)
    elif args.task == "shard":
        shard = Shard.parse(args.arg)
        folder = args.out / f"shard={shard.index}"
        day_shards.score_shard(
            bundle, bundle.spec, day, args.day, args.context, folder, model, shard
        )
    else:
        folders = [args.out / f"shard={index}" for index in range(int(args.arg))]
        parts = [day_shards.read_part(folder) for folder in folders]
        day_shards.check_complete(parts, int(args.arg), model[1])
        merged = args.out / "day"
        merged.mkdir(parents=True, exist_ok=True)
        day_parts = day_shards.merge_shards(bundle, folders, merged)
        summary = finish_day(bundle, bundle.spec, day, args.day, merged, day_parts, model)
    print(json.dumps({"cpu_s": process_cpu_s(), "peak_rss_mb": peak_rss_mb(), "summary": summary}))


if __name__ == "__main__":
    main()
