"""Ensemble: several detectors' scores put on one scale, then combined.

No single detector wins on every dataset, and raw scores are not comparable across detectors
(a squared error, a likelihood, an isolation depth). Each member therefore gets a scale fitted
on its own scores over the training data (the unlabeled validation segments when given):

- ``robust_z``: ``(score - median) / (1.4826 * MAD)``, unbounded above, so how far beyond
  normal a step lies still counts (the default);
- ``rank``: the empirical CDF of the training scores, in [0, 1]; immune to one member's heavy
  tail, but every step beyond the training maximum ties at 1.

The scaled scores are combined by a weighted ``mean`` or by ``max`` (of weight x scaled
score). An alarm is explained by the members' per-feature scores: each member's share per
feature, weighted by how anomalous that member found the step, combined the same way.

Persistence is this detector's JSON config plus each member's own saved directory under
``members/``; nothing is pickled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.checks import require_finite
from pipeline.choices import DETECTOR_NAMES, DetectorName, Device
from pipeline.data.windows import Segments
from pipeline.detectors.base import Detector, DetectorConfig, FitOptions

ENSEMBLE = "ensemble"
MAD_TO_SIGMA = 1.4826
RANK_POINTS = 1001
# Settings an ensemble passes on to every member that has them (a member's params win).
SHARED_SETTINGS = ("window", "epochs", "device", "seed")


class Member(BaseModel):
    """One member: a registered detector, its hyper-parameters and its weight."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorName
    params: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, gt=0)

    @field_validator("detector")
    @classmethod
    def _single(cls, name: DetectorName) -> DetectorName:
        if name == ENSEMBLE:
            known = ", ".join(n for n in DETECTOR_NAMES if n != ENSEMBLE)
            raise ValueError(f"member {name!r} is not a single detector: choose one of {known}")
        return name


class EnsembleConfig(DetectorConfig):
    members: list[Member] = Field(
        default=[Member(detector="pca"), Member(detector="dense_ae"), Member(detector="vae")],
        min_length=1,
    )
    scale: Literal["robust_z", "rank"] = "robust_z"
    combine: Literal["mean", "max"] = "mean"
    window: int | None = Field(default=None, ge=2, description="passed to members that have it")
    epochs: int | None = Field(default=None, ge=1, description="passed to members that have it")
    device: Device | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _members_valid(self) -> Self:
        """Each member's hyper-parameters are checked now, not after the others trained."""
        for member in self.members:
            member_params(self, member)
        return self


def member_params(config: EnsembleConfig, member: Member) -> dict[str, Any]:
    """The member's validated hyper-parameters: shared settings it accepts, then its own."""
    from pipeline.detectors.registry import detector_class

    member_config = detector_class(member.detector).Config
    shared = {
        key: getattr(config, key)
        for key in SHARED_SETTINGS
        if getattr(config, key) is not None and key in member_config.model_fields
    }
    params = shared | member.params
    member_config(**params)
    return params


@dataclass(frozen=True)
class ScoreScale:
    """A member's scores mapped onto the common scale, fitted on its training scores."""

    kind: str
    center: float = 0.0
    spread: float = 1.0
    quantiles: tuple[float, ...] = ()

    @classmethod
    def fit(cls, kind: str, scores: np.ndarray) -> ScoreScale:
        if kind == "rank":
            points = np.quantile(scores, np.linspace(0.0, 1.0, RANK_POINTS))
            return cls(kind, quantiles=tuple(float(value) for value in points))
        center = float(np.median(scores))
        spread = MAD_TO_SIGMA * float(np.median(np.abs(scores - center)))
        if not (math.isfinite(spread) and spread > 0):  # over half the scores tie
            spread = float(np.std(scores))
        return cls(kind, center, spread if math.isfinite(spread) and spread > 0 else 1.0)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        if self.kind == "rank":
            quantiles = np.asarray(self.quantiles)
            return np.searchsorted(quantiles, scores, side="right") / len(quantiles)
        return (scores - self.center) / self.spread


