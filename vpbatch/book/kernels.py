"""Compiled event engine: one record at a time, SPEC §3-§10, no I/O.

Names follow SPEC.md: ``apply_add``/``apply_cancel``/``apply_modify``/``apply_fill``/
``apply_clear`` change the book and return the touches they make, ``touch_bucket`` updates a
cell, ``advance_chain`` is the v/a/j recursion, ``forces`` the pressure/vacuum weights,
``step_regime`` the hysteresis machine. The per-record order of operations is the one in
docs/SEMANTICS.md. Prices are fixed-point int64 (1e-9), times int64 ns, dt in seconds.

How it compiles (issue 22: a cold first run used to spend a minute here). Numba compiles
every jitted function it reaches on its own, with a Python wrapper, once per argument types
*and literal values*, and re-optimizes and re-generates machine code for all of a function's
callees inside every caller. So:

* ``@kernel``: the entry points the facade calls (``process_chunk``, ``flush_pending``,
  ``current_state``, ``rebuild_book``, ``level_size``). Cached (``cache=True``), one argument
  type each (``Engine`` hands ``process_chunk`` read-only records whatever their source).
* ``@inlined``: hot helpers, compiled into the kernels that call them without a Python
  wrapper and never per literal value; LLVM inlines them (``forceinline``).
* ``@called``: cold helpers (regime steps, emission, rare book walks), compiled the same way
  but called, not inlined.
* ``@njit(inline="always")``: small glue and one-liners, inlined by numba itself (cheap only
  for small functions: numba copies the callee's whole IR per call site).

Only kernels are cached, and numba checks a cached kernel only against this file. ``guard``
(vpbatch/book/jit.py) therefore keys the cache on the source of every module the kernels
compile in: an edit to hashtable.py or dtypes.py recompiles them instead of loading stale code.
Call a helper from Python only through a jitted function (as tests/book does).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import numpy as np
from numba import njit
from numba.extending import register_jitable

from vpbatch.book.borrow import borrow
from vpbatch.book.dtypes import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_CLEAR,
    ACTION_FILL,
    ACTION_MODIFY,
    ACTION_NONE,
    ACTION_TRADE,
    F_LAST,
    F_SNAPSHOT,
    PRICE_SCALE,
    REGIME_CHOP,
    REGIME_DOWN,
    REGIME_UP,
    SAMPLE_EVENT,
    SAMPLE_PACKET,
    SAMPLE_TIME,
    SIDE_ASK,
    SIDE_BID,
    UNDEF_PRICE,
)
from vpbatch.book.hashtable import delete_slot, find, find_or_insert, rehash
from vpbatch.book.jit import guard
from vpbatch.book.mbp_layout import RAW_FIXED
from vpbatch.book.numba_math import import_numba_math
from vpbatch.book.state import (
    AN_CANCEL_UNKNOWN,
    AN_DUPLICATE_ID,
    AN_FILL_UNKNOWN,
    AN_MODIFY_UNKNOWN,
    AN_SIDE_NONE,
    AN_UNDEF_PRICE,
    AN_UNKNOWN_ACTION,
    AN_ZERO_SIZE,
    ASK,
    BID,
    EMPTY_KEY,
    MAX_LOAD,
    STATUS_DONE,
    STATUS_GROW,
    STATUS_OUT_FULL,
    EngineState,
)
from vpbatch.clock import NS_PER_SECOND

import_numba_math()  # before any kernel loads (vpbatch.book.numba_math)

#: alpha(dt, tau) is exactly 1 beyond this many time constants (SPEC §7).
ALPHA_SATURATION = 50.0
#: Tick steps a best-price or top-of-book walk may take before it gives up on a side.
MAX_WALK_STEPS = 100_000
#: Magnitudes below this cannot overflow float64 when combined as in ``advance_chain``.
SAFE_MAGNITUDE = 1e300
#: Chains at or beyond this magnitude make every later regime step take the exact path:
#: below it the reference's non-finite fallback (SPEC §7) can never apply to a ``_now`` value.
TAME_LIMIT = 1e200
#: Regime evaluations a cell's cached decay is carried forward before it is recomputed (the
#: carried product drifts ~2 ulp per evaluation).
DECAY_REUSE = 64
#: Bound, relative to each cell's chain magnitudes, on how far the filter's forces may be
#: from ``forces_now``'s: the carried decays are within ~1e-13 of exp(); 1e-10 leaves ~1000x.
FILTER_KAPPA = 1e-10
#: Rounding of the score's own division and subtraction, added to every score margin.
SCORE_ROUNDING = 1e-14
#: ``filtered_regime``: a threshold lies within the error bound; evaluate exactly.
UNDECIDED = -1
#: Fixed columns of a raw MBP row, before the 6 * levels book columns (layout: mbp_layout).
MBP_FIXED = RAW_FIXED

#: A touch (SPEC §6): bucket, its depth before the record, and the three deltas.
TOUCH_DTYPE = np.dtype(
    [("bucket", "<i8"), ("pre", "<i8"), ("d_add", "<f8"), ("d_pull", "<f8"), ("d_fill", "<f8")]
)


#: Entry point called from Python: compiled once (one argument type) and cached.
kernel = njit(cache=True, nogil=True, forceinline=False)
#: A part of ``process_chunk`` compiled (once, one argument type) and cached on its own, so
#: that a cold start can compile the parts in two processes at once (``coldstart``);
#: ``process_chunk`` then links them in. A hot stage is inlined there by LLVM, a cold one
#: called (like ``inlined`` and ``called`` helpers).
hot_stage = njit(cache=True, nogil=True, forceinline=True)
cold_stage = njit(cache=True, nogil=True)


def inlined(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hot helper: compiled into the kernels that call it and inlined there by LLVM."""
    return register_jitable(forceinline=True, no_cfunc_wrapper=True)(fn)


