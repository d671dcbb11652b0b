"""Hand-worked cases for the engine semantics (SPEC §3-§10, docs/SEMANTICS.md).

Every expected number is derived in the comments from the spec formulas, not from the code
under test. The tests only use the engine API shared by the reference and the compiled engine
(``process``/``finish``/``state``/``anomalies``/``depth``), through the ``make_engine`` fixture.

Notation: ``B`` = bucket, ``T0`` = the first non-snapshot time, ``av(dt) = 1 - exp(-dt/2)``,
``aa(dt) = 1 - exp(-dt/5)``, ``aj(dt) = 1 - exp(-dt/10)``; default ``tau_rest = 30``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from tests.book.engines import CompiledEngine
from tests.reference.engine import ReferenceEngine
from tests.reference.invariants import ShadowBook, check_invariants, iter_states
from vpbatch.book.dtypes import (
    F_LAST,
    F_SNAPSHOT,
    MBO_DTYPE,
    REGIME_CHOP,
    REGIME_DOWN,
    REGIME_UP,
    SNAPSHOT_DTYPE,
    UNDEF_PRICE,
)
from vpbatch.config import EngineConfig, ForceCoefficients

B_FUT = 250_000_000  # 0.25 tick
B_EQ = 500_000_000  # $0.50 equity bucket
SEC = 1_000_000_000
MS = 1_000_000
T0 = 1_000 * SEC  # a multiple of 100 ms and of 25 ms
EVENT = EngineConfig(K=3, band=10, sample="event")

Engine = Any  # ReferenceEngine or the compiled engine: same public API
MakeEngine = Callable[[EngineConfig, int], Engine]
Row = tuple  # (ts_event, action, side, price | None, size, order_id[, flags])


@pytest.fixture(params=["reference", "compiled"])
def make_engine(request: pytest.FixtureRequest) -> MakeEngine:
    """Engine factory ``(config, bucket) -> engine``; parametrized over implementations."""

    def factory(config: EngineConfig, bucket: int) -> Engine:
        if request.param == "reference":
            return ReferenceEngine(config, bucket)
        return CompiledEngine(config, bucket)

    return factory


# ----------------------------------------------------------------------------- helpers


def px(price: float | str) -> int:
    """Currency price -> Databento fixed point (exact decimal conversion)."""
    return int(Decimal(str(price)) * 1_000_000_000)


def mbo(rows: Iterable[Row]) -> np.ndarray:
    """MBO_DTYPE records from ``(ts, action, side, price, size, order_id[, flags])`` tuples.

    ``price=None`` is ``UNDEF_PRICE``; flags default to ``F_LAST``; ``ts_recv = ts + 7``.
    """
    rows = list(rows)
    out = np.zeros(len(rows), dtype=MBO_DTYPE)
    for i, row in enumerate(rows):
        ts, action, side, price, size, oid = row[:6]
        flags = row[6] if len(row) > 6 else F_LAST
        out[i]["ts_event"] = ts
        out[i]["ts_recv"] = ts + 7
        out[i]["action"] = ord(action)
        out[i]["side"] = ord(side)
        out[i]["price"] = UNDEF_PRICE if price is None else px(price)
        out[i]["size"] = size
        out[i]["order_id"] = oid
        out[i]["flags"] = flags
        out[i]["rtype"] = 0xA0
        out[i]["length"] = 14
    return out


def run(engine: Engine, rows: Iterable[Row]) -> tuple[np.ndarray, np.ndarray]:
    return engine.process(mbo(rows))


def states(snaps: np.ndarray, grid: np.ndarray, K: int) -> list[tuple[np.void, np.ndarray]]:
    return list(iter_states(snaps, grid, K))


def at(grid: np.ndarray, price: float) -> np.void:
    """The grid row of one state whose bucket centre is ``price``."""
    rows = grid[np.isclose(grid["price"], price, rtol=0.0, atol=1e-7)]
    assert len(rows) == 1, f"price {price} not in window {grid['price']}"
    return rows[0]


def by_event(snaps: np.ndarray, grid: np.ndarray, K: int) -> dict[int, tuple[np.void, np.ndarray]]:
    return {int(s["event_id"]): (s, g) for s, g in states(snaps, grid, K)}


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Byte-identical arrays (NaN-safe, unlike ``np.array_equal`` on records)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def av(dt: float) -> float:
    return 1 - math.exp(-dt / 2)


def aa(dt: float) -> float:
    return 1 - math.exp(-dt / 5)


def aj(dt: float) -> float:
    return 1 - math.exp(-dt / 10)


approx = pytest.approx

# A two-sided book at T0: bid 100.00 x10 (bucket 400), ask 100.25 x12 (bucket 401).
# spot = (400 + 401 + 1) // 2 = 401 -> 100.25 (one-tick spread: spot is the ask).
OPEN = [(T0, "A", "B", 100.00, 10, 1), (T0, "A", "A", 100.25, 12, 2)]


# ----------------------------------------------------------------------------- flow attribution


def test_sweep_given_three_fills_in_one_event_coalesces_delta_12(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_FUT)
    t1 = T0 + SEC
    snaps, grid = run(eng, [*OPEN] + [(t1, "F", "A", 100.25, 4, 2)] * 3)
    st = by_event(snaps, grid, EVENT.K)
    # Cell 100.25 was created at T0 by the ask add (dt == 0: add_mass 12, chains 0,
    # rest_mem 12). The fills at t1 form one group with dt = 1 s and D_fill = 4, 8, 12.
    one, three = at(st[3][1], 100.25), at(st[5][1], 100.25)
    # after the first fill: v_fill = av(1) * 4 / 1 = 0.39346934 * 4 = 1.57387736
    assert one["v_fill"] == approx(av(1) * 4, rel=1e-12)
    # after the third: D = 12, not three separate 4-lot groups:
    # v_fill = 0.39346934 * 12 = 4.72163208
    assert three["v_fill"] == approx(av(1) * 12, rel=1e-12)
    # a_fill = aa(1) * (v - 0) / 1 = 0.18126925 * 4.72163208 = 0.85588669
    assert three["a_fill"] == approx(aa(1) * av(1) * 12, rel=1e-12)
    # j_fill = aj(1) * 0.85588669 = 0.09516258 * 0.85588669 = 0.08144839
    assert three["j_fill"] == approx(aj(1) * aa(1) * av(1) * 12, rel=1e-12)
    # masses: fill 0 * e^(-1/30) + 12 = 12; add 12 * e^(-1/30) = 11.60659321
    assert three["fill_mass"] == 12.0
    assert three["add_mass"] == approx(12 * math.exp(-1 / 30), rel=1e-12)
    assert three["pull_mass"] == 0.0
    # fills do not change the book: rest 12 -> 12, v_rest 0; vacuum = 1.5 * v_fill = 7.08244813
    assert three["rest_depth"] == 12 and three["v_rest_depth"] == 0.0
    assert three["vacuum"] == approx(1.5 * av(1) * 12, rel=1e-12)
    assert three["pressure"] == 0.0
    assert three["last_event_id"] == 5 and three["last_ts"] == t1

    # CME then sends the C records in the same event: all consumption, no pull.
    snaps, grid = run(eng, [(t1, "C", "A", 100.25, 4, 2)] * 3)
    snap, g = states(snaps, grid, EVENT.K)[-1]
    cell = at(g, 100.25)
    assert cell["pull_mass"] == 0.0 and cell["fill_mass"] == 12.0
    assert cell["rest_depth"] == 0 and eng.depth("A", px(100.25)) == 0
    # the group's value change: v_rest = av(1) * (0 - 12) / 1 = -4.72163208
    assert cell["v_rest_depth"] == approx(-av(1) * 12, rel=1e-12)
    # vacuum = 1.5 * 4.72163208 + 0.5 * 4.72163208 = 9.44326417
    assert cell["vacuum"] == approx(2.0 * av(1) * 12, rel=1e-12)
    # the ask side is empty: spot keeps its last value, best ask is NaN, book not valid
    assert snap["spot_price"] == approx(100.25) and math.isnan(snap["best_ask_price"])
    assert snap["best_ask_size"] == 0 and not snap["book_valid"]


def test_fill_then_cancel_given_10_lot_order_leaves_6_and_no_pull(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_FUT)
    t1, t2, t3 = T0 + SEC, T0 + 2 * SEC, T0 + 3 * SEC
    snaps, grid = run(eng, [
        *OPEN,
        (t1, "F", "B", 100.00, 4, 1),  # pending fill 4 on order 1 (10 lots)
        (t1, "C", "B", 100.00, 4, 1),  # consumes the pending 4: pull 0
    ])
    snap, g = states(snaps, grid, EVENT.K)[-1]
    cell = at(g, 100.00)
    assert eng.depth("B", px(100.00)) == 6
    assert cell["bid_depth"] == 6 and snap["best_bid_size"] == 6
    assert cell["pull_mass"] == 0.0 and cell["v_pull"] == 0.0
    assert cell["fill_mass"] == 4.0
    # v_fill = av(1) * 4 = 1.57387736; rest 10 -> 6: v_rest = av(1) * (-4) = -1.57387736
    assert cell["v_fill"] == approx(av(1) * 4, rel=1e-12)
    assert cell["v_rest_depth"] == approx(-av(1) * 4, rel=1e-12)

    # Nasdaq style: F in one event, a larger C in a later one. Ask order 2 has 12 lots.
    snaps, grid = run(eng, [
        (t2, "F", "A", 100.25, 3, 2),  # pending 3
        (t3, "C", "A", 100.25, 5, 2),  # removes 5: 3 consumed, pull 2; 7 lots left
    ])
    cell = at(states(snaps, grid, EVENT.K)[-1][1], 100.25)
    assert eng.depth("A", px(100.25)) == 7
    assert cell["pull_mass"] == 2.0  # new group at t3, base pull mass 0
    # fill mass from t2, decayed over 1 s: 3 * e^(-1/30) = 2.90165
    assert cell["fill_mass"] == approx(3 * math.exp(-1 / 30), rel=1e-12)


def test_cancel_given_partial_size_pulls_only_the_cancelled_lots(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_FUT)
    t2 = T0 + 2 * SEC
    snaps, grid = run(eng, [
        (T0, "A", "B", 100.00, 10, 1),
        (T0, "A", "A", 100.25, 10, 2),  # cell 100.25: add_mass 10 at T0, rest_mem 10
        (t2, "C", "A", 100.25, 3, 2),  # partial: 7 left
    ])
    snap, g = states(snaps, grid, EVENT.K)[-1]
    cell = at(g, 100.25)
    assert snap["best_ask_size"] == 7 and cell["ask_depth"] == 7 and cell["rest_depth"] == 7
    # dt = 2 s: pull_mass 3; add_mass 10 * e^(-2/30) = 9.35506985
    assert cell["pull_mass"] == 3.0
    assert cell["add_mass"] == approx(10 * math.exp(-2 / 30), rel=1e-12)
    # v_pull = av(2) * 3 / 2 = 0.63212056 * 1.5 = 0.94818084
    v_pull = (1 - math.exp(-1)) * 3 / 2
    assert cell["v_pull"] == approx(v_pull, rel=1e-12)
    # v_rest = av(2) * (7 - 10) / 2 = -0.94818084
    assert cell["v_rest_depth"] == approx(-v_pull, rel=1e-12)
    # a_pull = aa(2) * v_pull / 2 = 0.32967995 * 0.47409042 = 0.15629811
    a_pull = (1 - math.exp(-0.4)) * v_pull / 2
    assert cell["a_pull"] == approx(a_pull, rel=1e-12)
    # vacuum = 0.94818084 + 0.5 * 0.94818084 + 0.3 * 0.15629811 = 1.46916069
    assert cell["vacuum"] == approx(1.5 * v_pull + 0.3 * a_pull, rel=1e-12)
    assert cell["pressure"] == 0.0


def test_modify_given_price_change_pulls_old_bucket_adds_new(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_FUT)
    t1, t2, t3 = T0 + SEC, T0 + 2 * SEC, T0 + 3 * SEC
    # bid 100.00 (400) / ask 100.50 (402): spot = (400 + 402 + 1) // 2 = 401 = 100.25
    snaps, grid = run(eng, [
        (T0, "A", "B", 100.00, 10, 1),
        (T0, "A", "A", 100.50, 10, 2),
        (t1, "M", "B", 99.75, 10, 1),  # 100.00 -> 99.75: pull 10 at 400, add 10 at 399
    ])
    snap, g = states(snaps, grid, EVENT.K)[-1]
    old, new = at(g, 100.00), at(g, 99.75)
    # spot = (399 + 402 + 1) // 2 = 401 still
    assert snap["spot_price"] == approx(100.25) and snap["best_bid_price"] == approx(99.75)
    assert old["pull_mass"] == 10.0 and old["bid_depth"] == 0
    assert new["add_mass"] == 10.0 and new["bid_depth"] == 10
    assert old["last_event_id"] == new["last_event_id"] == 3
    # v = av(1) * 10 = 3.93469340 on both sides; the new cell's rest goes 0 -> 10
    assert old["v_pull"] == approx(av(1) * 10, rel=1e-12)
    assert new["v_add"] == approx(av(1) * 10, rel=1e-12)
    assert new["v_rest_depth"] == approx(av(1) * 10, rel=1e-12)

    # After a 4-lot fill, a price change pulls q0 net of pending: 10 - 4 = 6; adds q1 = 6.
    snaps, grid = run(eng, [
        (t2, "F", "B", 99.75, 4, 1),
        (t3, "M", "B", 99.50, 6, 1),
    ])
    g = states(snaps, grid, EVENT.K)[-1][1]
    assert at(g, 99.75)["pull_mass"] == 6.0  # new group at t3, base pull mass 0
    assert at(g, 99.50)["add_mass"] == 6.0 and at(g, 99.50)["bid_depth"] == 6
    assert eng.depth("B", px(99.50)) == 6 and eng.depth("B", px(99.75)) == 0


def test_modify_given_price_change_inside_equity_bucket_touches_twice(
    make_engine: MakeEngine,
) -> None:
    eng = make_engine(EVENT, B_EQ)
    t1, t2 = T0 + SEC, T0 + 2 * SEC
    snaps, grid = run(eng, [
        (T0, "A", "B", 99.00, 1, 1),
        (T0, "A", "A", 101.50, 1, 2),
        # b(100.10) = floor(200.2 + 0.5) = 200 -> 100.00
        (t1, "A", "B", 100.10, 50, 3),
        # b(100.12) = floor(200.24 + 0.5) = 200: same bucket, pull 50 then add 50
        (t2, "M", "B", 100.12, 50, 3),
    ])
    before, after = states(snaps, grid, EVENT.K)[-2:]
    cell0, cell = at(before[1], 100.00), at(after[1], 100.00)
    # t1: fresh cell (rest_mem 0): add_mass 50, v_add = av(1) * 50 = 19.67346701
    assert cell0["add_mass"] == 50.0
    assert cell0["v_add"] == approx(av(1) * 50, rel=1e-12)
    # t2 (dt 1 s): add_mass 50 e^(-1/30) + 50 = 98.36080502, pull_mass 50
    assert cell["add_mass"] == approx(50 * math.exp(-1 / 30) + 50, rel=1e-12)
    assert cell["pull_mass"] == 50.0
    # v_add = av(1) * 50 + (1 - av(1)) * 19.67346701 = 31.60602794; v_pull = 19.67346701
    assert cell["v_add"] == approx(av(1) * 50 + (1 - av(1)) * av(1) * 50, rel=1e-12)
    assert cell["v_pull"] == approx(av(1) * 50, rel=1e-12)
    # the depth did not change: v_rest = av(1) * 0 + (1 - av(1)) * v_rest_before
    assert cell["bid_depth"] == 50
    assert cell["v_rest_depth"] == approx((1 - av(1)) * cell0["v_rest_depth"], rel=1e-12)
    assert cell["last_event_id"] == 4
    # spot: (100.12 + 101.50 + 0.50) / 1.00 = 202.12 -> bucket 202 = 101.00
    assert after[0]["spot_price"] == approx(101.0)


# ----------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("ended_by", ["F_LAST", "next_record"])
def test_clear_and_snapshot_given_rebuild_resyncs_rest_memory(
    make_engine: MakeEngine, ended_by: str
) -> None:
    eng = make_engine(EVENT, B_FUT)
    t1, t3, hist, late = T0 + SEC, T0 + 3 * SEC, T0 - 60 * SEC, T0 + 2 * SEC
    last_flags = F_SNAPSHOT | F_LAST if ended_by == "F_LAST" else F_SNAPSHOT
    snaps, grid = run(eng, [
        *OPEN,  # bid 100.00 x10, ask 100.25 x12
        (t1, "A", "B", 100.00, 5, 3),  # cell 100.00 (fresh, rest_mem 10): rest_mem 15 after
        (hist, "R", "N", None, 0, 0, F_SNAPSHOT),  # historical ts: the clock stays at t1
        (hist, "A", "B", 100.00, 30, 10, F_SNAPSHOT),
        (late, "A", "A", 100.50, 8, 11, F_SNAPSHOT),  # even a later ts does not move it
        (late, "A", "A", 100.25, 4, 12, last_flags),
        (t3, "A", "B", 100.00, 5, 13),  # first touch after the snapshot
    ])
    st = states(snaps, grid, EVENT.K)
    assert [int(s["event_id"]) for s, _ in st] == [2, 3, 4, 5, 6, 7, 8]
    g3, snapshot_states, (s8, g8) = st[1][1], st[2:6], st[6]
    for s, g in snapshot_states:
        assert s["ts_event"] == t1  # snapshot records never advance the clock
        assert int(g["last_event_id"].max()) <= 3  # ... and never touch
        assert s["spot_price"] == approx(100.25)
        cell_then, cell_now = at(g3, 100.00), at(g, 100.00)
        for name in ("add_mass", "v_add", "v_rest_depth", "pressure", "last_event_id"):
            assert cell_now[name] == cell_then[name]
    assert [bool(s["book_valid"]) for s, _ in snapshot_states] == [
        False, False, False, ended_by == "F_LAST"
    ]
    # the rebuilt book: old orders are gone, the snapshot's are there
    snap_end, g_end = snapshot_states[-1]
    assert snap_end["best_bid_size"] == 30 and snap_end["best_ask_price"] == approx(100.25)
    assert at(g_end, 100.50)["ask_depth"] == 8 and at(g_end, 100.25)["ask_depth"] == 4
    # First touch after: rest memory was resynced to 30, so the value change is 35 - 30 = 5,
    # not 35 - 15 = 20. Base v_rest (t1: 10 -> 15) = av(1) * 5 = 1.96734670; dt = t3 - t1 = 2 s:
    # v_rest = av(2) * 5 / 2 + (1 - av(2)) * 1.96734670 = 1.58030140 + 0.72374640 = 2.30404780
    # (without the resync: av(2) * 20 / 2 + 0.72374640 = 7.04495199)
    cell = at(g8, 100.00)
    assert s8["book_valid"] and cell["bid_depth"] == 35
    v_rest = (1 - math.exp(-1)) * 5 / 2 + math.exp(-1) * av(1) * 5
    assert cell["v_rest_depth"] == approx(v_rest, rel=1e-12)
    assert cell["last_event_id"] == 8
    # the old order 1 is gone: cancelling it is an unknown-order cancel
    run(eng, [(t3, "C", "B", 100.00, 1, 1)])
    assert eng.anomalies["cancel_unknown_order"] == 1


# ----------------------------------------------------------------------------- buckets and spot


@pytest.mark.parametrize(
    ("bid", "ask", "spot"),
    [
        (100.00, 100.25, 100.25),  # one tick: (400 + 401 + 1) // 2 = 401, the ask level
        (100.00, 100.50, 100.25),  # two ticks: the mid bucket
        (100.00, 100.75, 100.50),  # mid 100.375: (400 + 403 + 1) // 2 = 402 (half up)
        (100.50, 100.25, 100.50),  # crossed: (402 + 401 + 1) // 2 = 402
    ],
)
def test_spot_given_spread_is_half_up_mid_bucket(
    make_engine: MakeEngine, bid: float, ask: float, spot: float
) -> None:
    eng = make_engine(EVENT, B_FUT)
    snaps, grid = run(eng, [(T0, "A", "B", bid, 3, 1), (T0, "A", "A", ask, 4, 2)])
    snap, g = states(snaps, grid, EVENT.K)[-1]
    assert snap["spot_price"] == approx(spot, abs=1e-12)
    assert at(g, spot)["k"] == 0
    assert snap["best_bid_price"] == approx(bid) and snap["best_ask_price"] == approx(ask)
    assert snap["mid_price"] == approx((bid + ask) / 2)
    assert (snap["best_bid_size"], snap["best_ask_size"]) == (3, 4)
    assert bool(snap["crossed"]) == (bid >= ask)
    assert bool(snap["book_valid"])  # F_LAST on a cold start makes the book consistent


def test_equity_buckets_given_half_dollar_round_half_up(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_EQ)
    t1 = T0 + SEC
    snaps, grid = run(eng, [
        (T0, "A", "B", 99.00, 1, 1),
        (T0, "A", "A", 101.50, 1, 2),
        (t1, "A", "A", 100.24, 7, 3),  # 200.48 + 0.5 -> 200 = 100.00
        (t1, "A", "A", 100.25, 9, 4),  # 200.50 + 0.5 -> 201 = 100.50
        (t1, "A", "A", 100.74, 2, 5),  # 201.48 + 0.5 -> 201 = 100.50
        (t1, "A", "A", 100.75, 3, 6),  # 201.50 + 0.5 -> 202 = 101.00
    ])
    snap, g = states(snaps, grid, EVENT.K)[-1]
    # spot: (99.00 + 100.24 + 0.50) / 1.00 = 199.74 -> 199 = 99.50
    assert snap["spot_price"] == approx(99.50)
    assert np.allclose(g["price"], [98.0, 98.5, 99.0, 99.5, 100.0, 100.5, 101.0])
    c100, c1005, c101 = at(g, 100.00), at(g, 100.50), at(g, 101.00)
    assert (c100["ask_depth"], c1005["ask_depth"], c101["ask_depth"]) == (7, 11, 3)
    # fresh cells (t_b = T0), one group at t1: masses are the deltas, 9 + 2 coalesce
    assert (c100["add_mass"], c1005["add_mass"], c101["add_mass"]) == (7.0, 11.0, 3.0)
    assert c1005["v_add"] == approx(av(1) * 11, rel=1e-12)  # 4.32816274
    assert (c100["last_event_id"], c1005["last_event_id"], c101["last_event_id"]) == (3, 5, 6)


# ----------------------------------------------------------------------------- time rules


def test_first_instant_given_dt_zero_moves_only_masses(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_FUT)
    snaps, grid = run(eng, [
        *OPEN,
        (T0, "A", "A", 100.25, 5, 3),
        (T0, "C", "A", 100.25, 3, 2),
        (T0, "F", "A", 100.25, 2, 3),
    ])
    snap, g = states(snaps, grid, EVENT.K)[-1]
    cell = at(g, 100.25)
    assert (cell["add_mass"], cell["pull_mass"], cell["fill_mass"]) == (17.0, 3.0, 2.0)
    chains = [f"{p}_{q}" for p in "vaj" for q in ("add", "pull", "fill", "rest_depth")]
    for name in (*chains, "pressure", "vacuum", "pressure_now", "vacuum_now"):
        assert cell[name] == 0.0, name
    assert cell["last_event_id"] == 5 and cell["last_ts"] == T0
    assert snap["regime_intensity"] == 0.0 and snap["regime_score"] == 0.0
    # one second later the masses decay: add 17 e^(-1/30) + 1 = 17.44267371
    snaps, grid = run(eng, [(T0 + SEC, "A", "A", 100.25, 1, 4)])
    cell = at(states(snaps, grid, EVENT.K)[-1][1], 100.25)
    assert cell["add_mass"] == approx(17 * math.exp(-1 / 30) + 1, rel=1e-12)
    assert cell["v_add"] == approx(av(1) * 1, rel=1e-12)


def test_now_values_given_time_passing_decay_while_stored_stay_frozen(
    make_engine: MakeEngine,
) -> None:
    velocity_only = ForceCoefficients(
        pressure_v_add=1.0, pressure_v_rest_pos=0.0, pressure_a_add=0.0,
        vacuum_v_pull=1.0, vacuum_v_fill=0.0, vacuum_v_rest_neg=0.0, vacuum_a_pull=0.0,
    )
    eng = make_engine(EngineConfig(K=3, band=10, sample="event", forces=velocity_only), B_FUT)
    t1 = T0 + SEC
    snaps, grid = run(eng, [
        (T0, "A", "B", 100.00, 1, 1),
        (T0, "A", "A", 100.25, 10, 2),
        (t1, "A", "B", 100.00, 10, 3),  # pressure = v_add = av(1) * 10 = 3.93469340
        (t1, "C", "A", 100.25, 4, 2),  # vacuum = v_pull = av(1) * 4 = 1.57387736
        (t1 + SEC, "N", "N", None, 0, 0),
        (t1 + 2 * SEC, "N", "N", None, 0, 0),
        (t1 + 4 * SEC, "N", "N", None, 0, 0),
    ])
    st = states(snaps, grid, 3)[-4:]
    p, v = av(1) * 10, av(1) * 4
    for (_, g), dt in zip(st, [0, 1, 2, 4], strict=True):
        bid, ask = at(g, 100.00), at(g, 100.25)
        assert bid["pressure"] == approx(p, rel=1e-12)  # frozen
        assert ask["vacuum"] == approx(v, rel=1e-12)
        # idle advance: v' = (1 - av(dt)) v = e^(-dt/2) v
        # dt 1: 2.38651219, dt 2: 1.44749281, dt 4: 0.53250285 (pressure)
        assert bid["pressure_now"] == approx(math.exp(-dt / 2) * p, rel=1e-9)
        assert ask["vacuum_now"] == approx(math.exp(-dt / 2) * v, rel=1e-9)
    assert st[0][1]["pressure_now"].tolist() == st[0][1]["pressure"].tolist()  # t == t_b


def test_band_reset_given_spot_jump_returns_cell_at_zeros(make_engine: MakeEngine) -> None:
    cfg = EngineConfig(K=2, band=3, sample="event")
    eng = make_engine(cfg, B_FUT)
    t1, t2, t3, t4, t5 = (T0 + i * SEC for i in (1, 2, 3, 4, 5))
    snaps, grid = run(eng, [
        (T0, "A", "B", 100.00, 1, 1),  # 400
        (T0, "A", "A", 100.50, 1, 2),  # 402 -> spot 401
        (t1, "A", "B", 100.00, 5, 3),  # touch 400 (k -1)
        (t1, "A", "B", 99.75, 5, 4),  # touch 399 (k -2)
        # crossed bid 101.00 (404): spot (404 + 402 + 1) // 2 = 403. 399 is 4 > band away
        # from 403 -> reset; 400 is 3 away -> kept (out of the K=2 window, inside the band)
        (t2, "A", "B", 101.00, 1, 5),
        (t3, "C", "B", 101.00, 1, 5),  # back to bid 100.00: spot 401; 404 is touched
        # outside the window (k +3) but inside the band: the touch is kept
        (t4, "A", "B", 99.75, 2, 6),  # first touch of the reset cell
        (t5, "A", "B", 100.25, 1, 7),  # bid 100.25: spot (401 + 402 + 1) // 2 = 402
    ])
    st = by_event(snaps, grid, cfg.K)
    s5, g5 = st[5]
    assert s5["crossed"] and s5["spot_price"] == approx(100.75)
    assert np.allclose(g5["price"], [100.25, 100.50, 100.75, 101.00, 101.25])
    g6 = st[6][1]
    reset, kept = at(g6, 99.75), at(g6, 100.00)
    # the reset cell is back at defaults, its depth is the true book
    assert reset["last_event_id"] == 0 and reset["last_ts"] == 0
    assert reset["add_mass"] == 0.0 and reset["v_add"] == 0.0 and reset["pressure"] == 0.0
    assert reset["bid_depth"] == 5 and reset["rest_depth"] == 5
    # the kept cell re-enters the window with its real state: v_add = av(1) * 5 = 1.96734670
    assert kept["last_event_id"] == 3
    assert kept["v_add"] == approx(av(1) * 5, rel=1e-12)
    # a reset cell starts again from t_b = T0 and rest_mem = depth before (5):
    # dt = 4 s, v_add = av(4) * 2 / 4 = 0.86466472 * 0.5 = 0.43233236, v_rest the same (5 -> 7)
    fresh = at(st[7][1], 99.75)
    assert fresh["add_mass"] == 2.0
    assert fresh["v_add"] == approx((1 - math.exp(-2)) * 2 / 4, rel=1e-12)
    assert fresh["v_rest_depth"] == approx((1 - math.exp(-2)) * 2 / 4, rel=1e-12)
    # 101.00 enters the window (k +2) with the pull made while it was outside it
    outside = at(st[8][1], 101.00)
    assert outside["last_event_id"] == 6 and outside["pull_mass"] == 1.0
    assert outside["bid_depth"] == 0


def test_time_bins_given_25ms_emit_trailing_edge_and_finish_flushes(
    make_engine: MakeEngine,
) -> None:
    rows = [
        (T0, "A", "B", 100.00, 10, 1),  # bin 0 (spot undefined: nothing pending)
        (T0 + 5 * MS, "A", "A", 100.25, 10, 2),  # bin 0
        (T0 + 10 * MS, "A", "B", 100.00, 3, 3),  # bin 0
        (T0 + 24 * MS, "T", "B", 100.25, 2, 0),  # bin 0, buy volume 2
        (T0 + 30 * MS, "A", "A", 100.25, 1, 4),  # bin 1: emits the state after record 4
        (T0 + 20 * MS, "A", "B", 99.75, 1, 5),  # clock stays at 30 ms (monotone): bin 1
        (T0 + 49 * MS + 999_999, "A", "B", 99.75, 1, 6),  # bin 1 (49.999999 ms)
        (T0 + 50 * MS, "C", "B", 99.75, 1, 6),  # bin 2: emits the state after record 7
        (T0 + 120 * MS, "A", "A", 100.50, 1, 7),  # bin 4: emits the state after record 8
    ]
    cfg = EngineConfig(K=2, band=10, sample="time", sample_ns=25 * MS)
    eng = make_engine(cfg, B_FUT)
    snaps, grid = run(eng, rows)
    assert snaps["event_id"].tolist() == [4, 7, 8]
    assert snaps["ts_event"].tolist() == [T0 + 24 * MS, T0 + 49 * MS + 999_999, T0 + 50 * MS]
    assert snaps["ts_recv"].tolist() == [T0 + 24 * MS + 7, T0 + 49 * MS + 999_999 + 7,
                                         T0 + 50 * MS + 7]
    assert snaps["n_records"].tolist() == [4, 3, 1]
    assert snaps["buy_volume"].tolist() == [2, 0, 0]
    tail_s, tail_g = eng.finish()
    assert tail_s["event_id"].tolist() == [9] and tail_s["n_records"].tolist() == [1]
    assert len(eng.finish()[0]) == 0  # nothing left
    # each emitted state is exactly the per-event state at that event_id
    ev = make_engine(EngineConfig(K=2, band=10, sample="event"), B_FUT)
    ref = by_event(*run(ev, rows), 2)
    for s, g in states(np.concatenate([snaps, tail_s]), np.concatenate([grid, tail_g]), 2):
        rs, rg = ref[int(s["event_id"])]
        assert same_bytes(g, rg)
        for name in ("ts_event", "spot_price", "best_bid_size", "regime_score", "regime"):
            assert s[name] == rs[name]
    # one record at a time gives the same output
    one = make_engine(cfg, B_FUT)
    parts = [one.process(mbo([row])) for row in rows] + [one.finish()]
    assert same_bytes(np.concatenate([p[0] for p in parts]), np.concatenate([snaps, tail_s]))
    assert same_bytes(np.concatenate([p[1] for p in parts]), np.concatenate([grid, tail_g]))


def test_state_given_no_emission_reports_now_without_resetting_counters(
    make_engine: MakeEngine,
) -> None:
    eng = make_engine(EngineConfig(K=2, band=10, sample="packet"), B_FUT)
    run(eng, [OPEN[0]])
    with pytest.raises(ValueError, match="never been two-sided"):
        eng.state()  # spot undefined
    snaps, _ = run(eng, [OPEN[1], (T0 + SEC, "T", "A", 100.00, 3, 0, 0)])  # no F_LAST: no state
    assert snaps["event_id"].tolist() == [2]
    s, g = eng.state()
    assert s["event_id"].tolist() == [3] and len(g) == 5
    assert s["ts_event"].tolist() == [T0 + SEC] and s["spot_price"].tolist() == [100.25]
    assert s["n_records"].tolist() == [1] and s["sell_volume"].tolist() == [3]
    s2, _ = eng.state()
    assert s2["n_records"].tolist() == [1]  # not reset by state()


# ----------------------------------------------------------------------------- anomalies


def test_anomalies_given_bad_records_are_counted_not_fatal(make_engine: MakeEngine) -> None:
    eng = make_engine(EVENT, B_FUT)
    t1 = T0 + SEC
    snaps, grid = run(eng, [
        *OPEN,
        (t1, "C", "A", 100.25, 5, 999),  # 3: cancel of an unknown order: no touch
        (t1, "A", "B", None, 5, 20),  # 4: undefined price
        (t1, "A", "N", 99.75, 5, 21),  # 5: side N
        (t1, "A", "B", 99.75, 0, 22),  # 6: zero-size add
        (t1, "M", "B", 99.50, 0, 23),  # 7: unknown-id modify of size 0: counted twice
        (t1, "X", "B", 99.50, 1, 24),  # 8: unknown action
        (t1, "F", "A", 100.50, 2, 998),  # 9: fill of an unknown order: fill touch at 100.50
        (t1, "M", "B", 99.50, 4, 25),  # 10: unknown-id modify: an add at 99.50
        (t1, "A", "B", 99.75, 6, 25),  # 11: duplicate live id: replaces order 25
    ])
    assert eng.anomalies["cancel_unknown_order"] == 1
    assert eng.anomalies["undefined_price"] == 1
    assert eng.anomalies["side_none"] == 1
    assert eng.anomalies["zero_size_add"] == 2
    assert eng.anomalies["unknown_action"] == 1
    assert eng.anomalies["fill_unknown_order"] == 1
    assert eng.anomalies["modify_unknown_order"] == 2  # records 7 and 10
    assert eng.anomalies["duplicate_order_id"] == 1
    st = by_event(snaps, grid, EVENT.K)
    assert sorted(st) == list(range(2, 12))
    for eid in range(3, 9):  # skipped records: no touch, book unchanged
        s, g = st[eid]
        assert int(g["last_event_id"].max()) == 2, eid
        assert g["rest_depth"].sum() == 22 and s["best_ask_size"] == 12
    fill = at(st[9][1], 100.50)
    assert fill["fill_mass"] == 2.0 and fill["last_event_id"] == 9 and fill["ask_depth"] == 0
    g11 = st[11][1]
    # order 25 moved from 99.50 (4 lots) to 99.75 (6 lots) with no touch at 99.50
    assert at(g11, 99.50)["bid_depth"] == 0 and at(g11, 99.50)["last_event_id"] == 10
    assert at(g11, 99.75)["bid_depth"] == 6 and at(g11, 99.75)["add_mass"] == 6.0


def test_add_given_live_id_in_same_bucket_remembers_depth_with_old_order(
    make_engine: MakeEngine,
) -> None:
    """Issue 8: the touch's depth-before includes the order being replaced (SPEC §3, §7)."""
    eng = make_engine(EVENT, B_FUT)
    t1 = T0 + SEC
    snaps, grid = run(eng, [*OPEN, (t1, "A", "B", 100.00, 5, 1)])  # re-add id 1: 10 -> 5 lots
    assert eng.anomalies["duplicate_order_id"] == 1
    assert eng.depth("B", px(100.00)) == 5
    cell = at(states(snaps, grid, EVENT.K)[-1][1], 100.00)
    # The first add at T0 came before spot existed (one-sided book): its touch was dropped, so
    # the re-add creates the cell: rest_mem = depth just before the record = 10 (old order),
    # t_b = T0, then a new group with dt = 1 s, D_add = 5, depth now 5.
    # v_add = av(1) * 5 = 1.96734670; a_add = aa(1) * 1.96734670 = 0.35662009
    assert cell["add_mass"] == 5.0 and cell["bid_depth"] == 5
    assert cell["v_add"] == approx(av(1) * 5, rel=1e-12)
    assert cell["a_add"] == approx(aa(1) * av(1) * 5, rel=1e-12)
    # v_rest = av(1) * (5 - 10) / 1 = -1.96734670 (the buggy kernel gave +1.967 from 0 -> 5)
    assert cell["v_rest_depth"] == approx(-av(1) * 5, rel=1e-12)
    # pressure = 1.96734670 + 0.5 * 0 + 0.3 * 0.35662009 = 2.07433273
    assert cell["pressure"] == approx(av(1) * 5 + 0.3 * aa(1) * av(1) * 5, rel=1e-12)
    # vacuum = 0.5 * 1.96734670 = 0.98367335
    assert cell["vacuum"] == approx(0.5 * av(1) * 5, rel=1e-12)


