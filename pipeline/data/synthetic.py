"""Synthetic bedside vital signs with labelled, injected anomalies (the demo dataset).

The generator stands in for a ward's monitor export so the whole product can be exercised
without patient data. It produces what the ``vitals`` dataset spec describes: one row per
patient-minute with six vital signs, in daily frames.

Realism matters because a detector trained here is only a meaningful demo if "normal" is
neither trivially constant nor white noise. Each patient gets their own baselines and
circadian rhythm (heart rate and blood pressure lower at night, temperature swinging by about
half a degree); heart rate and blood pressure share a slow latent autonomic component,
respiration follows heart rate loosely, and every signal carries smooth AR(1) noise on top of
measurement noise. Each patient's whole multi-day series is generated at once and only then
cut into days, so consecutive daily partitions join without a jump at midnight.

Anomalies are injected on every day, as they would be in real data, but days before
``labeled_from`` carry no ``label`` column (they are the unlabelled training history) and see
fewer anomalies, so a model trained on them learns mostly normal behaviour. The schedule of
anomalies is drawn from its own random stream: :func:`plan_anomalies` returns exactly what
:func:`generate_vitals` injects for the same scenario.

The module does no I/O; callers write the frames wherever partitions live.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from pipeline.config import LABEL, TIMESTAMP

ENTITY_COLUMN = "patient_id"
FEATURES = ("heart_rate", "spo2", "resp_rate", "sys_bp", "dia_bp", "temperature")
MINUTES_PER_DAY = 1440

AnomalyKind = Literal["spike", "level_shift", "drift", "decoupling", "flatline", "dropout"]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = get_args(AnomalyKind)

# Readings are clipped to what a monitor plausibly shows; these ranges sit inside the spec's
# physical bounds so that no generated value, normal or anomalous, is an impossible reading.
_PLAUSIBLE_RANGE = {
    "heart_rate": (25.0, 230.0),
    "spo2": (55.0, 100.0),
    "resp_rate": (3.0, 55.0),
    "sys_bp": (50.0, 250.0),
    "dia_bp": (25.0, 150.0),
    "temperature": (32.0, 42.5),
}
_DECIMALS = {"temperature": 2}  # monitors report tenths; thermometers hundredths
_MIN_GAP_MINUTES = 30  # quiet time between two anomalies of one patient, so segments stay apart
_MAX_ANOMALIES_PER_PATIENT_DAY = 10.0


@dataclass(frozen=True)
class _KindSpec:
    """How long an anomaly kind lasts and which features it may touch together."""

    minutes: tuple[int, int]  # inclusive range of durations
    feature_sets: tuple[tuple[str, ...], ...]


_KIND_SPECS: dict[AnomalyKind, _KindSpec] = {
    "spike": _KindSpec(
        (2, 5),
        (
            ("heart_rate",),
            ("resp_rate",),
            ("spo2",),
            ("sys_bp", "dia_bp"),
            ("heart_rate", "sys_bp"),
        ),
    ),
    "level_shift": _KindSpec((20, 90), (("spo2",), ("heart_rate",))),
    "drift": _KindSpec((60, 180), (("temperature",), ("resp_rate",))),
    "decoupling": _KindSpec((30, 120), (("heart_rate", "sys_bp", "dia_bp"),)),
    "flatline": _KindSpec(
        (20, 120), (("heart_rate",), ("spo2",), ("resp_rate",), ("sys_bp",), ("dia_bp",))
    ),
    "dropout": _KindSpec((2, 5), tuple((feature,) for feature in FEATURES)),
}

# Additive kinds: the range each feature's peak offset is drawn from.
_OFFSETS: dict[AnomalyKind, dict[str, tuple[float, float]]] = {
    "spike": {
        "heart_rate": (40.0, 65.0),
        "resp_rate": (12.0, 20.0),
        "spo2": (-20.0, -12.0),
        "sys_bp": (35.0, 60.0),
        "dia_bp": (20.0, 35.0),
    },
    "level_shift": {"spo2": (-10.0, -6.0), "heart_rate": (25.0, 40.0)},
    "drift": {"temperature": (1.5, 2.5), "resp_rate": (8.0, 14.0)},
    "decoupling": {"heart_rate": (25.0, 40.0), "sys_bp": (-40.0, -25.0), "dia_bp": (-25.0, -15.0)},
}


@dataclass(frozen=True, kw_only=True)
class VitalsScenario:
    """What to simulate: which days, how many patients, how often things go wrong.

    Days from ``labeled_from`` on carry a ``label`` column (they serve validation and test);
    earlier days are the unlabelled training history and see ``train_anomaly_scale`` times
    the anomaly rate, as a ward's routine history is mostly uneventful.
    """

    start: dt.date
    n_days: int
    labeled_from: dt.date
    n_patients: int = 8
    anomalies_per_patient_day: float = 3.0
    train_anomaly_scale: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_days < 1 or self.n_patients < 1:
            raise ValueError("a scenario needs at least one day and one patient")
        if not 0.0 <= self.anomalies_per_patient_day <= _MAX_ANOMALIES_PER_PATIENT_DAY:
            raise ValueError(
                f"anomalies_per_patient_day must be in [0, {_MAX_ANOMALIES_PER_PATIENT_DAY}] "
                "so that the data stays mostly normal"
            )
        if not 0.0 <= self.train_anomaly_scale <= 1.0:
            raise ValueError("train_anomaly_scale must be in [0, 1]")

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=offset) for offset in range(self.n_days)]

    @property
    def patient_ids(self) -> list[str]:
        width = max(3, len(str(self.n_patients)))
        return [f"p{number:0{width}d}" for number in range(1, self.n_patients + 1)]

    @property
    def origin(self) -> pd.Timestamp:
        """Midnight UTC of the first day: minute 0 of every patient's series."""
        return pd.Timestamp(self.start, tz="UTC")

    def is_labeled(self, day: dt.date) -> bool:
        return day >= self.labeled_from