def called(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Cold helper: compiled into the kernels that call it and called from there."""
    return register_jitable(forceinline=False, no_cfunc_wrapper=True)(fn)


class Output(NamedTuple):
    """Caller-allocated emission buffers; ``counts`` = [states, mbp rows]."""

    snap: np.ndarray
    grid: np.ndarray
    mbp: np.ndarray
    counts: np.ndarray


# --------------------------------------------------------------------------- prices, buckets


@njit(cache=True, inline="always")
def bucket_of(price: int, bucket: int) -> int:
    """b(p) = floor(p / B + 1/2), in integers."""
    return (2 * price + bucket) // (2 * bucket)


@njit(cache=True, inline="always")
def level_key(side: int, price: int) -> int:
    return price * 2 + side


@njit(cache=True, inline="always")
def book_side(side_code: int) -> int:
    """Record side code -> BID/ASK, or -1 for side N (or garbage)."""
    if side_code == SIDE_BID:
        return BID
    if side_code == SIDE_ASK:
        return ASK
    return -1


# --------------------------------------------------------------------------- book: levels


@called
def scan_best(st, side: int, below: int, above: int) -> int:
    """Best ``side`` price strictly inside (below, above) by scanning the level table.

    Used when prices are not all on the tick grid (stepping would skip them); returns
    ``UNDEF_PRICE`` when there is none.
    """
    best = UNDEF_PRICE
    for i in range(st.levels.shape[0]):
        key = st.levels[i].key
        if key != EMPTY_KEY and (key & 1) == side:
            p = key >> 1
            if below < p < above and (best == UNDEF_PRICE or (side == BID and p > best)
                                      or (side == ASK and p < best)):
                best = p
    return best


# Called by inlined and by called helpers: one dispatcher, compiled once (not per caller).
@njit(nogil=True, forceinline=False)
def next_level(st, side: int, price: int, tick: int) -> int:
    """The next non-empty price behind ``price`` on ``side`` (UNDEF_PRICE when none).

    Steps one tick at a time (levels are usually adjacent), bounded by the side's loose
    price range; off-tick books fall back to a table scan.
    """
    sc = st.sc[0]
    if sc.off_tick_levels > 0:
        if side == BID:
            return scan_best(st, BID, -UNDEF_PRICE, price)
        return scan_best(st, ASK, price, UNDEF_PRICE)
    if side == BID:
        steps = (price - sc.bid_lo) // tick
        for s in range(1, min(steps, MAX_WALK_STEPS) + 1):
            if find(st.levels, level_key(BID, price - s * tick)) >= 0:
                return price - s * tick
        if steps <= MAX_WALK_STEPS:
            return UNDEF_PRICE
        return scan_best(st, BID, -UNDEF_PRICE, price)
    steps = (sc.ask_hi - price) // tick
    for s in range(1, min(steps, MAX_WALK_STEPS) + 1):
        if find(st.levels, level_key(ASK, price + s * tick)) >= 0:
            return price + s * tick
    if steps <= MAX_WALK_STEPS:
        return UNDEF_PRICE
    return scan_best(st, ASK, price, UNDEF_PRICE)


@inlined
def change_level(st, side: int, price: int, d_size: int, d_count: int, tick: int) -> None:
    """Add ``d_size`` lots and ``d_count`` orders to a price level, keeping best bid/ask."""
    sc = st.sc[0]
    i, new = find_or_insert(st.levels, level_key(side, price))
    if new:
        st.levels[i].size = 0
        st.levels[i].count = 0
        sc.n_levels += 1
        if price % tick != 0:
            sc.off_tick_levels += 1
        if side == BID:
            if sc.bid_levels == 0 or price > sc.best_bid:
                sc.best_bid = price
            if sc.bid_levels == 0 or price < sc.bid_lo:
                sc.bid_lo = price
            sc.bid_levels += 1
        else:
            if sc.ask_levels == 0 or price < sc.best_ask:
                sc.best_ask = price
            if sc.ask_levels == 0 or price > sc.ask_hi:
                sc.ask_hi = price
            sc.ask_levels += 1
    st.levels[i].size += d_size
    st.levels[i].count += d_count
    if st.levels[i].count <= 0:
        delete_slot(st.levels, i)
        sc.n_levels -= 1
        if side == BID:
            sc.bid_levels -= 1
            if sc.bid_levels > 0 and price == sc.best_bid:
                sc.best_bid = next_level(st, side, price, tick)
        else:
            sc.ask_levels -= 1
            if sc.ask_levels > 0 and price == sc.best_ask:
                sc.best_ask = next_level(st, side, price, tick)
        if price % tick != 0:
            # Counted down only after the walk from this (off-grid) price: stepping by
            # ticks from it would miss the on-grid levels behind it.
            sc.off_tick_levels -= 1


@inlined
def change_bucket_depth(st, side: int, bucket: int, d_size: int) -> None:
    """Resting size per absolute bucket and side (exact; what the grid's depths show)."""
    sc = st.sc[0]
    i, new = find_or_insert(st.buckets, bucket)
    if new:
        st.buckets[i].bid = 0
        st.buckets[i].ask = 0
        sc.n_buckets += 1
    if side == BID:
        st.buckets[i].bid += d_size
    else:
        st.buckets[i].ask += d_size
    if st.buckets[i].bid == 0 and st.buckets[i].ask == 0:
        delete_slot(st.buckets, i)
        sc.n_buckets -= 1


@njit(cache=True, inline="always")
def bucket_depth(st, bucket: int) -> tuple[int, int]:
    """(bid, ask) resting size in an absolute bucket."""
    i = find(st.buckets, bucket)
    if i < 0:
        return 0, 0
    return st.buckets[i].bid, st.buckets[i].ask


@kernel
def level_size(st, side: int, price: int) -> int:
    """Resting size at one price level (0 when empty)."""
    i = find(st.levels, level_key(side, price))
    return st.levels[i].size if i >= 0 else 0


@njit(cache=True, inline="always")
def bucket_total(st, bucket: int) -> int:
    bid, ask = bucket_depth(st, bucket)
    return bid + ask


# --------------------------------------------------------------------------- book: orders


@inlined
def insert_order(st, prm, oid: int, side: int, price: int, size: int, pending: int) -> None:
    sc = st.sc[0]
    i, _ = find_or_insert(st.orders, oid)
    o = st.orders[i]
    o.side = side
    o.price = price
    o.size = size
    o.pending = pending
    sc.n_orders += 1
    change_level(st, side, price, size, 1, prm.tick)
    if sc.full:
        change_bucket_depth(st, side, bucket_of(price, prm.bucket), size)


@inlined
def reduce_order(st, prm, slot: int, qty: int) -> None:
    """Take ``qty`` (<= size) lots off a resting order; remove it at zero."""
    sc = st.sc[0]
    o = st.orders[slot]
    side = o.side
    price = o.price
    gone = qty >= o.size
    change_level(st, side, price, -qty, -1 if gone else 0, prm.tick)
    if sc.full:
        change_bucket_depth(st, side, bucket_of(price, prm.bucket), -qty)
    if gone:
        delete_slot(st.orders, slot)
        sc.n_orders -= 1
    else:
        o.size -= qty


@njit(cache=True, inline="always")
def consume_pending(st, slot: int, removed: int) -> int:
    """Part of a removal already counted as fill; returns the rest (the pull)."""
    o = st.orders[slot]
    consumed = min(removed, o.pending)
    o.pending -= consumed
    return removed - consumed


@inlined
def record_touch(st, prm, tch, n: int, price: int, d_add: float, d_pull: float,
                 d_fill: float) -> int:
    """Note touch ``n`` at ``price`` with the bucket's depth *now* (call before the change).

    The book-only path makes no touches, so it skips the bucket arithmetic entirely.
    """
    if not st.sc[0].full:
        return n
    t = tch[n]
    t.bucket = bucket_of(price, prm.bucket)
    t.pre = bucket_total(st, t.bucket)
    t.d_add = d_add
    t.d_pull = d_pull
    t.d_fill = d_fill
    return n + 1


@njit(cache=True, inline="always")
def valid_add(st, price: int, side: int, size: int) -> bool:
    """SPEC §3 anomalies that skip an A (or an add-like M) entirely; counted."""
    if price == UNDEF_PRICE:
        st.anomalies[AN_UNDEF_PRICE] += 1
        return False
    if side < 0:
        st.anomalies[AN_SIDE_NONE] += 1
        return False
    if size == 0:
        st.anomalies[AN_ZERO_SIZE] += 1
        return False
    return True


@inlined
def apply_add(st, prm, oid: int, side: int, price: int, size: int, tch) -> int:
    if not valid_add(st, price, side, size):
        return 0
    # The touch remembers the bucket's depth *before* the record (SPEC §7), so it is taken
    # before a live order with the same id is replaced (SPEC §3: the old order goes too).
    n = record_touch(st, prm, tch, 0, price, float(size), 0.0, 0.0)
    slot = find(st.orders, oid)
    if slot >= 0:
        st.anomalies[AN_DUPLICATE_ID] += 1
        reduce_order(st, prm, slot, st.orders[slot].size)
    insert_order(st, prm, oid, side, price, size, 0)
    return n


@inlined
def apply_cancel(st, prm, oid: int, size: int, tch) -> int:
    slot = find(st.orders, oid)
    if slot < 0:
        st.anomalies[AN_CANCEL_UNKNOWN] += 1
        return 0
    removed = min(size, st.orders[slot].size)
    if removed == 0:
        return 0
    pull = consume_pending(st, slot, removed)
    n = record_touch(st, prm, tch, 0, st.orders[slot].price, 0.0, float(pull), 0.0)
    reduce_order(st, prm, slot, removed)
    return n


@inlined
def apply_fill(st, prm, oid: int, price: int, size: int, tch) -> int:
    """Fills are counted now; the book changes with the C/M that follows (pending fill)."""
    slot = find(st.orders, oid)
    if slot >= 0:
        st.orders[slot].pending += size
        price = st.orders[slot].price
    else:
        st.anomalies[AN_FILL_UNKNOWN] += 1
        if price == UNDEF_PRICE:
            return 0
    return record_touch(st, prm, tch, 0, price, 0.0, 0.0, float(size))


@inlined
def apply_modify(st, prm, oid: int, side: int, price: int, size: int, tch) -> int:
    if price == UNDEF_PRICE:
        st.anomalies[AN_UNDEF_PRICE] += 1
        return 0
    if side < 0:
        st.anomalies[AN_SIDE_NONE] += 1
        return 0
    slot = find(st.orders, oid)
    if slot < 0:
        st.anomalies[AN_MODIFY_UNKNOWN] += 1
        if not valid_add(st, price, side, size):
            return 0
        n = record_touch(st, prm, tch, 0, price, float(size), 0.0, 0.0)
        insert_order(st, prm, oid, side, price, size, 0)
        return n
    o = st.orders[slot]
    p0 = o.price
    q0 = o.size
    if price == p0:
        if size > q0:
            n = record_touch(st, prm, tch, 0, p0, float(size - q0), 0.0, 0.0)
            change_level(st, o.side, p0, size - q0, 0, prm.tick)
            if st.sc[0].full:
                change_bucket_depth(st, o.side, bucket_of(p0, prm.bucket), size - q0)
            o.size = size
            return n
        if size < q0:
            pull = consume_pending(st, slot, q0 - size)
            n = record_touch(st, prm, tch, 0, p0, 0.0, float(pull), 0.0)
            reduce_order(st, prm, slot, q0 - size)
            return n
        return record_touch(st, prm, tch, 0, p0, 0.0, 0.0, 0.0)
    # Price change: the whole order leaves p0 and (if size > 0) rests again at the new price.
    keep_side = o.side
    pull = consume_pending(st, slot, q0)
    pending = st.orders[slot].pending
    n = record_touch(st, prm, tch, 0, p0, 0.0, float(pull), 0.0)
    reduce_order(st, prm, slot, q0)
    n = record_touch(st, prm, tch, n, price, float(size), 0.0, 0.0)
    if size > 0:
        insert_order(st, prm, oid, keep_side, price, size, pending)
    return n


@called
def apply_clear(st) -> None:
    """R: every order, level and bucket depth goes."""
    st.orders.key[:] = EMPTY_KEY
    st.levels.key[:] = EMPTY_KEY
    st.buckets.key[:] = EMPTY_KEY
    sc = st.sc[0]
    sc.n_orders = 0
    sc.n_levels = 0
    sc.n_buckets = 0
    sc.bid_levels = 0
    sc.ask_levels = 0
    sc.off_tick_levels = 0


# --------------------------------------------------------------------------- spot and window


@called
def reset_cells_between(st, prm, lo: int, hi: int) -> None:
    """Band rule: forget the state of absolute buckets lo..hi (inclusive)."""
    if hi - lo + 1 >= prm.W:
        st.cells.bucket[:] = EMPTY_KEY
        return
    for b in range(lo, hi + 1):
        slot = b % prm.W
        if st.cells[slot].bucket == b:
            st.cells[slot].bucket = EMPTY_KEY


@njit(cache=True, inline="always")
def update_spot(st, prm) -> None:
    """Spot = b(mid) of a two-sided book; buckets leaving the band are reset."""
    sc = st.sc[0]
    if sc.bid_levels == 0 or sc.ask_levels == 0:
        return
    if sc.spot_defined and sc.best_bid + sc.best_ask == sc.mid2:
        return  # same mid, same spot: skip the division (most records)
    sc.mid2 = sc.best_bid + sc.best_ask
    spot = (sc.mid2 + prm.bucket) // (2 * prm.bucket)
    if sc.spot_defined and spot != sc.spot:
        if spot > sc.spot:
            leaving_hi = min(spot - prm.band, sc.spot + prm.band + 1) - 1
            reset_cells_between(st, prm, sc.spot - prm.band, leaving_hi)
        else:
            leaving_lo = max(spot + prm.band, sc.spot - prm.band - 1) + 1
            reset_cells_between(st, prm, leaving_lo, sc.spot + prm.band)
    sc.spot = spot
    sc.spot_defined = True


@called
def rebuild_bucket_depths(st, prm) -> None:
    """Per-bucket depth from the resting orders (the book-only path does not keep it)."""
    sc = st.sc[0]
    st.buckets.key[:] = EMPTY_KEY
    sc.n_buckets = 0
    for i in range(st.orders.shape[0]):
        o = st.orders[i]
        if o.key != EMPTY_KEY:
            change_bucket_depth(st, o.side, bucket_of(o.price, prm.bucket), o.size)


@cold_stage
def catch_up(st, prm) -> None:
    """Entering the full engine after the book-only path (or an imported book)."""
    rebuild_bucket_depths(st, prm)
    resync_rest_memory(st)
    st.sc[0].resync_due = False


@called
def resync_rest_memory(st) -> None:
    """After a snapshot or a fast-forwarded/cached book: no phantom depth velocity."""
    for i in range(st.cells.shape[0]):
        b = st.cells[i].bucket
        if b != EMPTY_KEY:
            st.cells[i].rest_mem = bucket_total(st, b)


# --------------------------------------------------------------------------- cells (SPEC §7)


@njit(cache=True, inline="always")
def alpha(dt: float, tau: float) -> float:
    x = dt / tau
    if x > ALPHA_SATURATION:
        return 1.0
    return 1.0 - math.exp(-x)


@njit(cache=True, inline="always")
def chain_alphas(dt: float, prm) -> tuple[float, float, float]:
    """(alpha_v, alpha_a, alpha_j) for one update: they depend on dt only."""
    return alpha(dt, prm.tau_v), alpha(dt, prm.tau_a), alpha(dt, prm.tau_j)


@inlined
def advance_chain(v0: float, a0: float, j0: float, rate: float, dt: float, av: float,
                  aa: float, aj: float) -> tuple[float, float, float]:
    """One EMA step of velocity, acceleration, jerk; a non-finite result keeps the base."""
    v = av * rate + (1.0 - av) * v0
    a = aa * (v - v0) / dt + (1.0 - aa) * a0
    j = aj * (a - a0) / dt + (1.0 - aj) * j0
    if math.isfinite(v) and math.isfinite(a) and math.isfinite(j):
        return v, a, j
    return v0, a0, j0


@njit(cache=True, inline="always")
def pos(x: float) -> float:
    """max(x, 0) that never returns -0.0."""
    return x if x > 0.0 else 0.0


@inlined
def forces(prm, v_add: float, a_add: float, v_pull: float, a_pull: float, v_fill: float,
           v_rest: float) -> tuple[float, float]:
    """SPEC §8 (pressure, vacuum), both non-negative."""
    pressure = prm.c_p_v_add * v_add + prm.c_p_v_rest * pos(v_rest) + prm.c_p_a_add * pos(a_add)
    vacuum = prm.c_v_v_pull * v_pull + prm.c_v_v_fill * v_fill + prm.c_v_v_rest * pos(-v_rest) \
        + prm.c_v_a_pull * pos(a_pull)
    return pressure, vacuum


@called
def start_cell(c, bucket: int, t0: int, pre_depth: int) -> None:
    """A cell with no state: zero masses and chains, clock at the engine's first time."""
    c.bucket = bucket
    c.t_b = t0
    c.dt = 0.0
    c.rest_mem = pre_depth
    c.base_rest = pre_depth
    c.last_event_id = 0
    c.last_ts = 0
    c.add_mass = c.pull_mass = c.fill_mass = 0.0
    c.base_add_mass = c.base_pull_mass = c.base_fill_mass = 0.0
    c.d_add = c.d_pull = c.d_fill = 0.0
    c.v_add = c.a_add = c.j_add = c.v_pull = c.a_pull = c.j_pull = 0.0
    c.v_fill = c.a_fill = c.j_fill = c.v_rest = c.a_rest = c.j_rest = 0.0
    c.base_v_add = c.base_a_add = c.base_j_add = 0.0
    c.base_v_pull = c.base_a_pull = c.base_j_pull = 0.0
    c.base_v_fill = c.base_a_fill = c.base_j_fill = 0.0
    c.base_v_rest = c.base_a_rest = c.base_j_rest = 0.0
    c.pressure = c.vacuum = 0.0


@called
def start_group(c, t: int) -> None:
    """A new time group: today's values become the base the group is recomputed from."""
    c.base_add_mass = c.add_mass
    c.base_pull_mass = c.pull_mass
    c.base_fill_mass = c.fill_mass
    c.base_v_add, c.base_a_add, c.base_j_add = c.v_add, c.a_add, c.j_add
    c.base_v_pull, c.base_a_pull, c.base_j_pull = c.v_pull, c.a_pull, c.j_pull
    c.base_v_fill, c.base_a_fill, c.base_j_fill = c.v_fill, c.a_fill, c.j_fill
    c.base_v_rest, c.base_a_rest, c.base_j_rest = c.v_rest, c.a_rest, c.j_rest
    c.base_rest = c.rest_mem
    c.dt = (t - c.t_b) / NS_PER_SECOND
    c.d_add = c.d_pull = c.d_fill = 0.0


@inlined
def recompute_cell(c, prm, depth_now: int) -> None:
    """Masses, the four chains and the forces from the group's base, dt and deltas."""
    dt = c.dt
    decay = math.exp(-dt / prm.tau_rest)
    c.add_mass = c.base_add_mass * decay + c.d_add
    c.pull_mass = c.base_pull_mass * decay + c.d_pull
    c.fill_mass = c.base_fill_mass * decay + c.d_fill
    if dt > 0.0:
        av, aa, aj = chain_alphas(dt, prm)
        c.v_add, c.a_add, c.j_add = advance_chain(
            c.base_v_add, c.base_a_add, c.base_j_add, c.d_add / dt, dt, av, aa, aj)
        c.v_pull, c.a_pull, c.j_pull = advance_chain(
            c.base_v_pull, c.base_a_pull, c.base_j_pull, c.d_pull / dt, dt, av, aa, aj)
        c.v_fill, c.a_fill, c.j_fill = advance_chain(
            c.base_v_fill, c.base_a_fill, c.base_j_fill, c.d_fill / dt, dt, av, aa, aj)
        c.v_rest, c.a_rest, c.j_rest = advance_chain(
            c.base_v_rest, c.base_a_rest, c.base_j_rest, (depth_now - c.base_rest) / dt, dt,
            av, aa, aj)
    c.pressure, c.vacuum = forces(prm, c.v_add, c.a_add, c.v_pull, c.a_pull, c.v_fill, c.v_rest)


@cold_stage
def touch_bucket(st, prm, bucket: int, pre: int, d_add: float, d_pull: float,
                 d_fill: float) -> None:
    """SPEC §7: coalesce into the cell's time group and recompute the whole cell."""
    sc = st.sc[0]
    c = st.cells[bucket % prm.W]
    if c.bucket != bucket:
        start_cell(c, bucket, sc.t0, pre)
    if sc.t > c.t_b:
        start_group(c, sc.t)
    c.d_add += d_add
    c.d_pull += d_pull
    c.d_fill += d_fill
    depth_now = bucket_total(st, bucket)
    recompute_cell(c, prm, depth_now)
    c.t_b = sc.t
    c.rest_mem = depth_now
    c.last_event_id = sc.n
    c.last_ts = sc.t
    if not chains_tame(c):
        sc.wild = True


@njit(cache=True, inline="always")
def chains_tame(c) -> bool:
    """Every chain value finite and far from overflow (``TAME_LIMIT``)."""
    m = max(abs(c.v_add), abs(c.a_add), abs(c.j_add), abs(c.v_pull), abs(c.a_pull),
            abs(c.j_pull), abs(c.v_fill), abs(c.a_fill), abs(c.j_fill), abs(c.v_rest),
            abs(c.a_rest), abs(c.j_rest))
    return m < TAME_LIMIT


@njit(cache=True, inline="always")
def idle_va(v0: float, a0: float, dt: float, av: float, aa: float) -> tuple[float, float]:
    """v and a of one zero-rate ``advance_chain`` step, before its finiteness check."""
    v = av * 0.0 + (1.0 - av) * v0
    return v, aa * (v - v0) / dt + (1.0 - aa) * a0


@inlined
def idle_chain(v0: float, a0: float, j0: float, dt: float, av: float, aa: float,
               prm) -> tuple[float, float]:
    """(v, a) of ``advance_chain`` with rate 0, without computing jerk when it cannot matter.

    Jerk only decides the non-finite fallback, and ``aj * x + (1 - aj) * j0`` is finite
    whenever ``x`` is finite and ``|x| + |j0|`` is far from overflow; otherwise the exact
    chain decides. Saves a third of the exps of every regime evaluation.
    """
    v, a = idle_va(v0, a0, dt, av, aa)
    x = (a - a0) / dt
    if math.isfinite(v) and math.isfinite(a) and math.isfinite(x) \
            and abs(x) + abs(j0) < SAFE_MAGNITUDE:
        return v, a
    v, a, _ = advance_chain(v0, a0, j0, 0.0, dt, av, aa, alpha(dt, prm.tau_j))
    return v, a


@njit(cache=True, inline="always")
def window_start(sc, prm) -> int:
    """Ring slot of the window's first cell (k = -K); later cells follow with ``next_slot``."""
    return (sc.spot - prm.K) % prm.W


@njit(cache=True, inline="always")
def next_slot(slot: int, prm) -> int:
    """The ring slot after ``slot`` (an integer modulo per cell costs more than the cell)."""
    return slot + 1 if slot + 1 < prm.W else 0


@inlined
def forces_now(c, prm, bucket: int, t: int, tame: bool) -> tuple[float, float]:
    """SPEC §8 as-of forces of ``bucket`` (ring cell ``c``): the chains advanced without
    activity from t_b to t.

    ``tame`` (no chain ever reached ``TAME_LIMIT``, see ``chains_tame``): every step is
    finite (dt >= 1 ns), so the non-finite fallback and the jerk that only feeds it are
    skipped; the values are the same.
    """
    if c.bucket != bucket:
        return 0.0, 0.0
    if t <= c.t_b:
        return c.pressure, c.vacuum
    dt = (t - c.t_b) / NS_PER_SECOND
    av = alpha(dt, prm.tau_v)
    aa = alpha(dt, prm.tau_a)
    if tame:
        v_add, a_add = idle_va(c.v_add, c.a_add, dt, av, aa)
        v_pull, a_pull = idle_va(c.v_pull, c.a_pull, dt, av, aa)
        v_fill = av * 0.0 + (1.0 - av) * c.v_fill
        v_rest = av * 0.0 + (1.0 - av) * c.v_rest
        return forces(prm, v_add, a_add, v_pull, a_pull, v_fill, v_rest)
    v_add, a_add = idle_chain(c.v_add, c.a_add, c.j_add, dt, av, aa, prm)
    v_pull, a_pull = idle_chain(c.v_pull, c.a_pull, c.j_pull, dt, av, aa, prm)
    v_fill, _ = idle_chain(c.v_fill, c.a_fill, c.j_fill, dt, av, aa, prm)
    v_rest, _ = idle_chain(c.v_rest, c.a_rest, c.j_rest, dt, av, aa, prm)
    return forces(prm, v_add, a_add, v_pull, a_pull, v_fill, v_rest)


# --------------------------------------------------------------------------- regime (SPEC §9)


@inlined
def add_to_score(prm, sc, bucket: int, w: float, p_now: float, v_now: float,
                 sums: np.ndarray) -> None:
    """sums = [bull, bear]; a cell at the mid counts for neither."""
    twice = 2 * bucket * prm.bucket
    if twice > sc.mid2:
        sums[0] += w * v_now
        sums[1] += w * p_now
    elif twice < sc.mid2:
        sums[0] += w * p_now
        sums[1] += w * v_now


@called
def regime_score(st, prm, t: int) -> tuple[float, float]:
    """(score, intensity) of the window around spot with forces as of ``t``."""
    sc = st.sc[0]
    sums = np.zeros(2)
    if sc.spot_defined:
        slot = window_start(sc, prm)
        for idx in range(2 * prm.K + 1):
            b = sc.spot + idx - prm.K
            p_now, v_now = forces_now(st.cells[slot], prm, b, t, not sc.wild)
            slot = next_slot(slot, prm)
            add_to_score(prm, sc, b, st.weights[idx], p_now, v_now, sums)
    bull = sums[0]
    bear = sums[1]
    return (bull - bear) / (bull + bear + prm.eps), bull + bear


@called
def next_regime(prm, regime: int, score: float, intensity: float) -> int:
    """Hysteresis: UP holds until score < theta_off, DOWN until score > -theta_off."""
    if intensity < prm.intensity_floor:
        return REGIME_CHOP
    up_fades = regime == REGIME_UP and score < prm.theta_off
    down_fades = regime == REGIME_DOWN and score > -prm.theta_off
    if up_fades or down_fades:
        regime = REGIME_CHOP
    if regime == REGIME_CHOP:
        if score >= prm.theta_on:
            return REGIME_UP
        if score <= -prm.theta_on:
            return REGIME_DOWN
    return regime


@inlined
def carried_decay(c, prm, t: int, since: int, ratio_v: float,
                  ratio_a: float) -> tuple[float, float]:
    """(exp(-dt/tau_v), exp(-dt/tau_a)) at ``t`` for the cell's ``t_b``, 0 once saturated.

    A cell evaluated at the window's previous evaluation (``since``) carries its cached
    decays forward with the window's shared ratios: two multiplications instead of two exps.
    """
    if c.e_tb == c.t_b and c.e_t == since and c.e_n < DECAY_REUSE:
        ev = c.e_v * ratio_v
        ea = c.e_a * ratio_a
        c.e_n += 1
    else:
        dt = (t - c.t_b) / NS_PER_SECOND
        ev = math.exp(-dt / prm.tau_v)
        ea = math.exp(-dt / prm.tau_a)
        c.e_n = 0
    c.e_t = t
    c.e_tb = c.t_b
    c.e_v = ev
    c.e_a = ea
    elapsed = t - c.t_b
    if elapsed > ALPHA_SATURATION * prm.tau_v * NS_PER_SECOND:
        ev = 0.0
    if elapsed > ALPHA_SATURATION * prm.tau_a * NS_PER_SECOND:
        ea = 0.0
    return ev, ea


@inlined
def filtered_forces(c, prm, t: int, ev: float, ea: float,
                    rate: float) -> tuple[float, float, float]:
    """(pressure_now, vacuum_now) from carried decays, and the magnitude their error scales with.

    The same formulas as ``forces_now`` with ``1 - alpha`` replaced by the decays; each value
    is within ``FILTER_KAPPA * magnitude`` of ``forces_now``'s (tame chains only).
    """
    inv_dt = NS_PER_SECOND / (t - c.t_b)
    aa = 1.0 - ea
    v_add = ev * c.v_add
    v_pull = ev * c.v_pull
    a_add = aa * (v_add - c.v_add) * inv_dt + ea * c.a_add
    a_pull = aa * (v_pull - c.v_pull) * inv_dt + ea * c.a_pull
    pressure, vacuum = forces(prm, v_add, a_add, v_pull, a_pull, ev * c.v_fill, ev * c.v_rest)
    magnitude = (abs(prm.c_p_v_add) * abs(c.v_add) + abs(prm.c_v_v_pull) * abs(c.v_pull)
                 + abs(prm.c_v_v_fill) * abs(c.v_fill)
                 + (abs(prm.c_p_v_rest) + abs(prm.c_v_v_rest)) * abs(c.v_rest)
                 + 2.0 * abs(prm.c_p_a_add) * (abs(c.a_add) + rate * abs(c.v_add))
                 + 2.0 * abs(prm.c_v_a_pull) * (abs(c.a_pull) + rate * abs(c.v_pull)))
    return pressure, vacuum, magnitude


@called
def filtered_score(st, prm, t: int) -> tuple[float, float, float]:
    """(bull, bear, bound) of the window at ``t``: ``regime_score``'s sums, each within ``bound``.

    Exact where ``regime_score`` needs no exp (absent cells, cells touched at ``t``); other
    cells use ``filtered_forces``. Updates the cells' decay caches and ``eval_t``.
    """
    sc = st.sc[0]
    since = sc.eval_t
    ratio_v = ratio_a = 0.0
    if since != EMPTY_KEY and t > since:
        gap = (t - since) / NS_PER_SECOND
        ratio_v = math.exp(-gap / prm.tau_v)
        ratio_a = math.exp(-gap / prm.tau_a)
    else:
        since = EMPTY_KEY  # no cell carries its decays forward
    rate = 1.0 / prm.tau_v + 1.0 / prm.tau_a
    bull = bear = bound = 0.0
    if sc.spot_defined:
        slot = window_start(sc, prm)
        for idx in range(2 * prm.K + 1):
            b = sc.spot + idx - prm.K
            c = st.cells[slot]
            slot = next_slot(slot, prm)
            twice = 2 * b * prm.bucket
            if c.bucket != b or twice == sc.mid2:
                continue
            if t <= c.t_b:
                p_now, v_now, magnitude = c.pressure, c.vacuum, 0.0
            else:
                ev, ea = carried_decay(c, prm, t, since, ratio_v, ratio_a)
                p_now, v_now, magnitude = filtered_forces(c, prm, t, ev, ea, rate)
            w = st.weights[idx]
            if twice > sc.mid2:
                bull += w * v_now
                bear += w * p_now
            else:
                bull += w * p_now
                bear += w * v_now
            bound += w * magnitude
    sc.eval_t = t
    return bull, bear, FILTER_KAPPA * bound


@called
def filtered_regime(prm, regime: int, bull: float, bear: float, bound: float) -> int:
    """``next_regime`` of the exact score if every score within the bound decides the same.

    ``regime_score``'s sums lie within ``bound`` (plus summation rounding) of ``bull``/``bear``;
    when a threshold or the intensity floor lies that close, returns ``UNDECIDED``.
    """
    intensity = bull + bear
    slack = bound + FILTER_KAPPA * intensity
    if not (intensity + slack < prm.intensity_floor or intensity - slack >= prm.intensity_floor):
        return UNDECIDED
    den = intensity + prm.eps
    low = den - slack
    if low <= 0.0:
        return UNDECIDED
    score = (bull - bear) / den
    reach = 2.0 * slack * (den + slack) / (low * low) + SCORE_ROUNDING
    for threshold in (prm.theta_on, -prm.theta_on, prm.theta_off, -prm.theta_off):
        if abs(score - threshold) <= reach:
            return UNDECIDED
    return next_regime(prm, regime, score, intensity)


@cold_stage
def step_regime(st, prm, boundary: int) -> None:
    """One step of the machine at ``boundary``: filtered when it can be, exact otherwise.

    The filter (``filtered_score``) skips the exps of ``regime_score`` but bounds its error;
    the step is decided by it only when the exact score is certain to decide the same, so
    the regime sequence is exactly ``regime_score``'s (docs/SEMANTICS.md, "Regime steps").
    """
    sc = st.sc[0]
    regime = UNDECIDED
    if not sc.wild:
        bull, bear, bound = filtered_score(st, prm, boundary)
        regime = filtered_regime(prm, sc.regime, bull, bear, bound)
    if regime == UNDECIDED:
        score, intensity = regime_score(st, prm, boundary)
        regime = next_regime(prm, sc.regime, score, intensity)
        sc.exact_steps += 1
    sc.regime = regime


# --------------------------------------------------------------------------- emission


@cold_stage
def write_state(st, prm, out) -> None:
    """Append the engine's current state (1 snapshot row + 2K+1 grid rows) to ``out``.

    Starts the counters of the next state (records, volumes) afresh.
    """
    sc = st.sc[0]
    i = out.counts[0]
    s = out.snap[i]
    s.event_id = sc.n
    s.ts_event = sc.t
    s.ts_recv = sc.last_ts_recv
    s.spot_price = (sc.spot * prm.bucket) * PRICE_SCALE
    has_bid = sc.bid_levels > 0
    has_ask = sc.ask_levels > 0
    s.best_bid_price = sc.best_bid * PRICE_SCALE if has_bid else np.nan
    s.best_ask_price = sc.best_ask * PRICE_SCALE if has_ask else np.nan
    s.best_bid_size = st.levels[find(st.levels, level_key(BID, sc.best_bid))].size if has_bid else 0
    s.best_ask_size = st.levels[find(st.levels, level_key(ASK, sc.best_ask))].size if has_ask else 0
    s.mid_price = (sc.best_bid + sc.best_ask) * (0.5 * PRICE_SCALE) if has_bid and has_ask \
        else np.nan
    s.book_valid = sc.consistent and has_bid and has_ask
    s.crossed = has_bid and has_ask and sc.best_bid >= sc.best_ask
    s.n_records = sc.since_records
    s.buy_volume = sc.since_buy
    s.sell_volume = sc.since_sell
    s.regime = sc.regime
    sc.since_records = 0
    sc.since_buy = 0
    sc.since_sell = 0
    rows = 2 * prm.K + 1
    base = i * rows
    sums = np.zeros(2)
    slot = window_start(sc, prm)
    for idx in range(rows):
        b = sc.spot + idx - prm.K
        g = out.grid[base + idx]
        g.event_id = sc.n
        g.k = idx - prm.K
        g.price = (b * prm.bucket) * PRICE_SCALE
        g.bid_depth, g.ask_depth = bucket_depth(st, b)
        g.rest_depth = g.bid_depth + g.ask_depth
        c = st.cells[slot]
        slot = next_slot(slot, prm)
        if c.bucket == b:
            g.add_mass, g.pull_mass, g.fill_mass = c.add_mass, c.pull_mass, c.fill_mass
            g.v_add, g.v_pull, g.v_fill, g.v_rest_depth = c.v_add, c.v_pull, c.v_fill, c.v_rest
            g.a_add, g.a_pull, g.a_fill, g.a_rest_depth = c.a_add, c.a_pull, c.a_fill, c.a_rest
            g.j_add, g.j_pull, g.j_fill, g.j_rest_depth = c.j_add, c.j_pull, c.j_fill, c.j_rest
            g.pressure, g.vacuum = c.pressure, c.vacuum
            g.last_event_id, g.last_ts = c.last_event_id, c.last_ts
        else:
            g.add_mass = g.pull_mass = g.fill_mass = 0.0
            g.v_add = g.v_pull = g.v_fill = g.v_rest_depth = 0.0
            g.a_add = g.a_pull = g.a_fill = g.a_rest_depth = 0.0
            g.j_add = g.j_pull = g.j_fill = g.j_rest_depth = 0.0
            g.pressure = g.vacuum = 0.0
            g.last_event_id = 0
            g.last_ts = 0
        g.pressure_now, g.vacuum_now = forces_now(c, prm, b, sc.t, not sc.wild)
        add_to_score(prm, sc, b, st.weights[idx], g.pressure_now, g.vacuum_now, sums)
    s.regime_score = (sums[0] - sums[1]) / (sums[0] + sums[1] + prm.eps)
    s.regime_intensity = sums[0] + sums[1]
    out.counts[0] = i + 1


@called
def walk_side(st, prm, side: int, row: np.ndarray, col: int) -> None:
    """Top ``mbp_levels`` of one side into row[col:], as px/sz/ct blocks (empty: px UNDEF)."""
    sc = st.sc[0]
    levels = prm.mbp_levels
    n_side = sc.bid_levels if side == BID else sc.ask_levels
    price = sc.best_bid if side == BID else sc.best_ask
    found = 0
    while found < levels and found < n_side and price != UNDEF_PRICE:
        i = find(st.levels, level_key(side, price))
        row[col + found] = price
        row[col + levels + found] = st.levels[i].size
        row[col + 2 * levels + found] = st.levels[i].count
        found += 1
        if found < levels and found < n_side:
            price = next_level(st, side, price, prm.tick)
    for f in range(found, levels):
        row[col + f] = UNDEF_PRICE
        row[col + levels + f] = 0
        row[col + 2 * levels + f] = 0


@cold_stage
def write_mbp(st, prm, rec, out) -> None:
    """One raw MBP row in ``mbp_layout.RAW_HEADER`` order, then the book's level blocks."""
    i = out.counts[1]
    row = out.mbp[i]
    row[0] = np.int64(rec.ts_recv)
    row[1] = np.int64(rec.ts_event)
    row[2] = np.int64(rec.sequence)
    row[3] = np.int64(rec.action)
    row[4] = np.int64(rec.side)
    row[5] = np.int64(rec.price)
    row[6] = np.int64(rec.size)
    row[7] = np.int64(rec.flags)
    row[8] = st.sc[0].n
    walk_side(st, prm, BID, row, MBP_FIXED)
    walk_side(st, prm, ASK, row, MBP_FIXED + 3 * prm.mbp_levels)
    out.counts[1] = i + 1


# --------------------------------------------------------------------------- the record loop


@njit(cache=True, inline="always")
def advance_clock(st, prm, ts_event: int, out) -> None:
    """Non-snapshot record: trailing-edge emission, regime boundary, then the clock."""
    sc = st.sc[0]
    t_new = max(sc.t, ts_event) if sc.started else ts_event
    if sc.full:
        if prm.sample_mode == SAMPLE_TIME and sc.pending \
                and (t_new - prm.epoch) // prm.sample_ns != sc.pending_bin:
            write_state(st, prm, out)
            sc.pending = False
        if sc.started:
            boundary = prm.epoch + ((t_new - prm.epoch) // prm.regime_step) * prm.regime_step
            if boundary > sc.t:
                step_regime(st, prm, boundary)
    sc.t = t_new
    if not sc.started:
        sc.started = True
        sc.t0 = t_new
    if sc.in_snapshot:
        sc.in_snapshot = False
        sc.consistent = True
        resync_rest_memory(st)


@hot_stage
def apply_record(st, prm, rec, tch) -> int:
    """Dispatch one record to its book handler; returns the number of touches made."""
    sc = st.sc[0]
    action = rec.action
    oid = np.int64(rec.order_id)
    price = np.int64(rec.price)
    size = np.int64(rec.size)
    snapshot = (rec.flags & F_SNAPSHOT) != 0
    if action == ACTION_ADD:
        return apply_add(st, prm, oid, book_side(rec.side), price, size, tch)
    if action == ACTION_CANCEL:
        return apply_cancel(st, prm, oid, size, tch)
    if action == ACTION_MODIFY:
        return apply_modify(st, prm, oid, book_side(rec.side), price, size, tch)
    if action == ACTION_CLEAR:
        apply_clear(st)
        return 0
    if action == ACTION_FILL:
        return 0 if snapshot else apply_fill(st, prm, oid, price, size, tch)
    if action == ACTION_TRADE:
        if sc.full and not snapshot:
            if rec.side == SIDE_BID:
                sc.since_buy += size
            elif rec.side == SIDE_ASK:
                sc.since_sell += size
        return 0
    if action != ACTION_NONE:
        st.anomalies[AN_UNKNOWN_ACTION] += 1
    return 0


@njit(cache=True, inline="always")
def process_record(st, prm, rec, tch, out) -> None:
    """SPEC §3-§10 for one record, in the order of docs/SEMANTICS.md."""
    sc = st.sc[0]
    flags = rec.flags
    snapshot = (flags & F_SNAPSHOT) != 0
    if sc.full and sc.resync_due:
        catch_up(st, prm)
    if not snapshot:
        advance_clock(st, prm, np.int64(rec.ts_event), out)
    sc.n += 1
    if sc.full:
        sc.since_records += 1
    if rec.action == ACTION_CLEAR:
        sc.consistent = False
    if snapshot:
        sc.in_snapshot = True
        sc.consistent = False
    n_touch = apply_record(st, prm, rec, tch)
    update_spot(st, prm)
    if sc.full and not snapshot and sc.spot_defined:
        for i in range(n_touch):
            t = tch[i]
            if abs(t.bucket - sc.spot) <= prm.band:
                touch_bucket(st, prm, t.bucket, t.pre, t.d_add, t.d_pull, t.d_fill)
    if (flags & F_LAST) != 0 and not sc.consistent:
        sc.consistent = True
        if sc.in_snapshot:
            sc.in_snapshot = False
            resync_rest_memory(st)
    sc.last_ts_recv = np.int64(rec.ts_recv)
    if not (sc.full and sc.emit):
        return
    if prm.mbp_levels > 0 and rec.action in (ACTION_ADD, ACTION_CANCEL, ACTION_MODIFY,
                                             ACTION_CLEAR, ACTION_TRADE):
        write_mbp(st, prm, rec, out)
    if not (sc.started and sc.spot_defined):
        return
    if prm.sample_mode == SAMPLE_EVENT or (prm.sample_mode == SAMPLE_PACKET
                                           and (flags & F_LAST) != 0):
        write_state(st, prm, out)
    elif prm.sample_mode == SAMPLE_TIME:
        sc.pending = True
        sc.pending_bin = (sc.t - prm.epoch) // prm.sample_ns


@njit(cache=True, inline="always")
def needs_room(st, prm, out) -> int:
    """STATUS_GROW / STATUS_OUT_FULL when one more record might not fit, else STATUS_DONE."""
    sc = st.sc[0]
    if sc.n_orders + 2 > MAX_LOAD * st.orders.shape[0] \
            or sc.n_levels + 2 > MAX_LOAD * st.levels.shape[0] \
            or sc.n_buckets + 2 > MAX_LOAD * st.buckets.shape[0]:
        return STATUS_GROW
    if out.counts[0] + 1 > out.snap.shape[0] or (
            prm.mbp_levels > 0 and out.counts[1] + 1 > out.mbp.shape[0]):
        return STATUS_OUT_FULL
    return STATUS_DONE


@njit(cache=True, inline="always")
def borrow_state(st):
    """The state container as non-owning views (no atomic refcounts in the hot loop)."""
    return EngineState(borrow(st.sc), borrow(st.orders), borrow(st.levels), borrow(st.buckets),
                       borrow(st.cells), borrow(st.weights), borrow(st.anomalies))


@kernel
def process_chunk(st, prm, records, start: int, out) -> tuple[int, int]:
    """Feed ``records[start:]``; stops early to let the caller grow tables or drain ``out``.

    Returns (index of the next unprocessed record, status).
    """
    view = borrow_state(st)
    out_view = Output(borrow(out.snap), borrow(out.grid), out.mbp, borrow(out.counts))
    touches = np.zeros(2, dtype=TOUCH_DTYPE)
    tch = borrow(touches)
    i = start
    n = records.shape[0]
    while i < n:
        status = needs_room(view, prm, out_view)
        if status != STATUS_DONE:
            return i, status
        process_record(view, prm, records[i], tch, out_view)
        i += 1
    return i, STATUS_DONE


@kernel
def flush_pending(st, prm, out) -> None:
    """End of input: the last time bin's trailing-edge state."""
    sc = st.sc[0]
    if sc.pending and sc.full and sc.emit:
        write_state(st, prm, out)
        sc.pending = False


@kernel
def current_state(st, prm, out) -> None:
    """``write_state`` from Python (``Engine.state``, which restores the counters after it)."""
    write_state(st, prm, out)


@kernel
def rebuild_book(st, prm, oids, sides, prices, sizes, pendings) -> None:
    """Import: re-insert resting orders; levels, bucket depths and best prices follow."""
    for i in range(oids.shape[0]):
        insert_order(st, prm, oids[i], sides[i], prices[i], sizes[i], pendings[i])


#: Every module whose code or constants the kernels compile in (tests/book/test_jit.py).
COMPILED_FROM: Final = tuple(sys.modules[name] for name in (
    __name__, "vpbatch.book.hashtable", "vpbatch.book.borrow", "vpbatch.book.state",
    "vpbatch.book.dtypes", "vpbatch.book.mbp_layout", "vpbatch.clock"))
#: The cached entry points, all compiled by ``python -m vpbatch.book.precompile``.
KERNELS: Final = (process_chunk, flush_pending, current_state, rebuild_book, level_size, rehash)
#: The parts ``process_chunk`` links in (each also compiled by the precompile).
STAGES: Final = (apply_record, step_regime, write_state, write_mbp, touch_bucket, catch_up)
guard("book", COMPILED_FROM)
