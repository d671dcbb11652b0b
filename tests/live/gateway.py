"""A stand-in for Databento's live subscription gateway, for tests and benchmarks.

An asyncio server on 127.0.0.1 that speaks the live protocol of the official client
(``databento`` 0.87: ``live/protocol.py``, ``live/gateway.py``, ``common/cram.py``) so that an
unmodified ``databento.Live(key=TEST_KEY, gateway="127.0.0.1", port=gw.port)`` connects to
it, and plays the MBO records of one DBN file (any DBN version) as the market.

Use it in-process (``with StandInGateway(path) as gw:`` runs its event loop in a daemon thread)
or as a subprocess (``python -m tests.live.gateway --file F --rate 50000``: the first stdout line
is ``port=<n>``; it serves until killed or until the session ends, then prints
``done records=<n> seconds=<s> records_per_s=<r>``; ``--help`` lists the options).

Protocol, as the client source reads it
---------------------------------------
1. Gateway: ``lsg_version=<v>\\n`` and ``cram=<32 random characters>\\n``.
2. Client: ``auth=<sha256("{cram}|{key}")>-<last 5 of key>|dataset=..|encoding=dbn|ts_out=0|
   compression=none|heartbeat_interval_s=30|client=..`` (fields as ``AuthenticationRequest``).
   The stand-in knows ``TEST_KEY`` and the ``keys`` given; it answers ``success=1|session_id=<n>``
   or ``success=0|error=<text>`` and closes (the client raises ``BentoError(text)`` from
   ``subscribe()``). Also refused: a dataset other than the file's, an ``encoding`` other than
   ``dbn``, a ``compression`` other than ``none``/``zstd``, ``heartbeat_interval_s`` outside 5-1800.
3. Client: subscription lines (``schema=mbo|stype_in=raw_symbol|symbols=A,B|[start=<ns>|]
   snapshot=0|id=..|is_last=..``) until ``start_session=..``.
4. Gateway: a DBN stream: ``Metadata`` (version 3, the dataset, schema mbo, stype_in of the
   subscriptions, stype_out instrument_id, start = the market clock, no symbols or mappings),
   one ``SymbolMappingMsg`` per resolved symbol (stype_in as subscribed, stype_out raw_symbol,
   start_ts = the file's metadata start, end_ts undefined), then intraday replay, snapshot and live
   records (below), heartbeats (``SystemMsg`` code HEARTBEAT, "Heartbeat") whenever nothing was
   written for ``heartbeat_interval_s * heartbeat_scale``, and at the end of the session (the
   market reaches ``end_at``, default the end of the file) a clean close (FIN, EOF).
   Subscriptions sent after ``start_session`` are served live from then on (mappings sent at once;
   ``start`` and ``snapshot`` are ignored for them, as the real service ignores ``start``).
   ``compression=zstd`` (one zstd stream, flushed per write) and ``ts_out=1`` (8 bytes of wall
   clock appended to every record, header length + 2) are honoured.

The market
----------
The file's MBO records (other record types in it are skipped by their length) are indexed
0..n-1; the *market position* is the index of the record that is "now": records before it are
history. ``now`` sets where the market starts (default 0). ``rate`` (file records per second,
all instruments counted) makes the market advance with wall time from the first
``start_session`` on; each connection sends whole events (records up to and including one
flagged ``F_LAST`` of its instruments) as soon as the market passes them, so bursts are real.
``rate=None`` plays as fast as the socket takes the records, the position being the furthest
record any connection has sent. The position is shared by all connections: a reconnect's live
part starts where the market is. ``hold_at`` stops the market at an index (heartbeats flow)
until :meth:`StandInGateway.resume`; :meth:`StandInGateway.advance` moves it on by hand (as
``Fault.gap`` does at a drop), so a gap can open while a client is away.

* ``start=<ns>`` (intraday replay): the subscribed instruments' records from the first one whose
  ``ts_event >= start`` (per instrument; ``replay_filter="each"`` instead drops every record with
  ``ts_event < start``, as "filtered on ts_event" may also be read) up to the position at session
  start, then ``SystemMsg`` REPLAY_COMPLETED "Finished mbo replay", then live from that position.
  ``start=0`` is all history.
* ``snapshot=1``: per instrument an ``R`` then an ``A`` per resting order of the book at the
  position (Databento MBO semantics: A adds (an existing id is replaced), C takes its size off
  and removes at zero, M changes price/size and keeps the id (unknown id: an add; size 0: a
  removal), R clears, F/T/N change nothing; priority is arrival order, lost on a price change
  or a size increase), in priority order, as Databento's snapshot documentation shows them:
  flags ``F_SNAPSHOT|F_BAD_TS_RECV`` (40) and ``F_LAST`` (168) on the instrument's last record;
  ``ts_recv`` = the market clock; an ``A``'s ``ts_event``, ``sequence`` and ``channel_id`` are
  those of the order's last add or modify; the ``R`` has ``sequence`` 0 and the first ``A``'s
  ``ts_event`` (the clock if the book is empty). Then live records from the position.
* neither: live records from the position.

The market clock (timestamps of metadata, heartbeats, system messages, mappings and snapshots)
is the ``ts_recv`` of the last record before the position (of the first record at position 0).

History (replay, snapshot) is read from memory for files of at most ``history_limit`` records
(default 5,000,000, 280 MB); larger files are streamed in 64K-record chunks decompressed in a
reader thread (the benchmark's 50M-record day), intraday replay re-reads the file from its
start, and a snapshot is refused with a fatal ``ErrorMsg`` (INTERNAL_ERROR) naming the limit.

Decisions about the real service (documented behaviour where there is some)
---------------------------------------------------------------------------
* Unknown symbol: Databento documents that for each symbol that fails to resolve the gateway
  sends an ``ErrorMsg`` with code SYMBOL_RESOLUTION_FAILED and does not end the session; the
  resolved symbols stream normally. The stand-in does that (text ``Failed to resolve symbol: X``,
  ``is_last`` on the last one of a subscription), in place of that symbol's mapping. The official
  client passes the ``ErrorMsg`` to callbacks, streams and iterators and, when the connection
  closes, raises ``BentoError`` with the collected texts (even after a clean EOF).
* Fatal subscription errors (schema other than mbo, stype_in other than raw_symbol or
  instrument_id, ``start`` together with ``snapshot=1``, an unreadable ``start``): an ``ErrorMsg``
  with code INVALID_SUBSCRIPTION after the Metadata, then a clean close (documented: "the gateway
  will send an ErrorMsg record and terminate the session").
* Replay unavailable (``Fault.replay_unavailable``, or a ``start`` older than ``replay_window_ns``
  before the clock): an ``ErrorMsg`` with code REPLAY_DATA_AGED_OUT (fatal: documented as "replay
  data is no longer retained and the subscription's schema is incompatible with skipping
  records", which is MBO's case), then a clean close; the client raises ``BentoError``.
  ``start=0`` asks for what is retained and never fails on the window.
* Refused key: ``success=0|error=Authentication failed.`` (the exact text of the real service
  is not documented), then close.
* The DBN stream starts ``start_delay_s`` (50 ms) after ``start_session``, as a real round trip
  would: the official client enables its iterator's queue just after sending ``start_session``
  and drops what it decodes before, so an instant answer can lose records (a client race that
  never shows against the real service).
* Heartbeats carry the market clock, not the wall clock, so a held market never moves time past
  the records still to come. SUBSCRIPTION_ACK system messages are not sent unless
  ``subscription_acks=True`` (then one after the Metadata per subscription id, "Subscription
  request <id> for mbo data succeeded").

Faults, per connection number (0 = the first connection accepted), ``faults={0: Fault(...)}``:
``drop_after=N`` sends N MBO records (replay, snapshot and live counted), waits until the client
has acknowledged every byte (so it holds exactly N records), then resets the connection
(SO_LINGER 0 + ``transport.abort()``: an RST, not EOF; the client's session ends with
``ConnectionResetError``, wrapped in ``BentoError`` by ``block_for_close``); ``gap=K`` moves the
market K records on at that drop. ``silent_after=N``: after N records nothing more (no
heartbeats) but the socket stays open (the client fails after its heartbeat interval + 10 s).
``refuse_key=True``. ``replay_unavailable=True``.

Observability: ``gw.connections`` (a :class:`ConnectionInfo` per connection: what the client
sent (auth fields, subscriptions, heartbeat interval), what was sent to it (mappings, unknown
symbols, records replayed / snapshot / live, heartbeats, system and error texts, bytes), its
live cursor and how it ended), ``gw.position``, ``gw.sessions_ended``, ``gw.errors`` (internal
errors of the stand-in itself; tests should see none) and ``gw.wait_for(predicate)``.
Market control from any thread: ``gw.hold(at=None)``, ``gw.resume()``, ``gw.advance(n)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import secrets
import socket
import string
import struct
import sys
import termios
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import databento_dbn as dbn
import numpy as np
import zstandard

log = logging.getLogger(__name__)

#: The API key the stand-in accepts by default (32 characters, ``db-`` prefix, like a real key).
TEST_KEY: Final = "db-StandInGatewayTestKey00000001"
#: ``lsg_version`` sent in the greeting (the client only logs it).
LSG_VERSION: Final = "0.0.0+standin"
#: Databento's MBO record (rtype 0xA0, 56 bytes), with ``action``/``side`` as uint8.
MBO_DTYPE: Final = np.dtype([
    ("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
    ("ts_event", "<u8"), ("order_id", "<u8"), ("price", "<i8"), ("size", "<u4"),
    ("flags", "u1"), ("channel_id", "u1"), ("action", "u1"), ("side", "u1"),
    ("ts_recv", "<u8"), ("ts_in_delta", "<i4"), ("sequence", "<u4"),
])
MBO_SIZE: Final = 56
MBO_RTYPE: Final = 0xA0
F_LAST: Final = 0x80
F_SNAPSHOT: Final = 0x20
F_BAD_TS_RECV: Final = 0x08
SNAPSHOT_FLAGS: Final = F_SNAPSHOT | F_BAD_TS_RECV
#: Records per chunk read from the file and per socket write (3.6 MB).
CHUNK_RECORDS: Final = 65_536
#: Files with at most this many records are held in memory (replay and snapshot from memory).
HISTORY_LIMIT: Final = 5_000_000
#: Write buffer above which the stand-in waits for the socket (asyncio flow control).
WRITE_HIGH_WATER: Final = 8 << 20
#: How long a drop waits for the client to acknowledge what was sent before the reset.
DROP_FLUSH_TIMEOUT_S: Final = 10.0
#: Pause before answering ``start_session``, as a real gateway's round trip does. The official
#: client enables its iterator's queue just *after* sending ``start_session``; records it
#: decodes before that are dropped, so an answer within microseconds (in-process, same GIL)
#: can lose the first records or even the whole session.
START_DELAY_S: Final = 0.05
HEARTBEAT_RANGE: Final = (5, 1800)
AUTH_TIMEOUT_S: Final = 30.0

_A, _C, _M, _R = (ord(c) for c in "ACMR")
_NONE = ord("N")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_EOF = object()
#: Key of a replay over every instrument (an ALL_SYMBOLS subscription).
_EVERY = -1


@dataclass(frozen=True)
class Fault:
    """Faults of one connection (see the module docstring)."""

    drop_after: int | None = None
    silent_after: int | None = None
    refuse_key: bool = False
    replay_unavailable: bool = False
    gap: int = 0


@dataclass
class Subscription:
    """One subscription line as the client sent it."""

    schema: str
    stype_in: str
    symbols: list[str]
    start: int | None
    snapshot: bool
    id: int | None
    is_last: bool
    after_start: bool = False
    raw_start: str | None = None


@dataclass
class ConnectionInfo:
    """What one connection's client sent and what the stand-in sent it."""

    number: int
    auth: dict[str, str] = field(default_factory=dict)
    key_accepted: bool | None = None
    session_id: str | None = None
    dataset: str | None = None
    heartbeat_interval_s: int | None = None
    compression: str | None = None
    ts_out: bool = False
    subscriptions: list[Subscription] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    started: bool = False
    #: Market position when the session started (where its live part began).
    start_position: int | None = None
    #: File index of the first replayed record (None: no replay or nothing to replay).
    replay_from: int | None = None
    mappings: list[tuple[str, int]] = field(default_factory=list)
    unknown_symbols: list[str] = field(default_factory=list)
    #: MBO records sent: all, replayed, snapshot, live.
    records: int = 0
    replayed: int = 0
    snapshot: int = 0
    live: int = 0
    heartbeats: int = 0
    system_messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    #: File index of the next live record this connection would send.
    cursor: int | None = None
    #: How it ended: eof, drop, silent, client, auth_failed, fatal_error, timeout,
    #: gateway_stop, error.
    end: str | None = None
    closed: bool = False


