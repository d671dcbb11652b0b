"""The websocket protocol against a real uvicorn server and a real websocket client."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import numpy as np
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
from vpbatch.clock import et_ns
from vpbatch.pictures import palette
from vpbatch.serve import create_app
from vpbatch.serve.stream import BUFFER_STATES
from vpbatch.sql import run_query

SNAPSHOT_SQL = """
SELECT event_id, epoch_ns(ts_event) AS ts_ns, spot_price, mid_price, best_bid_price,
       best_ask_price, best_bid_size, best_ask_size, book_valid, crossed, n_records,
       buy_volume, sell_volume, CAST(regime AS VARCHAR) AS regime, regime_score
FROM vp_snapshot WHERE symbol = $symbol AND dt = $dt ORDER BY event_id
"""
GRID_SQL = """
SELECT * EXCLUDE (product_type, symbol, dt), epoch_ns(last_ts) AS last_ts_ns
FROM vp_grid WHERE symbol = $symbol AND dt = $dt ORDER BY event_id, k
"""


def _et(hhmm: str) -> int:
    import datetime as dt

    return et_ns(DAY, dt.time.fromisoformat(hhmm))


@pytest.fixture(scope="module")
def lake_rows(serve_lake: Path) -> dict[str, object]:
    params = {"symbol": SYMBOL, "dt": DAY}
    return {"snap": run_query(serve_lake, SNAPSHOT_SQL, params),
            "grid": run_query(serve_lake, GRID_SQL, params)}


@pytest.fixture(scope="module")
def lake_stream(server: ServerThread) -> Received:
    return stream_all(server, speed=0, source="lake")


def test_stream_given_built_day_sends_config_then_every_state_of_the_lake(
        lake_stream: Received, lake_rows: dict[str, object]) -> None:
    snap = lake_rows["snap"]
    cfg = lake_stream.config
    assert cfg["type"] == "runtime_config" and cfg["stream_format"] == "dense_grid"
    assert (cfg["symbol"], cfg["symbol_root"], cfg["product_type"]) == (SYMBOL, "MNQ",
                                                                       "future_mbo")
    assert cfg["grid_max_ticks"] == 50 and cfg["grid_rows"] == 101
    assert cfg["price_scale"] == 1e-9 and cfg["tick_size"] == 0.25
    assert cfg["source"] == "lake" and cfg["sample"] == "25ms"
    assert lake_stream.last == {"type": "end", "reason": "end_of_data",
                                "states_sent": len(snap), "dropped_total": 0,
                                "last_ts_ns": str(snap["ts_ns"][-1])}
    assert lake_stream.close_code == 1000
    updates = lake_stream.updates
    assert [u["event_id"] for u in updates] == snap["event_id"].to_list()
    assert [int(u["ts_ns"]) for u in updates] == snap["ts_ns"].to_list()
    for name in ("spot_price", "best_bid_size", "n_records", "buy_volume", "regime",
                 "regime_score", "book_valid"):
        assert [u[name] for u in updates] == snap[name].to_list(), name
    first = updates[0]
    assert int(first["best_bid_price_int"]) == round(snap["best_bid_price"][0] * 1e9)
    assert int(first["spot_ref_price_int"]) * 1e-9 == pytest.approx(snap["spot_price"][0])
    assert all(u["dropped"] == 0 for u in updates)


def test_stream_grid_frames_equal_the_lake_grid_rows(lake_stream: Received,
                                                     lake_rows: dict[str, object]) -> None:
    grid = lake_rows["grid"]
    rows = lake_stream.config["grid_rows"]
    assert len(lake_stream.grids) == len(grid) // rows
    names = [f["name"] for f in lake_stream.config["grid_schema_fields"]]
    for i in (0, len(lake_stream.grids) // 2, len(lake_stream.grids) - 1):
        frame = lake_stream.grid_table(i)
        assert frame.column_names == names
        assert frame.column("k").to_pylist() == list(range(-50, 51))
        expect = grid[i * rows:(i + 1) * rows]
        for name in names:
            got = frame.column(name)
            if name == "last_ts":
                assert got.cast("int64").to_pylist() == expect["last_ts_ns"].to_list()
            else:
                np.testing.assert_array_equal(got.to_numpy(), expect[name].to_numpy(),
                                              err_msg=name)
        assert frame.column("event_id").to_pylist() == [lake_stream.updates[i]["event_id"]] * rows


def test_stream_given_raw_source_sends_the_same_frames_as_the_lake(
        server: ServerThread, lake_stream: Received) -> None:
    raw = stream_all(server, speed=0, source="raw")
    assert raw.config["source"] == "raw"
    assert raw.last is not None and raw.last["type"] == "end"
    assert len(raw.texts) == len(lake_stream.texts)
    assert raw.texts == lake_stream.texts
    assert raw.grids == lake_stream.grids


def test_stream_given_start_time_and_coarse_throttle_keeps_last_state_per_bin(
        server: ServerThread, lake_rows: dict[str, object]) -> None:
    snap = lake_rows["snap"]
    start = _et("09:35")
    got = stream_all(server, speed=0, start_time="09:35", throttle_ms=1000)
    ts = snap["ts_ns"].to_numpy()
    ids = snap["event_id"].to_numpy()
    inside = ts >= start
    bins = ts[inside] // 1_000_000_000
    last_of_bin = np.flatnonzero(np.append(bins[1:] != bins[:-1], True))
    assert [u["event_id"] for u in got.updates] == ids[inside][last_of_bin].tolist()
    # Counters of skipped states are carried into the state kept: totals do not change.
    assert sum(u["n_records"] for u in got.updates) == int(snap["n_records"].to_numpy()[inside]
                                                           .sum())
    assert sum(u["buy_volume"] for u in got.updates) == int(snap["buy_volume"].to_numpy()[inside]
                                                            .sum())


def test_stream_given_raw_source_and_start_time_equals_lake_from_that_time(
        server: ServerThread) -> None:
    lake = stream_all(server, speed=0, source="lake", start_time="09:38")
    raw = stream_all(server, speed=0, source="raw", start_time="09:38")
    assert lake.texts and raw.texts == lake.texts and raw.grids == lake.grids


@pytest.mark.parametrize(("params", "message"), [
    ({"symbol": "../../etc"}, "symbol: '../../etc' is not a contract or ticker"),
    ({"symbol": "MNQ/../../x"}, "is not a contract or ticker"),
    ({"dt": "2026-13-01"}, "dt: '2026-13-01' is not a date"),
    ({"dt": ""}, "dt: required"),
    ({"dt": "2026-02-09"}, "no complete build of MNQH6 for 2026-02-09"),
    ({"symbol": "ESH6"}, "no complete build of ESH6"),
    ({"speed": "-1"}, "speed: -1 is out of range"),
    ({"speed": "fast"}, "speed: 'fast' is not a number"),
    ({"throttle_ms": "0"}, "throttle_ms: 0 is out of range"),
    ({"source": "s3"}, "source: 's3' is not one of lake, raw"),
    ({"product_type": "equity_mbo"}, "product_type: MNQH6 is future_mbo, not equity_mbo"),
    ({"start_time": "25:00"}, "start_time: '25:00' is not a time"),
    ({"start_time": "15:00"}, "start_time: 15:00:00 ET is after the last state"),
    ({"start_time": "09:35", "end_time": "09:31"}, "end_time: 09:31:00 is not after"),
    ({"colour": "red"}, "colour: unknown parameter"),
])
def test_stream_given_bad_parameters_sends_error_and_closes_1008(
        server: ServerThread, params: dict[str, str], message: str) -> None:
    got = stream_all(server, **params)
    assert got.config == {} and not got.updates
    assert got.last is not None and got.last["type"] == "error"
    assert message in got.last["message"]
    assert got.close_code == 1008


def test_stream_given_traversal_symbol_touches_no_file_outside_the_lake(
        server: ServerThread, serve_lake: Path) -> None:
    secret = serve_lake.parent / "etc"
    secret.mkdir(exist_ok=True)
    got = stream_all(server, symbol="../../etc", source="raw")
    assert got.close_code == 1008 and "symbol" in (got.last or {}).get("message", "")


def _updates_for(ws: object, seconds: float) -> list[dict[str, object]]:
    """grid_update frames received in the next ``seconds`` (binary frames skipped)."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = ws.recv(timeout=left)  # type: ignore[attr-defined]
        except TimeoutError:
            break
        if isinstance(message, str):
            frame = json.loads(message)
            if frame["type"] == "grid_update":
                out.append(frame)
    return out


