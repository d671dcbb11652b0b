"""The simulated book's primitives (numba): FIFO price levels over an order pool.

``lv`` is ``Simulation.levels``, ``od`` ``Simulation.orders`` (rows ``LV_*`` / ``OD_*``, see
:mod:`vpbatch.synth.state`), ``st`` the state record. Every change keeps each level's
count and depth and the best bid/ask exact, so the stream written from it stays consistent.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from vpbatch.synth.model import FAST_CUM, FAST_HI, FAST_LO, SLOW_CUM, SLOW_HI, SLOW_LO
from vpbatch.synth.rng import draw_table, fast_dist, geom, slow_dist
from vpbatch.synth.state import (
    LV_COUNT,
    LV_DEPTH,
    LV_HEAD,
    LV_TAIL,
    NLEV,
    OD_ALIVE,
    OD_CLASS,
    OD_DENSE_POS,
    OD_LEVEL,
    OD_NEXT,
    OD_PREV,
    OD_SEQ,
    OD_SIDE,
    OD_SIZE,
    OD_TS,
    Record,
    Simulation,
)


@register_jitable(no_cfunc_wrapper=True)
def rescan(lv: np.ndarray, st: Record, side: int) -> None:
    """Move the best of ``side`` outwards past empty levels."""
    if side == 0:
        b = st.best_bid
        while b >= 0 and lv[LV_COUNT, b] == 0:
            b -= 1
        st.best_bid = b
    else:
        a = st.best_ask
        while a < NLEV and lv[LV_COUNT, NLEV + a] == 0:
            a += 1
        st.best_ask = a


@register_jitable(no_cfunc_wrapper=True)
def level_append(lv: np.ndarray, od: np.ndarray, st: Record, slot: int, lvl: int) -> None:
    """Queue order ``slot`` last at level ``lvl`` of its side."""
    side = od[OD_SIDE, slot]
    k = side * NLEV + lvl
    od[OD_LEVEL, slot] = lvl
    od[OD_PREV, slot] = lv[LV_TAIL, k]
    od[OD_NEXT, slot] = -1
    if lv[LV_TAIL, k] >= 0:
        od[OD_NEXT, lv[LV_TAIL, k]] = slot
    else:
        lv[LV_HEAD, k] = slot
    lv[LV_TAIL, k] = slot
    lv[LV_COUNT, k] += 1
    lv[LV_DEPTH, k] += od[OD_SIZE, slot]
    if side == 0:
        if lvl > st.best_bid:
            st.best_bid = lvl
    elif lvl < st.best_ask:
        st.best_ask = lvl


@register_jitable(no_cfunc_wrapper=True)
def level_remove(lv: np.ndarray, od: np.ndarray, st: Record, slot: int) -> None:
    """Unlink order ``slot`` from its level's queue."""
    side = od[OD_SIDE, slot]
    lvl = od[OD_LEVEL, slot]
    k = side * NLEV + lvl
    p = od[OD_PREV, slot]
    n = od[OD_NEXT, slot]
    if p >= 0:
        od[OD_NEXT, p] = n
    else:
        lv[LV_HEAD, k] = n
    if n >= 0:
        od[OD_PREV, n] = p
    else:
        lv[LV_TAIL, k] = p
    lv[LV_COUNT, k] -= 1
    lv[LV_DEPTH, k] -= od[OD_SIZE, slot]
    if lv[LV_COUNT, k] == 0:
        best = st.best_bid if side == 0 else st.best_ask
        if lvl == best:
            rescan(lv, st, side)


@register_jitable(no_cfunc_wrapper=True)
def new_order(lv: np.ndarray, od: np.ndarray, ids: np.ndarray, free: np.ndarray,
              dense: np.ndarray, nd: np.ndarray, st: Record, oid: int, side: int,
              cls: int, lvl: int, size: int, ts: int, seq: int) -> int:
    """Rest a new order (last in its level's queue); returns its slot."""
    st.n_free -= 1
    slot = free[st.n_free]
    ids[slot] = np.uint64(oid)
    od[OD_SIDE, slot] = side
    od[OD_CLASS, slot] = cls
    od[OD_SIZE, slot] = size
    od[OD_TS, slot] = ts
    od[OD_SEQ, slot] = seq
    od[OD_ALIVE, slot] = 1
    d = side * 2 + cls
    dense[d, nd[d]] = slot
    od[OD_DENSE_POS, slot] = nd[d]
    nd[d] += 1
    level_append(lv, od, st, slot, lvl)
    return slot


@register_jitable(no_cfunc_wrapper=True)
def del_order(lv: np.ndarray, od: np.ndarray, free: np.ndarray, dense: np.ndarray,
              nd: np.ndarray, st: Record, slot: int) -> None:
    """Remove a resting order and free its slot."""
    level_remove(lv, od, st, slot)
    d = od[OD_SIDE, slot] * 2 + od[OD_CLASS, slot]
    pos = od[OD_DENSE_POS, slot]
    last = dense[d, nd[d] - 1]
    dense[d, pos] = last
    od[OD_DENSE_POS, last] = pos
    nd[d] -= 1
    od[OD_ALIVE, slot] = 0
    free[st.n_free] = slot
    st.n_free += 1


@register_jitable(no_cfunc_wrapper=True)
def resize(lv: np.ndarray, od: np.ndarray, slot: int, size: int) -> None:
    """Change a resting order's size in place (keeps its queue position)."""
    k = od[OD_SIDE, slot] * NLEV + od[OD_LEVEL, slot]
    lv[LV_DEPTH, k] += size - od[OD_SIZE, slot]
    od[OD_SIZE, slot] = size


@register_jitable(no_cfunc_wrapper=True)
def next_oid(st: Record, rng: np.ndarray) -> int:
    """CME order ids grow with gaps (other instruments share the id space)."""
    st.order_id += 1 + geom(rng, 0.45)
    return st.order_id


@register_jitable(no_cfunc_wrapper=True)
def clamp_passive(lvl: int, side: int, st: Record) -> int:
    """Keep a resting price inside the level array and on its own side of the book."""
    lvl = min(max(lvl, 1), NLEV - 2)
    if side == 0 and st.best_ask < NLEV and lvl >= st.best_ask:
        lvl = st.best_ask - 1
    if side == 1 and st.best_bid >= 0 and lvl <= st.best_bid:
        lvl = st.best_bid + 1
    return lvl


@njit(cache=True)
def init_book(sim: Simulation, center: int, ts: int) -> None:
    """Seed both sides around ``center`` with the stationary depth profile (orders time
    ``ts``) and put the fair value between them."""
    lv, od, ids, free = sim.levels, sim.orders, sim.order_ids, sim.free
    dense, nd, rng = sim.dense, sim.n_dense, sim.rng
    st = sim.state[0]
    for side in range(2):
        anchor = center - 1 if side == 0 else center
        sgn = -1 if side == 0 else 1
        for cls in range(2):
            n = st.fast_target if cls == 0 else st.slow_target
            for i in range(n):
                if cls == 0:
                    d = 0 if i == 0 else fast_dist(rng)
                    size = draw_table(rng, FAST_LO, FAST_HI, FAST_CUM)
                else:
                    d = slow_dist(rng)
                    size = draw_table(rng, SLOW_LO, SLOW_HI, SLOW_CUM)
                lvl = min(max(anchor + sgn * d, 1), NLEV - 2)
                st.sequence += 1
                new_order(lv, od, ids, free, dense, nd, st, next_oid(st, rng), side, cls,
                          lvl, size, ts, st.sequence)
    st.fair = center - 0.5
