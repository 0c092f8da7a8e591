"""Producing the next items of a stream in a background thread while the caller works.

Daily scoring alternates reading a chunk of entities (Parquet and spill-file I/O, pandas) with
scoring it (the model). Reading the next chunk while the model runs on this one keeps the
device, and the cores the model leaves idle, busy; the queue holds at most ``depth`` chunks, so
memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

Item = TypeVar("Item")
_POLL_SECONDS = 0.1
_END = object()


# Complexity counts the producer thread's two short closures in (C901 below).
def read_ahead(items: Iterable[Item], depth: int = 1) -> Generator[Item, None, None]:  # noqa: C901
    """Yield ``items`` in order while a thread produces up to ``depth`` of them ahead.

    An exception raised while producing is raised here, at the item it replaced. Closing the
    returned generator early (``break``, an exception in the caller) stops the thread and
    closes ``items`` there, so its own cleanup runs before this generator's close returns.
    """
    if depth < 1:
        raise ValueError(f"read-ahead depth must be positive, got {depth}")
    buffer: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def offer(entry: tuple[bool, object]) -> bool:
        while not stopped.is_set():
            try:
                buffer.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not offer((True, item)):
                    return
            offer((True, _END))
        except BaseException as error:  # handed to the consumer, who raises it
            offer((False, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="tsad-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            produced, item = buffer.get()
            if not produced:
                raise item  # type: ignore[misc]
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stopped.set()
        producer.join()
