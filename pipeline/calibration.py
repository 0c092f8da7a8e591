"""Score thresholds, fitted apart from detectors.

A detector only ranks time steps; turning its scores into alarms is a separate, cheap model
fitted on held-out scores (the split Merlion makes between a model and its post-rule). So the
threshold can be re-fitted on new validation data, or a different rule tried, without
re-training the detector.

Every calibrator follows one contract: ``fit(scores, labels=None)`` returns ``self`` and sets
``threshold_``; ``predict(scores)`` flags alarms by the product's one rule
(:func:`pipeline.checks.alarms`); ``to_dict()`` gives plain JSON (method, parameters, threshold)
that :func:`calibrator_from_dict` turns back into the same calibrator. :func:`fit_calibrator` is
how callers fit one: it owns the fallback for validation data without a labeled anomaly.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from pipeline import episodes
from pipeline.checks import NotFittedError, alarms, check_labels, check_scores
from pipeline.choices import CALIBRATION_METHODS, CalibrationMethod

log = logging.getLogger(__name__)


class Calibrator(ABC):
    """A rule that learns one score threshold; points with ``score >= threshold_`` are alarms."""

    method: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]] = ()
    needs_anomalies: ClassVar[bool] = False
    """Whether fitting needs labels with at least one anomaly (label-free rules do not)."""

    _threshold: float | None = None

    @property
    def params(self) -> dict[str, float]:
        """The constructor arguments, as given (after validation)."""
        return {name: getattr(self, name) for name in self.param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.params.items())
        return f"{type(self).__name__}({args})"

    @property
    def threshold_(self) -> float:
        """The fitted threshold; raises :class:`NotFittedError` before :meth:`fit`."""
        if self._threshold is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(scores, labels) first"
            )
        return self._threshold

    def fit(self, scores: npt.ArrayLike, labels: npt.ArrayLike | None = None) -> Self:
        """Learn the threshold from validation ``scores``; label-free rules ignore ``labels``."""
        score = check_scores(scores)
        if len(score) == 0:
            raise ValueError("cannot fit a threshold on zero scores")
        label = None if labels is None else check_labels(labels, len(score))
        self._threshold = float(self._fit_threshold(score, label))
        return self

    @abstractmethod
    def _fit_threshold(self, scores: np.ndarray, labels: np.ndarray | None) -> float:
        """The threshold for finite 1-D ``scores`` and optional bool ``labels``."""

    def predict(self, scores: npt.ArrayLike) -> np.ndarray:
        """Boolean alarms of finite ``scores`` (:func:`pipeline.checks.alarms`)."""
        return alarms(check_scores(scores), self.threshold_)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: method name, parameters and threshold (``None`` when unfitted)."""
        return {"method": self.method, "params": self.params, "threshold": self._threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a calibrator written by :meth:`to_dict`, fitted threshold included."""
        if data.get("method") != cls.method:
            raise ValueError(f"{cls.__name__} cannot load method {data.get('method')!r}")
        calibrator = cls(**data.get("params", {}))
        threshold = data.get("threshold")
        calibrator._threshold = None if threshold is None else float(threshold)
        return calibrator


def _check_open_interval(name: str, value: float, low: float, high: float) -> float:
    if not low < value < high:
        raise ValueError(f"{name} must be in ({low:g}, {high:g}), got {value}")
    return float(value)


class BestF1Threshold(Calibrator):
    """The threshold that maximises point-wise F1 on labeled validation scores.

    The search is exact: every distinct score is a candidate cut. Sorting scores in descending
    order makes true positives a cumulative sum of labels, so F1 at every cut comes out of one
    vectorised pass, O(n log n) overall. Ties between cuts go to the highest threshold (fewest
    alarms).
    """

    method = "best_f1"
    needs_anomalies = True

    def _fit_threshold(self, scores: np.ndarray, labels: np.ndarray | None) -> float:
        if labels is None or not labels.any():
            raise ValueError(
                "best-F1 calibration needs labels with at least one positive point; "
                "use a label-free method (percentile, mean_std, pot) for this series"
            )
        n_true = np.count_nonzero(labels)
        order = np.argsort(scores)[::-1]
        cuts = scores[order]
        true_positives = np.cumsum(labels[order])
        last_of_tie = np.append(cuts[1:] != cuts[:-1], True)  # a cut keeps all of its ties
        n_pred = np.flatnonzero(last_of_tie) + 1
        f1 = 2 * true_positives[last_of_tie] / (n_true + n_pred)
        return float(cuts[last_of_tie][np.argmax(f1)])


class EventF1Threshold(Calibrator):
    """The threshold that maximises F1 over alarm episodes on labeled validation scores.

    What a team acts on is episodes, not alarm minutes: at each candidate cut the alarms are
    grouped as daily scoring groups them (quiet gaps up to ``gap_steps`` joined, episodes
    shorter than ``min_steps`` dropped, :mod:`pipeline.episodes`) and matched against the
    labeled events; the cut with the best episode F1 wins, ties to the highest threshold.
    Candidates are the scores at :attr:`candidates` evenly spaced ranks. Validation rows come
    entity after entity, back to back, as evaluation scores them.
    """

    method = "event_f1"
    param_names = ("gap_steps", "min_steps")
    needs_anomalies = True
    candidates: ClassVar[int] = 256

    def __init__(self, gap_steps: float = 5, min_steps: float = 3) -> None:
        if gap_steps < 0 or min_steps < 1:
            raise ValueError("gap_steps must be >= 0 and min_steps >= 1")
        self.gap_steps, self.min_steps = int(gap_steps), int(min_steps)

    def _fit_threshold(self, scores: np.ndarray, labels: np.ndarray | None) -> float:
        if labels is None or not labels.any():
            raise ValueError("event-F1 calibration needs labels with at least one positive point")
        truth = episodes.mask_spans(labels, episodes.EpisodeRule.of_steps(0, 1))
        rule = episodes.EpisodeRule.of_steps(self.gap_steps, self.min_steps)
        ranks = np.linspace(0, len(scores) - 1, self.candidates).astype(int)
        cuts = np.unique(np.sort(scores)[ranks])[::-1]  # highest first: ties keep it
        f1 = [
            episodes.event_metrics(truth, episodes.mask_spans(alarms(scores, cut), rule))[
                "episode_f1"
            ]
            for cut in cuts
        ]
        return float(cuts[int(np.argmax(f1))])


class PercentileThreshold(Calibrator):
    """The ``q``-th percentile of validation scores: a fixed alarm budget of ``100 - q`` %."""

    method = "percentile"
    param_names = ("q",)

    def __init__(self, q: float = 99.0) -> None:
        self.q = _check_open_interval("percentile q", q, 0.0, 100.0)

    def _fit_threshold(self, scores: np.ndarray, labels: np.ndarray | None) -> float:
        return float(np.percentile(scores, self.q))


class MeanStdThreshold(Calibrator):
    """``mean + k * std`` of validation scores, the classic k-sigma rule."""

    method = "mean_std"
    param_names = ("k",)

    def __init__(self, k: float = 3.0) -> None:
        if not (math.isfinite(k) and k > 0):
            raise ValueError(f"k must be a positive number of standard deviations, got {k}")
        self.k = float(k)

    def _fit_threshold(self, scores: np.ndarray, labels: np.ndarray | None) -> float:
        return float(scores.mean() + self.k * scores.std())


class PotThreshold(Calibrator):
    """Peaks over threshold (Siffer et al., KDD 2017): a tail quantile from extreme value theory.

    Scores above the ``init_quantile`` cut ``t`` are modelled as a generalised Pareto tail
    (shape ``gamma``, scale ``sigma``, fitted by maximum likelihood on the excesses), which
    extrapolates to quantiles far beyond what the empirical distribution can resolve. The
    threshold is the score exceeded with probability ``risk``::

        t + sigma / gamma * ((risk * n / n_t) ** -gamma - 1)

    with ``n_t`` excesses out of ``n`` scores, and its limit ``t - sigma * log(risk * n / n_t)``
    for an exponential tail (``gamma -> 0``).
    """

    method = "pot"
    param_names = ("risk", "init_quantile")
    min_excesses: ClassVar[int] = 10
    """Fewer points above the initial cut cannot support a two-parameter tail fit."""

    def __init__(self, risk: float = 1e-3, init_quantile: float = 0.98) -> None:
        self.init_quantile = _check_open_interval("init_quantile", init_quantile, 0.0, 1.0)
        self.risk = _check_open_interval("risk", risk, 0.0, 1.0 - self.init_quantile)

    def _fit_threshold(self, scores: np.ndarray, labels: np.ndarray | None) -> float:
        initial = float(np.quantile(scores, self.init_quantile))
        excesses = scores[scores > initial] - initial
        if len(excesses) < self.min_excesses:
            raise ValueError(
                f"POT needs at least {self.min_excesses} scores above the initial "
                f"{self.init_quantile} quantile, got {len(excesses)}: use more validation "
                "points or a lower init_quantile"
            )
        from scipy.stats import genpareto  # a heavy import, for this calibrator alone

        gamma, _, sigma = genpareto.fit(excesses, floc=0.0)
        tail_ratio = self.risk * len(scores) / len(excesses)
        if abs(gamma) < 1e-8:
            return initial - sigma * math.log(tail_ratio)
        return initial + sigma / gamma * (tail_ratio**-gamma - 1.0)


FALLBACK_METHOD: CalibrationMethod = "percentile"
"""The rule used when the chosen one needs labeled anomalies and the data has none."""

CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        BestF1Threshold,
        EventF1Threshold,
        PercentileThreshold,
        MeanStdThreshold,
        PotThreshold,
    )
}


def _registered(method: object) -> type[Calibrator]:
    if method not in CALIBRATORS:
        raise ValueError(
            f"unknown calibration method {method!r}; choose one of {sorted(CALIBRATION_METHODS)}"
        )
    return CALIBRATORS[method]


def make_calibrator(method: str = BestF1Threshold.method, **params: float) -> Calibrator:
    """Build a calibrator by registry name (``best_f1`` by default)."""
    return _registered(method)(**params)


def fit_calibrator(
    method: CalibrationMethod,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    **params: float,
) -> Calibrator:
    """Fit ``method`` (with ``params``) on validation scores; fall back without labels.

    A rule that needs labeled anomalies (best F1, event F1) has nothing to maximise on days
    without one, so those days get :data:`FALLBACK_METHOD`, a fixed alarm rate, with a warning.
    """
    chosen = _registered(method)
    if chosen.needs_anomalies and (labels is None or not np.any(labels)):
        log.warning("no labeled anomaly to fit %r on: using %r instead", method, FALLBACK_METHOD)
        return make_calibrator(FALLBACK_METHOD).fit(scores)
    return chosen(**params).fit(scores, labels)


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Rebuild any calibrator from its :meth:`Calibrator.to_dict` form."""
    return _registered(data.get("method")).from_dict(data)
