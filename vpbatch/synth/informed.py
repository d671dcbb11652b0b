"""The planted signal (``informed > 0``, numba): informed episodes.

An episode lasts INFORMED_EPISODE event groups with a direction drawn at its start; in each of
its groups, with probability INFORMED_ACT, the informed trader pulls an order 1..INFORMED_DEPTH
ticks beyond the touch on the side price is about to move into (vacuum ahead of the move) or
adds one 1..INFORMED_DEPTH ticks behind the touch on the other side (pressure behind it), never
at the touch itself. When the episode ends the fair value jumps INFORMED_JUMP ticks in its
direction, and the ordinary flow carries the mid there. Episodes start at a rate that puts
about ``informed`` of the event groups inside one. All planted randomness comes from a second
generator (``Simulation.rng2``), so ``informed = 0`` is the unplanted stream exactly.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba.extending import register_jitable

from vpbatch.synth.rng import randint, u01
from vpbatch.synth.state import LV_COUNT, LV_TAIL, NLEV, Record

#: Event groups per informed episode.
INFORMED_EPISODE: Final = 40
#: Chance of an informed action in each group of an episode.
INFORMED_ACT: Final = 0.6
#: The fair value's jump (ticks) at the end of an episode.
INFORMED_JUMP: Final = 3.0
#: ... in whole ticks (the touch flow re-quotes the levels it leaves empty).
INFORMED_JUMP_TICKS: Final = 3
#: Informed orders act 1..INFORMED_DEPTH ticks away from the touch (where the regime looks).
INFORMED_DEPTH: Final = 10
#: Share of informed actions that pull liquidity (the rest add on the other side).
INFORMED_PULL_SHARE: Final = 0.6
#: How the fair-value jump at the end of an episode relates to the episode's activity:
#: ``aligned`` (the planted signal: the jump goes the way the activity points), ``random``
#: (the placebo: same episodes, same activity, the jump's direction a fair coin of its own),
#: ``none`` (the activity is not followed by any jump). ``state.jump_mode`` indexes this.
INFORMED_JUMPS: Final = ("aligned", "random", "none")


@register_jitable(no_cfunc_wrapper=True)
def informed_step(st: Record, rng2: np.ndarray) -> float:
    """Advance the informed episode by one group; the fair-value jump (ticks) it releases."""
    if st.episode_left == 0:
        # Idle for 1/p groups on average, then busy for INFORMED_EPISODE: a busy share of
        # E p / (E p + 1), which is ``informed`` for this p.
        share = st.informed
        p = 1.0 if share >= 1.0 else share / (INFORMED_EPISODE * (1.0 - share))
        if u01(rng2) < p:
            st.episode_left = INFORMED_EPISODE
            st.episode_dir = 1 if u01(rng2) < 0.5 else -1
            mode = st.jump_mode
            if mode == 0:
                st.episode_jump = st.episode_dir
            elif mode == 1:
                # Placebo: an independent coin from a generator of its own, so the episodes
                # (drawn from rng2's first four words) are the planted day's.
                st.episode_jump = 1 if u01(rng2[4:]) < 0.5 else -1
            else:
                st.episode_jump = 0
        return 0.0
    st.episode_left -= 1
    return INFORMED_JUMP * st.episode_jump if st.episode_left == 0 else 0.0


@register_jitable(no_cfunc_wrapper=True)
def informed_pull(lv: np.ndarray, side: int, best: int, rng2: np.ndarray) -> int:
    """The order an informed trader pulls: the newest at a level drawn 1..INFORMED_DEPTH ticks
    beyond the touch on ``side`` (the nearest non-empty level towards the touch; the touch only
    when all of them are empty)."""
    step = -1 if side == 0 else 1
    lvl = best + step * (1 + randint(rng2, INFORMED_DEPTH))
    while lvl != best and lv[LV_COUNT, side * NLEV + lvl] == 0:
        lvl -= step
    return lv[LV_TAIL, side * NLEV + lvl]


@register_jitable(no_cfunc_wrapper=True)
def informed_kind(kind: int, up: bool, nfb: int, nsb: int, nfa: int, nsa: int, room: bool,
                  rng2: np.ndarray) -> tuple[int, bool]:
    """The informed action as an event kind (4/5 fast cancel bid/ask, 0/1 fast add bid/ask)
    and True, or the ordinary ``kind`` and False when the book has no room for it."""
    if u01(rng2) < INFORMED_PULL_SHARE:
        if up and nfa > 0 and nfa + nsa > 10:
            return 5, True
        if not up and nfb > 0 and nfb + nsb > 10:
            return 4, True
        return kind, False
    if not room:
        return kind, False
    return (0 if up else 1), True
