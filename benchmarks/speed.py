"""Speed benchmark: ratios measured in one run on one machine, printed as a table.

    python -m benchmarks.speed [--device auto] [--json out.json] [--only train,score] [--quick]

Items (``--only`` takes their names):

``train``   Anomaly Transformer at the public reference configuration (window 100, 38 features,
            d_model 512, 8 heads, 3 layers, d_ff 512): windows per second of a full training
            step for tsad and for the reference formulation, interleaved in this process.
``score``   a day of 200 entities x 1,440 minutes through ``tsad score`` in-process (read,
            validate, window, score, threshold, explain alarms, flag, write, drift, report,
            MLflow) against the model's forward pass alone on the same windows. Needs MLflow
            and Great Expectations.
``growth``  scoring 1x, 2x, 4x and 8x that day as the daily step does (scores, flags, drift,
            report, summary), each in a fresh process: seconds and peak RSS.
``input``   share of a training step spent outside the model (batching, host-to-device).
``airflow`` the scoring DAG for one day through ``airflow dags test`` against ``tsad score``,
            both as fresh processes. Needs Airflow, MLflow and Great Expectations.
``s3``      ``tsad score`` of the same day in-process with the data tree on an S3 server on
            127.0.0.1 (read from it into an empty working copy, committed back to it) against
            local files, interleaved. Needs moto (a test requirement), MLflow and GX.

With ``--device cuda`` (or ``auto`` on a GPU machine) every item runs on CUDA under bf16
autocast; ``--compile`` adds ``torch.compile`` to the training items. An item whose
dependencies are missing is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.choices import DEVICES
from pipeline.data.windows import Segments
from pipeline.detectors.anomaly_transformer import AnomalyTransformer
from pipeline.detectors.trainer import Trainer, WindowSource, adam, autocast, resolve_device

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.scoring import ModelBundle

ITEMS = ("train", "score", "growth", "input", "airflow", "s3")
REFERENCE = {"window": 100, "n_features": 38, "d_model": 512, "n_heads": 8, "n_layers": 3}
GROWTH = (1, 2, 4, 8)
# What the scoring bundle imports (no Airflow, MLflow or Great Expectations).
SCORING_MODULES = ("pandas", "pyarrow", "yaml", "scipy", "sklearn", "matplotlib")


class Skipped(Exception):
    """An item that cannot run here (a missing dependency); the message says why."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], object]) -> float:
    """Seconds ``work`` takes, with the device's queue drained before and after."""
    synchronize(device)
    begin = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - begin


# --- 1: Anomaly Transformer training, tsad against the reference formulation -------------


def anomaly_transformer(batch_size: int, device: torch.device) -> AnomalyTransformer:
    return AnomalyTransformer(
        window=REFERENCE["window"],
        d_model=REFERENCE["d_model"],
        n_heads=REFERENCE["n_heads"],
        n_layers=REFERENCE["n_layers"],
        dim_feedforward=REFERENCE["d_model"],
        batch_size=batch_size,
        device=device.type,
    )


def bench_train(device: torch.device, batch_sizes: list[int], steps: int, compile_: bool) -> dict:
    """Windows per second of tsad's training step and of the reference's, interleaved."""
    results = {}
    for batch_size in batch_sizes:
        # A large batch is a long step already: fewer of them give as steady a rate.
        case_steps = max(1, steps * 32 // batch_size)
        results[f"b{batch_size}"] = train_case(device, batch_size, case_steps, compile_)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def train_case(device: torch.device, batch_size: int, steps: int, compile_: bool) -> dict:
    from benchmarks.reference_anomaly_transformer import (
        ReferenceAnomalyTransformer,
        materialised_batch,
        reference_step,
    )

    window, features = REFERENCE["window"], REFERENCE["n_features"]
    rng = np.random.default_rng(batch_size)
    series = rng.standard_normal((window + batch_size * 8, features)).astype(np.float32)
    starts = [rng.choice(len(series) - window + 1, batch_size) for _ in range(steps + 1)]

    detector = anomaly_transformer(batch_size, device)
    torch.manual_seed(0)
    module = detector.build_module(features).to(device)
    optimizer = adam(module, 1e-4)
    trainer = Trainer(epochs=1, batch_size=batch_size, device=device)
    source = WindowSource(Segments.single(series), window, 1, device)
    model = torch.compile(module) if compile_ else module

    torch.manual_seed(0)
    reference = ReferenceAnomalyTransformer(
        window, features, REFERENCE["d_model"], REFERENCE["n_heads"], 3, REFERENCE["d_model"]
    ).to(device)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-4)

    def tsad_step(chosen: np.ndarray) -> None:
        batch = source.batch(torch.as_tensor(chosen, device=device))
        trainer.step(model, detector.training_loss, batch, optimizer)

    def reference_once(chosen: np.ndarray) -> None:
        batch = materialised_batch(series, chosen, window, device)
        with autocast(device):
            reference_step(reference, reference_optimizer, batch, window, detector.config.k)

    if compile_ or batch_size <= 64:  # warm-up (and compilation); negligible for long steps
        timed(device, lambda: tsad_step(starts[0]))
        timed(device, lambda: reference_once(starts[0]))
    tsad_seconds = reference_seconds = 0.0
    for chosen in starts[1:]:
        tsad_seconds += timed(device, lambda chosen=chosen: tsad_step(chosen))
        reference_seconds += timed(device, lambda chosen=chosen: reference_once(chosen))
    windows = steps * batch_size
    return {
        "tsad_windows_per_s": windows / tsad_seconds,
        "reference_windows_per_s": windows / reference_seconds,
        "speedup": reference_seconds / tsad_seconds,
        "steps": steps,
    }


