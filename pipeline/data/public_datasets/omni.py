"""The OmniAnomaly layout (SMD, ASD): text files per series, SMD's interpretation labels."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.checks import Interpretation
from pipeline.data.public_datasets.files import (
    blame,
    feature_names,
    natural_key,
    read_matrix,
    require_dir,
    select,
)
from pipeline.data.public_datasets.series import BenchmarkSeries

_INTERPRETATION_LINE = re.compile(r"(?P<start>\d+)-(?P<end>\d+):(?P<features>\d+(?:,\d+)*)")


def load_omni(
    root: str | Path, dataset: str, series: Sequence[str] | None = None, strict: bool = True
) -> list[BenchmarkSeries]:
    """Series of the OmniAnomaly layout (SMD, ASD): ``<root>/<DS>/{train,test,test_label}/
    <series>.txt``, comma-separated without header; SMD's ``interpretation_label`` is kept."""
    name = dataset.upper()
    base = require_dir(Path(root) / name)
    train_dir = require_dir(base / "train")
    available = sorted((path.stem for path in train_dir.glob("*.txt")), key=natural_key)
    return [
        _read_omni_series(base, name, item) for item in select(available, series, train_dir, strict)
    ]


def _read_omni_series(base: Path, dataset: str, name: str) -> BenchmarkSeries:
    paths = [base / part / f"{name}.txt" for part in ("train", "test", "test_label")]
    train, test, labels = (read_matrix(path) for path in paths)
    if labels.shape[1] != 1:
        raise ValueError(f"{paths[2]}: expected one label per line, got {labels.shape[1]} columns")
    interpretation_path = base / "interpretation_label" / f"{name}.txt"
    interpretation = (
        _read_interpretation(interpretation_path, *test.shape)
        if interpretation_path.is_file()
        else None
    )
    with blame(*paths):
        return BenchmarkSeries(
            dataset=dataset,
            name=name,
            train=train,
            test=test,
            test_labels=labels[:, 0],
            feature_names=feature_names(test.shape[1]),
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
