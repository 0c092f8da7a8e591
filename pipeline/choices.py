"""Every list of allowed values, defined once and importable without heavy dependencies.

The DAG files build their Param enums and patterns from here at parse time, the command line
its ``choices``, the pydantic models their field types, and each registry (calibrators,
detectors) is checked against its list by a test. A ``Literal`` is the single definition;
``get_args`` turns it into the tuple a Param or ``argparse`` needs.
"""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["auto", "cpu", "cuda"]
"""Where torch work runs: ``auto`` takes CUDA when present, else the CPU."""

Precision = Literal["auto", "fp32", "bf16"]
"""Arithmetic of torch work: ``auto`` takes bf16 autocast where the device computes bf16
natively (CUDA, CPUs with AVX512-BF16 or AMX), float32 elsewhere."""

CalibrationMethod = Literal["best_f1", "event_f1", "percentile", "mean_std", "pot"]
"""Threshold rules of ``pipeline.calibration``."""

PromotionMetric = Literal[
    "vus_pr", "vus_roc", "auc_pr", "auc_roc", "f1", "precision", "recall", "event_f1", "pa_f1"
]
"""Metrics of ``pipeline.evaluation.evaluate`` where higher is better: the gate's choices."""

SelectionMetric = Literal["vus_pr", "vus_roc", "auc_pr", "auc_roc"]
"""Threshold-free metrics that choose among candidates: the threshold is fitted on the same
validation days, so a metric at that threshold would favour whichever candidate it overfits."""

DetectorName = Literal[
    "anomaly_transformer",
    "dense_ae",
    "ensemble",
    "iforest",
    "lstm_ae",
    "lstm_forecast",
    "masked_transformer",
    "ocsvm",
    "pca",
    "transformer_ae",
    "vae",
]
"""Names of ``pipeline.detectors.registry.DETECTORS`` (the registry imports every model)."""

BudgetScope = Literal["dataset", "entity"]
"""What an alarm budget caps: a day's episodes over the whole dataset, or over each entity."""

ReviewLabel = Literal["confirmed", "dismissed"]
"""A reviewer's verdict on an alarm episode: a real event, or a false alarm."""

DEVICES: tuple[str, ...] = get_args(Device)
PRECISIONS: tuple[str, ...] = get_args(Precision)
CALIBRATION_METHODS: tuple[str, ...] = get_args(CalibrationMethod)
PROMOTION_METRICS: tuple[str, ...] = get_args(PromotionMetric)
SELECTION_METRICS: tuple[str, ...] = get_args(SelectionMetric)
DETECTOR_NAMES: tuple[str, ...] = get_args(DetectorName)
BUDGET_SCOPES: tuple[str, ...] = get_args(BudgetScope)
REVIEW_LABELS: tuple[str, ...] = get_args(ReviewLabel)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Dataset, run-config and run-key names: no path separators, nothing a shell would expand."""