def test_add_given_live_snapshot_id_in_other_bucket_measures_new_bucket_before(
    make_engine: MakeEngine,
) -> None:
    """A snapshot order re-added elsewhere: its old bucket is left untouched (no pull)."""
    eng = make_engine(EVENT, B_FUT)
    t1 = T0 + SEC
    snap_rows = [
        (T0 - 9 * SEC, "R", "N", None, 0, 0, F_SNAPSHOT),
        (T0 - 9 * SEC, "A", "B", 100.00, 10, 1, F_SNAPSHOT),
        (T0 - 9 * SEC, "A", "B", 99.75, 4, 3, F_SNAPSHOT),
        (T0 - 9 * SEC, "A", "A", 100.25, 12, 2, F_SNAPSHOT | F_LAST),
    ]
    snaps, grid = run(eng, [*snap_rows, (T0, "N", "N", None, 0, 0),
                            (t1, "A", "B", 99.75, 6, 1)])  # id 1 moves 100.00 x10 -> 99.75 x6
    cell_old = at(states(snaps, grid, EVENT.K)[-1][1], 100.00)
    cell_new = at(states(snaps, grid, EVENT.K)[-1][1], 99.75)
    assert cell_old["bid_depth"] == 0 and cell_old["last_event_id"] == 0  # no touch
    # 99.75: fresh cell, rest_mem = 4 (order 3) before the record, depth now 10, dt = 1 s:
    # v_rest = av(1) * (10 - 4) = 2.36081604; v_add = av(1) * 6 = 2.36081604
    assert cell_new["bid_depth"] == 10 and cell_new["add_mass"] == 6.0
    assert cell_new["v_rest_depth"] == approx(av(1) * 6, rel=1e-12)
    assert cell_new["v_add"] == approx(av(1) * 6, rel=1e-12)


