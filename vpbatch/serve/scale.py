"""The colour scale of ``vpbatch plot``, exported once for the live page.

The page fetches :func:`color_scale` as JSON (``/v1/vacuum-pressure/scale.json``) and builds
the same diverging palette, limits and brightness rule from it, so a frame in the browser and
a picture from ``vpbatch plot`` agree on what a colour means.
"""

from __future__ import annotations

from typing import Any

from vpbatch.pictures import palette


def color_scale() -> dict[str, Any]:
    """Palette, limits rule and line/dot/regime colours of the heatmap (JSON-ready)."""
    return {
        "quantity": "pressure_now - vacuum_now",
        "net_colors": list(palette.NET_COLORS),
        "net_percentile": palette.NET_PERCENTILE,
        "depth_percentile": palette.DEPTH_PERCENTILE,
        "brightness_floor": palette.BRIGHTNESS_FLOOR,
        "lut_size": 512,
        "background": palette.BACKGROUND,
        "regime_colors": dict(palette.REGIME_COLORS),
        "bid_color": palette.BID_COLOR,
        "ask_color": palette.ASK_COLOR,
        "mid_color": palette.MID_COLOR,
        "buy_color": palette.BUY_COLOR,
        "sell_color": palette.SELL_COLOR,
    }
