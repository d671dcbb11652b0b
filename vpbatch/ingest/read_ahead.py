"""Read ahead: run an iterator in a thread of its own, a bounded number of items ahead.

A build reads and decodes its input (zstd, DBN, the input's sha256) on the same thread that
runs the engine; with the engine busy on one core and the Parquet writer on the other,
decoding was a fifth of the engine thread's time. Decoding the next chunk while the engine
works on this one takes it off that thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeVar

_T = TypeVar("_T")
#: How often a blocked producer looks whether the consumer has gone (seconds).
_POLL: Final = 0.05


def read_ahead(items: Iterable[_T], depth: int = 1, name: str = "vpbatch-read-ahead",
               meanwhile: Callable[[], object] | None = None) -> Iterator[_T]:
    """Yield ``items`` in order while a thread produces up to ``depth`` items ahead.

    ``meanwhile`` runs here once the thread has started, before the first item is awaited:
    a build loads its compiled kernels while its first chunk is decoded.

    An exception of the producer is raised here, at the item where it happened. Closing
    this generator (or leaving it early) stops the thread before it returns: it finishes
    at most the item it is producing, and closes ``items``.
    """
    slots: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:
            put((False, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        if meanwhile is not None:
            meanwhile()
        while True:
            ok, item = slots.get()
            if ok:
                yield item  # type: ignore[misc]
            elif item is None:
                return
            else:
                assert isinstance(item, BaseException)
                raise item
    finally:
        stop.set()
        thread.join()
