"""The deployable model: scaler, detector, threshold, dataset spec and reference profile, bundled.

A bundle is a directory of plain files (JSON, YAML and torch weights; no pickle). Training
writes it, MLflow ships it inside the pyfunc model, and scoring applies it to a canonical frame:
the previous day's tail supplies window context so every row of the day gets a score, and
entities are scored in chunks so memory stays bounded however many a day holds (a landed day
is streamed from disk chunk by chunk, never read whole). Every alarm names the features that
drive it, and a streamed day's rows carry the policy flags of :mod:`pipeline.data.flags`. The
reference profile (training-time statistics, see ``pipeline.monitoring``) is optional: bundles
from before it existed still score.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from pipeline import attribution
from pipeline.calibration import Calibrator, calibrator_from_dict
from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.data import flags, io, regroup
from pipeline.data.windows import (
    Segments,
    StandardScaler,
    entity_time_order,
    frame_to_segments,
    segment_bounds,
)
from pipeline.detectors.base import Detector
from pipeline.detectors.registry import load_detector
from pipeline.monitoring import ReferenceProfile
from pipeline.read_ahead import read_ahead
from pipeline.sharding import Shard, entity_rows

SCORE_COLUMNS = [
    "timestamp",
    "entity",
    "score",
    "threshold",
    "is_anomaly",
    "top_features",
    "contributions",
]
# Entities scored together: large enough to fill the detector's batches, small enough that
# memory does not grow with a day that holds thousands.
ENTITIES_PER_CHUNK = 64
# The device every stage after training loads a model on: the one of the worker it runs on.
# Training's device setting governs training alone, so a model fitted on a GPU worker is
# calibrated, evaluated and scored on CPU workers too (and on a GPU where the worker has one).
WORKER_DEVICE = "auto"
# Called with each streamed chunk's canonical rows as landed and their scores.
ChunkObserver = Callable[[pd.DataFrame, pd.DataFrame], None]


def entity_chunks(entities: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive groups of at most ``size`` entities."""
    if size < 1:
        raise ValueError(f"entities per chunk must be positive, got {size}")
    return [entities[begin : begin + size] for begin in range(0, len(entities), size)]


def _own_or_context_tail(
    order: np.ndarray, codes: np.ndarray, n_earlier: int, needed: int
) -> np.ndarray:
    """Which rows of an entity-then-time ``order`` a window can use.

    Rows before ``n_earlier`` are context: of those, only each entity's last ``needed`` reach
    a window of the later rows, which are all kept.
    """
    from_context = order < n_earlier
    context_codes = codes[order[from_context]]  # grouped by entity, in time order
    group_ends = np.searchsorted(context_codes, context_codes, side="right")
    kept = ~from_context
    kept[from_context] = group_ends - np.arange(len(context_codes)) <= needed
    return kept


def scores_schema(constants: Iterable[str]) -> pa.Schema:
    """The scores file's columns: :data:`SCORE_COLUMNS`, text ``constants``, then ``flags``."""
    return pa.schema(
        [
            pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC")),
            pa.field(ENTITY, pa.string()),
            pa.field("score", pa.float64()),
            pa.field("threshold", pa.float64()),
            pa.field("is_anomaly", pa.bool_()),
            pa.field("top_features", pa.list_(pa.string())),
            pa.field("contributions", pa.list_(pa.float64())),
            *(pa.field(name, pa.string()) for name in constants),
            pa.field(flags.FLAGS, pa.string()),
        ]
    )


