"""What is particular to each detector: curricula, fallbacks, options and array models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.ensemble import IsolationForest
from sklearn.svm import OneClassSVM

from pipeline.data.windows import Segments
from pipeline.detectors.classical import (
    PCA,
    IForest,
    IsolationForestModel,
    OneClassSVMModel,
    PCAModel,
    average_path_length,
    training_rows,
)
from pipeline.detectors.dense_ae import DenseAE
from pipeline.detectors.lstm import LSTMForecast, pad_history
from pipeline.detectors.masked_transformer import MaskedTransformer, partition_masks
from pipeline.detectors.registry import load_detector
from pipeline.detectors.vae import VAE

RNG = np.random.default_rng(0)
ROWS = RNG.standard_normal((400, 3)).astype(np.float32)
WINDOWS = torch.as_tensor(RNG.standard_normal((5, 8, 3)), dtype=torch.float32)

# --- masked_transformer --------------------------------------------------------------------


def test_mask_ratio_grows_linearly_from_start_to_end() -> None:
    detector = MaskedTransformer(epochs=5, mask_ratio_start=0.1, mask_ratio_end=0.5)
    ratios = [detector.mask_ratio(epoch) for epoch in range(5)]
    np.testing.assert_allclose(ratios, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert MaskedTransformer(epochs=1).mask_ratio(0) == pytest.approx(0.1)


def test_mask_curriculum_must_not_shrink() -> None:
    with pytest.raises(pydantic.ValidationError):
        MaskedTransformer(mask_ratio_start=0.5, mask_ratio_end=0.2)


@pytest.mark.parametrize("window, parts", [(8, 4), (10, 3), (5, 5)])
def test_score_masks_hide_every_step_exactly_once(window: int, parts: int) -> None:
    masks = partition_masks(window, parts, seed=0)
    assert masks.shape == (parts, window)
    assert torch.equal(masks.sum(dim=0), torch.ones(window, dtype=torch.long))
    assert masks.sum(dim=1).min() >= window // parts
    assert torch.equal(masks, partition_masks(window, parts, seed=0))


def test_masked_errors_come_from_the_mask_that_hid_each_step() -> None:
    detector = MaskedTransformer(window=8, d_model=8, n_heads=2, n_layers=1, score_masks=4)
    module = detector.build_module(3).eval()
    with torch.inference_mode():
        errors = detector.window_errors(module, WINDOWS)
        for mask in module.score_masks:
            expected = (module(WINDOWS, mask[None]) - WINDOWS).pow(2).mean(dim=-1)
            torch.testing.assert_close(errors[:, mask], expected[:, mask])


# --- lstm_forecast -------------------------------------------------------------------------


def test_pad_history_prefixes_every_segment_with_its_first_row() -> None:
    segments = Segments(ROWS[:7], np.array([0, 4, 5, 7]))
    padded, keep = pad_history(segments, 3)
    assert list(padded.lengths) == [7, 4, 5]
    np.testing.assert_array_equal(padded.values[keep], segments.values)
    np.testing.assert_array_equal(padded.values[:3], np.repeat(ROWS[:1], 3, axis=0))


def test_first_row_is_forecast_from_a_padded_history() -> None:
    detector = LSTMForecast(window=6, hidden_size=8, epochs=1, device="cpu", precision="fp32")
    detector.fit(Segments.single(ROWS))
    scores = detector.score(Segments(ROWS[:30], np.array([0, 1, 30])))
    with torch.inference_mode():
        constant = torch.as_tensor(ROWS[:1]).repeat(6, 1)[None]
        expected = detector.window_errors(detector.module_, constant)[0, 0]
    assert scores.shape == (30,)
    assert scores[0] == pytest.approx(float(expected), rel=1e-6)


def test_forecaster_rejects_a_score_stride() -> None:
    with pytest.raises(pydantic.ValidationError, match="score_stride"):
        LSTMForecast(score_stride=4)


# --- vae and dense_ae ----------------------------------------------------------------------


def test_vae_scores_with_fixed_draws_that_are_not_saved() -> None:
    detector = VAE(window=8, hidden=[16], latent_size=4, score_samples=3)
    module = detector.build_module(3).eval()
    assert module.fixed_draws.shape == (3, 4)
    assert "fixed_draws" not in module.state_dict()
    with torch.inference_mode():
        first = detector.window_errors(module, WINDOWS)
        torch.testing.assert_close(detector.window_errors(module, WINDOWS), first)
        torch.testing.assert_close(detector.window_errors(module, WINDOWS[:2]), first[:2])
        assert torch.equal(
            detector.training_loss(module, WINDOWS), detector.training_loss(module, WINDOWS)
        )


def test_denoising_noise_is_applied_in_training_only() -> None:
    detector = DenseAE(window=8, hidden=[16], code_size=4, denoising=0.5)
    module = detector.build_module(3)
    with torch.no_grad():
        noisy = [detector.training_loss(module.train(), WINDOWS) for _ in range(2)]
        clean = [detector.training_loss(module.eval(), WINDOWS) for _ in range(2)]
    assert noisy[0] != noisy[1]
    assert clean[0] == clean[1]


def test_sparse_option_adds_the_l1_penalty_of_the_code() -> None:
    plain = DenseAE(window=8, hidden=[16], code_size=4)
    sparse = DenseAE(window=8, hidden=[16], code_size=4, sparse=0.1)
    module = plain.build_module(3).eval()
    with torch.no_grad():
        _, code = module(WINDOWS)
        difference = sparse.training_loss(module, WINDOWS) - plain.training_loss(module, WINDOWS)
    torch.testing.assert_close(difference, 0.1 * code.abs().mean())


# --- classical array models against scikit-learn -------------------------------------------


@pytest.mark.parametrize("window", [1, 3])
def test_isolation_forest_arrays_score_as_scikit_learn(window: int) -> None:
    rows = training_rows(Segments.single(ROWS), window)
    forest = IsolationForest(n_estimators=20, max_samples=64, random_state=0).fit(rows)
    model = IsolationForestModel.from_sklearn(forest)
    np.testing.assert_allclose(model.score(rows), -forest.score_samples(rows), rtol=1e-12)


def test_explaining_by_occlusion_scores_once_per_feature_after_the_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Occlusion starts from the scores already computed: ``features + 1`` passes in all."""
    segments = Segments.single(ROWS)
    detector = IForest(n_estimators=20, seed=0).fit(segments)
    passes = []
    score = detector.score
    monkeypatch.setattr(detector, "score", lambda x: passes.append(x) or score(x))

    scores, alarm_features = detector.explained_scores(segments, threshold=0.0)

    assert len(passes) == segments.n_features + 1
    assert (scores > 0.0).all()  # every row alarms, so every row is explained
    np.testing.assert_array_equal(scores, score(segments))
    np.testing.assert_array_equal(alarm_features, detector.score_features(segments))