# ----------------------------------------------------------------------------- regime


def _regime_rows(mirror: bool) -> list[Row]:
    """Bid 100.00 (k -1) / ask 100.50 (k +1) around spot 100.25; both weights w = 1.

    With tau_v = tau_a = tau_j = 1e4 s, ``v ~= (cumulative delta) / 1e4`` to ~1e-4 relative,
    and a, decay and ``_now`` corrections are ~1e-4, so in units of 1/1e4:
    pressure = adds + 0.5 * max(net, 0), vacuum = pulls + 0.5 * max(-net, 0).
    ``mirror`` swaps the sides (and prices), which negates every score.
    """
    bid, ask = ("A", "B") if mirror else ("B", "A")
    pb, pa = (100.50, 100.00) if mirror else (100.00, 100.50)

    def ms(x: float) -> int:
        return T0 + round(x * MS)

    return [
        (T0, "A", bid, pb, 1, 1),
        (T0, "A", ask, pa, 20, 2),
        # the mid cell 100.25 (2 * 401 * B == bid + ask) gets a large vacuum (pull 50 ->
        # 1.5 * 50 = 75), but it is neither above nor below, so it never counts
        # (spot is 401 throughout: (400 + 401 + 1) // 2 = (400 + 402 + 1) // 2 = 401)
        (T0, "A", "A", 100.25, 50, 90),
        (ms(500), "C", "A", 100.25, 50, 90),
        (ms(1010), "A", bid, pb, 4, 3),  # 5: pressure below 1.5 * 4 = 6
        (ms(1010), "C", ask, pa, 5, 2),  # 6: vacuum above 1.5 * 5 = 7.5 -> score 1
        (ms(1110), "N", "N", None, 0, 0),  # 7: step at 1.1 s: score 1 -> UP
        (ms(1210), "A", ask, pa, 6, 4),  # 8: ask adds 6, pulls 5, net +1
        # above: pressure 6 + 0.5 = 6.5, vacuum 5: bull 11, bear 6.5 -> 4.5 / 17.5 = 0.257
        (ms(1310), "N", "N", None, 0, 0),  # 9: step: 0.257 >= theta_off -> stays UP
        (ms(1410), "A", ask, pa, 2, 5),  # 10: adds 8, net +3: bear 9.5 -> 1.5 / 20.5 = 0.073
        (ms(1510), "N", "N", None, 0, 0),  # 11: step: 0.073 < theta_off -> CHOP
        (ms(1610), "A", bid, pb, 2, 6),  # 12: below 1.5 * 6 = 9: 4.5 / 23.5 = 0.191
        (ms(1710), "N", "N", None, 0, 0),  # 13: step: 0.191 < theta_on -> stays CHOP
        (ms(1810), "A", bid, pb, 4, 7),  # 14: below 1.5 * 10 = 15: 10.5 / 29.5 = 0.356
        (ms(1910), "N", "N", None, 0, 0),  # 15: step: 0.356 >= theta_on -> UP
    ]