# --- 4: training input path ----------------------------------------------------------------


def bench_input(device: torch.device, steps: int) -> dict:
    """Share of a training step spent producing its batch, for the AT and the demo model."""
    results = {
        "anomaly_transformer_b32": input_case(
            anomaly_transformer(32, device), REFERENCE["n_features"], 32, device, steps
        )
    }
    try:
        needs(*SCORING_MODULES)
    except Skipped as reason:
        print(f"input: demo model skipped: {reason}", file=sys.stderr)
        return results
    from benchmarks.workloads import demo_bundle

    demo = demo_bundle(device.type).detector
    results[f"demo_{demo.name}"] = input_case(demo, 6, 128, device, steps)
    return results


def input_case(detector, features: int, batch_size: int, device: torch.device, steps: int) -> dict:
    rng = np.random.default_rng(0)
    series = rng.standard_normal((batch_size * (steps + 2) * 4, features)).astype(np.float32)
    source = WindowSource(Segments.single(series), detector.config.window, 1, device)
    torch.manual_seed(0)
    module = detector.build_module(features).to(device)
    optimizer = adam(module, 1e-3)
    trainer = Trainer(epochs=1, batch_size=batch_size, device=device)
    batches = source.batches(batch_size, torch.Generator().manual_seed(0))
    trainer.step(module, detector.training_loss, next(batches), optimizer)  # warm-up
    holder: list[torch.Tensor] = []
    batching = stepping = 0.0
    for _ in range(steps):
        batching += timed(device, lambda: holder.append(next(batches)))
        batch = holder.pop()
        stepping += timed(
            device,
            lambda batch=batch: trainer.step(module, detector.training_loss, batch, optimizer),
        )
    return {
        "host_share": batching / (batching + stepping),
        "batch_ms": 1e3 * batching / steps,
        "step_ms": 1e3 * stepping / steps,
        "steps": steps,
    }


# --- 2, 3, 5: scoring ----------------------------------------------------------------------


def forward_pass(bundle: ModelBundle, frame: pd.DataFrame) -> tuple[Callable[[], None], int]:
    """The detector's forward pass alone over every window the day's scoring uses.

    The segments and stride come from the bundle and the detector's config, as in scoring, so
    both count the same windows. Returns the pass (batches already on the device) and the
    number of windows.
    """
    from pipeline.data.windows import pad_short_segments

    detector = bundle.detector
    config = detector.config
    device = resolve_device(config.device)
    padded, _ = pad_short_segments(bundle.scaled_segments(frame), config.window)
    source = WindowSource(padded, config.window, config.scoring_stride, device)
    batches = [
        source.batch(source.starts[begin : begin + config.score_batch_size])
        for begin in range(0, len(source), config.score_batch_size)
    ]
    module = detector.module_.to(device).eval()

    def forward() -> None:
        with torch.inference_mode(), autocast(device):
            for batch in batches:
                detector.window_errors(module, batch)

    forward()  # warm-up
    return forward, len(source)


