"""The deployable model: scaler, detector, calibrated threshold and dataset spec, as one bundle.

A bundle is a directory of plain files (JSON, YAML and torch weights; no pickle). Training
writes it, MLflow ships it inside the pyfunc model, and scoring applies it to a canonical frame:
the previous day's tail supplies window context so every row of the day gets a score, and
entities are scored in chunks so memory stays bounded however many a day holds (a landed day
is streamed from disk chunk by chunk, never read whole).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.calibration import calibrator_from_dict
from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.data import io
from pipeline.data.windows import Segments, StandardScaler, frame_to_segments
from pipeline.detectors.base import Detector
from pipeline.detectors.registry import load_detector

SCORE_COLUMNS = ["timestamp", "entity", "score", "threshold", "is_anomaly"]
# Entities scored together: large enough to fill the detector's batches, small enough that
# memory does not grow with a day that holds thousands.
ENTITIES_PER_CHUNK = 64
_OWN_ROW = "__tsad_own_row"


def entity_chunks(entities: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive groups of at most ``size`` entities."""
    if size < 1:
        raise ValueError(f"entities per chunk must be positive, got {size}")
    return [entities[begin : begin + size] for begin in range(0, len(entities), size)]


@dataclass
class PartitionScores:
    """Counts of a day scored by :meth:`ModelBundle.score_partition`."""

    rows: int
    entities: int
    anomalies: int


class ModelMismatchError(ValueError):
    """A model whose features or window do not fit the data it is asked to score."""


@dataclass
class ModelBundle:
    """Everything needed to turn a day's canonical frame into scores and alarms."""

    spec: DatasetSpec
    scaler: StandardScaler
    detector: Detector
    calibration: dict

    @property
    def threshold(self) -> float:
        return float(self.calibration["threshold"])

    @property
    def window(self) -> int:
        """Rows of context a score needs (1 for point-wise detectors)."""
        return int(getattr(self.detector.config, "window", 1))

    def check_compatible(self, spec: DatasetSpec) -> None:
        """Refuse to score data whose features differ from the model's."""
        if list(self.scaler.features) != spec.feature_names:
            raise ModelMismatchError(
                f"model expects features {list(self.scaler.features)}, "
                f"dataset {spec.name!r} has {spec.feature_names}"
            )

    def score_segments(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw scores of a canonical frame sorted by entity and time."""
        segments, _ = frame_to_segments(frame, self.spec.feature_names, self.spec.step)
        scaled = Segments(self.scaler.transform(segments.values), segments.bounds)
        return self.detector.score(scaled)

    def score_frame(
        self,
        frame: pd.DataFrame,
        context: pd.DataFrame | None = None,
        entities_per_chunk: int = ENTITIES_PER_CHUNK,
    ) -> pd.DataFrame:
        """Score every row of ``frame``; ``context`` (earlier rows) only feeds the windows.

        Returns one row per input row, sorted by entity then time, with the columns of
        :data:`SCORE_COLUMNS`.
        """
        tail = None if context is None else self._context_tail(context)
        rows_of = frame.groupby(ENTITY, sort=False).indices
        parts = []
        for chosen in entity_chunks(np.array(sorted(rows_of), dtype=object), entities_per_chunk):
            own = frame.iloc[np.concatenate([rows_of[entity] for entity in chosen])]
            earlier = None if tail is None else tail[tail[ENTITY].isin(chosen)]
            parts.append(self._score_entities(own, earlier))
        return pd.concat(parts, ignore_index=True)

    def score_partition(
        self,
        day: Path,
        target: Path,
        context: Path | None = None,
        constants: dict[str, str] | None = None,
        entities_per_chunk: int = ENTITIES_PER_CHUNK,
    ) -> PartitionScores:
        """Stream a landed day from ``day`` to a scores file at ``target``, in bounded memory.

        The day (and the ``context`` partition before it) is regrouped into chunks of
        ``entities_per_chunk`` whole entities on disk, then each chunk is scored and appended
        to ``target``, so peak memory is one chunk whatever the number of entities. The rows
        equal :meth:`score_frame`'s on the same data, plus the ``constants`` columns.
        """
        chunks = entity_chunks(io.partition_entities(day, self.spec), entities_per_chunk)
        sources = [day] if context is None else [day, context]
        totals = PartitionScores(rows=0, entities=0, anomalies=0)
        with (
            tempfile.TemporaryDirectory(prefix="tsad-score-") as spill,
            io.parquet_writer_atomic(target) as append,
        ):
            for rows in io.regroup_by_entity(sources, self.spec, chunks, Path(spill)):
                own = rows[rows[io.PARTITION] == 0]
                earlier = rows[rows[io.PARTITION] == 1]
                scores = self._score_entities(own, self._context_tail(earlier))
                append(scores.assign(**(constants or {})))
                totals.rows += len(scores)
                totals.entities += scores[ENTITY].nunique()
                totals.anomalies += int(scores["is_anomaly"].sum())
        return totals

    def _score_entities(self, own: pd.DataFrame, earlier: pd.DataFrame | None) -> pd.DataFrame:
        """Scores of the rows in ``own``; ``earlier`` rows of the same entities add context."""
        rows = own.assign(**{_OWN_ROW: True})
        if earlier is not None and len(earlier):
            rows = pd.concat([earlier.assign(**{_OWN_ROW: False}), rows], ignore_index=True)
        ordered = rows.sort_values([ENTITY, TIMESTAMP], kind="stable").reset_index(drop=True)
        scores = self.score_segments(ordered)
        keep = ordered[_OWN_ROW].to_numpy()
        # Boolean selection keeps the tz-aware timestamps as they are (to_numpy() would box
        # every one of them into an object).
        result = ordered.loc[keep, [TIMESTAMP, ENTITY]].reset_index(drop=True)
        result["score"] = scores[keep]
        result["threshold"] = self.threshold
        result["is_anomaly"] = result["score"] >= self.threshold
        return result[SCORE_COLUMNS]

    def _context_tail(self, context: pd.DataFrame) -> pd.DataFrame:
        """The last ``window - 1`` rows of each entity: all the context a window can use."""
        needed = self.window - 1
        columns = [TIMESTAMP, ENTITY, *self.spec.feature_names]
        ordered = context[columns].sort_values([ENTITY, TIMESTAMP], kind="stable")
        return ordered.groupby(ENTITY, sort=False).tail(needed) if needed else ordered.iloc[:0]

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.scaler.save(directory / "scaler.json")
        self.detector.save(directory / "detector")
        (directory / "calibration.json").write_text(json.dumps(self.calibration, indent=2))
        self.save_spec(self.spec, directory)
        return directory

    @staticmethod
    def save_spec(spec: DatasetSpec, directory: Path) -> None:
        """Snapshot the dataset spec the model was trained for (checked before scoring)."""
        (directory / "spec.yaml").write_text(
            yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        )

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        calibration = json.loads((directory / "calibration.json").read_text())
        calibrator_from_dict(calibration)  # fails loudly on an unknown or malformed calibration
        return cls(
            spec=DatasetSpec.model_validate(yaml.safe_load((directory / "spec.yaml").read_text())),
            scaler=StandardScaler.load(directory / "scaler.json"),
            detector=load_detector(directory / "detector"),
            calibration=calibration,
        )
