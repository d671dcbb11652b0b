"""Opening a DBN file we can trust: it exists, is complete, is DBN, has the expected schema.

Every problem is a one-line :class:`~vpbatch.errors.InputError` naming the file. The zstd
frame walk finds a file cut short, which zstandard (and so databento) would read silently up
to its last complete block.

The record walk (:func:`split_records`) cuts decoded DBN bytes into runs of MBO records and
steps over records of other types by their ``length`` header (SPEC §14 "Reading
recordings": live recordings and the client's ``add_stream`` files hold symbol mappings,
system and error messages between the MBO records). :class:`OtherRecords` tallies what was
stepped over and keeps the symbol mappings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, cast

import databento_dbn
import numpy as np
import zstandard
from databento_dbn import DBNError, Metadata, VersionUpgradePolicy

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
#: Errors the databento_dbn / zstandard stack raises on undecodable input.
DECODE_ERRORS: Final = (DBNError, zstandard.ZstdError, ValueError, EOFError)


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


# -- the record walk ------------------------------------------------------------------------

#: Databento record type of an MBO record, and its size in bytes.
RTYPE_MBO: Final = 0xA0
MBO_SIZE: Final = MBO_DTYPE.itemsize
#: The first two bytes of every MBO record (``length`` 14 words, ``rtype`` 0xA0) as one
#: little-endian ``uint16``: one comparison per record finds the first record of another type.
_MBO_HEAD: Final = (RTYPE_MBO << 8) | (MBO_SIZE // 4)
#: Every DBN record starts with a 16-byte header (``length`` counts 4-byte words).
_HEADER_SIZE: Final = 16
RTYPE_ERROR: Final = int(databento_dbn.RType.ERROR)
RTYPE_SYMBOL_MAPPING: Final = int(databento_dbn.RType.SYMBOL_MAPPING)
RTYPE_SYSTEM: Final = int(databento_dbn.RType.SYSTEM)
#: The record types databento_dbn knows; a record of any other type is corrupt data.
KNOWN_RTYPES: Final = frozenset(int(r.value) for r in databento_dbn.RType.variants())
#: Records checked at once after a record of another type (x4 after each clean window), so
#: frequent heartbeats cost O(records), not O(records x heartbeats).
_WINDOW: Final = 256
#: Texts of system (other than heartbeats) and error messages kept for ``vpbatch info``.
_MAX_MESSAGES: Final = 20
#: Bytes read per step when an uncompressed file's records are walked at open.
_WALK_BLOCK: Final = 1 << 23


def _layouts(*classes: Any) -> dict[int, np.dtype[Any]]:
    """``record size -> numpy layout`` of one message type across DBN versions."""
    return {int(cls.size_hint): np.dtype(cls._dtypes) for cls in classes}


#: DBN v1 (80 bytes) and v2/v3 layouts (the ``length`` field picks one).
_MAPPING_LAYOUTS: Final = _layouts(databento_dbn.SymbolMappingMsgV1,
                                   databento_dbn.SymbolMappingMsg)
_SYSTEM_LAYOUTS: Final = _layouts(databento_dbn.SystemMsgV1, databento_dbn.SystemMsg)
_ERROR_LAYOUTS: Final = _layouts(databento_dbn.ErrorMsgV1, databento_dbn.ErrorMsg)


class RecordError(ValueError):
    """A record header no valid DBN stream holds (the message says what is wrong).

    ``mbo_before`` counts the MBO records of the buffer walked before it.
    """

    mbo_before: int = 0


def _text(value: bytes) -> str:
    return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")


def _decode(record: np.ndarray, layouts: dict[int, np.dtype[Any]], what: str) -> np.void:
    """The fields of a message record, in the largest layout its length holds."""
    fits = [size for size in layouts if size <= len(record)]
    if not fits:
        raise RecordError(f"{what} record of {len(record)} bytes (a {what} record has at "
                          f"least {min(layouts)})")
    size = max(fits)
    row: np.void = record[:size].view(layouts[size])[0]
    return row


def _rtype_name(rtype: int) -> str:
    try:
        return str(databento_dbn.RType.from_int(rtype).name).lower()
    except (ValueError, DBNError):
        return f"0x{rtype:02x}"


@dataclass
class OtherRecords:
    """Records of types other than MBO that a pass stepped over, and the symbols they map.

    ``mappings`` is ``instrument_id -> symbol`` from the symbol mapping records (later
    records win): the subscribed symbol (``stype_in_symbol``, e.g. ``ESM4``), or the output
    symbol when that is not a number (a parent subscription such as ``ES.FUT`` names each
    contract there), as databento's ``InstrumentMap`` reads them. ``messages`` holds the
    first texts of system messages other than heartbeats and of error messages.
    """

    symbol_mappings: int = 0
    system: int = 0
    heartbeats: int = 0
    errors: int = 0
    by_rtype: dict[int, int] = field(default_factory=dict)
    mappings: dict[int, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    #: DBN version of the file (heartbeats carry a code from v3 on, only a text before).
    version: int = 3

    @property
    def total(self) -> int:
        """Records of other types seen."""
        return self.symbol_mappings + self.system + self.errors + sum(self.by_rtype.values())

    def add(self, record: np.ndarray) -> None:
        """Count one whole record (``uint8`` bytes) of a type other than MBO."""
        rtype = int(record[1])
        if rtype == RTYPE_SYMBOL_MAPPING:
            row = _decode(record, _MAPPING_LAYOUTS, "symbol mapping")
            symbol_in = _text(row["stype_in_symbol"])
            symbol_out = _text(row["stype_out_symbol"])
            use_out = bool(symbol_out) and not symbol_out.isdigit()
            self.mappings[int(row["instrument_id"])] = symbol_out if use_out else symbol_in
            self.symbol_mappings += 1
        elif rtype == RTYPE_SYSTEM:
            row = _decode(record, _SYSTEM_LAYOUTS, "system message")
            msg = _text(row["msg"])
            coded = "code" in (row.dtype.names or ()) and self.version >= 3
            self.system += 1
            if msg.startswith("Heartbeat") or (coded and int(row["code"]) == 0):
                self.heartbeats += 1
            else:
                self._message(f"system: {msg}")
        elif rtype == RTYPE_ERROR:
            row = _decode(record, _ERROR_LAYOUTS, "error message")
            self.errors += 1
            self._message(f"error: {_text(row['err'])}")
        else:
            self.by_rtype[rtype] = self.by_rtype.get(rtype, 0) + 1

    def _message(self, text: str) -> None:
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(text)

    def describe(self) -> str:
        """``'2 symbol mappings, 14 system (12 heartbeats), 0 errors'`` (+ other types)."""
        text = (f"{self.symbol_mappings:,} symbol mapping{'s' * (self.symbol_mappings != 1)}, "
                f"{self.system:,} system ({self.heartbeats:,} heartbeat"
                f"{'s' * (self.heartbeats != 1)}), {self.errors:,} error"
                f"{'s' * (self.errors != 1)}")
        for rtype, n in sorted(self.by_rtype.items()):
            text += f", {n:,} {_rtype_name(rtype)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly counts (``vpbatch info --json``)."""
        return {"total": self.total, "summary": self.describe(),
                "symbol_mappings": self.symbol_mappings,
                "system": self.system, "heartbeats": self.heartbeats, "errors": self.errors,
                "other": {_rtype_name(r): n for r, n in sorted(self.by_rtype.items())},
                "messages": list(self.messages),
                "mappings": {str(i): s for i, s in sorted(self.mappings.items())}}


