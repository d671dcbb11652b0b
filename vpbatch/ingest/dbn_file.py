"""Opening a DBN file we can trust: it exists, is complete, is DBN, has the expected schema.

Every problem is a one-line :class:`~vpbatch.errors.InputError` naming the file. The zstd
frame walk finds a file cut short, which zstandard (and so databento) would read silently up
to its last complete block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import databento as db
import zstandard
from databento.common.error import BentoError, BentoWarning
from databento_dbn import DBNError

from vpbatch.book.dtypes import MBO_DTYPE
from vpbatch.errors import InputError, one_line
from vpbatch.ingest.input_digest import HashingFileSource

#: Databento's undefined timestamp (``UINT64_MAX``).
UNDEF_TIMESTAMP: Final = 2**64 - 1
_ZSTD_MAGIC: Final = 0xFD2FB528
_ZSTD_SKIPPABLE_MASK: Final = 0xFFFFFFF0
_ZSTD_SKIPPABLE_MAGIC: Final = 0x184D2A50
#: Names shown in an error before '… and N more'.
_MAX_LISTED: Final = 20
#: Errors the databento / zstandard stack raises on undecodable input.
DECODE_ERRORS: Final = (BentoError, BentoWarning, DBNError, zstandard.ZstdError, ValueError,
                        EOFError)


@dataclass(frozen=True)
class FileMetadata:
    """What a DBN file's header says about it.

    ``start`` / ``end`` are UTC nanoseconds (``end`` is None when undefined).
    """

    dataset: str
    schema: str
    version: int
    start: int
    end: int | None
    symbols: tuple[str, ...]
    stype_in: str | None
    stype_out: str
    limit: int | None
    compressed: bool
    size_bytes: int


def listing(items: list[str]) -> str:
    """Up to 20 names for an error message, then how many more."""
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", … and {len(items) - _MAX_LISTED} more"
    return shown


def _missing_file_message(path: Path) -> str:
    parent = path.parent
    if not parent.is_dir():
        return f"{path}: no such file (folder {parent} does not exist)"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in parent.iterdir())
    have = listing(names) if names else "it is empty"
    return f"{path}: no such file (in {parent}: {have})"


def _check_zstd_complete(path: Path, fh: BinaryIO, size: int) -> None:
    """Walk the zstd frame and block headers (no decompression) to the end of the file.

    A file cut anywhere inside a frame ends before the frame's last block (or its
    checksum) and is reported as truncated. zstandard's stream reader, and so databento,
    would otherwise stop silently at the last complete block.
    """
    pos = 0
    while pos < size:
        fh.seek(pos)
        head = fh.read(4)
        if len(head) < 4:
            raise InputError(f"{path.name}: truncated zstd data at byte {pos} of {size}")
        magic = int.from_bytes(head, "little")
        if magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE_MAGIC:
            length = fh.read(4)
            if len(length) < 4:
                raise InputError(f"{path.name}: truncated zstd data at byte {pos} of {size}")
            pos += 8 + int.from_bytes(length, "little")
            continue
        if magic != _ZSTD_MAGIC:
            raise InputError(f"{path.name}: corrupt zstd data at byte {pos} of {size} "
                             f"(no zstd frame starts there)")
        descriptor = fh.read(1)
        if not descriptor:
            raise InputError(f"{path.name}: truncated zstd data at byte {pos} of {size}")
        fhd = descriptor[0]
        single_segment = (fhd >> 5) & 1
        pos += 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3]
        pos += (single_segment, 2, 4, 8)[fhd >> 6]
        while True:
            fh.seek(pos)
            block = fh.read(3)
            if len(block) < 3:
                raise InputError(f"{path.name}: truncated: the zstd stream ends at byte {size} "
                                 f"inside a frame (the file was cut short)")
            header = int.from_bytes(block, "little")
            block_type = (header >> 1) & 3
            if block_type == 3:
                raise InputError(f"{path.name}: corrupt zstd data at byte {pos} of {size} "
                                 f"(reserved block type)")
            pos += 3 + (1 if block_type == 1 else header >> 3)
            if header & 1:
                break
        pos += 4 if (fhd >> 2) & 1 else 0
        if pos > size:
            raise InputError(f"{path.name}: truncated: the zstd stream ends at byte {size} "
                             f"inside a frame (the file was cut short)")


def _check_dbn_complete(path: Path, fh: BinaryIO, size: int, record_size: int) -> None:
    """An uncompressed DBN file holds whole records after its metadata."""
    fh.seek(4)
    header = fh.read(4)
    body = size - 8 - int.from_bytes(header, "little")
    if len(header) < 4 or body < 0:
        raise InputError(f"{path.name}: truncated: the file ends inside its DBN metadata")
    if body % record_size:
        raise InputError(f"{path.name}: truncated: {body % record_size} bytes of an incomplete "
                         f"record at the end (file size {size})")


def open_validated(path: Path, expected_schema: str
                   ) -> tuple[db.DBNStore, FileMetadata, HashingFileSource]:
    """Open ``path`` with databento after checking it exists, is complete and has the schema."""
    path = Path(path)
    if not path.exists():
        raise InputError(_missing_file_message(path)) from None
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a .dbn or .dbn.zst file") from None
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path.name}: empty file (0 bytes)") from None
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            compressed = int.from_bytes(head, "little") == _ZSTD_MAGIC
            if compressed:
                _check_zstd_complete(path, fh, size)
            elif head[:3] != b"DBN":
                raise InputError(f"{path.name}: not a DBN file (neither zstd-compressed nor "
                                 f"starting with a DBN header)")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = HashingFileSource(path)
        store = db.DBNStore(data)
    except (*DECODE_ERRORS, OSError) as exc:
        raise InputError(f"{path.name}: not a readable DBN file ({one_line(exc)})") from None
    meta = store.metadata
    schema = "mixed" if meta.schema is None else str(meta.schema)
    if schema not in (expected_schema, "mixed"):
        raise InputError(f"{path.name}: schema is {schema}, expected {expected_schema}") from None
    if meta.ts_out:
        raise InputError(f"{path.name}: records carry ts_out (a live-gateway capture); "
                         f"not supported") from None
    if not compressed and expected_schema == "mbo" and schema == "mbo":
        with path.open("rb") as fh:
            _check_dbn_complete(path, fh, size, MBO_DTYPE.itemsize)
    end = None if meta.end in (None, UNDEF_TIMESTAMP) else int(meta.end)
    info = FileMetadata(
        dataset=str(meta.dataset),
        schema=schema,
        version=int(meta.version),
        start=int(meta.start),
        end=end,
        symbols=tuple(str(s) for s in meta.symbols),
        stype_in=None if meta.stype_in is None else str(meta.stype_in),
        stype_out=str(meta.stype_out),
        limit=int(meta.limit) if meta.limit else None,
        compressed=compressed,
        size_bytes=size,
    )
    return store, info, data
