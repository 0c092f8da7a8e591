"""Every torch detector on a CUDA device (bf16 autocast), where one is present.

A team trains on a GPU worker and scores on CPU workers: a model fitted on CUDA must detect as
well as on CPU, and its saved weights must load and score on a machine without CUDA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipeline.detectors.registry import detector_class, load_detector, make_detector
from pipeline.detectors.torch_base import TorchDetector
from tests.detectors.test_contract import MIN_AUC, SMALL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TORCH_NAMES = [name for name in sorted(SMALL) if issubclass(detector_class(name), TorchDetector)]


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_fits_on_cuda_detects_and_scores_on_cpu_after_load(
    name: str, train_segments, labelled_test, tmp_path: Path
) -> None:
    detector = make_detector(name, **(SMALL[name] | {"device": "cuda"})).fit(train_segments)
    assert next(detector.module_.parameters()).device.type == "cuda"
    segments, labels = labelled_test
    cuda_scores = detector.score(segments)
    assert cuda_scores.shape == labels.shape and np.isfinite(cuda_scores).all()
    assert roc_auc_score(labels, cuda_scores) > MIN_AUC

    loaded = load_detector(detector.save(tmp_path / name), device="cpu")
    cpu_scores = loaded.score(segments)
    assert roc_auc_score(labels, cpu_scores) > MIN_AUC
    # bf16 autocast on CUDA against float32 on CPU: the same ranking, not the same bits.
    assert np.corrcoef(cuda_scores, cpu_scores)[0, 1] > 0.95