@dataclass(frozen=True)
class InjectedAnomaly:
    """One injected anomaly: rows ``start <= timestamp < end`` of one patient are label 1."""

    patient_id: str
    kind: AnomalyKind
    start: pd.Timestamp
    end: pd.Timestamp
    features: tuple[str, ...]


def plan_anomalies(scenario: VitalsScenario) -> list[InjectedAnomaly]:
    """The anomalies :func:`generate_vitals` injects for ``scenario``, in injection order.

    Each lies within one day and anomalies of one patient never overlap, so every labelled
    segment corresponds to exactly one record.
    """
    rng = np.random.default_rng(_seeds(scenario)[0])
    anomalies: list[InjectedAnomaly] = []
    for patient_id in scenario.patient_ids:
        for day_index, day in enumerate(scenario.days):
            scale = 1.0 if scenario.is_labeled(day) else scenario.train_anomaly_scale
            day_start = scenario.origin + pd.Timedelta(days=day_index)
            rate = scenario.anomalies_per_patient_day * scale
            anomalies.extend(_draw_day(rng, rate, patient_id, day_start))
    return anomalies


def generate_vitals(scenario: VitalsScenario) -> dict[dt.date, pd.DataFrame]:
    """One frame per day: ``timestamp`` (UTC), ``patient_id``, the six vitals, maybe ``label``.

    Rows are ordered by patient, then time, 1,440 per patient and day. The result depends only
    on ``scenario`` (its ``seed`` included).
    """
    _, signal_seed, injection_seed = _seeds(scenario)
    n_minutes = scenario.n_days * MINUTES_PER_DAY
    values = _normal_vitals(np.random.default_rng(signal_seed), scenario.n_patients, n_minutes)
    labels = _inject_all(
        values, plan_anomalies(scenario), scenario, np.random.default_rng(injection_seed)
    )
    values = _finish(values)
    return {
        day: _day_frame(scenario, day_index, values, labels if scenario.is_labeled(day) else None)
        for day_index, day in enumerate(scenario.days)
    }


