"""Synthetic MBO generator: real DBN out, valid CME-style MBO stream, deterministic.

Every check here is computed independently of ``vpbatch.synth``: the file is read back with
the official ``databento`` reader and replayed through a small dict book written below.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import databento as db
import numpy as np
import pytest
from click.testing import CliRunner

from cli.synth import command
from vpbatch.errors import ConfigError, OutputError
from vpbatch.products import resolve_product
from vpbatch.store.lake import find_raw_file, raw_dir
from vpbatch.synth import synth_session, synth_to_lake

FRIDAY = dt.date(2026, 2, 6)       # EST: CT = UTC-6, NY = UTC-5; CME closes 22:00 UTC
WEDNESDAY = dt.date(2026, 2, 4)    # halt 22:00-23:00 UTC, reopens 23:00 UTC
DAY_NS = 86_400 * 10**9
UNDEF = 2**63 - 1
LAST, SNAP = 0x80, 0x20
N = 30_000


def _day0(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 10**9


def _read(path: Path) -> tuple[db.DBNStore, np.ndarray]:
    store = db.DBNStore.from_file(path)
    return store, store.to_ndarray()


@pytest.fixture(scope="module")
def friday(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, db.DBNStore]:
    path = tmp_path_factory.mktemp("synth") / "mnq.mbo.dbn.zst"
    synth_session(path, symbol="MNQH6", day=FRIDAY, records=N, seed=7)
    store, recs = _read(path)
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
    day0 = _day0(FRIDAY)
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
    day0 = _day0(FRIDAY)
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


class DictBook:
    """Minimal MBO book: fails loudly on anything a consistent feed never does."""

    def __init__(self) -> None:
        self.orders: dict[int, list] = {}
        self.depth = {b"B": defaultdict(int), b"A": defaultdict(int)}
        self.heaps: dict[bytes, list[int]] = {b"B": [], b"A": []}

    def best(self, side: bytes) -> int | None:
        heap, depth = self.heaps[side], self.depth[side]
        sign = -1 if side == b"B" else 1
        while heap and depth[sign * heap[0]] == 0:
            heapq.heappop(heap)
        return sign * heap[0] if heap else None

    def _place(self, side: bytes, price: int, size: int) -> None:
        if self.depth[side][price] == 0:
            heapq.heappush(self.heaps[side], -price if side == b"B" else price)
        self.depth[side][price] += size

    def add(self, oid: int, side: bytes, price: int, size: int) -> None:
        assert oid not in self.orders, f"add of live order {oid}"
        assert side in (b"B", b"A") and price != UNDEF and size > 0
        self.orders[oid] = [side, price, size]
        self._place(side, price, size)

    def cancel(self, oid: int, size: int) -> None:
        assert oid in self.orders, f"cancel of unknown order {oid}"
        side, price, live = self.orders[oid]
        assert 0 < size <= live, f"cancel {size} of {live}"
        self.depth[side][price] -= size
        if size == live:
            del self.orders[oid]
        else:
            self.orders[oid][2] = live - size

    def modify(self, oid: int, side: bytes, price: int, size: int) -> None:
        assert oid in self.orders, f"modify of unknown order {oid}"
        old_side, old_price, old_size = self.orders[oid]
        assert side == old_side and size > 0 and price != UNDEF
        self.depth[old_side][old_price] -= old_size
        self.orders[oid] = [side, price, size]
        self._place(side, price, size)

    def check_uncrossed(self) -> None:
        bid, ask = self.best(b"B"), self.best(b"A")
        assert bid is not None and ask is not None, "one side of the book is empty"
        assert bid < ask, f"crossed book {bid} >= {ask}"


def _replay(recs: np.ndarray) -> Counter:
    """Replay the stream; assert MBO validity; return counts of trade-event shapes."""
    book = DictBook()
    shapes: Counter = Counter()
    live_start = int(np.argmin((recs["flags"] & SNAP) != 0))
    for r in recs[1:live_start]:
        book.add(int(r["order_id"]), r["side"], int(r["price"]), int(r["size"]))
    book.check_uncrossed()
    live = recs[live_start:]
    ts = live["ts_event"].astype(np.int64)
    bounds = np.r_[0, np.flatnonzero(np.diff(ts) != 0) + 1, len(live)]
    for g0, g1 in itertools.pairwise(bounds):
        group = live[g0:g1]
        acts = group["action"].tobytes()
        shapes["T" if b"T" in acts else acts.decode()] += 1
        pending: dict[int, int] = {}       # order -> filled in this event, awaiting its C/M
        i = 0
        while i < len(group):
            r = group[i]
            a, oid, size = r["action"], int(r["order_id"]), int(r["size"])
            if a == b"T":
                assert r["side"] in (b"B", b"A") and size > 0
                j = i + 1
                filled = 0
                while j < len(group) and group[j]["action"] == b"F":
                    f = group[j]
                    foid = int(f["order_id"])
                    assert foid in book.orders, f"fill of unknown order {foid}"
                    fside, fprice, fsize = book.orders[foid]
                    assert f["price"] == r["price"] == fprice
                    assert fside == f["side"] != r["side"]  # resting side opposes aggressor
                    pending[foid] = pending.get(foid, 0) + int(f["size"])
                    assert 0 < pending[foid] <= fsize
                    filled += int(f["size"])
                    j += 1
                assert j > i + 1, "trade without fills"
                assert filled == size, f"T size {size} != fills {filled}"
                i = j
                continue
            if a == b"F":
                raise AssertionError("F not directly after its T")
            if a == b"C":
                book.cancel(oid, size)
                pending.pop(oid, None)
            elif a == b"M":
                if oid in pending:
                    left = book.orders[oid][2] - pending.pop(oid)
                    assert size == left and r["price"] == book.orders[oid][1]
                book.modify(oid, r["side"], int(r["price"]), size)
            elif a == b"A":
                book.add(oid, r["side"], int(r["price"]), size)
            else:
                raise AssertionError(f"unexpected live action {a!r}")
            i += 1
        assert not pending, f"fills without a C/M in the same event: {pending}"
        book.check_uncrossed()
    return shapes


def test_stream_is_valid_mbo(friday: tuple) -> None:
    _, recs, _ = friday
    shapes = _replay(recs)
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
    day0 = _day0(FRIDAY)
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
    _, recs = _read(path)
    live = recs[(recs["flags"] & SNAP) == 0]
    minute = (live["ts_event"].astype(np.int64) - _day0(WEDNESDAY)) // 60_000_000_000
    assert not ((minute >= 22 * 60) & (minute < 23 * 60)).any()  # 16:00-17:00 CT halt
    assert ((minute >= 23 * 60) & (minute < 24 * 60)).any()      # evening session reopens
    assert path.read_bytes()[:3] == b"DBN"                        # plain, uncompressed


def test_deterministic(tmp_path: Path) -> None:
    kw = {"symbol": "MNQH6", "day": FRIDAY, "records": 8_000}
    a, b, c = tmp_path / "a.mbo.dbn.zst", tmp_path / "b.mbo.dbn.zst", tmp_path / "c.mbo.dbn.zst"
    synth_session(a, seed=3, **kw)
    synth_session(b, seed=3, **kw)
    synth_session(c, seed=4, **kw)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("records", [1_000, 2_345, 12_001])
def test_exact_record_count_small(tmp_path: Path, records: int) -> None:
    path = tmp_path / "x.mbo.dbn.zst"
    stats = synth_session(path, day=FRIDAY, records=records, seed=records)
    _, recs = _read(path)
    assert len(recs) == records == stats.records
    assert sum(stats.action_counts.values()) == records
    assert stats.bytes == path.stat().st_size
    assert stats.action_counts == dict(Counter(recs["action"].tobytes().decode()))
    _replay(recs)


def test_other_product_tick_and_start_price(tmp_path: Path) -> None:
    path = tmp_path / "gc.mbo.dbn.zst"
    synth_session(path, symbol="GCJ6", day=FRIDAY, records=5_000, start_price=2500.0,
                  instrument_id=7, publisher_id=2)
    store, recs = _read(path)
    live = recs[1:]
    assert (live["price"] % 100_000_000 == 0).all()       # GC tick 0.10
    assert (recs["instrument_id"] == 7).all() and (recs["publisher_id"] == 2).all()
    assert abs(np.median(live["price"][live["action"] == b"T"]) / 1e9 - 2500.0) < 100
    assert store.metadata.mappings["GCJ6"][0]["symbol"] == "7"


def test_synth_to_lake(tmp_path: Path) -> None:
    path = synth_to_lake(tmp_path / "lake", "MNQH6", FRIDAY, records=3_000)
    product = resolve_product("MNQH6")
    expected = (tmp_path / "lake" / "raw" / "source=databento" / "product_type=future_mbo"
                / "symbol=MNQ" / "table=market_by_order_dbn" / "glbx-mdp3-20260206.mbo.dbn.zst")
    assert path == expected == raw_dir(tmp_path / "lake", product) / expected.name
    assert find_raw_file(tmp_path / "lake", product, FRIDAY) == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize(("kw", "match"), [
    ({"day": dt.date(2026, 2, 7)}, "Saturday"),
    ({"day": FRIDAY, "records": 999}, "records"),
    ({"day": FRIDAY, "symbol": "MNQH6-MNQM6"}, "spread"),
    ({"day": FRIDAY, "start_price": -1.0}, "start_price"),
])
def test_bad_arguments(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synth_session(tmp_path / "x.mbo.dbn.zst", **kw)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write"):
        synth_session(blocker / "x.mbo.dbn.zst", day=FRIDAY, records=2_000)


def test_cli_out(tmp_path: Path) -> None:
    out = tmp_path / "cli.mbo.dbn.zst"
    result = CliRunner().invoke(command, ["--symbol", "MESM6", "--dt", "2026-02-05",
                                          "--records", "4000", "--seed", "2", "--out", str(out),
                                          "--quiet"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "4,000" in result.output
    store, recs = _read(out)
    assert len(recs) == 4_000 and store.metadata.symbols == ["MESM6"]


def test_cli_lake_and_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["--lake", str(tmp_path), "--records", "2000"])
    assert result.exit_code == 0, result.output
    assert "glbx-mdp3-20260206.mbo.dbn.zst" in result.output
    bad = CliRunner().invoke(command, ["--lake", str(tmp_path), "--dt", "2026-02-08"])
    assert isinstance(bad.exception, ConfigError)
    bad = CliRunner().invoke(command, ["--lake", str(tmp_path), "--dt", "tomorrow"])
    assert bad.exit_code == 2 and "tomorrow" in bad.output  # click usage error
    helptext = CliRunner().invoke(command, ["--help"]).output
    assert "Example:" in helptext and "vpbatch synth" in helptext


def test_chunking_does_not_change_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small chunks (buffer recycling, writer thread) give the same bytes as one."""
    import vpbatch.synth as synth

    one, many = tmp_path / "one.mbo.dbn.zst", tmp_path / "many.mbo.dbn.zst"
    synth_session(one, day=FRIDAY, records=20_000, seed=5)
    monkeypatch.setattr(synth, "CHUNK_RECORDS", 1_500)
    calls: list[int] = []
    stats = synth_session(many, day=FRIDAY, records=20_000, seed=5, progress=calls.append)
    assert len(calls) > 10 and sum(calls) == 20_000 == stats.records
    assert one.read_bytes() == many.read_bytes()
