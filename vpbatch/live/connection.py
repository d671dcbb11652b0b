"""The Databento live connection, owned by vpbatch: bulk decoding, reconnects without loss or
doubles.

The official client's protocol class (``databento.live.protocol.DatabentoLiveProtocol``,
which the client documents for low-level control) speaks to the gateway: greeting, CRAM
authentication, subscription lines, ``start_session``. After that the DBN stream is decoded
here in bulk: runs of MBO records are cut from each socket read with one vectorised check
(:func:`vpbatch.ingest.dbn_file.split_records`, the reader's own walk) and go on as bytes;
only the few records of other types (symbol mappings, system and error messages) become
Python objects, through ``databento_dbn``'s decoder (upgraded to DBN v3 like the client's).
``databento.Live`` makes a Python object and several calls per record: 0.44M records/s
before any work is done on them (BENCHMARKS.md); a day replayed at the gateway's speed
needs more.

vpbatch also owns what the client's ``reconnect_policy`` gets wrong for a recording
(LIVE.md): after a drop or a silent gateway it connects again with intraday replay from the
``ts_event`` of the last delivered MBO record and drops, by exact identity (all 56 bytes), the
replayed records that were already delivered. Where the gateway cannot replay, it re-syncs
from a snapshot and reports the gap. Authentication, entitlement and symbol errors end the
session at once.

Records reach one :class:`Subscriber` per instrument, on the connection's event loop thread,
as whole events (runs of records ending with ``F_LAST``, which Databento sets per
instrument).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import databento_dbn as dbn
import numpy as np
from databento.live.protocol import DatabentoLiveProtocol

from vpbatch.book.dtypes import F_LAST, F_SNAPSHOT, MBO_DTYPE
from vpbatch.errors import VpbatchError, one_line
from vpbatch.ingest.dbn_file import MBO_SIZE, RecordError, split_records

log = logging.getLogger(__name__)

#: Delivered MBO records kept to recognise a replayed overlap (14 MB).
RECENT_RECORDS: Final = 1 << 18
#: Bytes queued for one engine before the socket stops being read, and where it resumes.
BACKLOG_PAUSE: Final = 64 << 20
BACKLOG_RESUME: Final = 16 << 20
#: Reconnect attempts in a row (without a record in between) before giving up.
MAX_ATTEMPTS: Final = 8
#: The client's own timeouts (databento.live.session).
CONNECT_SECONDS: Final = 10.0
AUTH_SECONDS: Final = 30.0
#: Silence past the heartbeat interval + this is a dropped connection (as the client).
HEARTBEAT_MARGIN_SECONDS: Final = 10.0
DEFAULT_PORT: Final = 13000
#: Texts of a refused connection that no reconnect can cure (SPEC §14: exit 3, no retry).
_FATAL_WORDS: Final = ("auth", "api key", "entitle", "licens", "permission")
#: Gateway error codes that no reconnect can cure.
_FATAL_CODES: Final = (dbn.ErrorCode.AUTH_FAILED, dbn.ErrorCode.API_KEY_DEACTIVATED,
                       dbn.ErrorCode.CONNECTION_LIMIT_EXCEEDED,
                       dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED,
                       dbn.ErrorCode.INVALID_SUBSCRIPTION)


class LiveError(VpbatchError):
    """Authentication, entitlement or symbol error from the live gateway (exit code 3)."""

    exit_code = 3


class Subscriber(Protocol):
    """Where one instrument's records go (called on the connection's thread; must not block)."""

    def event(self, data: bytes, received_ns: int) -> None: ...
    def other(self, data: bytes) -> None: ...
    def heartbeat(self, ts_ns: int) -> None: ...
    def backlog(self) -> int: ...


@dataclass
class Reconnect:
    """One reconnect: when, from which ``ts_event`` it replayed, what it dropped."""

    at_ns: int
    reason: str
    replay_from_ns: int | None
    duplicates: int = 0
    snapshot: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"at_ns": self.at_ns, "reason": self.reason,
                "replay_from_ns": self.replay_from_ns, "duplicates": self.duplicates,
                "snapshot": self.snapshot}


@dataclass
class ConnectionStats:
    records: int = 0
    events: int = 0
    heartbeats: int = 0
    duplicates: int = 0
    unrouted: int = 0
    state: str = "connecting"
    reconnects: list[Reconnect] = field(default_factory=list)
    gaps: list[tuple[int, int | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dedup_window_short: int = 0


class _GatewayProtocol(DatabentoLiveProtocol):
    """The official protocol until the session starts; then the raw bytes go to ``on_data``."""

    def __init__(self, on_data: Callable[[memoryview], None], key: str, dataset: str,
                 heartbeat_s: int) -> None:
        super().__init__(api_key=key, dataset=dataset, heartbeat_interval_s=heartbeat_s)
        self._on_data = on_data
        self._buffer: bytearray = bytearray()
        self.last_data = time.monotonic()

    def get_buffer(self, sizehint: int) -> bytearray:
        self._buffer = super().get_buffer(sizehint)
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.last_data = time.monotonic()
        if self.authenticated.done():
            self._on_data(memoryview(self._buffer)[:nbytes])
        else:
            super().buffer_updated(nbytes)


class Connection:
    """One subscription (one or more symbols, one dataset) for as long as the session lasts.

    Parameters
    ----------
    key, dataset, symbols : the subscription.
    subscribers : raw symbol -> its :class:`Subscriber`.
    start_ns : intraday replay start of the first connection (None: no replay).
    snapshot : ask for an MBO snapshot on the first connection.
    gateway, port : another gateway than Databento's (tests, on-premise).
    heartbeat_s : the gateway's heartbeat interval; silence past it + 10 s is a drop.
    """

    def __init__(self, *, key: str, dataset: str, symbols: list[str],
                 subscribers: Mapping[str, Subscriber], start_ns: int | None, snapshot: bool,
                 gateway: str | None = None, port: int = DEFAULT_PORT,
                 heartbeat_s: int = 30) -> None:
        self.key = key
        self.dataset = dataset
        self.symbols = symbols
        self._by_symbol = dict(subscribers)
        self._by_id: dict[int, Subscriber] = {}
        self._pending: dict[int, list[bytes]] = {}  # per instrument: an event not yet whole
        self._mapped: set[str] = set()
        self.start_ns = start_ns
        self.snapshot = snapshot
        self.gateway = gateway
        self.port = port
        self.heartbeat_s = heartbeat_s
        self.stats = ConnectionStats()
        self._recent: collections.deque[np.ndarray] = collections.deque()
        self._recent_count = 0
        self._seen: collections.Counter[bytes] = collections.Counter()
        self._last_ts: int | None = None
        self._fatal: str | None = None
        self._ended_by: str | None = None  # an error that ends this connection (not fatal)
        self._replay_aged_out = False
        self._gap_open = False
        self._stopping = threading.Event()
        self._closed = False
        self._transport: asyncio.Transport | None = None
        self._stash = bytearray()
        self._paused = False
        self._metadata_done = False
        self._decoder: Any = None
        # The connection runs on this loop (ours, so that :meth:`close` can wait for the
        # data handler in progress).
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vpbatch-live-client",
                         daemon=True).start()

    # -- the stream (the loop's thread) -------------------------------------------------

    def _on_data(self, data: memoryview) -> None:
        if self._closed:  # the session is ending: nothing more goes anywhere
            return
        received = time.perf_counter_ns()
        self._stash += data
        if not self._metadata_done and not self._read_metadata():
            return
        raw = bytes(self._stash)
        try:
            runs, end = split_records(np.frombuffer(raw, np.uint8), len(raw))
        except RecordError as exc:
            self._end_connection(f"live gateway: corrupt DBN stream ({exc})")
            return
        at = 0
        for start, count in runs:
            if start > at:
                self._others(raw[at:start])
            stop = start + count * MBO_SIZE
            self._mbo(np.frombuffer(raw, MBO_DTYPE, count, start), received)
            at = stop
        if end > at:
            self._others(raw[at:end])
        del self._stash[:end]
        if self._transport is not None and not self._paused \
                and any(sub.backlog() > BACKLOG_PAUSE for sub in self._by_symbol.values()):
            self._paused = True
            self._transport.pause_reading()
            self._loop.call_later(0.002, self._resume_when_drained)

    def _resume_when_drained(self) -> None:
        if not self._paused or self._transport is None:
            self._paused = False
            return
        if any(sub.backlog() > BACKLOG_RESUME for sub in self._by_symbol.values()):
            self._loop.call_later(0.002, self._resume_when_drained)
            return
        self._paused = False
        self._transport.resume_reading()

    def _read_metadata(self) -> bool:
        """The stream's DBN metadata, once per connection; False until it is whole."""
        stash = self._stash
        if len(stash) < 8:
            return False
        if bytes(stash[:3]) != b"DBN":
            self._end_connection("live gateway: the stream is not DBN")
            return False
        size = 8 + int.from_bytes(stash[4:8], "little")
        if len(stash) < size:
            return False
        self._decoder = dbn.DBNDecoder(
            upgrade_policy=dbn.VersionUpgradePolicy.UPGRADE_TO_V3)  # type: ignore[arg-type]
        self._decoder.write(bytes(stash[:size]))
        self._decoder.decode()
        del stash[:size]
        self._metadata_done = True
        return True

    def _mbo(self, records: np.ndarray, received_ns: int) -> None:
        if self._seen:
            records = self._drop_doubles(records)
            if not len(records):
                return
        self._remember(records)
        self._last_ts = int(records["ts_event"][-1])
        self.stats.records += len(records)
        if self._gap_open:
            live = np.flatnonzero((records["flags"] & F_SNAPSHOT) == 0)
            if len(live):
                self._close_gap(int(records["ts_event"][live[0]]))
        ids = records["instrument_id"]
        first = int(ids[0])
        if ids[-1] == first and (ids == first).all():
            self._route(first, records, received_ns)
            return
        for iid in np.unique(ids).tolist():
            self._route(iid, records[ids == iid], received_ns)

    def _route(self, iid: int, records: np.ndarray, received_ns: int) -> None:
        """Whole events to the instrument's subscriber; the unfinished one waits."""
        sub = self._by_id.get(iid)
        if sub is None:
            self.stats.unrouted += len(records)
            return
        pending = self._pending[iid]
        ends = np.flatnonzero(records["flags"] & F_LAST)
        if not len(ends):
            pending.append(records.tobytes())
            return
        cut = int(ends[-1]) + 1
        head = records[:cut].tobytes()
        if pending:
            head = b"".join([*pending, head])
            pending.clear()
        if cut < len(records):
            pending.append(records[cut:].tobytes())
        self.stats.events += len(ends)
        sub.event(head, received_ns)

    def _drop_doubles(self, records: np.ndarray) -> np.ndarray:
        """After a reconnect: the replayed records that were delivered before the drop."""
        rows = records.tobytes()
        keep = np.ones(len(records), bool)
        seen = self._seen
        for i in range(len(records)):
            row = rows[i * MBO_SIZE:(i + 1) * MBO_SIZE]
            if seen[row]:
                seen[row] -= 1
                if not seen[row]:
                    del seen[row]
                keep[i] = False
                if not seen:
                    break
        dropped = int(len(records) - keep.sum())
        self.stats.duplicates += dropped
        self.stats.reconnects[-1].duplicates += dropped
        return records if dropped == 0 else records[keep]

    def _remember(self, records: np.ndarray) -> None:
        self._recent.append(records)
        self._recent_count += len(records)
        while self._recent_count - len(self._recent[0]) >= RECENT_RECORDS:
            self._recent_count -= len(self._recent.popleft())

    def _others(self, raw: bytes) -> None:
        """Records of other types (whole, in stream order) through databento_dbn."""
        for record in self._decoder.write_and_decode(raw):
            if isinstance(record, dbn.SymbolMappingMsg):
                self._map(record)
            elif isinstance(record, dbn.SystemMsg):
                self._system(record)
            elif isinstance(record, dbn.ErrorMsg):
                self._gateway_error(record)

    def _gateway_error(self, record: Any) -> None:
        """Fatal codes end the session (exit 3); an aged-out replay is re-synced from a
        snapshot; anything else (records skipped after slow reading, internal errors) ends
        this connection, and the reconnect's replay closes the gap."""
        text = str(record.err)
        self.stats.errors.append(text)
        code = record.code
        if code in _FATAL_CODES:
            self._fatal = f"live gateway: {text}"
        elif code == dbn.ErrorCode.REPLAY_DATA_AGED_OUT:
            self._replay_aged_out = True
            if self._last_ts is None:  # the first subscription: nothing to re-sync from
                self._fatal = (f"live gateway: {text} (the replay of --dt starts too long "
                               f"ago; use --warm snapshot or --warm none)")
        self._end_connection(f"live gateway: {text}")

    def _map(self, record: Any) -> None:
        symbol = str(record.stype_in_symbol)
        sub = self._by_symbol.get(symbol)
        if sub is None:
            return
        iid = int(record.instrument_id)
        self._by_id[iid] = sub
        self._pending.setdefault(iid, [])
        if symbol not in self._mapped:  # a reconnect maps again: the recording keeps one
            self._mapped.add(symbol)
            sub.other(bytes(record))

    def _system(self, record: Any) -> None:
        data = bytes(record)
        subs = list(dict.fromkeys(self._by_id.values()))
        if record.is_heartbeat():
            self.stats.heartbeats += 1
            for sub in subs:
                sub.other(data)
                sub.heartbeat(int(record.ts_event))
            return
        for sub in subs:
            sub.other(data)
        if "replay" in str(record.msg).lower():
            self._seen.clear()  # whatever was not replayed again was not a double
            self._set_state("live")

    def _close_gap(self, ts: int) -> None:
        start, _ = self.stats.gaps[-1]
        self.stats.gaps[-1] = (start, ts)
        self._gap_open = False

    def _end_connection(self, reason: str) -> None:
        if self._ended_by is None:
            self._ended_by = reason
        if self._transport is not None:
            self._transport.close()

    # -- the session ---------------------------------------------------------------------

    def run(self) -> None:
        """Connect and stream until the gateway ends the session or :meth:`stop`.

        Raises
        ------
        LiveError
            Authentication, entitlement or symbol errors, or no connection after
            :data:`MAX_ATTEMPTS` tries.
        """
        attempts = 0
        start, snapshot = self.start_ns, self.snapshot
        self._set_state("replaying" if start is not None else "live")
        while not self._stopping.is_set():
            records_before = self.stats.records
            error = self._connect_once(start, snapshot)
            if self._fatal is not None:
                raise LiveError(self._fatal)
            if error is None or self._stopping.is_set():
                self._set_state("ended")
                return
            attempts = 0 if self.stats.records > records_before else attempts + 1
            if attempts >= MAX_ATTEMPTS:
                raise LiveError(f"live gateway: gave up after {attempts} failed connections "
                                f"({error})")
            replay_failed, self._replay_aged_out = self._replay_aged_out, False
            start, snapshot = self._plan_reconnect(error, replay_failed)
            time.sleep(min(0.1 * 2 ** max(attempts - 1, 0), 5.0))

    def _plan_reconnect(self, reason: str, replay_failed: bool) -> tuple[int | None, bool]:
        """Replay from the last delivered record, or (when replay failed) a snapshot."""
        self._set_state("reconnecting")
        now = time.time_ns()
        if self._last_ts is None:  # nothing delivered yet: start over
            self.stats.reconnects.append(Reconnect(now, reason, self.start_ns,
                                                   snapshot=self.snapshot))
            return self.start_ns, self.snapshot
        # An event cut by the drop stays pending: the replay repeats its delivered records
        # (dropped as doubles) and then brings the rest.
        if replay_failed:
            self._seen.clear()
            for iid, pending in self._pending.items():  # the rest of a cut event is lost
                if pending:
                    self._by_id[iid].event(b"".join(pending), time.perf_counter_ns())
                    pending.clear()
            self.stats.gaps.append((self._last_ts, None))
            self._gap_open = True
            self.stats.reconnects.append(Reconnect(now, reason, None, snapshot=True))
            return None, True
        last = self._last_ts
        # Every recently delivered record, not only those at or after ``last``: ts_event is
        # not monotone (snapshot records keep their orders' times), so the replay from the
        # first record at or after ``last`` may repeat records with an earlier ts_event.
        # Whatever the replay does not repeat is forgotten at "Finished mbo replay".
        if self._recent_count >= RECENT_RECORDS \
                and int(self._recent[0]["ts_event"].min()) >= last:
            self.stats.dedup_window_short += 1
        blob = b"".join(r.tobytes() for r in self._recent)
        self._seen = collections.Counter(blob[i:i + MBO_SIZE]
                                         for i in range(0, len(blob), MBO_SIZE))
        self.stats.reconnects.append(Reconnect(now, reason, last))
        return last, False

    def _connect_once(self, start: int | None, snapshot: bool) -> str | None:
        """One connection; None when it ended cleanly, else why it broke."""
        future = asyncio.run_coroutine_threadsafe(self._session(start, snapshot), self._loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C, SIGTERM: the session ends here, cleanly
            self.stop()
            with contextlib.suppress(Exception):
                future.result(CONNECT_SECONDS)
            raise

    async def _session(self, start: int | None, snapshot: bool) -> str | None:
        host = self.gateway or f"{self.dataset.lower().replace('.', '-')}.lsg.databento.com"
        self._stash.clear()
        self._metadata_done = False
        self._ended_by = None
        self._paused = False
        try:
            transport, protocol = await asyncio.wait_for(self._loop.create_connection(
                lambda: _GatewayProtocol(self._on_data, self.key, self.dataset,
                                         self.heartbeat_s), host, self.port), CONNECT_SECONDS)
        except (TimeoutError, OSError) as exc:
            return f"cannot connect to {host}:{self.port} ({one_line(exc) or 'timed out'})"
        self._transport = transport
        try:
            try:
                await asyncio.wait_for(protocol.authenticated, AUTH_SECONDS)
            except TimeoutError:
                return f"{host}:{self.port}: authentication timed out"
            except Exception as exc:
                text = one_line(exc)
                self._fatal = f"live gateway: {text}"  # a refused key is never retried
                return text
            if self._stopping.is_set():
                return None
            protocol.subscribe(schema="mbo", symbols=self.symbols, stype_in="raw_symbol",
                               start=start, snapshot=snapshot)
            protocol.start()
            if start is not None and self.stats.reconnects:
                self._set_state("replaying")
            elif start is None:
                self._set_state("live")
            watch = self._loop.create_task(self._watch(protocol, transport))
            try:
                await protocol.disconnected
                return self._ended_by
            except Exception as exc:
                return self._ended_by or one_line(exc) or type(exc).__name__
            finally:
                watch.cancel()
        finally:
            transport.close()
            self._transport = None

    async def _watch(self, protocol: _GatewayProtocol, transport: asyncio.Transport) -> None:
        """A gateway silent past heartbeat + 10 s counts as a dropped connection."""
        limit = self.heartbeat_s + HEARTBEAT_MARGIN_SECONDS
        while True:
            await asyncio.sleep(0.5)
            if self._paused:  # we stopped reading, the gateway did not stop sending
                protocol.last_data = time.monotonic()
                continue
            silent = time.monotonic() - protocol.last_data
            if silent > limit:
                self._ended_by = f"Gateway timeout: {silent:.0f} s since the last message"
                transport.abort()
                return

    def stop(self) -> None:
        """End the session (any thread): the records already received are kept."""
        self._stopping.set()
        with contextlib.suppress(RuntimeError):  # the loop is already stopped
            self._loop.call_soon_threadsafe(self._close_transport)

    def _close_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        """After :meth:`run`: deliver nothing more (waits for the handler in progress), and
        hand an event the session cut short to its subscriber."""
        self._closed = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        for iid, pending in self._pending.items():
            if pending:
                self._by_id[iid].event(b"".join(pending), time.perf_counter_ns())
                pending.clear()

    def _set_state(self, state: str) -> None:
        if self.stats.state != state:
            self.stats.state = state
