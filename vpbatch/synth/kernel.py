"""The simulator kernel (numba): event groups on the explicit book, written as MBO records.

One call of :func:`simulate` runs event groups until a chunk is full (emitting) or a number
of groups is done (the silent burn-in). Each group draws its time, moves the latent fair value,
picks one event kind from the flow mix and applies it to the book, writing the records
Databento's GLBX.MDP3 stream would carry for it:

* add (kinds 0-3: fast bid/ask, slow bid/ask): one ``A``;
* cancel (kinds 4-7: fast bid/ask, slow bid/ask): one ``C`` (rarely a partial one);
* modify (kind 8): one ``M``, a price move (losing priority) or a size change;
* trade (kind 9): ``T`` per level + FIFO ``F`` fills, then the ``C``/``M`` of every filled
  order, and sometimes the aggressor's remainder resting as an ``A``;
* with ``state.flow`` = 1 (``touch``) only, the touch's reaction to the fair value: a join
  at (or inside) the touch on the side the fair value points to (kind 10, an ``A``), a pull
  of the wrong side's touch (kind 11, a ``C``). There the add, cancel and modify kinds above
  do not depend on the fair value at all (with ``flow`` = 0, ``depth``, they lean towards it).

The book primitives are in :mod:`vpbatch.synth.book`, the clock in :mod:`vpbatch.synth.timing`,
the planted signal in :mod:`vpbatch.synth.informed`.
"""

from __future__ import annotations

import sys
from typing import Final

import numpy as np
from numba import njit
from numba.extending import register_jitable

from vpbatch.book.dtypes import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_FILL,
    ACTION_MODIFY,
    ACTION_TRADE,
    SIDE_ASK,
    SIDE_BID,
)
from vpbatch.book.jit import guard
from vpbatch.book.numba_math import import_numba_math
from vpbatch.synth.book import (
    clamp_passive,
    del_order,
    level_append,
    level_remove,
    new_order,
    next_oid,
    resize,
)
from vpbatch.synth.dbn import LIVE_LAST_FLAGS
from vpbatch.synth.informed import (
    INFORMED_ACT,
    INFORMED_DEPTH,
    INFORMED_JUMP_TICKS,
    informed_kind,
    informed_pull,
    informed_step,
)
from vpbatch.synth.model import (
    EXCITE_GROUPS,
    FAST_CUM,
    FAST_HI,
    FAST_LO,
    P_CLEAR_LEVEL,
    P_FLICKER,
    P_IMPROVE,
    P_M_PARK,
    P_M_SIZE_DOWN,
    P_M_SIZE_UP,
    P_PARTIAL_CANCEL,
    P_REMAINDER,
    P_SWEEP_MORE,
    P_WHOLE_ORDERS,
    REACT_JOIN,
    REACT_PULL,
    RECENTER_GROUPS,
    SLOW_CUM,
    SLOW_HI,
    SLOW_LO,
    TRADE_CUM,
    TRADE_HI,
    TRADE_LO,
    W_ADD_FAST,
    W_ADD_SLOW,
    W_CANCEL_FAST,
    W_CANCEL_SLOW,
    W_MODIFY,
    W_TRADE,
)
from vpbatch.synth.rng import draw_table, fast_dist, geom, randint, randn, slow_dist, u01
from vpbatch.synth.state import (
    EDGE,
    LV_COUNT,
    LV_DEPTH,
    LV_HEAD,
    LV_TAIL,
    MAX_FILLS,
    NLEV,
    OD_ALIVE,
    OD_CLASS,
    OD_LEVEL,
    OD_NEXT,
    OD_SEQ,
    OD_SIDE,
    OD_SIZE,
    OD_TS,
    RECENT,
    Simulation,
)
from vpbatch.synth.timing import advance_clock, in_delta, update_scale

import_numba_math()  # before any kernel loads (vpbatch.book.numba_math)


# Compiled into ``simulate`` once, not once per combination of literal flags and actions.
@register_jitable(no_cfunc_wrapper=True)
def _put(out: np.ndarray, i: int, emit: bool, ts: int, oid: int, price: int, size: int,
         flags: int, action: int, side: int, recv: int, delta: int, seq: int) -> None:
    """Write record ``i`` of ``out`` (the per-file fields are preset); nothing when silent."""
    if emit:
        r = out[i]
        r.ts_event = ts
        r.order_id = oid
        r.price = price
        r.size = size
        r.flags = flags
        r.action = action
        r.side = side
        r.ts_recv = recv
        r.ts_in_delta = delta
        r.sequence = seq