# --------------------------------------------------------------------------------- the file


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = fh.read(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


def _parse_records(buf: bytes, where: str) -> tuple[list[np.ndarray], int]:
    """The MBO records at the start of ``buf`` (other record types skipped by their length);
    returns the arrays (views into ``buf``) and the number of bytes consumed."""
    out: list[np.ndarray] = []
    o, n = 0, len(buf)
    while n - o >= 2:
        count = (n - o) // MBO_SIZE
        if count:
            arr = np.frombuffer(buf, MBO_DTYPE, count=count, offset=o)
            ok = (arr["length"] == MBO_SIZE // 4) & (arr["rtype"] == MBO_RTYPE)
            k = count if ok.all() else int(np.argmin(ok))
            if k:
                out.append(arr[:k])
                o += k * MBO_SIZE
                continue
        length, rtype = buf[o] * 4, buf[o + 1]
        if length == 0:
            raise ValueError(f"{where}: corrupt DBN record (length 0) at byte {o} of a chunk")
        if rtype == MBO_RTYPE and length != MBO_SIZE:
            raise ValueError(f"{where}: MBO records of {length} bytes (ts_out?) are not "
                             f"supported, only {MBO_SIZE}-byte records")
        if n - o < length:
            break
        o += length
    return out, o


class DbnFile:
    """One DBN file of MBO records: its metadata, and its records as chunks of MBO_DTYPE.

    Held in memory when it has at most ``history_limit`` records, else streamed.
    """

    def __init__(self, path: Path | str, history_limit: int = HISTORY_LIMIT) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such DBN file")
        with self._open() as fh:
            head = _read_exact(fh, 8)
            if len(head) < 8 or head[:3] != b"DBN":
                raise ValueError(f"{self.path}: not a DBN file (no DBN header)")
            (length,) = struct.unpack("<I", head[4:8])
            self.metadata: dbn.Metadata = dbn.Metadata.decode(head + _read_exact(fh, length))
        self.history_limit = history_limit
        chunks: list[np.ndarray] = []
        n = 0
        it = self.iter_file()
        for arr in it:
            chunks.append(arr)
            n += len(arr)
            if n > history_limit:
                break
        else:
            n = -1
        with contextlib.suppress(Exception):
            it.close()  # type: ignore[attr-defined]
        self.in_memory = n < 0
        first = chunks[0][:1].copy() if chunks else np.zeros(0, MBO_DTYPE)
        if self.in_memory:
            self.records: np.ndarray | None = (np.concatenate(chunks) if chunks
                                               else np.zeros(0, MBO_DTYPE))
            self.count: int | None = len(self.records)
        else:
            self.records, self.count = None, None
        if not len(first):
            raise ValueError(f"{self.path}: no MBO records")
        self.first = first[0]
        self.publisher_id = int(self.first["publisher_id"])

    def _open(self) -> BinaryIO:
        fh = open(self.path, "rb")  # noqa: SIM115 - returned to the caller's with
        magic = fh.read(4)
        fh.seek(0)
        if magic == _ZSTD_MAGIC:
            return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
                fh, read_size=1 << 20, read_across_frames=True, closefd=True)
        return fh

    def iter_file(self, chunk_bytes: int = CHUNK_RECORDS * MBO_SIZE) -> Iterator[np.ndarray]:
        """Every MBO record of the file from disk, in arrays of about ``chunk_bytes``."""
        with self._open() as fh:
            head = _read_exact(fh, 8)
            (length,) = struct.unpack("<I", head[4:8])
            _read_exact(fh, length)
            tail = b""
            while True:
                data = fh.read(chunk_bytes)
                if not data:
                    break
                buf = tail + data if tail else data
                arrs, used = _parse_records(buf, str(self.path))
                tail = buf[used:]
                yield from arrs
            if tail:
                raise ValueError(f"{self.path}: truncated last record ({len(tail)} bytes)")

    def chunks(self, lo: int, hi: int | None) -> Iterator[np.ndarray]:
        """Records ``lo..hi-1`` (``hi`` None: to the end) in chunks of at most CHUNK_RECORDS."""
        if self.records is not None:
            end = len(self.records) if hi is None else min(hi, len(self.records))
            for s in range(lo, end, CHUNK_RECORDS):
                yield self.records[s:min(s + CHUNK_RECORDS, end)]
            return
        idx = 0
        for arr in self.iter_file():
            a, b = idx, idx + len(arr)
            idx = b
            if b <= lo:
                continue
            if hi is not None and a >= hi:
                return
            piece = arr[max(lo - a, 0):len(arr) if hi is None else min(hi - a, len(arr))]
            for s in range(0, len(piece), CHUNK_RECORDS):
                yield piece[s:s + CHUNK_RECORDS]

    def symbol_map(self) -> dict[str, int]:
        """Raw symbol -> instrument_id from the metadata's mappings (the interval of the file's
        first day, else the first interval)."""
        day = dt.datetime.fromtimestamp(self.metadata.start / 1e9, dt.UTC).date()
        out: dict[str, int] = {}
        for symbol, intervals in dict(self.metadata.mappings).items():
            chosen = None
            for iv in intervals:
                if iv["start_date"] <= day < iv["end_date"]:
                    chosen = iv
                    break
            chosen = chosen or (intervals[0] if intervals else None)
            if chosen is not None and str(chosen["symbol"]).isdigit():
                out[str(symbol)] = int(chosen["symbol"])
        return out


class _Prefetch:
    """Runs a blocking chunk iterator in a thread, up to ``depth`` chunks ahead of the loop."""

    def __init__(self, it: Iterator[np.ndarray], loop: asyncio.AbstractEventLoop,
                 depth: int = 4) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._sem = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(it,), daemon=True,
                                        name="standin-reader")
        self._thread.start()

    def _put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self, it: Iterator[np.ndarray]) -> None:
        try:
            for item in it:
                while not self._sem.acquire(timeout=0.2):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self._put(item)
            self._put(_EOF)
        except BaseException as exc:
            self._put(exc)
        finally:
            with contextlib.suppress(Exception):
                it.close()  # type: ignore[attr-defined]

    async def get(self) -> np.ndarray | None:
        item = await self._queue.get()
        self._sem.release()
        if item is _EOF:
            self._queue.put_nowait(_EOF)
            return None
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stop.set()


