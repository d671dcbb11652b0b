"""Synthetic CME-style MBO day files, written as real (zstd) DBN.

Why: tests, benchmarks and demos need full-size MBO days (an MNQ day is ~50M records)
without shipping licensed data. The generator reproduces the *structure* of Databento's
GLBX.MDP3 MBO stream (measured on the real files in ``shared/data/databento``, see
``docs/synth.md``): a start-of-day snapshot (``R`` + ``F_SNAPSHOT`` adds), single-record
add/cancel/modify events, and trade events written as ``T`` + FIFO ``F`` fills followed in
the same event by the ``C``/``M`` of every filled order. The book behind the stream is
simulated exactly, so the file is internally consistent: nothing is cancelled, modified or
filled unless it is live, sizes never go negative, resting orders never cross.

The simulation runs in a numba kernel over an explicit book (FIFO queues per price level)
and streams 1M-record chunks into the (zstd) writer, so memory stays bounded whatever the
record count. One explicitly seeded generator drives everything: same arguments, same bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import databento_dbn as dbn
import numpy as np
import zstandard
from databento_dbn.metadata import MappingInterval
from numba import njit

from vpbatch.book.dtypes import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_CLEAR,
    ACTION_FILL,
    ACTION_MODIFY,
    ACTION_TRADE,
    F_BAD_TS_RECV,
    F_LAST,
    F_SNAPSHOT,
    FIXED_PRICE_SCALE,
    MBO_DTYPE,
    SIDE_ASK,
    SIDE_BID,
    SIDE_NONE,
    UNDEF_PRICE,
)
from vpbatch.clock import CHICAGO, NEW_YORK
from vpbatch.errors import ConfigError, OutputError
from vpbatch.products import FUTURE_MBO, resolve_product
from vpbatch.store.lake import raw_dir, raw_file_name

__all__ = ["SynthStats", "default_start_price", "session_intensity", "synth_session",
           "synth_to_lake"]

#: CME sets this publisher-specific bit on every record that carries ``F_LAST`` (flags 130).
F_PUBLISHER_SPECIFIC: Final = 0x02
#: Flags of the last record of a live event (every other live record has flags 0).
LIVE_LAST_FLAGS: Final = F_LAST | F_PUBLISHER_SPECIFIC
#: Databento's start-of-day snapshot records carry ``F_SNAPSHOT | F_BAD_TS_RECV`` (flags 40).
SNAPSHOT_FLAGS: Final = F_SNAPSHOT | F_BAD_TS_RECV

MBO_RTYPE: Final = 0xA0
MBO_LENGTH: Final = MBO_DTYPE.itemsize // 4
DBN_VERSION: Final = 3
CHUNK_RECORDS: Final = 1_000_000
MIN_RECORDS: Final = 1_000
NS: Final = 1_000_000_000
DAY_SECONDS: Final = 86_400

#: Indicative prices (currency units) per futures root; equities default to 500.
_START_PRICES: Final = {
    "ES": 6000.0, "MES": 6000.0, "NQ": 21500.0, "MNQ": 21500.0, "GC": 2650.0,
    "SI": 31.0, "CL": 72.0, "6E": 1.085,
}

# ---------------------------------------------------------------------------------------
# Kernel layout. Levels are ticks relative to ``base_tick``; the book array is 2 x NLEV.
# ---------------------------------------------------------------------------------------
NLEV: Final = 1 << 15
MAXO: Final = 1 << 17
RECENT: Final = 64
MAX_FILLS: Final = 250
#: A trade event writes at most MAX_FILLS * 2 + levels + 1 records; chunks keep this slack.
MAX_GROUP: Final = 2 * MAX_FILLS + 64
EDGE: Final = 2_000

# Level-array rows.
L_HEAD, L_TAIL, L_CNT, L_DEPTH = 0, 1, 2, 3
# Order-pool rows.
O_PREV, O_NEXT, O_LVL, O_SIZE, O_SIDE, O_CLS, O_POS, O_TS, O_SEQ, O_ALIVE = range(10)
O_FIELDS: Final = 10
# Integer state.
(S_BB, S_BA, S_NFREE, S_OID, S_SEQ, S_TS, S_RECV, S_GROUPS, S_WRITTEN, S_CHILD, S_EXCITE,
 S_TREND, S_NS_TGT, S_NF_TGT, S_BUDGET, S_DAY0, S_EMIT, S_BURN_T0, S_BURN_DT, S_TICK, S_BASE,
 S_RPOS0, S_RPOS1, S_EP_LEFT, S_EP_DIR, S_EP_JUMP) = range(26)
N_ST: Final = 26
# Float state.
(FS_FAIR, FS_T, FS_SCALE, FS_SIGMA, FS_MU, FS_PSW, FS_HTARGET, FS_HMIN, FS_INFORMED,
 FS_JUMP_MODE) = range(10)
N_FS: Final = 10

# Planted signal (``informed > 0``): informed episodes. An episode lasts INFORMED_EPISODE event
# groups with a direction drawn at its start; in each of its groups, with probability
# INFORMED_ACT, the informed trader pulls an order 1..INFORMED_DEPTH ticks beyond the touch on
# the side price is about to move into (vacuum ahead of the move) or adds one 1..INFORMED_DEPTH
# ticks behind the touch on the other side (pressure behind it), never at the touch itself.
# When the episode ends the fair value jumps INFORMED_JUMP ticks in its direction, and the
# ordinary flow carries the mid there. Episodes start at a rate that puts about ``informed``
# of the event groups inside one. All planted randomness comes from a second generator.
#: Event groups per informed episode.
INFORMED_EPISODE: Final = 40
#: Chance of an informed action in each group of an episode.
INFORMED_ACT: Final = 0.6
#: The fair value's jump (ticks) at the end of an episode.
INFORMED_JUMP: Final = 3.0
#: Informed orders act 1..INFORMED_DEPTH ticks away from the touch (where the regime looks).
INFORMED_DEPTH: Final = 10
#: Share of informed actions that pull liquidity (the rest add on the other side).
INFORMED_PULL_SHARE: Final = 0.6
#: How the fair-value jump at the end of an episode relates to the episode's activity:
#: ``aligned`` (the planted signal: the jump goes the way the activity points), ``random``
#: (the placebo: same episodes, same activity, the jump's direction a fair coin of its own),
#: ``none`` (the activity is not followed by any jump).
INFORMED_JUMPS: Final = ("aligned", "random", "none")

# Event mix (per event), measured on MESH5: A 45.5%, C 39.3%, M 12.2%, trade 2.9%.
# Add and cancel weights are per side (the two sides sum to the measured share).
W_ADD_FAST: Final = 0.2025
W_ADD_SLOW: Final = 0.025
W_CANCEL_FAST: Final = 0.175
W_CANCEL_SLOW: Final = 0.0215
W_MODIFY: Final = 0.122
W_TRADE: Final = 0.022
P_FLICKER: Final = 0.35       # a fast cancel hits the newest live order of its side
P_PARTIAL_CANCEL: Final = 0.02  # real CME: 0 (size cuts arrive as M); kept for engine coverage
P_IMPROVE: Final = 0.75       # with a gap in the spread, a fast add improves the quote
P_M_SIZE_DOWN: Final = 0.08
P_M_SIZE_UP: Final = 0.02
P_M_PARK: Final = 0.5         # a price modify parks a near order ~300 ticks away, or brings it back
P_CLEAR_LEVEL: Final = 0.03   # a one-level trade takes the whole touch
P_REMAINDER: Final = 0.3      # ... when a trade empties its last level, the rest rests (TFCA)
P_WHOLE_ORDERS: Final = 0.5   # a one-level trade takes the first few queued orders whole
P_SWEEP_MORE: Final = 0.02    # each further level of a sweep
# Inter-arrival mixture (wall clock), measured on MESH5 (bimodal: ~150 us and ~30 ms).
P_CHILD: Final = 0.66
P_CHILD_EXCITED: Final = 0.9
EXCITE_GROUPS: Final = 6
CHILD_FAST_P: Final = 0.30     # sub-10 us cascades
CHILD_SLOW_P: Final = 0.13     # ~1 ms follow-ups; rest: ~100 us reactions
#: Daily std of the fair value in ticks is sigma_e * sqrt(groups); sigma_e is capped.
SIGMA_EVENT_MAX: Final = 0.12
DAILY_VOL_FRACTION: Final = 0.011

# Order-size tables: bucket [lo, hi] with cumulative probability.
_FAST_LO = np.array([1, 2, 3, 4, 5, 6, 10, 11, 21, 51], np.int64)
_FAST_HI = np.array([1, 2, 3, 4, 5, 9, 10, 20, 50, 200], np.int64)
_FAST_CUM = np.array([.58, .78, .86, .91, .94, .97, .985, .997, .9995, 1.0])
_SLOW_LO = _FAST_LO
_SLOW_HI = _FAST_HI
_SLOW_CUM = np.array([.35, .55, .65, .72, .80, .88, .94, .985, .998, 1.0])
_TRADE_LO = np.array([1, 2, 3, 4, 5, 6, 10, 11, 21], np.int64)
_TRADE_HI = np.array([1, 2, 3, 4, 5, 9, 10, 20, 50], np.int64)
_TRADE_CUM = np.array([.55, .72, .80, .86, .90, .95, .97, .995, 1.0])


@dataclass(frozen=True)
class SynthStats:
    """What one synthetic file holds (``first/last_ts_event`` of the live, non-snapshot part)."""

    path: Path
    symbol: str
    instrument_id: int
    records: int
    snapshot_records: int
    action_counts: dict[str, int]
    first_ts_event: int
    last_ts_event: int
    bytes: int
    seconds: float
    snapshot_levels: tuple[int, int] = field(default=(0, 0))

    def summary(self) -> str:
        """One human-readable block (the CLI prints it)."""
        acts = " ".join(f"{k}={v}" for k, v in sorted(self.action_counts.items()))
        t0 = dt.datetime.fromtimestamp(self.first_ts_event / NS, dt.UTC)
        t1 = dt.datetime.fromtimestamp(self.last_ts_event / NS, dt.UTC)
        rate = self.records / self.seconds if self.seconds > 0 else float("nan")
        return (f"records   {self.records:,} ({self.snapshot_records:,} snapshot; "
                f"{self.snapshot_levels[0]} bid / {self.snapshot_levels[1]} ask levels)\n"
                f"actions   {acts}\n"
                f"ts_event  {t0:%Y-%m-%d %H:%M:%S.%f} .. {t1:%Y-%m-%d %H:%M:%S.%f} UTC\n"
                f"size      {self.bytes:,} bytes\n"
                f"time      {self.seconds:.2f} s ({rate:,.0f} records/s)")


@dataclass
class _MappingInterval:
    """``databento_dbn.metadata.MappingInterval``: one symbol -> instrument_id interval."""

    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass
class _SymbolMapping:
    """``databento_dbn.metadata.SymbolMapping``: the intervals of one raw symbol."""

    raw_symbol: str
    intervals: Sequence[MappingInterval]


# ---------------------------------------------------------------------------------------
# Random numbers: xoshiro256** with explicit state, so a run is reproducible bit for bit
# no matter how it is chunked or which thread calls the kernel.
# ---------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True)
def _next(s: np.ndarray) -> np.uint64:
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    s[0], s[1], s[2], s[3] = s0, s1, s2, s3
    return result


@njit(cache=True)
def _u01(s: np.ndarray) -> float:
    """Uniform in (0, 1), never 0 (safe for log)."""
    return (float(_next(s) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _randint(s: np.ndarray, n: int) -> int:
    """Uniform integer in [0, n)."""
    v = int(_u01(s) * n)
    return v if v < n else n - 1


@njit(cache=True)
def _randn(s: np.ndarray) -> float:
    return np.sqrt(-2.0 * np.log(_u01(s))) * np.cos(2.0 * np.pi * _u01(s))


@njit(cache=True)
def _geom(s: np.ndarray, p: float) -> int:
    """Failures before the first success of a Bernoulli(p)."""
    return int(np.log(_u01(s)) / np.log(1.0 - p))


@njit(cache=True)
def _table(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, cum: np.ndarray) -> int:
    u = _u01(s)
    i = 0
    while i < cum.shape[0] - 1 and u > cum[i]:
        i += 1
    return lo[i] + _randint(s, hi[i] - lo[i] + 1)


@njit(cache=True)
def _fast_dist(s: np.ndarray) -> int:
    """Ticks behind the own best of a liquidity-providing add near the touch."""
    if _u01(s) < 0.4:
        return 0
    return min(1 + _geom(s, 0.4), 60)


@njit(cache=True)
def _slow_dist(s: np.ndarray) -> int:
    """Ticks behind the own best of a resting 'book' order: flat to 150, then a long tail."""
    if _u01(s) < 0.75:
        return 1 + _randint(s, 150)
    return min(150 + int(-np.log(_u01(s)) * 300.0), 1500)


# ---------------------------------------------------------------------------------------
# Book primitives. lv: int64[4, 2*NLEV]; od: int64[O_FIELDS, MAXO]; ids: uint64[MAXO];
# dense: int32[4, MAXO] (live slots per side x class, for O(1) uniform picks); nd: int64[4].
# ---------------------------------------------------------------------------------------
@njit(cache=True)
def _rescan(lv: np.ndarray, st: np.ndarray, side: int) -> None:
    if side == 0:
        b = st[S_BB]
        while b >= 0 and lv[L_CNT, b] == 0:
            b -= 1
        st[S_BB] = b
    else:
        a = st[S_BA]
        while a < NLEV and lv[L_CNT, NLEV + a] == 0:
            a += 1
        st[S_BA] = a


@njit(cache=True)
def _lvl_append(lv: np.ndarray, od: np.ndarray, st: np.ndarray, slot: int, lvl: int) -> None:
    side = od[O_SIDE, slot]
    k = side * NLEV + lvl
    od[O_LVL, slot] = lvl
    od[O_PREV, slot] = lv[L_TAIL, k]
    od[O_NEXT, slot] = -1
    if lv[L_TAIL, k] >= 0:
        od[O_NEXT, lv[L_TAIL, k]] = slot
    else:
        lv[L_HEAD, k] = slot
    lv[L_TAIL, k] = slot
    lv[L_CNT, k] += 1
    lv[L_DEPTH, k] += od[O_SIZE, slot]
    if side == 0:
        if lvl > st[S_BB]:
            st[S_BB] = lvl
    elif lvl < st[S_BA]:
        st[S_BA] = lvl


@njit(cache=True)
def _lvl_remove(lv: np.ndarray, od: np.ndarray, st: np.ndarray, slot: int) -> None:
    side = od[O_SIDE, slot]
    lvl = od[O_LVL, slot]
    k = side * NLEV + lvl
    p = od[O_PREV, slot]
    n = od[O_NEXT, slot]
    if p >= 0:
        od[O_NEXT, p] = n
    else:
        lv[L_HEAD, k] = n
    if n >= 0:
        od[O_PREV, n] = p
    else:
        lv[L_TAIL, k] = p
    lv[L_CNT, k] -= 1
    lv[L_DEPTH, k] -= od[O_SIZE, slot]
    if lv[L_CNT, k] == 0:
        best = st[S_BB] if side == 0 else st[S_BA]
        if lvl == best:
            _rescan(lv, st, side)


@njit(cache=True)
def _new_order(lv: np.ndarray, od: np.ndarray, ids: np.ndarray, free: np.ndarray,
               dense: np.ndarray, nd: np.ndarray, st: np.ndarray, oid: int, side: int,
               cls: int, lvl: int, size: int, ts: int, seq: int) -> int:
    st[S_NFREE] -= 1
    slot = free[st[S_NFREE]]
    ids[slot] = np.uint64(oid)
    od[O_SIDE, slot] = side
    od[O_CLS, slot] = cls
    od[O_SIZE, slot] = size
    od[O_TS, slot] = ts
    od[O_SEQ, slot] = seq
    od[O_ALIVE, slot] = 1
    d = side * 2 + cls
    dense[d, nd[d]] = slot
    od[O_POS, slot] = nd[d]
    nd[d] += 1
    _lvl_append(lv, od, st, slot, lvl)
    return slot


@njit(cache=True)
def _del_order(lv: np.ndarray, od: np.ndarray, free: np.ndarray, dense: np.ndarray,
               nd: np.ndarray, st: np.ndarray, slot: int) -> None:
    _lvl_remove(lv, od, st, slot)
    d = od[O_SIDE, slot] * 2 + od[O_CLS, slot]
    pos = od[O_POS, slot]
    last = dense[d, nd[d] - 1]
    dense[d, pos] = last
    od[O_POS, last] = pos
    nd[d] -= 1
    od[O_ALIVE, slot] = 0
    free[st[S_NFREE]] = slot
    st[S_NFREE] += 1


@njit(cache=True)
def _resize(lv: np.ndarray, od: np.ndarray, slot: int, size: int) -> None:
    k = od[O_SIDE, slot] * NLEV + od[O_LVL, slot]
    lv[L_DEPTH, k] += size - od[O_SIZE, slot]
    od[O_SIZE, slot] = size


@njit(cache=True)
def _next_oid(st: np.ndarray, rng: np.ndarray) -> int:
    """CME order ids grow with gaps (other instruments share the id space)."""
    st[S_OID] += 1 + _geom(rng, 0.45)
    return st[S_OID]


@njit(cache=True)
def _put(out: np.ndarray, i: int, emit: bool, ts: int, oid: int, price: int, size: int,
         flags: int, action: int, side: int, recv: int, delta: int, seq: int) -> None:
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


@njit(cache=True)
def _side_char(side: int) -> int:
    return SIDE_BID if side == 0 else SIDE_ASK


@njit(cache=True)
def _in_delta(rng: np.ndarray) -> int:
    """CME's sending-to-receipt delta, ~11-16 us (measured on the real files)."""
    return int(min(max(13_400.0 + 1_600.0 * _randn(rng), 9_000.0), 30_000.0))


