"""Reading a public release's files: the checks and naming every loader shares."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd


def read_matrix(path: Path) -> np.ndarray:
    """A headerless comma-separated numeric table; pandas' C parser is ~20x ``np.loadtxt``."""
    with blame(path):
        return pd.read_csv(path, header=None, engine="c").to_numpy(dtype=np.float32)


def read_npy(path: Path) -> np.ndarray:
    with blame(path):
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2:
            raise ValueError(f"expected a (time, features) array, got shape {array.shape}")
        return array


def finite_matrix(values: np.ndarray, part: str) -> np.ndarray:
    matrix = np.ascontiguousarray(values, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) == 0:
        raise ValueError(f"{part} must be a non-empty (time, features) array, got {matrix.shape}")
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad_rows):
        raise ValueError(
            f"{part} has {len(bad_rows)} rows with missing or infinite values "
            f"(first at row {bad_rows[0]})"
        )
    return matrix


def binary_labels(labels: np.ndarray, rows: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (rows,):
        raise ValueError(f"{array.size} test labels for {rows} test rows")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("test labels must be 0 or 1")
    return array.astype(np.int8)


def checked_timestamps(times: np.ndarray | None, rows: int, part: str) -> np.ndarray | None:
    if times is None:
        return None
    array = np.asarray(times, dtype="datetime64[ns]")
    if array.shape != (rows,):
        raise ValueError(f"{array.size} {part} timestamps for {rows} {part} rows")
    return array


def feature_names(count: int) -> list[str]:
    """``value`` for a univariate series, else ``f0, f1, ...`` matching 0-based indices such as
    SMD's interpretation labels (the releases name no features)."""
    return ["value"] if count == 1 else [f"f{index}" for index in range(count)]


def select(
    available: Sequence[str], series: Sequence[str] | None, where: Path, strict: bool
) -> list[str]:
    """The requested series in release order; when ``strict``, an unknown name fails rather
    than shrinking a benchmark unnoticed."""
    if series is None:
        return list(available)
    unknown = sorted(set(series) - set(available))
    if unknown and strict:
        raise ValueError(f"no series {unknown} in {where} (available: {', '.join(available)})")
    wanted = set(series)
    return [name for name in available if name in wanted]


def natural_key(name: str) -> list[int | str]:
    """Sort ``machine-1-2`` before ``machine-1-10`` and ``A-2`` before ``A-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark directory not found: {path}")
    return path


@contextmanager
def blame(*paths: Path) -> Iterator[None]:
    """Prefix a ValueError with the files it came from, so a bad release is found at once."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{', '.join(map(str, paths))}: {exc}") from exc
