"""The training loop every torch detector shares.

One loop owns the concerns that are easy to get subtly wrong and identical across models:
device choice (``auto|cpu|cuda``), precision (bf16 autocast where the device has it, see
:mod:`pipeline.detectors.precision`), optional ``torch.compile``, seeding, shuffled mini-batches of
windows sliced on the device from one resident series, early stopping on a held-out tail of the
training data (never test data), per-epoch checkpoints that make an interrupted run resumable,
and an optional progress bar. A detector supplies only its module and its loss.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn

from pipeline import crash_points
from pipeline.checks import NonFiniteScoreError
from pipeline.choices import DEVICES
from pipeline.data.windows import Segments, window_starts
from pipeline.detectors.precision import autocast, resolve_precision

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
EpochHook = Callable[[int], None]


def resolve_device(name: str) -> torch.device:
    """Map a :data:`~pipeline.choices.Device` to a torch device; CUDA without one is an error."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def adam(module: nn.Module, learning_rate: float) -> torch.optim.Adam:
    """Adam with its fused kernel where torch has one (CPU and CUDA, floating parameters).

    The fused step updates every parameter in one kernel instead of a dozen elementwise passes
    per tensor: the same update rule, several times faster on CPU for transformer-sized models.
    """
    parameters = list(module.parameters())
    fusable = all(
        param.is_floating_point() and param.device.type in {"cpu", "cuda"} for param in parameters
    )
    return torch.optim.Adam(parameters, lr=learning_rate, fused=fusable or None)


class WindowSource:
    """Windows of a device-resident series, sliced on the device.

    The series is copied to the device once; ``Tensor.unfold`` gives a view of every window,
    and a batch is one gather of the chosen starts, so no host-to-device copy happens per batch.
    """

    def __init__(self, segments: Segments, window: int, stride: int, device: torch.device) -> None:
        self.window = window
        self.series = torch.as_tensor(segments.values, dtype=torch.float32, device=device)
        starts = window_starts(segments.bounds, window, stride)
        if len(starts) == 0:
            raise ValueError(
                f"no segment is as long as the window ({window} steps): "
                f"longest is {int(segments.lengths.max())}"
            )
        self.starts = torch.as_tensor(starts, device=device)
        self._windows = self.series.unfold(0, window, 1)  # (n, features, window), a view

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, starts: torch.Tensor) -> torch.Tensor:
        """Windows starting at ``starts`` as a (batch, window, features) tensor."""
        return self._windows[starts].transpose(1, 2)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[torch.Tensor]:
        """Mini-batches in shuffled order when a generator is given, in order otherwise."""
        if generator is None:
            order = self.starts
        else:
            permutation = torch.randperm(len(self.starts), generator=generator)
            order = self.starts[permutation.to(self.starts.device)]
        for begin in range(0, len(order), batch_size):
            yield self.batch(order[begin : begin + batch_size])