@njit(cache=True)
def _clamp_passive(lvl: int, side: int, st: np.ndarray) -> int:
    """Keep a resting price inside the level array and on its own side of the book."""
    lvl = min(max(lvl, 1), NLEV - 2)
    if side == 0 and st[S_BA] < NLEV and lvl >= st[S_BA]:
        lvl = st[S_BA] - 1
    if side == 1 and st[S_BB] >= 0 and lvl <= st[S_BB]:
        lvl = st[S_BB] + 1
    return lvl


@njit(cache=True)
def _advance_clock(st: np.ndarray, fs: np.ndarray, rng: np.ndarray, h: np.ndarray) -> int:
    """Next event time (ns): a burst child (wall-clock gap) or a parent in intensity time."""
    t = fs[FS_T]
    excited = st[S_EXCITE] > 0
    if excited:
        st[S_EXCITE] -= 1
    child = _u01(rng) < (P_CHILD_EXCITED if excited else P_CHILD)
    if child:
        u = _u01(rng)
        if u < CHILD_FAST_P:
            gap = np.exp(np.log(2.0e-6) + 1.4 * _randn(rng))
        elif u < CHILD_FAST_P + CHILD_SLOW_P:
            gap = np.exp(np.log(1.0e-3) + 0.8 * _randn(rng))
        else:
            gap = np.exp(np.log(1.0e-4) + 0.55 * _randn(rng))
        tn = t + gap
        sec = int(tn)
        if sec < DAY_SECONDS and h[sec] > 0.0:
            t = tn
            st[S_CHILD] += 1
        else:
            child = False
    if not child:
        e = -np.log(_u01(rng)) / fs[FS_SCALE]
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
    fs[FS_T] = t
    ts = st[S_DAY0] + int(t * 1e9)
    if ts <= st[S_TS]:
        ts = st[S_TS] + 1
    st[S_TS] = ts
    return ts


