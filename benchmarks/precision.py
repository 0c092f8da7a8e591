"""Quality benchmark: does bf16 detect as well as float32? Torch detectors, several seeds.

    python -m benchmarks.precision --data-root ../shared/datasets [--datasets SMD,ASD]
        [--series machine-1-6,omi-1] [--detectors dense_ae,vae,...] [--seeds 0,1,2]
        [--epochs N] [--train-stride N] [--out precision.csv]
    python -m benchmarks.precision --table precision.csv

Every torch detector is trained on each series in ``fp32`` and in ``bf16`` (autocast in
training and scoring) with each seed, in this one process and under ``tsad bench``'s protocol
(fit on the train part, threshold on the first 30% of the test part, metrics on the last 70%).
For each detector and precision it prints the VUS-PR averaged over the series, as the mean over
seeds and the seeds' spread (their standard deviation), and whether bf16's mean lies within that
spread of float32's: the test ``precision: auto`` must pass before it takes bf16 on a CPU.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pipeline.benchmark import BenchmarkRow, SeriesRun, select_series
from pipeline.data.public_datasets import has_evaluation_anomalies, split_for_evaluation
from pipeline.detectors.registry import DETECTORS
from pipeline.detectors.torch_base import TorchDetector

PRECISIONS = ("fp32", "bf16")
TORCH_DETECTORS = tuple(
    name for name, detector in DETECTORS.items() if issubclass(detector, TorchDetector)
)


def run(args: argparse.Namespace) -> pd.DataFrame:
    """One row per series, detector, precision and seed; written to ``args.out`` as they end."""
    names = args.series.split(",") if args.series else None
    series_list = [
        series
        for series in select_series(args.data_root, args.datasets.split(","), names)
        if has_evaluation_anomalies(split_for_evaluation(series))
    ]
    detectors = args.detectors.split(",")
    budget = {"device": "cpu", "epochs": args.epochs, "train_stride": args.train_stride}
    fields = ["precision", "seed", *BenchmarkRow.__dataclass_fields__]
    records = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for series in series_list:
            for seed in args.seeds:
                for precision in PRECISIONS:
                    common = budget | {"seed": seed, "precision": precision}
                    series_run = SeriesRun(series, common)
                    for name in detectors:
                        record = {"precision": precision, "seed": seed}
                        record |= asdict(series_run.row(name))
                        writer.writerow(record)
                        handle.flush()
                        records.append(record)
                        print(
                            f"{series.dataset}/{series.name} {name} {precision} seed {seed}: "
                            f"VUS-PR {record['vus_pr']:.3f} fit {record['fit_seconds']:.1f} s "
                            f"{record['error']}",
                            file=sys.stderr,
                            flush=True,
                        )
    return pd.DataFrame(records)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per detector and precision: mean over seeds of the series-mean VUS-PR, the seeds'
    standard deviation, and the mean fit seconds.

    Only series that a detector finished with every seed in both precisions count, so the
    seeds' means are over the same series (an unfinished run's table compares like with like).
    """
    runs = results.groupby(["dataset", "series", "detector"])[["seed", "precision"]]
    complete = runs.transform(lambda column: column.nunique()).eq(
        results[["seed", "precision"]].nunique()
    )
    results = results[complete.all(axis=1)]
    per_seed = results.groupby(["detector", "precision", "seed"]).agg(
        vus_pr=("vus_pr", "mean"), fit_seconds=("fit_seconds", "mean")
    )
    table = per_seed.groupby(["detector", "precision"]).agg(
        vus_pr=("vus_pr", "mean"),
        spread=("vus_pr", "std"),
        fit_seconds=("fit_seconds", "mean"),
        seeds=("vus_pr", "size"),
    )
    return table.reset_index()


def markdown(table: pd.DataFrame) -> str:
    """fp32 and bf16 side by side per detector, with the verdict: is bf16 - fp32 within the
    larger of the two seed spreads?"""
    lines = [
        "| detector | fp32 VUS-PR | bf16 VUS-PR | bf16 - fp32 | within seed spread "
        "| fit s fp32 / bf16 |",
        "|---|---|---|---|---|---|",
    ]
    for detector, rows in table.groupby("detector", sort=False):
        by = rows.set_index("precision")
        if not set(PRECISIONS) <= set(by.index):
            continue
        fp32, bf16 = by.loc["fp32"], by.loc["bf16"]
        difference = bf16["vus_pr"] - fp32["vus_pr"]
        within = abs(difference) <= max(fp32["spread"], bf16["spread"])
        lines.append(
            f"| {detector} | {fp32['vus_pr']:.3f} ± {fp32['spread']:.3f} "
            f"| {bf16['vus_pr']:.3f} ± {bf16['spread']:.3f} | {difference:+.3f} "
            f"| {'yes' if within else 'no'} "
            f"| {fp32['fit_seconds']:.1f} / {bf16['fit_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--datasets", default="SMD,ASD")
    parser.add_argument("--series", help="comma-separated series names (default: every one)")
    parser.add_argument("--detectors", default=",".join(TORCH_DETECTORS))
    parser.add_argument(
        "--seeds", type=lambda text: [int(seed) for seed in text.split(",")], default=[0, 1, 2]
    )
    parser.add_argument("--epochs", type=int, default=10, help="torch detectors' epochs")
    parser.add_argument("--train-stride", type=int, default=1, help="step between training windows")
    parser.add_argument("--out", type=Path, default=Path("precision.csv"))
    parser.add_argument(
        "--table", type=Path, help="print the table of an earlier run's CSV; train nothing"
    )
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(summary(pd.read_csv(args.table, keep_default_na=False, na_values=["nan"]))))
        return
    unknown = sorted(set(args.detectors.split(",")) - set(TORCH_DETECTORS))
    if unknown:
        parser.error(f"not torch detectors: {unknown}; choose among {', '.join(TORCH_DETECTORS)}")
    results = run(args)
    failed = results[results["error"].fillna("") != ""]
    print(markdown(summary(results.drop(index=failed.index))))
    if len(failed):
        print(f"\nFAILED ({len(failed)}):")
        for row in failed.itertuples():
            print(f"- {row.dataset}/{row.series} {row.detector} {row.precision}: {row.error}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