@dataclass
class TrainingHistory:
    """Per-epoch losses and where the kept weights came from."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    precision: str = "fp32"


@dataclass
class Trainer:
    """Fits a module by minimising ``loss_fn`` over shuffled windows.

    ``checkpoint_dir`` receives ``last.pt`` after every epoch (module, optimiser, RNG and
    early-stopping state); with ``resume=True`` a run continues from it and, with the same seed,
    ends at the weights an uninterrupted run would reach. ``epoch_hook`` is called with the
    0-based epoch before each training epoch, so a schedule that depends on the epoch (a
    masking curriculum, say) is a function of it alone and survives a resume.
    ``precision`` (``auto|fp32|bf16``) sets the autocast of every forward pass; the one it
    resolved to is kept in the history. ``compile`` runs the training steps through
    ``torch.compile``; the held-out loss runs uncompiled (a second graph, for a pass a tenth
    the size, would cost more to compile than it saves), and the weights, checkpoints and
    early-stopping state stay those of ``module`` itself.
    """

    epochs: int
    batch_size: int
    learning_rate: float = 1e-3
    patience: int = 3
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = False
    epoch_hook: EpochHook | None = None
    model_name: str = "model"
    precision: str = "auto"
    compile: bool = False

    def fit(
        self,
        module: nn.Module,
        loss_fn: LossFn,
        train: WindowSource,
        valid: WindowSource | None = None,
    ) -> TrainingHistory:
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        module.to(self.device)
        optimizer = adam(module, self.learning_rate)
        history = TrainingHistory(precision=resolve_precision(self.precision, self.device))
        best_state = copy.deepcopy(module.state_dict())
        best_loss = math.inf
        start_epoch = 0
        if self.resume:
            restored = self._restore(module, optimizer, generator)
            if restored is not None:
                start_epoch, best_state, best_loss, history = restored
                history.precision = resolve_precision(self.precision, self.device)
        model = cast(nn.Module, torch.compile(module)) if self.compile else module
        bar = self._progress_bar(start_epoch)
        for epoch in range(start_epoch, self.epochs):
            if self.epoch_hook is not None:
                self.epoch_hook(epoch)
            module.train()
            train_loss = self._run_epoch(epoch, model, loss_fn, train, optimizer, generator)
            history.train_loss.append(train_loss)
            monitored = history.train_loss[-1]
            if valid is not None:
                monitored = self.evaluate(module, loss_fn, valid)
                history.valid_loss.append(monitored)
            self._require_finite_losses(epoch, history.train_loss[-1], monitored)
            if monitored < best_loss:
                best_loss, history.best_epoch = monitored, epoch + 1
                best_state = copy.deepcopy(module.state_dict())
            self._checkpoint(
                epoch + 1, module, optimizer, generator, best_state, best_loss, history
            )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", valid=f"{monitored:.4f}")
            if epoch + 1 - history.best_epoch >= self.patience:
                history.stopped_early = epoch + 1 < self.epochs
                break
        if bar is not None:
            bar.close()
        module.load_state_dict(best_state)
        module.eval()
        return history

    def _require_finite_losses(self, epoch: int, train_loss: float, monitored: float) -> None:
        """Stop at the first non-finite loss: the weights are already lost, and early stopping
        would silently keep an earlier epoch (NaN never compares lower)."""
        if not (math.isfinite(train_loss) and math.isfinite(monitored)):
            raise NonFiniteScoreError(
                f"{self.model_name} training diverged at epoch {epoch + 1}: loss {train_loss} "
                f"(early-stopping loss {monitored}); lower the learning rate or check the "
                "training data for extreme values"
            )

    def _run_epoch(
        self,
        epoch: int,
        module: nn.Module,
        loss_fn: LossFn,
        train: WindowSource,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> float:
        total = torch.zeros((), device=self.device)
        batches = 0
        for batch in train.batches(self.batch_size, generator):
            total += self.step(module, loss_fn, batch, optimizer)
            batches += 1
            if batches == 1:
                crash_points.reached(f"epoch:{epoch + 1}")
        return float(total) / max(batches, 1)  # one device sync per epoch, not per batch

    def step(
        self,
        module: nn.Module,
        loss_fn: LossFn,
        batch: torch.Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> torch.Tensor:
        """One optimiser step on ``batch``; returns the detached loss (no device sync)."""
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            loss = loss_fn(module, batch)
        loss.backward()
        optimizer.step()
        return loss.detach().float()

    @torch.inference_mode()
    def evaluate(self, module: nn.Module, loss_fn: LossFn, source: WindowSource) -> float:
        """Mean loss over ``source`` without gradients (the early-stopping signal)."""
        module.eval()
        total = torch.zeros((), device=self.device)
        weight = 0
        for batch in source.batches(self.batch_size):
            with autocast(self.device, self.precision):
                total += loss_fn(module, batch).float() * len(batch)
            weight += len(batch)
        return float(total) / max(weight, 1)

    def _progress_bar(self, start_epoch: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.epochs, initial=start_epoch, desc="training", unit="epoch")

    def _checkpoint(
        self,
        epoch: int,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        best_state: dict,
        best_loss: float,
        history: TrainingHistory,
    ) -> None:
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "epoch": epoch,
            "module": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_state": best_state,
            "best_loss": best_loss,
            "history": {
                "train_loss": history.train_loss,
                "valid_loss": history.valid_loss,
                "best_epoch": history.best_epoch,
            },
        }
        target = self.checkpoint_dir / "last.pt"
        temporary = target.with_suffix(".pt.tmp")
        torch.save(state, temporary)
        crash_points.reached(f"commit:{target.name}")
        temporary.replace(target)

    def _restore(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> tuple[int, dict, float, TrainingHistory] | None:
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / "last.pt"
        if path is None or not path.is_file():
            return None
        state = torch.load(path, map_location=self.device, weights_only=True)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        saved = state["history"]
        history = TrainingHistory(
            train_loss=list(saved["train_loss"]),
            valid_loss=list(saved["valid_loss"]),
            best_epoch=int(saved["best_epoch"]),
            resumed_from_epoch=int(state["epoch"]),
        )
        log.info("resuming training from epoch %d of %s", state["epoch"], path)
        return int(state["epoch"]), state["best_state"], float(state["best_loss"]), history
