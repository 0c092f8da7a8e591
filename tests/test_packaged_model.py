"""The MLflow model as a scoring worker loads it: from its files, on the worker's own device."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from pipeline import tracking
from pipeline.calibration import make_calibrator
from pipeline.config import DatasetSpec
from pipeline.data import io
from pipeline.data.synthetic import VitalsScenario, generate_vitals
from pipeline.data.windows import Segments, StandardScaler, frame_to_segments
from pipeline.detectors.registry import detector_class
from pipeline.scoring import ModelBundle


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a worker without CUDA")
def test_a_model_trained_on_a_gpu_scores_on_a_cpu_worker(tmp_path: Path) -> None:
    spec = DatasetSpec.load("vitals")
    start = dt.date(2026, 1, 1)
    scenario = VitalsScenario(start=start, n_days=1, labeled_from=start, n_patients=2, seed=5)
    day = io.to_canonical(next(iter(generate_vitals(scenario).values())), spec)
    segments, ordered = frame_to_segments(day, spec.feature_names, spec.step)
    scaler = StandardScaler.fit(segments.values, spec.feature_names)
    scaled = Segments(scaler.transform(segments.values), segments.bounds)
    detector = detector_class("dense_ae")(window=16, epochs=1, train_stride=8, device="cpu")
    detector.fit(scaled)
    calibration = make_calibrator("percentile").fit(detector.score(scaled)).to_dict()
    bundle_dir = ModelBundle(spec, scaler, detector, calibration).save(tmp_path / "bundle")
    # As a GPU training run records it: the device it was told to train on.
    config_file = bundle_dir / "detector" / "config.json"
    saved = json.loads(config_file.read_text())
    saved["config"]["device"] = "cuda"
    config_file.write_text(json.dumps(saved))
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=str(tracking.PACKAGED_MODEL),
        artifacts={"bundle": str(bundle_dir)},
    )

    scores = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(ordered)

    assert len(scores) == len(ordered)
    expected = ModelBundle.load(bundle_dir, device="cpu").score_frame(ordered)
    pd.testing.assert_series_equal(scores["score"], expected["score"])