def _status(ws: object) -> dict[str, object]:
    while True:
        message = ws.recv(timeout=10)  # type: ignore[attr-defined]
        if isinstance(message, str) and json.loads(message)["type"] == "status":
            return json.loads(message)


@pytest.mark.timing
def test_stream_given_pause_stops_frames_until_resume(server: ServerThread) -> None:
    with open_stream(server, speed=50) as ws:
        assert _updates_for(ws, 0.5)
        ws.send(json.dumps({"type": "pause"}))
        assert _status(ws)["paused"] is True
        # What was queued before the pause may still arrive; nothing after it.
        assert len(_updates_for(ws, 1.0)) <= BUFFER_STATES + 1
        ws.send(json.dumps({"type": "resume"}))
        assert _status(ws)["paused"] is False
        assert _updates_for(ws, 0.5)


@pytest.mark.timing
def test_stream_given_speed_message_changes_the_event_time_rate(server: ServerThread) -> None:
    with open_stream(server, speed=5) as ws:
        slow = _updates_for(ws, 1.0)
        ws.send(json.dumps({"type": "speed", "value": 100}))
        assert _status(ws)["speed"] == 100
        fast = _updates_for(ws, 1.0)
    slow_span = int(slow[-1]["ts_ns"]) - int(slow[0]["ts_ns"])
    fast_span = int(fast[-1]["ts_ns"]) - int(fast[0]["ts_ns"])
    assert slow_span < 6e9  # at most ~5 s of event time per wall second
    assert fast_span > 4 * slow_span