def scoring_home(root: Path, entities: int, device: str) -> dict:
    """A TSAD_HOME with a promoted demo-sized model and two landed days of ``entities``."""
    import pandas as pd

    from benchmarks.workloads import DAY, demo_bundle, land, vitals_day

    os.environ["TSAD_HOME"] = str(root)
    for variable in (
        "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TSAD_ARTIFACT_ROOT", "TSAD_DATA_URI"
    ):  # fmt: skip
        os.environ.pop(variable, None)
    from pipeline import steps, tracking
    from pipeline.config import Settings

    settings = Settings.from_env()
    bundle_dir = demo_bundle(device, entities).save(root / "bundle")
    tracking.register_training_run(
        settings, "vitals", bundle_dir, params={}, metrics={}, tags={}, artifacts=[],
        splits=[], history=None, example_start=pd.Timestamp(DAY, tz="UTC"),
    )  # fmt: skip
    steps.promote_version("vitals", "1", settings=settings)
    landing = settings.home / "data" / "landing" / "vitals"
    previous = DAY - dt.timedelta(days=1)
    land(landing, vitals_day(entities, previous, seed=1), previous)
    land(landing, vitals_day(entities, DAY, seed=2), DAY)
    steps.validate("vitals", previous, settings)
    return {"settings": settings, "bundle_dir": bundle_dir, "day": DAY}


def forget_validation(setup: dict) -> None:
    """Remove the day's passing report so the next scoring validates it again."""
    from pipeline import steps

    report = setup["settings"].partition("validation", "vitals", setup["day"]) / steps.REPORT_FILE
    report.unlink(missing_ok=True)


def bench_score(setup: dict, repeats: int) -> dict:
    """``tsad score`` of the day against the forward pass alone, interleaved ``repeats`` times.

    Medians of each: on a shared machine either can be slowed by a neighbour for a while.
    """
    from pipeline import steps
    from pipeline.data import io
    from pipeline.scoring import WORKER_DEVICE, ModelBundle

    settings, day = setup["settings"], setup["day"]
    # On the device ``tsad score`` loads the registered model on, so both time the same pass.
    bundle = ModelBundle.load(setup["bundle_dir"], device=WORKER_DEVICE)
    spec = bundle.spec
    frame = io.to_canonical(io.read_partition(settings.partition("landing", "vitals", day)), spec)
    forward, windows = forward_pass(bundle, frame)
    device = resolve_device(bundle.detector.config.device)
    steps.score("vitals", day, settings)  # warm-up: MLflow and GX import and first-use costs
    forward_runs, end_to_end_runs = [], []
    for _ in range(repeats):
        forward_runs.append(timed(device, forward))
        forget_validation(setup)
        end_to_end_runs.append(timed(device, lambda: steps.score("vitals", day, settings)))
    forget_validation(setup)
    validation = timed(torch.device("cpu"), lambda: steps.validate("vitals", day, settings))
    forward_s, end_to_end = float(np.median(forward_runs)), float(np.median(end_to_end_runs))
    return {
        "rows": len(frame),
        "windows": windows,
        "repeats": repeats,
        "forward_s": forward_s,
        "forward_runs_s": forward_runs,
        "end_to_end_s": end_to_end,
        "end_to_end_runs_s": end_to_end_runs,
        "validation_s": validation,
        "ratio_without_validation": forward_s / (end_to_end - validation),
        "forward_windows_per_s": windows / forward_s,
        "end_to_end_windows_per_s": windows / end_to_end,
        "ratio": forward_s / end_to_end,
    }


def bench_growth(root: Path, entities: int, device: str) -> dict:
    """Each size in a fresh process: its seconds and peak RSS (``benchmarks.score_day``)."""
    from benchmarks.workloads import DAY, demo_bundle, land, vitals_day

    bundle_dir = demo_bundle(device, entities * max(GROWTH)).save(root / "bundle")
    results = {}
    for factor in GROWTH:
        days = root / f"x{factor}"
        previous = DAY - dt.timedelta(days=1)
        context = land(days, vitals_day(entities * factor, previous, seed=1), previous)
        today = land(days, vitals_day(entities * factor, DAY, seed=2), DAY)
        command = [sys.executable, "-m", "benchmarks.score_day", str(bundle_dir), str(today)]
        command += ["--context", str(context), "--out", str(days / "scores")]
        threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}  # as in this process
        finished = subprocess.run(
            command, env=os.environ | threads, capture_output=True, text=True, check=True
        )
        results[f"{factor}x"] = json.loads(finished.stdout.strip().splitlines()[-1])
        results[f"{factor}x"]["rows"] = entities * factor * 1440
    return results