def test_average_path_length_is_c_of_n() -> None:
    n = np.array([0, 1, 2, 3, 256])
    harmonic = np.log(n[2:] - 1.0) + np.euler_gamma
    general = 2 * harmonic - 2 * (n[2:] - 1) / n[2:]
    np.testing.assert_allclose(average_path_length(n), [0.0, 0.0, 1.0, *general[1:]])


def test_one_class_svm_arrays_score_as_scikit_learn() -> None:
    svm = OneClassSVM(nu=0.1, gamma=0.3).fit(ROWS.astype(np.float64))
    model = OneClassSVMModel(
        support_vectors=svm.support_vectors_,
        dual_coef=svm.dual_coef_[0],
        intercept=np.asarray(svm.intercept_[0]),
        gamma=np.asarray(0.3),
    )
    np.testing.assert_allclose(model.score(ROWS), -svm.decision_function(ROWS), atol=1e-12)


def test_pca_residual_is_the_reconstruction_error() -> None:
    pca = SklearnPCA(n_components=2).fit(ROWS)
    model = PCAModel(mean=pca.mean_, components=pca.components_)
    expected = (ROWS - pca.inverse_transform(pca.transform(ROWS))) ** 2
    np.testing.assert_allclose(model.squared_residuals(ROWS), expected, atol=1e-5)


def test_pca_components_are_a_share_below_one_or_a_count() -> None:
    PCA(n_components=2)
    PCA(n_components=0.5)
    with pytest.raises(pydantic.ValidationError):
        PCA(n_components=1.5)


def test_classical_state_is_plain_arrays(tmp_path: Path) -> None:
    detector = IForest(window=2, n_estimators=5).fit(Segments.single(ROWS))
    detector.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.npz"]
    with np.load(tmp_path / "model.npz", allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)


# --- loading on another device -------------------------------------------------------------


def test_model_saved_for_cuda_scores_on_cpu_when_loaded_with_that_device(tmp_path: Path) -> None:
    detector = DenseAE(window=8, epochs=1, hidden=[16], code_size=4, device="cpu")
    detector.fit(Segments.single(ROWS))
    saved = detector.save(tmp_path / "dense_ae")
    config_file = saved / "config.json"
    meta = json.loads(config_file.read_text())
    meta["config"]["device"] = "cuda"  # as written by a GPU training worker
    config_file.write_text(json.dumps(meta))

    loaded = load_detector(saved, device="cpu")
    assert loaded.config.device == "cpu"
    np.testing.assert_array_equal(
        loaded.score(Segments.single(ROWS)), detector.score(Segments.single(ROWS))
    )
