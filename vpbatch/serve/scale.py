"""The colour scale of ``vpbatch plot``, exported once for the live page.

The page fetches :func:`color_scale` as JSON (``/v1/vacuum-pressure/scale.json``) and builds
the same diverging palette, limits and brightness rule from it, so a frame in the browser and
a picture from ``vpbatch plot`` agree on what a colour means.
"""

from __future__ import annotations

from typing import Any

from vpbatch.pictures import plot


def color_scale() -> dict[str, Any]:
    """Palette, limits rule and line/dot/regime colours of the heatmap (JSON-ready)."""
    return {
        "quantity": "pressure_now - vacuum_now",
        "net_colors": list(plot.NET_COLORS),
        "net_percentile": plot.NET_PERCENTILE,
        "depth_percentile": plot.DEPTH_PERCENTILE,
        "brightness_floor": plot.BRIGHTNESS_FLOOR,
        "lut_size": 512,
        "background": plot.BACKGROUND,
        "regime_colors": dict(plot.REGIME_COLORS),
        "bid_color": plot.BID_COLOR,
        "ask_color": plot.ASK_COLOR,
        "mid_color": plot.MID_COLOR,
        "buy_color": plot.BUY_COLOR,
        "sell_color": plot.SELL_COLOR,
    }