def bench_airflow(setup: dict) -> dict:
    """``airflow dags test tsad_score`` against ``tsad score``, each a fresh process."""
    from pipeline import orchestration

    settings, day = setup["settings"], setup["day"].isoformat()
    orchestration.init_airflow(settings)
    orchestration.parse_dags(settings)
    env = os.environ | orchestration.airflow_environment(settings)
    cli = [sys.executable, "-m", "pipeline.cli", "score", "--dataset", "vitals", "--date", day]

    def run_cli() -> None:
        subprocess.run(cli, env=env, capture_output=True, text=True, check=True)

    def run_dag() -> None:
        state = orchestration.run_dag("tsad_score", settings, conf={"date": day})
        if state != "success":
            raise RuntimeError(f"tsad_score ended {state}")

    forget_validation(setup)
    cli_s = timed(torch.device("cpu"), run_cli)
    forget_validation(setup)
    dag_s = timed(torch.device("cpu"), run_dag)
    return {"cli_s": cli_s, "airflow_s": dag_s, "ratio": dag_s / cli_s}


def bench_s3(setup: dict, repeats: int) -> dict:
    """The day scored with its data tree on an S3 server against on local files (medians).

    Each S3 run starts from an empty working copy, as a fresh pod does: it reads the day, the
    previous day and their validation reports from the server and commits its output there.
    """
    import shutil

    from benchmarks.s3_server import BUCKET, copy_partition, environment, s3_environment, s3_server
    from pipeline import steps

    settings, day = setup["settings"], setup["day"]
    with s3_server() as endpoint, environment(s3_environment(endpoint, "speed")):
        on_s3 = settings.model_copy(update={"data_uri": f"s3://{BUCKET}/speed"})
        for zone in ("landing", "validation"):
            for each in (day - dt.timedelta(days=1), day):
                copy_partition(settings, on_s3, zone, "vitals", each)

        def from_s3() -> None:
            shutil.rmtree(on_s3.data_root, ignore_errors=True)
            steps.score("vitals", day, on_s3)

        steps.score("vitals", day, settings)  # warm-up: first-use costs of both paths
        from_s3()
        local_runs, s3_runs = [], []
        for _ in range(repeats):
            local_runs.append(
                timed(torch.device("cpu"), lambda: steps.score("vitals", day, settings))
            )
            s3_runs.append(timed(torch.device("cpu"), from_s3))
    local_s, s3_s = float(np.median(local_runs)), float(np.median(s3_runs))
    return {"local_s": local_s, "s3_s": s3_s, "repeats": repeats, "ratio": s3_s / local_s}


# --- running and reporting -----------------------------------------------------------------


