"""Series of a ``tsad bench`` run in parallel worker processes, results in series order.

Each series is an independent unit (its scaler, fits and metrics see nothing of the others), so
workers can take one each. Every worker gets its share of the cores as torch threads: ``N``
workers each spinning all of them would oversubscribe the machine and slow every fit down.
Results come back in the order the series were given, so the CSV a parallel run writes has the
rows, and the order, of a serial one.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Torch threads for each of ``jobs`` workers: the cores divided evenly, at least one."""
    return max(1, (cores or os.cpu_count() or 1) // jobs)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def ordered_map(
    work: Callable[[Item], Result], items: Iterable[Item], jobs: int
) -> Iterator[Result]:
    """``work`` of each item, in the items' order; in ``jobs`` fresh processes when above 1.

    Workers are spawned, not forked: a fork of a process whose torch thread pool has started
    can hang. ``work`` and the items must be picklable (a module-level function, plain data).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1:
        yield from map(work, items)
        return
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_limit_threads,
        initargs=(threads_per_job(jobs),),
    ) as pool:
        yield from pool.map(work, items)
