"""A live subscription's states, converted once and fanned out to every viewer (SPEC §14).

``vpbatch live`` creates one :class:`LiveFeed` per symbol and calls :meth:`LiveFeed.publish`
from its engine thread; ``vpbatch serve``'s app (``create_app(..., live={symbol: feed})``)
attaches every ``source=live`` websocket to the symbol's feed (:class:`LiveStream`).

Three threads, none waiting for another:

* the **engine thread** calls :meth:`~LiveFeed.publish`: the newest state's snapshot row and
  2K+1 grid rows are copied as bytes (~1 us) into a one-slot mailbox (``deque(maxlen=1)``:
  appending replaces); a state replaced before it was shown is counted as skipped, and its
  counters (``n_records``, ``buy_volume``, ``sell_volume``) go to the next state shown
  (running totals travel with each state). When a viewer watches and the cap's next slot is
  due, the engine thread converts the state itself: it turns it into a
  :class:`~vpbatch.serve.protocol.State` with the bytes the raw source sends for it
  (:class:`~vpbatch.serve.view_numpy.StateConverter`: the ``vp_grid`` view's SQL, its forces
  in one compiled ``nogil`` call, ~0.1 ms a state at K=50 instead of DuckDB's ~15-30 ms),
  encodes the ``grid_update`` text (up to the per-client counters) and the Arrow frame once,
  and hands the frame to the event loop with ``call_soon_threadsafe`` (which wakes it at
  once). At most ``max_fps`` times a second: ~1 % of the engine's time at 100. Waking
  another thread for it cost ~1 ms of latency on two busy cores;
* the feed's **converter thread** shows what the engine thread left: a state offered before
  its slot, when no newer state comes within half a slot after it (a market gone quiet), the
  newest state when a viewer attaches, and the last one at the end. It never runs at the same
  time as a conversion on the engine thread (a lock the engine thread only tries);
* on the **event loop**, the frame goes into every viewer's own bounded newest-wins buffer
  (:data:`~vpbatch.serve.stream.BUFFER_STATES`); each viewer's sender task writes it, so a
  slow viewer only loses its own oldest frames (counted in its ``dropped``, their counters
  carried into its next frame) and never holds back the feed, the other viewers or the engine.

Latency of a frame: ``perf_counter_ns()`` right after its binary frame was handed to the
websocket minus ``received_ns`` of the record that made the state, per frame sent, in a
log-bucketed histogram (bounded memory, < 1.6 % relative error).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vpbatch.book.dtypes import GRID_DTYPE, SNAPSHOT_DTYPE
from vpbatch.config import EngineConfig
from vpbatch.products import Product
from vpbatch.serve import protocol
from vpbatch.serve.protocol import ADDITIVE_FIELDS, State
from vpbatch.serve.stream import BUFFER_STATES, et_text, geometry_fields
from vpbatch.serve.view_numpy import StateConverter

log = logging.getLogger(__name__)

#: Least wall time between two ``live_status`` frames (they are sent only when changed).
STATUS_INTERVAL_S: Final = 0.25
#: Default cap on converted states per second (a viewer draws at most ~60 per second; in a
#: replay catching up, the engine emits thousands).
DEFAULT_MAX_FPS: Final = 100.0
#: States the cap lets through back to back: states paced at about the cap's rate, with
#: jitter, are never held back (the cap is a GCRA with this burst).
CAP_BURST: Final = 2
#: Seconds :meth:`LiveFeed.end` waits for the converter to hand over the last state.
END_JOIN_S: Final = 5.0


class LatencyHistogram:
    """Latencies in ns, HDR-like: exact below 128 ns, else 64 log buckets per octave.

    Bounded memory (< 4,000 counters) for any session length; a percentile is its bucket's
    midpoint (relative error < 1/128), capped at the exact maximum. Thread-safe.
    """

    _SUB: Final = 7  # 2**7 = 128 exact values, then 64 sub-buckets per power of two

    def __init__(self) -> None:
        self._counts = [0] * ((64 - self._SUB) * 64 + 128)
        self._lock = threading.Lock()
        self.frames = 0
        self.max_ns = 0

    def _index(self, ns: int) -> int:
        if ns < 128:
            return ns
        shift = ns.bit_length() - self._SUB
        return 128 + (shift - 1) * 64 + ((ns >> shift) - 64)

    @staticmethod
    def _value(index: int) -> float:
        if index < 128:
            return float(index)
        shift, top = (index - 128) // 64 + 1, (index - 128) % 64 + 64
        return (top << shift) + (1 << shift) / 2

    def record(self, ns: int) -> None:
        ns = max(0, int(ns))
        with self._lock:
            self._counts[self._index(ns)] += 1
            self.frames += 1
            self.max_ns = max(self.max_ns, ns)

    def counts(self) -> list[int]:
        """A copy of the counters: a start for :meth:`summary`'s ``since``."""
        with self._lock:
            return list(self._counts)

    def percentile(self, q: float, since: list[int] | None = None) -> float | None:
        """The ``q`` quantile (0..1) in ns (of the frames after ``since``, from
        :meth:`counts`); None before the first frame."""
        with self._lock:
            counts = self._counts if since is None else \
                [now - then for now, then in zip(self._counts, since, strict=True)]
            frames = self.frames if since is None else sum(counts)
            if not frames:
                return None
            rank = max(1, math.ceil(q * frames))
            seen = 0
            for index, count in enumerate(counts):
                seen += count
                if seen >= rank:
                    return min(self._value(index), float(self.max_ns))
        return float(self.max_ns)  # pragma: no cover - counts always reach the rank

    def summary(self, since: list[int] | None = None) -> dict[str, float | int | None]:
        """``{"p50_ms", "p99_ms", "max_ms", "frames"}`` (of the frames after ``since``, from
        :meth:`counts`: then ``max_ms`` is the highest one's bucket, within 1/128)."""
        p50, p99 = self.percentile(0.50, since), self.percentile(0.99, since)
        top = self.max_ns if since is None else self.percentile(1.0, since)
        frames = self.frames if since is None else sum(self.counts()) - sum(since)
        return {"p50_ms": None if p50 is None else round(p50 / 1e6, 3),
                "p99_ms": None if p99 is None else round(p99 / 1e6, 3),
                "max_ms": round(top / 1e6, 3) if frames and top is not None else None,
                "frames": frames}


