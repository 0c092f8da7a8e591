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

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from pipeline.data.public_datasets.nab import load_nab
from pipeline.data.public_datasets.omni import load_omni
from pipeline.data.public_datasets.series import (
    CALIBRATION_FRACTION,
    BenchmarkSeries,
    EvaluationSplit,
    has_evaluation_anomalies,
    split_for_evaluation,
)
from pipeline.data.public_datasets.telemanom import load_telemanom
from pipeline.data.public_datasets.ucr import load_ucr

__all__ = [
    "CALIBRATION_FRACTION",
    "BenchmarkSeries",
    "EvaluationSplit",
    "has_evaluation_anomalies",
    "load_benchmark",
    "load_nab",
    "load_omni",
    "load_telemanom",
    "load_ucr",
    "split_for_evaluation",
]


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


_LOADERS: dict[str, Callable[..., list[BenchmarkSeries]]] = {
    "SMD": partial(load_omni, dataset="SMD"),
    "ASD": partial(load_omni, dataset="ASD"),
    "NAB": load_nab,
    "UCR": load_ucr,
    "SMAP": partial(load_telemanom, dataset="SMAP"),
    "MSL": partial(load_telemanom, dataset="MSL"),
}
