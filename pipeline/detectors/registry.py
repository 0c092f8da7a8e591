"""The explicit map from detector names (part of the interface) to classes."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.detectors.base import Detector

# Where each detector's class lives. A class is imported the first time it is asked for, so
# a worker scoring with PCA never imports torch (a scoring shard's start-up is part of its cost).
_LOCATIONS = {
    "pca": ("pipeline.detectors.classical", "PCA"),
    "iforest": ("pipeline.detectors.classical", "IForest"),
    "ocsvm": ("pipeline.detectors.classical", "OCSVM"),
    "dense_ae": ("pipeline.detectors.dense_ae", "DenseAE"),
    "vae": ("pipeline.detectors.vae", "VAE"),
    "lstm_ae": ("pipeline.detectors.lstm", "LSTMAE"),
    "lstm_forecast": ("pipeline.detectors.lstm", "LSTMForecast"),
    "transformer_ae": ("pipeline.detectors.transformer_ae", "TransformerAE"),
    "masked_transformer": ("pipeline.detectors.masked_transformer", "MaskedTransformer"),
    "anomaly_transformer": ("pipeline.detectors.anomaly_transformer", "AnomalyTransformer"),
    "ensemble": ("pipeline.detectors.ensemble", "Ensemble"),
}


class _Registry(Mapping[str, type[Detector]]):
    """Detector names to classes, each class imported when first looked up."""

    def __getitem__(self, name: str) -> type[Detector]:
        module, attribute = _LOCATIONS[name]
        detector: type[Detector] = getattr(importlib.import_module(module), attribute)
        return detector

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


DETECTORS: Mapping[str, type[Detector]] = _Registry()


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
