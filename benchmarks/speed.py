"""Speed benchmark: ratios measured in one run on one machine, printed as a table.

    python -m benchmarks.speed [--device auto] [--json out.json] [--only train,score] [--quick]
        [--data-root ../shared/datasets] [--jobs 2]

Items (``--only`` takes their names):

``train``   Anomaly Transformer at the public reference configuration (window 100, 38 features,
            d_model 512, 8 heads, 3 layers, d_ff 512): windows per second of a full training
            step for tsad at ``precision: auto`` and in fp32, and for the reference formulation
            (fp32 on a CPU, as published; bf16 autocast on CUDA), interleaved in this process.
``score``   a day of 200 entities x 1,440 minutes through ``tsad score`` in-process (read,
            validate, window, score, threshold, explain alarms, flag, write, drift, report,
            MLflow) against the model's forward pass alone on the same windows, in the same
            precision. Needs MLflow and Great Expectations.
``score2000`` the same at 2,000 entities (2.9 million rows); with ``score`` it gives the
            fixed cost per day (the intercept through the two days) and rows/s per core.
``growth``  scoring 1x, 2x, 4x and 8x that day as the daily step does (scores, flags, drift,
            report, summary), each in a fresh process: seconds and peak RSS.
``input``   share of a training step spent outside the model (batching, host-to-device).
``airflow`` the scoring DAG for one day through ``airflow dags test`` against ``tsad score``,
            both as fresh processes. Needs Airflow, MLflow and Great Expectations.
``compile`` the demo's training run (``benchmarks.fit_demo``) without and with ``compile:
            true``, fresh processes with an empty compile cache: seconds, compilation included.
``jobs``    ``tsad bench`` over ASD's series with five CPU-friendly detectors (one epoch),
            serially and with ``--jobs 2``, fresh processes: the speedup, and whether both CSVs
            hold the same rows. Needs the public series (``--data-root``).
``transactions`` a day of payments of 100,000 accounts (about 2 million events; 5,000 with
            ``--quick``) aggregated into hourly series and scored (PCA), then 4x that day,
            each in a fresh process (``benchmarks.transactions_day``): events per CPU-second
            and peak RSS (goal: 4x the day within 1.3x the 1x peak).
``s3``      ``tsad score`` of the same day in-process with the data tree on an S3 server on
            127.0.0.1 (read from it into an empty working copy, committed back to it) against
            local files, interleaved. Needs moto (a test requirement), MLflow and GX.
``shards``  a day of 2,000 entities x 1,440 minutes (200 with ``--quick``), PCA, scored as 4
            shards plus the final merge against one task scoring it whole, each task a fresh
            process (``benchmarks.shard_day``): process CPU time, imports and model load
            included (goal: at most 1.15x), and rows per CPU-second.

With ``--device cuda`` (or ``auto`` on a GPU machine) every item runs on CUDA; tsad's side
runs at ``precision: auto`` (bf16 on CUDA and on CPUs with native bf16); ``--compile`` adds
``torch.compile`` to the training items. An item whose dependencies are missing is skipped
with the reason printed.
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

from benchmarks.shard_day import bench_shards, shard_rows
from pipeline.choices import DEVICES
from pipeline.data.windows import Segments
from pipeline.detectors.anomaly_transformer import AnomalyTransformer
from pipeline.detectors.precision import autocast, resolve_precision
from pipeline.detectors.trainer import Trainer, WindowSource, adam, resolve_device

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.scoring import ModelBundle

ITEMS = (
    "train",
    "score",
    "score2000",
    "growth",
    "input",
    "airflow",
    "jobs",
    "compile",
    "transactions",
    "s3",
    "shards",
)
TRANSACTIONS_GROWTH = (1, 4)
REFERENCE = {"window": 100, "n_features": 38, "d_model": 512, "n_heads": 8, "n_layers": 3}
GROWTH = (1, 2, 4, 8)
# The realistic day: ten times the score item's entities (2,000 x 1,440 minutes).
LARGE_DAY = 10
# The parallel benchmark's run: CPU-friendly detectors, one epoch, over ASD's series.
JOBS_DATASET = "ASD"
JOBS_DETECTORS = "pca,iforest,ocsvm,dense_ae,vae"
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


def reference_precision(device: torch.device) -> str:
    """The reference's arithmetic: float32 on a CPU, as published; bf16 autocast on CUDA, as
    tsad's own CUDA default, so that the GPU comparison is like for like."""
    return "bf16" if device.type == "cuda" else "fp32"