REGIME_CFG: dict[str, Any] = dict(K=3, band=10, tau_v=1e4, tau_a=1e4, tau_j=1e4)
# event_id -> (machine regime, score of the state itself)
REGIME_EXPECT = {
    6: (REGIME_CHOP, 1.0),
    7: (REGIME_UP, 1.0),
    8: (REGIME_UP, 4.5 / 17.5),
    9: (REGIME_UP, 4.5 / 17.5),
    10: (REGIME_UP, 1.5 / 20.5),  # the machine has not stepped since the add
    11: (REGIME_CHOP, 1.5 / 20.5),
    12: (REGIME_CHOP, 4.5 / 23.5),
    13: (REGIME_CHOP, 4.5 / 23.5),
    14: (REGIME_CHOP, 10.5 / 29.5),
    15: (REGIME_UP, 10.5 / 29.5),
}


@pytest.mark.parametrize("mirror", [False, True])
def test_regime_given_hysteresis_flips_only_past_theta_off(
    make_engine: MakeEngine, mirror: bool
) -> None:
    eng = make_engine(EngineConfig(sample="event", **REGIME_CFG), B_FUT)
    st = by_event(*run(eng, _regime_rows(mirror)), 3)
    flip = {REGIME_UP: REGIME_DOWN, REGIME_CHOP: REGIME_CHOP}
    sign = -1.0 if mirror else 1.0
    for eid, (regime, score) in REGIME_EXPECT.items():
        snap = st[eid][0]
        assert snap["regime"] == (flip[regime] if mirror else regime), eid
        assert snap["regime_score"] == approx(sign * score, abs=2e-3), eid
    assert st[15][0]["regime_intensity"] > 0.0
    assert at(st[15][1], 100.25)["vacuum_now"] > 0.0  # the ignored mid cell


