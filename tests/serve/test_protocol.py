"""Frame encoding, throttling, pacing and buffering as units (no sockets)."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pytest

from vpbatch.book.dtypes import GRID_DTYPE
from vpbatch.errors import ConfigError
from vpbatch.serve import protocol
from vpbatch.serve.protocol import State
from vpbatch.serve.request import parse_query, parse_symbol
from vpbatch.serve.sources import throttle
from vpbatch.serve.stream import Pacer, StateBuffer
from vpbatch.store.schema import grid_view_schema


def _grid(states: int, rows: int = 5, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    arr = np.zeros(states * rows, GRID_DTYPE)
    for name in GRID_DTYPE.names or ():
        kind = GRID_DTYPE.fields[name][0].kind  # type: ignore[index]
        arr[name] = rng.normal(size=arr.size) if kind == "f" else rng.integers(0, 1000, arr.size)
    arr["event_id"] = np.repeat(np.arange(states) + 1, rows)
    arr["k"] = np.tile(np.arange(rows) - rows // 2, states)
    schema = grid_view_schema()  # what the frames carry: vp_grid as users see it
    return pa.Table.from_arrays(
        [pa.array(arr[f.name].view(np.int64) if f.name == "last_ts" else arr[f.name])
         .cast(f.type) for f in schema], schema=schema)


@pytest.mark.parametrize("rows", [1, 5, 101])
def test_grid_frames_equal_what_pyarrow_writes_for_each_state(rows: int) -> None:
    table = _grid(7, rows)
    frames = protocol.grid_frames(table, rows)
    for i, frame in enumerate(frames):
        expect = table.slice(i * rows, rows).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, expect.schema) as writer:
            writer.write_table(expect.combine_chunks())
        assert pa.ipc.open_stream(frame).read_all().equals(expect)
        assert frame == protocol.grid_frame(protocol.split_states(expect, rows)[0])


def test_grid_frames_given_same_rows_cut_differently_are_byte_identical() -> None:
    table = _grid(9, 5)
    whole = protocol.grid_frames(table, 5)
    parts = protocol.grid_frames(table.slice(0, 20), 5) + protocol.grid_frames(
        table.slice(20), 5)
    chunked = protocol.grid_frames(pa.concat_tables([table.slice(0, 15), table.slice(15)]), 5)
    assert whole == parts == chunked


def test_grid_frames_given_nulls_fall_back_to_pyarrow_and_stay_readable() -> None:
    table = pa.table({"k": pa.array([1, 2, 3, 4], pa.int32()),
                      "x": pa.array([1.0, None, 3.0, None])})
    frames = protocol.grid_frames(table, 2)
    assert [pa.ipc.open_stream(f).read_all().column("x").to_pylist() for f in frames] == [
        [1.0, None], [3.0, None]]


def _state(ts: int, n: int = 1) -> State:
    return State(ts, ts, {"ts_event": ts, "n_records": n, "buy_volume": n, "sell_volume": 0},
                 b"")


def test_throttle_keeps_the_last_state_per_bin_and_sums_counters() -> None:
    batches = [[_state(1), _state(9), _state(10)], [], [_state(19), _state(35, 5)]]
    out = [s for batch in throttle(iter(batches), 10) for s in batch]
    assert [s.ts_ns for s in out] == [9, 19, 35]
    assert [s.snapshot["n_records"] for s in out] == [2, 2, 5]


def test_pacer_is_anchored_so_lateness_does_not_accumulate() -> None:
    now = [100.0]
    pacer = Pacer(2.0, clock=lambda: now[0])
    assert pacer.delay(10_000_000_000) == 0.0  # the first state anchors
    now[0] = 100.7  # the sender was 0.2 s late for the state due at 100.5 ...
    assert pacer.delay(11_000_000_000) == pytest.approx(-0.2)
    # ... and the next one is still due on the original schedule, not 0.2 s later
    assert pacer.delay(12_000_000_000) == pytest.approx(0.3)
    now[0] = 101.0
    pacer.set_speed(4.0, pending_ns=12_000_000_000)  # re-anchored where the clock is
    assert pacer.delay(12_000_000_000) == pytest.approx(0.0)
    assert pacer.delay(14_000_000_000) == pytest.approx(0.5)


def test_pacer_pause_and_resume_continue_from_the_paused_event_time() -> None:
    now = [0.0]
    pacer = Pacer(1.0, clock=lambda: now[0])
    pacer.delay(0)
    now[0] = 0.4
    pacer.pause(pending_ns=1_000_000_000)
    now[0] = 50.0
    pacer.resume()
    assert pacer.delay(1_000_000_000) == pytest.approx(0.6)


def test_pacer_given_seek_while_paused_resumes_from_the_seek_target() -> None:
    now = [0.0]
    pacer = Pacer(1.0, clock=lambda: now[0])
    pacer.delay(0)
    now[0] = 0.4
    pacer.pause(pending_ns=1_000_000_000)
    pacer.reset()  # a seek to 600 s of event time while paused
    now[0] = 50.0
    pacer.resume()
    assert pacer.delay(600_000_000_000) == 0.0  # the seek target is due at once
    assert pacer.delay(601_000_000_000) == pytest.approx(1.0)


def test_state_buffer_drops_oldest_and_moves_its_counters_on() -> None:
    async def run() -> tuple[list[int], list[int], int, int]:
        buf = StateBuffer(capacity=2)
        for ts in (1, 2, 3, 4):
            buf.put_newest(_state(ts))
        buf.end()
        got = []
        while isinstance(item := await buf.get(), State):
            got.append(item)
        return ([s.ts_ns for s in got], [s.snapshot["n_records"] for s in got],
                buf.dropped_total, buf.take_dropped())

    assert asyncio.run(run()) == ([3, 4], [3, 1], 2, 2)


def test_parse_query_given_good_parameters_returns_typed_request() -> None:
    req = parse_query({"symbol": "mnqh6", "dt": "2026-02-06", "speed": "0",
                       "start_time": "09:30", "throttle_ms": "12.5", "source": "raw",
                       "product_type": "future_mbo"})
    assert (req.symbol, req.speed, req.throttle_ns, req.source) == ("MNQH6", 0.0, 12_500_000,
                                                                   "raw")
    assert req.start_time is not None and req.start_time.hour == 9


@pytest.mark.parametrize("text", ["../../etc", "a/b", "..", "MNQ..H6", "", "x" * 40, "a b"])
def test_parse_symbol_given_anything_but_a_ticker_raises(text: str) -> None:
    with pytest.raises(ConfigError, match="symbol"):
        parse_symbol(text)
