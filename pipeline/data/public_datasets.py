"""Public anomaly-detection benchmarks in one in-memory form, and their evaluation split.

Every public release keeps its own layout: OmniAnomaly text files (SMD, ASD), NAB's csv files
with label windows in a JSON file, UCR's labels encoded in file names, telemanom's ``.npy`` files
with a csv of anomaly ranges (SMAP, MSL). The loaders read each layout where it lies (the dataset
root is an argument; nothing is copied) into :class:`BenchmarkSeries`, so a benchmark run treats
all datasets alike, and they reject what would silently skew a score: label and row counts that
disagree, non-finite values, train and test with different features.

The evaluation protocol keeps labels out of training and out of the reported threshold: a model
fits on the unlabeled ``train`` part; the labeled ``test`` part is cut in time, its first 30%
calibrates the threshold and its last 70% is reported (:func:`split_for_evaluation`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.checks import Interpretation
from pipeline.config import ENTITY, LABEL, TIMESTAMP

log = logging.getLogger(__name__)

CALIBRATION_FRACTION = 0.3
NAB_TRAIN_FRACTION = 0.15
SYNTHETIC_START = pd.Timestamp("2000-01-01", tz="UTC")
_SYNTHETIC_STEP = {"SMD": pd.Timedelta("1min"), "ASD": pd.Timedelta("5min")}
_DEFAULT_STEP = pd.Timedelta("1min")

_INTERPRETATION_LINE = re.compile(r"(?P<start>\d+)-(?P<end>\d+):(?P<features>\d+(?:,\d+)*)")
_UCR_FILE = re.compile(
    r"(?P<id>\d+)_UCR_Anomaly_(?P<name>.+)_(?P<train_end>\d+)_(?P<start>\d+)_(?P<end>\d+)"
)

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
        train = _finite_matrix(self.train, "train")
        test = _finite_matrix(self.test, "test")
        if train.shape[1] != test.shape[1]:
            raise ValueError(f"train has {train.shape[1]} features but test has {test.shape[1]}")
        if len(self.feature_names) != test.shape[1]:
            raise ValueError(
                f"{len(self.feature_names)} feature names for {test.shape[1]} features"
            )
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "test", test)
        object.__setattr__(self, "test_labels", _binary_labels(self.test_labels, len(test)))
        object.__setattr__(
            self, "train_timestamps", _timestamps(self.train_timestamps, len(train), "train")
        )
        object.__setattr__(
            self, "test_timestamps", _timestamps(self.test_timestamps, len(test), "test")
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


def load_benchmark(
    root: str | Path, dataset: str, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """Load a benchmark by name (SMD, ASD, NAB, UCR, SMAP, MSL; any case) from ``root``,
    the directory holding one folder per dataset; ``series`` keeps only the named series.

    A name the dataset lacks is an error unless ``strict`` is False: a caller choosing names
    across several datasets then checks the leftovers itself, and only named series are read.
    """
    loader = _LOADERS.get(dataset.upper())
    if loader is None:
        known = ", ".join(_LOADERS)
        raise ValueError(f"unknown benchmark dataset {dataset!r}: choose one of {known}")
    return loader(Path(root), series=series, strict=strict)


def load_omni(
    root: str | Path, dataset: str, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """Series of the OmniAnomaly layout (SMD, ASD): ``<root>/<DS>/{train,test,test_label}/
    <series>.txt``, comma-separated without header; SMD's ``interpretation_label`` is kept."""
    name = dataset.upper()
    base = _require_dir(Path(root) / name)
    train_dir = _require_dir(base / "train")
    available = sorted((path.stem for path in train_dir.glob("*.txt")), key=_natural_key)
    return [
        _read_omni_series(base, name, item)
        for item in _select(available, series, train_dir, strict)
    ]