def test_stream_given_seek_jumps_to_the_first_state_at_that_time_both_ways(
        server: ServerThread, lake_rows: dict[str, object]) -> None:
    snap = lake_rows["snap"]
    ts = snap["ts_ns"].to_numpy()
    with open_stream(server, speed=0, start_time="09:30") as ws:
        for target in ("09:37", "09:31:30"):
            ws.send(json.dumps({"type": "seek", "time": target}))
            while True:  # frames sent before the seek was read may still be in flight
                message = ws.recv(timeout=10)
                if isinstance(message, str) and json.loads(message)["type"] == "status":
                    break
            update = next(json.loads(m) for m in iter(lambda: ws.recv(timeout=10), None)
                          if isinstance(m, str) and json.loads(m)["type"] == "grid_update"
                          and int(json.loads(m)["ts_ns"]) < _et(target) + 5_000_000_000)
            assert int(update["ts_ns"]) == int(ts[ts >= _et(target)][0])


def test_stream_given_seek_while_paused_shows_the_landing_state_then_waits(
        server: ServerThread, lake_rows: dict[str, object]) -> None:
    ts = lake_rows["snap"]["ts_ns"].to_numpy()
    with open_stream(server, speed=5, start_time="09:30") as ws:
        assert _updates_for(ws, 0.3)
        ws.send(json.dumps({"type": "pause"}))
        assert _status(ws)["paused"] is True
        _updates_for(ws, 0.5)  # frames queued before the pause may still land
        ws.send(json.dumps({"type": "seek", "time": "09:37"}))
        _status(ws)
        shown = _updates_for(ws, 1.0)
        assert [int(u["ts_ns"]) for u in shown] == [int(ts[ts >= _et("09:37")][0])]
        ws.send(json.dumps({"type": "resume"}))
        assert _status(ws)["paused"] is False
        assert all(int(u["ts_ns"]) > int(shown[0]["ts_ns"]) for u in _updates_for(ws, 0.5))


def test_stream_given_bad_control_message_answers_and_keeps_streaming(
        server: ServerThread) -> None:
    with open_stream(server, speed=20) as ws:
        ws.send("{not json")
        assert "control: not JSON" in str(_status(ws)["message"])
        ws.send(json.dumps({"type": "seek", "time": "noon"}))
        assert "seek.time: 'noon' is not a time" in str(_status(ws)["message"])
        assert _updates_for(ws, 0.5)