def test_regime_given_several_boundaries_steps_once_at_the_last(make_engine: MakeEngine) -> None:
    eng = make_engine(EngineConfig(K=3, band=10, sample="event", intensity_floor=2.0), B_FUT)
    t1 = T0 + 1_010 * MS
    snaps, _ = run(eng, [
        *OPEN,  # bid 100.00 x10 (k -1, below), ask 100.25 x12 (k 0, above), spot 401
        # cell 100.00 fresh (t_b = T0, rest_mem 10), dt = 1.01 s, D_add = 10, rest 10 -> 20:
        # v_add = v_rest = av(1.01) * 10 / 1.01 = 3.9257; a_add = aa(1.01) * 3.9257 / 1.01 = 0.7109
        # pressure = 3.9257 + 0.5 * 3.9257 + 0.3 * 0.7109 = 6.1018 (only bull: score 1)
        (t1, "A", "B", 100.00, 10, 3),  # 3: step at 1.0 s on the state before: intensity 0
        (T0 + 1_150 * MS, "N", "N", None, 0, 0),  # 4: step at 1.1 s: intensity ~5.8 -> UP
        # 5: crosses 1.2 .. 5.0 s; evaluated once, at 5.0 s (dt' = 3.99 s):
        # v' = e^(-1.995) * 3.9257 = 0.5339, a' = aa(3.99) * (0.5339 - 3.9257) / 3.99
        # + e^(-0.798) * 0.7109 = -0.1473 -> 0; intensity = 0.5339 * 1.5 = 0.80 < 2 -> CHOP
        # (at the first boundary crossed, 1.2 s, it would still be ~5.5 -> UP)
        (T0 + 5_050 * MS, "N", "N", None, 0, 0),
    ])
    regimes = dict(zip(snaps["event_id"].tolist(), snaps["regime"].tolist(), strict=True))
    assert regimes == {2: REGIME_CHOP, 3: REGIME_CHOP, 4: REGIME_UP, 5: REGIME_CHOP}
    assert snaps["regime_intensity"][-1] < 2.0 < snaps["regime_intensity"][-2]


