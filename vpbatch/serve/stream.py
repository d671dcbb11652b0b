"""One websocket stream: pacing, a bounded newest-wins buffer, client controls, cleanup.

Three tasks per connection, all owned by :class:`Stream` and cancelled in one ``finally``:

* the producer pulls state batches from the source in the stream's own worker thread (the
  engine and Parquet decoding never run on the event loop), waits until each state is due on
  the wall clock and puts it in the buffer;
* the sender takes states from the buffer and writes the ``grid_update`` + binary frame pair;
* the control reader applies ``pause``/``resume``/``speed``/``seek`` while streaming.

Pacing is anchored to the wall clock (:class:`Pacer`): a state with event time ``e`` is due at
``wall0 + (e - event0) / speed``, re-anchored only when the speed changes, on resume and on seek,
so no drift accumulates. At ``speed > 0`` a slow client never holds the producer back: the
buffer keeps the newest :data:`BUFFER_STATES` states and counts the ones it drops. At
``speed = 0`` (as fast as possible) there is no clock to keep, so the stream is lossless and
flow-controlled: the producer waits for room instead of dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vpbatch.clock import NEW_YORK, NS_PER_SECOND, et_ns, parse_wall_time
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError, VpbatchError
from vpbatch.products import Product
from vpbatch.serve import protocol
from vpbatch.serve.protocol import ADDITIVE_FIELDS, State
from vpbatch.serve.request import StreamRequest, parse_speed
from vpbatch.serve.sources import Source, throttle
from vpbatch.store.schema import grid_view_schema

#: States waiting for a slow client before the oldest is dropped (speed > 0).
BUFFER_STATES: Final = 4
#: States queued ahead of the client at speed 0 (lossless; fewer wake-ups per state).
LOSSLESS_STATES: Final = 32
#: Seconds a disconnected stream may take to stop its worker thread.
STOP_TIMEOUT_S: Final = 1.0
_END: Final = object()


class Pacer:
    """Event time -> wall time, anchored at the stream start and at every change."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.speed = speed
        self.paused = False
        self._clock = clock
        self._wall0: float | None = None
        self._event0 = 0
        self._paused_at: int | None = None

    def anchor(self, event_ns: int) -> None:
        """From now on, ``event_ns`` is due now."""
        self._wall0 = self._clock()
        self._event0 = event_ns

    def reset(self) -> None:
        """The next state sets the anchor (after a seek, also one made while paused)."""
        self._wall0 = None
        self._paused_at = None

    def position(self) -> int | None:
        """Event time the wall clock has reached (None before the first state)."""
        if self._wall0 is None:
            return None
        return self._event0 + int((self._clock() - self._wall0) * self.speed * NS_PER_SECOND)

    def delay(self, event_ns: int) -> float:
        """Seconds until ``event_ns`` is due (<= 0: due now). The first state anchors."""
        if self.speed == 0:
            return 0.0
        if self._wall0 is None:
            self.anchor(event_ns)
            return 0.0
        return self._wall0 + (event_ns - self._event0) / NS_PER_SECOND / self.speed - self._clock()

    def set_speed(self, speed: float, pending_ns: int | None) -> None:
        """Change speed without a jump: re-anchor at the event time reached so far."""
        here = self._here(pending_ns)
        self.speed = speed
        if here is None or speed == 0:
            self._wall0 = None
        else:
            self.anchor(here)

    def pause(self, pending_ns: int | None) -> None:
        self._paused_at = self._here(pending_ns)
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        here = self._paused_at
        if here is None or self.speed == 0:
            self._wall0 = None
        else:
            self.anchor(here)

    def _here(self, pending_ns: int | None) -> int | None:
        # Never past the state the producer is about to send: a late producer must not make
        # the next states look even later (no burst after a change).
        pos = self.position() if self.speed else None
        if pos is None:
            return pending_ns
        return pos if pending_ns is None else min(pos, pending_ns)


class StateBuffer:
    """Bounded FIFO of states; at capacity the oldest is dropped (its counters move on)."""

    def __init__(self, capacity: int = BUFFER_STATES,
                 lossless_capacity: int = LOSSLESS_STATES) -> None:
        self.capacity = capacity
        self.lossless_capacity = lossless_capacity
        self._items: deque[State] = deque()
        self._ended = False
        self._changed = asyncio.Event()
        self.dropped_total = 0
        self._dropped_since = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_newest(self, state: State) -> None:
        """Add ``state``; drop the oldest when full (never blocks)."""
        while len(self._items) >= self.capacity:
            old = self._items.popleft()
            heir = self._items[0] if self._items else state
            for name in ADDITIVE_FIELDS:
                heir.snapshot[name] += old.snapshot[name]
            self.dropped_total += 1
            self._dropped_since += 1
        self._items.append(state)
        self._changed.set()

    async def put_wait(self, state: State, interrupted: Callable[[], bool]) -> bool:
        """Add ``state`` when there is room (lossless); False if ``interrupted()`` first."""
        while len(self._items) >= self.lossless_capacity:
            if interrupted():
                return False
            self._changed.clear()
            await self._changed.wait()
        self._items.append(state)
        self._changed.set()
        return True

    def end(self) -> None:
        self._ended = True
        self._changed.set()

    def clear(self) -> None:
        """Forget queued states (after a seek)."""
        self._items.clear()
        self._changed.set()

    def wake(self) -> None:
        self._changed.set()

    async def get(self) -> State | object:
        """The oldest state, or ``_END`` once ended and drained."""
        while not self._items:
            if self._ended:
                return _END
            self._changed.clear()
            await self._changed.wait()
        state = self._items.popleft()
        self._changed.set()
        return state

    def take_dropped(self) -> int:
        n, self._dropped_since = self._dropped_since, 0
        return n


