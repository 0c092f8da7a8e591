"""Which floating-point precision torch work runs in: ``auto``, ``fp32`` or ``bf16``.

bf16 autocast runs matrix products in bfloat16 with float32 accumulation. It pays where the
hardware has bf16 arithmetic: CUDA tensor cores, and x86 CPUs with AVX512-BF16 or AMX (oneDNN
uses them). Elsewhere torch emulates bf16 on the CPU, slower than float32, so ``auto`` takes
bf16 only where it is native. Whether a CPU has it is read from the kernel's CPU flags at run
time; :func:`native_bf16` is a pure function of those flags so that the choice can be tested
for any CPU on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

from pipeline.choices import PRECISIONS

log = logging.getLogger(__name__)

Resolved = Literal["fp32", "bf16"]

# x86 flags (Linux /proc/cpuinfo) of native bf16 arithmetic that oneDNN's kernels use.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def native_bf16(flags: Iterable[str]) -> bool:
    """Whether a CPU with these feature flags computes bf16 natively."""
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def read_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo``; empty where there is no such file
    (macOS, Windows), so ``auto`` stays in float32 there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def this_cpu_flags() -> frozenset[str]:
    """This machine's CPU flags, read once per process."""
    return read_cpu_flags()


def resolve_precision(
    precision: str, device: torch.device, cpu_flags: Iterable[str] | None = None
) -> Resolved:
    """``fp32`` or ``bf16`` for ``precision`` on ``device``.

    ``auto`` is bf16 on CUDA and on CPUs whose ``cpu_flags`` (default: this machine's) show
    native bf16, float32 elsewhere. An explicit ``bf16`` is honoured anywhere; on a CPU
    without native bf16 torch emulates it, which is slower, so that is logged.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    flags = this_cpu_flags() if cpu_flags is None else cpu_flags
    on_cpu = device.type == "cpu"
    if precision == "auto":
        return "bf16" if not on_cpu or native_bf16(flags) else "fp32"
    if precision == "bf16" and on_cpu and not native_bf16(flags):
        log.warning("bf16 on a CPU without native bf16 is emulated and slower than fp32")
    return "bf16" if precision == "bf16" else "fp32"


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is narrower (bf16 under autocast), else unchanged.

    For the terms bf16 would lose (softmax, log-likelihoods, losses): CPU autocast, unlike
    CUDA's, leaves softmax and exp in bf16. Wider inputs (float64 in gradient checks) stay wide.
    """
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` where ``precision`` resolves to bf16; float32 otherwise.

    bf16 keeps float32's exponent range, so no loss scaling is needed.
    """
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
