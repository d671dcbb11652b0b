"""The stand-in live gateway (tests/live/gateway.py) against the official, unmodified client.

Every test connects ``databento.Live`` to the stand-in on 127.0.0.1 and checks what the
client delivers: the MBO records byte for byte against the shared sample files, the mapping,
system and error records around them, and how the client ends (cleanly, or with the
``BentoError`` it raises for a reset, a refused key, an unknown symbol or lost replay data).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import databento as db
import databento_dbn as dbn
import numpy as np
import pytest
from databento.common.error import BentoError

from tests.conftest import data_file
from tests.live import gateway
from tests.live.conftest import ESM4_FILE, GOOG_FILE
from tests.live.gateway import MBO_DTYPE, TEST_KEY, Fault, StandInGateway

ROOT = Path(__file__).resolve().parents[2]
HB = 5  # the client's smallest heartbeat interval: a stuck test ends after 15 s


def _file(name: str) -> tuple[np.ndarray, dict[str, int]]:
    """The file's MBO records (raw layout) and its symbol -> instrument_id, via databento."""
    store = db.DBNStore.from_file(data_file(name))
    raw = np.frombuffer(store.to_ndarray().tobytes(), MBO_DTYPE)
    ids = {sym: int(iv[0]["symbol"]) for sym, iv in store.mappings.items()}
    return raw, ids


ESM4, ESM4_IDS = _file(ESM4_FILE)
GOOG, GOOG_IDS = _file(GOOG_FILE)


def _live(gw: StandInGateway, **kw: Any) -> db.Live:
    kw.setdefault("heartbeat_interval_s", HB)
    return db.Live(key=kw.pop("key", TEST_KEY), gateway="127.0.0.1", port=gw.port, **kw)


def _mbo(records: list[Any]) -> bytes:
    return b"".join(bytes(r) for r in records if isinstance(r, dbn.MBOMsg))


def _system(records: list[Any]) -> list[Any]:
    return [r for r in records if isinstance(r, dbn.SystemMsg) and not r.is_heartbeat()]


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _reference_book(records: np.ndarray) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
    """(instrument, side, price) -> [(order_id, size)] in queue order, by plain replay.

    A adds at the back; C takes its size off; M changes price/size and goes to the back of the
    queue on a price change or a size increase; R clears; F/T change nothing.
    """
    orders: dict[tuple[int, int], tuple[int, int, int]] = {}  # insertion order = priority
    for r in records.tolist():
        _, _, _, iid, _, oid, price, size, _, _, action, side, *_ = r
        key = (iid, oid)
        if action == ord("R"):
            for k in [k for k in orders if k[0] == iid]:
                del orders[k]
        elif action == ord("A"):
            orders.pop(key, None)
            orders[key] = (side, price, size)
        elif action == ord("C") and key in orders:
            s, p, q = orders[key]
            if q - size > 0:
                orders[key] = (s, p, q - size)
            else:
                del orders[key]
        elif action == ord("M"):
            old = orders.get(key)
            if size == 0:
                orders.pop(key, None)
            elif old is None or price != old[1] or size > old[2]:
                orders.pop(key, None)
                orders[key] = (old[0] if old else side, price, size)
            else:
                orders[key] = (old[0], price, size)
    book: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for (iid, oid), (side, price, size) in orders.items():
        book.setdefault((iid, side, price), []).append((oid, size))
    return book


# ------------------------------------------------------------------------ subscriptions


