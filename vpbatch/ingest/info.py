"""What is in an MBO file: records, instruments, publishers, time span, actions, flags.

Computed in one streaming pass over bounded chunks (vectorised numpy per chunk), so it
works on a full day file with constant memory. Records of other types between the MBO
records (a live recording's symbol mappings, heartbeats and other system or error messages)
are counted in the same pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from vpbatch.book.dtypes import (
    F_BAD_TS_RECV,
    F_LAST,
    F_MAYBE_BAD_BOOK,
    F_SNAPSHOT,
    F_TOB,
)
from vpbatch.clock import NEW_YORK, NS_PER_SECOND, format_ns
from vpbatch.ingest.reader import DEFAULT_CHUNK_RECORDS, open_mbo, publisher_name

#: Exchange time zone used next to UTC.
#: Flags reported by :func:`file_info`, in output order.
FLAGS: Final = (
    ("F_LAST", F_LAST),
    ("F_TOB", F_TOB),
    ("F_SNAPSHOT", F_SNAPSHOT),
    ("F_BAD_TS_RECV", F_BAD_TS_RECV),
    ("F_MAYBE_BAD_BOOK", F_MAYBE_BAD_BOOK),
)
#: Action characters in output order (unknown characters are appended).
ACTIONS: Final = "ACMRTFN"
SIDES: Final = "BAN"
_U64_MAX: Final = np.iinfo(np.uint64).max


def _span(bounds: list[int]) -> dict[str, Any] | None:
    if not bounds:
        return None
    first, last = bounds
    return {
        "first_ns": first,
        "last_ns": last,
        "first_utc": format_ns(first),
        "last_utc": format_ns(last),
        "first_new_york": format_ns(first, NEW_YORK),
        "last_new_york": format_ns(last, NEW_YORK),
        "seconds": (last - first) / NS_PER_SECOND,
    }


class _Stats:
    """Per-chunk accumulator of the statistics of the selected records."""

    def __init__(self, instrument_id: int | None) -> None:
        self.instrument_id = instrument_id
        self.records = 0
        self.actions = np.zeros(256, dtype=np.int64)
        self.sides = np.zeros(256, dtype=np.int64)
        self.flags = np.zeros(len(FLAGS), dtype=np.int64)
        self.clears = 0
        self.snapshot_clears = 0
        self.recv: list[int] = []
        self.event: list[int] = []
        self.event_all: list[int] = []

    def add(self, records: np.ndarray) -> None:
        if self.instrument_id is not None:
            records = records[records["instrument_id"] == self.instrument_id]
        if len(records) == 0:
            return
        self.records += len(records)
        self.actions += np.bincount(records["action"], minlength=256)
        self.sides += np.bincount(records["side"], minlength=256)
        flags = records["flags"]
        for i, (_, bit) in enumerate(FLAGS):
            self.flags[i] += int(np.count_nonzero(flags & bit))
        clear = records["action"] == ord("R")
        snapshot = (flags & F_SNAPSHOT) != 0
        self.clears += int(np.count_nonzero(clear))
        self.snapshot_clears += int(np.count_nonzero(clear & snapshot))
        self._extend(self.recv, records["ts_recv"])
        self._extend(self.event_all, records["ts_event"])
        self._extend(self.event, records["ts_event"][~snapshot])

    @staticmethod
    def _extend(bounds: list[int], values: np.ndarray) -> None:
        values = values[values != _U64_MAX]
        if len(values):
            lo, hi = int(values.min()), int(values.max())
            bounds[:] = [min(bounds[0], lo), max(bounds[1], hi)] if bounds else [lo, hi]

    def counted(self, table: np.ndarray, order: str) -> dict[str, int]:
        codes = [ord(c) for c in order] + [c for c in np.flatnonzero(table).tolist()
                                          if chr(c) not in order]
        return {chr(c) if 32 < c < 127 else f"0x{c:02x}": int(table[c])
                for c in codes if table[c]}


def file_info(path: Path, symbol: str | None = None,
              progress: Callable[[int], None] | None = None,
              chunk_records: int = DEFAULT_CHUNK_RECORDS) -> dict[str, Any]:
    """Describe an MBO file (JSON-friendly), streaming it once in bounded chunks.

    Parameters
    ----------
    path : Path
        A ``.dbn`` / ``.dbn.zst`` MBO file.
    symbol : str, optional
        Restrict the record statistics (count, time span, actions, sides, flags, snapshot)
        to this instrument, across all its publishers. The instrument and publisher tables
        always cover the whole file.
    progress : callable, optional
        Called with the number of records of each chunk as it is read.
    chunk_records : int, default 1_000_000
        Records per chunk.

    Returns
    -------
    dict
        Keys: ``path``, ``file``, ``size_bytes``, ``compressed``, ``dbn_version``,
        ``dataset``, ``schema``, ``stype_in``, ``stype_out``, ``symbols``,
        ``metadata_start_utc``, ``metadata_end_utc``, ``record_count``, ``selection``,
        ``records``, ``instruments``, ``publishers``, ``ts_event``, ``ts_recv``, ``actions``,
        ``sides``, ``flags``, ``snapshot``, ``other_records`` (records of other types:
        ``total``, ``summary``, ``symbol_mappings``, ``system``, ``heartbeats``, ``errors``,
        ``other`` per type name, the first ``messages``, the ``mappings`` they hold). Times
        are UTC nanoseconds plus ISO strings in UTC and America/New_York; the ``ts_event``
        span leaves out snapshot records (they carry historical timestamps) unless every
        record is one.

    Raises
    ------
    InputError
        Missing, empty, truncated, corrupt or non-MBO file.
    SymbolError
        ``symbol`` is not in the file.
    """
    source = open_mbo(Path(path))
    selection = None
    iid = None
    if symbol is not None:
        iid, name = source.resolve_instrument(symbol)
        selection = {"symbol": name, "instrument_id": iid}
    stats = _Stats(iid)

    def on_chunk(records: np.ndarray) -> None:
        stats.add(records)
        if progress is not None:
            progress(len(records))

    counts = source.scan(on_chunk, chunk_records=chunk_records)
    mapped = source.instruments()
    per_instrument = source.instrument_counts()
    other = source.other_records()
    meta = source.metadata
    return {
        "path": str(source.path),
        "file": source.name,
        "size_bytes": meta.size_bytes,
        "compressed": meta.compressed,
        "dbn_version": meta.version,
        "dataset": meta.dataset,
        "schema": meta.schema,
        "stype_in": meta.stype_in,
        "stype_out": meta.stype_out,
        "symbols": list(meta.symbols) or ([] if other is None else
                                          sorted(set(other.mappings.values()))),
        "metadata_start_utc": format_ns(meta.start),
        "metadata_end_utc": None if meta.end is None else format_ns(meta.end),
        "record_count": sum(counts.values()),
        "selection": selection,
        "records": stats.records,
        "instruments": [
            {"instrument_id": i, "symbol": mapped.get(i, f"#{i}"),
             "records": per_instrument.get(i, 0),
             "publishers": [{"publisher_id": p, "records": n}
                            for p, n in source.publishers(i).items()]}
            for i in sorted(set(mapped) | set(per_instrument))
        ],
        "publishers": [
            {"publisher_id": p, "name": publisher_name(p), "records": n}
            for p, n in source.publishers().items()
        ],
        "ts_event": _span(stats.event or stats.event_all),
        "ts_recv": _span(stats.recv),
        "actions": stats.counted(stats.actions, ACTIONS),
        "sides": stats.counted(stats.sides, SIDES),
        "flags": {name: int(n) for (name, _), n in zip(FLAGS, stats.flags, strict=True)},
        "snapshot": {
            "present": bool(stats.flags[2] or stats.snapshot_clears),
            "records": int(stats.flags[2]),
            "clears": stats.clears,
            "snapshot_clears": stats.snapshot_clears,
        },
        "other_records": None if other is None else other.as_dict(),
    }


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _pct(n: int, total: int) -> str:
    return f"{n:>12,}  {100.0 * n / total:5.1f}%" if total else f"{n:>12,}"


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text of a :func:`file_info` result.

    Parameters
    ----------
    info : dict
        As returned by :func:`file_info`.

    Returns
    -------
    str
        Several lines, no trailing newline.
    """
    comp = "zstd" if info["compressed"] else "uncompressed"
    lines = [
        f"file        {info['path']}",
        f"size        {_size(info['size_bytes'])} ({comp}), DBN v{info['dbn_version']}",
        f"dataset     {info['dataset']}   schema {info['schema']}   "
        f"stype {info['stype_in']} -> {info['stype_out']}",
        f"symbols     {', '.join(info['symbols']) or '-'}",
        f"records     {info['record_count']:,}",
    ]
    other = info.get("other_records")
    if other and other["total"]:
        lines.append(f"other records: {other['summary']} (skipped)")
        lines.extend(f"  {text}" for text in other["messages"])
    lines.append("instruments")
    for inst in info["instruments"]:
        lines.append(f"  {inst['instrument_id']:>10}  {inst['symbol']:<16} {inst['records']:>12,}")
    lines.append("publishers")
    for pub in info["publishers"]:
        lines.append(f"  {pub['publisher_id']:>10}  {pub['name']:<16} {pub['records']:>12,}")
    total = info["records"]
    if info["selection"] is not None:
        sel = info["selection"]
        lines.append(f"selection   {sel['symbol']} (instrument_id {sel['instrument_id']}): "
                     f"{total:,} records")
    for key, label in (("ts_event", "ts_event"), ("ts_recv", "ts_recv")):
        span = info[key]
        if span is None:
            lines.append(f"{label:<12}-")
            continue
        lines.append(f"{label:<12}{span['first_utc']} -> {span['last_utc']} "
                     f"({span['seconds']:,.3f} s)")
        lines.append(f"{'':<12}{span['first_new_york']} -> {span['last_new_york']} (New York)")
    lines.append("actions")
    lines.extend(f"  {a:<10}{_pct(n, total)}" for a, n in info["actions"].items())
    lines.append("sides")
    lines.extend(f"  {s:<10}{_pct(n, total)}" for s, n in info["sides"].items())
    lines.append("flags")
    lines.extend(f"  {f:<18}{n:>12,}" for f, n in info["flags"].items())
    snap = info["snapshot"]
    lines.append(
        f"snapshot    {'yes' if snap['present'] else 'no'} ({snap['records']:,} F_SNAPSHOT "
        f"records, {snap['clears']:,} R clears of which {snap['snapshot_clears']:,} "
        f"with F_SNAPSHOT)"
    )
    return "\n".join(lines)