class _Chunks:
    """Async access to records ``lo..hi-1``: slices of the in-memory array, or a prefetched
    stream of the file."""

    def __init__(self, file: DbnFile, lo: int, hi: int | None) -> None:
        self._it = file.chunks(lo, hi)
        self._prefetch = (None if file.in_memory
                          else _Prefetch(self._it, asyncio.get_running_loop()))

    async def get(self) -> np.ndarray | None:
        if self._prefetch is not None:
            return await self._prefetch.get()
        return next(self._it, None)

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()


class _Cursor:
    """A read position over :class:`_Chunks` with peek/advance."""

    def __init__(self, chunks: _Chunks, pos: int) -> None:
        self._chunks = chunks
        self.pos = pos
        self._buf = np.zeros(0, MBO_DTYPE)
        self.exhausted = False

    async def peek(self, n: int, whole: bool) -> np.ndarray:
        """Up to ``n`` records from ``pos``: the rest of the current chunk, or (``whole``)
        exactly ``n`` unless the records run out."""
        if not len(self._buf) and not self.exhausted:
            nxt = await self._chunks.get()
            if nxt is None:
                self.exhausted = True
            else:
                self._buf = nxt
        if whole and len(self._buf) < n and not self.exhausted:
            parts = [self._buf]
            have = len(self._buf)
            while have < n:
                nxt = await self._chunks.get()
                if nxt is None:
                    self.exhausted = True
                    break
                parts.append(nxt)
                have += len(nxt)
            self._buf = np.concatenate(parts)
        return self._buf[:n]

    def advance(self, k: int) -> None:
        self._buf = self._buf[k:]
        self.pos += k

    def close(self) -> None:
        self._chunks.close()


# --------------------------------------------------------------------------------- the books