def test_replay_then_live_delivers_the_file(standin: Callable[..., StandInGateway],
                                            tmp_path: Path) -> None:
    """start=0: history up to the market position, REPLAY_COMPLETED, then live: the whole
    file, byte for byte, in the client's iterator and in its add_stream recording."""
    now = 5000
    gw = standin(now=now)
    client = _live(gw)
    out = tmp_path / "recording.dbn"
    client.add_stream(out)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"], start=0)
    records = list(client)

    assert _mbo(records) == ESM4.tobytes()
    recording = db.DBNStore.from_file(out)  # the client writes the Metadata it received
    meta = recording.metadata
    assert (meta.version, meta.dataset, meta.schema, meta.stype_in, meta.stype_out) == (
        3, "GLBX.MDP3", dbn.Schema.MBO, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID)
    assert meta.start == int(ESM4["ts_recv"][now - 1]) and not meta.mappings
    mapping = records[0]
    assert isinstance(mapping, dbn.SymbolMappingMsg)
    assert (mapping.stype_in_symbol, mapping.instrument_id) == ("ESM4", ESM4_IDS["ESM4"])
    assert client.symbology_map == {ESM4_IDS["ESM4"]: "ESM4"}
    (done,) = _system(records)
    assert (done.code, done.msg) == (dbn.SystemCode.REPLAY_COMPLETED, "Finished mbo replay")
    assert sum(isinstance(r, dbn.MBOMsg) for r in records[:records.index(done)]) == now
    info = gw.connections[0]
    assert (info.replayed, info.live, info.end, info.replay_from) == (now, len(ESM4) - now,
                                                                      "eof", 0)
    assert info.subscriptions[0].start == 0 and info.heartbeat_interval_s == HB

    written = list(recording)
    assert _mbo(written) == ESM4.tobytes()
    assert [type(r) for r in written if not isinstance(r, dbn.MBOMsg)] == [
        dbn.SymbolMappingMsg, dbn.SystemMsg]


def test_replay_from_a_start_time(standin: Callable[..., StandInGateway]) -> None:
    """start=<ns>: from the first record with ts_event >= start, not from the beginning."""
    start = int(ESM4["ts_event"][13_700])
    first = int(np.argmax(ESM4["ts_event"] >= start))
    gw = standin(now=13_750)
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols="ESM4", start=start)
    records = list(client)
    assert _mbo(records) == ESM4[first:].tobytes()
    assert gw.connections[0].replayed == 13_750 - first


