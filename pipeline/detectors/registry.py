"""The explicit map from detector names (part of the interface) to classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.detectors.anomaly_transformer import AnomalyTransformer
from pipeline.detectors.base import Detector
from pipeline.detectors.classical import OCSVM, PCA, IForest
from pipeline.detectors.dense_ae import DenseAE
from pipeline.detectors.ensemble import Ensemble
from pipeline.detectors.lstm import LSTMAE, LSTMForecast
from pipeline.detectors.masked_transformer import MaskedTransformer
from pipeline.detectors.transformer_ae import TransformerAE
from pipeline.detectors.vae import VAE

DETECTORS: dict[str, type[Detector]] = {
    detector.name: detector
    for detector in (
        PCA,
        IForest,
        OCSVM,
        DenseAE,
        VAE,
        LSTMAE,
        LSTMForecast,
        TransformerAE,
        MaskedTransformer,
        AnomalyTransformer,
        Ensemble,
    )
}


def detector_class(name: str) -> type[Detector]:
    try:
        return DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise ValueError(f"unknown detector {name!r}: choose one of {known}") from None


def make_detector(name: str, **params: Any) -> Detector:
    """Instantiate a registered detector with validated hyper-parameters."""
    return detector_class(name)(**params)


def supported_params(name: str, candidates: dict[str, Any]) -> dict[str, Any]:
    """The subset of run-level settings (window, epochs, device, ...) a detector accepts."""
    fields = detector_class(name).Config.model_fields
    return {key: value for key, value in candidates.items() if key in fields}


def load_detector(directory: str | Path, device: str | None = None) -> Detector:
    """Load any saved detector, dispatching on the name recorded in its ``config.json``.

    ``device`` (``auto|cpu|cuda``) replaces the device a torch detector was trained on: a model
    fitted on a GPU worker must score on CPU workers too. Detectors without a device ignore it.
    """
    meta = json.loads((Path(directory) / "config.json").read_text())
    return detector_class(meta["detector"]).load(directory, device=device)