@njit(cache=True)
def _update_scale(st: np.ndarray, fs: np.ndarray, h: np.ndarray, hcum: np.ndarray) -> None:
    """Re-aim the parent rate so the remaining records fill the remaining session."""
    groups = st[S_GROUPS]
    if groups >= 2_000:
        rpg = st[S_WRITTEN] / groups
        pc = st[S_CHILD] / groups
    else:
        rpg = 1.1
        pc = P_CHILD + 0.03
    remaining = (st[S_BUDGET] - st[S_WRITTEN]) / rpg
    t = fs[FS_T]
    sec = int(t)
    hnow = hcum[DAY_SECONDS] if sec >= DAY_SECONDS else hcum[sec] + h[sec] * (t - sec)
    hrem = max(fs[FS_HTARGET] - hnow, fs[FS_HMIN])
    fs[FS_SCALE] = max(remaining * (1.0 - pc), 1.0) / hrem


@njit(cache=True)
def _g(r: float) -> float:
    return min(max(r, 0.2), 5.0)


@njit(cache=True)
def _init_book(lv: np.ndarray, od: np.ndarray, ids: np.ndarray, free: np.ndarray,
               dense: np.ndarray, nd: np.ndarray, st: np.ndarray, fs: np.ndarray,
               rng: np.ndarray, center: int, ts: int) -> None:
    """Seed both sides around ``center`` with the stationary depth profile."""
    for side in range(2):
        anchor = center - 1 if side == 0 else center
        sgn = -1 if side == 0 else 1
        for cls in range(2):
            n = st[S_NF_TGT] if cls == 0 else st[S_NS_TGT]
            for i in range(n):
                if cls == 0:
                    d = 0 if i == 0 else _fast_dist(rng)
                    size = _table(rng, _FAST_LO, _FAST_HI, _FAST_CUM)
                else:
                    d = _slow_dist(rng)
                    size = _table(rng, _SLOW_LO, _SLOW_HI, _SLOW_CUM)
                lvl = min(max(anchor + sgn * d, 1), NLEV - 2)
                st[S_SEQ] += 1
                _new_order(lv, od, ids, free, dense, nd, st, _next_oid(st, rng), side, cls,
                           lvl, size, ts, st[S_SEQ])
    fs[FS_FAIR] = center - 0.5


