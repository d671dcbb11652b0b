"""The simulator's clock (numba): when the next event group happens.

A group is a burst child (a wall-clock gap after the previous group: sub-10 us cascades,
~100 us reactions, ~1 ms follow-ups) or a parent drawn in *intensity time*: an exponential
step of ``session_intensity`` mass, so activity follows the session profile and is zero while
CME is closed. ``update_scale`` re-aims the parent rate so the record budget fills the day.
``h`` is the per-second intensity, ``hcum`` its running sum (``hcum[0] = 0``).
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from vpbatch.synth.calendar import DAY_SECONDS
from vpbatch.synth.model import CHILD_FAST_P, CHILD_SLOW_P, P_CHILD, P_CHILD_EXCITED
from vpbatch.synth.rng import randn, u01
from vpbatch.synth.state import Record


@register_jitable(no_cfunc_wrapper=True)
def advance_clock(st: Record, rng: np.ndarray, h: np.ndarray) -> int:
    """Next event time (ns): a burst child (wall-clock gap) or a parent in intensity time."""
    t = st.t
    excited = st.excite > 0
    if excited:
        st.excite -= 1
    child = u01(rng) < (P_CHILD_EXCITED if excited else P_CHILD)
    if child:
        u = u01(rng)
        if u < CHILD_FAST_P:
            gap = np.exp(np.log(2.0e-6) + 1.4 * randn(rng))
        elif u < CHILD_FAST_P + CHILD_SLOW_P:
            gap = np.exp(np.log(1.0e-3) + 0.8 * randn(rng))
        else:
            gap = np.exp(np.log(1.0e-4) + 0.55 * randn(rng))
        tn = t + gap
        sec = int(tn)
        if sec < DAY_SECONDS and h[sec] > 0.0:
            t = tn
            st.children += 1
        else:
            child = False
    if not child:
        e = -np.log(u01(rng)) / st.rate_scale
        sec = int(t)
        while True:
            if sec >= DAY_SECONDS:
                t = DAY_SECONDS - 1e-9
                break
            avail = h[sec] * (sec + 1 - t)
            if h[sec] > 0.0 and e <= avail:
                t += e / h[sec]
                break
            e -= avail
            sec += 1
            t = float(sec)
    st.t = t
    ts = st.day0 + int(t * 1e9)
    if ts <= st.last_ts:
        ts = st.last_ts + 1
    st.last_ts = ts
    return ts


@register_jitable(no_cfunc_wrapper=True)
def update_scale(st: Record, h: np.ndarray, hcum: np.ndarray) -> None:
    """Re-aim the parent rate so the remaining records fill the remaining session."""
    groups = st.groups
    if groups >= 2_000:
        rpg = st.written / groups
        pc = st.children / groups
    else:
        rpg = 1.1
        pc = P_CHILD + 0.03
    remaining = (st.budget - st.written) / rpg
    t = st.t
    sec = int(t)
    hnow = hcum[DAY_SECONDS] if sec >= DAY_SECONDS else hcum[sec] + h[sec] * (t - sec)
    hrem = max(st.h_target - hnow, st.h_min)
    st.rate_scale = max(remaining * (1.0 - pc), 1.0) / hrem


@register_jitable(no_cfunc_wrapper=True)
def in_delta(rng: np.ndarray) -> int:
    """CME's sending-to-receipt delta, ~11-16 us (measured on the real files)."""
    return int(min(max(13_400.0 + 1_600.0 * randn(rng), 9_000.0), 30_000.0))
