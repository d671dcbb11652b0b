"""Where a Parquet file's bytes go while a build writes it, hashed on the way.

The manifest needs each file's sha256 and size; neither output reads the file back.

* :class:`HashedFile`: a local file (folder lake), hashed from the page cache and synced to
  disk behind the writer.
* :class:`HashedUpload`: an object (object-store lake), streamed as a multipart upload and
  hashed as it passes; the object exists only once :meth:`HashedUpload.close` completes the
  upload, and :meth:`HashedUpload.abort` drops it.

Both offer ``file`` (what ``pyarrow.parquet.ParquetWriter`` writes to), ``catch_up()``
(after each row group), ``close() -> sha256``, ``abort()`` and ``size``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import IO, Final

import pyarrow as pa

from vpbatch.store.fs import Lake, discard_output


class HashedFile:
    """A Parquet file being written, hashed and synced to disk behind the writer.

    The manifest needs the file's sha256 and the commit needs it on disk. Done at the end,
    both were a second pass: reading 800 MB back and waiting for all of it to reach the
    disk (~2 s of a 30 s build). Here each row group's bytes are hashed from the page cache
    right after they are written, and flushed to disk every ``SYNC_BYTES``, on the writer
    thread, while the engine computes. Parquet only appends, so hashed bytes never change.
    """

    SYNC_BYTES: Final = 64 << 20
    READ_BYTES: Final = 8 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = pa.OSFile(str(path), mode="wb")
        self._read_fd = os.open(path, os.O_RDONLY)
        self._digest = hashlib.sha256()
        self._hashed = 0
        self._synced = 0

    @property
    def size(self) -> int:
        """Bytes written and hashed so far (the file's size after :meth:`close`)."""
        return self._hashed

    def catch_up(self, sync: bool = False) -> None:
        """Hash what was written since the last call; sync when enough is pending."""
        end = self.file.tell()
        while self._hashed < end:
            data = os.pread(self._read_fd, min(self.READ_BYTES, end - self._hashed),
                            self._hashed)
            if not data:
                raise OSError(f"{self.path}: file shorter than written ({self._hashed} bytes)")
            self._digest.update(data)
            self._hashed += len(data)
        if sync or end - self._synced >= self.SYNC_BYTES:
            os.fdatasync(self.file.fileno())
            self._synced = end

    def close(self) -> str:
        try:
            self.catch_up(sync=True)
            os.fsync(self.file.fileno())
        finally:
            self.file.close()
            os.close(self._read_fd)
        return self._digest.hexdigest()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(OSError):
            os.close(self._read_fd)


class _Tee:
    """The Python file pyarrow writes to: bytes are hashed, counted and passed on (an error of
    the store becomes a one-line StoreError naming the object)."""

    def __init__(self, out: IO[bytes], lake: Lake, location: str) -> None:
        self.out = out
        self.lake = lake
        self.location = location
        self.digest = hashlib.sha256()
        self.written = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        with self.lake.errors(self.location):
            self.out.write(data)
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:  # pyarrow closes its wrapper; the upload ends in HashedUpload
        self.closed = True


class HashedUpload:
    """A Parquet file streamed to an object store (multipart upload), hashed as it passes."""

    def __init__(self, lake: Lake, location: str) -> None:
        self.location = location
        self._lake = lake
        self._out = lake.open_output(location)
        self._tee = _Tee(self._out, lake, location)
        self.file = pa.PythonFile(self._tee, mode="w")

    @property
    def size(self) -> int:
        return self._tee.written

    def catch_up(self, sync: bool = False) -> None:
        """Nothing to do: bytes are hashed as they are written, parts uploaded when full."""

    def close(self) -> str:
        """Complete the upload (the object appears whole); its sha256."""
        with contextlib.suppress(Exception):
            self.file.close()
        with self._lake.errors(self.location):
            self._out.close()
        return self._tee.digest.hexdigest()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        discard_output(self._out)
