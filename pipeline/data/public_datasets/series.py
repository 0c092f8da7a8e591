"""One benchmark series in memory, and the evaluation split that keeps labels honest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.checks import Interpretation
from pipeline.config import ENTITY, LABEL, TIMESTAMP
from pipeline.data.public_datasets.files import binary_labels, checked_timestamps, finite_matrix

CALIBRATION_FRACTION = 0.3


SYNTHETIC_START = pd.Timestamp("2000-01-01", tz="UTC")


_SYNTHETIC_STEP = {"SMD": pd.Timedelta("1min"), "ASD": pd.Timedelta("5min")}


_DEFAULT_STEP = pd.Timedelta("1min")


Part = Literal["train", "test"]


@dataclass(frozen=True, eq=False)
class BenchmarkSeries:
    """One benchmark series: an unlabeled train part and a labeled test part that follows it.

    ``test_timestamps``/``train_timestamps`` are naive ``datetime64[ns]`` in UTC where the source
    has real time stamps (NAB), else ``None``. ``interpretation`` (SMD only) lists anomaly
    segments as test rows ``[start, end)`` with the 0-based indices of the features at fault.
    """

    dataset: str
    name: str
    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    feature_names: list[str]
    test_timestamps: np.ndarray | None = None
    train_timestamps: np.ndarray | None = None
    interpretation: Interpretation | None = None

    def __post_init__(self) -> None:
        train = finite_matrix(self.train, "train")
        test = finite_matrix(self.test, "test")
        if train.shape[1] != test.shape[1]:
            raise ValueError(f"train has {train.shape[1]} features but test has {test.shape[1]}")
        if len(self.feature_names) != test.shape[1]:
            raise ValueError(
                f"{len(self.feature_names)} feature names for {test.shape[1]} features"
            )
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "test", test)
        object.__setattr__(self, "test_labels", binary_labels(self.test_labels, len(test)))
        object.__setattr__(
            self, "train_timestamps", checked_timestamps(self.train_timestamps, len(train), "train")
        )
        object.__setattr__(
            self, "test_timestamps", checked_timestamps(self.test_timestamps, len(test), "test")
        )

    def values(self, part: Part) -> np.ndarray:
        """The ``train`` or ``test`` rows."""
        if part not in ("train", "test"):
            raise ValueError(f"part must be 'train' or 'test', got {part!r}")
        return self.train if part == "train" else self.test

    def timestamps(self, part: Part) -> pd.DatetimeIndex:
        """UTC time stamps of a part: the real ones, else a synthetic regular index.

        The synthetic index starts at 2000-01-01 with the dataset's sampling step (SMD 1 min,
        ASD 5 min, others 1 min) and lets test continue where train ends, as in the releases,
        so that time-ordered code sees train strictly before test.
        """
        rows = len(self.values(part))
        real = self.train_timestamps if part == "train" else self.test_timestamps
        if real is not None:
            return pd.DatetimeIndex(real).tz_localize("UTC")
        step = _SYNTHETIC_STEP.get(self.dataset, _DEFAULT_STEP)
        offset = 0 if part == "train" else len(self.train)
        start = SYNTHETIC_START + offset * step
        return pd.date_range(start, periods=rows, freq=step, unit="ns")

    def to_frame(self, part: Part = "test") -> pd.DataFrame:
        """The part as a canonical frame: ``timestamp`` (UTC), ``entity``, features, and
        ``label`` on test, ready for the same validation and windowing as production data."""
        frame = pd.DataFrame(self.values(part), columns=self.feature_names)
        frame.insert(0, TIMESTAMP, self.timestamps(part))
        frame.insert(1, ENTITY, self.name)
        if part == "test":
            frame[LABEL] = self.test_labels
        return frame


@dataclass(frozen=True, eq=False)
class EvaluationSplit:
    """The labeled test part cut in time: ``test[:cut]`` calibrates, ``test[cut:]`` is reported.

    ``cut`` lets a detector score the whole test part once (its windows then see the
    calibration rows as context) and slice the scores with ``scores[cut:]``.
    """

    calib_values: np.ndarray
    calib_labels: np.ndarray
    eval_values: np.ndarray
    eval_labels: np.ndarray
    cut: int


def split_for_evaluation(
    series: BenchmarkSeries, calibration_fraction: float = CALIBRATION_FRACTION
) -> EvaluationSplit:
    """Cut the test part in time: the first ``calibration_fraction`` for the threshold, the
    rest for reporting, so the reported rows never influence their own threshold."""
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration fraction must be in (0, 1), got {calibration_fraction}")
    rows = len(series.test)
    cut = round(rows * calibration_fraction)
    if not 0 < cut < rows:
        raise ValueError(
            f"{series.dataset}/{series.name}: {rows} test rows are too few to cut at "
            f"{calibration_fraction:.0%}"
        )
    return EvaluationSplit(
        calib_values=series.test[:cut],
        calib_labels=series.test_labels[:cut],
        eval_values=series.test[cut:],
        eval_labels=series.test_labels[cut:],
        cut=cut,
    )


def has_evaluation_anomalies(split: EvaluationSplit) -> bool:
    """Whether the reported part holds an anomaly; the protocol skips (and counts) those
    without one, since AUC-PR and F1 are undefined there."""
    return bool(split.eval_labels.any())