def train_case(device: torch.device, batch_size: int, steps: int, compile_: bool) -> dict:
    """tsad's step at ``precision: auto`` and in float32, and the reference's, interleaved."""
    from benchmarks.reference_anomaly_transformer import (
        ReferenceAnomalyTransformer,
        materialised_batch,
        reference_step,
    )

    window, features = REFERENCE["window"], REFERENCE["n_features"]
    rng = np.random.default_rng(batch_size)
    series = rng.standard_normal((window + batch_size * 8, features)).astype(np.float32)
    starts = [rng.choice(len(series) - window + 1, batch_size) for _ in range(steps + 1)]
    source = WindowSource(Segments.single(series), window, 1, device)
    detector = anomaly_transformer(batch_size, device)

    def tsad_step(precision: str) -> Callable[[np.ndarray], None]:
        torch.manual_seed(0)
        module = detector.build_module(features).to(device)
        optimizer = adam(module, 1e-4)
        trainer = Trainer(epochs=1, batch_size=batch_size, device=device, precision=precision)
        model = torch.compile(module) if compile_ else module

        def step(chosen: np.ndarray) -> None:
            batch = source.batch(torch.as_tensor(chosen, device=device))
            trainer.step(model, detector.training_loss, batch, optimizer)

        return step

    torch.manual_seed(0)
    reference = ReferenceAnomalyTransformer(
        window, features, REFERENCE["d_model"], REFERENCE["n_heads"], 3, REFERENCE["d_model"]
    ).to(device)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-4)

    def reference_once(chosen: np.ndarray) -> None:
        batch = materialised_batch(series, chosen, window, device)
        with autocast(device, reference_precision(device)):
            reference_step(reference, reference_optimizer, batch, window, detector.config.k)

    sides = {"auto": tsad_step("auto"), "fp32": tsad_step("fp32"), "reference": reference_once}
    if compile_ or batch_size <= 64:  # warm-up (and compilation); negligible for long steps
        for side in sides.values():
            timed(device, lambda side=side: side(starts[0]))
    seconds = dict.fromkeys(sides, 0.0)
    for chosen in starts[1:]:
        for name, side in sides.items():
            seconds[name] += timed(device, lambda side=side, chosen=chosen: side(chosen))
    windows = steps * batch_size
    return {
        "precision": resolve_precision("auto", device),
        "tsad_windows_per_s": windows / seconds["auto"],
        "tsad_fp32_windows_per_s": windows / seconds["fp32"],
        "reference_windows_per_s": windows / seconds["reference"],
        "reference_precision": reference_precision(device),
        "speedup": seconds["reference"] / seconds["auto"],
        "speedup_fp32": seconds["reference"] / seconds["fp32"],
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
        with torch.inference_mode(), autocast(device, config.precision):
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

    admit_day_size(root / "project", entities)

    settings = Settings.from_env()
    previous = DAY - dt.timedelta(days=1)
    bundle_dir = demo_bundle(device, entities).save(root / "bundle")
    tracking.register_training_run(
        settings,
        "vitals",
        bundle_dir,
        params={},
        metrics={},
        tags={},
        artifacts=[],
        splits=[],
        history=None,
        example_start=pd.Timestamp(previous, tz="UTC"),
    )
    steps.promote_version("vitals", "1", settings=settings)
    landing = settings.home / "data" / "landing" / "vitals"
    land(landing, vitals_day(entities, previous, seed=1), previous)
    land(landing, vitals_day(entities, DAY, seed=2), DAY)
    steps.validate("vitals", previous, settings)
    return {"settings": settings, "bundle_dir": bundle_dir, "day": DAY}


def admit_day_size(project: Path, entities: int) -> None:
    """Raise the vitals spec's row bound to a day of ``entities`` where it is lower.

    The demo's spec refuses more than 500 patient-days a day as a broken export; a ward of
    2,000 patients sets its own bound, as this does in a copy of ``configs/`` (and of the
    ``constraints.txt`` a logged model is pinned from) that ``TSAD_PROJECT_ROOT`` points at.
    """
    import shutil

    import yaml

    from pipeline.config import DatasetSpec, project_root

    rows = entities * 1440
    limit = DatasetSpec.load("vitals").max_rows_per_day
    if limit is None or rows <= limit:
        return
    shutil.copytree(project_root() / "configs", project / "configs", dirs_exist_ok=True)
    shutil.copy2(project_root() / "constraints.txt", project / "constraints.txt")  # model pins
    spec_file = project / "configs" / "datasets" / "vitals.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec_file.write_text(yaml.safe_dump(spec | {"max_rows_per_day": rows}))
    os.environ["TSAD_PROJECT_ROOT"] = str(project)


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
    from pipeline.config import ENTITY
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
        "entities": int(frame[ENTITY].nunique()),
        "precision": resolve_precision(bundle.detector.config.precision, device),
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
        "end_to_end_over_forward": end_to_end / forward_s,
        "rows_per_s_per_core": len(frame) / end_to_end / (os.cpu_count() or 1),
    }


