"""Transformer pre-trained by masked-value reconstruction, with a masking curriculum.

Time steps of a window are hidden behind a learned mask token and the encoder must restore
their values from the visible context (the self-supervised objective of masked time-series
modelling, e.g. Zerveas et al., 2021). A value that does not follow from its context, as an
anomaly does not, is restored badly, so the error at masked steps is the anomaly score. Unlike
plain reconstruction, the model can never copy its input through, so it cannot learn to
reproduce anomalies faithfully.

Curriculum: the share of masked steps grows linearly over the epochs from
``mask_ratio_start`` to ``mask_ratio_end`` (first fill in a few gaps, then restore half a
window). The ratio is a function of the epoch alone (set by the trainer's epoch hook) and masks
are drawn from the seeded torch generator, so a seeded run, resumed or not, is reproducible.

Scoring and validation use ``score_masks`` deterministic masks that partition the window's
steps (a seeded random permutation cut into equal shares): every step is masked exactly once,
the context around it looks like a random mask of ratio ``1 / score_masks``, and a step's score
is its restoration error averaged over the windows that cover it.
"""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.detectors.torch_base import TorchDetector
from pipeline.detectors.transformer_ae import TransformerAEConfig, TransformerAutoencoder


class MaskedTransformerConfig(TransformerAEConfig):
    mask_ratio_start: float = Field(default=0.1, gt=0, lt=1)
    mask_ratio_end: float = Field(default=0.5, gt=0, lt=1)
    score_masks: int = Field(default=4, ge=2, description="complementary masks per scored window")

    @model_validator(mode="after")
    def _curriculum_grows(self) -> MaskedTransformerConfig:
        if self.mask_ratio_end < self.mask_ratio_start:
            raise ValueError("mask_ratio_end must not be below mask_ratio_start")
        if self.score_masks > self.window:
            raise ValueError(f"score_masks {self.score_masks} exceeds the window {self.window}")
        return self


def partition_masks(window: int, parts: int, seed: int) -> torch.Tensor:
    """``parts`` boolean masks over ``window`` steps; each step is in exactly one of them."""
    order = torch.randperm(window, generator=torch.Generator().manual_seed(seed))
    masks = torch.zeros(parts, window, dtype=torch.bool)
    masks[torch.arange(window) % parts, order] = True
    return masks


class MaskedTransformerEncoder(TransformerAutoencoder):
    """The reconstruction Transformer with a learned token replacing masked steps."""

    def __init__(self, n_features: int, window: int, config: MaskedTransformerConfig) -> None:
        super().__init__(n_features, window, config)
        self.mask_token = nn.Parameter(torch.randn(config.d_model) * 0.02)
        masks = partition_masks(window, config.score_masks, config.seed)
        self.register_buffer("score_masks", masks, persistent=False)

    score_masks: torch.Tensor  # a buffer: the fixed masks every step is restored under once

    # The mask is the task: this model is never called as a plain reconstruction encoder.
    def forward(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Restore (batch, window, features) where ``mask`` (batch or 1, window) is True."""
        tokens = torch.where(mask[..., None], self.mask_token, self.embed(windows))
        return self.head(self.encoder(tokens + self.positions[: windows.shape[1]]))

    def masked_feature_errors(self, windows: torch.Tensor) -> torch.Tensor:
        """Per-step, per-feature squared error, every step restored under one score mask."""
        errors = torch.zeros(windows.shape, device=windows.device)
        for mask in self.score_masks:
            restored = self(windows, mask[None]).float()
            errors = torch.where(mask[:, None], (restored - windows).pow(2), errors)
        return errors


class MaskedTransformer(TorchDetector):
    """Masked-value restoration error of a Transformer trained with a growing mask ratio."""

    name = "masked_transformer"
    Config = MaskedTransformerConfig
    config: MaskedTransformerConfig

    def mask_ratio(self, epoch: int) -> float:
        """Linear curriculum from the start ratio (first epoch) to the end ratio (last epoch)."""
        start, end = self.config.mask_ratio_start, self.config.mask_ratio_end
        return start + (end - start) * epoch / max(self.config.epochs - 1, 1)

    def start_epoch(self, epoch: int) -> None:
        self._mask_ratio = self.mask_ratio(epoch)  # read by training_loss during this epoch

    def build_module(self, n_features: int) -> nn.Module:
        return MaskedTransformerEncoder(n_features, self.config.window, self.config)

    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Mean squared error at the masked steps.

        Training draws random masks at the curriculum's current ratio; validation uses the
        fixed score masks, so early stopping compares epochs on one yardstick even though the
        training task gets harder every epoch.
        """
        if not module.training:
            return cast(MaskedTransformerEncoder, module).masked_feature_errors(windows).mean()
        mask = torch.rand(windows.shape[:2], device=windows.device) < self._mask_ratio
        step_error = (module(windows, mask).float() - windows).pow(2).mean(dim=-1)
        return (step_error * mask).sum() / mask.sum().clamp_min(1)

    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return cast(MaskedTransformerEncoder, module).masked_feature_errors(windows)