def test_regime_given_intensity_floor_stays_chop(make_engine: MakeEngine) -> None:
    eng = make_engine(EngineConfig(sample="event", intensity_floor=1.0, **REGIME_CFG), B_FUT)
    snaps, _ = eng.process(mbo(_regime_rows(False)))
    # intensity ~ 2e-3 (units of 1/1e4) is always below the floor of 1
    assert set(snaps["regime"].tolist()) == {REGIME_CHOP}


def test_regime_given_any_sampling_steps_identically(make_engine: MakeEngine) -> None:
    rows = _regime_rows(False)
    # extra records inside the 25 ms bins and without F_LAST, to make the modes differ
    rows += [(T0 + 1_920 * MS + i * 3 * MS, "A", "A", 101.00, 1, 100 + i, F_LAST * (i % 2))
             for i in range(40)]
    rows += [(T0 + 2_100 * MS + i * 40 * MS, "C", "A", 101.00, 1, 100 + i) for i in range(40)]
    out = {}
    for sample in ("event", "packet", "time"):
        eng = make_engine(EngineConfig(sample=sample, **REGIME_CFG), B_FUT)
        snaps, grid = eng.process(mbo(rows))
        tail = eng.finish()
        out[sample] = by_event(np.concatenate([snaps, tail[0]]), np.concatenate([grid, tail[1]]), 3)
    assert len(out["event"]) == len(rows) - 1  # every record once spot is defined
    assert 0 < len(out["time"]) < len(out["packet"]) < len(out["event"])
    assert len({s["regime"] for s, _ in out["event"].values()}) > 1
    for sample in ("packet", "time"):
        for eid, (snap, grid) in out[sample].items():
            ev_snap, ev_grid = out["event"][eid]
            assert snap["regime"] == ev_snap["regime"], (sample, eid)
            assert snap["regime_score"] == ev_snap["regime_score"], (sample, eid)
            assert same_bytes(grid, ev_grid), (sample, eid)


