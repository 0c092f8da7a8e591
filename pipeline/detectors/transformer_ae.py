"""Transformer-encoder reconstruction detector.

Windows are embedded linearly, given sinusoidal positions, passed through a
``nn.TransformerEncoder`` and mapped back to the features; the model learns to reconstruct
normal windows, so the per-step squared reconstruction error is the anomaly score.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.detectors.torch_base import TorchDetector, TorchDetectorConfig


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """The fixed sine/cosine position table of Vaswani et al. (2017), shape (length, d_model)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class TransformerAEConfig(TorchDetectorConfig):
    d_model: int = Field(default=64, ge=4)
    n_heads: int = Field(default=4, ge=1)
    n_layers: int = Field(default=2, ge=1)
    dim_feedforward: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_model(self) -> TransformerAEConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        return self


class TransformerAutoencoder(nn.Module):
    """Linear embedding, positional encoding, Transformer encoder, linear head."""

    positions: torch.Tensor  # a buffer: sinusoidal encodings of the window's steps

    def __init__(self, n_features: int, window: int, config: TransformerAEConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, config.d_model)
        self.register_buffer("positions", sinusoidal_positions(window, config.d_model))
        layer = nn.TransformerEncoderLayer(
            d_model=config.d_model,
            nhead=config.n_heads,
            dim_feedforward=config.dim_feedforward,
            dropout=config.dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.n_layers)
        self.head = nn.Linear(config.d_model, n_features)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(windows) + self.positions[: windows.shape[1]]
        return self.head(self.encoder(hidden))


class TransformerAE(TorchDetector):
    """Reconstruction error of a Transformer encoder trained on normal windows (MSE)."""

    name = "transformer_ae"
    Config = TransformerAEConfig
    config: TransformerAEConfig

    def build_module(self, n_features: int) -> nn.Module:
        return TransformerAutoencoder(n_features, self.config.window, self.config)

    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(module(windows).float(), windows)

    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return (module(windows).float() - windows).pow(2)
