"""Shared machinery of the window-based torch detectors.

A subclass provides three things: the module it trains, the loss of a batch of windows, and the
per-step, per-feature error of a batch of windows (what explains an alarm). The score is that
error's mean over features unless a subclass overrides it (the VAE's likelihood). Everything
else (training loop, device, windows as views, chunked scoring under ``inference_mode``,
mapping window errors to time steps, persistence of weights without pickle) lives here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from pydantic import Field
from torch import nn

from pipeline.checks import require_finite
from pipeline.choices import Device, Precision
from pipeline.data.windows import (
    PointFeatureScores,
    PointScores,
    Segments,
    pad_short_segments,
)
from pipeline.detectors.base import Detector, DetectorConfig, FitOptions
from pipeline.detectors.precision import autocast
from pipeline.detectors.trainer import Trainer, WindowSource, resolve_device

WEIGHTS_FILE = "weights.pt"


class TorchDetectorConfig(DetectorConfig):
    """Hyper-parameters of every window-based torch detector."""

    window: int = Field(default=64, ge=2)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    patience: int = Field(default=3, ge=1, description="epochs without improvement before stop")
    valid_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="tail of each training segment held out for early stop"
    )
    train_stride: int = Field(default=1, ge=1)
    score_stride: int | None = Field(
        default=None, ge=1, description="step between scored windows; default window // 4"
    )
    score_batch_size: int = Field(default=512, ge=1)
    device: Device = "auto"
    precision: Precision = Field(
        default="auto",
        description="bf16 autocast in training and scoring, or fp32; auto: bf16 where the "
        "device computes it natively (CUDA, CPUs with AVX512-BF16 or AMX)",
    )
    compile: bool = Field(
        default=False, description="train through torch.compile (pays off on long GPU runs)"
    )
    seed: int = 0

    @property
    def scoring_stride(self) -> int:
        """The step between scored windows: ``score_stride``, else a quarter window (at least 1).

        One definition for the detectors and for benchmarks that replay their scoring loop.
        """
        return self.score_stride or max(1, self.window // 4)


class TorchDetector(Detector):
    """Base of detectors that learn from windows with a torch module."""

    Config = TorchDetectorConfig
    config: TorchDetectorConfig
    # The default :meth:`window_errors` is the feature mean of :meth:`window_feature_errors`;
    # a subclass that overrides it with another score sets this False.
    score_is_feature_mean: ClassVar[bool] = True

    @abstractmethod
    def build_module(self, n_features: int) -> nn.Module:
        """A fresh, untrained module for ``n_features`` inputs."""

    @abstractmethod
    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a (batch, window, features) tensor."""

    @abstractmethod
    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Per-step, per-feature error of each window, shape (batch, window, features).

        Its mean over features is the score (:meth:`window_errors`), so the attribution of an
        alarm explains exactly the score that raised it; a detector whose score is not a plain
        error (the VAE's likelihood) overrides :meth:`window_errors` and says what this ranks.
        """

    def window_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Per-step anomaly score of each window, shape (batch, window): the feature mean.

        Derived rather than written per detector so the score and its attribution cannot
        drift apart.
        """
        return self.window_feature_errors(module, windows).mean(dim=-1)

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based); epoch-dependent schedules override it."""

    def _fit(self, train: Segments, valid: Segments | None, options: FitOptions) -> Self:
        """Train; without ``valid``, the tail of each training segment drives early stopping."""
        config = self.config
        device = resolve_device(config.device)
        if valid is None:
            train, valid = train.split_tail(config.valid_fraction)
        torch.manual_seed(config.seed)  # the initial weights belong to the seeded run
        module = self.build_module(train.n_features)
        trainer = Trainer(
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            patience=config.patience,
            device=device,
            seed=config.seed,
            checkpoint_dir=options.checkpoint_dir,
            resume=options.resume,
            progress=options.progress,
            epoch_hook=self.start_epoch,
            model_name=self.name,
            precision=config.precision,
            compile=config.compile,
        )
        train_source = WindowSource(train, config.window, config.train_stride, device)
        valid_source = None
        if valid is not None and int(valid.lengths.max()) >= config.window:
            valid_source = WindowSource(valid, config.window, config.window // 2 or 1, device)
        self.history_ = trainer.fit(module, self.training_loss, train_source, valid_source)
        self.module_ = module
        self.n_features_ = train.n_features
        return self

    def score(self, x: Segments) -> np.ndarray:
        """Score every row: windows in bounded chunks, errors averaged onto time steps."""
        return self._map_windows(x, self.window_errors, lambda rows, _: PointScores(rows))

    def score_features(self, x: Segments) -> np.ndarray:
        """Per-feature errors of every row, from the same windows as :meth:`score`."""
        return self._map_windows(x, self.window_feature_errors, PointFeatureScores)

    def _map_windows(
        self,
        x: Segments,
        window_errors: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        accumulator: Callable[[int, int], PointScores | PointFeatureScores],
    ) -> np.ndarray:
        """Apply ``window_errors`` to every scored window in bounded chunks; map onto rows.

        ``accumulator(rows, features)`` collects the chunks' errors onto time steps. A
        non-finite result raises :class:`~pipeline.detectors.base.NonFiniteScoreError` naming
        the detector rather than reaching a threshold or a scores file.
        """
        self._check_fitted()
        self._check_features(x)
        config = self.config
        device = resolve_device(config.device)
        module = self.module_.to(device).eval()
        padded, keep = pad_short_segments(x, config.window)
        source = WindowSource(padded, config.window, config.scoring_stride, device)
        points = accumulator(padded.n_rows, padded.n_features)
        with torch.inference_mode(), autocast(device, config.precision):
            for begin in range(0, len(source), config.score_batch_size):
                starts = source.starts[begin : begin + config.score_batch_size]
                errors = window_errors(module, source.batch(starts))
                points.add(starts.cpu().numpy(), errors.float().cpu().numpy())
        return require_finite(self.name, points.result()[keep])

    def _save_state(self, directory: Path) -> dict:
        torch.save(self.module_.state_dict(), directory / WEIGHTS_FILE)
        return {"weights": WEIGHTS_FILE}

    def _load_state(self, directory: Path, state: dict) -> None:
        module = self.build_module(self.n_features_)
        weights = torch.load(directory / state["weights"], map_location="cpu", weights_only=True)
        module.load_state_dict(weights)
        self.module_ = module.eval()