#: A state offered to the feed: snapshot bytes, grid bytes, ``received_ns``, the counters summed
#: over every state offered so far, and the fitted model's ``(call, probability)`` of the state
#: (``live --model``; None without a model).
_Offered = tuple[bytes, bytes, int, tuple[int, int, int], tuple[int, float] | None]


@dataclass
class LiveFrame:
    """One converted state, shared by every viewer (never mutated)."""

    state: State
    head: str  # ``grid_update`` without the per-client counters
    received_ns: int


@dataclass
class _Queued:
    frame: LiveFrame
    fresh: bool  # counts in the latency (not the catch-up frame a new viewer starts with)
    carry: dict[str, int] | None = None  # counters of frames this viewer dropped before it


class Viewer:
    """One websocket's bounded newest-wins buffer, filled on the event loop."""

    def __init__(self, capacity: int = BUFFER_STATES) -> None:
        self.capacity = capacity
        self.frames: deque[_Queued] = deque()
        self.status: str | None = None
        self.end_message: str | None = None
        self.ended = False
        self.changed = asyncio.Event()
        self.sent = 0
        self.dropped_total = 0
        self.dropped_since = 0
        self.last_ts_ns: int | None = None
        self.last_put: LiveFrame | None = None

    def put(self, frame: LiveFrame, *, fresh: bool = True) -> None:
        """Queue ``frame``; when full the oldest goes, its counters carried to the next."""
        if frame is self.last_put:
            return  # the catch-up frame of a new viewer, fanned out just after it attached
        self.last_put = frame
        queued = _Queued(frame, fresh)
        while len(self.frames) >= self.capacity:
            old = self.frames.popleft()
            heir = self.frames[0] if self.frames else queued
            carry = heir.carry if heir.carry is not None else {}
            for name in ADDITIVE_FIELDS:
                carry[name] = (carry.get(name, 0) + int(old.frame.state.snapshot[name])
                               + (old.carry or {}).get(name, 0))
            heir.carry = carry
            self.dropped_total += 1
            self.dropped_since += 1
        self.frames.append(queued)
        self.changed.set()

    def put_status(self, text: str) -> None:
        self.status = text
        self.changed.set()

    def end(self, message: str | None) -> None:
        self.ended = True
        self.end_message = message
        self.changed.set()

    def text(self, queued: _Queued) -> str:
        """The ``grid_update`` this viewer sends for ``queued`` (and its counters, reset)."""
        dropped, self.dropped_since = self.dropped_since, 0
        if not queued.carry:
            return queued.frame.head + protocol.grid_update_tail(dropped, self.dropped_total)
        state = queued.frame.state
        snapshot = dict(state.snapshot)
        for name, value in queued.carry.items():
            snapshot[name] += value
        return protocol.grid_update(State(state.ts_ns, state.event_id, snapshot, state.grid),
                                    dropped=dropped, dropped_total=self.dropped_total)