# ----------------------------------------------------------------------------- invariants


def random_stream(seed: int, n: int = 1500) -> list[Row]:
    """A random-ish but valid-looking MBO stream around 100.00 with the awkward cases mixed in:
    sweeps (F+C at one timestamp), modifies, anomalies, spot jumps, clear + snapshot."""
    rng = random.Random(seed)
    rows: list[Row] = []
    live: dict[int, tuple[str, float, int]] = {}
    oid = 1
    center = 100.00
    t = T0 + rng.randrange(100 * MS)

    def new_price(side: str) -> float:
        ticks = rng.randint(0, 6)
        return center - 0.25 * ticks if side == "B" else center + 0.25 * (1 + ticks)

    while len(rows) < n:
        t += rng.choice([0, 0, 1_000, 400_000, 3 * MS, 11 * MS, 40 * MS, 130 * MS, 2 * SEC])
        ts = t - 5 * MS if rng.random() < 0.03 else t
        flags = F_LAST if rng.random() < 0.7 else 0
        u = rng.random()
        if u < 0.35 or len(live) < 4:
            side = rng.choice("BA")
            price = new_price(side)
            if rng.random() < 0.015:  # through the other side: a crossed book for a while
                price = new_price("A" if side == "B" else "B")
            live[oid] = (side, price, rng.randint(1, 20))
            rows.append((ts, "A", side, price, live[oid][2], oid, flags))
            oid += 1
        elif u < 0.50:
            k = rng.choice(list(live))
            side, price, size = live[k]
            cut = rng.randint(1, size + 2)
            rows.append((ts, "C", side, price, cut, k, flags))
            if cut >= size:
                del live[k]
            else:
                live[k] = (side, price, size - cut)
        elif u < 0.62:
            k = rng.choice(list(live))
            side, price, size = live[k]
            price2 = price if rng.random() < 0.4 else new_price(side)
            size2 = rng.choice([size, max(1, size - 3), size + 4])
            live[k] = (side, price2, size2)
            rows.append((ts, "M", side, price2, size2, k, flags))
        elif u < 0.72:  # a sweep: fills then the cancels, one timestamp
            k = rng.choice(list(live))
            side, price, size = live[k]
            for part in (size // 2, size - size // 2):
                if part:
                    rows.append((ts, "F", side, price, part, k, 0))
            rows.append((ts, "T", "A" if side == "B" else "B", price, size, 0, 0))
            rows.append((ts, "C", side, price, size, k, F_LAST))
            del live[k]
        elif u < 0.76:
            bad = rng.randrange(8)
            rows.append([
                (ts, "C", "B", center, 3, 10**9, flags),
                (ts, "F", "A", center + 0.5, 2, 10**9 + 1, flags),
                (ts, "A", "B", None, 3, oid, flags),
                (ts, "A", "N", center, 3, oid, flags),
                (ts, "N", "N", None, 0, 0, flags),
                (ts, "A", "B", center, 0, oid, flags),
                (ts, "X", "B", center, 1, oid, flags),
                (ts, "M", "B", center - 1.0, 5, oid, flags),  # unknown id: an add
            ][bad])
            if bad == 7:
                live[oid] = ("B", center - 1.0, 5)
                oid += 1
        elif u < 0.77:  # duplicate live id: replaces the order
            k = rng.choice(list(live))
            side = rng.choice("BA")
            live[k] = (side, new_price(side), rng.randint(1, 9))
            rows.append((ts, "A", side, live[k][1], live[k][2], k, flags))
        elif u < 0.78:  # spot jump: pull everything, rebuild far away
            for k, (side, price, size) in list(live.items()):
                rows.append((ts, "C", side, price, size, k, 0))
            live.clear()
            center += rng.choice([-4.0, -1.5, 1.5, 4.0])
            for side in "BA":
                live[oid] = (side, new_price(side), rng.randint(1, 9))
                rows.append((ts, "A", side, live[oid][1], live[oid][2], oid, F_LAST))
                oid += 1
        elif u < 0.79:  # clear + snapshot, ended by F_LAST or by the next record
            snap_ts = T0 // 2  # historical
            rows.append((snap_ts, "R", "N", None, 0, 0, F_SNAPSHOT))
            live.clear()
            for _ in range(rng.randint(2, 8)):
                side = rng.choice("BA")
                live[oid] = (side, new_price(side), rng.randint(1, 30))
                rows.append((snap_ts, "A", side, live[oid][1], live[oid][2], oid, F_SNAPSHOT))
                oid += 1
            if rng.random() < 0.5:
                rows[-1] = (*rows[-1][:6], F_SNAPSHOT | F_LAST)
        else:
            k = rng.choice(list(live))
            side, price, size = live[k]
            rows.append((ts, "M", side, price, size, k, flags))  # unchanged modify
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("sample", ["event", "packet", "time"])
def test_invariants_given_random_streams_hold(
    make_engine: MakeEngine, seed: int, sample: str
) -> None:
    K = 4
    cfg = EngineConfig(K=K, band=8, sample=sample, sample_ns=25 * MS, regime_step_ns=50 * MS)
    records = mbo(random_stream(seed))
    eng = make_engine(cfg, B_FUT)
    snaps, grid = eng.process(records)
    tail_s, tail_g = eng.finish()
    snaps, grid = np.concatenate([snaps, tail_s]), np.concatenate([grid, tail_g])
    emitted = set(snaps["event_id"].tolist())
    assert len(emitted) == len(snaps) > 50
    # replay an independent book for depth (invariant 6) and touches (invariant 5)
    shadow = ShadowBook(B_FUT)
    depth_at: dict[int, dict[int, tuple[int, int]]] = {}
    touched_at: dict[int, list[int]] = {}
    for i, rec in enumerate(records, start=1):
        touched_at[i] = shadow.apply(rec)
        if i in emitted:
            depth_at[i] = shadow.depth_by_bucket()
    prev_snap: np.void | None = None
    prev_grid: np.ndarray | None = None
    for snap, g in iter_states(snaps, grid, K):
        eid = int(snap["event_id"])
        touched = None
        if sample == "event":
            spot_b = round(float(snap["spot_price"]) * 1e9 / B_FUT)
            touched = any(abs(b - spot_b) <= K for b in touched_at[eid])
        check_invariants(prev_snap, prev_grid, snap, g, K, touched_in_window=touched,
                         book_depth=depth_at[eid], bucket=B_FUT)
        prev_snap, prev_grid = snap, g
    assert sum(eng.anomalies.values()) > 0
    # parity: any chunking gives the same bytes
    rng = random.Random(seed)
    chunked = make_engine(cfg, B_FUT)
    parts, i = [], 0
    while i < len(records):
        step = rng.choice([1, 2, 7, 64, 300])
        parts.append(chunked.process(records[i : i + step]))
        i += step
    parts.append(chunked.finish())
    assert same_bytes(np.concatenate([p[0] for p in parts]), snaps)
    assert same_bytes(np.concatenate([p[1] for p in parts]), grid)


def test_invariants_given_random_streams_modes_agree_per_event(make_engine: MakeEngine) -> None:
    cfg: dict[str, Any] = dict(K=4, band=8, sample_ns=25 * MS, regime_step_ns=50 * MS)
    records = mbo(random_stream(7, n=800))
    out = {}
    for sample in ("event", "packet", "time"):
        eng = make_engine(EngineConfig(sample=sample, **cfg), B_FUT)
        snaps, grid = eng.process(records)
        tail = eng.finish()
        out[sample] = by_event(np.concatenate([snaps, tail[0]]), np.concatenate([grid, tail[1]]), 4)
    counters = ("n_records", "buy_volume", "sell_volume")
    same = [n for n in SNAPSHOT_DTYPE.names or () if n not in counters]
    for sample in ("packet", "time"):
        for eid, (snap, grid) in out[sample].items():
            ev_snap, ev_grid = out["event"][eid]
            assert same_bytes(grid, ev_grid), (sample, eid)
            for name in same:
                a, b = snap[name], ev_snap[name]
                assert a == b or (np.isnan(a) and np.isnan(b)), (sample, eid, name)


def test_pre_spot_touches_given_one_sided_book_are_dropped(make_engine: MakeEngine) -> None:
    """Decision (reference engine): no state is kept before spot is defined."""
    eng = make_engine(EVENT, B_FUT)
    snaps, grid = run(eng, [*OPEN])
    cell = at(states(snaps, grid, EVENT.K)[-1][1], 100.00)
    assert cell["last_event_id"] == 0 and cell["add_mass"] == 0.0 and cell["bid_depth"] == 10
