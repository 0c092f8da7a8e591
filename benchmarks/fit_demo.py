"""Fit the demo's detector at the demo's size and budget in this fresh process; print seconds.

    python -m benchmarks.fit_demo [--compile] [--precision auto|fp32|bf16]

Four days of the demo's eight patients, the demo's run config (``configs/runs/vitals.yaml``:
detector, window, epochs, batch, stride, model size) on the CPU. Run by ``benchmarks.speed`` in
a fresh process per setting, with an empty compile cache, so ``--compile``'s time includes
compiling as a user's first run pays it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import numpy as np
import pandas as pd

from benchmarks.workloads import DAY, vitals_day
from pipeline.choices import PRECISIONS
from pipeline.config import DatasetSpec, RunConfig
from pipeline.data import io
from pipeline.data.windows import Segments, StandardScaler, frame_to_segments
from pipeline.detectors.registry import detector_class, supported_params

PATIENTS, DAYS = 8, 4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit_demo", description=__doc__)
    parser.add_argument("--compile", action="store_true", help="train through torch.compile")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args(argv)
    spec, run = DatasetSpec.load("vitals"), RunConfig.load("vitals")
    days = [DAY - dt.timedelta(days=offset) for offset in range(DAYS, 0, -1)]
    frame = pd.concat(
        [
            io.to_canonical(vitals_day(PATIENTS, day, seed=index), spec)
            for index, day in enumerate(days)
        ]
    )
    segments, _ = frame_to_segments(frame, spec.feature_names, spec.step)
    scaler = StandardScaler.fit(segments.values, spec.feature_names)
    scaled = Segments(scaler.transform(segments.values), segments.bounds)
    common = {"window": run.window, "epochs": run.epochs, "batch_size": run.batch_size}
    params = supported_params(run.detector, common | {"seed": run.seed}) | run.detector_params
    settings = {"device": "cpu", "compile": args.compile, "precision": args.precision}
    detector = detector_class(run.detector)(**params | settings)
    started = time.perf_counter()
    detector.fit(scaled)
    seconds = time.perf_counter() - started
    history = detector.history_
    report = {
        "compile": args.compile,
        "precision": history.precision,
        "fit_s": seconds,
        "epochs": len(history.train_loss),
        "rows": int(scaled.n_rows),
        "final_loss": float(np.float64(history.train_loss[-1])),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