def test_stream_given_slow_client_drops_oldest_states_and_keeps_totals(
        server: ServerThread, lake_rows: dict[str, object]) -> None:
    with open_stream(server, speed=2000, max_queue=4) as ws:
        time.sleep(2.0)  # the client reads nothing: the server must not queue for it
        got = receive(ws)
    assert got.last is not None and got.last["type"] == "end"
    dropped = sum(u["dropped"] for u in got.updates)
    assert dropped > 0 and got.last["dropped_total"] == dropped
    assert len(got.updates) + dropped == len(lake_rows["snap"])
    # The counters of dropped states move on to the next state sent.
    assert sum(u["n_records"] for u in got.updates) == int(lake_rows["snap"]["n_records"].sum())


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _settled_threads(expected: int, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def _quiet_threads(seconds: float = 1.0) -> int:
    """The thread count once the previous streams' workers are gone (lowest over a second)."""
    lowest = threading.active_count()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        lowest = min(lowest, threading.active_count())
    return lowest


def _health(server: ServerThread) -> dict[str, object]:
    with urlopen(f"{server.base}/health", timeout=10) as resp:
        return json.loads(resp.read())


def test_stream_given_50_connect_disconnect_cycles_releases_threads_and_memory(
        server: ServerThread) -> None:
    def cycle(**params: object) -> None:
        with open_stream(server, **params) as ws:
            receive(ws, limit=3)

    # Warm-up: imports, pyarrow's and DuckDB's pools, one malloc arena per worker thread
    # (glibc keeps up to 8 per core): RSS plateaus within ~20 cycles, then must stay flat.
    for i in range(20):
        cycle(speed=[0, 1, 100][i % 3])
    baseline_threads, baseline_rss = _quiet_threads(), _rss_mb()
    for i in range(50):
        cycle(speed=[0, 1, 100][i % 3])
    assert _settled_threads(baseline_threads) <= baseline_threads
    deadline = time.monotonic() + 3
    while _health(server)["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _health(server)["streams"] == 0
    # Measured once the last stream is gone (its decoded row group is ~70 MB on its own).
    assert _rss_mb() - baseline_rss < 40


@pytest.mark.timing
def test_stream_given_disconnect_during_raw_warmup_stops_the_engine_within_a_second(
        server: ServerThread) -> None:
    baseline = _quiet_threads()
    for _ in range(3):
        with open_stream(server, speed=0, source="raw", start_time="09:30") as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "runtime_config"
        # The engine thread runs the warm-up; closing must stop it within a second.
        assert _settled_threads(baseline, timeout=1.5) <= baseline


def test_stream_clients_are_independent(server: ServerThread) -> None:
    with open_stream(server, speed=20) as paused, open_stream(server, speed=20) as running:
        paused.send(json.dumps({"type": "pause"}))
        _status(paused)
        _updates_for(paused, 0.3)
        assert len(_updates_for(running, 1.0)) > 2 * BUFFER_STATES
        assert len(_updates_for(paused, 0.5)) == 0


def test_health_index_and_days_list_the_built_day(server: ServerThread) -> None:
    assert _health(server)["status"] == "ok"
    with urlopen(f"{server.base}/", timeout=10) as resp:
        page = resp.read().decode()
    assert "MNQH6" in page and "2026-02-06" in page and "/vacuum-pressure.html?" in page
    with urlopen(f"{server.base}/v1/days", timeout=10) as resp:
        days = json.loads(resp.read())
    assert [(d["symbol"], d["dt"], d["product_type"]) for d in days] == [
        (SYMBOL, DAY.isoformat(), "future_mbo")]
    assert days[0]["start_et"].startswith("09:30") and days[0]["states"] > 1000


def test_scale_json_is_the_plot_colour_scale(server: ServerThread) -> None:
    with urlopen(f"{server.base}/v1/vacuum-pressure/scale.json", timeout=10) as resp:
        scale = json.loads(resp.read())
    assert scale["net_colors"] == list(palette.NET_COLORS)
    assert scale["net_percentile"] == palette.NET_PERCENTILE
    assert scale["brightness_floor"] == palette.BRIGHTNESS_FLOOR
    assert scale["regime_colors"] == palette.REGIME_COLORS


def test_token_given_missing_or_wrong_refuses_page_and_stream(serve_lake: Path) -> None:
    with ServerThread(create_app(serve_lake, token="s3cret")) as guarded:
        for query in ("", "?token=nope"):
            with pytest.raises(HTTPError) as err:
                urlopen(f"{guarded.base}/vacuum-pressure.html{query}", timeout=10)
            assert err.value.code == 401
        with urlopen(f"{guarded.base}/vacuum-pressure.html?token=s3cret", timeout=10) as resp:
            assert resp.status == 200
        refused = stream_all(guarded, token="nope")
        assert refused.close_code == 1008 and "token" in (refused.last or {})["message"]
        with open_stream(guarded, token="s3cret", speed=0) as ws:
            assert receive(ws, limit=1).grids


def test_stream_process_does_not_leak_file_descriptors(server: ServerThread) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        with open_stream(server, speed=0) as ws:
            receive(ws, limit=2)
    deadline = time.monotonic() + 3
    while len(os.listdir("/proc/self/fd")) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= before + 2