def load_nab(
    root: str | Path, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """NAB series ``<root>/NAB/data/<category>/<name>.csv`` labeled from
    ``labels/combined_windows.json``; train is the first 15% (NAB's probationary period)."""
    base = _require_dir(Path(root) / "NAB")
    data_dir = _require_dir(base / "data")
    labels_path = base / "labels" / "combined_windows.json"
    with _blame(labels_path):
        windows = json.loads(labels_path.read_text())
    paths = sorted(data_dir.glob("*/*.csv"), key=lambda path: _natural_key(path.stem))
    files = {path.stem: path for path in paths}
    if len(files) != len(paths):
        raise ValueError(f"{data_dir}: two categories hold a file of the same name")
    return [
        _read_nab_series(files[item], windows, labels_path)
        for item in _select(list(files), series, data_dir, strict)
    ]


def load_ucr(
    root: str | Path, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """UCR anomaly archive files ``<root>/UCR/<id>_UCR_Anomaly_<name>_<trainEnd>_<anomStart>_
    <anomEnd>.txt``; series are named ``<id>_<name>``, e.g. ``135_InternalBleeding16``."""
    base = _require_dir(Path(root) / "UCR")
    files: dict[str, tuple[Path, re.Match[str]]] = {}
    for path in base.glob("*_UCR_Anomaly_*.txt"):
        match = _UCR_FILE.fullmatch(path.stem)
        if match is None:
            raise ValueError(
                f"{path}: name does not read <id>_UCR_Anomaly_<name>_<trainEnd>_<anomStart>_"
                "<anomEnd>.txt"
            )
        files[f"{match['id']}_{match['name']}"] = (path, match)
    available = sorted(files, key=_natural_key)
    return [
        _read_ucr_series(item, *files[item]) for item in _select(available, series, base, strict)
    ]


def load_telemanom(
    root: str | Path, dataset: str, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """Channels of the telemanom release (SMAP, MSL): ``<root>/<DS>/{train,test}/<chan>.npy``
    and ``labeled_anomalies.csv`` in ``<root>/<DS>/`` or ``<root>/``, which lists both
    spacecraft; only the channels of ``dataset`` are read."""
    spacecraft = dataset.upper()
    base = _require_dir(Path(root) / spacecraft)
    table_path = _labeled_anomalies_path(Path(root), base)
    sequences = _read_labeled_anomalies(table_path, spacecraft)
    available = sorted(sequences, key=_natural_key)
    return [
        _read_telemanom_series(base, spacecraft, chan, sequences[chan], table_path)
        for chan in _select(available, series, table_path, strict)
    ]


_LOADERS: dict[str, Callable[..., list[BenchmarkSeries]]] = {
    "SMD": partial(load_omni, dataset="SMD"),
    "ASD": partial(load_omni, dataset="ASD"),
    "NAB": load_nab,
    "UCR": load_ucr,
    "SMAP": partial(load_telemanom, dataset="SMAP"),
    "MSL": partial(load_telemanom, dataset="MSL"),
}


def _read_omni_series(base: Path, dataset: str, name: str) -> BenchmarkSeries:
    paths = [base / part / f"{name}.txt" for part in ("train", "test", "test_label")]
    train, test, labels = (_read_matrix(path) for path in paths)
    if labels.shape[1] != 1:
        raise ValueError(f"{paths[2]}: expected one label per line, got {labels.shape[1]} columns")
    interpretation_path = base / "interpretation_label" / f"{name}.txt"
    interpretation = (
        _read_interpretation(interpretation_path, *test.shape)
        if interpretation_path.is_file()
        else None
    )
    with _blame(*paths):
        return BenchmarkSeries(
            dataset=dataset,
            name=name,
            train=train,
            test=test,
            test_labels=labels[:, 0],
            feature_names=_feature_names(test.shape[1]),
            interpretation=interpretation,
        )


def _read_interpretation(path: Path, rows: int, features: int) -> Interpretation:
    """SMD's ``start-end:f1,f2,...`` lines: test rows ``[start, end)`` (they match
    ``test_label``) and 1-based feature numbers, returned 0-based like the feature columns."""
    segments: Interpretation = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = _INTERPRETATION_LINE.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"{path}:{number}: expected 'start-end:f1,f2,...', got {line!r}")
        start, end = int(match["start"]), int(match["end"])
        indices = [int(feature) - 1 for feature in match["features"].split(",")]
        if not 0 <= start < end <= rows or not all(0 <= i < features for i in indices):
            raise ValueError(
                f"{path}:{number}: segment {line!r} lies outside {rows} test rows and "
                f"{features} features"
            )
        segments.append((start, end, indices))
    return segments


def _read_nab_series(path: Path, windows: dict, labels_path: Path) -> BenchmarkSeries:
    key = f"{path.parent.name}/{path.name}"
    if key not in windows:
        raise ValueError(f"{labels_path}: no label windows for {key}")
    with _blame(path):
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
    with _blame(path, labels_path):
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


def _read_ucr_series(name: str, path: Path, match: re.Match[str]) -> BenchmarkSeries:
    train_end, start, end = (int(match[group]) for group in ("train_end", "start", "end"))
    with _blame(path):
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
    with _blame(path):
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
    train, test = _read_npy(train_path), _read_npy(test_path)
    with _blame(train_path, test_path, table_path):
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
            feature_names=_feature_names(test.shape[1]),
        )


def _read_matrix(path: Path) -> np.ndarray:
    """A headerless comma-separated numeric table; pandas' C parser is ~20x ``np.loadtxt``."""
    with _blame(path):
        return pd.read_csv(path, header=None, engine="c").to_numpy(dtype=np.float32)


def _read_npy(path: Path) -> np.ndarray:
    with _blame(path):
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2:
            raise ValueError(f"expected a (time, features) array, got shape {array.shape}")
        return array


def _finite_matrix(values: np.ndarray, part: str) -> np.ndarray:
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


def _binary_labels(labels: np.ndarray, rows: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (rows,):
        raise ValueError(f"{array.size} test labels for {rows} test rows")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("test labels must be 0 or 1")
    return array.astype(np.int8)


def _timestamps(times: np.ndarray | None, rows: int, part: str) -> np.ndarray | None:
    if times is None:
        return None
    array = np.asarray(times, dtype="datetime64[ns]")
    if array.shape != (rows,):
        raise ValueError(f"{array.size} {part} timestamps for {rows} {part} rows")
    return array


def _feature_names(count: int) -> list[str]:
    """``value`` for a univariate series, else ``f0, f1, ...`` matching 0-based indices such as
    SMD's interpretation labels (the releases name no features)."""
    return ["value"] if count == 1 else [f"f{index}" for index in range(count)]


def _select(
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


def _natural_key(name: str) -> list[int | str]:
    """Sort ``machine-1-2`` before ``machine-1-10`` and ``A-2`` before ``A-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark directory not found: {path}")
    return path


@contextmanager
def _blame(*paths: Path) -> Iterator[None]:
    """Prefix a ValueError with the files it came from, so a bad release is found at once."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{', '.join(map(str, paths))}: {exc}") from exc
