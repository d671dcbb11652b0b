"""``LiveFeed``: a live session's states, published from an engine thread, fanned out by
``vpbatch serve``'s app to real websocket clients and to the page in real Chromium.

The states come from the real engine over real files (the ESM4 Databento sample and the
synthetic MNQH6 day of the serve tests) on a publisher thread, as ``vpbatch live`` calls
``publish`` from its engine thread.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import numpy as np
import pytest
from playwright.sync_api import Browser
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.serve.conftest import DAY, RECV_TIMEOUT, SYMBOL, ServerThread, stream_all
from tests.serve.test_browser import (
    Watched,
    assert_closed_without_retry,
    canvas_pixels,
    wait_for,
)
from vpbatch.book.engine import Engine
from vpbatch.clock import et_ns
from vpbatch.config import EngineConfig
from vpbatch.ingest.reader import open_mbo
from vpbatch.products import resolve_product
from vpbatch.serve import create_app
from vpbatch.serve.live import LatencyHistogram, LiveFeed
from vpbatch.store.lake import find_raw_file, raw_dir

DATA = Path(__file__).resolve().parents[1] / "data"
ESM4_FILE = DATA / "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
ESM4_DAY = dt.date(2024, 5, 8)


# --------------------------------------------------------------------------------------------
# States from the real engine


def selection_records(path: Path, symbol: str) -> np.ndarray:
    source = open_mbo(path)
    return np.concatenate(list(source.iter_selection(source.resolve(symbol))))


def engine_states(records: np.ndarray, symbol: str,
                  config: EngineConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every state the engine emits over ``records``: (snapshot row, its 2K+1 grid rows)."""
    product = resolve_product(symbol)
    engine = Engine(config, bucket=product.bucket, tick=product.tick)
    rows = 2 * config.K + 1
    for emitted in [*engine.stream(records), engine.finish()]:
        for i in range(len(emitted.snapshots)):
            yield emitted.snapshots[i:i + 1], emitted.grid[i * rows:(i + 1) * rows]


@dataclass
class PublishRun:
    seconds: float
    records: int
    states: int
    n_records: int
    calls_ns: np.ndarray  # publish calls that only offered the state
    converting_ns: np.ndarray  # publish calls that also converted it (at most max_fps a second)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


def publish_file(feed: LiveFeed, records: np.ndarray, config: EngineConfig, symbol: str,
                 chunk: int = 64) -> PublishRun:
    """The engine over ``records`` in small chunks, as received from a live gateway; every
    drained batch goes to ``feed.publish`` from this (the engine's) thread."""
    product = resolve_product(symbol)
    engine = Engine(config, bucket=product.bucket, tick=product.tick)
    calls: list[int] = []
    converting: list[int] = []
    totals = [0, 0]
    received = [0]

    def sink(snapshots: np.ndarray, grid: np.ndarray) -> None:
        converted = feed.states_converted
        t0 = time.perf_counter_ns()
        feed.publish(snapshots, grid, received[0])
        took = time.perf_counter_ns() - t0
        (converting if feed.states_converted != converted else calls).append(took)
        totals[0] += len(snapshots)
        totals[1] += int(snapshots["n_records"].sum())

    engine.send_grid_to(sink, batch_states=128)
    start = time.perf_counter()
    for at in range(0, len(records), chunk):
        received[0] = time.perf_counter_ns()
        for _ in engine.stream(records[at:at + chunk]):
            pass
    engine.finish()
    seconds = time.perf_counter() - start
    return PublishRun(seconds, len(records), totals[0], totals[1], np.array(calls),
                      np.array(converting))


# --------------------------------------------------------------------------------------------
# Viewers


def live_url(server: ServerThread, symbol: str, **params: Any) -> str:
    query = {"symbol": symbol, "source": "live", **params}
    return f"ws://127.0.0.1:{server.port}/v1/vacuum-pressure/stream?{urlencode(query)}"


