"""The shared training loop: windows on the device, early stopping, seeding, resumable runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.data.windows import Segments
from pipeline.detectors.registry import make_detector
from pipeline.detectors.torch_base import TorchDetector
from pipeline.detectors.trainer import Trainer, WindowSource

# Dropout on, so a resumed run must also restore the random state to match.
TINY = {
    "window": 16,
    "epochs": 4,
    "batch_size": 32,
    "train_stride": 4,
    "patience": 10,
    "device": "cpu",
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 1,
    "dim_feedforward": 32,
    "dropout": 0.1,
}


def weights(detector: TorchDetector) -> dict[str, torch.Tensor]:
    return detector.module_.state_dict()


def assert_same_weights(left: TorchDetector, right: TorchDetector) -> None:
    a, b = weights(left), weights(right)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Interrupted(Exception):
    """Stands in for a killed worker."""


def interrupt_before_epoch(detector: TorchDetector, epoch: int) -> None:
    """Make ``detector.fit`` die as ``epoch`` (0-based) is about to start."""
    original = detector.start_epoch

    def start_epoch(current: int) -> None:
        if current == epoch:
            raise _Interrupted
        original(current)

    detector.start_epoch = start_epoch


@pytest.mark.parametrize("name", ["transformer_ae", "masked_transformer"])
def test_resumed_run_ends_at_the_uninterrupted_runs_weights(
    name: str, train_segments: Segments, tmp_path: Path
) -> None:
    """masked_transformer also checks that its epoch-driven mask curriculum resumes correctly."""
    whole = make_detector(name, **TINY).fit(train_segments)

    checkpoints = tmp_path / "checkpoints"
    interrupted = make_detector(name, **TINY)
    interrupt_before_epoch(interrupted, 2)
    with pytest.raises(_Interrupted):
        interrupted.fit(train_segments, checkpoint_dir=checkpoints)
    resumed = make_detector(name, **TINY).fit(
        train_segments, checkpoint_dir=checkpoints, resume=True
    )

    assert resumed.history_.resumed_from_epoch == 2
    assert resumed.history_.train_loss == whole.history_.train_loss
    assert resumed.history_.valid_loss == whole.history_.valid_loss
    assert_same_weights(resumed, whole)


def test_resume_without_a_checkpoint_starts_afresh(train_segments, tmp_path: Path) -> None:
    detector = make_detector("transformer_ae", **TINY | {"epochs": 1})
    detector.fit(train_segments, checkpoint_dir=tmp_path / "empty", resume=True)
    assert detector.history_.resumed_from_epoch == 0
    assert (tmp_path / "empty" / "last.pt").is_file()


def test_same_seed_same_weights_other_seed_other_weights(train_segments) -> None:
    """The seed covers the initial weights too, not just the batch order."""
    params = TINY | {"epochs": 1}
    first = make_detector("transformer_ae", **params).fit(train_segments)
    torch.rand(100)  # whatever the global random state was before fit must not matter
    second = make_detector("transformer_ae", **params).fit(train_segments)
    other = make_detector("transformer_ae", **params | {"seed": 1}).fit(train_segments)
    assert_same_weights(first, second)
    assert not torch.equal(weights(first)["head.weight"], weights(other)["head.weight"])


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))


def _stalled_validation(module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Training improves the bias; validation (eval mode) never improves."""
    if module.training:
        return (module.bias - 1.0) ** 2
    return torch.ones(())


def _source(rows: int = 64) -> WindowSource:
    values = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    return WindowSource(Segments.single(values), window=8, stride=1, device=torch.device("cpu"))


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience() -> None:
    trainer = Trainer(epochs=20, batch_size=16, patience=3)
    history = trainer.fit(_Constant(), _stalled_validation, _source(), valid=_source())
    assert history.best_epoch == 1
    assert history.stopped_early
    assert len(history.train_loss) == 1 + trainer.patience


def test_epoch_hook_sees_every_epoch_once_also_after_resume(tmp_path: Path) -> None:
    seen: list[int] = []
    common = {
        "batch_size": 16,
        "patience": 10,
        "checkpoint_dir": tmp_path,
        "epoch_hook": seen.append,
    }
    Trainer(epochs=2, **common).fit(_Constant(), _stalled_validation, _source())
    Trainer(epochs=5, resume=True, **common).fit(_Constant(), _stalled_validation, _source())
    assert seen == [0, 1, 2, 3, 4]


def test_window_source_slices_windows_inside_segments_without_copying() -> None:
    values = np.arange(30, dtype=np.float32).reshape(15, 2)
    segments = Segments(values, np.array([0, 9, 15]))
    source = WindowSource(segments, window=4, stride=2, device=torch.device("cpu"))
    starts = source.starts.numpy()
    assert list(starts) == [0, 2, 4, 5, 9, 11]  # each segment's last window aligned to its end
    batch = source.batch(source.starts)
    for start, window in zip(starts, batch.numpy(), strict=True):
        np.testing.assert_array_equal(window, values[start : start + 4])
    assert (
        source._windows.untyped_storage().data_ptr() == source.series.untyped_storage().data_ptr()
    )


def test_shuffled_batches_cover_every_window_once() -> None:
    source = _source()
    generator = torch.Generator().manual_seed(0)
    firsts = torch.cat([batch[:, 0, 0] for batch in source.batches(10, generator)])
    assert sorted(firsts.tolist()) == sorted(source.series[source.starts, 0].tolist())