def _step_other(buf: np.ndarray, pos: int, stop: int, other: OtherRecords | None) -> int:
    """The offset after the record of another type at ``pos``; -1 when it ends past ``stop``.

    Raises :class:`RecordError` for a header no DBN stream holds: an MBO record of the
    wrong length, an unknown record type, or a length shorter than the header.
    """
    words = int(buf[pos])
    rtype = int(buf[pos + 1])
    if rtype == RTYPE_MBO:
        raise RecordError(f"an MBO record with length field {words} (expected "
                          f"{MBO_SIZE // 4})")
    if rtype not in KNOWN_RTYPES:
        raise RecordError(f"unknown record type 0x{rtype:02x} (length field {words})")
    end = pos + 4 * words
    if 4 * words < _HEADER_SIZE:
        raise RecordError(f"record type 0x{rtype:02x} with length field {words} (shorter "
                          f"than the {_HEADER_SIZE}-byte record header)")
    if end > stop:
        return -1
    if other is not None:
        other.add(buf[pos:end])
    return end


def _add_run(runs: list[list[int]], pos: int, count: int) -> None:
    if runs and runs[-1][0] + runs[-1][1] * MBO_SIZE == pos:
        runs[-1][1] += count
    else:
        runs.append([pos, count])


def split_records(buf: np.ndarray, stop: int, other: OtherRecords | None = None
                  ) -> tuple[list[tuple[int, int]], int]:
    """Cut decoded DBN records (``uint8`` bytes ``buf[:stop]``) into runs of MBO records.

    Records of other types are stepped over by their ``length`` (and tallied in ``other``).
    The common case, MBO records only, costs one vectorised comparison per buffer.

    Returns
    -------
    runs : list of (byte offset, record count)
        The MBO runs, in order.
    end : int
        Where the first record that ``buf[:stop]`` does not hold whole begins (``stop`` when
        every record is whole): the caller keeps ``buf[end:stop]`` for the next read.

    Raises
    ------
    RecordError
        A record header no DBN stream holds (see :func:`_step_other`).
    """
    runs: list[list[int]] = []
    pos = 0
    window = 0  # records checked at once; 0: all the rest (no record of another type yet)
    while stop - pos >= 2:
        count = (stop - pos) // MBO_SIZE
        if count:
            n = min(count, window) if window else count
            heads = buf[pos: pos + n * MBO_SIZE].view("<u2")[:: MBO_SIZE // 2]
            bad = heads != _MBO_HEAD
            first = int(bad.argmax())
            if not bad[first]:
                _add_run(runs, pos, n)
                pos += n * MBO_SIZE
                window *= 4
                continue
            if first:
                _add_run(runs, pos, first)
                pos += first * MBO_SIZE
        elif int(buf[pos + 1]) == RTYPE_MBO and int(buf[pos]) * 4 == MBO_SIZE:
            break  # an MBO record the buffer does not hold whole
        try:
            end = _step_other(buf, pos, stop, other)
        except RecordError as exc:
            exc.mbo_before = sum(count for _, count in runs)
            raise
        if end < 0:
            break
        pos = end
        window = _WINDOW
    return [(start, count) for start, count in runs], pos


def mbo_records(buf: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
    """The runs of :func:`split_records` as one ``MBO_DTYPE`` array.

    One run that starts on an 8-byte boundary is a view of ``buf`` (no copy); otherwise the
    runs are copied into a new array.
    """
    if len(runs) == 1 and runs[0][0] % 8 == 0:
        start, count = runs[0]
        return buf[start: start + count * MBO_SIZE].view(MBO_DTYPE)
    out = np.empty(sum(count for _, count in runs) * MBO_SIZE, np.uint8)
    at = 0
    for start, count in runs:
        size = count * MBO_SIZE
        out[at: at + size] = buf[start: start + size]
        at += size
    return out.view(MBO_DTYPE)


def read_full(reader: IO[bytes], view: memoryview) -> int:
    """``readinto`` until ``view`` is full or the stream ends; returns the bytes read."""
    got = 0
    while got < len(view):
        n = reader.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def skip_metadata(reader: IO[bytes]) -> None:
    """Read a DBN stream's metadata (``DBN``, version, length, body): records follow."""
    metadata_bytes(reader)


def leading_records(path: Path, compressed: bool, version: int) -> OtherRecords:
    """The records of other types before the first MBO record, read from the file's start.

    A live recording keeps its symbol mappings there, so symbols resolve without reading
    the whole file. Reads its own handle (the reader's hashing one is left alone).

    Raises
    ------
    RecordError, OSError, zstandard.ZstdError, EOFError
        Undecodable data (the caller names the file).
    """
    other = OtherRecords(version=version)
    with path.open("rb") as raw:
        reader: IO[bytes] = raw
        if compressed:
            reader = zstandard.ZstdDecompressor().stream_reader(  # type: ignore[assignment]
                raw, read_across_frames=True)
        skip_metadata(reader)
        carry = b""
        while True:
            data = reader.read(1 << 16)
            buf = np.frombuffer(carry + data, np.uint8)
            pos = 0
            while len(buf) - pos >= 2:
                if int(buf[pos + 1]) == RTYPE_MBO and int(buf[pos]) * 4 == MBO_SIZE:
                    return other
                end = _step_other(buf, pos, len(buf), other)
                if end < 0:
                    break
                pos = end
            carry = buf[pos:].tobytes()
            if not data:
                return other


def _check_dbn_complete(path: Path, fh: BinaryIO, size: int) -> None:
    """An uncompressed DBN file holds whole records after its metadata.

    MBO records only: the size says it. Otherwise (records of other types between them, or a
    cut) the records are walked by their length and must end exactly at the file's end.
    """
    fh.seek(4)
    header = fh.read(4)
    start = 8 + int.from_bytes(header, "little")
    body = size - start
    if len(header) < 4 or body < 0:
        raise InputError(f"{path.name}: truncated: the file ends inside its DBN metadata")
    if body % MBO_SIZE == 0:
        return  # whole MBO records, or a mixed stream: the reader's walk checks its end
    fh.seek(start)
    carry = b""
    while True:
        block = fh.read(_WALK_BLOCK)
        buf = np.frombuffer(carry + block, np.uint8)
        try:
            _, pos = split_records(buf, len(buf))
        except RecordError as exc:
            raise InputError(f"{path.name}: corrupt record ({exc})") from None
        carry = buf[pos:].tobytes()
        if not block:
            break
    if carry:
        raise InputError(f"{path.name}: truncated: {len(carry)} bytes of an incomplete "
                         f"record at the end (file size {size})")


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0:
        part = stream.read(min(n, 1 << 20))
        if not part:
            raise EOFError("the stream ends inside its DBN metadata")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def metadata_bytes(stream: IO[bytes]) -> bytes:
    """A DBN stream's metadata (``DBN``, version, length, body), read from its start."""
    head = _read_exactly(stream, 8)
    if head[:3] != b"DBN":
        raise ValueError("the data does not start with a DBN header")
    return head + _read_exactly(stream, int.from_bytes(head[4:8], "little"))


class DbnStream:
    """A DBN file's decoded metadata and its byte stream (after decompression, if any).

    The two things the reader takes from databento's ``DBNStore``, read the way it reads them
    (``Metadata.decode`` as is, zstd frames read across) but without importing ``databento``:
    that import costs about 0.6 s of every command's start (pandas, the clients).
    """

    def __init__(self, data: HashingFileSource, compressed: bool) -> None:
        self._data = data
        self.compressed = compressed
        self.metadata: Metadata = Metadata.decode(
            metadata_bytes(self.reader),
            upgrade_policy=VersionUpgradePolicy.AS_IS)  # type: ignore[arg-type]

    @property
    def reader(self) -> IO[bytes]:
        """The decoded bytes from the start of the file (metadata first)."""
        raw = cast(IO[bytes], self._data.reader)
        if self.compressed:
            return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
                raw, read_across_frames=True)
        return raw


def open_validated(path: Path, expected_schema: str
                   ) -> tuple[DbnStream, FileMetadata, HashingFileSource]:
    """Open ``path`` after checking it exists, is complete, is DBN and has the schema."""
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
        store = DbnStream(data, compressed)
    except (*DECODE_ERRORS, OSError) as exc:
        raise InputError(f"{path.name}: not a readable DBN file ({one_line(exc)})") from None
    meta = store.metadata
    schema = "mixed" if meta.schema is None else str(meta.schema)
    if schema not in (expected_schema, "mixed"):
        raise InputError(f"{path.name}: schema is {schema}, expected {expected_schema}") from None
    if meta.ts_out:
        raise InputError(f"{path.name}: records carry ts_out (a live-gateway capture); "
                         f"not supported") from None
    if not compressed and expected_schema == "mbo":
        try:
            with path.open("rb") as fh:
                _check_dbn_complete(path, fh, size)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
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
