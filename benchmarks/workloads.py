"""Data and models the speed benchmark runs on, built without Airflow, MLflow or GX.

A scoring day is ``entities x 1,440`` one-minute rows of the six vitals, inside the dataset's
physical bounds, listed in time order (every entity interleaved, as an export by time is) so
that streaming scoring has to regroup it. Each patient keeps its own baseline from day to day;
only the noise is new. The model is the demo's detector and size (``configs/runs/vitals.yaml``),
fitted briefly on an earlier day of the same patients: speed does not depend on how well it
learned, but the alarm rate (about 1%, the budget of its 99th-percentile threshold) and the
flags (no unseen patients) are those of a routine day, so the per-alarm work is what production
sees.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.calibration import make_calibrator
from pipeline.config import ENTITY, LABEL, TIMESTAMP, DatasetSpec, RunConfig
from pipeline.data import io
from pipeline.data.synthetic import ENTITY_COLUMN, MINUTES_PER_DAY
from pipeline.data.windows import Segments, StandardScaler, frame_to_segments
from pipeline.detectors.registry import detector_class, supported_params
from pipeline.monitoring import ReferenceProfile
from pipeline.scoring import ModelBundle

DAY = dt.date(2026, 3, 2)
POPULATION_SEED = 0
# Typical value and day-to-day spread of each vital; every generated value stays in bounds.
VITALS = {
    "heart_rate": (75.0, 8.0),
    "spo2": (96.0, 1.0),
    "resp_rate": (16.0, 2.0),
    "sys_bp": (120.0, 10.0),
    "dia_bp": (78.0, 6.0),
    "temperature": (36.9, 0.3),
}


def vitals_day(entities: int, day: dt.date, seed: int = 0) -> pd.DataFrame:
    """One landed day in source columns (``patient_id``), rows in time order.

    Patient ``n``'s baselines are the same on every day and for every ``entities``; ``seed``
    draws the day's noise.
    """
    rng = np.random.default_rng(seed)
    minutes = np.arange(MINUTES_PER_DAY)
    circadian = np.sin(2 * np.pi * minutes / MINUTES_PER_DAY)
    columns = {}
    for feature, (name, (typical, spread)) in enumerate(VITALS.items()):
        population = np.random.default_rng([POPULATION_SEED, feature])
        baseline = typical + spread * population.standard_normal(entities)
        noise = 0.2 * spread * rng.standard_normal((MINUTES_PER_DAY, entities))
        columns[name] = (baseline + 0.3 * spread * circadian[:, None] + noise).ravel()
    columns["spo2"] = np.minimum(columns["spo2"], 100.0)
    width = max(3, len(str(entities)))
    patients = np.array([f"p{number:0{width}d}" for number in range(1, entities + 1)])
    timestamps = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=MINUTES_PER_DAY, freq="min")
    return pd.DataFrame(
        {
            TIMESTAMP: np.repeat(timestamps, entities),
            ENTITY_COLUMN: np.tile(patients, MINUTES_PER_DAY),
            **columns,
            LABEL: np.zeros(MINUTES_PER_DAY * entities, dtype=np.int8),
        }
    )


def land(root: Path, frame: pd.DataFrame, day: dt.date) -> Path:
    """Write a day as the dataset's landing partition under ``root``."""
    directory = root / f"date={day.isoformat()}"
    io.write_parquet_atomic(frame, directory / "part-0.parquet")
    return directory


def demo_bundle(
    device: str, entities: int = 8, seed: int = 0, detector_name: str | None = None
) -> ModelBundle:
    """The demo's detector at the demo's size, fitted for one epoch on a day of ``entities``.

    Windows start every ``window`` steps in training (not the demo's stride), so fitting a
    model for thousands of patients stays a matter of seconds; the threshold is the 99th
    percentile of that day's scores. ``detector_name`` fits another detector at the run's
    window (its own defaults otherwise).
    """
    spec = DatasetSpec.load("vitals")
    run = RunConfig.load("vitals")
    frame = io.to_canonical(vitals_day(entities, DAY - dt.timedelta(days=7), seed), spec)
    segments, _ = frame_to_segments(frame, spec.feature_names, spec.step)
    scaler = StandardScaler.fit(segments.values, spec.feature_names)
    scaled = Segments(scaler.transform(segments.values), segments.bounds)
    name = detector_name or run.detector
    common = {"window": run.window, "batch_size": run.batch_size, "seed": seed}
    brief = {"epochs": 1, "train_stride": run.window, "device": device}
    own = run.detector_params if name == run.detector else {}
    params = supported_params(name, common) | own
    detector = detector_class(name)(**params | supported_params(name, brief))
    detector.fit(scaled)
    scores = detector.score(scaled)
    calibrator = make_calibrator("percentile").fit(scores)
    profile = ReferenceProfile.build(
        spec.feature_names, scaled.values, scores, calibrator.threshold_
    )
    return ModelBundle(
        spec,
        scaler,
        detector,
        calibrator,
        profile=profile,
        entities=frozenset(frame[ENTITY].unique()),
    )


TRANSACTIONS_DAY = dt.date(2026, 3, 2)
ACCOUNTS_PER_PART = 50_000


# Payments per account and day ten times the demo's: 100,000 accounts make about 2 million.
BENCHMARK_ACTIVITY = 10.0


def land_transactions(root: Path, accounts: int, day: dt.date = TRANSACTIONS_DAY) -> Path:
    """A landed day of ``accounts`` busy accounts' payments, in parts of 50,000 accounts."""
    from pipeline.data.transactions_demo import TransactionsScenario, generate_transactions

    directory = root / f"date={day.isoformat()}"
    for part, first in enumerate(range(0, accounts, ACCOUNTS_PER_PART)):
        scenario = TransactionsScenario(
            start=day,
            n_days=1,
            labeled_from=day + dt.timedelta(days=1),
            n_accounts=min(ACCOUNTS_PER_PART, accounts - first),
            first_account=first,
            activity=BENCHMARK_ACTIVITY,
            seed=part,
        )
        frame = generate_transactions(scenario)[day]
        io.write_parquet_atomic(frame, directory / f"part-{part}.parquet")
    return directory


def transactions_bundle(accounts: int = 2_000) -> ModelBundle:
    """PCA on a day of ``accounts`` accounts' hourly series; threshold: 99th percentile."""
    from pipeline.data.aggregation import aggregate_events
    from pipeline.data.transactions_demo import TransactionsScenario, generate_transactions

    spec = DatasetSpec.load("transactions")
    day = TRANSACTIONS_DAY - dt.timedelta(days=7)
    scenario = TransactionsScenario(
        start=day, n_days=1, labeled_from=TRANSACTIONS_DAY, n_accounts=accounts
    )
    frame = aggregate_events([generate_transactions(scenario)[day]], spec, day)
    segments, _ = frame_to_segments(frame, spec.feature_names, spec.step)
    scaler = StandardScaler.fit(segments.values, spec.feature_names)
    scaled = Segments(scaler.transform(segments.values), segments.bounds)
    detector = detector_class("pca")(window=RunConfig.load("transactions").window).fit(scaled)
    scores = detector.score(scaled)
    calibrator = make_calibrator("percentile").fit(scores)
    profile = ReferenceProfile.build(
        spec.feature_names, scaled.values, scores, calibrator.threshold_
    )
    return ModelBundle(
        spec, scaler, detector, calibrator, profile, entities=frozenset(frame[ENTITY].unique())
    )
