"""The ``precision`` setting: which CPUs ``auto`` gives bf16, and that bf16 keeps the detectors'
API and their scores' ranking.

The choice is a pure function of the device and the CPU's feature flags, so every kind of CPU
is tested here whatever this machine is; fitting in bf16 works on any CPU (torch emulates it
where the hardware lacks it), so the detector tests run everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from scipy.stats import spearmanr

from pipeline.detectors.precision import (
    native_bf16,
    read_cpu_flags,
    resolve_precision,
)
from pipeline.detectors.registry import load_detector, make_detector

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
ZEN4 = {"avx2", "avx512f", "avx512_bf16"}
SKYLAKE = {"avx2", "avx512f", "avx512bw"}
OLDER = {"sse4_2", "avx2"}


@pytest.mark.parametrize(
    ("flags", "native"), [(SAPPHIRE_RAPIDS, True), (ZEN4, True), (SKYLAKE, False), (OLDER, False)]
)
def test_native_bf16_needs_avx512_bf16_or_amx(flags, native):
    assert native_bf16(flags) is native
    assert native_bf16({"amx_bf16"}) is True


def test_cpu_flags_are_read_from_cpuinfo_and_absent_without_it(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n"
    )
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert read_cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("precision", "device", "flags", "resolved"),
    [
        ("auto", CPU, ZEN4, "bf16"),
        ("auto", CPU, SAPPHIRE_RAPIDS, "bf16"),
        ("auto", CPU, SKYLAKE, "fp32"),  # emulated bf16 would be slower: float32
        ("auto", CPU, set(), "fp32"),  # flags unknown (no /proc/cpuinfo): float32
        ("auto", CUDA, set(), "bf16"),
        ("fp32", CPU, ZEN4, "fp32"),
        ("fp32", CUDA, set(), "fp32"),
        ("bf16", CPU, OLDER, "bf16"),  # asked for explicitly: honoured, emulated
    ],
)
def test_auto_takes_bf16_only_where_the_device_has_it(precision, device, flags, resolved):
    assert resolve_precision(precision, device, flags) == resolved


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", CPU, set())
    with pytest.raises(pydantic.ValidationError, match="precision"):
        make_detector("dense_ae", precision="fp16")


@pytest.mark.parametrize("name", ["anomaly_transformer", "vae", "lstm_ae"])
def test_bf16_keeps_the_api_and_ranks_as_fp32_does(name, train_segments, labelled_test, tmp_path):
    """Same calls, same shapes, finite scores; bf16 changes the numbers beyond float
    tolerance but not which steps stand out."""
    test, _ = labelled_test
    common = {"window": 16, "epochs": 1, "device": "cpu", "seed": 0}
    scores, features = {}, {}
    for precision in ("fp32", "bf16"):
        detector = make_detector(name, precision=precision, **common).fit(train_segments)
        assert detector.history_.precision == precision
        scores[precision] = detector.score(test)
        features[precision] = detector.score_features(test)
        assert np.isfinite(scores[precision]).all() and np.isfinite(features[precision]).all()
    assert scores["bf16"].shape == scores["fp32"].shape == (test.n_rows,)
    assert features["bf16"].shape == features["fp32"].shape == (test.n_rows, test.n_features)
    assert spearmanr(scores["fp32"], scores["bf16"]).statistic > 0.9
    reloaded = load_detector(detector.save(tmp_path / name))
    assert reloaded.config.precision == "bf16"
    np.testing.assert_allclose(reloaded.score(test), scores["bf16"], rtol=1e-5, atol=1e-6)
    # A score does not depend on the batch it was scored in, up to bf16's rounding.
    detector.config = detector.config.model_copy(update={"score_batch_size": 7})
    np.testing.assert_allclose(detector.score(test), scores["bf16"], rtol=2e-2, atol=1e-6)


def test_compile_trains_through_torch_compile_to_the_same_weights(train_segments):
    """``compile: true`` changes how the steps run, not what they compute (float32 here)."""
    short = train_segments.split_tail(0.9)[0]
    common = {"window": 8, "epochs": 1, "device": "cpu", "precision": "fp32", "hidden": [8]}
    plain = make_detector("dense_ae", **common).fit(short)
    compiled = make_detector("dense_ae", compile=True, **common).fit(short)
    for key, weight in plain.module_.state_dict().items():
        torch.testing.assert_close(compiled.module_.state_dict()[key], weight, rtol=1e-4, atol=1e-5)
