"""NAB: csv files per series, labeled by the windows of ``combined_windows.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.public_datasets.files import (
    blame,
    natural_key,
    require_dir,
    select,
)
from pipeline.data.public_datasets.series import BenchmarkSeries

NAB_TRAIN_FRACTION = 0.15


def load_nab(
    root: str | Path, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """NAB series ``<root>/NAB/data/<category>/<name>.csv`` labeled from
    ``labels/combined_windows.json``; train is the first 15% (NAB's probationary period)."""
    base = require_dir(Path(root) / "NAB")
    data_dir = require_dir(base / "data")
    labels_path = base / "labels" / "combined_windows.json"
    with blame(labels_path):
        windows = json.loads(labels_path.read_text())
    paths = sorted(data_dir.glob("*/*.csv"), key=lambda path: natural_key(path.stem))
    files = {path.stem: path for path in paths}
    if len(files) != len(paths):
        raise ValueError(f"{data_dir}: two categories hold a file of the same name")
    return [
        _read_nab_series(files[item], windows, labels_path)
        for item in select(list(files), series, data_dir, strict)
    ]


def _read_nab_series(path: Path, windows: dict, labels_path: Path) -> BenchmarkSeries:
    key = f"{path.parent.name}/{path.name}"
    if key not in windows:
        raise ValueError(f"{labels_path}: no label windows for {key}")
    with blame(path):
        frame = pd.read_csv(path, engine="c")
        missing = {"timestamp", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"missing columns {sorted(missing)}")
        times = (
            pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
            .dt.tz_localize(None)
            .to_numpy(dtype="datetime64[ns]")
        )
        if np.any(np.diff(times) < np.timedelta64(0)):
            raise ValueError("timestamps go back in time")
        values = frame["value"].to_numpy(dtype=np.float32)[:, None]
    with blame(path, labels_path):
        labels = _window_labels(times, windows[key])
        cut = int(len(values) * NAB_TRAIN_FRACTION)
        return BenchmarkSeries(
            dataset="NAB",
            name=path.stem,
            train=values[:cut],
            test=values[cut:],
            test_labels=labels[cut:],
            feature_names=["value"],
            test_timestamps=times[cut:],
            train_timestamps=times[:cut],
        )


def _window_labels(times: np.ndarray, windows: list) -> np.ndarray:
    """1 where a time stamp lies inside a ``[start, end]`` window, both ends included (NAB's
    convention); ``times`` must be sorted, duplicates allowed (NAB has some)."""
    labels = np.zeros(len(times), dtype=np.int8)
    for window in windows:
        start, end = (pd.Timestamp(bound).to_datetime64() for bound in window)
        if end < start:
            raise ValueError(f"label window {window} ends before it starts")
        first = np.searchsorted(times, start, side="left")
        stop = np.searchsorted(times, end, side="right")
        labels[first:stop] = 1
    return labels
