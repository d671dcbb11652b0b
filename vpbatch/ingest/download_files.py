"""The files ``vpbatch download`` writes: reading what arrived, splicing a resumed stream.

Streaming is billed per byte, so a cut stream is not thrown away: :func:`scan_file` finds the
complete records of whatever arrived (the zstd frames are walked, a cut inside a frame or a
record is seen), and :func:`splice` joins the records kept with the rest of the day asked
for from the last complete ``ts_recv`` on. Historical data is sequenced by ``ts_recv`` and a
request filters on it, so the records before that timestamp plus everything from it on is
exactly the day; the final record count checks it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import zstandard
from databento_dbn import DBNDecoder, Metadata

from vpbatch.errors import InputError, OutputError, one_line
from vpbatch.store.files import atomic_path

#: Symbology file written beside the day files (Databento's batch-download name).
SYMBOLOGY_JSON: Final = "symbology.json"
#: Suffix of the hidden temporary file a day file (or ``symbology.json``) is written through.
PART_SUFFIX: Final = ".part"
#: Suffix of what an interrupted download kept (hidden, beside the day file); the next run
#: resumes from it.
PARTIAL_SUFFIX: Final = ".partial"
#: Marks a file whose record count differs from ``metadata.get_record_count``: kept (it was
#: paid for), never read as the day's data.
MISMATCH_MARK: Final = "count-mismatch"
#: Offset of ``ts_recv`` in a record, per schema (the header is 16 bytes in every DBN version).
TS_RECV_OFFSET: Final = {"mbo": 40, "definition": 16}
_READ_CHUNK: Final = 1 << 22


def partial_path(path: Path) -> Path:
    """``.glbx-mdp3-20240508.mbo.dbn.zst.partial`` beside ``path``."""
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def mismatch_path(path: Path) -> Path:
    """``glbx-mdp3-20240508.mbo.count-mismatch.dbn.zst`` beside ``path``."""
    stem, dot, ext = path.name.partition(".dbn")
    return path.with_name(f"{stem}.{MISMATCH_MARK}{dot}{ext}")


# -- reading ---------------------------------------------------------------------------------


class _Inflater:
    """zstd frames decompressed in chunks; ``cut`` says the data ended inside a frame."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.cut = False

    def chunks(self) -> Iterator[bytes]:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        mid_frame = False
        while raw := self._fh.read(_READ_CHUNK):
            while raw:
                try:
                    out = dobj.decompress(raw)
                except zstandard.ZstdError:
                    self.cut = True  # corrupt from here on: what came before is kept
                    return
                mid_frame = True
                if out:
                    yield out
                if dobj.eof:
                    raw = dobj.unused_data
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                    mid_frame = False
                else:
                    raw = b""
        self.cut = mid_frame


def _decode_header(data: bytes) -> tuple[Metadata, int] | None:
    """The DBN metadata at the start of ``data`` and its length, or None when incomplete."""
    if len(data) < 8 or data[:3] != b"DBN":
        return None
    (length,) = struct.unpack("<I", data[4:8])
    if len(data) < 8 + length:
        return None
    decoder = DBNDecoder()
    try:
        decoder.write(data[:8 + length])
        metadata = decoder.decode()[0]
    except ValueError:
        return None
    return (metadata, 8 + length) if isinstance(metadata, Metadata) else None