def _score_then_finish(
    chunks: Iterable[pd.DataFrame],
    score: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame],
    finish: Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], None],
) -> None:
    """Score each regrouped chunk while the one before it finishes on a worker thread.

    A chunk's rows split into its own (partition 0) and context (partition 1) rows; both
    stages take the chunks in order, and each chunk finishes before the next one may.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsad-finish") as finisher:
        finishing: Future[None] | None = None
        for rows in chunks:
            own = rows[rows[regroup.PARTITION] == 0]
            earlier = rows[rows[regroup.PARTITION] == 1]
            scores = score(own, earlier)
            if finishing is not None:
                finishing.result()
            finishing = finisher.submit(finish, own, earlier, scores)
        if finishing is not None:
            finishing.result()


@dataclass
class PartitionScores:
    """Counts of a day scored by :meth:`ModelBundle.score_partition`."""

    rows: int
    entities: int
    anomalies: int = 0
    flagged_rows: dict[str, int] = field(default_factory=dict)

    def add(self, scores: pd.DataFrame) -> None:
        """Count one flagged chunk of score rows in (flag names stay in sorted order)."""
        self.rows += len(scores)
        self.anomalies += int(scores["is_anomaly"].sum())
        counted = Counter(self.flagged_rows) + Counter(flags.counts(scores[flags.FLAGS]))
        self.flagged_rows = dict(sorted(counted.items()))


class ModelMismatchError(ValueError):
    """A model whose features or window do not fit the data it is asked to score."""


@dataclass
class ModelBundle:
    """Everything needed to turn a day's canonical frame into scores and alarms.

    The bundle's directory layout is known here alone: training writes each part as it is
    fitted (``save_scaler`` after preparing, ``save_detector`` after training, ...), and
    :meth:`load` reads them all back.
    """

    SCALER_FILE: ClassVar[str] = "scaler.json"
    DETECTOR_DIR: ClassVar[str] = "detector"
    CALIBRATION_FILE: ClassVar[str] = "calibration.json"
    PROFILE_FILE: ClassVar[str] = "profile.json"
    SPEC_FILE: ClassVar[str] = "spec.yaml"
    ENTITIES_FILE: ClassVar[str] = "entities.json"

    spec: DatasetSpec
    scaler: StandardScaler
    detector: Detector
    calibrator: Calibrator
    profile: ReferenceProfile | None = None
    entities: frozenset[str] | None = None  # seen in training; None for older bundles

    @property
    def threshold(self) -> float:
        return self.calibrator.threshold_

    @property
    def window(self) -> int:
        """Rows of context a score needs (1 for point-wise detectors)."""
        return self.detector.score_span

    def check_compatible(self, spec: DatasetSpec) -> None:
        """Refuse, before scoring, a model that does not fit the dataset's current spec.

        The features must be the same in the same order, and the sampling step the one the
        model's window was learnt at; the window must fit in one day, since the previous day is
        all the context a day's scoring reads.
        """
        if list(self.scaler.features) != spec.feature_names:
            raise ModelMismatchError(
                f"model expects features {list(self.scaler.features)}, "
                f"dataset {spec.name!r} has {spec.feature_names}"
            )
        if self.spec.step != spec.step:
            raise ModelMismatchError(
                f"model was trained on {self.spec.frequency!r} steps, "
                f"dataset {spec.name!r} now has {spec.frequency!r}: its window spans another time"
            )
        steps_per_day = dt.timedelta(days=1) // spec.step
        if self.window > steps_per_day:
            raise ModelMismatchError(
                f"model window of {self.window} steps exceeds the {steps_per_day} steps of a "
                f"{spec.frequency!r} day that scoring can use as context"
            )

    def scaled_segments(self, frame: pd.DataFrame) -> Segments:
        """A canonical frame sorted by entity and time as scaled, gap-aware segments."""
        segments, _ = frame_to_segments(frame, self.spec.feature_names, self.spec.step)
        return Segments(self.scaler.transform(segments.values), segments.bounds)

    def score_segments(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw scores of a canonical frame sorted by entity and time."""
        return self.detector.score(self.scaled_segments(frame))

    def explain(
        self, feature_scores: np.ndarray, alarms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top features and contributions of the ``alarms`` rows; ``None`` for every other row.

        ``feature_scores`` holds one row per alarm, in order (what
        :meth:`~pipeline.detectors.base.Detector.explained_scores` returns).
        """
        names = np.full(len(alarms), None, dtype=object)
        shares = np.full(len(alarms), None, dtype=object)
        if alarms.any():
            top, contributions = attribution.top_features(
                feature_scores, self.spec.feature_names, self.spec.monitoring.top_features
            )
            for index, row_names, row_shares in zip(
                np.flatnonzero(alarms), top, contributions, strict=True
            ):
                names[index], shares[index] = row_names, row_shares
        return names, shares

    def score_frame(
        self,
        frame: pd.DataFrame,
        context: pd.DataFrame | None = None,
        entities_per_chunk: int = ENTITIES_PER_CHUNK,
    ) -> pd.DataFrame:
        """Score every row of ``frame``; ``context`` (earlier rows) only feeds the windows.

        Returns one row per input row, sorted by entity then time, with the columns of
        :data:`SCORE_COLUMNS`: an alarm (``is_anomaly``) also names its ``top_features``, most
        responsible first, with their ``contributions`` (shares of the row's anomaly).
        """
        rows_of = frame.groupby(ENTITY, sort=False).indices
        parts = []
        for chosen in entity_chunks(np.array(sorted(rows_of), dtype=object), entities_per_chunk):
            own = frame.iloc[np.concatenate([rows_of[entity] for entity in chosen])]
            earlier = None if context is None else context[context[ENTITY].isin(chosen)]
            parts.append(self._score_entities(own, earlier))
        return pd.concat(parts, ignore_index=True)

    def score_partition(
        self,
        day: Path,
        target: Path,
        context: Path | None = None,
        constants: dict[str, str] | None = None,
        entities_per_chunk: int = ENTITIES_PER_CHUNK,
        spec: DatasetSpec | None = None,
        observe: ChunkObserver | None = None,
        day_start: pd.Timestamp | None = None,
        shard: Shard | None = None,
    ) -> PartitionScores:
        """Stream a landed day from ``day`` to a scores file at ``target``, in bounded memory.

        The day (and the ``context`` partition before it) is regrouped into chunks of
        ``entities_per_chunk`` whole entities on disk, then each chunk is scored, flagged and
        appended to ``target``, so peak memory is one chunk whatever the number of entities.
        The rows equal :meth:`score_frame`'s on the same data, plus the ``constants`` columns
        and the ``flags`` column. Partitions are read with ``spec`` (the dataset's current
        spec; the bundle's by default). ``observe`` sees each chunk's rows and scores, in order
        and from one worker thread, so a caller can summarise the day without holding it.
        ``day_start``, the earliest moment the day's rows can hold, skips the context rows more
        than a window before it: windows never span a gap, so those reach no window of the day
        (scores and flags are unchanged). ``shard`` scores only its entities
        (:mod:`pipeline.sharding`): the others' rows, of the day and of its context, are
        dropped as each batch is decoded; a shard holding none of the day's entities writes an
        empty scores file.
        """
        spec = spec or self.spec
        constants = constants or {}
        entities = io.partition_entities(day, spec)
        rows = None
        if shard is not None and shard.count > 1:
            entities = shard.entities(entities)
            if spec.entity_source:
                rows = entity_rows(spec.entity_source, entities)
        chunks = entity_chunks(entities, entities_per_chunk)
        context_since = None if day_start is None else day_start - (self.window - 1) * spec.step
        sources, since = (
            ([day], [None]) if context is None else ([day, context], [None, context_since])
        )
        # Every entity comes from the day's own rows, so each one scores at least one row.
        totals = PartitionScores(rows=0, entities=len(entities))
        if not len(entities):  # a shard none of the day's entities hash to
            schema = scores_schema(constants)
            io.write_parquet_atomic(schema.empty_table().to_pandas(), target, schema)
            return totals

        def finish(own: pd.DataFrame, earlier: pd.DataFrame, scores: pd.DataFrame) -> None:
            notes = flags.row_flags(own, earlier, self.entities, spec.step, self.window)
            scores = flags.annotate(scores.assign(**constants), notes)
            append(scores)
            if observe is not None:
                observe(own, scores)
            totals.add(scores)

        # Three stages overlap: the next chunk is read, this one scored, the last one flagged
        # and written; each stage runs its chunks in order, so the file is as a serial run's.
        with (
            tempfile.TemporaryDirectory(prefix="tsad-score-") as spill,
            io.parquet_writer_atomic(target, scores_schema(constants)) as append,
            contextlib.closing(
                read_ahead(
                    regroup.regroup_by_entity(sources, spec, chunks, Path(spill), since, rows)
                )
            ) as regrouped,
        ):
            _score_then_finish(regrouped, self._score_entities, finish)
        return totals

    def _score_entities(self, own: pd.DataFrame, earlier: pd.DataFrame | None) -> pd.DataFrame:
        """Scores of the rows in ``own``; ``earlier`` rows of the same entities add context.

        Both are sorted together once, by entity code and time (the order of
        ``sort_values([entity, timestamp], kind="stable")`` on context then own rows), and
        every later step indexes that order: the context kept, the windows and the rows
        returned. Only each entity's last ``window - 1`` earlier rows can reach a window.
        """
        parts = [earlier, own] if earlier is not None and len(earlier) else [own]
        codes, times, _, order = entity_time_order(*parts)
        n_earlier = len(codes) - len(own)
        order = order[_own_or_context_tail(order, codes, n_earlier, self.window - 1)]
        features = self.spec.feature_names
        values = np.concatenate([part[features].to_numpy(dtype=np.float32) for part in parts])
        segments = Segments(
            self.scaler.transform(values[order]),
            segment_bounds(codes[order], times[order], self.spec.step),
        )
        scores, alarm_features = self.detector.explained_scores(segments, self.threshold)
        keep = order >= n_earlier
        alarms = self.calibrator.predict(scores)
        # Context rows only feed the windows: their alarms are the previous day's to explain.
        top_features, contributions = self.explain(alarm_features[keep[alarms]], alarms[keep])
        rows = order[keep] - n_earlier
        # Taking the columns' own arrays keeps the tz-aware timestamps and the Arrow-held
        # entities as they are (to_numpy() would box every one of them into an object).
        result = {
            TIMESTAMP: own[TIMESTAMP].array.take(rows),
            ENTITY: own[ENTITY].array.take(rows),
            "score": scores[keep],
            "threshold": np.full(len(rows), self.threshold),
            "is_anomaly": alarms[keep],
            "top_features": top_features,
            "contributions": contributions,
        }
        return pd.DataFrame(result, columns=SCORE_COLUMNS)

    def save(self, directory: Path) -> Path:
        """Write every part of the bundle to ``directory`` (what :meth:`load` reads)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.save_scaler(self.scaler, directory)
        self.save_detector(self.detector, directory)
        self.save_calibrator(self.calibrator, directory)
        if self.profile is not None:
            self.save_profile(self.profile, directory)
        self.save_spec(self.spec, directory)
        if self.entities is not None:
            self.save_entities(self.entities, directory)
        return directory

    @classmethod
    def save_scaler(cls, scaler: StandardScaler, directory: Path) -> None:
        """The scaler fitted on the training days (its features fix the model's columns)."""
        scaler.save(directory / cls.SCALER_FILE)

    @classmethod
    def load_scaler(cls, directory: Path) -> StandardScaler:
        return StandardScaler.load(directory / cls.SCALER_FILE)

    @classmethod
    def save_detector(cls, detector: Detector, directory: Path) -> None:
        """The detector's folder, staged whole then moved in: never new weights beside an old
        config, whenever a crash comes."""
        with io.staged_directory(directory / cls.DETECTOR_DIR) as staged:
            detector.save(staged)

    @classmethod
    def load_detector(cls, directory: Path, device: str | None = None) -> Detector:
        return load_detector(directory / cls.DETECTOR_DIR, device=device)

    @classmethod
    def save_calibrator(cls, calibrator: Calibrator, directory: Path) -> Path:
        """The fitted threshold rule, as plain JSON; returns the file (a run artifact too)."""
        path = directory / cls.CALIBRATION_FILE
        path.write_text(json.dumps(calibrator.to_dict(), indent=2))
        return path

    @classmethod
    def load_calibrator(cls, directory: Path) -> Calibrator:
        """The fitted calibrator; an unknown or malformed calibration fails loudly."""
        return calibrator_from_dict(json.loads((directory / cls.CALIBRATION_FILE).read_text()))

    @classmethod
    def save_profile(cls, profile: ReferenceProfile, directory: Path) -> None:
        profile.save(directory / cls.PROFILE_FILE)

    @classmethod
    def save_spec(cls, spec: DatasetSpec, directory: Path) -> None:
        """Snapshot the dataset spec the model was trained for (checked before scoring)."""
        (directory / cls.SPEC_FILE).write_text(
            yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        )

    @classmethod
    def load_spec(cls, directory: Path) -> DatasetSpec:
        """The dataset spec the model was trained for."""
        return DatasetSpec.model_validate(yaml.safe_load((directory / cls.SPEC_FILE).read_text()))

    @classmethod
    def save_entities(cls, entities: Iterable[str], directory: Path) -> None:
        """Record the entities seen in training, so scoring can flag the ones it never saw."""
        (directory / cls.ENTITIES_FILE).write_text(json.dumps(sorted(set(entities)), indent=0))

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> ModelBundle:
        """A saved bundle; ``device`` (a :data:`~pipeline.choices.Device`) replaces the
        detector's own.

        Training records the device it ran on; later stages pass :data:`WORKER_DEVICE`, since
        a model fitted on a GPU must still score where there is none. The profile and the
        entities are optional: bundles from before they existed still score.
        """
        calibrator = cls.load_calibrator(directory)
        profile, entities = directory / cls.PROFILE_FILE, directory / cls.ENTITIES_FILE
        return cls(
            spec=cls.load_spec(directory),
            scaler=cls.load_scaler(directory),
            detector=cls.load_detector(directory, device=device),
            calibrator=calibrator,
            profile=ReferenceProfile.load(profile) if profile.is_file() else None,
            entities=frozenset(json.loads(entities.read_text())) if entities.is_file() else None,
        )
