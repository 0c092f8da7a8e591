"""Classical detectors on rows or flattened windows: PCA, Isolation Forest, One-Class SVM.

With ``window = 1`` each time step's feature vector is one sample; with ``window > 1`` each
sample is a flattened window of ``window`` steps (a view sliced from the series, copied only a
chunk at a time) and a step's score is the mean over the windows that cover it. Short segments
are left-padded so every row gets a score.

Each detector learns with scikit-learn, then keeps only the plain arrays that scoring needs in
a small dataclass, and scores with numpy from those arrays alone. So persistence is one
``.npz`` file read with ``allow_pickle=False``, and a loaded detector runs the very same
arithmetic as the fitted one: scores round-trip exactly. The tests check each array model
against scikit-learn's own scoring.

Attribution: PCA's score is the mean of per-feature squared residuals, which
``score_features`` returns, so one pass of it gives both an alarm and its explanation
(``score_is_feature_mean``). Isolation Forest and One-Class SVM have no per-feature form; they
use the base class's occlusion (score drop with a feature at its training mean), at the cost
of ``features + 1`` scoring passes.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np
from pydantic import Field, field_validator

from pipeline.data.windows import (
    PointFeatureScores,
    PointScores,
    Segments,
    pad_short_segments,
    sliding_windows,
    window_starts,
)
from pipeline.detectors.base import Detector, DetectorConfig, FitOptions

if TYPE_CHECKING:  # scikit-learn is imported where a model is fitted, not where it scores
    from sklearn.ensemble import IsolationForest

ARRAYS_FILE = "model.npz"


@dataclasses.dataclass(frozen=True)
class ArrayModel:
    """A fitted model made of numpy arrays only, so it saves as an ``.npz`` without pickle."""

    def save(self, path: Path) -> None:
        arrays = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> Self:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(**{field.name: arrays[field.name] for field in dataclasses.fields(cls)})


class ClassicalConfig(DetectorConfig):
    window: int = Field(default=1, ge=1, description="steps per sample; 1 = point-wise")
    score_batch_size: int = Field(default=4096, ge=1, description="windows scored per chunk")


def training_rows(train: Segments, window: int) -> np.ndarray:
    """Every in-segment window of the training data, flattened: (n_windows, window * features)."""
    starts = window_starts(train.bounds, window)
    if len(starts) == 0:
        raise ValueError(f"no training segment is as long as the window ({window} steps)")
    return sliding_windows(train.values, window)[starts].reshape(len(starts), -1)


class ClassicalDetector(Detector):
    """Fit a scikit-learn model on flattened windows; score windows in chunks onto steps.

    ``valid`` is accepted for the common interface and unused: nothing here stops early.
    """

    Config: ClassVar[type[ClassicalConfig]] = ClassicalConfig
    config: ClassicalConfig
    Model: ClassVar[type[ArrayModel]]

    @abstractmethod
    def _fit_model(self, rows: np.ndarray) -> ArrayModel:
        """Learn from flattened training windows; keep only the arrays scoring needs."""

    @abstractmethod
    def _window_scores(self, windows: np.ndarray) -> np.ndarray:
        """Scores of (n, window, features) windows onto their steps, shape (n, window)."""

    def _fit(self, train: Segments, valid: Segments | None, options: FitOptions) -> Self:
        """One fit on the flattened training windows: nothing to checkpoint, resume or show."""
        self.model_ = self._fit_model(training_rows(train, self.config.window))
        self.n_features_ = train.n_features
        return self

    def score(self, x: Segments) -> np.ndarray:
        return self._map_windows(x, self._window_scores, lambda rows, _: PointScores(rows))

    def _map_windows(
        self,
        x: Segments,
        window_scores: Callable[[np.ndarray], np.ndarray],
        accumulator: Callable[[int, int], PointScores | PointFeatureScores],
    ) -> np.ndarray:
        """Apply ``window_scores`` to every window in bounded chunks; map onto rows.

        ``accumulator(rows, features)`` collects the chunks' scores onto time steps.
        """
        self._check_fitted()
        self._check_features(x)
        window = self.config.window
        padded, keep = pad_short_segments(x, window)
        starts = window_starts(padded.bounds, window)
        windows = sliding_windows(padded.values, window)
        points = accumulator(padded.n_rows, padded.n_features)
        for begin in range(0, len(starts), self.config.score_batch_size):
            chunk = starts[begin : begin + self.config.score_batch_size]
            points.add(chunk, window_scores(windows[chunk]))
        return points.result()[keep]

    def _save_state(self, directory: Path) -> dict:
        self.model_.save(directory / ARRAYS_FILE)
        return {"arrays": ARRAYS_FILE}

    def _load_state(self, directory: Path, state: dict) -> None:
        self.model_ = self.Model.load(directory / state["arrays"])


def _spread(window_scores: np.ndarray, window: int) -> np.ndarray:
    """One score per window given to each of its steps, shape (n, window)."""
    return np.broadcast_to(window_scores[:, None], (len(window_scores), window))


# --- PCA ------------------------------------------------------------------------------------


class PCAConfig(ClassicalConfig):
    n_components: int | float = Field(
        default=0.9, gt=0, description="share of variance kept if below 1, else a count"
    )

    @field_validator("n_components")
    @classmethod
    def _share_or_count(cls, value: int | float) -> int | float:
        if isinstance(value, float) and value >= 1:
            raise ValueError("n_components is a share of variance below 1 or an integer count")
        return value


@dataclasses.dataclass(frozen=True)
class PCAModel(ArrayModel):
    mean: np.ndarray
    components: np.ndarray

    def squared_residuals(self, rows: np.ndarray) -> np.ndarray:
        """Squared distance of each value from the principal subspace, same shape as rows."""
        centred = rows.astype(np.float64) - self.mean
        return (centred - (centred @ self.components.T) @ self.components) ** 2


class PCA(ClassicalDetector):
    """PCA reconstruction error: squared distance from the principal subspace, per step."""

    name = "pca"
    Config = PCAConfig
    config: PCAConfig
    model_: PCAModel
    Model = PCAModel
    score_is_feature_mean = True  # the score is the feature mean of the squared residuals

    def _fit_model(self, rows: np.ndarray) -> PCAModel:
        from sklearn.decomposition import PCA as SklearnPCA  # fitting alone needs scikit-learn

        pca = SklearnPCA(n_components=self.config.n_components, svd_solver="full")
        pca.fit(rows)
        return PCAModel(mean=pca.mean_, components=pca.components_)

    def _window_scores(self, windows: np.ndarray) -> np.ndarray:
        return self._window_feature_residuals(windows).mean(axis=-1)

    def score_features(self, x: Segments) -> np.ndarray:
        """Each feature's squared residual from the principal subspace; their mean is the score."""
        return self._map_windows(x, self._window_feature_residuals, PointFeatureScores)

    def _window_feature_residuals(self, windows: np.ndarray) -> np.ndarray:
        residuals = self.model_.squared_residuals(windows.reshape(len(windows), -1))
        return residuals.reshape(windows.shape)