def fixed_cost(small: dict, large: dict) -> float:
    """Seconds of a day's scoring that do not grow with its rows: the intercept of the line
    through the end-to-end times of two day sizes measured in the same run."""
    per_row = (large["end_to_end_s"] - small["end_to_end_s"]) / (large["rows"] - small["rows"])
    return small["end_to_end_s"] - per_row * small["rows"]


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


# --- 6: torch.compile on a demo-sized training run ------------------------------------------


def bench_compile(scratch: Path) -> dict:
    """The demo's training run without and with ``compile: true``, each in a fresh process
    with an empty compile cache (``benchmarks.fit_demo``): seconds, compilation included."""
    runs = {}
    for name, flags in {"plain": [], "compiled": ["--compile"]}.items():
        cache = {"TORCHINDUCTOR_CACHE_DIR": str(scratch / f"inductor-{name}")}
        finished = subprocess.run(
            [sys.executable, "-m", "benchmarks.fit_demo", *flags],
            env=os.environ | cache,
            capture_output=True,
            text=True,
            check=True,
        )
        runs[name] = json.loads(finished.stdout.strip().splitlines()[-1])
    return runs | {"compiled_over_plain": runs["compiled"]["fit_s"] / runs["plain"]["fit_s"]}


# --- 7: tsad bench with worker processes ---------------------------------------------------


def bench_jobs(data_root: Path, scratch: Path, jobs: int) -> dict:
    """``tsad bench`` serially and with ``--jobs``, each a fresh process: seconds and whether
    the two CSVs hold the same rows in the same order (timing columns aside)."""
    import pandas as pd

    if not (data_root / JOBS_DATASET).is_dir():
        raise Skipped(f"needs the {JOBS_DATASET} series under {data_root} (--data-root)")
    command = [sys.executable, "-m", "pipeline.cli", "bench", "--data-root", str(data_root)]
    command += ["--datasets", JOBS_DATASET, "--detectors", JOBS_DETECTORS, "--epochs", "1"]
    command += ["--device", "cpu"]
    runs = {"serial": ["--jobs", "1"], "parallel": ["--jobs", str(jobs)]}
    seconds, tables = {}, {}
    for name, flags in runs.items():
        out = scratch / f"{name}.csv"
        seconds[name] = timed(
            torch.device("cpu"),
            lambda flags=flags, out=out: subprocess.run(
                [*command, *flags, "--out", str(out)], capture_output=True, text=True, check=True
            ),
        )
        tables[name] = pd.read_csv(out).drop(columns=["fit_seconds", "score_seconds"])
    return {
        "jobs": jobs,
        "series": int(tables["serial"]["series"].nunique()),
        "detectors": JOBS_DETECTORS,
        "serial_s": seconds["serial"],
        "parallel_s": seconds["parallel"],
        "speedup": seconds["serial"] / seconds["parallel"],
        "same_rows": bool(tables["serial"].equals(tables["parallel"])),
    }


