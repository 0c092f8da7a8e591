"""Dense autoencoder on flattened windows.

A window of ``window x features`` values is flattened, squeezed through a small code and
expanded back; trained on normal windows, the model reconstructs normal shapes well and
anomalous ones badly, so the per-step squared reconstruction error is the score. Two classic
regularisers are options: *denoising* (Vincent et al., 2008) corrupts the input with Gaussian
noise during training so the model learns the normal manifold rather than the identity, and
*sparse* adds an L1 penalty on the code so few code units describe a normal window.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import nn

from pipeline.detectors.torch_base import TorchDetector, TorchDetectorConfig


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class DenseAEConfig(TorchDetectorConfig):
    hidden: list[int] = Field(default=[128], description="encoder layer widths (decoder mirrors)")
    code_size: int = Field(default=16, ge=1)
    denoising: float = Field(default=0.0, ge=0, description="std of training input noise; 0 = off")
    sparse: float = Field(default=0.0, ge=0, description="L1 weight on the code; 0 = off")


class DenseAutoencoder(nn.Module):
    """Flatten, encode to ``code_size`` units, decode, reshape to the window."""

    def __init__(self, n_features: int, window: int, config: DenseAEConfig) -> None:
        super().__init__()
        n_inputs = window * n_features
        self.encoder = mlp([n_inputs, *config.hidden, config.code_size])
        self.decoder = mlp([config.code_size, *reversed(config.hidden), n_inputs])

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (same shape as ``windows``) and the code (batch, code_size)."""
        code = self.encoder(windows.flatten(1))
        return self.decoder(code).view_as(windows), code


class DenseAE(TorchDetector):
    """Reconstruction error of a dense autoencoder on flattened windows (denoising, sparse)."""

    name = "dense_ae"
    Config = DenseAEConfig
    config: DenseAEConfig

    def build_module(self, n_features: int) -> nn.Module:
        return DenseAutoencoder(n_features, self.config.window, self.config)

    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """MSE to the clean window; noise only while training, never in validation."""
        inputs = windows
        if module.training and self.config.denoising > 0:
            inputs = windows + self.config.denoising * torch.randn_like(windows)
        reconstruction, code = module(inputs)
        loss = nn.functional.mse_loss(reconstruction.float(), windows)
        if self.config.sparse > 0:
            loss = loss + self.config.sparse * code.float().abs().mean()
        return loss

    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        reconstruction, _ = module(windows)
        return (reconstruction.float() - windows).pow(2)