@njit(cache=True)
def _informed_step(st: np.ndarray, fs: np.ndarray, rng2: np.ndarray) -> float:
    """Advance the informed episode by one group; the fair-value jump (ticks) it releases."""
    if st[S_EP_LEFT] == 0:
        # Idle for 1/p groups on average, then busy for INFORMED_EPISODE: a busy share of
        # E p / (E p + 1), which is ``informed`` for this p.
        share = fs[FS_INFORMED]
        p = 1.0 if share >= 1.0 else share / (INFORMED_EPISODE * (1.0 - share))
        if _u01(rng2) < p:
            st[S_EP_LEFT] = INFORMED_EPISODE
            st[S_EP_DIR] = 1 if _u01(rng2) < 0.5 else -1
            mode = fs[FS_JUMP_MODE]
            if mode == 0.0:
                st[S_EP_JUMP] = st[S_EP_DIR]
            elif mode == 1.0:
                # Placebo: an independent coin from a generator of its own, so the episodes
                # (drawn from rng2's first four words) are the planted day's.
                st[S_EP_JUMP] = 1 if _u01(rng2[4:]) < 0.5 else -1
            else:
                st[S_EP_JUMP] = 0
        return 0.0
    st[S_EP_LEFT] -= 1
    return INFORMED_JUMP * st[S_EP_JUMP] if st[S_EP_LEFT] == 0 else 0.0


@njit(cache=True)
def _informed_pull(lv: np.ndarray, side: int, best: int, rng2: np.ndarray) -> int:
    """The order an informed trader pulls: the newest at a level drawn 1..INFORMED_DEPTH ticks
    beyond the touch on ``side`` (the nearest non-empty level towards the touch; the touch only
    when all of them are empty)."""
    step = -1 if side == 0 else 1
    lvl = best + step * (1 + _randint(rng2, INFORMED_DEPTH))
    while lvl != best and lv[L_CNT, side * NLEV + lvl] == 0:
        lvl -= step
    return lv[L_TAIL, side * NLEV + lvl]


@njit(cache=True)
def _informed_kind(kind: int, up: bool, nfb: int, nsb: int, nfa: int, nsa: int, room: bool,
                   rng2: np.ndarray) -> tuple[int, bool]:
    """The informed action as an event kind (4/5 fast cancel bid/ask, 0/1 fast add bid/ask)
    and True, or the ordinary ``kind`` and False when the book has no room for it."""
    if _u01(rng2) < INFORMED_PULL_SHARE:
        if up and nfa > 0 and nfa + nsa > 10:
            return 5, True
        if not up and nfb > 0 and nfb + nsb > 10:
            return 4, True
        return kind, False
    if not room:
        return kind, False
    return (0 if up else 1), True