def bench_transactions(root: Path, accounts: int) -> dict:
    """Aggregate and score a day of ``accounts`` accounts, then 4x, each in a fresh process."""
    from benchmarks.workloads import land_transactions, transactions_bundle

    bundle_dir = transactions_bundle().save(root / "bundle")
    results = {}
    for factor in TRANSACTIONS_GROWTH:
        day = land_transactions(root / f"x{factor}" / "landing", accounts * factor)
        command = [sys.executable, "-m", "benchmarks.transactions_day", str(bundle_dir), str(day)]
        command += ["--out", str(root / f"x{factor}" / "out")]
        finished = subprocess.run(command, capture_output=True, text=True, check=True)
        case = json.loads(finished.stdout.strip().splitlines()[-1])
        case["accounts"] = accounts * factor
        case["events_per_cpu_s"] = case["events"] / case["cpu_s"]
        case["aggregate_events_per_cpu_s"] = case["events"] / case["aggregate_cpu_s"]
        results[f"{factor}x"] = case
    return results


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
        setups: dict[int, dict] = {}

        def scoring_setup(day_entities: int = entities) -> dict:
            if day_entities not in setups:
                home = root / f"home{day_entities}"
                setups[day_entities] = scoring_home(home, day_entities, device.type)
            return setups[day_entities]

        tracked = (*SCORING_MODULES, "mlflow", "great_expectations")
        plan: dict[str, tuple[tuple[str, ...], Callable[[], dict]]] = {
            "train": ((), lambda: bench_train(device, batch_sizes, args.steps, args.compile)),
            "score": (tracked, lambda: bench_score(scoring_setup(), args.repeats)),
            "score2000": (
                tracked,
                lambda: bench_score(scoring_setup(LARGE_DAY * entities), args.repeats),
            ),
            "growth": (
                SCORING_MODULES,
                lambda: bench_growth(root / "growth", entities, device.type),
            ),
            "input": ((), lambda: bench_input(device, 4 * args.steps)),
            "airflow": ((*tracked, "airflow"), lambda: bench_airflow(scoring_setup())),
            "jobs": (SCORING_MODULES, lambda: bench_jobs(args.data_root, root, args.jobs)),
            "compile": (SCORING_MODULES, lambda: bench_compile(root)),
            "transactions": (
                SCORING_MODULES,
                lambda: bench_transactions(root / "transactions", 5_000 if args.quick else 100_000),
            ),
            "s3": ((*tracked, "moto"), lambda: bench_s3(scoring_setup(), args.repeats)),
            "shards": (
                SCORING_MODULES,
                lambda: bench_shards(root / "shards", 200 if args.quick else 2_000, device.type),
            ),
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
    small, large = figures.get("score"), figures.get("score2000")
    payments = figures.get("transactions", {})
    return {
        "at_train_speedup_b32": train.get("b32", {}).get("speedup"),
        "at_train_speedup_b32_fp32": train.get("b32", {}).get("speedup_fp32"),
        "at_train_speedup_b256": train.get("b256", {}).get("speedup"),
        "at_train_precision": train.get("b32", {}).get("precision"),
        "score_e2e_vs_forward": (small or {}).get("ratio"),
        "score_e2e_over_forward_2000": (large or {}).get("end_to_end_over_forward"),
        "score_fixed_cost_s": fixed_cost(small, large) if small and large else None,
        "score_rows_per_s_per_core_2000": (large or {}).get("rows_per_s_per_core"),
        "bench_jobs2_speedup": figures.get("jobs", {}).get("speedup"),
        "demo_fit_compiled_over_plain": figures.get("compile", {}).get("compiled_over_plain"),
        "rss_8x_over_1x": (
            growth["8x"]["peak_rss_mb"] / growth["1x"]["peak_rss_mb"] if growth else None
        ),
        "time_8x_over_1x": growth["8x"]["seconds"] / growth["1x"]["seconds"] if growth else None,
        "train_host_share": max(
            (case["host_share"] for case in figures.get("input", {}).values()), default=None
        ),
        "airflow_over_cli": figures.get("airflow", {}).get("ratio"),
        "transactions_rss_4x_over_1x": (
            payments["4x"]["peak_rss_mb"] / payments["1x"]["peak_rss_mb"] if payments else None
        ),
        "s3_over_local": figures.get("s3", {}).get("ratio"),
        "shards4_cpu_over_whole": figures.get("shards", {}).get("ratio"),
        "shards_rows_per_cpu_s": figures.get("shards", {}).get("rows_per_cpu_s"),
    }


def training_rows(figures: dict) -> list[str]:
    """Table rows of the training items: the AT step against the reference, compile."""
    rows = []
    for name, case in figures.get("train", {}).items():
        rows.append(
            f"| AT training step, batch {name[1:]}, {case['precision']} (windows/s; baseline: "
            f"reference formulation, {case['reference_precision']}) "
            f"| {case['tsad_windows_per_s']:.1f} | {case['reference_windows_per_s']:.1f} "
            f"| {case['speedup']:.2f}x |"
        )
        rows.append(
            f"| same, tsad in fp32 | {case['tsad_fp32_windows_per_s']:.1f} "
            f"| {case['reference_windows_per_s']:.1f} | {case['speedup_fp32']:.2f}x |"
        )
    if "compile" in figures:
        plain, compiled = figures["compile"]["plain"], figures["compile"]["compiled"]
        rows.append(
            f"| demo-sized training run, `compile: true`, {compiled['precision']} (s, compilation "
            f"included; baseline: without) | {compiled['fit_s']:.1f} | {plain['fit_s']:.1f} "
            f"| {figures['compile']['compiled_over_plain']:.2f}x |"
        )
    for name, case in figures.get("input", {}).items():
        rows.append(
            f"| training input path, {name} (ms per batch; ms per step) "
            f"| {case['batch_ms']:.2f} | {case['step_ms']:.1f} "
            f"| {100 * case['host_share']:.1f}% |"
        )
    return rows


def scoring_rows(figures: dict) -> list[str]:
    """Table rows of the scoring items: the two day sizes, their fixed cost, growth."""
    rows = []
    for item in ("score", "score2000"):
        if item in figures:
            score = figures[item]
            rows.append(
                f"| scoring a day of {score['entities']:,} entities, {score['rows']:,} rows, "
                f"{score['precision']} (s; baseline: forward pass only) "
                f"| {score['end_to_end_s']:.2f} | {score['forward_s']:.2f} "
                f"| {score['end_to_end_over_forward']:.2f}x |"
            )
    if "score" in figures and "score2000" in figures:
        rows.append(
            f"| fixed cost per day (s; intercept of the two days) "
            f"| {fixed_cost(figures['score'], figures['score2000']):.2f} | | |"
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
    return rows


def process_rows(figures: dict) -> list[str]:
    """Table rows of the items that time whole commands: Airflow, ``tsad bench --jobs``."""
    rows = []
    if "airflow" in figures:
        air = figures["airflow"]
        rows.append(
            f"| scoring DAG via `airflow dags test` vs `tsad score` (s) "
            f"| {air['airflow_s']:.1f} | {air['cli_s']:.1f} | {air['ratio']:.2f}x |"
        )
    if "jobs" in figures:
        jobs = figures["jobs"]
        rows.append(
            f"| `tsad bench --jobs {jobs['jobs']}`, {jobs['series']} series x "
            f"{jobs['detectors']} (s; baseline: serial; same rows: {jobs['same_rows']}) "
            f"| {jobs['parallel_s']:.1f} | {jobs['serial_s']:.1f} | {jobs['speedup']:.2f}x |"
        )
    for factor, case in figures.get("transactions", {}).items():
        base = figures["transactions"]["1x"]
        rows.append(
            f"| payments {factor}: {case['accounts']:,} accounts, {case['events']:,} events "
            f"aggregated + scored (events per CPU-s; aggregation alone; peak RSS MB) "
            f"| {case['events_per_cpu_s']:,.0f}; {case['aggregate_events_per_cpu_s']:,.0f}; "
            f"{case['peak_rss_mb']:.0f} MB | 1x: {base['peak_rss_mb']:.0f} MB "
            f"| RSS {case['peak_rss_mb'] / base['peak_rss_mb']:.2f} |"
        )
    if "s3" in figures:
        s3 = figures["s3"]
        rows.append(
            f"| scoring a day from and to an S3 server vs local files (s, median of "
            f"{s3['repeats']}) | {s3['s3_s']:.1f} | {s3['local_s']:.1f} | {s3['ratio']:.2f}x |"
        )
    return rows


def table(figures: dict) -> str:
    """The figures as a Markdown table (what, tsad, baseline, ratio)."""
    rows = ["| measurement | tsad | baseline | ratio |", "|---|---|---|---|"]
    rows += training_rows(figures) + scoring_rows(figures) + process_rows(figures)
    rows += shard_rows(figures)
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
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("../shared/datasets"),
        help="public series for the jobs item",
    )
    parser.add_argument("--jobs", type=int, default=2, help="workers of the jobs item")
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
        "precision_auto": resolve_precision("auto", device),
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