class LiveFeed:
    """One live subscription's states, converted once and fanned out to every viewer.

    :meth:`publish` is called from one thread (the engine's); the rest from any thread.

    Parameters
    ----------
    product : Product
        The symbol's product (tick, bucket, multiplier).
    day : datetime.date
        The session day (``dt`` of the stream and of the gold partitions).
    config : EngineConfig
        The engine's parameters (grid K, sampling, forces: the ``vp_grid`` view's).
    lake : Path or str, optional
        The lake the session is recorded to (kept for the caller; not read here).
    max_fps : float, optional
        Most states converted per second of wall time (default 100; None: no cap), on
        average: :data:`CAP_BURST` may come back to back. A state is held back only while
        states come faster than that, and then by less than ``1 / max_fps``; the newest state
        wins, the ones in between count as skipped. The first state after a pause never waits.
    """

    def __init__(self, product: Product, day: dt.date, config: EngineConfig, *,
                 lake: Path | str | None = None,
                 max_fps: float | None = DEFAULT_MAX_FPS) -> None:
        self.product = product
        self.day = day
        self.config = config
        self.lake = lake
        self.rows = 2 * config.K + 1
        self._min_interval_ns = int(1e9 / max_fps) if max_fps else 0
        self._cap_slack_ns = (CAP_BURST - 1) * self._min_interval_ns
        # The newest state offered: (snapshot bytes, grid bytes, received_ns, counters summed
        # over every state offered so far). Appending replaces it; both ends are atomic.
        self._mailbox: deque[_Offered] = deque(maxlen=1)
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        # Held by whichever thread converts (the engine's when a slot is due, else the
        # converter's); the engine thread never waits for it.
        self._converting = threading.Lock()
        self._due_ns = 0  # the cap's theoretical time of the next conversion (GCRA)
        self._leftover_wait_ns = self._min_interval_ns // 2
        self._total = [0, 0, 0]  # the engine thread's
        self._taken = (0, 0, 0)  # the converter thread's: the totals at the last state taken
        self._ending: str | None = None
        self._ended = False
        self.states_published = 0
        self.states_converted = 0
        self.convert_errors = 0
        self.last_error: str | None = None
        self.first_ts_ns: int | None = None
        self.last_ts_ns: int | None = None
        self.latency_hist = LatencyHistogram()
        self._status: dict[str, Any] = {"state": "connecting"}
        self._status_lock = threading.Lock()
        # Event-loop side (touched only on the loop, except ``_loop`` set once).
        self._loop: asyncio.AbstractEventLoop | None = None
        self.viewers: set[Viewer] = set()
        self._last_frame: LiveFrame | None = None
        self._last_status_text: str | None = None
        self._ticking = False
        self._converter: StateConverter | None = None
        self._thread = threading.Thread(target=self._convert_loop, daemon=True,
                                        name=f"vpbatch-live-{product.symbol}")
        self._thread.start()

    # -- the engine thread -----------------------------------------------------------------

    def publish(self, snapshots: np.ndarray, grid: np.ndarray, received_ns: int, *,
                model: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Offer the engine's newest states: ``SNAPSHOT_DTYPE`` rows and their ``GRID_DTYPE``
        rows (2K+1 per state, in order), read during the call only. Keeps the last state
        (two byte copies, ~1 us) and the batch's counters, and converts it at once when a
        viewer watches and the cap allows (~0.1 ms); never waits for a lock. ``received_ns``:
        ``time.perf_counter_ns()`` when the client received the record that made them.
        ``model``: a fitted model's ``(call, probability)`` of each state (``live --model``;
        NaN probability: no score), sent as the frames' ``model_call`` and
        ``model_probability`` (the viewer's second band)."""
        n = snapshots.shape[0]
        if n == 0 or self._ending is not None:
            return
        rows = self.rows
        if (snapshots.dtype is not SNAPSHOT_DTYPE and snapshots.dtype != SNAPSHOT_DTYPE) or \
                (grid.dtype is not GRID_DTYPE and grid.dtype != GRID_DTYPE):
            raise ValueError("publish: SNAPSHOT_DTYPE rows and GRID_DTYPE rows expected, got "
                             f"{snapshots.dtype} and {grid.dtype}")
        if grid.shape[0] != n * rows:
            raise ValueError(f"publish: {grid.shape[0]} grid rows for {n} states "
                             f"(expected {rows} per state)")
        snap = snapshots[n - 1:].tobytes()
        counts = _COUNTERS.unpack_from(snap, _COUNTERS_AT) if n == 1 else \
            _counters(snapshots, n)
        total = self._total
        total[0] += counts[0]
        total[1] += counts[1]
        total[2] += counts[2]
        self.states_published += n
        scored = None
        if model is not None:
            call, probability = model
            if len(call) != n or len(probability) != n:
                raise ValueError(f"publish: {len(call)} model calls for {n} states")
            scored = (int(call[n - 1]), float(probability[n - 1]))
        self._mailbox.append((snap, grid[n * rows - rows:].tobytes(), received_ns,
                              (total[0], total[1], total[2]), scored))
        if not self.viewers:
            return
        # Its slot is due and no other thread converts: show it now, from this thread (one
        # compiled call, ~0.1 ms; no hand-over to wait for). Else the converter thread will.
        if time.perf_counter_ns() >= self._due_ns - self._cap_slack_ns and \
                self._converting.acquire(blocking=False):
            try:
                self._take_and_convert()
            finally:
                self._converting.release()
        elif self._bell.empty():
            self._bell.put(None)

    # -- any thread --------------------------------------------------------------------------

    def session(self, **fields: Any) -> None:
        """Update the live session's status (``state``, ``records``, ``records_per_s``,
        ``reconnects``, ``gaps`` as ``[[from_ns, to_ns], ...]``, ``late``, ``clock_ns``, any
        other field): on ``/health`` and, when changed, in a ``live_status`` frame to every
        viewer (at most one per :data:`STATUS_INTERVAL_S`)."""
        with self._status_lock:
            self._status.update(fields)

    def status(self) -> dict[str, Any]:
        """The session fields given to :meth:`session` so far."""
        with self._status_lock:
            return dict(self._status)

    def latency(self) -> dict[str, float | int | None]:
        """Record receipt to websocket frame, over every frame sent this session:
        ``{"p50_ms", "p99_ms", "max_ms", "frames"}`` (None before the first frame)."""
        return self.latency_hist.summary()

    @property
    def pending(self) -> bool:
        """Whether a state offered waits for the converter."""
        return bool(self._mailbox) and not self._ended

    @property
    def states_skipped(self) -> int:
        """States offered that will never be shown (a newer one replaced them first)."""
        return self.states_published - self.states_converted - int(self.pending)

    def health(self) -> dict[str, Any]:
        """Session status + latency + viewers + state counters (``/health``'s ``live``)."""
        return {**self.status(), "symbol": self.product.symbol,
                "product_type": self.product.product_type, "dt": self.day.isoformat(),
                "latency": self.latency(), "viewers": len(self.viewers),
                "states_published": self.states_published,
                "states_skipped": self.states_skipped,
                "states_converted": self.states_converted,
                "dropped_total": sum(v.dropped_total for v in tuple(self.viewers)),
                "first_ts_ns": self.first_ts_ns, "last_ts_ns": self.last_ts_ns,
                "convert_errors": self.convert_errors, "last_error": self.last_error,
                "ended": self._ended}

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` was called (new viewers are refused)."""
        return self._ending is not None

    def end(self, message: str | None = None) -> None:
        """Session over (call it after the last :meth:`publish`): the last state offered is
        still converted and sent, then every viewer gets ``end`` (with ``message``) and is
        closed normally (1000). Waits up to :data:`END_JOIN_S` for the converter, so
        :meth:`latency` is final but for the frames still being written."""
        if self._ending is not None:
            return
        self._ending = message or "the live session ended"
        self.session(state="ended")
        self._bell.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(END_JOIN_S)

    # -- the converter thread ----------------------------------------------------------------

    def _convert(self, offered: _Offered) -> LiveFrame:
        """One offered state -> one shared frame: the raw source's bytes for the same state
        (:class:`~vpbatch.serve.view_numpy.StateConverter`, the ``vp_grid`` view in numpy)."""
        snap_bytes, grid_bytes, received_ns, total, scored = offered
        snaps = np.frombuffer(bytearray(snap_bytes), SNAPSHOT_DTYPE)
        grid = np.frombuffer(grid_bytes, GRID_DTYPE)
        for i, name in enumerate(ADDITIVE_FIELDS):  # since the state shown before it
            snaps[name][0] = total[i] - self._taken[i]
        self._taken = total
        if self._converter is None:
            self._converter = StateConverter(self.config)
        state = self._converter(snaps, grid)
        if scored is not None:  # as the lake's columns read: both null without a score
            call, probability = scored
            unscored = math.isnan(probability)
            state.snapshot["model_call"] = None if unscored else call
            state.snapshot["model_probability"] = None if unscored else probability
        return LiveFrame(state, protocol.grid_update_head(state), received_ns)

    def _take_and_convert(self) -> bool:
        """Convert the newest state offered, if any (the caller holds ``_converting``); whether
        one was."""
        try:
            offered = self._mailbox.pop()
        except IndexError:
            return False
        self._due_ns = max(self._due_ns, time.perf_counter_ns()) + self._min_interval_ns
        self._convert_and_send(offered)
        return True

    def _convert_loop(self) -> None:
        with self._converting:
            try:
                converter = StateConverter(self.config)
                converter.warm()  # numba's dispatch and the frame header: not on the first state
                self._converter = converter
            except Exception:  # pragma: no cover - _convert tries again and reports it
                log.exception("live %s: warming the converter failed", self.product.symbol)
        try:
            while True:
                self._bell.get()
                while not self._bell.empty():  # rung again meanwhile: one look is enough
                    self._bell.get_nowait()
                if not self.viewers:  # nobody watching: nothing to convert (the state waits)
                    if self._ending is not None:
                        break
                    continue
                # A state the engine thread left in the mailbox: shown at its slot unless a
                # newer state comes first (then the engine thread shows that one itself).
                wait_ns = (self._due_ns - self._cap_slack_ns + self._leftover_wait_ns
                           - time.perf_counter_ns())
                if self._ending is None and wait_ns > 0 and self._mailbox:
                    time.sleep(wait_ns / 1e9)
                ending = self._ending is not None  # read first: after it nothing new comes
                with self._converting:
                    self._take_and_convert()
                if ending:
                    break
        finally:
            self._ended = True
            self._to_loop(self._end_all, self._ending or "the live session ended")

    def _convert_and_send(self, offered: _Offered) -> None:
        try:
            frame = self._convert(offered)
        except Exception as exc:  # keep the feed alive; /health says why
            self.convert_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("live %s: converting a state failed", self.product.symbol)
            return
        self.states_converted += 1
        if self.first_ts_ns is None:
            self.first_ts_ns = frame.state.ts_ns
        self.last_ts_ns = frame.state.ts_ns
        self._last_frame = frame  # a viewer attaching from now on starts with it
        self._to_loop(self._fan_out, frame)

    def _to_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the server stopped: nobody to tell
            loop.call_soon_threadsafe(callback, *args)

    # -- the event loop ----------------------------------------------------------------------

    def _fan_out(self, frame: LiveFrame) -> None:
        for viewer in self.viewers:
            viewer.put(frame)

    def _end_all(self, message: str) -> None:
        self._send_status()
        for viewer in self.viewers:
            viewer.end(message)

    def attach(self) -> Viewer:
        """A new viewer (on the event loop): the current status and newest frame first."""
        self._loop = asyncio.get_running_loop()
        viewer = Viewer()
        self.viewers.add(viewer)
        viewer.put_status(self._status_text())
        if self._last_frame is not None and not self._mailbox:
            viewer.put(self._last_frame, fresh=False)  # the newest state, converted already
        if self._ended:
            viewer.end(self._ending)
        self._bell.put(None)  # convert the newest state offered while nobody watched
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(STATUS_INTERVAL_S, self._tick)
        return viewer

    def detach(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def _status_text(self) -> str:
        return protocol.live_status(wire_fields(self.health()))

    def _send_status(self) -> None:
        text = self._status_text()
        if text != self._last_status_text:
            self._last_status_text = text
            for viewer in self.viewers:
                viewer.put_status(text)

    def _tick(self) -> None:
        if not self.viewers:
            self._ticking = False
            return
        try:
            self._send_status()
        finally:
            if self._loop is not None:
                self._loop.call_later(STATUS_INTERVAL_S, self._tick)

    def runtime_fields(self) -> dict[str, Any]:
        """``runtime_config`` of a live stream (see docs/stream.md)."""
        first = self.first_ts_ns
        return {**geometry_fields(self.product, self.config), "mode": "live", "source": "live",
                "dt": self.day.isoformat(),
                "data_start_ns": str(first) if first is not None else None,
                "data_end_ns": None,
                "data_start_et": et_text(first) if first is not None else None,
                "data_end_et": None, "buffer_states": BUFFER_STATES,
                "session": wire_fields(self.status())}


def _counters_offset() -> int:
    """Byte offset of the snapshot counters: consecutive int64 fields, ADDITIVE_FIELDS order."""
    fields: Mapping[str, tuple[Any, ...]] = SNAPSHOT_DTYPE.fields or {}
    at = int(fields["n_records"][1])
    if [tuple(fields[name][:2]) for name in ADDITIVE_FIELDS] != \
            [(np.dtype(np.int64), at + 8 * i) for i in range(len(ADDITIVE_FIELDS))]:
        raise RuntimeError("SNAPSHOT_DTYPE: the counters are no longer consecutive int64")
    return at


_COUNTERS_AT: Final = _counters_offset()


_COUNTERS: Final = struct.Struct("<3q")


def _counters(snapshots: np.ndarray, n: int) -> list[int]:
    """``[n_records, buy_volume, sell_volume]`` summed over ``snapshots``."""
    try:
        block = np.ndarray((n, 3), np.int64, buffer=snapshots, offset=_COUNTERS_AT,
                           strides=(snapshots.strides[0], 8))
        return block.sum(axis=0).tolist()
    except (BufferError, ValueError, TypeError):  # not one contiguous block: by field
        return [int(snapshots[name].sum()) for name in ADDITIVE_FIELDS]


def wire_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Epoch-ns values as strings (exact in JavaScript): ``*_ns`` fields and ``gaps``."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "gaps" and isinstance(value, (list, tuple)):
            value = [[_ns_text(v) for v in gap] if isinstance(gap, (list, tuple)) else gap
                     for gap in value]
        elif name.endswith("_ns"):
            value = _ns_text(value)
        out[name] = value
    return out


def _ns_text(value: Any) -> Any:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return value


class LiveStream:
    """One ``source=live`` websocket: ``runtime_config``, then the feed's frames as they
    come, ``live_status`` when it changes, ``end`` and close 1000 when the session ends."""

    def __init__(self, websocket: WebSocket, feed: LiveFeed) -> None:
        self.ws = websocket
        self.feed = feed

    async def run(self) -> None:
        viewer = self.feed.attach()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.ws.send_text(protocol.runtime_config(self.feed.runtime_fields()))
            tasks = [asyncio.create_task(self._send(viewer), name="vpbatch-live-send"),
                     asyncio.create_task(self._control(), name="vpbatch-live-control")]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    await self._fail(task.exception())
                    break
        except (WebSocketDisconnect, OSError):
            pass
        finally:
            self.feed.detach(viewer)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(protocol.CLOSE_NORMAL)

    async def _fail(self, exc: BaseException | None) -> None:
        if exc is None or isinstance(exc, (WebSocketDisconnect, OSError)):
            return
        log.error("live %s: stream failed: %r", self.feed.product.symbol, exc)
        with contextlib.suppress(Exception):
            await self.ws.send_text(protocol.error(f"internal error: {exc!r}"))
            await self.ws.close(protocol.CLOSE_INTERNAL_ERROR)

    async def _send(self, viewer: Viewer) -> None:
        ws, hist = self.ws, self.feed.latency_hist
        while True:
            viewer.changed.clear()
            if viewer.status is not None:
                text, viewer.status = viewer.status, None
                await ws.send_text(text)
            elif viewer.frames:
                queued = viewer.frames.popleft()
                await ws.send_text(viewer.text(queued))
                await ws.send_bytes(queued.frame.state.grid)
                if queued.fresh:
                    hist.record(time.perf_counter_ns() - queued.frame.received_ns)
                viewer.sent += 1
                viewer.last_ts_ns = queued.frame.state.ts_ns
            elif viewer.ended:
                await ws.send_text(protocol.end(
                    reason="session_ended", message=viewer.end_message,
                    states_sent=viewer.sent, dropped_total=viewer.dropped_total,
                    last_ts_ns=str(viewer.last_ts_ns) if viewer.last_ts_ns else None))
                await ws.close(protocol.CLOSE_NORMAL)
                return
            else:
                await viewer.changed.wait()

    async def _control(self) -> None:
        """Replay controls do not apply: each is answered with an error frame (the stream
        goes on)."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                kind = json.loads(message.get("text") or "").get("type")
            except (ValueError, AttributeError):
                kind = None
            await self.ws.send_text(protocol.dumps({
                "type": "error", "control": str(kind)[:40] if kind else None,
                "message": f"control: {str(kind)[:40] if kind else 'a message'} does not apply "
                           "to a live stream (no pause, resume, speed or seek); the stream "
                           "goes on"}))