def open_live(server: ServerThread, symbol: str, *, rcvbuf: int | None = None,
              max_queue: int | None = None, **params: Any) -> ClientConnection:
    """A websocket client of a live stream; ``rcvbuf`` shrinks its socket's receive buffer
    (a slow client that stops reading fills it quickly and the server sees backpressure)."""
    sock = None
    if rcvbuf is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", server.port))
    return connect(live_url(server, symbol, **params), sock=sock, max_size=None,
                   compression=None, open_timeout=RECV_TIMEOUT, max_queue=max_queue)


@dataclass
class LiveReceived:
    config: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    grids: list[bytes] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def take(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            assert len(self.grids) == len(self.updates) - 1, "binary frame without grid_update"
            self.grids.append(message)
            return
        frame = json.loads(message)
        if self.config is None:
            assert frame["type"] == "runtime_config", frame
            self.config = frame
        elif frame["type"] == "grid_update":
            self.updates.append(frame)
            self.texts.append(message)
        elif frame["type"] == "live_status":
            self.statuses.append(frame)
        else:
            self.others.append(frame)

    @property
    def end(self) -> dict[str, Any] | None:
        return next((f for f in self.others if f["type"] == "end"), None)


def wait_until(condition: Any, timeout: float = 30.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {message}")
        time.sleep(0.01)


def health(server: ServerThread) -> dict[str, Any]:
    with urlopen(f"{server.base}/health", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _et_ns(hhmm: str) -> int:
    return et_ns(DAY, dt.time.fromisoformat(hhmm))


def _head(text: str) -> str:
    """A grid_update without its per-client ``dropped`` counters."""
    return text[:text.index(',"dropped":')]


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def esm4_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding the ESM4 sample as its raw day file (not built: ``source=raw`` runs
    the engine from the first record with the default 25 ms sampling)."""
    root = tmp_path_factory.mktemp("live-lake")
    folder = raw_dir(root, resolve_product("ESM4"))
    folder.mkdir(parents=True)
    shutil.copyfile(ESM4_FILE, folder / "glbx-mdp3-20240508.mbo.dbn.zst")
    return root


@pytest.fixture(scope="module")
def mnq_records(serve_lake: Path) -> np.ndarray:
    return selection_records(find_raw_file(serve_lake, resolve_product(SYMBOL), DAY), SYMBOL)


# --------------------------------------------------------------------------------------------
# Tests


def test_latency_histogram_percentiles_within_its_bucket_error() -> None:
    hist = LatencyHistogram()
    assert hist.summary() == {"p50_ms": None, "p99_ms": None, "max_ms": None, "frames": 0}
    values = np.random.default_rng(7).lognormal(mean=15, sigma=1.0, size=20_000).astype(int)
    for v in values:
        hist.record(int(v))
    for q in (0.5, 0.99):
        got = hist.percentile(q)
        assert got is not None
        assert got == pytest.approx(float(np.quantile(values, q)), rel=0.02)
    assert hist.summary()["max_ms"] == round(values.max() / 1e6, 3)
    assert hist.frames == len(values) and len(hist._counts) < 4000
    before, later = hist.counts(), values[:5_000] // 100  # a window: its own frames only
    for v in later:
        hist.record(int(v))
    window = hist.summary(since=before)
    assert window["frames"] == len(later) and hist.summary(since=hist.counts())["frames"] == 0
    assert window["p99_ms"] == pytest.approx(np.quantile(later, 0.99) / 1e6, rel=0.02)
    assert window["max_ms"] == pytest.approx(later.max() / 1e6, rel=0.02)


def test_live_frames_equal_the_raw_source_frames_of_the_same_states(esm4_lake: Path) -> None:
    config = EngineConfig()
    feed = LiveFeed(resolve_product("ESM4"), ESM4_DAY, config, lake=esm4_lake, max_fps=None)
    with ServerThread(create_app(esm4_lake, live={"ESM4": feed})) as server:
        raw = stream_all(server, symbol="ESM4", dt=ESM4_DAY.isoformat(), source="raw",
                         speed=0)
        assert raw.last is not None and raw.last["type"] == "end" and len(raw.grids) > 20
        got = LiveReceived()
        with open_live(server, "ESM4") as ws:
            got.take(ws.recv(timeout=RECV_TIMEOUT))
            records = selection_records(ESM4_FILE, "ESM4")
            for snapshot, grid in engine_states(records, "ESM4", config):
                # One state at a time, each waited for: no state is skipped or dropped.
                feed.publish(snapshot, grid, time.perf_counter_ns())
                want = len(got.grids) + 1
                while len(got.grids) < want:
                    got.take(ws.recv(timeout=RECV_TIMEOUT))
            feed.end("test over")
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    got.take(ws.recv(timeout=RECV_TIMEOUT))
        stats = feed.health()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    cfg, raw_cfg = got.config, raw.config
    assert cfg is not None and cfg["source"] == "live" and cfg["mode"] == "live"
    for name in ("product_type", "symbol", "symbol_root", "tick_size", "bucket_size_dollars",
                 "grid_max_ticks", "grid_rows", "contract_multiplier", "grid_schema_fields",
                 "sample", "dt", "price_scale", "protocol_version", "stream_format"):
        assert cfg[name] == raw_cfg[name], name
    assert got.texts == raw.texts  # every field, byte for byte (no drops on either side)
    assert got.grids == raw.grids  # the same Arrow bytes
    assert got.end is not None and got.end["reason"] == "session_ended"
    assert got.end["message"] == "test over" and got.end["states_sent"] == len(raw.grids)
    assert stats["states_published"] == stats["states_converted"] == len(raw.grids)
    assert stats["states_skipped"] == 0 and stats["latency"]["frames"] == len(raw.grids)
    assert stats["state"] == "ended" and stats["ended"] is True


#: Viewers in their own process (as browsers are): ``argv``: url, fast viewers, slow viewers.
#: Prints ``ready`` once connected (fast ones: with a first frame); a slow viewer reads
#: nothing until a line arrives on stdin; prints every viewer's frames as JSON at the end.
#: The clients stand in for browsers on other machines: at the lowest CPU priority, their
#: decoding never takes the server's core on this 2-core machine (with one core busy
#: elsewhere, ten viewers at normal priority cut the publisher's rate to 0.82x by their own
#: decoding; measured, not the server's cost).
VIEWERS_SCRIPT = r"""
import asyncio, hashlib, json, os, socket, sys
os.nice(19)
from urllib.parse import urlparse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

async def viewer(url, slow, gate, got, ready):
    sock = None
    if slow:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((urlparse(url).hostname, urlparse(url).port))
    try:
        async with connect(url, sock=sock, max_size=None, compression=None, open_timeout=30,
                           ping_interval=None, max_queue=1 if slow else None) as ws:
            if slow:
                ready.set()
                await gate.wait()
            try:
                async for message in ws:
                    if isinstance(message, bytes):
                        got["grids"].append(hashlib.sha256(message).hexdigest())
                        ready.set()
                    else:
                        got["texts"].append(message)
            finally:
                got["close_code"] = ws.close_code
    except ConnectionClosed as exc:
        got["close_code"] = exc.rcvd.code if exc.rcvd else None

async def main():
    url, fast, slow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    gate = asyncio.Event()
    got = [{"slow": i >= fast, "texts": [], "grids": [], "close_code": None}
           for i in range(fast + slow)]
    ready = [asyncio.Event() for _ in got]
    tasks = [asyncio.create_task(viewer(url, g["slow"], gate, g, r)) for g, r in zip(got, ready)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)
    print("ready", flush=True)
    if slow:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    print(json.dumps(got), flush=True)

asyncio.run(main())
"""


class Viewers:
    """``fast`` + ``slow`` websocket viewers of a live stream in a child process."""

    def __init__(self, server: ServerThread, fast: int, slow: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", VIEWERS_SCRIPT, live_url(server, SYMBOL), str(fast),
             str(slow)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", line

    def release_slow(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def results(self) -> list[LiveReceived]:
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, out
        received = []
        for viewer in json.loads(out.strip().splitlines()[-1]):
            got = LiveReceived()
            grids = iter(viewer["grids"])
            for text in viewer["texts"]:
                got.take(text)
                if json.loads(text)["type"] == "grid_update":
                    got.grids.append(next(grids))  # type: ignore[arg-type]
            got.close_code = viewer["close_code"]
            received.append(got)
        return received

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: Interleaved one-viewer/ten-viewer runs whose median ratio is asserted. With 3, one stall of
#: the shared 2-core machine could decide: a fresh clone's CI once measured 0.66 and a rerun
#: 0.70, where the same code's other runs gave 0.85-1.05 (before and after commit 8e5ece8).
ATTEMPTS = 5


@pytest.mark.timing
def test_ten_viewers_one_slow_never_slow_the_publisher(serve_lake: Path,
                                                       mnq_records: np.ndarray) -> None:
    config = EngineConfig()
    feed = LiveFeed(resolve_product(SYMBOL), DAY, config, lake=serve_lake)
    conversions: list[int] = []

    def run() -> PublishRun:  # the whole day (~0.5-1 s), a fresh engine
        before = feed.states_converted
        result = publish_file(feed, mnq_records, config, SYMBOL)
        conversions.append(feed.states_converted - before)
        return result

    def viewers() -> int:
        return int(health(server)["live"][SYMBOL]["viewers"])

    children: list[Viewers] = []
    one: list[PublishRun] = []
    ten: list[PublishRun] = []
    try:
        with ServerThread(create_app(serve_lake, live={SYMBOL: feed})) as server:
            publish_file(feed, mnq_records[:20_000], config, SYMBOL)  # numba, DuckDB warm
            children.append(Viewers(server, fast=1))
            # The kernel would otherwise queue megabytes for the slow client before the
            # server sees backpressure: sockets accepted from now on get a small send buffer.
            server.server.servers[0].sockets[0].setsockopt(socket.SOL_SOCKET,
                                                           socket.SO_SNDBUF, 16384)
            # Interleaved, so that the machine's other load hits both alike: one viewer (the
            # conversion's cost) then ten viewers, 8 fast and 1 not reading (the fan-out's).
            for attempt in range(ATTEMPTS):
                one.append(run())
                wait_until(lambda: not feed.pending)
                group = Viewers(server, fast=8, slow=1)
                wait_until(lambda: viewers() == 10)
                ten.append(run())
                if attempt < ATTEMPTS - 1:
                    group.kill()
                    wait_until(lambda: viewers() == 1)
            children.append(group)
            during = health(server)["live"][SYMBOL]
            feed.session(state="live", records=len(mnq_records), records_per_s=12345.0,
                         reconnects=1, late=3, clock_ns=1_770_388_300_000_000_003,
                         gaps=[[1_770_388_200_000_000_001, 1_770_388_201_000_000_002]])
            group.release_slow()
            feed.end("session over")
            (primary,), (*extra, slow) = (child.results() for child in children)
            after = health(server)["live"][SYMBOL]
    finally:
        for child in children:
            child.kill()
    # -- the publisher: the viewers cost it nothing measurable and no call ever waited
    ratio = float(np.median([t.records_per_s / o.records_per_s
                             for o, t in zip(one, ten, strict=True)]))
    calls = np.concatenate([r.calls_ns for r in [*one, *ten]])
    converting = np.concatenate([r.converting_ns for r in [*one, *ten]])
    print(f"\npublisher with 1 viewer {[round(r.records_per_s) for r in one]} rec/s, with 10 "
          f"viewers {[round(r.records_per_s) for r in ten]} rec/s (median ratio "
          f"{ratio:.2f}), conversions per run {conversions}; {len(calls):,} "
          f"publish calls: p50 {np.median(calls) / 1e3:.1f} us, p99 "
          f"{np.quantile(calls, 0.99) / 1e3:.1f} us, p99.9 "
          f"{np.quantile(calls, 0.999) / 1e3:.1f} us, max {calls.max() / 1e6:.2f} ms; "
          f"{len(converting)} converting calls: p50 {np.median(converting) / 1e3:.1f} us; "
          f"states/run {ten[0].states:,}, converted {after['states_converted']}, skipped "
          f"{after['states_skipped']:,}, latency {after['latency']}, slow viewer got "
          f"{len(slow.updates)} frames, dropped {sum(u['dropped'] for u in slow.updates)}")
    assert ratio >= 0.8
    # A call is a ~2 us copy; what remains is the interpreter switching threads (5 ms GIL
    # slices) and the OS on a loaded machine. A call that converts (at most max_fps a second,
    # the same number whatever the viewers) costs one state's conversion, never a viewer's
    # wait.
    assert np.quantile(calls, 0.99) < 1e6 and np.quantile(calls, 0.999) < 20e6
    assert (calls > 5e6).mean() < 0.005
    assert len(converting) <= sum(conversions)
    assert np.median(converting) < 5e6 and (converting > 50e6).sum() == 0
    # -- fast viewers: the same frame bytes for the same state, whoever sent it
    grids: dict[int, Any] = {}
    heads: dict[tuple[int, int], str] = {}
    for got in [primary, *extra]:
        compared = 0
        for update, text, grid in zip(got.updates, got.texts, got.grids, strict=True):
            assert grids.setdefault(update["event_id"], grid) == grid
            if update["dropped"] == 0:
                key = (update["event_id"], update["n_records"])
                assert heads.setdefault(key, _head(text)) == _head(text)
                compared += 1
        assert len(got.updates) >= 5 and compared >= 0.8 * len(got.updates)
    # -- counters of states the feed skipped or a viewer dropped move on to the next frame:
    # viewers attached together sum to the same totals, whatever they dropped
    totals = {sum(u["n_records"] for u in got.updates) for got in [*extra, slow]}
    assert totals == {extra[0].updates[0]["n_records"] + ten[-1].n_records}
    assert {int(got.updates[-1]["ts_ns"]) for got in [primary, *extra, slow]} == \
        {after["last_ts_ns"]}  # everyone ends with the last state published
    # ... and were offered the same frames: each one either sent or dropped
    assert len({len(got.updates) + sum(u["dropped"] for u in got.updates)
                for got in [*extra, slow]}) == 1
    assert sum(u["dropped"] for u in slow.updates) > 0
    # -- the end, /health, live_status
    for got in [primary, *extra, slow]:
        assert got.close_code == 1000 and got.end is not None
        assert got.end["message"] == "session over" and got.end["reason"] == "session_ended"
        assert got.end["states_sent"] == len(got.updates)
        assert got.end["dropped_total"] == sum(u["dropped"] for u in got.updates)
        status = got.statuses[-1]
        assert status["state"] == "ended" and status["reconnects"] == 1 and status["late"] == 3
        assert status["gaps"] == [["1770388200000000001", "1770388201000000002"]]
        assert status["clock_ns"] == "1770388300000000003"
        assert status["records_per_s"] == 12345.0 and status["latency"]["frames"] > 0
    assert during["viewers"] == 10 and during["state"] == "connecting"
    assert during["states_published"] >= 6 * len(mnq_records) // 10
    assert during["states_skipped"] > 0 and during["latency"]["frames"] > 0
    assert 0 < during["latency"]["p50_ms"] <= during["latency"]["p99_ms"] <= \
        during["latency"]["max_ms"]
    assert after["state"] == "ended" and after["viewers"] == 0 and after["ended"]
    assert after["gaps"] == [[1_770_388_200_000_000_001, 1_770_388_201_000_000_002]]
    assert after["latency"]["frames"] >= during["latency"]["frames"]


def _next_state(ws: ClientConnection, got: LiveReceived) -> dict[str, Any]:
    want = len(got.grids) + 1
    while len(got.grids) < want:
        got.take(ws.recv(timeout=RECV_TIMEOUT))
    return got.updates[-1]


def test_publish_keeps_the_newest_state_and_carries_the_counters_of_skipped_ones(
        serve_lake: Path, mnq_records: np.ndarray) -> None:
    config = EngineConfig()
    feed = LiveFeed(resolve_product(SYMBOL), DAY, config, max_fps=None)
    states = list(engine_states(mnq_records[:30_000], SYMBOL, config))
    for snapshot, grid in states[:-3]:  # nobody watches: kept, not converted
        feed.publish(snapshot, grid, time.perf_counter_ns())
    assert feed.states_published == len(states) - 3
    assert feed.states_skipped == len(states) - 4 and feed.states_converted == 0
    snaps = np.concatenate([s for s, _ in states[-3:]])
    grids = np.concatenate([g for _, g in states[-3:]])
    with pytest.raises(ValueError, match="grid rows"):
        feed.publish(snaps, grids[:-1], 0)
    with pytest.raises(ValueError, match="GRID_DTYPE"):
        feed.publish(snaps, grids.astype(grids.dtype.newbyteorder()), 0)
    feed.publish(snaps[:0], grids[:0], 0)  # no state: nothing happens
    assert feed.states_published == len(states) - 3
    with ServerThread(create_app(serve_lake, live={SYMBOL: feed})) as server, \
            open_live(server, SYMBOL) as ws:
        got = LiveReceived()
        first = _next_state(ws, got)  # a viewer starts with the newest state...
        assert first["event_id"] == int(states[-4][0]["event_id"][0])
        # ... counting every record since the feed began (the skipped states' too)
        assert first["n_records"] == sum(int(s["n_records"][0]) for s, _ in states[:-3])
        feed.publish(snaps, grids, time.perf_counter_ns())  # a batch: its last state shown
        batch = _next_state(ws, got)
        assert batch["event_id"] == int(snaps["event_id"][-1])
        assert batch["n_records"] == int(snaps["n_records"].sum())
        assert batch["buy_volume"] == int(snaps["buy_volume"].sum())
        assert got.grids[-1] == got.grids[-1] and len(got.grids) == 2
        feed.end()
        assert feed.ended and feed.health()["ended"]
        feed.publish(snaps[-1:], grids[-101:], 3)  # after the end: ignored
        assert feed.states_published == len(states)
        assert feed.states_skipped == len(states) - 2 and feed.states_converted == 2


@pytest.mark.timing
def test_the_cap_holds_back_only_states_that_come_faster_than_it(
        serve_lake: Path, mnq_records: np.ndarray) -> None:
    """``max_fps=4``: two states back to back pass (the burst), a third waits for its slot,
    replaced meanwhile by a newer one; after a pause the first state passes at once."""
    config = EngineConfig()
    feed = LiveFeed(resolve_product(SYMBOL), DAY, config, max_fps=4)
    states = list(engine_states(mnq_records[:30_000], SYMBOL, config))[-6:]
    with ServerThread(create_app(serve_lake, live={SYMBOL: feed})) as server, \
            open_live(server, SYMBOL) as ws:
        got = LiveReceived()
        got.take(ws.recv(timeout=RECV_TIMEOUT))  # runtime_config

        def shown(i: int, replaced_by: int | None = None) -> tuple[dict[str, Any], float]:
            start = time.perf_counter()
            feed.publish(*states[i], time.perf_counter_ns())
            if replaced_by is not None:  # while state i waits for its slot (~250 ms)
                time.sleep(0.05)
                feed.publish(*states[replaced_by], time.perf_counter_ns())
            return _next_state(ws, got), time.perf_counter() - start

        (_, wait0), (_, wait1) = shown(0), shown(1)  # the burst
        held, wait2 = shown(2, replaced_by=3)
        time.sleep(0.6)  # a pause longer than the cap's slots
        after_pause, wait3 = shown(4)
        feed.end()
    waits = [wait0, wait1, wait2, wait3]
    assert waits[0] < 0.15 and waits[1] < 0.15  # the burst of two: not held back
    assert 0.15 < waits[2] < 1.0 and held["event_id"] == int(states[3][0]["event_id"][0])
    assert waits[3] < 0.15 and after_pause["event_id"] == int(states[4][0]["event_id"][0])
    assert feed.states_skipped == 1 and feed.states_converted == 4


def run_paced(feed: LiveFeed, records: np.ndarray, config: EngineConfig, rate: int,
              chunk: int) -> np.ndarray:
    """The engine over ``records`` as a live gateway delivers them: re-timed to ``rate``
    records per second (so time bins close as the wall clock passes), ``chunk`` records every
    ``chunk / rate`` s, each stamped as received when handed to the engine (as ``vpbatch
    live`` stamps a socket read), every drained batch published. Returns how late each
    chunk came (s): the pacer's own delays on a loaded machine."""
    records, step = records.copy(), np.uint64(round(1e9 / rate))
    records["ts_event"] = records["ts_event"][0] + np.arange(len(records), dtype=np.uint64) * step
    records["ts_recv"] = records["ts_event"]
    product = resolve_product(SYMBOL)
    engine = Engine(config, bucket=product.bucket, tick=product.tick)
    received = [0]
    engine.send_grid_to(lambda snaps, grid: feed.publish(snaps, grid, received[0]),
                        batch_states=128)
    late = []
    start = time.perf_counter()
    for i, at in enumerate(range(0, len(records), chunk)):
        wait = start + i * chunk / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        late.append(max(0.0, -wait))
        received[0] = time.perf_counter_ns()
        for _ in engine.stream(records[at:at + chunk]):
            pass
    engine.finish()
    return np.array(late)


@pytest.mark.timing
def test_paced_states_reach_the_viewer_each_with_its_latency(serve_lake: Path,
                                                            mnq_records: np.ndarray) -> None:
    """A paced feed (the engine fed 50k records/s; states every 2-25 ms): every frame sent
    has its receipt-to-frame latency recorded, and under the cap every state is shown.
    The latency figures themselves are measured by ``make bench`` (benchmarks/live.py), not
    asserted here: a shared CI machine's timing is no property of the code."""
    config = EngineConfig()
    feed, viewers = LiveFeed(resolve_product(SYMBOL), DAY, config), None
    states = list(engine_states(mnq_records[:30_000], SYMBOL, config))
    results: dict[str, dict[str, Any]] = {}
    try:
        with ServerThread(create_app(serve_lake, live={SYMBOL: feed})) as server:
            publish_file(feed, mnq_records[:5_000], config, SYMBOL)  # a first frame
            viewers = Viewers(server, fast=1)
            wait_until(lambda: not feed.pending)
            before = feed.latency_hist.counts()
            late = run_paced(feed, mnq_records, config, 50_000, 100)
            time.sleep(0.1)
            results["engine at 50k records/s"] = {
                **feed.latency_hist.summary(since=before),
                "pacer_late_p99_ms": round(float(np.quantile(late, 0.99)) * 1e3, 2)}
            for interval in (0.002, 0.005, 0.010, 0.025):
                before, converted = feed.latency_hist.counts(), feed.states_converted
                start, count = time.perf_counter(), min(len(states), int(1.5 / interval))
                for i, (snapshot, grid) in enumerate(states[:count]):
                    wait = start + i * interval - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    feed.publish(snapshot, grid, time.perf_counter_ns())
                time.sleep(0.1)
                results[f"a state every {interval * 1e3:g} ms"] = {
                    **feed.latency_hist.summary(since=before),
                    "converted": f"{feed.states_converted - converted}/{count}"}
            feed.end()
            (got,) = viewers.results()
    finally:
        if viewers is not None:
            viewers.kill()
    for name, summary in results.items():
        print(f"\nlatency, {name}: {summary}", end="")
    assert got.close_code == 1000 and len(got.updates) > 500
    for name, summary in results.items():
        assert summary["frames"] >= 60, name
        assert 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"], (name, summary)
    # Under the cap (100 per second) every state is shown; above it the newest wins.
    assert results["a state every 25 ms"]["converted"] == "60/60"


# --------------------------------------------------------------------------------------------
# The page


class Paced(threading.Thread):
    """Publishes ``states`` one every ``interval`` seconds (a live market), until stopped."""

    def __init__(self, feed: LiveFeed, states: list[tuple[np.ndarray, np.ndarray]],
                 interval: float = 0.015) -> None:
        super().__init__(daemon=True)
        self.feed, self.states, self.interval = feed, states, interval
        self.stop = threading.Event()

    def run(self) -> None:
        for snapshot, grid in self.states:
            if self.stop.wait(self.interval):
                return
            self.feed.publish(snapshot, grid, time.perf_counter_ns())


def test_page_shows_a_live_session_drawing_with_its_status(
        serve_lake: Path, mnq_records: np.ndarray, browser: Browser) -> None:
    config = EngineConfig()
    feed = LiveFeed(resolve_product(SYMBOL), DAY, config, lake=serve_lake)
    states = list(engine_states(mnq_records, SYMBOL, config))
    start = next(i for i, (s, _) in enumerate(states) if s["ts_event"][0] >= _et_ns("09:30"))
    publisher = Paced(feed, states[start:start + 2000])
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    watched = Watched(page)
    try:
        with ServerThread(create_app(serve_lake, live={SYMBOL: feed})) as server:
            publisher.start()
            page.goto(f"{server.base}/vacuum-pressure.html?product_type=future_mbo&"
                      f"symbol={SYMBOL}&dt={DAY.isoformat()}&source=live")
            wait_for(page, "window.vp && window.vp.stats.drawn >= 30")
            assert page.is_visible("#live-badge") and page.text_content("#live-badge") == "LIVE"
            for control in ("#pause", "#speed-label", "#seek-form"):
                assert page.is_hidden(control), control
            assert "MNQH6 · 2026-02-06 · LIVE" in (page.text_content("#title") or "")
            # A gap between two drawn states is marked where the data resumed.
            stamps = page.evaluate("""() => { const h = window.vp.heatmap;
                return [String(h.ts[h.slotOf(5)]), String(h.ts[h.slotOf(10)])]; }""")
            feed.session(state="live", reconnects=1, late=2,
                         gaps=[[int(stamps[0]) + 1, int(stamps[1])]])
            wait_for(page, "window.vp.stats.live && window.vp.stats.live.state === 'live' "
                           "&& window.vp.heatmap.gapMarks.length === 1")
            wait_for(page, "window.vp.stats.live.latency.frames > 0")
            status = page.text_content("#status") or ""
            for part in ("session: live", "latency: p50 ", " ms", "reconnects: 1", "gaps: 1",
                         "late: 2", "connection: open", "spot: 2"):
                assert part in status, (part, status)
            px = canvas_pixels(page).astype(int)
            painted = np.abs(px - np.array([0x0B, 0x0C, 0x10])).sum(axis=2) > 30
            assert painted.mean() > 0.02
            url = page.evaluate("window.vp.conn.url()")
            assert "start_time" not in url and "speed" not in url and "source=live" in url
            publisher.stop.set()
            publisher.join(5)
            feed.end("the market closed")
            wait_for(page, "window.vp.stats.connection === 'ended'")
            assert "Live session ended: the market closed" in (page.text_content("#banner") or "")
            assert_closed_without_retry(page, "ended")
    finally:
        publisher.stop.set()
        page.close()
    assert watched.errors == []
    assert len(watched.sockets) == 1