class _Books:
    """Databento MBO order books of every instrument, advanced record by record.

    An order is ``[side, price, size, priority, ts_event, sequence, channel_id, publisher_id]``.
    """

    _FIELDS = ("instrument_id", "order_id", "action", "side", "price", "size", "ts_event",
               "sequence", "channel_id", "publisher_id")

    def __init__(self, records: np.ndarray) -> None:
        self._records = records
        self.index = 0
        self.orders: dict[int, dict[int, list[int]]] = {}
        self._prio = 0

    def advance_to(self, pos: int) -> None:
        if pos < self.index:
            self.index, self.orders, self._prio = 0, {}, 0
        for start in range(self.index, pos, CHUNK_RECORDS):
            self._apply(self._records[start:min(start + CHUNK_RECORDS, pos)])
        self.index = max(self.index, pos)

    def _apply(self, sl: np.ndarray) -> None:
        cols = [sl[f].tolist() for f in self._FIELDS]
        undef = dbn.UNDEF_PRICE
        orders = self.orders
        prio = self._prio
        for iid, oid, act, side, price, size, ts, seq, ch, pub in zip(*cols, strict=True):
            book = orders.get(iid)
            if book is None:
                book = orders[iid] = {}
            if act == _A:
                book.pop(oid, None)
                if side != _NONE and price != undef and size > 0:
                    prio += 1
                    book[oid] = [side, price, size, prio, ts, seq, ch, pub]
            elif act == _C:
                o = book.get(oid)
                if o is not None:
                    o[2] -= size
                    if o[2] <= 0:
                        del book[oid]
            elif act == _M:
                o = book.get(oid)
                if o is None:
                    if side != _NONE and price != undef and size > 0:
                        prio += 1
                        book[oid] = [side, price, size, prio, ts, seq, ch, pub]
                elif size <= 0 or price == undef:
                    del book[oid]
                else:
                    if price != o[1] or size > o[2]:
                        prio += 1
                        o[3] = prio
                    o[1], o[2], o[4], o[5], o[6] = price, size, ts, seq, ch
            elif act == _R:
                book.clear()
        self._prio = prio

    def snapshot(self, iid: int, clock: int, publisher_id: int) -> np.ndarray:
        """The book of ``iid`` as Databento's MBO snapshot records (R, then A by priority)."""
        orders = sorted(self.orders.get(iid, {}).items(), key=lambda kv: kv[1][3])
        out = np.zeros(len(orders) + 1, MBO_DTYPE)
        out["length"] = MBO_SIZE // 4
        out["rtype"] = MBO_RTYPE
        out["instrument_id"] = iid
        out["ts_recv"] = clock
        out["flags"] = SNAPSHOT_FLAGS
        out["publisher_id"] = orders[0][1][7] if orders else publisher_id
        r = out[0]
        r["action"], r["side"], r["price"] = _R, _NONE, dbn.UNDEF_PRICE
        r["ts_event"] = orders[0][1][4] if orders else clock
        if orders:
            body = out[1:]
            body["order_id"] = [oid for oid, _ in orders]
            for col, k in (("side", 0), ("price", 1), ("size", 2), ("ts_event", 4),
                           ("sequence", 5), ("channel_id", 6), ("publisher_id", 7)):
                body[col] = [o[k] for _, o in orders]
            body["action"] = _A
        out["flags"][-1] = SNAPSHOT_FLAGS | F_LAST
        return out


# --------------------------------------------------------------------------------- the market


class _Market:
    """The market position shared by all connections (see the module docstring)."""

    def __init__(self, file: DbnFile, now: int, end: int | None, rate: float | None,
                 hold_at: int | None) -> None:
        self.file = file
        self.end = end
        self.rate = rate
        self.hold_at = hold_at
        self._pos = now
        self._base = now
        self._t0: float | None = None
        self._changed = asyncio.Event()
        self._last_ts = int(file.first["ts_recv"])
        if file.records is None and now > 0:
            for chunk in file.chunks(now - 1, now):
                self._last_ts = int(chunk["ts_recv"][-1])

    def start(self) -> None:
        if self.rate is not None and self._t0 is None:
            self._t0 = time.monotonic()

    def _cap(self, t: float) -> int:
        if self.hold_at is not None:
            t = min(t, self.hold_at)
        if self.end is not None:
            t = min(t, self.end)
        return int(t)

    def target(self) -> int:
        """The index the market has reached: connections may send records below it."""
        if self.rate is None:
            return self._cap(sys.maxsize)
        if self._t0 is None:
            return self._cap(self._base)
        return self._cap(self._base + (time.monotonic() - self._t0) * self.rate)

    @property
    def position(self) -> int:
        return self.target() if self.rate is not None else self._pos

    def clock(self, pos: int | None = None) -> int:
        """ts_recv of the last record before ``pos`` (default: the position)."""
        pos = self.position if pos is None else pos
        recs = self.file.records
        if recs is not None and len(recs):
            return int(recs["ts_recv"][min(max(pos - 1, 0), len(recs) - 1)])
        return self._last_ts

    def played(self, pos: int, ts_recv: int) -> None:
        if pos > self._pos:
            self._pos = pos
            self._last_ts = ts_recv

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def advance(self, n: int) -> None:
        if self.rate is None:
            self._pos = self._pos + n if self.end is None else min(self._pos + n, self.end)
        else:
            self._base += n
        self._notify()

    def hold(self, at: int | None) -> None:
        self.hold_at = self.position if at is None else at
        self._notify()

    def resume(self) -> None:
        if self.rate is not None and self._t0 is not None:
            self._base, self._t0 = self.target(), time.monotonic()
        self.hold_at = None
        self._notify()

    async def wait_past(self, idx: int) -> None:
        """Return when the market may have passed ``idx`` (or anything changed)."""
        ev = self._changed
        timeout = None
        if self.rate is not None and self._t0 is not None and (
                self.hold_at is None or self.hold_at > idx):
            due = (idx + 1 - self._base) / self.rate - (time.monotonic() - self._t0)
            timeout = max(due, 0.0005)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)


# --------------------------------------------------------------------------------- a connection


class _EndSession(Exception):
    """The session is over (the reason is in ``ConnectionInfo.end``)."""


def _parse_line(line: bytes) -> dict[str, str]:
    text = line.decode("utf-8", "replace").strip()
    out: dict[str, str] = {}
    for token in text.split("|"):
        k, _, v = token.partition("=")
        out[k] = v
    return out