@njit(cache=True, nogil=True)
def _run(out: np.ndarray, lv: np.ndarray, od: np.ndarray, ids: np.ndarray, free: np.ndarray,
         dense: np.ndarray, nd: np.ndarray, recent: np.ndarray, st: np.ndarray, fs: np.ndarray,
         rng: np.ndarray, h: np.ndarray, hcum: np.ndarray, max_records: int,
         max_groups: int, rng2: np.ndarray) -> int:
    """Simulate event groups; write them to ``out`` when ``st[S_EMIT]``. Returns records written.

    Emitting: stops once ``max_records`` are in ``out`` (a group never straddles calls) or the
    live budget is spent. Silent (burn-in): runs ``max_groups`` groups on a synthetic clock.
    With ``fs[FS_INFORMED] > 0`` the planted signal is on (informed episodes, drawn from
    ``rng2``; ``informed = 0`` never touches ``rng2`` and is the unplanted stream exactly).
    """
    informed = fs[FS_INFORMED]
    emit = st[S_EMIT] != 0
    n = 0
    g = 0
    fslot = np.empty(MAX_FILLS, np.int64)
    fqty = np.empty(MAX_FILLS, np.int64)
    llvl = np.empty(16, np.int64)
    lqty = np.empty(16, np.int64)
    lnf = np.empty(16, np.int64)
    tick = st[S_TICK]
    base = st[S_BASE]
    while True:
        if emit:
            if n >= max_records or st[S_WRITTEN] >= st[S_BUDGET]:
                break
            remaining = st[S_BUDGET] - st[S_WRITTEN]
            if st[S_GROUPS] % 256 == 0:
                _update_scale(st, fs, h, hcum)
            ts = _advance_clock(st, fs, rng, h)
            lat = int(np.exp(np.log(98_000.0) + 0.3 * _randn(rng)))
            if _u01(rng) < 0.08:
                lat += int(-np.log(_u01(rng)) * 100_000.0)
            recv = max(st[S_RECV], ts + lat)
        else:
            if g >= max_groups:
                break
            remaining = 1 << 40
            ts = st[S_BURN_T0] + g * st[S_BURN_DT]
            recv = ts
        g += 1
        st[S_GROUPS] += 1
        st[S_SEQ] += 1 + _geom(rng, 0.6)
        seq = st[S_SEQ]
        delta = _in_delta(rng)

        # Latent fair value: event-time random walk with trend episodes.
        if _u01(rng) < fs[FS_PSW]:
            st[S_TREND] = _randint(rng, 3) - 1
        jump = _informed_step(st, fs, rng2) if informed > 0.0 else 0.0
        f = fs[FS_FAIR] + fs[FS_SIGMA] * _randn(rng) + fs[FS_MU] * st[S_TREND] + jump
        if f < EDGE:
            f = 2.0 * EDGE - f
            st[S_TREND] = 1
        elif f > NLEV - EDGE:
            f = 2.0 * (NLEV - EDGE) - f
            st[S_TREND] = -1
        fs[FS_FAIR] = f
        bb = st[S_BB]
        ba = st[S_BA]
        x = f - 0.5 * (bb + ba)
        xc = min(max(x, -3.0), 3.0)

        # Event choice: base mix, order-count feedback per side x class, tilt toward fair value.
        nfb, nsb, nfa, nsa = nd[0], nd[1], nd[2], nd[3]
        nft = float(st[S_NF_TGT])
        nst = float(st[S_NS_TGT])
        tilt_b = max(0.1, 1.0 + 0.25 * xc)
        tilt_a = max(0.1, 1.0 - 0.25 * xc)
        room = st[S_NFREE] > 1_024
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
        u = _u01(rng) * (w0 + w1 + w2 + w3 + w4 + w5 + w6 + w7 + w8 + w9)
        kind = 0
        for w in (w0, w1, w2, w3, w4, w5, w6, w7, w8, w9):
            if u < w:
                break
            u -= w
            kind += 1
        if kind > 9:
            kind = 0
        touch = False
        if informed > 0.0 and st[S_EP_LEFT] > 0 and _u01(rng2) < INFORMED_ACT:
            kind, touch = _informed_kind(kind, st[S_EP_DIR] > 0, nfb, nsb, nfa, nsa, room, rng2)

        if kind == 9:
            # ---------------- trade: T per level + FIFO F's, then C/M per filled order ----
            buy = _u01(rng) < 1.0 / (1.0 + np.exp(-1.2 * x))
            a = 0 if buy else 1
            r = 1 - a
            if nd[2 * r] + nd[2 * r + 1] < 8:
                kind = 0 if r == 0 else 1
            else:
                k = 1
                while k < 10 and _u01(rng) < P_SWEEP_MORE:
                    k += 1
                xd = x if buy else -x
                if xd > 3.0:
                    k += 1
                k = min(k, 12)
                # Collect up to k non-empty levels from the touch outward.
                nl = 0
                lvl = ba if r == 1 else bb
                step = 1 if r == 1 else -1
                scanned = 0
                while nl < k and scanned < 64 and 0 <= lvl < NLEV:
                    if lv[L_CNT, r * NLEV + lvl] > 0:
                        llvl[nl] = lvl
                        nl += 1
                    lvl += step
                    scanned += 1
                if nl == 1:
                    dep = lv[L_DEPTH, r * NLEV + llvl[0]]
                    u = _u01(rng)
                    if u < P_CLEAR_LEVEL:
                        q = dep
                    elif u < P_CLEAR_LEVEL + P_WHOLE_ORDERS:
                        # Take the first m queued orders whole (most real fills end in a C).
                        m = 1 + _geom(rng, 0.6)
                        q = 0
                        s = lv[L_HEAD, r * NLEV + llvl[0]]
                        while s >= 0 and m > 0:
                            q += od[O_SIZE, s]
                            m -= 1
                            s = od[O_NEXT, s]
                    else:
                        q = min(_table(rng, _TRADE_LO, _TRADE_HI, _TRADE_CUM), dep)
                else:
                    q = 0
                    for j in range(nl - 1):
                        q += lv[L_DEPTH, r * NLEV + llvl[j]]
                    q += 1 + _randint(rng, lv[L_DEPTH, r * NLEV + llvl[nl - 1]])
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
                    s = lv[L_HEAD, r * NLEV + llvl[j]]
                    while s >= 0 and left > 0 and nf < max_f:
                        fill = min(left, od[O_SIZE, s])
                        fslot[nf] = s
                        fqty[nf] = fill
                        nf += 1
                        lqty[j] += fill
                        lnf[j] += 1
                        left -= fill
                        s = od[O_NEXT, s]
                    if lnf[j] == 0:
                        break
                    used = j + 1
                    if left == 0 or nf >= max_f:
                        break
                last_cleared = (used > 0 and nf > 0
                                and fqty[nf - 1] == od[O_SIZE, fslot[nf - 1]]
                                and od[O_NEXT, fslot[nf - 1]] < 0)
                rest = 0
                if last_cleared and _u01(rng) < P_REMAINDER:
                    rest = _table(rng, _TRADE_LO, _TRADE_HI, _TRADE_CUM)
                nrec = used + 2 * nf + (1 if rest > 0 else 0)
                if nf == 0 or (emit and nrec > remaining):
                    kind = 0 if a == 0 else 1
                else:
                    aggr = _next_oid(st, rng)
                    recv2 = recv + _randint(rng, 8_000)
                    delta2 = _in_delta(rng)
                    st[S_SEQ] += 1
                    seq2 = st[S_SEQ]
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
                        price = (base + od[O_LVL, s]) * tick
                        flags = LIVE_LAST_FLAGS if (i == nf - 1 and rest == 0) else 0
                        left_size = od[O_SIZE, s] - fqty[i]
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
                        if od[O_SIZE, s] == fqty[i]:
                            _del_order(lv, od, free, dense, nd, st, s)
                        else:
                            _resize(lv, od, s, od[O_SIZE, s] - fqty[i])
                    if rest > 0:
                        _put(out, n, emit, ts, aggr, (base + last_lvl) * tick, rest,
                             LIVE_LAST_FLAGS, ACTION_ADD, _side_char(a), recv2, delta2, seq2)
                        n += 1
                        _new_order(lv, od, ids, free, dense, nd, st, aggr, a, 0, last_lvl,
                                   rest, ts, seq2)
                    st[S_EXCITE] = EXCITE_GROUPS
                    st[S_RECV] = recv2 if emit else st[S_RECV]
                    st[S_WRITTEN] += nrec if emit else 0
                    continue

        if kind == 8:
            # ---------------- modify: price move (loses priority) or size change --------
            cls = 0 if _u01(rng) < 0.6 else 1
            side = _randint(rng, 2)
            if nd[side * 2 + cls] == 0:
                side = 1 - side
            if nd[side * 2 + cls] == 0:
                cls = 1 - cls
            requote = abs(x) > 1.0 and _u01(rng) < min(0.6, 0.2 * abs(x))
            if requote:
                side = 1 if x > 0 else 0
            if nd[side * 2 + cls] == 0 and not requote:
                kind = 0
            else:
                if requote:
                    s = lv[L_TAIL, side * NLEV + (bb if side == 0 else ba)]
                else:
                    s = dense[side * 2 + cls, _randint(rng, nd[side * 2 + cls])]
                size = od[O_SIZE, s]
                lvl0 = od[O_LVL, s]
                u = 1.0 if requote else _u01(rng)
                new_lvl = lvl0
                new_size = size
                if u < P_M_SIZE_DOWN and size >= 2:
                    new_size = 1 + _randint(rng, size - 1)
                    _resize(lv, od, s, new_size)
                elif u < P_M_SIZE_DOWN + P_M_SIZE_UP:
                    new_size = size + 1 + _geom(rng, 0.5)
                    _lvl_remove(lv, od, st, s)
                    od[O_SIZE, s] = new_size
                    _lvl_append(lv, od, st, s, lvl0)
                else:
                    own = bb if side == 0 else ba
                    d0 = own - lvl0 if side == 0 else lvl0 - own
                    if requote:
                        d = d0 + 1 + _geom(rng, 0.5)
                    elif _u01(rng) < P_M_PARK:
                        d = 280 + _randint(rng, 30) if d0 < 40 else _fast_dist(rng)
                    else:
                        stepm = 1 + _geom(rng, 0.6)
                        d = max(d0 + stepm if _u01(rng) < 0.5 else d0 - stepm, 0)
                    new_lvl = _clamp_passive(own - d if side == 0 else own + d, side, st)
                    if new_lvl == lvl0:
                        if size >= 2:
                            new_size = 1 + _randint(rng, size - 1)
                            _resize(lv, od, s, new_size)
                        else:
                            new_lvl = _clamp_passive(lvl0 - 1 if side == 0 else lvl0 + 1,
                                                     side, st)
                    if new_lvl != lvl0:
                        _lvl_remove(lv, od, st, s)
                        _lvl_append(lv, od, st, s, new_lvl)
                od[O_TS, s] = ts
                od[O_SEQ, s] = seq
                _put(out, n, emit, ts, ids[s], (base + od[O_LVL, s]) * tick, od[O_SIZE, s],
                     LIVE_LAST_FLAGS, ACTION_MODIFY, _side_char(side), recv, delta, seq)

        if kind == 4 or kind == 5 or kind == 6 or kind == 7:
            # ---------------- cancel: newest / fleeing / uniform; rarely partial ---------
            side = 0 if (kind == 4 or kind == 6) else 1
            cls = 0 if kind < 6 else 1
            s = -1
            wrong = (side == 1 and x > 0.5) or (side == 0 and x < -0.5)
            if touch:
                s = _informed_pull(lv, side, bb if side == 0 else ba, rng2)
            elif wrong and _u01(rng) < min(0.7, 0.25 * abs(x)):
                s = lv[L_TAIL, side * NLEV + (bb if side == 0 else ba)]
            elif cls == 0 and _u01(rng) < P_FLICKER:
                pos = st[S_RPOS0 + side]
                for j in range(RECENT):
                    cand = recent[side, (pos - 1 - j) % RECENT]
                    if cand >= 0 and od[O_ALIVE, cand] == 1 and od[O_CLS, cand] == 0 \
                            and od[O_SIDE, cand] == side:
                        s = cand
                        break
            if s < 0:
                s = dense[side * 2 + cls, _randint(rng, nd[side * 2 + cls])]
            size = od[O_SIZE, s]
            price = (base + od[O_LVL, s]) * tick
            if size >= 2 and _u01(rng) < P_PARTIAL_CANCEL:
                c = 1 + _randint(rng, size - 1)
                _resize(lv, od, s, size - c)
            else:
                c = size
                _del_order(lv, od, free, dense, nd, st, s)
            _put(out, n, emit, ts, ids[s], price, c, LIVE_LAST_FLAGS, ACTION_CANCEL,
                 _side_char(side), recv, delta, seq)

        if kind <= 3:
            # ---------------- add: join / improve near the touch, or rest deep -----------
            side = kind % 2
            cls = 0 if kind < 2 else 1
            bb = st[S_BB]
            ba = st[S_BA]
            if touch:
                size = _table(rng, _FAST_LO, _FAST_HI, _FAST_CUM)
                d = 1 + _randint(rng2, INFORMED_DEPTH)
                lvl = bb - d if side == 0 else ba + d
            elif cls == 0:
                spread = ba - bb
                size = _table(rng, _FAST_LO, _FAST_HI, _FAST_CUM)
                if spread > 1 and _u01(rng) < P_IMPROVE:
                    j = 0 if _u01(rng) < 0.7 else _randint(rng, spread - 1)
                    lvl = bb + 1 + j if side == 0 else ba - 1 - j
                else:
                    d = _fast_dist(rng)
                    lvl = bb - d if side == 0 else ba + d
            else:
                size = _table(rng, _SLOW_LO, _SLOW_HI, _SLOW_CUM)
                d = _slow_dist(rng)
                lvl = bb - d if side == 0 else ba + d
            lvl = _clamp_passive(lvl, side, st)
            oid = _next_oid(st, rng)
            s = _new_order(lv, od, ids, free, dense, nd, st, oid, side, cls, lvl, size, ts, seq)
            if cls == 0:
                recent[side, st[S_RPOS0 + side] % RECENT] = s
                st[S_RPOS0 + side] += 1
            _put(out, n, emit, ts, oid, (base + lvl) * tick, size, LIVE_LAST_FLAGS,
                 ACTION_ADD, _side_char(side), recv, delta, seq)

        if emit:
            st[S_RECV] = recv
            st[S_WRITTEN] += 1
            n += 1
    return n