class _Records:
    """Whole records out of decompressed chunks: the header first, then fixed-length records."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self.metadata: Metadata | None = None
        self.header = b""
        self.size = 0
        #: Bytes after the last whole record (a record cut short).
        self.ragged = False
        #: A record of another length: the rest is not read.
        self.mixed = False

    def read_header(self) -> bool:
        for chunk in self._chunks:
            self._buf += chunk
            found = _decode_header(self._buf)
            if found is not None:
                self.metadata, length = found
                self.header, self._buf = self._buf[:length], self._buf[length:]
                return True
            if len(self._buf) >= 8 and self._buf[:3] != b"DBN":
                return False
        return False

    def batches(self) -> Iterator[np.ndarray]:
        """``(n, size)`` uint8 arrays of complete records; stops at a record of another length."""
        for chunk in self._chunk_stream():
            self._buf += chunk
            if not self.size and self._buf:
                self.size = self._buf[0] * 4
            if not self.size:
                return
            n = len(self._buf) // self.size
            if not n:
                continue
            rows = np.frombuffer(self._buf, np.uint8, n * self.size).reshape(n, self.size)
            same = rows[:, 0] == self.size // 4
            if not same.all():
                bad = int(np.argmin(same))
                self.mixed = True
                if bad:
                    yield rows[:bad]
                return
            self._buf = self._buf[n * self.size:]
            yield rows
        self.ragged = self.ragged or bool(self._buf)

    def _chunk_stream(self) -> Iterator[bytes]:
        if self._buf:
            pending, self._buf = self._buf, b""
            yield pending
        yield from self._chunks


@dataclass(frozen=True)
class Scan:
    """What a (possibly cut) zstd DBN file holds, and where a resume would start."""

    metadata: Metadata | None
    records: int
    #: Records before the last ``ts_recv`` seen: they stay when the rest is asked again.
    keep: int
    #: ``ts_recv`` of the last records; a resume asks from here (inclusive).
    resume_ns: int | None
    #: The stream ended at a frame end, on a record boundary: nothing was cut.
    complete: bool
    #: ``ts_recv`` never decreases and every record has one length: a resume is exact.
    resumable: bool


def scan_file(path: Path, schema: str) -> Scan:
    """Complete records of a zstd DBN file, tolerating a cut anywhere (never raises on data)."""
    offset = TS_RECV_OFFSET[schema]
    with open(path, "rb") as fh:
        inflater = _Inflater(fh)
        reader = _Records(inflater.chunks())
        if not reader.read_header():
            return Scan(reader.metadata, 0, 0, None, False, False)
        total = keep = 0
        last: int | None = None
        ordered = True
        for rows in reader.batches():
            ts = rows[:, offset:offset + 8].copy().view("<u8").ravel()
            if (last is not None and int(ts[0]) < last) or bool(np.any(np.diff(ts) < 0)):
                ordered = False
            tail = int(ts[-1])
            group = int(np.count_nonzero(ts == tail))  # sorted: the equal ones are at the end
            keep = keep if tail == last and group == len(ts) else total + len(ts) - group
            total += len(ts)
            last = tail
    complete = not (inflater.cut or reader.ragged or reader.mixed)
    return Scan(reader.metadata, total, keep, last, complete, ordered and not reader.mixed)


def count_records(chunks: Iterator[bytes]) -> int:
    """Records in a body of equal-length records (MBO, definitions); -1 when ragged."""
    total = 0
    size = 0
    for chunk in chunks:
        if not size and chunk:
            size = chunk[0] * 4
        total += len(chunk)
    if total == 0:
        return 0
    return total // size if size and total % size == 0 else -1


@contextmanager
def open_dbn(path: Path) -> Iterator[tuple[Metadata, Iterator[bytes]]]:
    """DBN metadata of a DBN file (zstd or plain) and an iterator over its record bytes.

    Raises
    ------
    InputError
        Not a (zstd) DBN file, or its header is cut short.
    """
    with open(path, "rb") as fh:
        plain = fh.read(3) == b"DBN"
        fh.seek(0)
        reader: Any = fh if plain else zstandard.ZstdDecompressor().stream_reader(
            fh, read_across_frames=True)
        try:
            head = reader.read(8)
            length = struct.unpack("<I", head[4:8])[0] if len(head) == 8 else 0
            rest = reader.read(length)
            while len(rest) < length and (more := reader.read(length - len(rest))):
                rest += more
        except zstandard.ZstdError as exc:
            raise InputError(f"{path.name}: not a readable DBN file ({one_line(exc)})") from None
        found = _decode_header(head + rest)
        if found is None:
            what = "not a DBN file" if head[:3] != b"DBN" else "truncated DBN header"
            raise InputError(f"{path.name}: {what}")

        def body() -> Iterator[bytes]:
            while chunk := reader.read(_READ_CHUNK):
                yield chunk

        yield found[0], body()


# -- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tail:
    """What a resumed stream added: its header and the records appended."""

    metadata: Metadata | None
    records: int
    complete: bool


def splice(base: Path, keep: int, tail: Path, out: Path) -> Tail:
    """Write ``base``'s header and first ``keep`` records, then every record of ``tail``.

    ``tail`` is the answer of a request starting at the ``ts_recv`` after the records kept;
    its own header is dropped (the day's header stays). A cut ``tail`` adds the records
    that arrived whole.
    """
    with open(out, "xb") as dest, \
            zstandard.ZstdCompressor().stream_writer(dest, closefd=False) as writer:
        with open(base, "rb") as fh:
            records = _Records(_Inflater(fh).chunks())
            if not records.read_header():
                raise ValueError(f"{base.name}: no DBN header to resume from")
            writer.write(records.header)
            left = keep
            for rows in records.batches():
                take = rows[:left]
                writer.write(take.tobytes())
                left -= len(take)
                if not left:
                    break
            size = records.size
        with open(tail, "rb") as fh:
            inflater = _Inflater(fh)
            more = _Records(inflater.chunks())
            if not more.read_header():
                return Tail(more.metadata, 0, False)
            added = 0
            for rows in more.batches():
                if rows.shape[1] != size:
                    return Tail(more.metadata, added, False)
                writer.write(rows.tobytes())
                added += len(rows)
            return Tail(more.metadata, added, not (inflater.cut or more.ragged or more.mixed))


def by_instrument(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``raw_symbol -> instrument_id`` resolution turned around (``id -> raw symbol``)."""
    result: dict[str, list[dict[str, str]]] = {}
    for symbol, entries in (doc.get("result") or {}).items():
        for e in entries:
            if str(e.get("s") or "").isdigit():
                result.setdefault(str(e["s"]), []).append(
                    {"d0": str(e["d0"]), "d1": str(e["d1"]), "s": str(symbol)})
    return {**doc, "result": result, "symbols": sorted(result, key=int),
            "stype_in": "instrument_id", "stype_out": "raw_symbol"}


def merge_symbology(folder: Path, doc: dict[str, Any]) -> Path:
    """Merge an ``instrument_id -> raw_symbol`` resolution into the folder's ``symbology.json``.

    The file keeps Databento's ``symbology.resolve`` shape (``result``: id -> list of
    ``{d0, d1, s}``), so days downloaded at different times share one file. An existing
    ``raw_symbol`` file (a Databento batch download) is turned around and kept.

    Raises
    ------
    OutputError
        The existing file is unreadable or maps another symbology (e.g. ``parent``).
    """
    path = folder / SYMBOLOGY_JSON
    merged: dict[str, Any] = {}
    if path.is_file():
        try:
            merged = json.loads(path.read_text())
            if merged.get("stype_in") == "raw_symbol":  # e.g. from a Databento batch job
                merged = by_instrument(merged)
            if merged.get("stype_in") != "instrument_id":
                raise ValueError(f"stype_in is {merged.get('stype_in')!r}")
        except (OSError, ValueError, AttributeError) as exc:
            raise OutputError(f"{path}: not a symbology.json vpbatch can extend "
                              f"({one_line(exc)}); move it away and re-run") from None
    result: dict[str, list[dict[str, str]]] = merged.get("result", {})
    for key, entries in (doc.get("result") or {}).items():
        have = result.setdefault(str(key), [])
        for entry in entries:
            item = {"d0": str(entry["d0"]), "d1": str(entry["d1"]), "s": str(entry["s"])}
            if item not in have:
                have.append(item)
        have.sort(key=lambda e: (e["d0"], e["d1"], e["s"]))
    starts = [d for d in (merged.get("start_date"), doc.get("start_date")) if d]
    ends = [d for d in (merged.get("end_date"), doc.get("end_date")) if d]

    def by_id(key: str) -> int:
        return int(key) if key.isdigit() else 0

    out = {
        "result": dict(sorted(result.items(), key=lambda kv: by_id(kv[0]))),
        "symbols": sorted(result, key=by_id),
        "stype_in": "instrument_id",
        "stype_out": "raw_symbol",
        "start_date": min(starts) if starts else None,
        "end_date": max(ends) if ends else None,
        "partial": [],
        "not_found": [],
        "message": "OK",
        "status": 0,
    }
    with atomic_path(path, suffix=PART_SUFFIX) as tmp:
        tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return path


def fsync_file(path: Path) -> None:
    """Flush ``path`` to disk before it is renamed into place."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
