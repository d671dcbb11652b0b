"""Writing a synthetic day: the kernel's chunks streamed into one (zstd) DBN file.

The simulation streams ``CHUNK_RECORDS``-record chunks to a writer thread (zstd and the
kernel both release the GIL), so memory stays bounded whatever the record count. The file
goes through :func:`vpbatch.store.files.atomic_path`: a reader never sees a half-written day.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import zstandard

from vpbatch.errors import OutputError
from vpbatch.store.files import atomic_path
from vpbatch.synth.dbn import record_buffer
from vpbatch.synth.state import MAX_GROUP

#: Records per kernel call (each chunk buffer holds MAX_GROUP more: a group never straddles).
CHUNK_RECORDS: Final = 1_000_000
#: Chunk buffers in flight between the kernel and the writer thread.
_BUFFERS: Final = 3


class Written(NamedTuple):
    """What :func:`write_day` wrote: records, per-action counts (index = action byte) and
    the ``ts_event`` span of the live part (0 if none)."""

    records: int
    counts: np.ndarray
    first_ts_event: int
    last_ts_event: int


class _Sink:
    """Writes chunks on a background thread (zstd releases the GIL, the kernel too)."""

    def __init__(self, fh: Any, compress: bool) -> None:
        self._fh = fh
        self._zw = (zstandard.ZstdCompressor(level=3).stream_writer(fh, closefd=False)
                    if compress else None)
        self._q: queue.Queue[tuple[np.ndarray, np.ndarray | None] | None] = queue.Queue(1)
        self._done: queue.Queue[np.ndarray] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="vpbatch-synth-writer",
                                        daemon=True)
        self._thread.start()

    def _write(self, data: Any) -> None:
        if self._zw is not None:
            self._zw.write(data)
        else:
            self._fh.write(data)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            data, owner = item
            try:
                if self._error is None:
                    self._write(data.view(np.uint8).data)
            except BaseException as exc:  # re-raised on the calling thread
                self._error = exc
            if owner is not None:
                self._done.put(owner)

    def put(self, data: np.ndarray, owner: np.ndarray | None = None) -> None:
        """Queue a contiguous array for writing, in order; ``owner`` comes back via recycle."""
        self._check()
        self._q.put((data, owner))

    def recycle(self) -> np.ndarray:
        """A buffer the writer has finished with (blocks until one is free)."""
        item = self._done.get()
        self._check()
        return item

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._check()
        if self._zw is not None:
            self._zw.flush(zstandard.FLUSH_FRAME)
            self._zw.close()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


def write_day(path: Path, header: bytes, snapshot: np.ndarray, records: int,
              run_chunk: Callable[[np.ndarray, int], int], instrument_id: int,
              publisher_id: int, progress: Callable[[int], None] | None = None) -> Written:
    """Write ``header`` (DBN metadata), ``snapshot``, then live chunks up to ``records`` records
    in all to ``path`` (zstd if ``*.zst``).

    ``run_chunk(buffer, max_records)`` fills a preset record buffer from the start and returns
    how many records it wrote; ``progress`` gets the records written after each chunk.
    Raises OutputError when the file cannot be written.
    """
    counts = np.bincount(snapshot["action"], minlength=256).astype(np.int64)
    first_ts = last_ts = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            sink = _Sink(fh, path.name.endswith(".zst"))
            try:
                sink.put(np.frombuffer(header, np.uint8))
                sink.put(snapshot)
                if progress is not None:
                    progress(len(snapshot))
                free = [record_buffer(CHUNK_RECORDS + MAX_GROUP, instrument_id, publisher_id)
                        for _ in range(_BUFFERS)]
                written = len(snapshot)
                while written < records:
                    buf = free.pop() if free else sink.recycle()
                    n = run_chunk(buf, CHUNK_RECORDS)
                    if n == 0:
                        raise RuntimeError("synth kernel made no progress")  # pragma: no cover
                    chunk = buf[:n]
                    counts += np.bincount(chunk["action"], minlength=256)
                    if first_ts == 0:
                        first_ts = int(chunk["ts_event"][0])
                    last_ts = int(chunk["ts_event"][-1])
                    sink.put(chunk, buf)
                    written += n
                    if progress is not None:
                        progress(n)
            finally:
                sink.close()
    except OSError as exc:
        raise OutputError(f"{path}: cannot write synthetic MBO file: {exc}") from exc
    return Written(written, counts, first_ts, last_ts)
