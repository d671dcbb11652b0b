"""The simulator's state: the book's level and order pools, and one typed record of scalars.

Everything the kernel mutates lives in a :class:`Simulation`, a NamedTuple of numpy arrays
built by :func:`new_simulation` (numba takes it as one argument). The book is explicit:

* ``levels``: ``int64[LV_ROWS, 2 * NLEV]``, column ``side * NLEV + level``; a level is a
  FIFO queue of orders (a doubly linked list through the order pool) with its order count and
  resting size. Levels are ticks relative to ``state.base_tick``.
* ``orders``: ``int64[OD_ROWS, MAXO]``, column = order slot; ``order_ids[slot]`` is its id.
* ``free``: a stack of free slots, ``state.n_free`` on it.
* ``dense`` / ``n_dense``: per side x class (``side * 2 + cls``, class 0 = fast near-touch
  liquidity, 1 = slow resting book) the live slots packed, for O(1) uniform picks.
* ``recent``: per side, a ring of the last ``RECENT`` fast adds (flickering cancels).
* ``state``: one :data:`STATE_DTYPE` record (shape ``(1,)``) of named scalars. Kernels take
  ``st = sim.state[0]``, a view, and read and write ``st.best_bid``, ``st.fair``, ...
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import numpy as np

#: Price levels per side (ticks around the start price); the fair value stays EDGE inside.
NLEV: Final = 1 << 15
#: Order slots (live orders at most).
MAXO: Final = 1 << 17
#: Fast adds remembered per side for flickering cancels.
RECENT: Final = 64
#: Fills per trade event at most.
MAX_FILLS: Final = 250
#: A trade event writes at most MAX_FILLS * 2 + levels + 1 records; chunks keep this slack.
MAX_GROUP: Final = 2 * MAX_FILLS + 64
#: The fair value reflects off this many ticks from either end of the level array.
EDGE: Final = 2_000

# Level-pool rows: levels[row, side * NLEV + level].
LV_HEAD: Final = 0    # first (oldest) order slot of the queue, -1 if empty
LV_TAIL: Final = 1    # last (newest) order slot, -1 if empty
LV_COUNT: Final = 2   # orders queued
LV_DEPTH: Final = 3   # resting size
LV_ROWS: Final = 4

# Order-pool rows: orders[row, slot].
OD_PREV: Final = 0       # previous slot in the level queue, -1 at the head
OD_NEXT: Final = 1       # next slot in the level queue, -1 at the tail
OD_LEVEL: Final = 2      # price level (ticks over base_tick)
OD_SIZE: Final = 3
OD_SIDE: Final = 4       # 0 bid, 1 ask
OD_CLASS: Final = 5      # 0 fast (near the touch), 1 slow (resting book)
OD_DENSE_POS: Final = 6  # position in dense[side * 2 + class]
OD_TS: Final = 7         # ts_event of the last add/modify (snapshot order and timestamps)
OD_SEQ: Final = 8        # sequence of the last add/modify
OD_ALIVE: Final = 9      # 1 while the order rests
OD_ROWS: Final = 10

#: The simulator's scalars, one record. Levels are ticks over ``base_tick``; times are ns
#: since the epoch unless noted.
STATE_DTYPE: Final = np.dtype(
    [
        # Book
        ("best_bid", "<i8"),          # best bid level, -1 when the side is empty
        ("best_ask", "<i8"),          # best ask level, NLEV when the side is empty
        ("n_free", "<i8"),            # free order slots (height of the ``free`` stack)
        ("recent_pos", "<i8", (2,)),  # per side: fast adds written to the ``recent`` ring
        ("tick", "<i8"),              # fixed-point price of one tick
        ("base_tick", "<i8"),         # price of level 0, in ticks
        ("fast_target", "<i8"),       # fast orders per side the flow steers towards
        ("slow_target", "<i8"),       # slow orders per side the flow steers towards
        # Stream
        ("order_id", "<i8"),          # last order id handed out
        ("sequence", "<i8"),          # last sequence number
        ("last_ts", "<i8"),           # last ts_event (strictly increasing)
        ("last_recv", "<i8"),         # last ts_recv (never decreasing)
        ("emit", "?"),                # write records (False: the silent burn-in)
        ("budget", "<i8"),            # live records to write in all
        ("written", "<i8"),           # live records written
        ("groups", "<i8"),            # event groups simulated
        ("children", "<i8"),          # of which burst children (wall-clock gaps)
        ("excite", "<i8"),            # groups left with the excited (post-trade) child rate
        # Clock
        ("day0", "<i8"),              # 00:00 UTC of the day
        ("t", "<f8"),                 # clock, seconds since day0
        ("rate_scale", "<f8"),        # parent events per unit of session intensity
        ("h_target", "<f8"),          # cumulative intensity the live part aims to end at
        ("h_min", "<f8"),             # floor of the intensity left (keeps the rate finite)
        ("burn_t0", "<i8"),           # burn-in clock: start and step
        ("burn_dt", "<i8"),
        # Latent fair value (ticks over base_tick): random walk with trend episodes
        ("fair", "<f8"),
        ("sigma", "<f8"),             # std of one group's step
        ("drift", "<f8"),             # drift per group of a trend episode
        ("p_trend_switch", "<f8"),    # chance per group of drawing a new trend
        ("trend", "<i8"),             # -1, 0, +1
        ("flow", "<i8"),              # how the flow follows it: index into model.FLOWS
        ("recenter", "<i8"),          # touch flow: groups left to re-quote around a jump
        # Planted signal (informed.py)
        ("informed", "<f8"),          # share of groups inside informed episodes (0 = off)
        ("jump_mode", "<i8"),         # index into INFORMED_JUMPS
        ("episode_left", "<i8"),      # groups left in the current episode (0 = idle)
        ("episode_dir", "<i8"),       # the episode's direction, +1 up / -1 down
        ("episode_jump", "<i8"),      # direction of the jump that ends it (0 = none)
    ],
    align=True,
)

#: What a kernel holds for ``Simulation.state[0]``: a numba record view (fields by name).
Record = Any


class Simulation(NamedTuple):
    """All mutable simulator state (see the module docstring for the layout)."""

    levels: np.ndarray      # int64[LV_ROWS, 2 * NLEV]
    orders: np.ndarray      # int64[OD_ROWS, MAXO]
    order_ids: np.ndarray   # uint64[MAXO]
    free: np.ndarray        # int64[MAXO], free slots on top
    dense: np.ndarray       # int64[4, MAXO]
    n_dense: np.ndarray     # int64[4]
    recent: np.ndarray      # int64[2, RECENT], -1 = none
    state: np.ndarray       # STATE_DTYPE, shape (1,)
    rng: np.ndarray         # uint64[4]: the generator of the flow
    rng2: np.ndarray        # uint64[8]: the planted signal's (episodes; placebo jump coins)


def new_simulation(seed_words: np.ndarray, informed: float = 0.0,
                   informed_words: np.ndarray | None = None, jump_mode: int = 0,
                   flow: int = 0) -> Simulation:
    """An empty book (both sides empty, every slot free) with seeded generators; ``flow``
    indexes ``model.FLOWS`` (0 = ``depth``, the default stream)."""
    levels = np.zeros((LV_ROWS, 2 * NLEV), np.int64)
    levels[LV_HEAD] = -1
    levels[LV_TAIL] = -1
    state = np.zeros(1, STATE_DTYPE)
    st = state[0]
    st["n_free"] = MAXO
    st["best_bid"] = -1
    st["best_ask"] = NLEV
    st["informed"] = informed
    st["jump_mode"] = jump_mode
    st["flow"] = flow
    return Simulation(
        levels=levels,
        orders=np.zeros((OD_ROWS, MAXO), np.int64),
        order_ids=np.zeros(MAXO, np.uint64),
        free=np.arange(MAXO - 1, -1, -1, dtype=np.int64),
        dense=np.zeros((4, MAXO), np.int64),
        n_dense=np.zeros(4, np.int64),
        recent=np.full((2, RECENT), -1, np.int64),
        state=state,
        rng=seed_words.astype(np.uint64),
        # Words 0-3: the episodes and their activity; words 4-7: the placebo's jump coins.
        rng2=(np.ones(8, np.uint64) if informed_words is None
              else informed_words.astype(np.uint64)),
    )