def _outq(sock: socket.socket) -> int:
    """Bytes in the kernel send queue not yet acknowledged by the peer (Linux SIOCOUTQ)."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("I", 0))
    except OSError:
        return 0
    return int(struct.unpack("I", buf)[0])


class _Connection:
    def __init__(self, gw: StandInGateway, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, info: ConnectionInfo, fault: Fault) -> None:
        self.gw = gw
        self.reader = reader
        self.writer = writer
        self.info = info
        self.fault = fault
        self.loop = asyncio.get_running_loop()
        assert gw._market is not None
        self.market: _Market = gw._market
        self._last_write = self.loop.time()
        self._silent = False
        self._closing = False
        self._compressor: Any = None
        self._ids: np.ndarray | None = np.zeros(0, np.uint32)  # None: every instrument
        limits = [x for x in (fault.drop_after, fault.silent_after) if x is not None]
        self._limit = min(limits) if limits else None
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    # ---- writing

    def _write(self, data: bytes | memoryview) -> None:
        if self._compressor is not None:
            data = (self._compressor.compress(data)
                    + self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        self.writer.write(data)
        self.info.bytes_sent += len(data)
        self._last_write = self.loop.time()

    def _write_record(self, rec: Any) -> None:
        data = bytes(rec)
        if self.info.ts_out:
            data = bytes([data[0] + 2]) + data[1:] + struct.pack("<Q", time.time_ns())
        self._write(data)

    def _system(self, msg: str, code: dbn.SystemCode) -> None:
        self._write_record(dbn.SystemMsg(ts_event=self.market.clock(), msg=msg, code=code))
        if code == dbn.SystemCode.HEARTBEAT:
            self.info.heartbeats += 1
        else:
            self.info.system_messages.append(msg)

    def _error(self, msg: str, code: dbn.ErrorCode, is_last: bool = True) -> None:
        self._write_record(dbn.ErrorMsg(ts_event=self.market.clock(), err=msg, is_last=is_last,
                                        code=code))
        self.info.errors.append(msg)

    async def _fatal(self, msg: str, code: dbn.ErrorCode, end: str = "fatal_error") -> None:
        self._error(msg, code)
        await self._close(end)
        raise _EndSession

    async def _close(self, end: str) -> None:
        self.info.end = self.info.end or end
        self._closing = True
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self.info.closed = True

    async def _send_records(self, arr: np.ndarray, part: str) -> None:
        """Write MBO records (whole chunk), honouring the drop/silent faults."""
        trigger = False
        if self._limit is not None and self.info.records + len(arr) >= self._limit:
            arr = arr[:self._limit - self.info.records]
            trigger = True
        if len(arr):
            if self.info.ts_out:
                out = np.empty(len(arr), [("r", "V56"), ("t", "<u8")])
                out["r"] = arr.view("V56")
                out["t"] = time.time_ns()
                out.view(np.uint8).reshape(-1, 64)[:, 0] = 16
                self._write(out.tobytes())
            else:
                self._write(memoryview(np.ascontiguousarray(arr).view(np.uint8)))
            self.info.records += len(arr)
            setattr(self.info, part, getattr(self.info, part) + len(arr))
            await self.writer.drain()
        if trigger:
            await self._trigger_fault()

    async def _trigger_fault(self) -> None:
        f = self.fault
        if f.drop_after is not None and self.info.records >= f.drop_after and (
                f.silent_after is None or f.drop_after <= f.silent_after):
            await self._drop()
            raise _EndSession
        self._silent = True
        self.info.end = "silent"
        await asyncio.Event().wait()  # until the client goes or the gateway stops

    async def _drop(self) -> None:
        transport = self.writer.transport
        sock = transport.get_extra_info("socket")
        deadline = time.monotonic() + DROP_FLUSH_TIMEOUT_S
        while time.monotonic() < deadline and (
                transport.get_write_buffer_size() or (sock is not None and _outq(sock))):
            await asyncio.sleep(0.001)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.info.end = "drop"
        transport.abort()
        self.info.closed = True
        if self.fault.gap:
            self.market.advance(self.fault.gap)

    # ---- the conversation

    async def run(self) -> None:
        try:
            if not await self._authenticate():
                return
            if not await self._read_until_start():
                return
            await self._session()
        except _EndSession:
            pass
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError):
            self.info.end = self.info.end or "client"
        except TimeoutError:  # no authentication line in AUTH_TIMEOUT_S
            self.info.end = self.info.end or "timeout"
        finally:
            if not self.info.closed:
                self.writer.transport.abort()
                self.info.closed = True

    async def _authenticate(self) -> bool:
        cram = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        self.writer.write(f"lsg_version={LSG_VERSION}\ncram={cram}\n".encode())
        line = await asyncio.wait_for(self.reader.readline(), AUTH_TIMEOUT_S)
        if not line:
            self.info.end = "client"
            return False
        fields = _parse_line(line)
        self.info.auth = fields
        self.info.dataset = fields.get("dataset")
        self.info.compression = fields.get("compression", "none")
        self.info.ts_out = fields.get("ts_out", "0") == "1"
        error = self._check_auth(cram, fields)
        self.info.key_accepted = error is None
        if error is not None:
            self.info.end = "auth_failed"  # before the client can read the answer
            self.writer.write(f"success=0|error={error}\n".encode())
            await self._close("auth_failed")
            return False
        self.info.session_id = str(self.gw._next_session_id())
        self.writer.write(f"success=1|session_id={self.info.session_id}\n".encode())
        return True

    def _check_auth(self, cram: str, fields: Mapping[str, str]) -> str | None:
        auth = fields.get("auth", "")
        good = {hashlib.sha256(f"{cram}|{k}".encode()).hexdigest() + "-" + k[-5:]
                for k in self.gw.keys}
        if self.fault.refuse_key or auth not in good:
            return "Authentication failed."
        dataset = self.gw.dataset
        if fields.get("dataset") != dataset:
            return f"Unknown dataset '{fields.get('dataset')}': this gateway serves {dataset}."
        if fields.get("encoding", "dbn") != "dbn":
            return f"Unsupported encoding '{fields.get('encoding')}': only dbn."
        if self.info.compression not in ("none", "zstd"):
            return f"Unsupported compression '{self.info.compression}'."
        hb = fields.get("heartbeat_interval_s") or "30"
        if not hb.isdigit() or not HEARTBEAT_RANGE[0] <= int(hb) <= HEARTBEAT_RANGE[1]:
            return f"heartbeat_interval_s must be between 5 and 1800, was {hb}."
        self.info.heartbeat_interval_s = int(hb)
        return None

    def _subscription(self, fields: Mapping[str, str], after_start: bool) -> Subscription:
        raw_start = fields.get("start")
        start = int(raw_start) if raw_start is not None and raw_start.isdigit() else None
        sid = fields.get("id")
        sub = Subscription(
            schema=fields.get("schema", ""), stype_in=fields.get("stype_in", ""),
            symbols=[s for s in fields.get("symbols", "").split(",") if s], start=start,
            snapshot=fields.get("snapshot", "0") == "1",
            id=int(sid) if sid is not None and sid.lstrip("-").isdigit() else None,
            is_last=fields.get("is_last", "1") == "1", after_start=after_start,
            raw_start=raw_start)
        self.info.subscriptions.append(sub)
        return sub

    async def _read_until_start(self) -> bool:
        while True:
            line = await self.reader.readline()
            if not line:
                self.info.end = "client"
                await self._close("client")
                return False
            fields = _parse_line(line)
            if "start_session" in fields:
                return True
            if "schema" in fields:
                self._subscription(fields, after_start=False)
            else:
                self.info.other_lines.append(line.decode("utf-8", "replace"))

    def _resolve(self, sub: Subscription) -> tuple[list[tuple[str, int]], list[str], bool]:
        """(symbol, instrument_id) pairs, unknown symbols, and whether it is ALL_SYMBOLS."""
        if sub.symbols == ["ALL_SYMBOLS"]:
            return sorted(self.gw.symbols.items()), [], True
        found, unknown = [], []
        by_id = {v: k for k, v in self.gw.symbols.items()}
        for s in sub.symbols:
            if sub.stype_in == "raw_symbol" and s in self.gw.symbols:
                found.append((s, self.gw.symbols[s]))
            elif sub.stype_in == "instrument_id" and s.isdigit() and (
                    int(s) in by_id or int(s) in self.gw.instrument_ids):
                found.append((s, int(s)))
            else:
                unknown.append(s)
        return found, unknown, False

    def _validate(self, sub: Subscription) -> str | None:
        if sub.schema != "mbo":
            return f"Invalid subscription: the stand-in gateway serves schema mbo, not " \
                   f"'{sub.schema}'."
        if sub.stype_in not in ("raw_symbol", "instrument_id"):
            return f"Invalid subscription: stype_in '{sub.stype_in}' is not supported."
        if sub.raw_start is not None and sub.start is None:
            return f"Invalid subscription: start '{sub.raw_start}' is not UNIX nanoseconds."
        if sub.snapshot and sub.start is not None:
            return "Invalid subscription: snapshot cannot be combined with start."
        return None

    def _map(self, sub: Subscription) -> list[int]:
        """Send the mappings (and resolution errors) of ``sub``; returns its instrument ids."""
        found, unknown, all_symbols = self._resolve(sub)
        clock = self.market.clock()
        stype = dbn.SType.INSTRUMENT_ID if sub.stype_in == "instrument_id" \
            else dbn.SType.RAW_SYMBOL
        by_id = {v: k for k, v in self.gw.symbols.items()}
        for symbol, iid in found:
            self._write_record(dbn.SymbolMappingMsg(
                publisher_id=self.gw.file.publisher_id, instrument_id=iid, ts_event=clock,
                stype_in=stype, stype_in_symbol=symbol, stype_out=dbn.SType.RAW_SYMBOL,
                stype_out_symbol=by_id.get(iid, symbol), start_ts=self.gw.file.metadata.start,
                end_ts=dbn.UNDEF_TIMESTAMP))
            self.info.mappings.append((symbol, iid))
        for i, symbol in enumerate(unknown):
            self._error(f"Failed to resolve symbol: {symbol}",
                        dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED, is_last=i == len(unknown) - 1)
            self.info.unknown_symbols.append(symbol)
        if all_symbols:
            self._ids = None
        ids = [iid for _, iid in found]
        if self._ids is not None:
            self._ids = np.union1d(self._ids, np.array(ids, np.uint32)).astype(np.uint32)
        return ids

    def _mask(self, arr: np.ndarray, ids: np.ndarray | None) -> np.ndarray | None:
        """Which records belong to ``ids`` (None: all of them)."""
        if ids is None:
            return None
        iid = arr["instrument_id"]
        if len(ids) == 1:
            m = iid == ids[0]
        elif len(ids) == 0:
            return np.zeros(len(arr), bool)
        else:
            m = np.isin(iid, ids)
        return None if m.all() else m

    async def _session(self) -> None:
        info = self.info
        info.started = True
        if self.gw.start_delay_s:
            await asyncio.sleep(self.gw.start_delay_s)
        if info.compression == "zstd":
            self._compressor = zstandard.ZstdCompressor(level=1).compressobj()
        market = self.market
        p0 = market.position
        market.start()  # the first session starts the clock (rate): the market is at p0 now
        if self.gw.started_at is None:
            self.gw.started_at = time.perf_counter()
        info.start_position = p0
        subs = [s for s in info.subscriptions if not s.after_start]
        stypes = {s.stype_in for s in subs}
        stype_in = (dbn.SType(subs[0].stype_in) if len(stypes) == 1
                    and subs[0].stype_in in ("raw_symbol", "instrument_id") else None)
        meta = dbn.Metadata(dataset=self.gw.dataset, start=market.clock(p0), stype_in=stype_in,
                            stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.MBO, symbols=[],
                            partial=[], not_found=[], mappings=[], ts_out=info.ts_out,
                            version=3)
        self._write(meta.encode())
        for sub in subs:
            problem = self._validate(sub)
            if problem is not None:
                await self._fatal(problem, dbn.ErrorCode.INVALID_SUBSCRIPTION)
        if self.gw.subscription_acks:
            for sid in dict.fromkeys(s.id for s in subs):
                self._system(f"Subscription request {sid} for mbo data succeeded",
                             dbn.SystemCode.SUBSCRIPTION_ACK)
        replay: dict[int, int] = {}
        snapshot: list[int] = []
        for sub in subs:
            ids = self._map(sub)
            if sub.start is not None:
                for iid in (ids if sub.symbols != ["ALL_SYMBOLS"] else [_EVERY]):
                    replay[iid] = min(replay.get(iid, sub.start), sub.start)
            if sub.snapshot:
                snapshot.extend(ids if self._ids is not None
                                else sorted(self.gw.instrument_ids))
        await self.writer.drain()
        tasks = [asyncio.create_task(self._heartbeats()),
                 asyncio.create_task(self._listen(asyncio.current_task()))]
        try:
            if replay:
                await self._replay(replay, p0)
            if snapshot:
                await self._snapshot(list(dict.fromkeys(snapshot)), p0)
            await self._live(p0)
        finally:
            for t in tasks:
                t.cancel()

    async def _replay(self, starts: dict[int, int], p0: int) -> None:
        start = min(starts.values())
        if self.fault.replay_unavailable or self._aged_out(start, p0):
            await self._fatal(
                f"Replay data for mbo from {start} is no longer retained and the schema is "
                f"incompatible with skipping records.", dbn.ErrorCode.REPLAY_DATA_AGED_OUT)
        begun: set[int] = set()
        each = self.gw.replay_filter == "each"
        chunks = _Chunks(self.gw.file, 0, p0)
        base = 0
        try:
            while (arr := await chunks.get()) is not None:
                include = np.zeros(len(arr), bool)
                iid_col, ts = arr["instrument_id"], arr["ts_event"]
                for iid, begin in starts.items():
                    m = np.ones(len(arr), bool) if iid == _EVERY else iid_col == iid
                    if each:
                        include |= m & (ts >= begin)
                    elif iid in begun:
                        include |= m
                    else:
                        hit = m & (ts >= begin)
                        if hit.any():
                            j = int(np.argmax(hit))
                            include[j:] |= m[j:]
                            begun.add(iid)
                if include.any():
                    if self.info.replay_from is None:
                        self.info.replay_from = base + int(np.argmax(include))
                    await self._send_records(arr[include], "replayed")
                base += len(arr)
        finally:
            chunks.close()
        self._system("Finished mbo replay", dbn.SystemCode.REPLAY_COMPLETED)

    def _aged_out(self, start: int, p0: int) -> bool:
        window = self.gw.replay_window_ns
        return window is not None and start != 0 and start < self.market.clock(p0) - window

    async def _snapshot(self, ids: Sequence[int], p0: int) -> None:
        books = self.gw._books_at(p0)
        if books is None:
            await self._fatal(
                f"stand-in gateway: a snapshot needs the file in memory, and "
                f"{self.gw.file.path.name} has more than history_limit="
                f"{self.gw.file.history_limit} records", dbn.ErrorCode.INTERNAL_ERROR)
            return
        clock = self.market.clock(p0)
        for iid in ids:
            await self._send_records(books.snapshot(iid, clock, self.gw.file.publisher_id),
                                     "snapshot")

    async def _live(self, p0: int) -> None:
        market = self.market
        end = market.end
        cur = _Cursor(_Chunks(self.gw.file, p0, end), p0)
        self.info.cursor = p0
        rated = market.rate is not None
        try:
            while True:
                if end is not None and cur.pos >= end:
                    break
                target = market.target()
                if cur.pos >= target:
                    await market.wait_past(cur.pos)
                    continue
                n = min(target - cur.pos, CHUNK_RECORDS)
                blk = await cur.peek(n, whole=rated)
                if not len(blk):
                    break  # the file ended
                ids = self._ids
                mask = self._mask(blk, ids)
                cut = len(blk)
                if rated and (end is None or target < end) and not cur.exhausted:
                    cut = self._event_cut(blk, mask)
                    if cut == 0:
                        if len(blk) >= CHUNK_RECORDS:
                            cut = len(blk)  # an event larger than a chunk: send what we have
                        else:
                            await market.wait_past(target)
                            continue
                sel = blk[:cut]
                if mask is not None:
                    sel = sel[mask[:cut]]
                pos = cur.pos
                cur.advance(cut)
                lim = self._limit
                if lim is not None and self.info.records + len(sel) >= lim:
                    # a fault cuts this block: the market stops after the last record sent
                    k = lim - self.info.records
                    stop = pos + (k if mask is None else
                                  (int(np.flatnonzero(mask[:cut])[k - 1]) + 1 if k else 0))
                else:
                    stop = cur.pos
                self.info.cursor = stop
                if stop > pos:
                    market.played(stop, int(blk["ts_recv"][stop - pos - 1]))
                if len(sel):
                    await self._send_records(sel, "live")
        finally:
            cur.close()
        await self.writer.drain()
        await self._close("eof")
        self.gw._session_ended(self.info)

    @staticmethod
    def _event_cut(blk: np.ndarray, mask: np.ndarray | None) -> int:
        """Records of ``blk`` up to the last complete event of the subscribed instruments."""
        last = (blk["flags"] & F_LAST) != 0
        if mask is not None:
            if not mask.any():
                return len(blk)
            last &= mask
        if not last.any():
            return 0
        return len(blk) - int(np.argmax(last[::-1]))

    async def _heartbeats(self) -> None:
        interval = (self.info.heartbeat_interval_s or 30) * self.gw.heartbeat_scale
        tick = min(max(interval / 5, 0.01), 1.0)
        while True:
            await asyncio.sleep(tick)
            if self._silent or self.info.closed:
                continue
            if (self.writer.transport.get_write_buffer_size() == 0
                    and self.loop.time() - self._last_write >= interval):
                self._system("Heartbeat", dbn.SystemCode.HEARTBEAT)

    async def _listen(self, session: asyncio.Task[Any] | None) -> None:
        """After start_session: late subscriptions, and the client closing."""
        while True:
            line = await self.reader.readline()
            if not line:
                break
            fields = _parse_line(line)
            if "schema" not in fields:
                self.info.other_lines.append(line.decode("utf-8", "replace"))
                continue
            sub = self._subscription(fields, after_start=True)
            problem = self._validate(_without_start(sub))
            if problem is not None:
                self._error(problem, dbn.ErrorCode.INVALID_SUBSCRIPTION)
                continue
            self._map(sub)
        self.info.end = self.info.end or "client"
        if session is not None and not self._closing:
            session.cancel()


def _without_start(sub: Subscription) -> Subscription:
    """A late subscription is checked without its ``start`` (ignored after start_session)."""
    return Subscription(sub.schema, sub.stype_in, sub.symbols, None, sub.snapshot, sub.id,
                        sub.is_last, True, None)


# --------------------------------------------------------------------------------- the gateway


class StandInGateway:
    """Databento's live gateway played from one DBN MBO file (see the module docstring).

    Parameters
    ----------
    path : Path or str
        The DBN MBO file (zstd or not, any DBN version).
    instruments : mapping of str to int, optional
        Raw symbol -> instrument_id, added to (and overriding) the file's metadata mappings.
    symbols : sequence of str, optional
        Only these raw symbols resolve (default: every symbol known).
    now : int
        Market position at the start (index of the first record not yet happened).
    rate : float, optional
        File records per second the market advances (None: as fast as the socket takes them).
    end_at : int, optional
        Index where the session ends with EOF (default: the end of the file).
    faults : mapping of int to Fault, optional
        Faults per connection number (0 = first).
    keys : sequence of str
        Extra API keys accepted besides ``TEST_KEY``.
    heartbeat_scale : float
        Heartbeats every ``heartbeat_interval_s * heartbeat_scale`` of idleness (tests: < 1).
    hold_at : int, optional
        The market stops at this index until :meth:`resume`.
    replay_filter : {"first", "each"}
        Intraday replay from the first record with ``ts_event >= start`` (per instrument), or
        only records with ``ts_event >= start``.
    replay_window_ns : int, optional
        History retained for replay, back from the clock (None: the whole file).
    subscription_acks : bool
        Send SUBSCRIPTION_ACK system messages.
    history_limit : int
        Files with more records are streamed (no snapshot).
    start_delay_s : float
        Pause between ``start_session`` and the Metadata (see START_DELAY_S).
    """

    def __init__(self, path: Path | str, *, instruments: Mapping[str, int] | None = None,
                 symbols: Sequence[str] | None = None, now: int = 0,
                 rate: float | None = None, end_at: int | None = None,
                 faults: Mapping[int, Fault] | None = None, keys: Sequence[str] = (),
                 heartbeat_scale: float = 1.0, hold_at: int | None = None,
                 replay_filter: str = "first", replay_window_ns: int | None = None,
                 subscription_acks: bool = False, history_limit: int = HISTORY_LIMIT,
                 start_delay_s: float = START_DELAY_S) -> None:
        self.file = DbnFile(path, history_limit)
        self.dataset: str = self.file.metadata.dataset
        known = self.file.symbol_map()
        known.update(instruments or {})
        if symbols is not None:
            missing = [s for s in symbols if s not in known]
            if missing:
                raise ValueError(f"{self.file.path.name}: symbols {missing} not in the file's "
                                 f"mappings (have {sorted(known)}); pass instruments=")
            known = {s: known[s] for s in symbols}
        self.symbols: dict[str, int] = known
        ids = set(known.values())
        if self.file.records is not None:
            ids |= set(np.unique(self.file.records["instrument_id"]).tolist())
        self.instrument_ids: set[int] = ids
        count = self.file.count
        if count is not None and not 0 <= now <= count:
            raise ValueError(f"now={now} is outside the file's 0..{count} records")
        if end_at is not None and (end_at < now or (count is not None and end_at > count)):
            raise ValueError(f"end_at={end_at} must lie between now={now} and {count}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive records/s or None, was {rate}")
        if replay_filter not in ("first", "each"):
            raise ValueError(f"replay_filter must be 'first' or 'each', was {replay_filter!r}")
        self.now = now
        self.rate = rate
        self.end_at = end_at if end_at is not None else count
        self.faults: dict[int, Fault] = dict(faults or {})
        self.keys: list[str] = [TEST_KEY, *keys]
        self.heartbeat_scale = heartbeat_scale
        self.hold_at = hold_at
        self.replay_filter = replay_filter
        self.replay_window_ns = replay_window_ns
        self.subscription_acks = subscription_acks
        self.start_delay_s = start_delay_s
        self.connections: list[ConnectionInfo] = []
        self.errors: list[str] = []
        self.port: int = 0
        self._market: _Market | None = None
        self._books: _Books | None = None
        self._session_counter = int(time.time())
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ended: asyncio.Event | None = None
        self.sessions_ended = 0
        #: perf_counter() of the first session start and of the last session end.
        self.started_at: float | None = None
        self.ended_at: float | None = None

    # ---- public, thread-safe

    @property
    def position(self) -> int:
        """The market position (index of the record that is "now")."""
        return self._market.position if self._market is not None else self.now

    def hold(self, at: int | None = None) -> None:
        """Stop the market at ``at`` (default: where it is)."""
        self._call(lambda: self._the_market().hold(at))

    def resume(self) -> None:
        """Let a held market move on."""
        self._call(lambda: self._the_market().resume())

    def advance(self, n: int) -> None:
        """Move the market ``n`` records on without sending them (a gap for who is away)."""
        self._call(lambda: self._the_market().advance(n))

    def wait_for(self, predicate: Callable[[StandInGateway], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate(self)`` until true; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stand-in gateway: condition not met in {timeout} s")
            time.sleep(0.01)

    def _the_market(self) -> _Market:
        if self._market is None:
            raise RuntimeError("the stand-in gateway is not running")
        return self._market

    def _call(self, fn: Callable[[], None]) -> None:
        if self._loop is None or self._market is None:
            raise RuntimeError("the stand-in gateway is not running")
        if self._thread is not None and threading.current_thread() is not self._thread:
            asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop).result(5)
        else:
            fn()

    # ---- in-process use

    def __enter__(self) -> StandInGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Run the gateway's event loop in a daemon thread; returns once it listens."""
        ready: dict[str, Any] = {}
        done = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                ready["error"] = exc
                done.set()
                return
            done.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True, name="standin-gateway")
        self._thread.start()
        done.wait(30)
        if "error" in ready:
            raise ready["error"]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # ---- async core

    async def start_async(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._loop = asyncio.get_running_loop()
        self._market = _Market(self.file, self.now, self.end_at, self.rate, self.hold_at)
        self._ended = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, host, port, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop_async(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            if not conn.info.closed:
                conn.info.end = conn.info.end or "gateway_stop"
                conn.writer.transport.abort()
                conn.info.closed = True
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve_until_end(self) -> None:
        """Serve until a session has ended (EOF at the end of the market)."""
        assert self._ended is not None
        await self._ended.wait()

    def _next_session_id(self) -> int:
        self._session_counter += 1
        return self._session_counter

    def _books_at(self, pos: int) -> _Books | None:
        if self.file.records is None:
            return None
        if self._books is None:
            self._books = _Books(self.file.records)
        self._books.advance_to(pos)
        return self._books

    def _session_ended(self, info: ConnectionInfo) -> None:
        self.sessions_ended += 1
        self.ended_at = time.perf_counter()
        if self._ended is not None:
            self._ended.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.connections)
        info = ConnectionInfo(number=number)
        self.connections.append(info)
        sock = writer.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(self, reader, writer, info, self.faults.get(number, Fault()))
        self._conns.append(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        except asyncio.CancelledError:
            info.end = info.end or "gateway_stop"
        except Exception:
            info.end = "error"
            self.errors.append(traceback.format_exc())
            log.exception("stand-in gateway: connection %d failed", number)
        finally:
            if task is not None:
                self._tasks.discard(task)


async def _as_coro(fn: Callable[[], None]) -> None:
    fn()


# --------------------------------------------------------------------------------- subprocess


def _conn_value(text: str) -> tuple[int, int]:
    conn, _, value = text.partition(":")
    return int(conn), int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.live.gateway",
        description="Stand-in for Databento's live gateway, playing one DBN MBO file. Prints "
                    "'port=<n>' as its first stdout line, serves until killed or until a "
                    "session reaches the end of the market, then prints 'done records=<n> "
                    "seconds=<s> records_per_s=<r>'.")
    p.add_argument("--file", required=True, type=Path, help="DBN MBO file to play")
    p.add_argument("--symbols", default=None,
                   help="comma-separated raw symbols the gateway resolves (default: all known)")
    p.add_argument("--instrument", action="append", default=[], metavar="SYMBOL=ID",
                   help="symbol -> instrument_id, beside the file's mappings (repeatable)")
    p.add_argument("--rate", type=float, default=None,
                   help="market speed in file records/s (default: as fast as the socket)")
    p.add_argument("--now", type=int, default=0, help="market position at the start")
    p.add_argument("--end-at", type=int, default=None, help="record index ending the session")
    p.add_argument("--hold-at", type=int, default=None, help="stop the market at this index")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: ephemeral)")
    p.add_argument("--key", action="append", default=[], help="extra accepted API key")
    p.add_argument("--heartbeat-scale", type=float, default=1.0)
    p.add_argument("--history-limit", type=int, default=HISTORY_LIMIT)
    p.add_argument("--replay-filter", choices=("first", "each"), default="first")
    p.add_argument("--drop-after", action="append", default=[], metavar="CONN:N",
                   help="reset connection CONN after N records (repeatable)")
    p.add_argument("--gap", action="append", default=[], metavar="CONN:K",
                   help="the market moves K records on at CONN's drop")
    p.add_argument("--silent-after", action="append", default=[], metavar="CONN:N")
    p.add_argument("--refuse-key", action="append", default=[], type=int, metavar="CONN")
    p.add_argument("--replay-unavailable", action="append", default=[], type=int,
                   metavar="CONN")
    p.add_argument("--start-delay", type=float, default=START_DELAY_S,
                   help="seconds between start_session and the Metadata")
    p.add_argument("--keep-serving", action="store_true",
                   help="do not exit when a session reaches the end")
    return p