# ---------------------------------------------------------------------------------------
# Session clock (Python/numpy: computed once per file).
# ---------------------------------------------------------------------------------------
_ET: Final = NEW_YORK
_CT: Final = CHICAGO

#: Relative activity by New York wall-clock minute. Duplicate knots are jumps (08:30 data,
#: 09:30 cash open, 16:00 cash close). Regular trading hours (09:30-16:00) average ~9x the
#: overnight level, as in CME equity-index futures.
_ET_KNOTS: Final = (
    (0, 0.10), (120, 0.10), (180, 0.28), (240, 0.22), (420, 0.22), (480, 0.35), (510, 0.40),
    (510, 1.20), (525, 0.60), (565, 0.55), (570, 0.60), (570, 3.20), (600, 2.00), (630, 1.50),
    (690, 1.15), (720, 0.95), (810, 0.85), (840, 1.00), (900, 1.20), (950, 1.70), (960, 2.40),
    (960, 0.50), (975, 0.30), (1020, 0.25), (1080, 0.60), (1090, 0.20), (1140, 0.13),
    (1260, 0.11), (1440, 0.10),
)


def _local_minutes(day: dt.date, tz: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """Per UTC minute of ``day``: local minute of day and local weekday (Mon = 0)."""
    day0 = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    minute = np.empty(1440, np.float64)
    weekday = np.empty(1440, np.int64)
    for m in range(1440):
        local = (day0 + dt.timedelta(minutes=m)).astimezone(tz)
        minute[m] = local.hour * 60 + local.minute
        weekday[m] = local.weekday()
    return minute, weekday


def _cme_open(ct_minute: np.ndarray, ct_weekday: np.ndarray) -> np.ndarray:
    """CME Globex equity-index hours: Sun 17:00 CT to Fri 16:00 CT, daily halt 16:00-17:00 CT."""
    in_halt = (ct_minute >= 16 * 60) & (ct_minute < 17 * 60)
    after_close = ct_minute >= 16 * 60
    return np.where(ct_weekday <= 3, ~in_halt,
                    np.where(ct_weekday == 4, ~after_close,
                             (ct_weekday == 6) & (ct_minute >= 17 * 60)))


def session_intensity(day: dt.date, seed: int = 0) -> np.ndarray:
    """Relative event intensity per second of the UTC day ``day`` (0 while CME is closed).

    The New York time-of-day profile times a seeded log-OU activity multiplier (minutes)
    with a few news bursts: activity clusters in time like real flow, and is deterministic.
    """
    et_min, _ = _local_minutes(day, _ET)
    ct_min, ct_wd = _local_minutes(day, _CT)
    open_min = _cme_open(ct_min, ct_wd)
    xs = np.array([k[0] for k in _ET_KNOTS], np.float64)
    ys = np.array([k[1] for k in _ET_KNOTS], np.float64)
    sec = np.arange(DAY_SECONDS)
    et_sec = np.repeat(et_min, 60) + (sec % 60) / 60.0
    profile = np.interp(et_sec, xs, ys)
    rng = np.random.default_rng(np.random.SeedSequence([seed, day.toordinal(), 0x5E55]))
    phi = np.exp(-1.0 / 30.0)
    eps = rng.standard_normal(1440) * 0.35 * np.sqrt(1.0 - phi * phi)
    logv = np.empty(1440)
    logv[0] = rng.standard_normal() * 0.35
    for m in range(1, 1440):
        logv[m] = phi * logv[m - 1] + eps[m]
    mult = np.exp(logv)
    minutes = np.arange(1440)
    for m0 in rng.choice(np.flatnonzero(open_min), size=min(3, int(open_min.sum())),
                         replace=False):
        mult *= 1.0 + rng.uniform(1.0, 3.0) * np.where(minutes >= m0,
                                                         np.exp(-(minutes - m0) / 5.0), 0.0)
    h = profile * np.repeat(mult * open_min, 60)
    total = h.sum()
    return h / total * DAY_SECONDS if total > 0 else h


def default_start_price(symbol: str) -> float:
    """An indicative price for ``symbol`` (futures root table; equities 500)."""
    product = resolve_product(symbol)
    if product.product_type == FUTURE_MBO:
        return _START_PRICES.get(product.root, 1000.0)
    return 500.0


def _weekly_open_ns(day: dt.date) -> int:
    """The last Sunday 12:00 UTC before ``day``, when resting GTC orders were restated.

    2,517 orders of the real ESM4 snapshot carry that timestamp (2024-05-05 12:00:04 UTC).
    """
    sunday = day - dt.timedelta(days=(day.weekday() + 1) % 7 or 7)
    return int(dt.datetime(sunday.year, sunday.month, sunday.day, 12, tzinfo=dt.UTC)
               .timestamp()) * NS


def _metadata(symbol: str, dataset: str, day: dt.date, instrument_id: int) -> bytes:
    """DBN metadata as Databento writes it for a raw-symbol day query (one mapping interval)."""
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * NS
    mapping = _SymbolMapping(symbol, [_MappingInterval(day, day + dt.timedelta(days=1),
                                                       str(instrument_id))])
    meta = dbn.Metadata(dataset=dataset, start=start, stype_in=dbn.SType("raw_symbol"),
                        stype_out=dbn.SType("instrument_id"), schema=dbn.Schema("mbo"),
                        symbols=[symbol], partial=[], not_found=[], mappings=[mapping],
                        end=start + DAY_SECONDS * NS, version=DBN_VERSION)
    return bytes(meta.encode())


def _record_buffer(n: int, instrument_id: int, publisher_id: int) -> np.ndarray:
    """A reusable chunk buffer with the per-file constant fields already set."""
    buf = np.zeros(n, MBO_DTYPE)
    buf["length"] = MBO_LENGTH
    buf["rtype"] = MBO_RTYPE
    buf["publisher_id"] = publisher_id
    buf["instrument_id"] = instrument_id
    return buf


class _Sim:
    """The kernel's arrays, one object so the call sites stay readable."""

    def __init__(self, seed_words: np.ndarray, informed: float = 0.0,
                 informed_words: np.ndarray | None = None, jump_mode: int = 0) -> None:
        self.lv = np.zeros((4, 2 * NLEV), np.int64)
        self.lv[L_HEAD] = -1
        self.lv[L_TAIL] = -1
        self.od = np.zeros((O_FIELDS, MAXO), np.int64)
        self.ids = np.zeros(MAXO, np.uint64)
        self.free = np.arange(MAXO - 1, -1, -1, dtype=np.int64)
        self.dense = np.zeros((4, MAXO), np.int64)
        self.nd = np.zeros(4, np.int64)
        self.recent = np.full((2, RECENT), -1, np.int64)
        self.st = np.zeros(N_ST, np.int64)
        self.fs = np.zeros(N_FS, np.float64)
        self.rng = seed_words.astype(np.uint64)
        self.st[S_NFREE] = MAXO
        self.st[S_BB] = -1
        self.st[S_BA] = NLEV
        self.fs[FS_INFORMED] = informed
        self.fs[FS_JUMP_MODE] = jump_mode
        # Words 0-3: the episodes and their activity; words 4-7: the placebo's jump coins.
        self.rng2 = (np.ones(8, np.uint64) if informed_words is None
                     else informed_words.astype(np.uint64))

    def run(self, out: np.ndarray, h: np.ndarray, hcum: np.ndarray, max_records: int,
            max_groups: int = 0) -> int:
        return int(_run(out, self.lv, self.od, self.ids, self.free, self.dense, self.nd,
                        self.recent, self.st, self.fs, self.rng, h, hcum, max_records,
                        max_groups, self.rng2))

    def snapshot(self, day0: int, instrument_id: int, publisher_id: int) -> np.ndarray:
        """The live book as Databento's start-of-day snapshot: ``R`` then adds by age."""
        slots = np.flatnonzero(self.od[O_ALIVE] == 1)
        slots = slots[np.lexsort((self.od[O_SEQ, slots], self.od[O_TS, slots]))]
        snap = _record_buffer(len(slots) + 1, instrument_id, publisher_id)
        tick, base = int(self.st[S_TICK]), int(self.st[S_BASE])
        snap["ts_recv"] = day0
        snap["flags"] = SNAPSHOT_FLAGS
        snap[0]["ts_event"] = self.od[O_TS, slots].min()
        snap[0]["price"] = UNDEF_PRICE
        snap[0]["action"] = ACTION_CLEAR
        snap[0]["side"] = SIDE_NONE
        body = snap[1:]
        body["ts_event"] = self.od[O_TS, slots]
        body["order_id"] = self.ids[slots]
        body["price"] = (base + self.od[O_LVL, slots]) * tick
        body["size"] = self.od[O_SIZE, slots]
        body["action"] = ACTION_ADD
        body["side"] = np.where(self.od[O_SIDE, slots] == 0, SIDE_BID, SIDE_ASK)
        body["sequence"] = self.od[O_SEQ, slots]
        snap["flags"][-1] = SNAPSHOT_FLAGS | F_LAST
        return snap


class _Sink:
    """Writes chunks on a background thread (zstd releases the GIL, the kernel too)."""

    def __init__(self, fh: Any, compress: bool) -> None:
        self._fh = fh
        self._zw = (zstandard.ZstdCompressor(level=3).stream_writer(fh, closefd=False)
                    if compress else None)
        self._q: queue.Queue[tuple[np.ndarray, np.ndarray | None] | None] = queue.Queue(1)
        self._done: queue.Queue[np.ndarray] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="vpbatch-synth-writer",
                                        daemon=True)
        self._thread.start()

    def _write(self, data: Any) -> None:
        if self._zw is not None:
            self._zw.write(data)
        else:
            self._fh.write(data)

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            data, owner = item
            try:
                if self._error is None:
                    self._write(data.view(np.uint8).data)
            except BaseException as exc:  # re-raised on the calling thread
                self._error = exc
            if owner is not None:
                self._done.put(owner)

    def put(self, data: np.ndarray, owner: np.ndarray | None = None) -> None:
        """Queue a contiguous array for writing, in order; ``owner`` comes back via recycle."""
        self._check()
        self._q.put((data, owner))

    def recycle(self) -> np.ndarray:
        """A buffer the writer has finished with (blocks until one is free)."""
        item = self._done.get()
        self._check()
        return item

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        self._check()
        if self._zw is not None:
            self._zw.flush(zstandard.FLUSH_FRAME)
            self._zw.close()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


