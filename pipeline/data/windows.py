"""Scaling, segmentation, sliding windows and window-to-point score mapping.

A series reaches a detector as :class:`Segments`: one contiguous ``float32`` array of all rows
plus the offsets where each gap-free stretch starts. Windows never cross a segment boundary, so
a gap in the data (or the border between two patients) is never bridged silently. Windows are
index arithmetic over that one array (``sliding_window_view`` or ``Tensor.unfold``), never a
materialised copy of the whole series.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.config import ENTITY, TIMESTAMP


@dataclass(frozen=True)
class Segments:
    """Rows of several gap-free stretches stored back to back.

    ``values[bounds[i]:bounds[i + 1]]`` is segment ``i``; ``bounds`` starts at 0 and ends at
    ``len(values)``.
    """

    values: np.ndarray
    bounds: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(
                f"segment values must be 2-D (time, features), got {self.values.shape}"
            )
        bounds = np.asarray(self.bounds, dtype=np.int64)
        if bounds.ndim != 1 or len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != len(self.values):
            raise ValueError("segment bounds must run from 0 to the number of rows")
        if np.any(np.diff(bounds) <= 0):
            raise ValueError("segments must be non-empty and in order")
        object.__setattr__(self, "bounds", bounds)

    @classmethod
    def single(cls, values: np.ndarray) -> Segments:
        """One gap-free series (a 1-D array is taken as one feature)."""
        array = np.asarray(values, dtype=np.float32)
        if array.ndim == 1:
            array = array[:, None]
        return cls(np.ascontiguousarray(array), np.array([0, len(array)]))

    @property
    def n_rows(self) -> int:
        return len(self.values)

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.bounds)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start, stop in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            yield self.values[start:stop]

    def split_tail(self, fraction: float) -> tuple[Segments, Segments | None]:
        """Split every segment in time: the last ``fraction`` of each becomes the hold-out.

        Used for early stopping on the tail of the training data (never on test data).
        Segments too short to give both sides at least two rows stay whole in the head.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
        head_parts: list[np.ndarray] = []
        tail_parts: list[np.ndarray] = []
        for segment in self:
            cut = round(len(segment) * (1.0 - fraction))
            if cut < 2 or len(segment) - cut < 2:
                head_parts.append(segment)
                continue
            head_parts.append(segment[:cut])
            tail_parts.append(segment[cut:])
        return concat_segments(head_parts), (concat_segments(tail_parts) if tail_parts else None)


def concat_segments(parts: Sequence[np.ndarray]) -> Segments:
    """Stack gap-free pieces into one :class:`Segments` (one copy, at preparation time)."""
    if not parts:
        raise ValueError("no rows to build segments from")
    lengths = [len(part) for part in parts]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    values = np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)
    return Segments(values, bounds)