def _faults(args: argparse.Namespace) -> dict[int, Fault]:
    spec: dict[int, dict[str, Any]] = {}
    for text in args.drop_after:
        c, n = _conn_value(text)
        spec.setdefault(c, {})["drop_after"] = n
    for text in args.gap:
        c, n = _conn_value(text)
        spec.setdefault(c, {})["gap"] = n
    for text in args.silent_after:
        c, n = _conn_value(text)
        spec.setdefault(c, {})["silent_after"] = n
    for c in args.refuse_key:
        spec.setdefault(c, {})["refuse_key"] = True
    for c in args.replay_unavailable:
        spec.setdefault(c, {})["replay_unavailable"] = True
    return {c: Fault(**kw) for c, kw in spec.items()}


async def _serve(gw: StandInGateway, port: int, keep_serving: bool) -> None:
    await gw.start_async(port=port)
    print(f"port={gw.port}", flush=True)
    try:
        if keep_serving:
            await asyncio.Event().wait()
        await gw.serve_until_end()
    finally:
        await gw.stop_async()
    seconds = (gw.ended_at or time.perf_counter()) - (gw.started_at or time.perf_counter())
    records = sum(c.records for c in gw.connections)
    print(f"done records={records} seconds={seconds:.3f} "
          f"records_per_s={records / seconds if seconds else 0:.0f}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    instruments = {}
    for text in args.instrument:
        sym, _, iid = text.partition("=")
        instruments[sym] = int(iid)
    gw = StandInGateway(
        args.file, instruments=instruments,
        symbols=args.symbols.split(",") if args.symbols else None, now=args.now,
        rate=args.rate, end_at=args.end_at, faults=_faults(args), keys=args.key,
        heartbeat_scale=args.heartbeat_scale, hold_at=args.hold_at,
        replay_filter=args.replay_filter, history_limit=args.history_limit,
        start_delay_s=args.start_delay)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(gw, args.port, args.keep_serving))
    return 0


if __name__ == "__main__":
    sys.exit(main())