@register_jitable(no_cfunc_wrapper=True)
def _side_char(side: int) -> int:
    return SIDE_BID if side == 0 else SIDE_ASK


@register_jitable(no_cfunc_wrapper=True)
def _g(r: float) -> float:
    """Order-count feedback on an event weight, bounded to [0.2, 5]."""
    return min(max(r, 0.2), 5.0)


def run(sim: Simulation, out: np.ndarray, h: np.ndarray, hcum: np.ndarray, max_records: int,
        max_groups: int = 0) -> int:
    """:func:`simulate` from Python: the number of records written to ``out``."""
    return int(simulate(out, sim, h, hcum, max_records, max_groups))


@njit(cache=True, nogil=True)
def simulate(out: np.ndarray, sim: Simulation, h: np.ndarray, hcum: np.ndarray,
             max_records: int, max_groups: int) -> int:
    """Simulate event groups; write them to ``out`` when ``state.emit``. Returns records written.

    Emitting: stops once ``max_records`` are in ``out`` (a group never straddles calls) or the
    live budget is spent. Silent (burn-in): runs ``max_groups`` groups on a synthetic clock.
    With ``state.informed > 0`` the planted signal is on (informed episodes, drawn from
    ``sim.rng2``; ``informed = 0`` never touches ``rng2`` and is the unplanted stream exactly).
    """
    lv, od, ids, free = sim.levels, sim.orders, sim.order_ids, sim.free
    dense, nd, recent, rng, rng2 = sim.dense, sim.n_dense, sim.recent, sim.rng, sim.rng2
    st = sim.state[0]
    informed = st.informed
    emit = st.emit
    n = 0
    g = 0
    fslot = np.empty(MAX_FILLS, np.int64)
    fqty = np.empty(MAX_FILLS, np.int64)
    llvl = np.empty(16, np.int64)
    lqty = np.empty(16, np.int64)
    lnf = np.empty(16, np.int64)
    tick = st.tick
    base = st.base_tick
    while True:
        if emit:
            if n >= max_records or st.written >= st.budget:
                break
            remaining = st.budget - st.written
            if st.groups % 256 == 0:
                update_scale(st, h, hcum)
            ts = advance_clock(st, rng, h)
            lat = int(np.exp(np.log(98_000.0) + 0.3 * randn(rng)))
            if u01(rng) < 0.08:
                lat += int(-np.log(u01(rng)) * 100_000.0)
            recv = max(st.last_recv, ts + lat)
        else:
            if g >= max_groups:
                break
            remaining = 1 << 40
            ts = st.burn_t0 + g * st.burn_dt
            recv = ts
        g += 1
        st.groups += 1
        st.sequence += 1 + geom(rng, 0.6)
        seq = st.sequence
        delta = in_delta(rng)

        # Latent fair value: event-time random walk with trend episodes.
        if u01(rng) < st.p_trend_switch:
            st.trend = randint(rng, 3) - 1
        jump = informed_step(st, rng2) if informed > 0.0 else 0.0
        f = st.fair + st.sigma * randn(rng) + st.drift * st.trend + jump
        if f < EDGE:
            f = 2.0 * EDGE - f
            st.trend = 1
        elif f > NLEV - EDGE:
            f = 2.0 * (NLEV - EDGE) - f
            st.trend = -1
        st.fair = f
        bb = st.best_bid
        ba = st.best_ask
        x = f - 0.5 * (bb + ba)
        xc = min(max(x, -3.0), 3.0)

        # Event choice: base mix, order-count feedback per side x class, and the lean toward
        # the fair value: (depth flow) tilted fast adds and cancels, or (touch flow) joins and
        # pulls at the touch, kinds 10 and 11, which the depth flow never draws.
        nfb, nsb, nfa, nsa = nd[0], nd[1], nd[2], nd[3]
        nft = float(st.fast_target)
        nst = float(st.slow_target)
        depth_flow = st.flow == 0
        tilt_b = max(0.1, 1.0 + 0.25 * xc) if depth_flow else 1.0
        tilt_a = max(0.1, 1.0 - 0.25 * xc) if depth_flow else 1.0
        room = st.n_free > 1_024
        w0 = W_ADD_FAST * _g(nft / (nfb + 1)) * tilt_b if room else 0.0
        w1 = W_ADD_FAST * _g(nft / (nfa + 1)) * tilt_a if room else 0.0
        w2 = W_ADD_SLOW * _g(nst / (nsb + 1)) if room else 0.0
        w3 = W_ADD_SLOW * _g(nst / (nsa + 1)) if room else 0.0
        w4 = W_CANCEL_FAST * _g(nfb / nft) * tilt_a if (nfb > 0 and nfb + nsb > 10) else 0.0
        w5 = W_CANCEL_FAST * _g(nfa / nft) * tilt_b if (nfa > 0 and nfa + nsa > 10) else 0.0
        w6 = W_CANCEL_SLOW * _g(nsb / nst) if (nsb > 0 and nfb + nsb > 10) else 0.0
        w7 = W_CANCEL_SLOW * _g(nsa / nst) if (nsa > 0 and nfa + nsa > 10) else 0.0
        w8 = W_MODIFY
        w9 = W_TRADE * (1.0 + 0.6 * abs(xc)) if remaining >= 3 else 0.0
        w10 = 0.0
        w11 = 0.0
        if not depth_flow:
            pulled = nfa + nsa if x > 0 else nfb + nsb
            w10 = REACT_JOIN * abs(xc) if room else 0.0
            w11 = REACT_PULL * max(abs(xc) - 0.5, 0.0) if pulled > 10 else 0.0
        u = u01(rng) * (w0 + w1 + w2 + w3 + w4 + w5 + w6 + w7 + w8 + w9 + w10 + w11)
        kind = 0
        for w in (w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11):
            if u < w:
                break
            u -= w
            kind += 1
        if kind > 11:
            kind = 0
        # The touch's reaction as an add (join on x's side) or a cancel (the wrong side's).
        react = kind >= 10
        if kind == 10:
            kind = 0 if x > 0 else 1
        elif kind == 11:
            kind = 5 if x > 0 else 4
        touch = False
        if informed > 0.0 and st.episode_left > 0 and u01(rng2) < INFORMED_ACT:
            kind, touch = informed_kind(kind, st.episode_dir > 0, nfb, nsb, nfa, nsa, room,
                                        rng2)
            react = react and not touch
        # Touch flow: a jump of the fair value shows at once (a gradual catch-up, or a gap
        # behind the new touch, would be mid changes to come that the book behind the touch
        # foretells): this group sweeps the other side's levels short of it, if any; the next
        # groups re-quote the touch around it (bid ``floor(fair)``, ask one tick up) where it
        # is not there yet, then fill the empty levels the jump left behind its own side's
        # touch (``state.recenter``: groups left, signed with the jump).
        sweep = False
        fb = int(np.floor(f))
        quote = -1
        if not depth_flow:
            if jump != 0.0:
                st.recenter = RECENTER_GROUPS if jump > 0.0 else -RECENTER_GROUPS
                sweep = (jump > 0.0 and ba <= fb) or (jump < 0.0 and bb > fb)
            if sweep:
                kind = 9
            elif st.recenter != 0:
                up = st.recenter > 0
                st.recenter += -1 if up else 1
                if bb < fb < ba:
                    kind, quote = 0, fb
                elif bb < fb + 1 < ba:
                    kind, quote = 1, fb + 1
                else:
                    own = 0 if up else 1
                    best = bb if up else ba
                    for d in range(1, INFORMED_JUMP_TICKS + 2):
                        lvl = best - d if up else best + d
                        if lv[LV_COUNT, own * NLEV + lvl] == 0:
                            kind, quote = own, lvl
                            break
                    if quote < 0:
                        st.recenter = 0
            if sweep or quote >= 0:
                react = quote >= 0
                touch = False

        if kind == 9:
            # ---------------- trade: T per level + FIFO F's, then C/M per filled order ----
            buy = jump > 0.0 if sweep else u01(rng) < 1.0 / (1.0 + np.exp(-1.2 * x))
            a = 0 if buy else 1
            r = 1 - a
            if nd[2 * r] + nd[2 * r + 1] < 8:
                kind = 0 if r == 0 else 1
            else:
                k = 12
                if not sweep:
                    k = 1
                    while k < 10 and u01(rng) < P_SWEEP_MORE:
                        k += 1
                    xd = x if buy else -x
                    if xd > 3.0:
                        k += 1
                    k = min(k, 12)
                # Collect up to k non-empty levels from the touch outward (a sweep: every
                # level short of the fair value, at least one).
                nl = 0
                lvl = ba if r == 1 else bb
                step = 1 if r == 1 else -1
                scanned = 0
                while nl < k and scanned < 64 and 0 <= lvl < NLEV:
                    if sweep and (lvl > fb if r == 1 else lvl <= fb):
                        break
                    if lv[LV_COUNT, r * NLEV + lvl] > 0:
                        llvl[nl] = lvl
                        nl += 1
                    lvl += step
                    scanned += 1
                if sweep:
                    q = 0
                    for j in range(nl):
                        q += lv[LV_DEPTH, r * NLEV + llvl[j]]
                elif nl == 1:
                    dep = lv[LV_DEPTH, r * NLEV + llvl[0]]
                    u = u01(rng)
                    if u < P_CLEAR_LEVEL:
                        q = dep
                    elif u < P_CLEAR_LEVEL + P_WHOLE_ORDERS:
                        # Take the first m queued orders whole (most real fills end in a C).
                        m = 1 + geom(rng, 0.6)
                        q = 0
                        s = lv[LV_HEAD, r * NLEV + llvl[0]]
                        while s >= 0 and m > 0:
                            q += od[OD_SIZE, s]
                            m -= 1
                            s = od[OD_NEXT, s]
                    else:
                        q = min(draw_table(rng, TRADE_LO, TRADE_HI, TRADE_CUM), dep)
                else:
                    q = 0
                    for j in range(nl - 1):
                        q += lv[LV_DEPTH, r * NLEV + llvl[j]]
                    q += 1 + randint(rng, lv[LV_DEPTH, r * NLEV + llvl[nl - 1]])
                # FIFO fills, bounded so the resting side keeps orders and the group fits.
                max_f = min(MAX_FILLS, nd[2 * r] + nd[2 * r + 1] - 3)
                if emit:
                    max_f = min(max_f, (remaining - nl) // 2)
                nf = 0
                left = q
                used = 0
                for j in range(nl):
                    lqty[j] = 0
                    lnf[j] = 0
                    s = lv[LV_HEAD, r * NLEV + llvl[j]]
                    while s >= 0 and left > 0 and nf < max_f:
                        fill = min(left, od[OD_SIZE, s])
                        fslot[nf] = s
                        fqty[nf] = fill
                        nf += 1
                        lqty[j] += fill
                        lnf[j] += 1
                        left -= fill
                        s = od[OD_NEXT, s]
                    if lnf[j] == 0:
                        break
                    used = j + 1
                    if left == 0 or nf >= max_f:
                        break
                last_cleared = (used > 0 and nf > 0
                                and fqty[nf - 1] == od[OD_SIZE, fslot[nf - 1]]
                                and od[OD_NEXT, fslot[nf - 1]] < 0)
                rest = 0
                if last_cleared and (sweep or u01(rng) < P_REMAINDER):
                    rest = draw_table(rng, TRADE_LO, TRADE_HI, TRADE_CUM)
                nrec = used + 2 * nf + (1 if rest > 0 else 0)
                if nf == 0 or (emit and nrec > remaining):
                    kind = 0 if a == 0 else 1
                else:
                    aggr = next_oid(st, rng)
                    recv2 = recv + randint(rng, 8_000)
                    delta2 = in_delta(rng)
                    st.sequence += 1
                    seq2 = st.sequence
                    i = 0
                    for j in range(used):
                        price = (base + llvl[j]) * tick
                        _put(out, n, emit, ts, aggr, price, lqty[j], 0, ACTION_TRADE,
                             _side_char(a), recv, delta, seq)
                        n += 1
                        for _ in range(lnf[j]):
                            s = fslot[i]
                            _put(out, n, emit, ts, ids[s], price, fqty[i], 0, ACTION_FILL,
                                 _side_char(r), recv, delta, seq)
                            n += 1
                            i += 1
                    for i in range(nf):
                        s = fslot[i]
                        price = (base + od[OD_LEVEL, s]) * tick
                        flags = LIVE_LAST_FLAGS if (i == nf - 1 and rest == 0) else 0
                        left_size = od[OD_SIZE, s] - fqty[i]
                        if left_size == 0:
                            _put(out, n, emit, ts, ids[s], price, fqty[i], flags,
                                 ACTION_CANCEL, _side_char(r), recv2, delta2, seq2)
                        else:
                            _put(out, n, emit, ts, ids[s], price, left_size, flags,
                                 ACTION_MODIFY, _side_char(r), recv2, delta2, seq2)
                        n += 1
                    last_lvl = llvl[used - 1]
                    for i in range(nf):
                        s = fslot[i]
                        if od[OD_SIZE, s] == fqty[i]:
                            del_order(lv, od, free, dense, nd, st, s)
                        else:
                            resize(lv, od, s, od[OD_SIZE, s] - fqty[i])
                    if rest > 0:
                        _put(out, n, emit, ts, aggr, (base + last_lvl) * tick, rest,
                             LIVE_LAST_FLAGS, ACTION_ADD, _side_char(a), recv2, delta2, seq2)
                        n += 1
                        new_order(lv, od, ids, free, dense, nd, st, aggr, a, 0, last_lvl,
                                  rest, ts, seq2)
                    st.excite = EXCITE_GROUPS
                    st.last_recv = recv2 if emit else st.last_recv
                    st.written += nrec if emit else 0
                    continue

        if kind == 8:
            # ---------------- modify: price move (loses priority) or size change --------
            cls = 0 if u01(rng) < 0.6 else 1
            side = randint(rng, 2)
            if nd[side * 2 + cls] == 0:
                side = 1 - side
            if nd[side * 2 + cls] == 0:
                cls = 1 - cls
            requote = depth_flow and abs(x) > 1.0 and u01(rng) < min(0.6, 0.2 * abs(x))
            if requote:
                side = 1 if x > 0 else 0
            if nd[side * 2 + cls] == 0 and not requote:
                kind = 0
            else:
                if requote:
                    s = lv[LV_TAIL, side * NLEV + (bb if side == 0 else ba)]
                else:
                    s = dense[side * 2 + cls, randint(rng, nd[side * 2 + cls])]
                size = od[OD_SIZE, s]
                lvl0 = od[OD_LEVEL, s]
                u = 1.0 if requote else u01(rng)
                new_lvl = lvl0
                new_size = size
                if u < P_M_SIZE_DOWN and size >= 2:
                    new_size = 1 + randint(rng, size - 1)
                    resize(lv, od, s, new_size)
                elif u < P_M_SIZE_DOWN + P_M_SIZE_UP:
                    new_size = size + 1 + geom(rng, 0.5)
                    level_remove(lv, od, st, s)
                    od[OD_SIZE, s] = new_size
                    level_append(lv, od, st, s, lvl0)
                else:
                    own = bb if side == 0 else ba
                    d0 = own - lvl0 if side == 0 else lvl0 - own
                    if requote:
                        d = d0 + 1 + geom(rng, 0.5)
                    elif u01(rng) < P_M_PARK:
                        d = 280 + randint(rng, 30) if d0 < 40 else fast_dist(rng)
                    else:
                        stepm = 1 + geom(rng, 0.6)
                        d = max(d0 + stepm if u01(rng) < 0.5 else d0 - stepm, 0)
                    new_lvl = clamp_passive(own - d if side == 0 else own + d, side, st)
                    if new_lvl == lvl0:
                        if size >= 2:
                            new_size = 1 + randint(rng, size - 1)
                            resize(lv, od, s, new_size)
                        else:
                            new_lvl = clamp_passive(lvl0 - 1 if side == 0 else lvl0 + 1,
                                                    side, st)
                    if new_lvl != lvl0:
                        level_remove(lv, od, st, s)
                        level_append(lv, od, st, s, new_lvl)
                od[OD_TS, s] = ts
                od[OD_SEQ, s] = seq
                _put(out, n, emit, ts, ids[s], (base + od[OD_LEVEL, s]) * tick, od[OD_SIZE, s],
                     LIVE_LAST_FLAGS, ACTION_MODIFY, _side_char(side), recv, delta, seq)

        if kind == 4 or kind == 5 or kind == 6 or kind == 7:
            # ---------------- cancel: newest / fleeing / uniform; rarely partial ---------
            side = 0 if (kind == 4 or kind == 6) else 1
            cls = 0 if kind < 6 else 1
            s = -1
            wrong = (side == 1 and x > 0.5) or (side == 0 and x < -0.5)
            if touch:
                s = informed_pull(lv, side, bb if side == 0 else ba, rng2)
            elif react or (depth_flow and wrong and u01(rng) < min(0.7, 0.25 * abs(x))):
                s = lv[LV_TAIL, side * NLEV + (bb if side == 0 else ba)]
            elif cls == 0 and u01(rng) < P_FLICKER:
                pos = st.recent_pos[side]
                for j in range(RECENT):
                    cand = recent[side, (pos - 1 - j) % RECENT]
                    if cand >= 0 and od[OD_ALIVE, cand] == 1 and od[OD_CLASS, cand] == 0 \
                            and od[OD_SIDE, cand] == side:
                        s = cand
                        break
            if s < 0:
                s = dense[side * 2 + cls, randint(rng, nd[side * 2 + cls])]
            size = od[OD_SIZE, s]
            price = (base + od[OD_LEVEL, s]) * tick
            if size >= 2 and u01(rng) < P_PARTIAL_CANCEL:
                c = 1 + randint(rng, size - 1)
                resize(lv, od, s, size - c)
            else:
                c = size
                del_order(lv, od, free, dense, nd, st, s)
            _put(out, n, emit, ts, ids[s], price, c, LIVE_LAST_FLAGS, ACTION_CANCEL,
                 _side_char(side), recv, delta, seq)

        if kind <= 3:
            # ---------------- add: join / improve near the touch, or rest deep -----------
            side = kind % 2
            cls = 0 if kind < 2 else 1
            bb = st.best_bid
            ba = st.best_ask
            if touch:
                size = draw_table(rng, FAST_LO, FAST_HI, FAST_CUM)
                d = 1 + randint(rng2, INFORMED_DEPTH)
                lvl = bb - d if side == 0 else ba + d
            elif react:
                # Join the touch, or improve it when the spread has a gap (as fast adds do);
                # after a jump, quote at the given level.
                spread = ba - bb
                size = draw_table(rng, FAST_LO, FAST_HI, FAST_CUM)
                j = -1
                if quote >= 0:
                    j = quote - bb - 1 if side == 0 else ba - 1 - quote
                elif spread > 1 and u01(rng) < P_IMPROVE:
                    j = 0 if u01(rng) < 0.7 else randint(rng, spread - 1)
                lvl = bb + 1 + j if side == 0 else ba - 1 - j
            elif cls == 0:
                spread = ba - bb
                size = draw_table(rng, FAST_LO, FAST_HI, FAST_CUM)
                if spread > 1 and u01(rng) < P_IMPROVE:
                    j = 0 if u01(rng) < 0.7 else randint(rng, spread - 1)
                    lvl = bb + 1 + j if side == 0 else ba - 1 - j
                else:
                    d = fast_dist(rng)
                    lvl = bb - d if side == 0 else ba + d
            else:
                size = draw_table(rng, SLOW_LO, SLOW_HI, SLOW_CUM)
                d = slow_dist(rng)
                lvl = bb - d if side == 0 else ba + d
            lvl = clamp_passive(lvl, side, st)
            oid = next_oid(st, rng)
            s = new_order(lv, od, ids, free, dense, nd, st, oid, side, cls, lvl, size, ts, seq)
            if cls == 0 and not react:
                recent[side, st.recent_pos[side] % RECENT] = s
                st.recent_pos[side] += 1
            _put(out, n, emit, ts, oid, (base + lvl) * tick, size, LIVE_LAST_FLAGS,
                 ACTION_ADD, _side_char(side), recv, delta, seq)

        if emit:
            st.last_recv = recv
            st.written += 1
            n += 1
    return n


#: Every module whose code or constants the generator's cached functions compile in: their
#: cache entries are flushed when any of these changes (vpbatch/book/jit.py).
COMPILED_FROM: Final = tuple(sys.modules[name] for name in (
    __name__, "vpbatch.synth.book", "vpbatch.synth.rng", "vpbatch.synth.timing",
    "vpbatch.synth.informed", "vpbatch.synth.model", "vpbatch.synth.state",
    "vpbatch.synth.dbn", "vpbatch.synth.calendar", "vpbatch.book.dtypes", "vpbatch.clock"))
guard("synth", COMPILED_FROM)
