"""Synthetic data for the detector tests and a single-threaded torch.

The series is three features driven by two sinusoids (the third a fixed mix of the first two)
plus noise, so it has both temporal and cross-feature structure. The injected anomalies stay
inside the normal range of values (in-range spikes, a broken feature relation, a frequency
change, a small level shift): a scorer that merely flags large values ranks them at chance,
so a high AUC means a detector learned what normal looks like.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pipeline.data.windows import Segments

TRAIN_ROWS = 3000
TEST_ROWS = 1500
N_FEATURES = 3


def normal_series(n_rows: int, rng: np.random.Generator) -> np.ndarray:
    steps = np.arange(n_rows)
    slow, fast = np.sin(2 * np.pi * steps / 50), np.sin(2 * np.pi * steps / 23 + 1)
    values = np.stack([slow, fast, 0.6 * slow + 0.8 * fast], axis=1)
    return (values + 0.05 * rng.standard_normal(values.shape)).astype(np.float32)


def anomalous_series(n_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A normal series with labelled in-range anomalies: (values, 0/1 labels)."""
    values = normal_series(n_rows, rng)
    labels = np.zeros(n_rows, dtype=np.int64)
    for step in rng.choice(np.arange(50, n_rows - 50), size=10, replace=False):
        values[step, rng.integers(N_FEATURES)] += rng.choice([-1.5, 1.5])
        labels[step] = 1
    for index, start in enumerate(range(150, n_rows - 100, 300)):
        span = slice(start, start + 30)
        kind = index % 3
        if kind == 0:  # the third feature breaks its relation to the other two
            values[span, 2] *= -1
        elif kind == 1:  # the slow feature speeds up
            values[span, 0] = np.sin(2 * np.pi * np.arange(start, start + 30) / 12)
        else:  # a level shift smaller than the normal range
            values[span, 1] += 0.8
        labels[span] = 1
    return values, labels


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """The test models are tiny: one thread is faster, and steady when the runner is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_segments() -> Segments:
    return Segments.single(normal_series(TRAIN_ROWS, np.random.default_rng(0)))


@pytest.fixture(scope="session")
def labelled_test() -> tuple[Segments, np.ndarray]:
    values, labels = anomalous_series(TEST_ROWS, np.random.default_rng(1))
    return Segments.single(values), labels


@pytest.fixture(scope="session")
def ragged_segments() -> Segments:
    """Segments of awkward lengths: long, shorter than any window, a single row, medium."""
    values = normal_series(400, np.random.default_rng(2))
    return Segments(values, np.array([0, 250, 255, 256, 400]))


@pytest.fixture(scope="session")
def single_feature_faults() -> tuple[Segments, dict[int, int]]:
    """A normal series with one feature spiked at a few steps: (segments, {step: feature})."""
    rng = np.random.default_rng(5)
    values = normal_series(600, rng)
    faults = {step: int(rng.integers(N_FEATURES)) for step in range(60, 560, 50)}
    for step, feature in faults.items():
        values[step, feature] += 4.0
    return Segments.single(values), faults
