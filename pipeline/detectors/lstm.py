"""LSTM detectors: an encoder-decoder that reconstructs windows, and a next-step forecaster.

``lstm_ae`` (after Malhotra et al., 2016) summarises a window in the encoder's final hidden
state and unrolls a decoder from that summary alone, so a shape the encoder has not learned to
summarise comes back wrong; the score is the per-step squared reconstruction error, averaged
over the windows covering a step.

``lstm_forecast`` (after Malhotra et al., 2015) reads ``window - 1`` steps of history and
predicts the next step; the score of a step is the squared error of its forecast. It is trained
teacher-forced on every position of a window (one prediction per prefix), and scores each step
exactly once, from the window that ends at it, where the history is complete.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.data.windows import Segments, concat_segments
from pipeline.detectors.precision import autocast
from pipeline.detectors.torch_base import TorchDetector, TorchDetectorConfig
from pipeline.detectors.trainer import WindowSource, resolve_device


class LSTMConfig(TorchDetectorConfig):
    hidden_size: int = Field(default=64, ge=1)
    n_layers: int = Field(default=1, ge=1)


class LSTMAutoencoder(nn.Module):
    """Encoder LSTM to a code (its last hidden state); decoder LSTM unrolled from the code."""

    def __init__(self, n_features: int, config: LSTMConfig) -> None:
        super().__init__()
        size, layers = config.hidden_size, config.n_layers
        self.encoder = nn.LSTM(n_features, size, num_layers=layers, batch_first=True)
        self.decoder = nn.LSTM(size, size, num_layers=layers, batch_first=True)
        self.head = nn.Linear(size, n_features)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.encoder(windows)
        code = hidden[-1][:, None, :].expand(-1, windows.shape[1], -1)
        decoded, _ = self.decoder(code)
        return self.head(decoded)


class LSTMAE(TorchDetector):
    """Reconstruction error of an LSTM encoder-decoder trained on normal windows (MSE)."""

    name = "lstm_ae"
    Config = LSTMConfig
    config: LSTMConfig

    def build_module(self, n_features: int) -> nn.Module:
        return LSTMAutoencoder(n_features, self.config)

    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(module(windows).float(), windows)

    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return (module(windows).float() - windows).pow(2)


class LSTMForecastConfig(LSTMConfig):
    @model_validator(mode="after")
    def _every_step_scored_once(self) -> LSTMForecastConfig:
        if self.score_stride is not None:
            raise ValueError("lstm_forecast scores every step from its own window: no score_stride")
        return self


class LSTMForecaster(nn.Module):
    """Causal LSTM whose output at each step predicts the next step."""

    def __init__(self, n_features: int, config: LSTMConfig) -> None:
        super().__init__()
        size = config.hidden_size
        self.lstm = nn.LSTM(n_features, size, num_layers=config.n_layers, batch_first=True)
        self.head = nn.Linear(size, n_features)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """(batch, steps, features) -> prediction of steps 1..steps (same shape)."""
        hidden, _ = self.lstm(history)
        return self.head(hidden)


def pad_history(segments: Segments, rows: int) -> tuple[Segments, np.ndarray]:
    """Prefix every segment with ``rows`` copies of its first row.

    The first steps of a segment have no history to forecast from; the padding stands in for
    one (the series as if it had held its first value), so they still get a forecast error
    rather than being dropped. Returns the padded segments and the indices of the real rows.
    """
    padded = concat_segments(
        [np.concatenate([segment[:1].repeat(rows, 0), segment]) for segment in segments]
    )
    real = [np.arange(start + rows, stop) for start, stop in itertools.pairwise(padded.bounds)]
    return padded, np.concatenate(real)


class LSTMForecast(TorchDetector):
    """Next-step forecast error of an LSTM reading ``window - 1`` steps of history."""

    name = "lstm_forecast"
    Config = LSTMForecastConfig
    config: LSTMForecastConfig

    def build_module(self, n_features: int) -> nn.Module:
        return LSTMForecaster(n_features, self.config)

    def training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Teacher-forced MSE of every next-step prediction inside the window."""
        return nn.functional.mse_loss(module(windows[:, :-1]).float(), windows[:, 1:])

    def window_feature_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Squared error of each feature's forecast of the last step, shape (batch, 1, features).

        Only the last step is forecast, so the score (:meth:`window_errors`, the feature mean)
        has shape (batch, 1).
        """
        forecast = module(windows[:, :-1])[:, -1:].float()
        return (forecast - windows[:, -1:]).pow(2)

    def score(self, x: Segments) -> np.ndarray:
        """Forecast error of every row, each from the ``window - 1`` rows before it.

        Rows with less history in their segment are forecast from a history padded with the
        segment's first row (:func:`pad_history`); no row is dropped.
        """
        return self._forecast_errors(x, self.window_errors, ())

    def score_features(self, x: Segments) -> np.ndarray:
        """Per-feature forecast error of every row, from the same windows as :meth:`score`."""
        return self._forecast_errors(x, self.window_feature_errors, (x.n_features,))

    def _forecast_errors(
        self,
        x: Segments,
        window_errors: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        shape: tuple[int, ...],
    ) -> np.ndarray:
        """The last step of ``window_errors`` of the window ending at each row.

        ``shape`` is that last step's shape: ``()`` for the score, ``(features,)`` per feature.
        """
        self._check_fitted()
        self._check_features(x)
        config = self.config
        device = resolve_device(config.device)
        module = self.module_.to(device).eval()
        padded, keep = pad_history(x, config.window - 1)
        source = WindowSource(padded, config.window, 1, device)
        errors = np.full((padded.n_rows, *shape), np.nan)
        with torch.inference_mode(), autocast(device, config.precision):
            for begin in range(0, len(source), config.score_batch_size):
                starts = source.starts[begin : begin + config.score_batch_size]
                batch = window_errors(module, source.batch(starts))[:, -1]
                errors[starts.cpu().numpy() + config.window - 1] = batch.float().cpu().numpy()
        return errors[keep]
