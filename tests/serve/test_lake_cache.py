"""Lake streams of one built day share one decoder (``vpbatch.serve.lake_cache``): many
viewers get the frames one viewer alone gets, each chunk is decoded once, and the cache is
empty once they leave. A real uvicorn server on 127.0.0.1 and real websocket clients."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from tests.serve.conftest import (
    DAY,
    SYMBOL,
    Received,
    ServerThread,
    open_stream,
    receive,
    stream_all,
)
from vpbatch.serve import create_app
from vpbatch.serve.lake_cache import CHUNK_STATES, LakeCache
from vpbatch.serve.request import parse_query
from vpbatch.serve.sources import LakeSource, open_source

VIEWERS = 8


@pytest.fixture()
def cached(serve_lake: Path) -> Iterator[tuple[ServerThread, LakeCache]]:
    """A server with its own cache (counters from zero)."""
    cache = LakeCache()
    with ServerThread(create_app(serve_lake, cache=cache)) as running:
        yield running, cache
    cache.close()


def _health(server: ServerThread) -> dict[str, Any]:
    with urlopen(f"{server.base}/health", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _idle(server: ServerThread) -> dict[str, Any]:
    """``/health`` once no stream is open (they close a moment after their last frame)."""
    deadline = time.monotonic() + 5
    while (health := _health(server))["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health["streams"] == 0
    return health


def _together(server: ServerThread, n: int, **params: Any) -> list[Received]:
    """``n`` viewers connected before any reads, then read to the end at once."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(open_stream(server, max_queue=None, **params))
                   for _ in range(n)]
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(receive, sockets))


