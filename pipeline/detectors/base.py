"""The contract every detector follows.

A detector stores validated hyper-parameters in ``__init__`` and nothing else; ``fit`` learns
from unlabeled training segments and returns ``self``; ``score`` returns one raw score per time
step (higher is more anomalous); ``score_features`` splits that into one score per feature, which
is what an alarm's explanation ranks. Persistence is a directory holding ``config.json`` plus the
detector's own weight files: no pickled objects. Thresholds live in ``pipeline.calibration``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from pipeline.checks import NotFittedError, alarms, require_finite
from pipeline.data.windows import Segments


@dataclass(frozen=True)
class FitOptions:
    """How a fit by epochs runs: its checkpoint folder, whether it resumes, whether it shows
    progress. One-shot fits ignore them."""

    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = False


class DetectorConfig(BaseModel):
    """Base of every detector's hyper-parameters; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Detector(ABC):
    """Base class: validated config, fit/score, save/load of weights plus JSON config."""

    name: ClassVar[str]
    Config: ClassVar[type[DetectorConfig]]
    config: DetectorConfig
    n_features_: int  # set by fit or load; absent until then
    # Whether :meth:`score` is the mean over features of :meth:`score_features`: then one
    # per-feature pass gives both, and :meth:`explained_scores` runs only that pass.
    score_is_feature_mean: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.config = self.Config(**params)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    @property
    def score_span(self) -> int:
        """Rows one score looks at (its window; 1 for point-wise detectors): how much of the
        previous day daily scoring must supply as context."""
        return int(getattr(self.config, "window", None) or 1)

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "n_features_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{self.name} is not fitted: call fit() or load a saved detector before score()"
            )

    def _check_features(self, segments: Segments) -> None:
        if segments.n_features != self.n_features_:
            raise ValueError(
                f"{self.name} was fitted on {self.n_features_} features, got {segments.n_features}"
            )

    def fit(
        self,
        train: Segments,
        valid: Segments | None = None,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        progress: bool = False,
    ) -> Self:
        """Learn normal behaviour from unlabeled training segments.

        Every detector takes the same arguments, so the training step calls any of them alike:
        detectors trained by epochs checkpoint under ``checkpoint_dir``, ``resume`` from the
        last checkpoint there and show ``progress``; one-shot fits ignore the three.
        """
        return self._fit(train, valid, FitOptions(checkpoint_dir, resume, progress))

    @abstractmethod
    def _fit(self, train: Segments, valid: Segments | None, options: FitOptions) -> Self:
        """What :meth:`fit` does for this detector (``options`` as :meth:`fit` describes)."""

    @abstractmethod
    def score(self, x: Segments) -> np.ndarray:
        """One raw anomaly score per row of ``x`` (higher = more anomalous)."""

    def score_features(self, x: Segments) -> np.ndarray:
        """Per-feature anomaly scores, shape (rows, features): what attribution ranks.

        This default serves detectors whose score does not split over features (Isolation
        Forest, One-Class SVM): *occlusion*. A feature's score at a step is how much the
        detector's score drops when that feature is replaced by its training mean, clipped at
        zero. Inputs reach detectors standardised on the training data, so the training mean is
        0. Cost: ``features + 1`` full scoring passes. Detectors whose score is a mean or sum of
        per-feature errors override this with those errors, in one pass.
        """
        return self._occlusion(x, self.score(x))

    def _occlusion(self, x: Segments, full: np.ndarray) -> np.ndarray:
        """The occlusion feature scores of ``x`` given its scores ``full`` (``score(x)``)."""
        occluded = x.values.copy()
        contributions = np.empty((x.n_rows, x.n_features))
        for feature in range(x.n_features):
            occluded[:, feature] = 0.0
            contributions[:, feature] = full - self.score(Segments(occluded, x.bounds))
            occluded[:, feature] = x.values[:, feature]
        return np.maximum(contributions, 0.0)

    def explained_scores(self, x: Segments, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Every row's score, and the per-feature scores of the rows at or above ``threshold``.

        The second array holds one row per alarm, in row order: what daily scoring attaches to
        its alarms. Where the score is the mean of the per-feature scores
        (:attr:`score_is_feature_mean`), one per-feature pass gives both, which halves the
        model passes of any day with an alarm. Otherwise the per-feature pass runs only when
        some row alarms; occlusion then starts from the scores at hand, for ``features`` more
        scoring passes. Non-finite scores raise :class:`NonFiniteScoreError`: daily scoring
        writes no NaN score.
        """
        if self.score_is_feature_mean:
            features = self.score_features(x)
            scores = require_finite(self.name, features.mean(axis=1))
            return scores, features[alarms(scores, threshold)]
        scores = require_finite(self.name, self.score(x))
        alarmed = alarms(scores, threshold)
        if not alarmed.any():
            return scores, np.empty((0, x.n_features))
        if type(self).score_features is Detector.score_features:  # occlusion starts from scores
            return scores, self._occlusion(x, scores)[alarmed]
        return scores, self.score_features(x)[alarmed]

    @abstractmethod
    def _save_state(self, directory: Path) -> dict:
        """Write fitted state to files in ``directory``; return small JSON-able state."""

    @abstractmethod
    def _load_state(self, directory: Path, state: dict) -> None:
        """Restore what :meth:`_save_state` wrote."""

    def save(self, directory: str | Path) -> Path:
        """Persist to ``directory``: ``config.json`` plus the detector's weight files."""
        self._check_fitted()
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        state = self._save_state(path)
        meta = {
            "detector": self.name,
            "config": self.config.model_dump(mode="json"),
            "n_features": self.n_features_,
            "state": state,
        }
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Self:
        """Load a detector saved by :meth:`save` (weights are read without unpickling).

        ``device`` overrides the saved device setting where the detector has one.
        """
        path = Path(directory)
        meta = json.loads((path / "config.json").read_text())
        if meta["detector"] != cls.name:
            raise ValueError(f"{path} holds a {meta['detector']!r} detector, not {cls.name!r}")
        config = meta["config"]
        if device is not None and "device" in config:
            config["device"] = device
        detector = cls(**config)
        detector.n_features_ = int(meta["n_features"])
        detector._load_state(path, meta["state"])
        return detector