def _discard(tmp: Path) -> None:
    """Remove a partial temporary file; never mask the error that got us here."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _seed_words(seed: int, symbol: str, day: dt.date) -> np.ndarray:
    words = np.random.SeedSequence(
        [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, day.toordinal(),
         zlib.crc32(symbol.encode())]).generate_state(4, np.uint64)
    if not words.any():
        words[0] = 1
    return words


def _informed_words(words: np.ndarray) -> np.ndarray:
    """The planted signal's two generator states (episodes; placebo jump coins), 8 words
    derived from the file's seed words."""
    parts = []
    for tag in (0x1F0, 0x1F1):
        out = np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words] + [tag]
                                     ).generate_state(4, np.uint64)
        if not out.any():
            out[0] = 1
        parts.append(out)
    return np.concatenate(parts)


def synth_session(path: Path, *, symbol: str = "MNQH6", day: dt.date,
                  records: int = 1_000_000, seed: int = 0, start_price: float | None = None,
                  instrument_id: int = 42_000_001, publisher_id: int = 1,
                  progress: Callable[[int], None] | None = None,
                  informed: float = 0.0, informed_jump: str = "aligned") -> SynthStats:
    """Write one synthetic CME MBO day for ``symbol`` to ``path`` (DBN; zstd if ``.zst``).

    Parameters
    ----------
    path : Path
        Output file. ``*.zst`` is zstd-compressed. Written to a temporary file beside it
        and renamed at the end, so a reader never sees a half-written day.
    symbol : str
        Outright contract (``MNQH6``) or ticker; its tick comes from the product table.
    day : datetime.date
        UTC trading date (Mon-Fri). The file covers ``day`` 00:00-24:00 UTC like
        Databento's GLBX day files; activity follows CME Globex hours.
    records : int
        Exact number of records in the file, snapshot included (>= 1000).
    seed : int
        Same seed and arguments give a byte-identical file.
    start_price : float, optional
        Price at the start of the day; defaults to :func:`default_start_price`.
    instrument_id, publisher_id : int
        Written on every record; ``instrument_id`` is also the metadata mapping target.
    progress : callable, optional
        Called with the number of records written after each chunk.
    informed : float
        Planted signal, default 0 (off: the unplanted stream, byte for byte). About this share
        of the event groups lies in an informed episode: for ``INFORMED_EPISODE`` groups an
        informed trader pulls orders 1-10 ticks beyond the touch on the side price is about
        to move into, or adds 1-10 ticks behind the touch on the other side, then the fair
        value jumps ``INFORMED_JUMP`` ticks that way and the ordinary flow follows. Nothing
        at the touch changes ahead of the jump. Deterministic with the seed. Used to check
        that ``vpbatch evaluate`` finds a signal that is there.
    informed_jump : {"aligned", "random", "none"}
        ``aligned`` (default) is the planted signal above. ``random`` is its placebo control:
        the same episodes and informed activity (the same generator draws), but each jump's
        direction is an independent fair coin, so the activity says nothing about the move
        that follows. ``none`` keeps the activity and drops the jumps.

    Returns
    -------
    SynthStats
        Counts, time span, size and elapsed time of the written file.

    Raises
    ------
    ConfigError
        Invalid argument, or a day on which CME does not trade (weekends).
    OutputError
        The file cannot be written.
    """
    started = time.perf_counter()
    path = Path(path)
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
        raise ConfigError(f"day: expected a datetime.date, got {day!r}")
    if isinstance(records, bool) or not isinstance(records, int) or records < MIN_RECORDS:
        raise ConfigError(f"records: must be an integer >= {MIN_RECORDS}, was {records!r}")
    if not 0 <= seed < 2**64:
        raise ConfigError(f"seed: must be in [0, 2**64), was {seed}")
    if not 0 < instrument_id < 2**32:
        raise ConfigError(f"instrument_id: must be in (0, 2**32), was {instrument_id}")
    if isinstance(informed, bool) or not isinstance(informed, (int, float)) \
            or not 0.0 <= informed <= 1.0:
        raise ConfigError(f"informed: must be a share in [0, 1], was {informed!r}")
    if informed_jump not in INFORMED_JUMPS:
        raise ConfigError(f"informed_jump: must be one of {', '.join(INFORMED_JUMPS)}, "
                          f"was {informed_jump!r}")
    if informed_jump != "aligned" and informed == 0:
        raise ConfigError(f"informed_jump: {informed_jump!r} needs informed episodes "
                          "(informed > 0); with informed = 0 there is nothing to control for")
    if not 0 < publisher_id < 2**16:
        raise ConfigError(f"publisher_id: must be in (0, 2**16), was {publisher_id}")
    if day.weekday() >= 5:
        raise ConfigError(f"day: {day.isoformat()} is a {day:%A}; CME Globex does not trade "
                          "a full session on weekends, pick a weekday")
    product = resolve_product(symbol)
    tick = product.tick
    price = default_start_price(symbol) if start_price is None else float(start_price)
    if not np.isfinite(price) or price <= 0:
        raise ConfigError(f"start_price: must be a positive price, was {start_price}")
    start_tick = max(round(price * FIXED_PRICE_SCALE / tick), 2 * EDGE)
    base_tick = max(start_tick - NLEV // 2, 1)
    center = start_tick - base_tick

    h = session_intensity(day, seed)
    hcum = np.concatenate(([0.0], np.cumsum(h)))
    day0 = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * NS

    words = _seed_words(seed, product.symbol, day)
    sim = _Sim(words, float(informed), _informed_words(words) if informed > 0 else None,
               INFORMED_JUMPS.index(informed_jump))
    st, fs = sim.st, sim.fs
    st[S_TICK] = tick
    st[S_DAY0] = day0
    st[S_BASE] = base_tick
    st[S_NS_TGT] = min(max(records // 100, 100), 1_500)
    st[S_NF_TGT] = min(max(records // 10_000, 20), 60)
    st[S_OID] = 6_800_000_000_000 + int(sim.rng[0] % np.uint64(100_000_000_000))
    st[S_SEQ] = 10_000_000 + int(sim.rng[1] % np.uint64(50_000_000))
    groups = records / 1.1
    sigma = min(SIGMA_EVENT_MAX, DAILY_VOL_FRACTION * start_tick / np.sqrt(groups))
    fs[FS_SIGMA] = sigma
    fs[FS_MU] = 4.0 * sigma / np.sqrt(groups)
    fs[FS_PSW] = 20.0 / groups
    fs[FS_HTARGET] = hcum[-1] * (1.0 - 1e-3)
    fs[FS_HMIN] = hcum[-1] * 1e-5

    # Book before the day: the stationary profile restated at the weekly open, then a
    # silent burn-in on a clock running up to midnight, so snapshot orders have history.
    weekly = _weekly_open_ns(day) + int(sim.rng[2] % np.uint64(NS))
    _init_book(sim.lv, sim.od, sim.ids, sim.free, sim.dense, sim.nd, st, fs, sim.rng,
               center, weekly)
    burn = 8 * int(sim.nd.sum())
    burn_t0 = max(weekly + NS, day0 - 20 * 3600 * NS)
    st[S_BURN_T0] = burn_t0
    st[S_BURN_DT] = max((day0 - NS // 1000 - burn_t0) // burn, 1)
    scratch = _record_buffer(1, instrument_id, publisher_id)
    sim.run(scratch, h, hcum, 0, burn)
    snap = sim.snapshot(day0, instrument_id, publisher_id)
    if len(snap) >= records:
        raise ConfigError(f"records: {records} is smaller than the opening snapshot "
                          f"({len(snap)} records); ask for more records")

    st[S_EMIT] = 1
    st[S_GROUPS] = 0
    st[S_CHILD] = 0
    st[S_WRITTEN] = 0
    st[S_EXCITE] = 0
    st[S_BUDGET] = records - len(snap)
    st[S_TS] = day0
    st[S_RECV] = day0
    fs[FS_T] = 0.0

    counts = np.bincount(snap["action"], minlength=256).astype(np.int64)
    first_ts = last_ts = 0
    levels = tuple(len(np.unique(snap["price"][snap["side"] == s])) for s in (SIDE_BID, SIDE_ASK))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            sink = _Sink(fh, path.name.endswith(".zst"))
            try:
                sink.put(np.frombuffer(_metadata(product.symbol, product.dataset, day,
                                                 instrument_id), np.uint8))
                sink.put(snap)
                if progress is not None:
                    progress(len(snap))
                free = [_record_buffer(CHUNK_RECORDS + MAX_GROUP, instrument_id, publisher_id)
                        for _ in range(3)]
                written = len(snap)
                while written < records:
                    buf = free.pop() if free else sink.recycle()
                    n = sim.run(buf, h, hcum, CHUNK_RECORDS)
                    if n == 0:
                        raise RuntimeError("synth kernel made no progress")  # pragma: no cover
                    chunk = buf[:n]
                    counts += np.bincount(chunk["action"], minlength=256)
                    if first_ts == 0:
                        first_ts = int(chunk["ts_event"][0])
                    last_ts = int(chunk["ts_event"][-1])
                    sink.put(chunk, buf)
                    written += n
                    if progress is not None:
                        progress(n)
            finally:
                sink.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise OutputError(f"{path}: cannot write synthetic MBO file: {exc}") from exc
    except BaseException:
        _discard(tmp)
        raise
    if written != records:  # pragma: no cover - the kernel spends the exact budget
        raise RuntimeError(f"synth wrote {written} records, expected {records}")
    action_counts = {chr(c): int(counts[c]) for c in np.flatnonzero(counts)}
    return SynthStats(path=path, symbol=product.symbol, instrument_id=instrument_id,
                      records=written, snapshot_records=len(snap), action_counts=action_counts,
                      first_ts_event=first_ts, last_ts_event=last_ts,
                      bytes=path.stat().st_size, seconds=time.perf_counter() - started,
                      snapshot_levels=(int(levels[0]), int(levels[1])))


def synth_to_lake(lake: Path, symbol: str, day: dt.date, **kw: Any) -> Path:
    """Write the synthetic day where ``vpbatch build`` looks for it; returns the file path.

    ``lake/raw/source=databento/product_type=…/symbol={ROOT}/table=market_by_order_dbn/``
    ``glbx-mdp3-YYYYMMDD.mbo.dbn.zst``; keyword arguments go to :func:`synth_session`.
    """
    product = resolve_product(symbol)
    path = raw_dir(Path(lake), product) / raw_file_name(product.dataset, day)
    synth_session(path, symbol=symbol, day=day, **kw)
    return path
