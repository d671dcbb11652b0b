"""The live event list on disk: a DBN file of self-contained zstd frames, flushed often.

Each flush compresses what arrived since the last one into its own zstd frame and writes it
with one ``write``: a process killed at any moment leaves a file that decodes up to its last
flush (every frame is whole, and frames end on an event's last record), so ``vpbatch build
--path`` reads it. The file grows under ``<name>.part`` and is renamed into place when the
session ends. A flush reaches the page cache, which survives the process; it is synced to
disk at the end (a power cut may lose the last seconds, as with any log).
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import Final

import databento_dbn as dbn
import zstandard

from vpbatch.errors import OutputError
from vpbatch.store.files import file_sha256
from vpbatch.store.partitions import InputFile

#: Seconds between two flushes (SPEC §14: at least every second).
FLUSH_SECONDS: Final = 0.25
#: Suffix of a recording being written.
PART_SUFFIX: Final = ".part"
DBN_VERSION: Final = 3
_ZSTD_LEVEL: Final = 1


def recording_metadata(dataset: str, symbol: str, start_ns: int) -> bytes:
    """DBN v3 metadata as the live gateway sends it (no mappings table: the symbol mapping
    records in the stream carry the instrument id)."""
    meta = dbn.Metadata(dataset=dataset, start=start_ns, stype_in=dbn.SType("raw_symbol"),
                        stype_out=dbn.SType("instrument_id"), schema=dbn.Schema("mbo"),
                        symbols=[symbol], partial=[], not_found=[], mappings=[], end=None,
                        version=DBN_VERSION)
    return bytes(meta.encode())


class Recorder:
    """Appends records (raw DBN bytes, whole events) to ``path`` + ``.part`` on a thread.

    ``append`` is cheap and thread-safe (the connection's thread calls it for every event);
    a writer thread turns what is queued into one zstd frame every :data:`FLUSH_SECONDS`.
    """

    def __init__(self, path: Path, metadata: bytes,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + PART_SUFFIX)
        self._queue: collections.deque[bytes] = collections.deque()
        self._flush_seconds = flush_seconds
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.bytes_written = 0
        self.frames = 0
        try:
            self.part.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.part}: cannot create the recording: "
                              f"{exc.strerror or exc}") from None
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._write_frame(metadata)
        self._thread = threading.Thread(target=self._run, name=f"vpbatch-record-{path.name}",
                                        daemon=True)
        self._thread.start()

    def append(self, data: bytes) -> None:
        """Queue whole records (an event, or one system/mapping record)."""
        self._queue.append(data)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            try:
                self.flush()
            except BaseException as exc:  # reported by close()
                self._error = exc
                return

    def flush(self) -> None:
        """Write what is queued as one frame (called by the thread, and at the end)."""
        items = []
        queue = self._queue
        while queue:
            items.append(queue.popleft())
        if items:
            self._write_frame(b"".join(items))

    def _write_frame(self, data: bytes) -> None:
        frame = self._compressor.compress(data)
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise OutputError(f"{self.part}: cannot write the recording: "
                              f"{exc.strerror or exc}") from None
        self.bytes_written += len(frame)
        self.frames += 1

    def close(self) -> InputFile:
        """Flush the rest, sync, rename into place; the recording as a build input."""
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.flush()
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self.part, self.path)
        return InputFile(str(self.path.resolve()), self.path.stat().st_size,
                         file_sha256(self.path))

    def abandon(self) -> None:
        """After a failure: flush what arrived and keep the ``.part`` file (it is data)."""
        self._stop.set()
        self._thread.join()
        try:
            self.flush()
        finally:
            os.close(self._fd)
