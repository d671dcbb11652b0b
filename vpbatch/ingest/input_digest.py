"""The sha256 of an input file, computed from the bytes the reader already reads.

A build reads its input once; hashing it again for the manifest or the book cache would be
a second full pass (seconds on a multi-GB day). ``HashingFileSource`` is the file source the
reader opens the file with: every byte the decoder reads goes through one sha256, once and
in file order (re-reads from the start are skipped, a forward jump hashes the skipped bytes
with ``pread``). ``sha256()`` hashes whatever the reader never
reached (the tail after ``--end-time``) and returns the digest of the whole file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Final

_BLOCK: Final = 1 << 20


class HashingFile:
    """A read-only binary file whose reads feed a shared :class:`_Progress` hash."""

    def __init__(self, path: Path, progress: _Progress) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close() (databento's reader)
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        pos = self._fh.tell()
        data = self._fh.read(size)
        self._progress.feed(self._fh.fileno(), pos, data)
        return data

    def readinto(self, buffer: Any) -> int:
        pos = self._fh.tell()
        n = self._fh.readinto(buffer)
        self._progress.feed(self._fh.fileno(), pos, memoryview(buffer)[:n].tobytes())
        return n

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __enter__(self) -> HashingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Progress:
    """sha256 over the file's bytes [0, done): every byte once, in order."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.done = 0

    def feed(self, fd: int, pos: int, data: bytes) -> None:
        end = pos + len(data)
        if end <= self.done:
            return  # a re-read (databento rewinds to the start for each pass)
        if pos > self.done:  # a forward jump: hash the bytes skipped over first
            self._hash_range(fd, self.done, pos)
        self.digest.update(data[self.done - pos:] if pos < self.done else data)
        self.done = end

    def _hash_range(self, fd: int, start: int, stop: int) -> None:
        while start < stop:
            block = os.pread(fd, min(_BLOCK, stop - start), start)
            if not block:
                break
            self.digest.update(block)
            start += len(block)
        self.done = start


class HashingFileSource:
    """A file source in the shape of databento's ``FileDataSource``, hashing what it reads."""

    def __init__(self, source: Path) -> None:
        self.path = Path(source)
        self.name = self.path.name
        self._progress = _Progress()
        self._file: HashingFile | None = None

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size

    @property
    def reader(self) -> HashingFile:
        if self._file is None or self._file.closed:
            self._file = HashingFile(self.path, self._progress)
        self._file.seek(0)
        return self._file

    def sha256(self) -> str:
        """Hex sha256 of the whole file (reads only the part the decoder never reached)."""
        size = self.path.stat().st_size
        if self._progress.done < size:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                self._progress._hash_range(fd, self._progress.done, size)
            finally:
                os.close(fd)
        return self._progress.digest.hexdigest()

    @property
    def bytes_hashed_while_reading(self) -> int:
        """How far the decoder's own reads carried the hash (for tests and diagnostics)."""
        return self._progress.done