class Ensemble(Detector):
    """Members' scores on one scale (robust z or rank), combined by weighted mean or max."""

    name = ENSEMBLE
    Config = EnsembleConfig
    config: EnsembleConfig

    def _fit(self, train: Segments, valid: Segments | None, options: FitOptions) -> Self:
        """Fit every member (each checkpointing under its own ``checkpoint_dir`` folder), then
        each member's scale on its scores of the training data (``valid`` when given: scores a
        member did not learn from are less optimistic)."""
        from pipeline.detectors.registry import make_detector

        members, scales = [], []
        reference = valid if valid is not None else train
        for index, spec in enumerate(self.config.members):
            member = make_detector(spec.detector, **member_params(self.config, spec))
            parent = options.checkpoint_dir
            own = None if parent is None else parent / _member_dir(index, spec)
            member.fit(
                train, valid, checkpoint_dir=own, resume=options.resume, progress=options.progress
            )
            scores = require_finite(member.name, member.score(reference))
            members.append(member)
            scales.append(ScoreScale.fit(self.config.scale, scores))
        self.members_, self.scales_ = members, scales
        self.n_features_ = train.n_features
        return self

    @property
    def score_span(self) -> int:
        """The widest member's window: every member must see its whole window of context."""
        self._check_fitted()
        return max(member.score_span for member in self.members_)

    def score(self, x: Segments) -> np.ndarray:
        self._check_fitted()
        self._check_features(x)
        pairs = zip(self.members_, self.scales_, strict=True)
        scaled = np.stack([scale.apply(member.score(x)) for member, scale in pairs])
        return require_finite(self.name, self._combine(scaled))

    def score_features(self, x: Segments) -> np.ndarray:
        """Members' per-feature scores as shares of each member's total, weighted by how
        anomalous the member found the step (its scaled score, floored at 0), combined like
        the scores: the features most members blame on their most anomalous steps rank first.
        """
        self._check_fitted()
        self._check_features(x)
        strengths, shares = [], []
        for member, scale in zip(self.members_, self.scales_, strict=True):
            features = member.score_features(x)
            scores = features.mean(axis=1) if member.score_is_feature_mean else member.score(x)
            total = features.sum(axis=1, keepdims=True)
            shares.append(np.divide(features, total, out=np.zeros_like(features), where=total > 0))
            strengths.append(np.maximum(scale.apply(scores), 0.0))
        weights = self._weights()
        weighted = weights[:, None] * np.stack(strengths)  # (members, rows)
        stacked = np.stack(shares)  # (members, rows, features)
        if self.config.combine == "mean":
            combined = (weighted[..., None] * stacked).sum(axis=0) / weights.sum()
        else:
            top = weighted.argmax(axis=0)
            rows = np.arange(x.n_rows)
            combined = weighted[top, rows][:, None] * stacked[top, rows]
        return require_finite(self.name, combined, "feature scores")

    def _weights(self) -> np.ndarray:
        return np.array([member.weight for member in self.config.members])

    def _combine(self, scaled: np.ndarray) -> np.ndarray:
        weighted = self._weights()[:, None] * scaled
        if self.config.combine == "mean":
            return weighted.sum(axis=0) / self._weights().sum()
        return weighted.max(axis=0)

    def _save_state(self, directory: Path) -> dict:
        saved = []
        for index, (spec, member, scale) in enumerate(
            zip(self.config.members, self.members_, self.scales_, strict=True)
        ):
            relative = Path("members") / _member_dir(index, spec)
            member.save(directory / relative)
            saved.append(
                {
                    "path": relative.as_posix(),
                    "center": scale.center,
                    "spread": scale.spread,
                    "quantiles": list(scale.quantiles),
                }
            )
        return {"members": saved}

    def _load_state(self, directory: Path, state: dict) -> None:
        from pipeline.detectors.registry import load_detector

        self.members_ = [
            load_detector(directory / item["path"], device=self.config.device)
            for item in state["members"]
        ]
        self.scales_ = [
            ScoreScale(self.config.scale, item["center"], item["spread"], tuple(item["quantiles"]))
            for item in state["members"]
        ]


def _member_dir(index: int, member: Member) -> str:
    return f"{index}-{member.detector}"
