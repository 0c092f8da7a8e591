"""Drift of a scored day against what the model was trained for.

At training time a :class:`ReferenceProfile` is stored in the model bundle: per-feature decile
bins of the training values and the share of training rows in each, the same for the reference
scores, and the reference anomaly rate at the calibrated threshold. Each scoring run compares its
day with it by the population stability index (PSI) per feature and of the scores
(:func:`drift`). A day scored chunk by chunk adds each chunk to a :class:`DriftAccumulator`,
which keeps only bin counts, so measuring drift needs no more memory for a larger day.

PSI = sum over bins of (day share - reference share) x ln(day share / reference share). The
usual reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a shift worth acting on
(the default level of ``monitoring.drift_level`` in a dataset spec).

The reference scores are those of the validation days (out of sample, the rows the threshold
was calibrated on), not of the training days: a model scores its own training rows lower than
any new day, so a training-score reference would flag every day as drifted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.checks import alarms

DECILES = 10
# Floor for an empty bin's share, so PSI stays finite when a day leaves a bin empty.
_MIN_SHARE = 1e-4
# Reference values closer than this share of their size are one value: detectors compute in
# float32 (about 7 significant digits), and the same window scored in another batch or chunk
# can differ in its last digits.
TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Histogram:
    """Interior bin edges and the reference share of values in each of the ``len(edges) + 1``
    bins. Bins are closed on the right: a value equal to an edge falls in the bin below it."""

    edges: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, bins: int = DECILES) -> Histogram:
        """Quantile bins of ``values``; ties merge bins, so a discrete feature gets one bin per
        value and no reference bin is empty.

        An edge is never one of the values: it lies halfway between the decile's value and
        the next larger distinct one (:func:`distinct_groups`). Cut at the value itself, a
        point mass (quiet hours that all score the same) would sit on the edge, and the
        float jitter of the same input scored in another batch would move half of it to the
        next bin on every day: a large PSI for nothing.
        """
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if len(finite) == 0:
            raise ValueError("no finite values to build a reference histogram from")
        cuts = np.linspace(0, 1, bins + 1)[1:-1]
        deciles = np.quantile(finite, cuts, method="inverted_cdf")
        lowest, highest = distinct_groups(finite)
        group = np.searchsorted(lowest, deciles, side="right") - 1
        group = np.unique(group[group < len(lowest) - 1])
        edges = (highest[group] + lowest[group + 1]) / 2
        return cls(edges, bin_shares(finite, edges))

    def psi(self, values: np.ndarray) -> float:
        """Population stability index of ``values`` against this reference."""
        return self.psi_of_counts(bin_counts(values, self.edges))

    def psi_of_counts(self, counts: np.ndarray) -> float:
        """Population stability index of values counted per bin of this reference."""
        actual = np.maximum(shares_of(counts), _MIN_SHARE)
        expected = np.maximum(self.shares, _MIN_SHARE)
        return float(np.sum((actual - expected) * np.log(actual / expected)))

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "shares": self.shares.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        return cls(np.asarray(data["edges"], dtype=np.float64), np.asarray(data["shares"]))


def distinct_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest value of each group of ``values`` that are one value up to
    :data:`TIE_TOLERANCE`, in increasing order."""
    unique = np.unique(values)
    scale = np.maximum(np.abs(unique[1:]), np.abs(unique[:-1]))
    starts = np.flatnonzero(np.diff(unique) > TIE_TOLERANCE * scale) + 1
    return unique[np.r_[0, starts]], unique[np.r_[starts - 1, len(unique) - 1]]


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Number of the finite ``values`` in each bin cut at ``edges``.

    Counted as the values at or below each edge, a pass per edge: with a few edges and many
    values (a day's chunk), that is several times faster than a binary search per value.
    """
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    at_or_below = np.array([np.count_nonzero(data <= edge) for edge in edges], dtype=np.int64)
    return np.diff(at_or_below, prepend=0, append=len(data))


def shares_of(counts: np.ndarray) -> np.ndarray:
    """Counts per bin as shares of their total (all zero when nothing was counted)."""
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of the finite ``values`` in each bin cut at ``edges``."""
    return shares_of(bin_counts(values, edges))


@dataclass(frozen=True)
class ReferenceProfile:
    """What the training data and the reference scores looked like (stored as JSON)."""

    features: tuple[str, ...]
    feature_histograms: tuple[Histogram, ...]
    score_histogram: Histogram
    anomaly_rate: float

    @classmethod
    def build(
        cls,
        features: tuple[str, ...] | list[str],
        training_values: np.ndarray,
        reference_scores: np.ndarray,
        threshold: float,
    ) -> ReferenceProfile:
        """Profile scaled training values (rows, features) and out-of-sample reference scores."""
        values = np.asarray(training_values)
        if values.ndim != 2 or values.shape[1] != len(features):
            raise ValueError(
                f"training values of shape {values.shape} do not match {len(features)} features"
            )
        scores = np.asarray(reference_scores, dtype=np.float64)
        return cls(
            features=tuple(features),
            feature_histograms=tuple(Histogram.of(column) for column in values.T),
            score_histogram=Histogram.of(scores),
            anomaly_rate=float(np.mean(alarms(scores, threshold))),
        )

    def to_dict(self) -> dict:
        return {
            "features": list(self.features),
            "feature_histograms": [hist.to_dict() for hist in self.feature_histograms],
            "score_histogram": self.score_histogram.to_dict(),
            "anomaly_rate": self.anomaly_rate,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ReferenceProfile:
        return cls(
            features=tuple(data["features"]),
            feature_histograms=tuple(Histogram.from_dict(h) for h in data["feature_histograms"]),
            score_histogram=Histogram.from_dict(data["score_histogram"]),
            anomaly_rate=float(data["anomaly_rate"]),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        return cls.from_dict(json.loads(path.read_text()))


@dataclass(frozen=True)
class DriftReport:
    """A day's drift indicators and whether any passed the configured level."""

    feature_psi: dict[str, float]
    score_psi: float
    anomaly_rate: float
    reference_anomaly_rate: float
    level: float

    @property
    def drifted_features(self) -> list[str]:
        """Features whose PSI passed the level, most drifted first."""
        over = [name for name, value in self.feature_psi.items() if value > self.level]
        return sorted(over, key=self.feature_psi.__getitem__, reverse=True)

    @property
    def scores_drifted(self) -> bool:
        return self.score_psi > self.level

    @property
    def drifted(self) -> bool:
        return self.scores_drifted or bool(self.drifted_features)

    def to_dict(self) -> dict:
        return {
            "drifted": self.drifted,
            "level": self.level,
            "drifted_features": self.drifted_features,
            "score_psi": self.score_psi,
            "feature_psi": self.feature_psi,
            "anomaly_rate": self.anomaly_rate,
            "reference_anomaly_rate": self.reference_anomaly_rate,
        }


class DriftAccumulator:
    """A day's drift measured chunk by chunk: bin counts per feature and of the scores.

    Adding every chunk of a day gives the :class:`DriftReport` that :func:`drift` gives for
    the whole day at once, while holding only the counts.
    """

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self._feature_counts = [
            np.zeros(len(hist.edges) + 1, dtype=np.int64) for hist in profile.feature_histograms
        ]
        self._score_counts = np.zeros(len(profile.score_histogram.edges) + 1, dtype=np.int64)
        self._rows = 0
        self._alarms = 0

    def add(self, scaled_values: np.ndarray, scores: np.ndarray, threshold: float) -> None:
        """Count one chunk: its scaled feature values (rows, features) and its scores."""
        values = np.asarray(scaled_values)
        if values.ndim != 2 or values.shape[1] != len(self.profile.features):
            raise ValueError(
                f"day values of shape {values.shape} do not match the profile's "
                f"{len(self.profile.features)} features"
            )
        scores = np.asarray(scores, dtype=np.float64)
        for counts, hist, column in zip(
            self._feature_counts, self.profile.feature_histograms, values.T, strict=True
        ):
            counts += bin_counts(column, hist.edges)
        self._score_counts += bin_counts(scores, self.profile.score_histogram.edges)
        self._rows += len(scores)
        self._alarms += int(np.count_nonzero(alarms(scores, threshold)))

    def counts(self) -> dict:
        """The raw counts added so far, as JSON: what :meth:`add_counts` adds elsewhere.

        Counts add exactly, so the shards of a day, each counted apart, merge into the counts
        (and so the drift figures) of the day counted whole.
        """
        return {
            "feature_counts": [counts.tolist() for counts in self._feature_counts],
            "score_counts": self._score_counts.tolist(),
            "rows": self._rows,
            "alarms": self._alarms,
        }

    def add_counts(self, counts: dict) -> None:
        """Add counts of :meth:`counts` taken against the same profile."""
        if len(counts["feature_counts"]) != len(self._feature_counts):
            raise ValueError("drift counts of another reference profile cannot be added")
        for mine, theirs in zip(self._feature_counts, counts["feature_counts"], strict=True):
            mine += np.asarray(theirs, dtype=np.int64)
        self._score_counts += np.asarray(counts["score_counts"], dtype=np.int64)
        self._rows += int(counts["rows"])
        self._alarms += int(counts["alarms"])

    def report(self, level: float) -> DriftReport:
        """The drift of everything added so far."""
        return DriftReport(
            feature_psi={
                name: hist.psi_of_counts(counts)
                for name, hist, counts in zip(
                    self.profile.features,
                    self.profile.feature_histograms,
                    self._feature_counts,
                    strict=True,
                )
            },
            score_psi=self.profile.score_histogram.psi_of_counts(self._score_counts),
            anomaly_rate=self._alarms / self._rows if self._rows else 0.0,
            reference_anomaly_rate=self.profile.anomaly_rate,
            level=level,
        )


def drift(
    profile: ReferenceProfile,
    scaled_values: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    level: float,
) -> DriftReport:
    """PSI of each feature and of the scores of one day against the reference profile."""
    accumulator = DriftAccumulator(profile)
    accumulator.add(scaled_values, scores, threshold)
    return accumulator.report(level)