# --- Isolation Forest ---------------------------------------------------------------------


class IForestConfig(ClassicalConfig):
    n_estimators: int = Field(default=100, ge=1)
    max_samples: int = Field(default=256, ge=2, description="samples per tree (psi)")
    seed: int = 0


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of Liu et al. (2008): mean path length of an unsuccessful search among n points."""
    n = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 3.0)
    general = 2.0 * (np.log(safe - 1.0) + np.euler_gamma) - 2.0 * (safe - 1.0) / safe
    return np.where(n <= 1, 0.0, np.where(n == 2, 1.0, general))


@dataclasses.dataclass(frozen=True)
class IsolationForestModel(ArrayModel):
    """All trees' nodes in flat arrays; children index into the same arrays (-1 at leaves).

    ``leaf_path`` is the path length a point reaching that leaf gets: its depth plus c(size of
    the leaf), the paper's h(x). ``normaliser`` is c(psi).
    """

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf_path: np.ndarray
    normaliser: np.ndarray

    @classmethod
    def from_sklearn(cls, forest: IsolationForest) -> IsolationForestModel:
        parts: dict[str, list[np.ndarray]] = {
            key: [] for key in ("feature", "threshold", "left", "right", "leaf_path")
        }
        roots, offset = [], 0
        for estimator, features in zip(
            forest.estimators_, forest.estimators_features_, strict=True
        ):
            tree = estimator.tree_
            leaf = tree.children_left < 0
            roots.append(offset)
            parts["feature"].append(np.where(leaf, -1, features[np.maximum(tree.feature, 0)]))
            parts["threshold"].append(tree.threshold)
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset))
            depth = tree.compute_node_depths() - 1.0  # edges from the root
            parts["leaf_path"].append(depth + average_path_length(tree.n_node_samples))
            offset += tree.node_count
        return cls(
            roots=np.asarray(roots, dtype=np.int64),
            **{key: np.concatenate(values) for key, values in parts.items()},
            normaliser=np.asarray(average_path_length(forest.max_samples_)),
        )

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Anomaly score s = 2 ** (-mean path length / c(psi)) in (0, 1]; 1 = isolated at once.

        All trees descend together, one level per iteration.
        """
        node = np.repeat(self.roots[None, :], len(rows), axis=0)
        while True:
            feature = self.feature[node]
            inner = feature >= 0
            if not inner.any():
                break
            value = np.take_along_axis(rows, np.maximum(feature, 0), axis=1)
            child = np.where(value <= self.threshold[node], self.left[node], self.right[node])
            node = np.where(inner, child, node)
        mean_path = self.leaf_path[node].mean(axis=1)
        return 2.0 ** (-mean_path / self.normaliser)


