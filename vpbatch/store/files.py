"""Small filesystem helpers: atomic writes, fsync, hashing, canonical JSON.

Nothing here knows about tables or partitions; :mod:`vpbatch.store.writer`,
:mod:`vpbatch.build.verify`, the download, the cache, the generator and the plot/report writers
share these so every output file is written the same crash-safe way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from vpbatch.errors import OutputError

_HASH_CHUNK: Final = 1 << 20


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A sibling temp path to write ``path`` through: fsynced and renamed onto ``path`` when
    the block succeeds, removed when it raises, so ``path`` is never seen half-written.

    For writers that need a file name (a streaming download, ``numpy.savez``, a DBN encoder);
    ``suffix`` lets a cleaner recognise its own leftovers after a crash.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a sibling temp file, fsync and rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_output(path: Path, payload: bytes) -> None:
    """Write a file the user named (a picture, a report): parents created, written atomically.

    Raises
    ------
    OutputError
        When the file cannot be written; the message names it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, payload)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {os_reason(exc)}") from None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def rmtree(path: Path) -> None:
    """Remove a tree, ignoring errors (cleanup paths must not raise)."""
    shutil.rmtree(path, ignore_errors=True)


def os_reason(exc: BaseException) -> str:
    """The short reason of an error for a one-line message (``strerror`` of an OSError)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys; the form hashed into a build digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)
