"""read_ahead: a build's input is decoded in a thread, in order, and stops with its consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from vpbatch.ingest.read_ahead import read_ahead


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "test-ahead")


def test_read_ahead_yields_every_item_in_order() -> None:
    assert list(read_ahead(iter(range(1000)), name="test-ahead")) == list(range(1000))
    assert _threads() == 0


def test_read_ahead_raises_the_producers_error_where_it_happened() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("corrupt chunk 3")

    got = []
    with pytest.raises(ValueError, match="corrupt chunk 3"):
        for item in read_ahead(items(), name="test-ahead"):
            got.append(item)
    assert got == [1, 2]
    assert _threads() == 0


def test_leaving_early_stops_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()
    produced = []

    def items() -> Iterator[int]:
        try:
            for i in range(10**9):
                produced.append(i)
                time.sleep(0.001)
                yield i
        finally:
            closed.set()

    stream = read_ahead(items(), depth=2, name="test-ahead")
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert _threads() == 0
    assert closed.is_set()
    assert len(produced) <= 3 + 2 + 1  # consumed + queued + the one in production


def test_meanwhile_runs_once_while_the_first_item_is_produced() -> None:
    """A build loads its kernels while the reader decodes the first chunk: both at once."""
    started, ran = threading.Event(), threading.Event()
    calls = []

    def items() -> Iterator[bool]:
        started.set()
        yield ran.wait(5)  # True only if meanwhile ran before the first item was awaited
        yield True

    def meanwhile() -> None:
        calls.append(started.wait(5))  # the producer is running while this runs
        ran.set()

    assert list(read_ahead(items(), name="test-ahead", meanwhile=meanwhile)) == [True, True]
    assert calls == [True]
    assert _threads() == 0


def test_meanwhile_error_stops_the_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            closed.set()

    def meanwhile() -> None:
        raise RuntimeError("kernels failed to load")

    with pytest.raises(RuntimeError, match="kernels failed to load"):
        next(read_ahead(items(), name="test-ahead", meanwhile=meanwhile))
    assert _threads() == 0
    assert closed.is_set()
