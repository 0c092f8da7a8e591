"""The folder of one training run: the one place that names its files.

The steps of a training run hand each other a path (a string travels through XCom), and every
file under it is named here::

    run.json                  the run configuration
    prepared/<split>.npz      scaled, segmented train/validation/test rows
    checkpoints/              the trainer's checkpoints (resume after a crash)
    history.json              per-epoch losses of a torch detector (the run's loss curves)
    bundle/                   the model (its own files are named by ModelBundle)
    evaluation/               metrics.json, calibration_report.json, validation_metrics.json
                              and the figures
    candidates/<name>/        one run folder per candidate detector (sharing prepared/)
    selection.json            the candidates' validation metrics and the one chosen
    reviews.json              the reviewers' verdicts the validation days were labeled with
    validation_reports.json   the passing validation reports of every day read
    data_docs/<date>.html     their Great Expectations Data Docs pages
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from pipeline.config import ENTITY, LABEL, TIMESTAMP, RunConfig, Settings, validate_name
from pipeline.data.windows import Segments, timestamps_ns

Split = Literal["train", "validation", "test"]


@dataclass(frozen=True)
class PreparedSplit:
    """One split as ``prepare`` stored it: scaled segments, their timestamps and labels.

    ``entities`` names each row's entity, so alarms group into episodes per entity (None in
    runs prepared before it was stored).
    """

    segments: Segments
    timestamps: np.ndarray
    labels: np.ndarray | None
    entities: np.ndarray | None = None

    def frame(self, scores: np.ndarray) -> pd.DataFrame:
        """``timestamp`` (UTC), ``entity``, ``score`` and ``label`` per row: what episodes read.

        Without stored entities, each gap-free segment stands for one.
        """
        if self.entities is None:
            entities = np.repeat(np.arange(len(self.segments.lengths)), self.segments.lengths)
        else:
            entities = self.entities
        return pd.DataFrame(
            {
                TIMESTAMP: pd.to_datetime(self.timestamps).tz_localize("UTC"),
                ENTITY: entities.astype(str),
                "score": scores,
                LABEL: np.zeros(len(scores), dtype=np.int8) if self.labels is None else self.labels,
            }
        )


@dataclass(frozen=True)
class RunDir:
    """A training run's working folder under ``TSAD_HOME/runs/<dataset>/<run key>``."""

    CONFIG_NAME: ClassVar[str] = "run.json"
    """Also the name of the run configuration among a registered run's artifacts."""
    CANDIDATES: ClassVar[str] = "candidates"
    REVIEWS_NAME: ClassVar[str] = "reviews.json"
    """Also the name of the verdicts among a registered run's artifacts."""

    path: Path

    @classmethod
    def create(cls, settings: Settings, config: RunConfig) -> RunDir:
        """A new, empty run folder (keyed by UTC time and a random suffix) holding ``config``."""
        key = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S") + "-" + uuid.uuid4().hex[:6]
        run = cls(settings.run_dir(config.dataset, key))
        run.bundle.mkdir(parents=True)
        (run.path / "prepared").mkdir()
        run.config_file.write_text(config.model_dump_json(indent=2))
        return run

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG_NAME

    @property
    def bundle(self) -> Path:
        return self.path / "bundle"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history_file(self) -> Path:
        return self.path / "history.json"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation"

    @property
    def metrics_file(self) -> Path:
        return self.evaluation / "metrics.json"

    @property
    def calibration_report(self) -> Path:
        """Episode precision and recall on the validation days, uncapped and at the budget."""
        return self.evaluation / "calibration_report.json"

    @property
    def validation_metrics_file(self) -> Path:
        """Every metric of the calibrated detector on the labeled validation days."""
        return self.evaluation / "validation_metrics.json"

    @property
    def selection_file(self) -> Path:
        return self.path / "selection.json"

    @property
    def reviews_file(self) -> Path:
        return self.path / self.REVIEWS_NAME

    def save_reviews(self, records: list[dict]) -> None:
        """Keep the verdicts the run calibrates on (an empty list: none)."""
        self.reviews_file.write_text(json.dumps(records, indent=2))

    def reviews(self) -> list[dict]:
        """The verdicts :meth:`save_reviews` kept; none for runs prepared before reviews."""
        return json.loads(self.reviews_file.read_text()) if self.reviews_file.is_file() else []

    def candidate(self, name: str) -> RunDir:
        """The run folder of one candidate detector (see :meth:`add_candidate`)."""
        return RunDir(self.path / self.CANDIDATES / validate_name(name, "candidate"))

    def add_candidate(self, name: str, config: RunConfig) -> RunDir:
        """A candidate's run folder: ``config``, this run's prepared splits, a bundle of its own.

        The candidate links to the run's ``prepared/`` rather than copying it, and its bundle
        starts as a copy of the run's (scaler, spec, entities), so every step that works on a
        run folder works on it unchanged. An existing folder is kept (its checkpoints resume).
        """
        candidate = self.candidate(name)
        if not candidate.path.is_dir():
            candidate.path.mkdir(parents=True)
            (candidate.path / "prepared").symlink_to(Path("..", "..", "prepared"))
            shutil.copytree(self.bundle, candidate.bundle)
        candidate.config_file.write_text(config.model_dump_json(indent=2))
        return candidate

    @property
    def validation_reports(self) -> Path:
        return self.path / "validation_reports.json"

    @property
    def data_docs(self) -> Path:
        return self.path / "data_docs"

    def prepared(self, split: Split) -> Path:
        return self.path / "prepared" / f"{split}.npz"

    def figure(self, name: str) -> Path:
        return self.evaluation / f"{name}.png"

    def config(self) -> RunConfig:
        return RunConfig.model_validate_json(self.config_file.read_text())

    def metrics(self) -> dict[str, float]:
        return json.loads(self.metrics_file.read_text())

    def save_split(self, split: Split, segments: Segments, frame: pd.DataFrame) -> None:
        """Store ``segments`` with the timestamps (and labels) of ``frame``'s rows, in order."""
        arrays: dict[str, Any] = {
            "values": segments.values,
            "bounds": segments.bounds,
            "timestamps": timestamps_ns(frame[TIMESTAMP]),
            "entities": frame[ENTITY].astype(str).to_numpy(dtype=str),
        }
        if LABEL in frame:
            arrays["labels"] = frame[LABEL].to_numpy(dtype=np.int8)
        np.savez(self.prepared(split), **arrays)

    def load_split(self, split: Split) -> PreparedSplit:
        with np.load(self.prepared(split)) as data:
            labels, entities = data.get("labels"), data.get("entities")
            timestamps = data["timestamps"].astype("datetime64[ns]")
            segments = Segments(data["values"], data["bounds"])
            return PreparedSplit(segments, timestamps, labels, entities)