def _chunks(states: int) -> int:
    return -(-states // CHUNK_STATES)


def test_viewers_of_one_day_at_speed_0_get_the_lone_viewers_frames_decoded_once(
        cached: tuple[ServerThread, LakeCache]) -> None:
    server, cache = cached
    alone = stream_all(server, speed=0)
    assert alone.last is not None and alone.last["type"] == "end"
    chunks = _chunks(alone.config["states"])
    assert chunks > 3 and cache.counters.decodes == chunks
    _idle(server)
    together = _together(server, VIEWERS, speed=0)
    for got in together:
        assert got.texts == alone.texts and got.grids == alone.grids
        assert got.last == alone.last
    # Each chunk of the day was decoded once for all the viewers.
    assert cache.counters.decodes == 2 * chunks
    assert cache.counters.hits >= (VIEWERS - 1) * chunks


def test_viewers_at_speed_above_0_get_exactly_the_lone_viewers_frames(
        cached: tuple[ServerThread, LakeCache]) -> None:
    server, _ = cached
    # ~2.7 states per event second in the test day: 2 event minutes at 100x take 1.2 s.
    params = {"speed": 100, "start_time": "09:31", "end_time": "09:33", "throttle_ms": 25}
    alone = stream_all(server, **params)
    assert alone.last is not None and alone.last["reason"] == "end_time"
    assert len(alone.grids) > 200 and alone.last["dropped_total"] == 0
    for got in _together(server, VIEWERS, **params):
        assert got.texts == alone.texts and got.grids == alone.grids
        assert got.last == alone.last


def test_viewers_at_different_times_share_the_chunks_they_overlap(
        cached: tuple[ServerThread, LakeCache]) -> None:
    server, cache = cached
    with open_stream(server, max_queue=None, speed=0) as whole, \
            open_stream(server, max_queue=None, speed=0, start_time="09:35") as later, \
            ThreadPoolExecutor(2) as pool:
        first, second = pool.map(receive, (whole, later))
    assert second.updates and int(second.updates[0]["ts_ns"]) > int(first.updates[0]["ts_ns"])
    at = next(i for i, u in enumerate(first.updates) if u["ts_ns"] == second.updates[0]["ts_ns"])
    assert second.texts == first.texts[at:] and second.grids == first.grids[at:]
    assert cache.counters.decodes == _chunks(first.config["states"])


def test_viewers_gone_leave_the_cache_empty(cached: tuple[ServerThread, LakeCache]) -> None:
    server, _ = cached
    with ExitStack() as stack:
        for _ in range(4):
            ws = stack.enter_context(open_stream(server, max_queue=None, speed=1))
            assert receive(ws, limit=3).grids
        busy = _health(server)["cache"]
        assert busy["partitions"] == 1 and busy["readers"] == 4 and busy["chunks"] >= 1
    cache = _idle(server)["cache"]
    assert {k: cache[k] for k in ("partitions", "readers", "chunks", "bytes", "idle_cursors")} \
        == {"partitions": 0, "readers": 0, "chunks": 0, "bytes": 0, "idle_cursors": 0}


# --------------------------------------------------------------------------------------------
# The cache without a server


def _source(lake: Path, cache: LakeCache, **params: str) -> LakeSource:
    query = {"symbol": SYMBOL, "dt": DAY.isoformat(), "source": "lake", **params}
    source = open_source(lake, parse_query(query), cache)
    assert isinstance(source, LakeSource)
    return source


def _read(source: LakeSource, from_ns: int | None = None) -> list[Any]:
    return [state for batch in source.states(from_ns) for state in batch]


def test_cache_given_small_budget_evicts_chunks_nobody_reads(serve_lake: Path) -> None:
    cache = LakeCache(budget_bytes=1)
    source = _source(serve_lake, cache)
    states = _read(source)
    chunks = _chunks(len(states))
    # No prefetch past a budget smaller than a chunk: each chunk decoded once, then evicted.
    assert cache.counters.decodes == chunks and cache.counters.evictions == chunks
    assert cache.bytes == 0 and cache.stats()["chunks"] == 0
    again = _read(source)
    assert [s.grid for s in again] == [s.grid for s in states]
    assert cache.counters.decodes == 2 * chunks
    source.close()
    assert cache.stats()["partitions"] == 0


def test_cache_readers_share_frames_but_not_the_counters_they_change(
        serve_lake: Path) -> None:
    cache = LakeCache(prefetch=False)
    one, two = _source(serve_lake, cache), _source(serve_lake, cache)
    assert cache.stats()["partitions"] == 1 and cache.stats()["readers"] == 2
    mine = _read(one)
    for state in mine:
        state.snapshot["n_records"] += 1_000_000  # what a throttle or a full buffer does
    theirs = _read(two)
    assert all(a.grid is b.grid for a, b in zip(mine, theirs, strict=True))
    assert all(b.snapshot["n_records"] < 1_000_000 for b in theirs)
    assert cache.counters.decodes == _chunks(len(mine))
    one.close()
    one.close()  # closing twice releases once
    assert cache.stats()["readers"] == 1
    two.close()
    assert cache.stats() | {"decodes": 0, "decoded_states": 0, "hits": 0} == {
        "partitions": 0, "readers": 0, "chunks": 0, "bytes": 0, "budget_bytes":
        cache.budget_bytes, "idle_cursors": 0, "decodes": 0, "decoded_states": 0, "hits": 0,
        "evictions": 0}


def test_cache_given_many_threads_decodes_each_chunk_once(serve_lake: Path) -> None:
    cache = LakeCache()
    sources = [_source(serve_lake, cache) for _ in range(6)]
    start = threading.Barrier(len(sources))

    def read(source: LakeSource) -> list[bytes]:
        start.wait()
        return [s.grid for s in _read(source)]

    with ThreadPoolExecutor(len(sources)) as pool:
        frames = list(pool.map(read, sources))
    assert all(f == frames[0] for f in frames)
    assert cache.counters.decodes == _chunks(len(frames[0]))
    for source in sources:
        source.close()
    assert cache.stats()["partitions"] == 0 and cache.bytes == 0
    cache.close()


def test_cache_start_time_and_seek_rows_equal_a_fresh_read(serve_lake: Path) -> None:
    cache = LakeCache()
    source = _source(serve_lake, cache)
    whole = _read(source)
    for target in (whole[CHUNK_STATES + 7].ts_ns, whole[-3].ts_ns, whole[0].ts_ns):
        part = _read(source, target)
        at = next(i for i, s in enumerate(whole) if s.ts_ns >= target)
        assert [s.grid for s in part] == [s.grid for s in whole[at:]]
        assert [s.snapshot for s in part] == [s.snapshot for s in whole[at:]]
    source.close()


def test_source_opened_for_a_cancelled_connection_is_closed() -> None:
    import asyncio

    from vpbatch.serve.app import _opened

    closed = threading.Event()
    release = threading.Event()

    class Opened:
        def close(self) -> None:
            closed.set()

    def slow_open() -> Opened:
        release.wait(5)
        return Opened()

    async def main() -> None:
        task = asyncio.create_task(_opened(slow_open))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.sleep(0.2)

    asyncio.run(main())
    assert closed.wait(2)