def test_live_only_starts_at_the_market_position(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(now=13_700)
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    records = list(client)
    assert _mbo(records) == ESM4[13_700:].tobytes()
    assert _system(records) == [] and gw.position == len(ESM4)


def test_filters_the_subscribed_instrument(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(GOOG_FILE, now=5000, end_at=20_000)
    client = _live(gw)
    client.subscribe(dataset="DBEQ.BASIC", schema="mbo", symbols=["GOOG"], start=0)
    records = list(client)
    head = GOOG[:20_000]
    assert _mbo(records) == head[head["instrument_id"] == GOOG_IDS["GOOG"]].tobytes()
    assert gw.connections[0].mappings == [("GOOG", GOOG_IDS["GOOG"])]


@pytest.mark.parametrize(("file", "dataset", "symbols", "now", "end_at"), [
    (ESM4_FILE, "GLBX.MDP3", ["ESM4"], 13_700, None),
    (ESM4_FILE, "GLBX.MDP3", ["ESM4"], 4_000, None),  # inside the file's own snapshot
    (GOOG_FILE, "DBEQ.BASIC", ["GOOG", "GOOGL"], 15_000, 25_000),
])
def test_snapshot_rebuilds_the_book(standin: Callable[..., StandInGateway], file: str,
                                    dataset: str, symbols: list[str], now: int,
                                    end_at: int | None) -> None:
    """snapshot=True: per instrument an R and the resting orders as A records (flags 40, the
    last 168) in queue order, then live records from the position."""
    raw = ESM4 if file == ESM4_FILE else GOOG
    gw = standin(file, now=now, end_at=end_at)
    client = _live(gw)
    client.subscribe(dataset=dataset, schema="mbo", symbols=symbols, snapshot=True)
    records = [r for r in client if isinstance(r, dbn.MBOMsg)]
    snap = np.frombuffer(b"".join(bytes(r) for r in records[:gw.connections[0].snapshot]),
                         MBO_DTYPE)
    live = b"".join(bytes(r) for r in records[len(snap):])
    assert live == raw[now:end_at].tobytes()

    clock = int(raw["ts_recv"][now - 1])
    assert (snap["ts_recv"] == clock).all()
    assert (snap["flags"] & 0x28 == 0x28).all()
    clears = np.flatnonzero(snap["action"] == ord("R"))
    assert len(clears) == len(symbols)
    for i, start in enumerate(clears.tolist()):
        end = clears[i + 1] if i + 1 < len(clears) else len(snap)
        part = snap[start:end]
        assert part["flags"].tolist() == [40] * (len(part) - 1) + [168]
        assert (part["action"][1:] == ord("A")).all()
        assert part["sequence"][0] == 0 and part["ts_event"][0] == part["ts_event"][1]
    assert _reference_book(snap) == _reference_book(raw[:now])


# ------------------------------------------------------------------------ heartbeats and time


def test_heartbeats_while_the_market_is_held(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(hold_at=200, heartbeat_scale=0.1)  # heartbeats every 0.5 s of silence
    client = _live(gw)
    got: list[Any] = []
    client.add_callback(got.append)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    client.start()
    _wait(lambda: sum(isinstance(r, dbn.SystemMsg) and r.is_heartbeat() for r in got) >= 2)
    beats = [r for r in got if isinstance(r, dbn.SystemMsg)]
    assert all(b.is_heartbeat() and b.code == dbn.SystemCode.HEARTBEAT for b in beats)
    assert all(b.ts_event == ESM4["ts_recv"][199] for b in beats)
    assert _mbo(got) == ESM4[:200].tobytes() and gw.position == 200
    gw.resume()
    client.block_for_close(timeout=10)
    assert _mbo(got) == ESM4.tobytes()
    assert gw.connections[0].heartbeats >= 2


def test_rate_paces_the_market_in_whole_events(standin: Callable[..., StandInGateway],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """rate=400 records/s: the last 196 records take about half a second, and every write
    ends with a record flagged F_LAST (whole events: real bursts)."""
    blocks: list[np.ndarray] = []
    send = gateway._Connection._send_records

    async def spy(self: Any, arr: np.ndarray, part: str) -> None:
        blocks.append(arr.copy())
        await send(self, arr, part)

    monkeypatch.setattr(gateway._Connection, "_send_records", spy)
    gw = standin(now=13_600, rate=400)
    client = _live(gw)
    t0 = time.monotonic()
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    records = list(client)
    elapsed = time.monotonic() - t0
    assert _mbo(records) == ESM4[13_600:].tobytes()
    assert 0.4 < elapsed < 5
    assert len(blocks) > 10
    assert all(b["flags"][-1] & 0x80 for b in blocks)


def test_a_streamed_file_replays_and_refuses_snapshots(
        standin: Callable[..., StandInGateway]) -> None:
    """Above history_limit the file is streamed from disk: replay re-reads it, a snapshot
    is refused with a fatal error record that names the limit."""
    gw = standin(now=5000, history_limit=1000)
    assert not gw.file.in_memory
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"], start=0)
    assert _mbo(list(client)) == ESM4.tobytes()
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"], snapshot=True)
    with pytest.raises(BentoError, match="history_limit=1000"):
        list(client)


def test_a_late_subscription_is_live_from_then_on(
        standin: Callable[..., StandInGateway]) -> None:
    gw = standin(GOOG_FILE, end_at=30_000, hold_at=10_000)
    client = _live(gw)
    got: list[Any] = []
    client.add_callback(got.append)
    client.subscribe(dataset="DBEQ.BASIC", schema="mbo", symbols=["GOOG"])
    client.start()
    gw.wait_for(lambda g: g.connections[0].cursor == 10_000)
    client.subscribe(dataset="DBEQ.BASIC", schema="mbo", symbols=["GOOGL"])
    gw.wait_for(lambda g: len(g.connections[0].mappings) == 2)
    gw.resume()
    client.block_for_close(timeout=10)
    head, index = GOOG[:30_000], np.arange(30_000)
    goog, googl = (head["instrument_id"] == GOOG_IDS[s] for s in ("GOOG", "GOOGL"))
    assert _mbo(got) == head[goog | (googl & (index >= 10_000))].tobytes()


# ------------------------------------------------------------------------ errors and faults


@pytest.mark.parametrize("refuse", [False, True])
def test_a_refused_key_raises(standin: Callable[..., StandInGateway], refuse: bool) -> None:
    gw = standin(faults={0: Fault(refuse_key=True)} if refuse else None)
    client = _live(gw, key=TEST_KEY if refuse else "db-" + "x" * 29)
    with pytest.raises(BentoError, match="Authentication failed"):
        client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    assert gw.connections[0].key_accepted is False
    assert gw.connections[0].end == "auth_failed"


def test_an_unknown_symbol_is_an_error_record(standin: Callable[..., StandInGateway]) -> None:
    """The real service sends an ErrorMsg per unresolved symbol and streams the others; the
    client raises the collected texts when the connection closes."""
    gw = standin()
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4", "ESZ9"])
    records: list[Any] = []
    with pytest.raises(BentoError, match="Failed to resolve symbol: ESZ9"):
        for r in client:
            records.append(r)
    (err,) = [r for r in records if isinstance(r, dbn.ErrorMsg)]
    assert err.code == dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED and err.is_last
    assert _mbo(records) == ESM4.tobytes()
    assert gw.connections[0].unknown_symbols == ["ESZ9"]


def test_replay_unavailable_raises(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(now=100, faults={0: Fault(replay_unavailable=True)})
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"], start=0)
    records: list[Any] = []
    with pytest.raises(BentoError, match="no longer retained"):
        for r in client:
            records.append(r)
    (err,) = [r for r in records if isinstance(r, dbn.ErrorMsg)]
    assert err.code == dbn.ErrorCode.REPLAY_DATA_AGED_OUT
    assert _mbo(records) == b""


def test_drop_after_resets_the_connection(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(faults={0: Fault(drop_after=5000)})
    client = _live(gw)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    records: list[Any] = []
    with pytest.raises(BentoError) as caught:
        for r in client:
            records.append(r)
    assert "reset" in str(caught.value).lower()
    assert _mbo(records) == ESM4[:5000].tobytes()
    assert (gw.connections[0].end, gw.position) == ("drop", 5000)


def test_a_reconnect_continues_where_the_market_is(
        standin: Callable[..., StandInGateway]) -> None:
    """The client's own reconnect (without start) gets live records from the market position,
    which moved on (gap=500) while it was away."""
    gw = standin(faults={0: Fault(drop_after=3000, gap=500)})
    client = _live(gw, reconnect_policy="reconnect")
    gaps: list[Any] = []
    client.add_reconnect_callback(lambda start, end: gaps.append((start, end)))
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    records = list(client)
    assert _mbo(records) == ESM4[:3000].tobytes() + ESM4[3500:].tobytes()
    assert len(gw.connections) == 2 and gw.connections[1].start_position == 3500
    assert [type(r) for r in records].count(dbn.SymbolMappingMsg) == 2
    assert len(gaps) == 1


def test_silent_after_sends_nothing_more(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(faults={0: Fault(silent_after=100)}, heartbeat_scale=0.1)
    client = _live(gw)
    got: list[Any] = []
    client.add_callback(got.append)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    client.start()
    _wait(lambda: len(got) >= 101)
    time.sleep(1.5)  # three heartbeat periods of the scaled interval
    assert len(got) == 101 and _mbo(got) == ESM4[:100].tobytes()
    assert client.is_connected() and gw.connections[0].end == "silent"
    client.terminate()


@pytest.mark.slow
def test_a_silent_gateway_times_the_client_out(standin: Callable[..., StandInGateway]) -> None:
    """The client gives up after heartbeat_interval_s + 10 s of silence (15 s here) and, with
    its reconnect policy, comes back for live records from the market position."""
    gw = standin(faults={0: Fault(silent_after=100)})
    client = _live(gw, reconnect_policy="reconnect")
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    records = list(client)
    assert _mbo(records) == ESM4.tobytes()
    assert [c.end for c in gw.connections] == ["silent", "eof"]
    assert gw.connections[1].start_position == 100


def test_zstd_compression_and_ts_out(standin: Callable[..., StandInGateway]) -> None:
    gw = standin(now=13_000)
    client = _live(gw, compression=dbn.Compression.ZSTD, ts_out=True)
    client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
    records = [r for r in client if isinstance(r, dbn.MBOMsg)]
    assert gw.connections[0].compression == "zstd"
    raw = [bytes(r) for r in records]
    assert all(len(b) == 64 and b[0] == 16 for b in raw)
    assert b"".join(b[1:56] for b in raw) == b"".join(
        r.tobytes()[1:] for r in ESM4[13_000:])
    assert all(r.ts_out > r.ts_recv for r in records)


# ------------------------------------------------------------------------ the subprocess


def test_subprocess_serves_one_session() -> None:
    path = data_file(ESM4_FILE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.live.gateway", "--file", str(path), "--symbols", "ESM4",
         "--rate", "100000"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("port=")
        client = db.Live(key=TEST_KEY, gateway="127.0.0.1", port=int(first.split("=")[1]),
                         heartbeat_interval_s=HB)
        client.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESM4"])
        assert _mbo(list(client)) == ESM4.tobytes()
        assert proc.wait(10) == 0
        assert proc.stdout.read().startswith(f"done records={len(ESM4)} ")
    finally:
        proc.kill()


def test_subprocess_help() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.live.gateway", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=True)
    assert "--drop-after" in out.stdout and "port=" in out.stdout
