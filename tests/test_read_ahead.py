"""Read-ahead: the stream's items in order, its errors where they happened, and a clean stop."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pipeline.read_ahead import read_ahead


def test_items_arrive_in_order_and_complete() -> None:
    assert list(read_ahead(range(100), depth=3)) == list(range(100))


def test_a_producing_error_is_raised_at_the_item_it_replaced() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    received = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(failing()):
            received.append(item)
    assert received == [1, 2]


def test_stopping_early_closes_the_source_and_ends_the_thread() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            number = 0
            while True:
                yield number
                number += 1
        finally:
            closed.set()

    stream = read_ahead(endless(), depth=2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed.is_set()
    assert not any(thread.name == "tsad-read-ahead" for thread in threading.enumerate())


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead([1], depth=0))
