"""Synthetic MBO generator: the written file is a valid CME-style MBO stream.

Every check here is computed independently of ``vpbatch.synth``: the file is read back with
the official ``databento`` reader and replayed through the dict book of ``replay.py``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import databento as db
import numpy as np
import pytest

from tests.synth.replay import (
    DAY_NS,
    FRIDAY,
    LAST,
    SNAP,
    UNDEF,
    WEDNESDAY,
    day0_ns,
    read_dbn,
    replay,
)
from vpbatch.synth import synth_session

#: Records in the shared Friday file.
N = 30_000


@pytest.fixture(scope="module")
def friday(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, db.DBNStore]:
    path = tmp_path_factory.mktemp("synth") / "mnq.mbo.dbn.zst"
    synth_session(path, symbol="MNQH6", day=FRIDAY, records=N, seed=7)
    store, recs = read_dbn(path)
    return path, recs, store


def test_round_trip_count_dtype_and_metadata(friday: tuple) -> None:
    path, recs, store = friday
    assert len(recs) == N
    assert recs.dtype.itemsize == 56
    assert recs.dtype.names == ("length", "rtype", "publisher_id", "instrument_id", "ts_event",
                                "order_id", "price", "size", "flags", "channel_id", "action",
                                "side", "ts_recv", "ts_in_delta", "sequence")
    assert (recs["length"] == 14).all() and (recs["rtype"] == 0xA0).all()
    assert (recs["instrument_id"] == 42_000_001).all() and (recs["publisher_id"] == 1).all()
    meta = store.metadata
    assert meta.dataset == "GLBX.MDP3"
    assert str(meta.schema) in ("mbo", "Schema.MBO")
    assert meta.symbols == ["MNQH6"]
    assert meta.version in (2, 3)
    intervals = meta.mappings["MNQH6"]
    assert intervals == [{"start_date": FRIDAY, "end_date": FRIDAY + dt.timedelta(days=1),
                          "symbol": "42000001"}]
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic


def test_prices_on_tick_and_fields_sane(friday: tuple) -> None:
    _, recs, _ = friday
    live = recs[recs["action"] != b"R"]
    tick = 250_000_000
    assert (live["price"] % tick == 0).all()
    assert (live["price"] > 0).all()
    assert set(live["side"].tolist()) <= {b"A", b"B"}
    assert (live["order_id"] > 0).all()
    mids = live["price"][live["action"] == b"T"] / 1e9
    assert mids.min() > 15_000 and mids.max() < 30_000


def test_snapshot_first(friday: tuple) -> None:
    _, recs, _ = friday
    day0 = day0_ns(FRIDAY)
    snap = (recs["flags"] & SNAP) != 0
    n_snap = int(np.argmin(snap))  # first record without F_SNAPSHOT
    assert n_snap > 100 and not snap[n_snap:].any()
    r = recs[0]
    assert r["action"] == b"R" and r["side"] == b"N" and r["price"] == UNDEF
    body = recs[1:n_snap]
    assert (body["action"] == b"A").all()
    assert (body["flags"][:-1] & LAST == 0).all() and body["flags"][-1] & LAST
    assert (recs["ts_recv"][:n_snap] == day0).all()
    assert (body["ts_event"] < day0).all()  # orders were placed before the day
    assert np.all(np.diff(body["ts_event"].astype(np.int64)) >= 0)
    for side in (b"B", b"A"):
        assert len(np.unique(body["price"][body["side"] == side])) >= 50
    best_bid = body["price"][body["side"] == b"B"].max()
    best_ask = body["price"][body["side"] == b"A"].min()
    assert best_bid < best_ask


def test_live_clock_and_groups(friday: tuple) -> None:
    _, recs, _ = friday
    day0 = day0_ns(FRIDAY)
    live = recs[(recs["flags"] & SNAP) == 0]
    ts = live["ts_event"].astype(np.int64)
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= day0 and ts[-1] < day0 + DAY_NS
    assert (live["ts_recv"].astype(np.int64) >= ts).all()
    ends = np.r_[np.flatnonzero(np.diff(ts) != 0), len(live) - 1]
    is_end = np.zeros(len(live), bool)
    is_end[ends] = True
    has_last = (live["flags"] & LAST) != 0
    np.testing.assert_array_equal(has_last, is_end)  # F_LAST exactly on each event's last


def test_stream_is_valid_mbo(friday: tuple) -> None:
    _, recs, _ = friday
    shapes = replay(recs)
    total = sum(shapes.values())
    assert shapes["T"] > 0.01 * total  # trades happen
    for kind in ("A", "C", "M"):
        assert shapes[kind] > 0.05 * total, shapes


def test_trade_event_layout(friday: tuple) -> None:
    """T (F..)+ per level, then the C/M of every filled order, F_LAST only on the last."""
    _, recs, _ = friday
    live = recs[(recs["flags"] & SNAP) == 0]
    ts = live["ts_event"].astype(np.int64)
    bounds = np.r_[0, np.flatnonzero(np.diff(ts) != 0) + 1, len(live)]
    for g0, g1 in itertools.pairwise(bounds):
        group = live[g0:g1]
        acts = group["action"].tobytes().decode()
        if "T" not in acts:
            assert len(group) == 1
            continue
        head = acts.rstrip("CMA")
        tail = acts[len(head):]
        assert head.startswith("T") and set(head) <= {"T", "F"} and "TT" not in head
        assert tail and set(tail) <= {"C", "M", "A"} and tail.count("A") <= 1
        fills = [int(o) for o, a in zip(group["order_id"], acts, strict=True) if a == "F"]
        closes = [int(o) for o, a in zip(group["order_id"], acts, strict=True) if a in "CM"]
        assert closes == fills  # same orders, same (fill) order
        assert (group["flags"][:-1] & LAST == 0).all()


def test_rth_busier_than_overnight(friday: tuple) -> None:
    _, recs, _ = friday
    day0 = day0_ns(FRIDAY)
    live = recs[(recs["flags"] & SNAP) == 0]
    minute = (live["ts_event"].astype(np.int64) - day0) // 60_000_000_000
    per_min = np.bincount(minute, minlength=1440)
    rth = per_min[14 * 60 + 30:21 * 60].mean()             # 09:30-16:00 New York (EST)
    overnight = per_min[0:13 * 60].mean()                  # 19:00-08:00 New York
    assert rth > 3 * overnight
    assert per_min[22 * 60:].sum() == 0                    # Friday: CME closed after 16:00 CT


def test_cme_halt_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "wed.mbo.dbn"
    synth_session(path, day=WEDNESDAY, records=5_000, seed=1)
    _, recs = read_dbn(path)
    live = recs[(recs["flags"] & SNAP) == 0]
    minute = (live["ts_event"].astype(np.int64) - day0_ns(WEDNESDAY)) // 60_000_000_000
    assert not ((minute >= 22 * 60) & (minute < 23 * 60)).any()  # 16:00-17:00 CT halt
    assert ((minute >= 23 * 60) & (minute < 24 * 60)).any()      # evening session reopens
    assert path.read_bytes()[:3] == b"DBN"                        # plain, uncompressed