def _seeds(scenario: VitalsScenario) -> list[np.random.SeedSequence]:
    """Independent streams for the plan, the normal signal and the anomaly magnitudes."""
    return np.random.SeedSequence(scenario.seed).spawn(3)


def _draw_day(
    rng: np.random.Generator, rate: float, patient_id: str, day_start: pd.Timestamp
) -> list[InjectedAnomaly]:
    """One patient-day's anomalies, in time order, none overlapping or crossing midnight."""
    drawn = []
    for _ in range(rng.poisson(rate)):
        kind = ANOMALY_KINDS[rng.integers(len(ANOMALY_KINDS))]
        spec = _KIND_SPECS[kind]
        length = int(rng.integers(spec.minutes[0], spec.minutes[1] + 1))
        start = day_start + pd.Timedelta(minutes=int(rng.integers(0, MINUTES_PER_DAY - length)))
        features = spec.feature_sets[rng.integers(len(spec.feature_sets))]
        drawn.append(
            InjectedAnomaly(patient_id, kind, start, start + pd.Timedelta(minutes=length), features)
        )
    gap = pd.Timedelta(minutes=_MIN_GAP_MINUTES)
    kept: list[InjectedAnomaly] = []
    for anomaly in sorted(drawn, key=lambda anomaly: anomaly.start):
        if not kept or anomaly.start >= kept[-1].end + gap:
            kept.append(anomaly)
    return kept


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, std: float) -> np.ndarray:
    """Stationary AR(1) noise along the last axis with lag-1 correlation ``phi``, sd ``std``."""
    shocks = rng.standard_normal(shape)
    shocks[:, 0] /= np.sqrt(1.0 - phi**2)  # start in the stationary distribution
    return lfilter([std * np.sqrt(1.0 - phi**2)], [1.0, -phi], shocks, axis=-1)


def _normal_vitals(rng: np.random.Generator, n_patients: int, n_minutes: int) -> np.ndarray:
    """Anomaly-free vitals as an array ``(patient, minute, feature)`` in ``FEATURES`` order."""
    shape = (n_patients, n_minutes)

    def per_patient(mean: float, sd: float, low: float, high: float) -> np.ndarray:
        return np.clip(rng.normal(mean, sd, (n_patients, 1)), low, high)

    def uniform(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, (n_patients, 1))

    hours = np.arange(n_minutes) / 60.0
    peak_hour = per_patient(16.0, 1.5, 12.0, 20.0)  # activity peaks in the afternoon
    circadian = np.cos(2.0 * np.pi * (hours - peak_hour) / 24.0)
    tone = _ar1(rng, shape, 0.995, 1.0)  # slow autonomic tone shared by heart rate and BP

    hr_base = per_patient(75.0, 8.0, 55.0, 100.0)
    heart_rate = (
        hr_base
        + uniform(4.0, 9.0) * circadian
        + 5.0 * tone
        + _ar1(rng, shape, 0.9, 2.0)
        + rng.normal(0.0, 1.0, shape)
    )
    resp_rate = (
        per_patient(15.0, 2.0, 11.0, 20.0)
        + 0.12 * (heart_rate - hr_base)
        + _ar1(rng, shape, 0.9, 0.8)
        + rng.normal(0.0, 0.4, shape)
    )
    sys_base = per_patient(122.0, 10.0, 100.0, 150.0)
    sys_bp = (
        sys_base
        + uniform(6.0, 12.0) * circadian
        + 4.0 * tone
        + _ar1(rng, shape, 0.95, 3.0)
        + rng.normal(0.0, 1.5, shape)
    )
    dia_bp = (
        sys_base
        - per_patient(45.0, 5.0, 35.0, 55.0)
        + 0.6 * (sys_bp - sys_base)
        + _ar1(rng, shape, 0.95, 1.5)
        + rng.normal(0.0, 1.0, shape)
    )
    # Saturation sits just under its ceiling and only dips: noise is one-sided, clipped at 100.
    spo2 = np.minimum(
        uniform(97.5, 99.0) + rng.normal(0.0, 0.3, shape) - np.abs(_ar1(rng, shape, 0.97, 0.8)),
        100.0,
    )
    temperature = (
        per_patient(36.8, 0.2, 36.3, 37.3)
        + uniform(0.2, 0.3) * np.cos(2.0 * np.pi * (hours - peak_hour - 2.0) / 24.0)
        + _ar1(rng, shape, 0.999, 0.08)
        + rng.normal(0.0, 0.02, shape)
    )
    by_name = {
        "heart_rate": heart_rate,
        "spo2": spo2,
        "resp_rate": resp_rate,
        "sys_bp": sys_bp,
        "dia_bp": dia_bp,
        "temperature": temperature,
    }
    return np.stack([by_name[feature] for feature in FEATURES], axis=-1)


