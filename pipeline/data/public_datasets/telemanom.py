"""The telemanom release (SMAP, MSL): ``.npy`` channels and a csv of anomaly ranges."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.public_datasets.files import (
    blame,
    feature_names,
    natural_key,
    read_npy,
    require_dir,
    select,
)
from pipeline.data.public_datasets.series import BenchmarkSeries

log = logging.getLogger(__name__)


def load_telemanom(
    root: str | Path, dataset: str, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """Channels of the telemanom release (SMAP, MSL): ``<root>/<DS>/{train,test}/<chan>.npy``
    and ``labeled_anomalies.csv`` in ``<root>/<DS>/`` or ``<root>/``, which lists both
    spacecraft; only the channels of ``dataset`` are read."""
    spacecraft = dataset.upper()
    base = require_dir(Path(root) / spacecraft)
    table_path = _labeled_anomalies_path(Path(root), base)
    sequences = _read_labeled_anomalies(table_path, spacecraft)
    available = sorted(sequences, key=natural_key)
    return [
        _read_telemanom_series(base, spacecraft, chan, sequences[chan], table_path)
        for chan in select(available, series, table_path, strict)
    ]


def _labeled_anomalies_path(root: Path, base: Path) -> Path:
    candidates = (base / "labeled_anomalies.csv", root / "labeled_anomalies.csv")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"labeled_anomalies.csv not found at {candidates[0]} or {candidates[1]}"
    )


def _read_labeled_anomalies(path: Path, spacecraft: str) -> dict[str, list[list[int]]]:
    """The anomaly ranges of one spacecraft's channels, parsed as JSON (never ``eval``).

    The published file lists channel P-2 twice with different ranges; a channel listed more
    than once gets all of its rows' ranges (their union), with a warning, since refusing the
    file would refuse the release every user downloads.
    """
    with blame(path):
        table = pd.read_csv(path, engine="c")
        missing = {"chan_id", "spacecraft", "anomaly_sequences"} - set(table.columns)
        if missing:
            raise ValueError(f"missing columns {sorted(missing)}")
        rows = table[table["spacecraft"].astype(str).str.strip().str.upper() == spacecraft]
        if rows.empty:
            raise ValueError(f"no channel of spacecraft {spacecraft}")
        sequences: dict[str, list[list[int]]] = {}
        for chan, text in zip(rows["chan_id"].astype(str), rows["anomaly_sequences"], strict=True):
            sequences.setdefault(chan, []).extend(_parse_sequences(text))
        twice = sorted(set(rows["chan_id"].astype(str)[rows["chan_id"].astype(str).duplicated()]))
        if twice:
            log.warning(
                "%s: channels listed more than once: %s; each is labeled with the union of "
                "its ranges",
                path,
                twice,
            )
        return sequences


def _parse_sequences(text: str) -> list[list[int]]:
    try:
        sequences = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        sequences = None
    valid = isinstance(sequences, list) and all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) for i in pair)
        for pair in sequences
    )
    if not valid:
        raise ValueError(f"anomaly_sequences {text!r} is not a list of [start, end] pairs")
    return sequences


def _read_telemanom_series(
    base: Path, spacecraft: str, chan: str, sequences: list[list[int]], table_path: Path
) -> BenchmarkSeries:
    train_path, test_path = (base / part / f"{chan}.npy" for part in ("train", "test"))
    train, test = read_npy(train_path), read_npy(test_path)
    with blame(train_path, test_path, table_path):
        labels = np.zeros(len(test), dtype=np.int8)
        for start, end in sequences:
            if not 0 <= start <= end < len(test):
                raise ValueError(
                    f"{chan}: anomaly [{start}, {end}] lies outside {len(test)} test rows"
                )
            labels[start : end + 1] = 1
        return BenchmarkSeries(
            dataset=spacecraft,
            name=chan,
            train=train,
            test=test,
            test_labels=labels,
            feature_names=feature_names(test.shape[1]),
        )
