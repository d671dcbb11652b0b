"""The heatmap's colours, shared by ``vpbatch plot``, the report and the live page.

One place for what a colour means: :mod:`vpbatch.pictures.plot` draws with it and
:mod:`vpbatch.serve.scale` exports it to the browser, which rebuilds the same palette.
Importing this module costs no matplotlib (only :func:`net_cmap` loads it).
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

#: Colour limit: this percentile of the non-zero ``|pressure_now - vacuum_now|`` in view.
NET_PERCENTILE: Final = 99.0
#: Depth that gives full brightness: this percentile of the non-zero ``rest_depth`` in view.
DEPTH_PERCENTILE: Final = 99.0
#: Brightness of an empty bucket (full depth = 1).
BRIGHTNESS_FLOOR: Final = 0.28
#: Diverging colours from most vacuum to most pressure (the middle one is "balanced").
NET_COLORS: Final = ("#46d5ff", "#2f74db", "#6e6e6e", "#e2812a", "#ffd447")
#: Outside the grid.
BACKGROUND: Final = "#0b0c10"
#: Regime band colours.
REGIME_COLORS: Final = {"UP": "#2e9e44", "DOWN": "#d1332e", "CHOP": "#a0a0a0"}
BID_COLOR: Final = "#4be070"
ASK_COLOR: Final = "#ff5a5a"
MID_COLOR: Final = "#ffffff"
BUY_COLOR: Final = "#ffffff"
SELL_COLOR: Final = "#ff4fd8"
NO_SIDE_COLOR: Final = "#9fe7ff"


def net_cmap() -> Any:
    """The diverging colour map of ``pressure_now - vacuum_now`` (512 steps of NET_COLORS)."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("vpbatch_net", list(NET_COLORS), N=512)


def brightness(depth: np.ndarray, limit: float) -> np.ndarray:
    """Cell brightness from resting depth: log scale from BRIGHTNESS_FLOOR to 1 at ``limit``."""
    level = np.clip(np.log1p(np.maximum(depth, 0)) / math.log1p(limit), 0.0, 1.0)
    return BRIGHTNESS_FLOOR + (1.0 - BRIGHTNESS_FLOOR) * level
