"""The flow model's parameters, measured on real GLBX.MDP3 MBO files (see ``docs/synth.md``).

Event mix, the probabilities that shape each event kind, the bursty clock and the order-size
tables. Plain constants: the numba kernels read them as compile-time values.
"""

from __future__ import annotations

from typing import Final

import numpy as np

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

# Order-size tables: bucket [lo, hi] with cumulative probability (``rng.draw_table``).
FAST_LO: Final = np.array([1, 2, 3, 4, 5, 6, 10, 11, 21, 51], np.int64)
FAST_HI: Final = np.array([1, 2, 3, 4, 5, 9, 10, 20, 50, 200], np.int64)
FAST_CUM: Final = np.array([.58, .78, .86, .91, .94, .97, .985, .997, .9995, 1.0])
SLOW_LO: Final = FAST_LO
SLOW_HI: Final = FAST_HI
SLOW_CUM: Final = np.array([.35, .55, .65, .72, .80, .88, .94, .985, .998, 1.0])
TRADE_LO: Final = np.array([1, 2, 3, 4, 5, 6, 10, 11, 21], np.int64)
TRADE_HI: Final = np.array([1, 2, 3, 4, 5, 9, 10, 20, 50], np.int64)
TRADE_CUM: Final = np.array([.55, .72, .80, .86, .90, .95, .97, .995, 1.0])

# How the ordinary flow follows the latent fair value x (fair - mid, ticks): ``state.flow``
# indexes FLOWS. ``depth`` (the default stream): fast add and cancel weights tilt by
# 1 +- 0.25 x, the wrong side's touch is pulled or re-quoted one or more ticks behind, the
# aggressor follows x. ``touch``: the add, cancel and modify flow is the same on both sides
# whatever x, and x acts only through what the level-1 book shows: extra joins at (or inside)
# the touch on the side x points to, extra pulls of the wrong side's touch, the aggressor.
FLOWS: Final = ("depth", "touch")
REACT_JOIN: Final = 0.08      # touch flow: weight per tick of |x| of a join on x's side
REACT_PULL: Final = 0.15      # ... of a pull of the wrong side's touch, per tick of |x| - 0.5
RECENTER_GROUPS: Final = 6    # ... groups after a fair-value jump that re-quote around it

#: Indicative prices (currency units) per futures root; equities default to 500.
START_PRICES: Final = {
    "ES": 6000.0, "MES": 6000.0, "NQ": 21500.0, "MNQ": 21500.0, "GC": 2650.0,
    "SI": 31.0, "CL": 72.0, "6E": 1.085,
}