def timestamps_ns(timestamps: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds, whatever the column's unit."""
    return (
        timestamps.dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .to_numpy("datetime64[ns]")
        .view(np.int64)
    )


class EntityTimeOrder(NamedTuple):
    """Canonical frames' rows taken one after another, and their order by entity then time.

    ``codes`` (integers that sort as the entities do; ``entities[code]`` names one) and
    ``times`` (int64 nanoseconds) are per row, in stacking order. ``order`` sorts the rows as
    ``sort_values([entity, timestamp], kind="stable")`` sorts the frames' concatenation: an
    earlier frame's rows first among equal keys, a missing entity last. Sorting on the codes
    keeps the text in Arrow instead of boxing it into a Python string per row.
    """

    codes: np.ndarray
    times: np.ndarray
    entities: pd.Index
    order: np.ndarray


def entity_time_order(*frames: pd.DataFrame) -> EntityTimeOrder:
    """The :class:`EntityTimeOrder` of ``frames``: the one sort scoring and its flags share."""
    column = pd.concat([frame[ENTITY] for frame in frames], ignore_index=True)
    codes, entities = pd.factorize(column, sort=True, use_na_sentinel=False)
    times = np.concatenate([timestamps_ns(frame[TIMESTAMP]) for frame in frames])
    return EntityTimeOrder(codes, times, entities, np.lexsort((times, codes)))


def segment_bounds(codes: np.ndarray, times: np.ndarray, step: pd.Timedelta) -> np.ndarray:
    """Offsets where a new entity starts or consecutive timestamps are more than a step apart.

    ``codes`` (entity codes) and ``times`` (int64 nanoseconds) are of rows sorted by entity
    then timestamp.
    """
    n_rows = len(codes)
    if n_rows == 0:
        return np.array([0], dtype=np.int64)
    new_entity = codes[1:] != codes[:-1]
    gap = np.diff(times) > int(pd.Timedelta(step).value)
    cuts = np.flatnonzero(new_entity | gap) + 1
    return np.concatenate([[0], cuts, [n_rows]]).astype(np.int64)


def frame_to_segments(
    frame: pd.DataFrame, features: Sequence[str], step: pd.Timedelta
) -> tuple[Segments, pd.DataFrame]:
    """Sort a canonical frame by entity and time and cut it into gap-free segments.

    Returns the segments and the sorted frame, whose row order matches ``segments.values``
    (the order of ``sort_values([entity, timestamp], kind="stable")``).
    """
    codes, times, _, order = entity_time_order(frame)
    values = np.ascontiguousarray(frame[list(features)].to_numpy(dtype=np.float32)[order])
    bounds = segment_bounds(codes[order], times[order], step)
    return Segments(values, bounds), frame.take(order).reset_index(drop=True)


# Below this standard deviation a feature counts as constant: the scaler leaves it unscaled
# and training refuses it, so the two never disagree about a stuck sensor's float jitter.
MIN_SPREAD = 1e-8


@dataclass(frozen=True)
class StandardScaler:
    """Per-feature standardisation fitted on training rows only; stored as plain JSON."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, features: Sequence[str]) -> StandardScaler:
        """Fit on finite values; a constant feature gets scale 1 so it maps to zero."""
        data = np.asarray(values, dtype=np.float64)
        mean = np.nanmean(data, axis=0)
        std = np.nanstd(data, axis=0)
        scale = np.where(np.isfinite(std) & (std > MIN_SPREAD), std, 1.0)
        return cls(tuple(features), mean.astype(np.float32), scale.astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Standardise; missing values become 0 (the training mean) after scaling."""
        scaled = (np.asarray(values, dtype=np.float32) - self.mean) / self.scale
        return np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)

    def to_dict(self) -> dict:
        return {
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> StandardScaler:
        return cls(
            tuple(data["features"]),
            np.asarray(data["mean"], dtype=np.float32),
            np.asarray(data["scale"], dtype=np.float32),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> StandardScaler:
        return cls.from_dict(json.loads(path.read_text()))


def window_starts(bounds: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Start offsets of windows that stay inside one segment.

    Every segment at least ``window`` long yields starts ``0, stride, ...`` plus one window
    aligned to its end, so no tail row is left uncovered. Shorter segments yield none (see
    :func:`pad_short_segments`).
    """
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be positive")
    starts: list[np.ndarray] = []
    for begin, end in itertools.pairwise(bounds):
        last = end - window
        if last < begin:
            continue
        local = np.arange(begin, last + 1, stride, dtype=np.int64)
        if local[-1] != last:
            local = np.append(local, last)
        starts.append(local)
    if not starts:
        return np.empty(0, dtype=np.int64)
    return np.concatenate(starts)


def pad_short_segments(segments: Segments, window: int) -> tuple[Segments, np.ndarray]:
    """Left-pad segments shorter than ``window`` by repeating their first row.

    Returns the padded segments and the indices of the original rows inside them, so a
    detector can score every time step of a short stretch (e.g. a patient admitted late in
    the day) and drop the padding afterwards. Without short segments, nothing is copied.
    """
    lengths = segments.lengths
    if np.all(lengths >= window):
        return segments, np.arange(segments.n_rows)
    parts: list[np.ndarray] = []
    keep: list[np.ndarray] = []
    offset = 0
    for segment in segments:
        pad = max(0, window - len(segment))
        if pad:
            segment = np.concatenate([np.repeat(segment[:1], pad, axis=0), segment], axis=0)
        parts.append(segment)
        keep.append(np.arange(offset + pad, offset + len(segment)))
        offset += len(segment)
    return concat_segments(parts), np.concatenate(keep)


def sliding_windows(values: np.ndarray, window: int) -> np.ndarray:
    """All windows of a 2-D array as a read-only view of shape (n, window, features)."""
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return view.transpose(0, 2, 1)


class PointFeatureScores:
    """Accumulates per-step, per-feature window errors onto rows, chunk by chunk.

    ``add(starts, errors)`` takes ``errors[i, t, f]``, the error the window starting at
    ``starts[i]`` gives feature ``f`` of its ``t``-th step; :meth:`result` gives each row and
    feature the mean over all windows covering the row. Memory is one array of
    ``n_rows x n_features`` plus one of the series length, whatever the number of windows, so
    scoring runs in bounded chunks.

    One ``bincount`` per chunk over the flattened (row, feature) index of the rows the chunk's
    windows span: the work is proportional to the chunk, not to the series length times the
    window.
    """

    def __init__(self, n_rows: int, n_features: int) -> None:
        self._total = np.zeros(n_rows * n_features, dtype=np.float64)
        self._count = np.zeros(n_rows, dtype=np.float64)
        self._shape = (n_rows, n_features)

    def add(self, starts: np.ndarray, window_errors: np.ndarray) -> None:
        errors = np.asarray(window_errors, dtype=np.float64)
        if len(starts) == 0:
            return
        n_features = self._shape[1]
        first = int(starts.min())
        span = int(starts.max()) - first + errors.shape[1]
        positions = ((starts - first)[:, None] + np.arange(errors.shape[1])).ravel()
        cells = (positions[:, None] * n_features + np.arange(n_features)).ravel()
        covered = slice(first * n_features, (first + span) * n_features)
        self._total[covered] += np.bincount(
            cells, weights=errors.ravel(), minlength=span * n_features
        )
        self._count[first : first + span] += np.bincount(positions, minlength=span)

    def result(self) -> np.ndarray:
        uncovered = self._count == 0
        if np.any(uncovered):
            raise ValueError(f"{int(uncovered.sum())} time steps are covered by no window")
        return self._total.reshape(self._shape) / self._count[:, None]


class PointScores:
    """:class:`PointFeatureScores` of one feature: per-step window errors onto time steps.

    ``add(starts, errors)`` takes ``errors[i, t]``; :meth:`result` gives each time step the
    mean over all windows covering it. The errors are one feature's, so both share one
    accumulation (memory is two arrays of the series length).
    """

    def __init__(self, n_rows: int) -> None:
        self._points = PointFeatureScores(n_rows, 1)

    def add(self, starts: np.ndarray, window_errors: np.ndarray) -> None:
        self._points.add(starts, np.asarray(window_errors)[:, :, None])

    def result(self) -> np.ndarray:
        return self._points.result()[:, 0]