class IForest(ClassicalDetector):
    """Isolation Forest: how quickly random splits isolate a sample (Liu et al., 2008)."""

    name = "iforest"
    Config = IForestConfig
    config: IForestConfig
    model_: IsolationForestModel
    Model = IsolationForestModel

    def _fit_model(self, rows: np.ndarray) -> IsolationForestModel:
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(
            n_estimators=self.config.n_estimators,
            max_samples=min(self.config.max_samples, len(rows)),
            random_state=self.config.seed,
        )
        return IsolationForestModel.from_sklearn(forest.fit(rows))

    def _window_scores(self, windows: np.ndarray) -> np.ndarray:
        scores = self.model_.score(windows.reshape(len(windows), -1))
        return _spread(scores, windows.shape[1])


# --- One-Class SVM ------------------------------------------------------------------------


class OCSVMConfig(ClassicalConfig):
    nu: float = Field(default=0.05, gt=0, le=1, description="bound on the training outlier share")
    gamma: float | None = Field(
        default=None, gt=0, description="RBF kernel width; default 1 / (dims * variance)"
    )
    max_samples: int = Field(
        default=2000, ge=2, description="training samples drawn (uniformly, seeded) for the fit"
    )
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class OneClassSVMModel(ArrayModel):
    """The decision function's ingredients: support vectors, their weights, offset, kernel width."""

    support_vectors: np.ndarray
    dual_coef: np.ndarray
    intercept: np.ndarray
    gamma: np.ndarray

    def score(self, rows: np.ndarray) -> np.ndarray:
        """Negative decision function: how far outside the learned support a sample lies."""
        from sklearn.metrics.pairwise import rbf_kernel

        kernel = rbf_kernel(rows.astype(np.float64), self.support_vectors, gamma=float(self.gamma))
        return -(kernel @ self.dual_coef + self.intercept)


class OCSVM(ClassicalDetector):
    """One-Class SVM (RBF kernel, exact) fitted on a seeded subsample of at most max_samples."""

    name = "ocsvm"
    Config = OCSVMConfig
    config: OCSVMConfig
    model_: OneClassSVMModel
    Model = OneClassSVMModel

    def _fit_model(self, rows: np.ndarray) -> OneClassSVMModel:
        # An exact kernel SVM costs O(n^2) to O(n^3) to fit, so it sees a bounded subsample;
        # scoring is linear in rows and in the number of support vectors.
        rng = np.random.default_rng(self.config.seed)
        size = min(self.config.max_samples, len(rows))
        sample = rows[np.sort(rng.choice(len(rows), size=size, replace=False))].astype(np.float64)
        gamma = self.config.gamma or 1.0 / (sample.shape[1] * max(float(sample.var()), 1e-12))
        from sklearn.svm import OneClassSVM

        svm = OneClassSVM(kernel="rbf", nu=self.config.nu, gamma=gamma).fit(sample)
        return OneClassSVMModel(
            support_vectors=svm.support_vectors_,
            dual_coef=svm.dual_coef_[0],
            intercept=np.asarray(svm.intercept_[0]),
            gamma=np.asarray(gamma),
        )

    def _window_scores(self, windows: np.ndarray) -> np.ndarray:
        scores = self.model_.score(windows.reshape(len(windows), -1))
        return _spread(scores, windows.shape[1])