def et_text(ns: int) -> str:
    """``HH:MM:SS.mmm`` America/New_York."""
    stamp = dt.datetime.fromtimestamp(ns // NS_PER_SECOND, tz=NEW_YORK)
    return f"{stamp:%H:%M:%S}.{ns % NS_PER_SECOND // 1_000_000:03d}"


def geometry_fields(product: Product, config: EngineConfig) -> dict[str, Any]:
    """The product and grid part of ``runtime_config`` (replay and live streams)."""
    sample = (f"{config.sample_ns / 1e6:g}ms" if config.sample == "time" else config.sample)
    return {
        "product_type": product.product_type, "symbol": product.symbol,
        "symbol_root": product.root, "tick_size": product.tick_size,
        "bucket_size_dollars": product.bucket_size, "grid_max_ticks": config.K,
        "grid_rows": 2 * config.K + 1, "contract_multiplier": product.multiplier,
        "grid_schema_fields": protocol.schema_fields(grid_view_schema()), "sample": sample,
    }


def runtime_fields(source: Source, req: StreamRequest) -> dict[str, Any]:
    """Everything ``runtime_config`` says about the stream (see docs/stream.md)."""
    info = source.info
    geometry = geometry_fields(info.product, info.config)
    return {
        **{k: v for k, v in geometry.items() if k not in ("grid_schema_fields", "sample")},
        "mode": "replay", "grid_schema_fields": geometry["grid_schema_fields"],
        "source": info.source, "sample": geometry["sample"], "dt": info.day.isoformat(),
        "data_start_ns": str(info.first_ns),
        "data_end_ns": str(info.last_ns) if info.last_ns is not None else None,
        "data_start_et": et_text(info.first_ns),
        "data_end_et": et_text(info.last_ns) if info.last_ns is not None else None,
        "speed": req.speed, "throttle_ms": req.throttle_ms,
        "start_time": req.start_time.isoformat() if req.start_time else None,
        "end_time": req.end_time.isoformat() if req.end_time else None,
        "buffer_states": BUFFER_STATES, **info.extra,
    }


class Stream:
    """Everything one websocket connection started, and its end."""

    def __init__(self, websocket: WebSocket, source: Source,
                 req: StreamRequest) -> None:
        self.ws = websocket
        self.source = source
        self.req = req
        self.pacer = Pacer(req.speed)
        self.buffer = StateBuffer()
        self.sent = 0
        self.last_sent_ns: int | None = None
        self._start_ns = et_ns(req.day, req.start_time) if req.start_time else None
        self._end_ns = et_ns(req.day, req.end_time) if req.end_time else None
        self._seek_to: int | None = None
        self._pending_ns: int | None = None
        self._changed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpbatch-stream")
        self._iter: Iterator[list[State]] | None = None

    # -- the producer ------------------------------------------------------------------------

    def _open(self, from_ns: int | None) -> Iterator[list[State]]:
        return throttle(self.source.states(from_ns), self.req.throttle_ns)

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def _produce(self) -> None:
        from_ns = self._start_ns
        while True:
            self._iter = await self._in_worker(self._open, from_ns)
            seek = None
            # A seek while paused shows the state it landed on, then waits for resume.
            preview = from_ns != self._start_ns and self.pacer.paused
            while seek is None:
                batch = await self._in_worker(next, self._iter, None)
                if batch is None:
                    self.buffer.end()
                    return
                for state in batch:
                    if self._end_ns is not None and state.ts_ns >= self._end_ns:
                        self.buffer.end()
                        return
                    self._pending_ns = state.ts_ns
                    if preview:
                        preview = False
                        self.buffer.put_newest(state)
                        continue
                    seek = await self._wait_due(state.ts_ns)
                    if seek is not None:
                        break
                    if self.pacer.speed == 0:
                        if not await self.buffer.put_wait(state, self._interrupted):
                            seek = self._take_seek()
                            break
                    else:
                        self.buffer.put_newest(state)
                        # The sender's turn before the next state: states that fell due
                        # together (after a wait for the source, or a busy event loop) go out
                        # one by one instead of overflowing the buffer. Only a sender held up
                        # by the client's socket lets the buffer fill and drop.
                        await asyncio.sleep(0)
            await self._in_worker(_close, self._iter)
            self._iter = None
            from_ns = seek
            self.pacer.reset()
            self.buffer.clear()

    def _interrupted(self) -> bool:
        return self._seek_to is not None

    def _take_seek(self) -> int | None:
        seek, self._seek_to = self._seek_to, None
        return seek

    async def _wait_due(self, event_ns: int) -> int | None:
        """Sleep until ``event_ns`` is due (pausable); returns a seek target if one came in."""
        while True:
            self._changed.clear()
            if self._seek_to is not None:
                return self._take_seek()
            if self.pacer.paused:
                await self._changed.wait()
                continue
            delay = self.pacer.delay(event_ns)
            if delay <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)

    # -- the sender --------------------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            item = await self.buffer.get()
            if not isinstance(item, State):
                await self._send_text(protocol.end(
                    reason="end_time" if self._end_ns is not None else "end_of_data",
                    states_sent=self.sent, dropped_total=self.buffer.dropped_total,
                    last_ts_ns=str(self.last_sent_ns) if self.last_sent_ns else None))
                await self.ws.close(protocol.CLOSE_NORMAL)
                return
            text = protocol.grid_update(item, dropped=self.buffer.take_dropped(),
                                        dropped_total=self.buffer.dropped_total)
            async with self._send_lock:
                await self.ws.send_text(text)
                await self.ws.send_bytes(item.grid)
            self.sent += 1
            self.last_sent_ns = item.ts_ns

    async def _send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    # -- controls ----------------------------------------------------------------------------

    async def _control(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                self._apply(message.get("text") or "")
            except ConfigError as exc:
                await self._send_text(protocol.status(**self._status(), message=str(exc)))
                continue
            await self._send_text(protocol.status(**self._status()))

    def _status(self) -> dict[str, Any]:
        return {"paused": self.pacer.paused, "speed": self.pacer.speed,
                "states_sent": self.sent, "dropped_total": self.buffer.dropped_total,
                "last_ts_ns": str(self.last_sent_ns) if self.last_sent_ns else None}

    def _apply(self, text: str) -> None:
        """Apply one control message (raises ConfigError for a bad one; the stream goes on)."""
        try:
            msg = json.loads(text)
        except ValueError:
            raise ConfigError("control: not JSON; send e.g. {\"type\": \"pause\"}") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "pause":
            self.pacer.pause(self._pending_ns)
        elif kind == "resume":
            self.pacer.resume()
        elif kind == "speed":
            self.pacer.set_speed(parse_speed(msg.get("value"), "speed.value"), self._pending_ns)
            self.buffer.wake()
        elif kind == "seek":
            when = parse_wall_time(str(msg.get("time", "")) or None, "seek.time")
            if when is None:
                raise ConfigError("seek.time: required, HH:MM[:SS] America/New_York")
            self._seek_to = et_ns(self.req.day, when)
            self.buffer.clear()
            self.buffer.wake()
        else:
            raise ConfigError(f"control: unknown type {str(kind)[:40]!r}; use pause, resume, "
                              "speed, seek")
        self._changed.set()

    # -- the whole stream ----------------------------------------------------------------------

    async def run(self, runtime: dict[str, Any]) -> None:
        """Send ``runtime_config``, then stream until the end, an error or a disconnect."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.ws.send_text(protocol.runtime_config(runtime))
            produce = asyncio.create_task(self._produce(), name="vpbatch-produce")
            send = asyncio.create_task(self._send(), name="vpbatch-send")
            control = asyncio.create_task(self._control(), name="vpbatch-control")
            tasks = [produce, send, control]
            pending: set[asyncio.Task[None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if send in done or control in done:
                    break
                if produce in done and produce.exception() is not None:
                    break
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    await self._fail(task.exception())
                    break
        except (WebSocketDisconnect, OSError):
            pass
        finally:
            await self._stop(tasks)

    async def _fail(self, exc: BaseException | None) -> None:
        if isinstance(exc, (WebSocketDisconnect, OSError)) or exc is None:
            return
        message = str(exc) if isinstance(exc, VpbatchError) else f"internal error: {exc!r}"
        with contextlib.suppress(Exception):
            await self._send_text(protocol.error(message))
            await self.ws.close(protocol.CLOSE_INTERNAL_ERROR)

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The worker finishes at most one batch, then closes the source (same thread, in order).
        iterator, self._iter = self._iter, None
        done = self._worker.submit(_close_all, iterator, self.source)
        self._worker.shutdown(wait=False, cancel_futures=False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(done), STOP_TIMEOUT_S)
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(protocol.CLOSE_NORMAL)


def _close(iterator: Iterator[list[State]] | None) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _close_all(iterator: Iterator[list[State]] | None, source: Source) -> None:
    _close(iterator)
    source.close()