def _inject_all(
    values: np.ndarray,
    anomalies: list[InjectedAnomaly],
    scenario: VitalsScenario,
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply every anomaly to ``values`` in place; return the ``(patient, minute)`` label mask."""
    patients = {patient_id: index for index, patient_id in enumerate(scenario.patient_ids)}
    labels = np.zeros(values.shape[:2], dtype=bool)
    minute = pd.Timedelta(minutes=1)
    for anomaly in anomalies:
        patient = patients[anomaly.patient_id]
        span = slice(
            (anomaly.start - scenario.origin) // minute, (anomaly.end - scenario.origin) // minute
        )
        labels[patient, span] = True
        for feature in anomaly.features:
            _inject(values[patient, span, FEATURES.index(feature)], anomaly.kind, feature, rng)
    return labels


def _inject(segment: np.ndarray, kind: AnomalyKind, feature: str, rng: np.random.Generator) -> None:
    """Turn one feature's stretch (a view) into an anomaly of ``kind``."""
    if kind == "dropout":
        segment[:] = np.nan
    elif kind == "flatline":
        segment[:] = segment[0]
    else:
        segment += rng.uniform(*_OFFSETS[kind][feature]) * _profile(kind, len(segment))


def _profile(kind: AnomalyKind, length: int) -> np.ndarray:
    """Shape of an additive anomaly over its stretch, peak 1."""
    position = (np.arange(length) + 0.5) / length
    if kind == "drift":  # slow climb, then a quicker return (e.g. fever, then antipyretics)
        return np.interp(position, [0.0, 0.8, 1.0], [0.0, 1.0, 0.0])
    if kind == "decoupling":  # physiology changes over minutes, not in one step
        return np.interp(position, [0.0, 0.15, 0.85, 1.0], [0.0, 1.0, 1.0, 0.0])
    return np.ones(length)


def _finish(values: np.ndarray) -> np.ndarray:
    """Clip to plausible readings and round to monitor resolution (NaN stays NaN)."""
    finished = np.empty_like(values)
    for index, feature in enumerate(FEATURES):
        low, high = _PLAUSIBLE_RANGE[feature]
        clipped = np.clip(values[..., index], low, high)
        finished[..., index] = np.round(clipped, _DECIMALS.get(feature, 1))
    return finished


def _day_frame(
    scenario: VitalsScenario, day_index: int, values: np.ndarray, labels: np.ndarray | None
) -> pd.DataFrame:
    """Cut one day out of the full series, patient by patient."""
    minutes = slice(day_index * MINUTES_PER_DAY, (day_index + 1) * MINUTES_PER_DAY)
    day_start = scenario.origin + pd.Timedelta(days=day_index)
    times = pd.date_range(day_start, periods=MINUTES_PER_DAY, freq="min")
    frame = pd.DataFrame(
        {
            TIMESTAMP: times.take(np.tile(np.arange(MINUTES_PER_DAY), scenario.n_patients)),
            ENTITY_COLUMN: np.repeat(scenario.patient_ids, MINUTES_PER_DAY),
        }
    )
    day_values = values[:, minutes, :].reshape(-1, len(FEATURES))
    for index, feature in enumerate(FEATURES):
        frame[feature] = day_values[:, index]
    if labels is not None:
        frame[LABEL] = labels[:, minutes].reshape(-1).astype(np.int64)
    return frame