def needs(*modules: str) -> None:
    """Skip the item when one of ``modules`` cannot be imported here."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise Skipped(f"needs {', '.join(missing)}")


def run_items(args: argparse.Namespace, device: torch.device) -> dict:
    chosen = args.only.split(",") if args.only else list(ITEMS)
    unknown = sorted(set(chosen) - set(ITEMS))
    if unknown:
        raise SystemExit(f"unknown item(s) {unknown}: choose from {', '.join(ITEMS)}")
    entities = 50 if args.quick else 200
    batch_sizes = [32] if args.quick else [32, 256]
    figures: dict = {"skipped": {}}
    with tempfile.TemporaryDirectory(prefix="tsad-speed-") as scratch:
        root = Path(scratch)
        setup: dict | None = None

        def scoring_setup() -> dict:
            nonlocal setup
            if setup is None:
                setup = scoring_home(root / "home", entities, device.type)
            return setup

        tracked = (*SCORING_MODULES, "mlflow", "great_expectations")
        plan: dict[str, tuple[tuple[str, ...], Callable[[], dict]]] = {
            "train": ((), lambda: bench_train(device, batch_sizes, args.steps, args.compile)),
            "score": (tracked, lambda: bench_score(scoring_setup(), args.repeats)),
            "growth": (
                SCORING_MODULES,
                lambda: bench_growth(root / "growth", entities, device.type),
            ),
            "input": ((), lambda: bench_input(device, 4 * args.steps)),
            "airflow": ((*tracked, "airflow"), lambda: bench_airflow(scoring_setup())),
            "s3": ((*tracked, "moto"), lambda: bench_s3(scoring_setup(), args.repeats)),
        }
        for item in ITEMS:
            if item not in chosen:
                continue
            print(f"running {item} ...", file=sys.stderr, flush=True)
            modules, work = plan[item]
            try:
                needs(*modules)
                figures[item] = work()
            except Skipped as reason:
                figures["skipped"][item] = str(reason)
                print(f"skipped {item}: {reason}", file=sys.stderr)
    return figures


def headline(figures: dict) -> dict:
    """The top-level ratios, each None when its item did not run."""
    train, growth = figures.get("train", {}), figures.get("growth", {})
    return {
        "at_train_speedup_b32": train.get("b32", {}).get("speedup"),
        "at_train_speedup_b256": train.get("b256", {}).get("speedup"),
        "score_e2e_vs_forward": figures.get("score", {}).get("ratio"),
        "rss_8x_over_1x": (
            growth["8x"]["peak_rss_mb"] / growth["1x"]["peak_rss_mb"] if growth else None
        ),
        "time_8x_over_1x": growth["8x"]["seconds"] / growth["1x"]["seconds"] if growth else None,
        "train_host_share": max(
            (case["host_share"] for case in figures.get("input", {}).values()), default=None
        ),
        "airflow_over_cli": figures.get("airflow", {}).get("ratio"),
        "s3_over_local": figures.get("s3", {}).get("ratio"),
    }


def table(figures: dict) -> str:
    """The figures as a Markdown table (what, tsad, baseline, ratio)."""
    rows = ["| measurement | tsad | baseline | ratio |", "|---|---|---|---|"]
    for name, case in figures.get("train", {}).items():
        rows.append(
            f"| AT training step, batch {name[1:]} (windows/s; baseline: reference formulation) "
            f"| {case['tsad_windows_per_s']:.1f} | {case['reference_windows_per_s']:.1f} "
            f"| {case['speedup']:.2f}x |"
        )
    if "score" in figures:
        score = figures["score"]
        rows.append(
            f"| scoring a day of {score['rows']:,} rows (windows/s; baseline: forward pass only) "
            f"| {score['end_to_end_windows_per_s']:.0f} | {score['forward_windows_per_s']:.0f} "
            f"| {score['ratio']:.2f} |"
        )
    for factor, case in figures.get("growth", {}).items():
        base = figures["growth"]["1x"]
        rows.append(
            f"| scoring {factor} the day, {case['rows']:,} rows (s; peak RSS MB) "
            f"| {case['seconds']:.1f} s; {case['peak_rss_mb']:.0f} MB | 1x: "
            f"{base['seconds']:.1f} s; {base['peak_rss_mb']:.0f} MB "
            f"| time {case['seconds'] / base['seconds']:.2f}, "
            f"RSS {case['peak_rss_mb'] / base['peak_rss_mb']:.2f} |"
        )
    for name, case in figures.get("input", {}).items():
        rows.append(
            f"| training input path, {name} (ms per batch; ms per step) "
            f"| {case['batch_ms']:.2f} | {case['step_ms']:.1f} "
            f"| {100 * case['host_share']:.1f}% |"
        )
    if "airflow" in figures:
        air = figures["airflow"]
        rows.append(
            f"| scoring DAG via `airflow dags test` vs `tsad score` (s) "
            f"| {air['airflow_s']:.1f} | {air['cli_s']:.1f} | {air['ratio']:.2f}x |"
        )
    if "s3" in figures:
        s3 = figures["s3"]
        rows.append(
            f"| scoring a day from and to an S3 server vs local files (s, median of "
            f"{s3['repeats']}) | {s3['s3_s']:.1f} | {s3['local_s']:.1f} | {s3['ratio']:.2f}x |"
        )
    for item, reason in figures.get("skipped", {}).items():
        rows.append(f"| {item}: skipped ({reason}) | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--only", help=f"comma-separated items among {', '.join(ITEMS)}")
    parser.add_argument("--quick", action="store_true", help="batch 32 only, 50 entities")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per case")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved timings of the score item (median)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the AT module")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    figures = run_items(args, device)
    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_autocast": device.type == "cuda",
        "compile": args.compile,
    }
    summary = headline(figures)
    print(table(figures))
    print(json.dumps(summary, indent=2))
    if args.json:
        report = summary | {"machine": machine, "figures": figures}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
