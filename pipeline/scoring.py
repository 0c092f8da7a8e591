"""The deployable model: scaler, detector, threshold, dataset spec and reference profile, bundled.

A bundle is a directory of plain files (JSON, YAML and torch weights; no pickle). Training
writes it, MLflow ships it inside the pyfunc model, and scoring applies it to a canonical frame:
the previous day's tail supplies window context so every row of the day gets a score, and
entities are scored in chunks so memory stays bounded however many a day holds. Every alarm
names the features that drive it. The reference profile (training-time statistics, see
``pipeline.monitoring``) is optional: bundles from before it existed still score.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline import attribution
from pipeline.calibration import calibrator_from_dict
from pipeline.config import ENTITY, TIMESTAMP, DatasetSpec
from pipeline.data.windows import Segments, StandardScaler, frame_to_segments
from pipeline.detectors.base import Detector
from pipeline.detectors.registry import load_detector
from pipeline.monitoring import ReferenceProfile

SCORE_COLUMNS = [
    "timestamp",
    "entity",
    "score",
    "threshold",
    "is_anomaly",
    "top_features",
    "contributions",
]
PROFILE_FILE = "profile.json"
ENTITIES_FILE = "entities.json"
_OWN_ROW = "__tsad_own_row"


class ModelMismatchError(ValueError):
    """A model whose features or window do not fit the data it is asked to score."""


@dataclass
class ModelBundle:
    """Everything needed to turn a day's canonical frame into scores and alarms."""

    spec: DatasetSpec
    scaler: StandardScaler
    detector: Detector
    calibration: dict
    profile: ReferenceProfile | None = None
    entities: frozenset[str] | None = None  # seen in training; None for older bundles

    @property
    def threshold(self) -> float:
        return float(self.calibration["threshold"])

    @property
    def window(self) -> int:
        """Rows of context a score needs (1 for point-wise detectors)."""
        return int(getattr(self.detector.config, "window", 1))

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

    def explain(self, segments: Segments, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top features and contributions of the chosen rows; ``None`` for every other row.

        Per-feature scores are computed only when a row is chosen (an alarm), so a quiet day
        costs no extra pass.
        """
        names = np.full(len(rows), None, dtype=object)
        shares = np.full(len(rows), None, dtype=object)
        if rows.any():
            top, contributions = attribution.top_features(
                self.detector.score_features(segments)[rows],
                self.spec.feature_names,
                self.spec.monitoring.top_features,
            )
            for index, row_names, row_shares in zip(
                np.flatnonzero(rows), top, contributions, strict=True
            ):
                names[index], shares[index] = row_names, row_shares
        return names, shares

    def score_frame(
        self,
        frame: pd.DataFrame,
        context: pd.DataFrame | None = None,
        entities_per_chunk: int = 64,
    ) -> pd.DataFrame:
        """Score every row of ``frame``; ``context`` (earlier rows) only feeds the windows.

        Returns one row per input row, sorted by entity then time, with the columns of
        :data:`SCORE_COLUMNS`: an alarm (``is_anomaly``) also names its ``top_features``, most
        responsible first, with their ``contributions`` (shares of the row's anomaly).
        """
        tail = None if context is None else self._context_tail(context)
        entities = pd.unique(frame[ENTITY])
        parts = []
        for begin in range(0, len(entities), entities_per_chunk):
            chosen = entities[begin : begin + entities_per_chunk]
            own = frame[frame[ENTITY].isin(chosen)].assign(**{_OWN_ROW: True})
            if tail is not None:
                own = pd.concat(
                    [tail[tail[ENTITY].isin(chosen)].assign(**{_OWN_ROW: False}), own],
                    ignore_index=True,
                )
            ordered = own.sort_values([ENTITY, TIMESTAMP], kind="stable").reset_index(drop=True)
            segments = self.scaled_segments(ordered)
            scores = self.detector.score(segments)
            keep = ordered[_OWN_ROW].to_numpy()
            top_features, contributions = self.explain(segments, keep & (scores >= self.threshold))
            parts.append(
                pd.DataFrame(
                    {
                        TIMESTAMP: ordered[TIMESTAMP].to_numpy()[keep],
                        ENTITY: ordered[ENTITY].to_numpy()[keep],
                        "score": scores[keep],
                        "top_features": top_features[keep],
                        "contributions": contributions[keep],
                    }
                )
            )
        result = pd.concat(parts, ignore_index=True)
        result[TIMESTAMP] = pd.to_datetime(result[TIMESTAMP], utc=True)
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
        if self.profile is not None:
            self.profile.save(directory / PROFILE_FILE)
        self.save_spec(self.spec, directory)
        if self.entities is not None:
            self.save_entities(self.entities, directory)
        return directory

    @staticmethod
    def save_spec(spec: DatasetSpec, directory: Path) -> None:
        """Snapshot the dataset spec the model was trained for (checked before scoring)."""
        (directory / "spec.yaml").write_text(
            yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        )

    @staticmethod
    def save_entities(entities: Iterable[str], directory: Path) -> None:
        """Record the entities seen in training, so scoring can flag the ones it never saw."""
        (directory / ENTITIES_FILE).write_text(json.dumps(sorted(set(entities)), indent=0))

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        calibration = json.loads((directory / "calibration.json").read_text())
        calibrator_from_dict(calibration)  # fails loudly on an unknown or malformed calibration
        return cls(
            spec=DatasetSpec.model_validate(yaml.safe_load((directory / "spec.yaml").read_text())),
            scaler=StandardScaler.load(directory / "scaler.json"),
            detector=load_detector(directory / "detector"),
            calibration=calibration,
            profile=(
                ReferenceProfile.load(directory / PROFILE_FILE)
                if (directory / PROFILE_FILE).is_file()
                else None
            ),
            entities=_load_entities(directory / ENTITIES_FILE),
        )


def _load_entities(path: Path) -> frozenset[str] | None:
    return frozenset(json.loads(path.read_text())) if path.is_file() else None
