"""The UCR anomaly archive: one file per series, its labels encoded in the file name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.data.public_datasets.files import (
    blame,
    natural_key,
    require_dir,
    select,
)
from pipeline.data.public_datasets.series import BenchmarkSeries

_UCR_FILE = re.compile(
    r"(?P<id>\d+)_UCR_Anomaly_(?P<name>.+)_(?P<train_end>\d+)_(?P<start>\d+)_(?P<end>\d+)"
)


def load_ucr(
    root: str | Path, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """UCR anomaly archive files ``<root>/UCR/<id>_UCR_Anomaly_<name>_<trainEnd>_<anomStart>_
    <anomEnd>.txt``; series are named ``<id>_<name>``, e.g. ``135_InternalBleeding16``."""
    base = require_dir(Path(root) / "UCR")
    files: dict[str, tuple[Path, re.Match[str]]] = {}
    for path in base.glob("*_UCR_Anomaly_*.txt"):
        match = _UCR_FILE.fullmatch(path.stem)
        if match is None:
            raise ValueError(
                f"{path}: name does not read <id>_UCR_Anomaly_<name>_<trainEnd>_<anomStart>_"
                "<anomEnd>.txt"
            )
        files[f"{match['id']}_{match['name']}"] = (path, match)
    available = sorted(files, key=natural_key)
    return [
        _read_ucr_series(item, *files[item]) for item in select(available, series, base, strict)
    ]


def _read_ucr_series(name: str, path: Path, match: re.Match[str]) -> BenchmarkSeries:
    train_end, start, end = (int(match[group]) for group in ("train_end", "start", "end"))
    with blame(path):
        values = np.array(path.read_text().split(), dtype=np.float64).astype(np.float32)
        if not 0 < train_end <= start < end <= len(values):
            raise ValueError(
                f"train end {train_end} and anomaly [{start}, {end}) do not fit "
                f"{len(values)} values with the anomaly in the test part"
            )
        labels = np.zeros(len(values) - train_end, dtype=np.int8)
        labels[start - train_end : end - train_end] = 1
        return BenchmarkSeries(
            dataset="UCR",
            name=name,
            train=values[:train_end, None],
            test=values[train_end:, None],
            test_labels=labels,
            feature_names=["value"],
        )
