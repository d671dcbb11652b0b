"""Heatmap of a built vacuum/pressure grid over a time window (optional extra ``plot``).

Picture
-------
* x: time, linear, America/New_York. Each emitted state holds from its ``ts_event`` until the
  next state's; the window is cut into a fixed grid of at most :data:`MAX_COLUMNS` columns (about
  one per pixel) and a column shows the **last** state at or before its right edge (trailing edge,
  as ``--sample``), so a column without a state of its own repeats the previous one.
* y: absolute price. A state's 2K+1 cells sit at their ``price`` (the bucket centre,
  spot bucket + k), one image row per bucket, so the window follows spot up and down.
* colour: ``pressure_now - vacuum_now`` on a diverging map, blue = vacuum (liquidity draining),
  orange = pressure (liquidity building), grey = balanced. One symmetric normalisation for the
  whole picture: ``±`` the :data:`NET_PERCENTILE` th percentile of the non-zero ``|value|`` in
  view (stated in the colour bar label); larger values are clipped.
* brightness: ``log(1 + rest_depth)`` scaled to the 99th percentile of the depth in view, from
  :data:`BRIGHTNESS_FLOOR` (empty bucket) to 1, so resting liquidity glows and a drained bucket
  is dim. Outside the grid (farther than K buckets from spot) is the dark background.
* lines: best bid (green), best ask (red), mid (white dashes).
* dots: trades, area proportional to volume, white = buy aggressor, magenta = sell aggressor
  (light blue: no aggressor side) — from the ``mbp`` table's ``T`` rows when the build wrote it,
  otherwise each column's ``buy_volume``/``sell_volume`` from ``vp_snapshot`` drawn at the mid.
* band under the chart: the regime (UP green, DOWN red, CHOP grey).

Reading
-------
:mod:`vpbatch.pictures.plot_data` loads the window through DuckDB (bounded memory, see there); this
module only draws it.

matplotlib is imported lazily inside the drawing functions; without it,
:func:`require_matplotlib` raises a :class:`~vpbatch.errors.ConfigError` that says
``pip install vpbatch[plot]``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vpbatch.clock import NEW_YORK, NS_PER_SECOND, format_et
from vpbatch.errors import ConfigError
from vpbatch.pictures.palette import (
    ASK_COLOR,
    BACKGROUND,
    BID_COLOR,
    BRIGHTNESS_FLOOR,
    BUY_COLOR,
    DEPTH_PERCENTILE,
    MID_COLOR,
    NET_PERCENTILE,
    NO_SIDE_COLOR,
    REGIME_COLORS,
    SELL_COLOR,
    brightness,
    net_cmap,
)
from vpbatch.store.files import save_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vpbatch.pictures.plot_data import HeatmapData

#: Time zone of the time axis and of ``--from``/``--to``.
ET: Final = NEW_YORK
#: Default picture size in pixels and resolution.
DEFAULT_WIDTH: Final = 1600
DEFAULT_HEIGHT: Final = 900
DEFAULT_DPI: Final = 100
#: Accepted picture sizes, pixels.
MIN_PIXELS: Final = 400
MAX_PIXELS: Final = 12_000
#: Output formats, by file suffix.
FORMATS: Final = (".png", ".svg", ".html")
#: Marker area (points²) of the largest trade dot.
MAX_DOT_AREA: Final = 60.0
#: Up to this many trade dots keep full size; beyond it they shrink with 1/sqrt(count).
DOTS_UNCROWDED: Final = 400

_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(px|in)?\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Parameters


def require_matplotlib() -> None:
    """Raise :class:`ConfigError` when matplotlib (the ``plot`` extra) is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plotting needs matplotlib, which is not installed; "
                          "run `pip install vpbatch[plot]`") from None


def parse_size(text: str | float, dpi: int, param: str = "--width") -> int:
    """A picture dimension in pixels: ``1600``, ``'1600px'`` or ``'16in'`` (x ``dpi``).

    Raises
    ------
    ConfigError
        When ``text`` is not such a size, or is outside 200-12000 pixels.
    """
    match = _SIZE_RE.match(str(text))
    if match is None:
        raise ConfigError(f"{param}: '{text}' is not a size; use pixels (1600, 1600px) "
                          f"or inches (16in)")
    value = float(match.group(1))
    pixels = round(value * dpi) if (match.group(2) or "").lower() == "in" else round(value)
    if not MIN_PIXELS <= pixels <= MAX_PIXELS:
        raise ConfigError(f"{param}: '{text}' is {pixels} px; use {MIN_PIXELS}-{MAX_PIXELS} px")
    return pixels


def output_format(out: Path) -> str:
    """``.png``/``.svg``/``.html`` from the file name.

    Raises
    ------
    ConfigError
        For any other suffix.
    """
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"-o: '{out}' has no known picture suffix; use one of "
                          f"{', '.join(FORMATS)}")
    return suffix


# --------------------------------------------------------------------------------------------
# Drawing


@dataclass(frozen=True)
class Scales:
    """The picture's one colour normalisation and its brightness scale."""

    net_limit: float
    depth_limit: float


def scales(data: HeatmapData) -> Scales:
    """Colour limit and full-brightness depth from the cells in view (module doc)."""
    used = np.unique(data.col_state[data.col_state >= 0])
    net = np.abs(data.cell_net[used]).ravel()
    net = net[np.isfinite(net) & (net > 0)]
    depth = data.cell_depth[used].ravel()
    depth = depth[depth > 0]
    net_limit = float(np.percentile(net, NET_PERCENTILE)) if net.size else 1.0
    depth_limit = float(np.percentile(depth, DEPTH_PERCENTILE)) if depth.size else 1.0
    return Scales(net_limit=net_limit if net_limit > 0 else 1.0,
                  depth_limit=max(depth_limit, 1.0))


def _cell_colors(data: HeatmapData, sc: Scales) -> np.ndarray:
    """RGB (S, 2K+1, 3) of every chosen cell: colour from the net force, brightness from depth."""
    cmap = net_cmap()
    unit = np.clip(data.cell_net / sc.net_limit, -1.0, 1.0) * 0.5 + 0.5
    rgb = cmap(np.nan_to_num(unit, nan=0.5))[..., :3]
    return rgb * brightness(data.cell_depth, sc.depth_limit)[..., None]


@dataclass(frozen=True)
class Raster:
    """The heatmap image and the buckets it covers.

    ``image`` is RGBA, one row per absolute bucket from ``b_lo`` (bottom) to ``b_hi``, one column
    per time column; ``active_lo``/``active_hi`` bound the buckets where some cell in view has
    depth or a non-zero force.
    """

    image: np.ndarray
    b_lo: int
    b_hi: int
    active_lo: int
    active_hi: int


def heatmap_image(data: HeatmapData, sc: Scales) -> Raster:
    """Rasterise the chosen states onto (absolute bucket x time column)."""
    used = data.col_state >= 0
    states = np.unique(data.col_state[used])
    buckets = data.cell_bucket[states]
    b_lo, b_hi = int(buckets.min()), int(buckets.max())
    image = np.zeros((b_hi - b_lo + 1, data.columns, 4))
    cols = np.flatnonzero(used)
    state = data.col_state[cols]
    rows = data.cell_bucket[state] - b_lo
    image[rows, cols[:, None], :3] = _cell_colors(data, sc)[state]
    image[rows, cols[:, None], 3] = 1.0
    live = (data.cell_depth[states] > 0) | (data.cell_net[states] != 0)
    if live.any():
        active_lo, active_hi = int(buckets[live].min()), int(buckets[live].max())
    else:
        active_lo, active_hi = b_lo, b_hi
    return Raster(image, b_lo, b_hi, active_lo, active_hi)


def price_limits(data: HeatmapData, raster: Raster) -> tuple[float, float, bool]:
    """y limits: the buckets with depth or force (and the best prices), plus a margin.

    Returns the limits and whether empty buckets were cut off.
    """
    bucket = data.session.bucket
    lo, hi = raster.active_lo, raster.active_hi
    quotes = np.concatenate([data.state_bid, data.state_ask])
    quotes = quotes[np.isfinite(quotes)]
    if quotes.size:
        lo = min(lo, int(np.floor(quotes.min() / bucket + 0.5)))
        hi = max(hi, int(np.floor(quotes.max() / bucket + 0.5)))
    margin = max(2, (hi - lo) // 30)
    lo, hi = max(raster.b_lo, lo - margin), min(raster.b_hi, hi + margin)
    cropped = lo > raster.b_lo or hi < raster.b_hi
    return (lo - 0.5) * bucket, (hi + 0.5) * bucket, cropped


def _dates(ns: np.ndarray) -> np.ndarray:
    from matplotlib import dates as mdates

    return np.asarray(mdates.date2num(np.asarray(ns, dtype="datetime64[ns]")))


def _steps(ax: Any, x: np.ndarray, y: np.ndarray, **kw: Any) -> None:
    ax.plot(x, np.append(y, y[-1]), drawstyle="steps-post", **kw)


def _dot_area(volume: np.ndarray, ref: float) -> np.ndarray:
    return np.clip(MAX_DOT_AREA * volume / ref, 4.0, MAX_DOT_AREA)


def _trade_groups(data: HeatmapData) -> list[tuple[str, str, np.ndarray, np.ndarray,
                                                     np.ndarray]]:
    """``(label, colour, column, price, volume)`` per aggressor side that has trades."""
    if data.trades is not None:
        t = data.trades
        ok = (t["col"] >= 0) & (t["col"] < data.columns)
        col, price, side, vol = t["col"][ok], t["price"][ok], t["side"][ok], t["volume"][ok]
        sides = (("B", "buy trades", BUY_COLOR), ("A", "sell trades", SELL_COLOR),
                 ("N", "trades, no side", NO_SIDE_COLOR))
        groups = [(label, color, col[side == code], price[side == code], vol[side == code])
                  for code, label, color in sides]
        return [g for g in groups if g[2].size or g[0] != "trades, no side"]
    mid = data.col_values(data.state_mid)
    cols = np.arange(data.columns)
    out = []
    for label, color, volume in (("buy volume at mid", BUY_COLOR, data.col_buy),
                                 ("sell volume at mid", SELL_COLOR, data.col_sell)):
        has = (volume > 0) & np.isfinite(mid)
        out.append((label, color, cols[has], mid[has], volume[has]))
    return out


def _draw_trades(ax: Any, data: HeatmapData, xc: np.ndarray) -> tuple[list[Any], float]:
    """Trade dots; returns legend handles and the volume of the largest dot."""
    from matplotlib.lines import Line2D

    groups = _trade_groups(data)
    volumes = np.concatenate([g[4] for g in groups])
    ref = max(float(np.percentile(volumes, 99)) if volumes.size else 1.0, 1.0)
    # Many dots get smaller and more transparent, so they do not bury the grid.
    crowd = min(1.0, math.sqrt(DOTS_UNCROWDED / max(volumes.size, 1)))
    handles = []
    for label, color, col, price, volume in groups:
        if col.size:
            ax.scatter(xc[col], price, s=_dot_area(volume, ref) * max(crowd, 0.25), c=color,
                       edgecolors="#000000", linewidths=0.3 * crowd,
                       alpha=0.55 + 0.35 * crowd, zorder=4)
        handles.append(Line2D([], [], ls="", marker="o", mfc=color, mec="#000000", ms=6,
                              label=label))
    return handles, ref


def _regime_strip(data: HeatmapData) -> np.ndarray:
    from matplotlib.colors import to_rgba

    strip = np.zeros((1, data.columns, 4))
    ok = data.col_state >= 0
    names = data.state_regime[data.col_state[ok]]
    strip[0, ok] = np.array([to_rgba(REGIME_COLORS.get(n, REGIME_COLORS["CHOP"])) for n in names])
    return strip


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)) or text


def time_formatter(locator: Any) -> Any:
    """America/New_York tick labels: ``09:35``, or ``10:01:15`` for sub-minute ticks (no offset
    text: the date goes into the axis label, see :func:`time_label`)."""
    from matplotlib import dates as mdates

    fmt = mdates.ConciseDateFormatter(
        locator, tz=ET,
        formats=["%Y", "%b", "%d", "%H:%M", "%H:%M", "%H:%M:%S.%f"],
        zero_formats=["", "%Y", "%b", "%b %d", "%H:%M", "%H:%M:%S.%f"],
        offset_formats=["", "", "", "", "", ""],
    )
    return fmt


def time_label(start_ns: int, end_ns: int) -> str:
    """``time (America/New_York, 2026-02-06)`` (two dates when the window spans midnight)."""
    first = format_et(start_ns).split(" ")[0]
    last = format_et(max(start_ns, end_ns - 1)).split(" ")[0]
    return f"time (America/New_York, {first if first == last else first + ' – ' + last})"


def _price_formatter(bucket: float) -> Any:
    from matplotlib.ticker import FuncFormatter

    digits = max(0, min(6, -math.floor(math.log10(bucket)) + 1)) if bucket < 1 else 0
    return FuncFormatter(lambda v, _pos: f"{v:,.{digits}f}")


def _fmt_span(ns: int) -> str:
    seconds = ns / NS_PER_SECOND
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms"


def title_text(data: HeatmapData) -> str:
    """``MNQH6 · 2026-02-06 · 10:00:00 – 10:05:00 ET``."""
    s = data.session
    return (f"{s.product.symbol} · {s.day.isoformat()} · {format_et(data.start_ns, s.day)} – "
            f"{format_et(data.end_ns, s.day)} ET")


def subtitle_text(data: HeatmapData) -> str:
    """States, columns, K and bucket, trade source."""
    s = data.session
    source = "trades from mbp" if s.has_mbp else "aggressor volume from vp_snapshot (no mbp)"
    return (f"{data.states_in_window:,} states · {data.columns:,} columns of "
            f"{_fmt_span(data.bin_ns)} (last state per column) · K={s.K}, "
            f"bucket {s.bucket:g} · {source}")


@dataclass(frozen=True)
class _Style:
    """Text sizes for one picture size: font (points), characters that fit across the heatmap
    and along a colour bar, and whether the picture is too narrow for two colour bars."""

    font: float
    across: int
    along: int
    compact: bool
    axes_px: float
    dpi: int

    @classmethod
    def of(cls, width: int, height: int, dpi: int) -> _Style:
        font = max(7.0, min(11.0, 9.5 * min(width / 1600, height / 900) ** 0.5))
        char_px = font * 0.85 * dpi / 72 * 0.56
        compact = width * 72 / dpi < 540
        # Width of the heatmap axes: the figure minus labels and colour bars (estimated).
        axes_px = width - (200 if compact else 260) * dpi / 100
        return cls(font=font, across=max(20, int(width * 0.75 / char_px)),
                   along=max(16, int(height * 0.7 / char_px)), compact=compact,
                   axes_px=max(axes_px, 100.0), dpi=dpi)


def _draw_colorbars(fig: Figure, caxes: list[Any], sc: Scales, st: _Style) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    norm = Normalize(-sc.net_limit, sc.net_limit)
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=net_cmap()), cax=caxes[0])
    label = (f"pressure − vacuum (±{sc.net_limit:.3g})" if st.compact else
             f"pressure_now − vacuum_now  (clipped at ±{sc.net_limit:.3g} "
             f"= p{NET_PERCENTILE:g} of |value|)")
    cb.set_label(_wrap(label, st.along), fontsize=st.font * 0.85)
    cb.ax.tick_params(labelsize=st.font * 0.8)
    for y, word, va in ((1.005, "pressure", "bottom"), (-0.005, "vacuum", "top")):
        cb.ax.text(0.5, y, word, transform=cb.ax.transAxes, ha="center", va=va,
                   fontsize=st.font * 0.75, color="#444444")
    if len(caxes) < 2:
        return
    levels = np.linspace(0, 1, 256)
    grey = np.array(net_cmap()(0.5)[:3]) * (BRIGHTNESS_FLOOR
                                            + (1 - BRIGHTNESS_FLOOR) * levels)[:, None]
    depth_norm = Normalize(0, math.log1p(sc.depth_limit))
    cbd = fig.colorbar(ScalarMappable(norm=depth_norm, cmap=ListedColormap(grey)), cax=caxes[1])
    ticks = [d for d in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10_000, 30_000, 100_000)
             if d <= sc.depth_limit]
    cbd.set_ticks([math.log1p(d) for d in ticks], labels=[f"{d:,}" for d in ticks])
    cbd.set_label(_wrap(f"rest_depth, brightness = log(1 + depth)  (full at "
                        f"{sc.depth_limit:,.0f})", st.along), fontsize=st.font * 0.85)
    cbd.ax.tick_params(labelsize=st.font * 0.8)


def _draw_band(band: Any, data: HeatmapData, x0: float, x1: float, st: _Style) -> None:
    from matplotlib import dates as mdates

    band.imshow(_regime_strip(data), aspect="auto", interpolation="nearest",
                extent=(x0, x1, 0, 1))
    band.set_facecolor(BACKGROUND)
    band.set_yticks([])
    band.set_ylabel("regime", rotation=0, ha="right", va="center", fontsize=st.font * 0.85)
    locator = mdates.AutoDateLocator(tz=ET, minticks=2, maxticks=max(4, min(12, st.across // 16)))
    band.xaxis.set_major_locator(locator)
    band.xaxis.set_major_formatter(time_formatter(locator))
    band.tick_params(labelsize=st.font * 0.9)
    band.set_xlabel(time_label(data.start_ns, data.end_ns), fontsize=st.font)


def _draw_legend(ax: Any, trade_handles: list[Any], ref: float, st: _Style) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color=BID_COLOR, lw=1.2, label="best bid"),
        Line2D([], [], color=ASK_COLOR, lw=1.2, label="best ask"),
        Line2D([], [], color=MID_COLOR, lw=1.0, ls=(0, (3, 2)), label="mid"),
        *trade_handles,
        *(Patch(color=c, label=n) for n, c in REGIME_COLORS.items()),
    ]
    longest = max(len(str(h.get_label())) for h in handles) + 5
    ncols = max(2, min(len(handles), int(st.axes_px / (longest * st.font * 0.8 * st.dpi / 72
                                                        * 0.55))))
    leg = ax.legend(handles=handles, loc="upper left", ncols=ncols, fontsize=st.font * 0.8,
                    frameon=True, framealpha=0.75, facecolor="#202228", edgecolor="#202228",
                    labelcolor="#f0f0f0", handlelength=1.6, columnspacing=1.2,
                    borderaxespad=0.3)
    leg.set_zorder(6)
    ax.text(0.995, 0.01, f"dot area ∝ volume (largest = {ref:,.0f}+)", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=st.font * 0.75, color="#d0d0d0", zorder=6)


def draw_heatmap(data: HeatmapData, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                 dpi: int = DEFAULT_DPI) -> Figure:
    """The heatmap figure (not saved) for :func:`load_heatmap`'s data, ``width x height`` px."""
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    s = data.session
    sc = scales(data)
    st = _Style.of(width, height, dpi)
    raster = heatmap_image(data, sc)
    edges = _dates(data.edges_ns)
    x0, x1 = float(edges[0]), float(edges[-1])
    y0, y1, cropped = price_limits(data, raster)

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi,
                 layout=ConstrainedLayoutEngine(w_pad=0.04, h_pad=0.04, hspace=0.01,
                                                wspace=0.01))
    bars = 1 if st.compact else 2
    gs = fig.add_gridspec(2, 1 + bars, width_ratios=[1] + [0.014] * bars,
                          height_ratios=[1, 0.035])
    ax = fig.add_subplot(gs[0, 0])
    band = fig.add_subplot(gs[1, 0], sharex=ax)

    ax.set_facecolor(BACKGROUND)
    ax.imshow(raster.image, origin="lower", aspect="auto", interpolation="nearest",
              extent=(x0, x1, (raster.b_lo - 0.5) * s.bucket, (raster.b_hi + 0.5) * s.bucket),
              zorder=1)
    for values, color, style in ((data.state_bid, BID_COLOR, "-"),
                                 (data.state_ask, ASK_COLOR, "-"),
                                 (data.state_mid, MID_COLOR, (0, (3, 2)))):
        _steps(ax, edges, data.col_values(values), color=color, ls=style,
               lw=0.7 if color == MID_COLOR else 0.9, zorder=3)
    trade_handles, ref = _draw_trades(ax, data, (edges[:-1] + edges[1:]) / 2)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.yaxis.set_major_formatter(_price_formatter(s.bucket))
    ax.set_ylabel("price", fontsize=st.font)
    ax.tick_params(labelsize=st.font * 0.9, labelbottom=False)
    note = " · price axis cut to buckets with depth or force" if cropped else ""
    ax.set_title(_wrap(subtitle_text(data) + note, st.across), fontsize=st.font * 0.85,
                 loc="left", color="#444444")
    fig.suptitle(title_text(data), fontsize=st.font * 1.35, x=0.01, ha="left",
                 fontweight="bold")
    _draw_band(band, data, x0, x1, st)
    _draw_colorbars(fig, [fig.add_subplot(gs[0, 1 + i]) for i in range(bars)], sc, st)
    _draw_legend(ax, trade_handles, ref, st)
    return fig


# --------------------------------------------------------------------------------------------
# Output


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure as ``png`` or ``svg`` bytes, at its own size and dpi (text kept as text)."""
    from matplotlib import rc_context

    buf = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "vpbatch"}):
        fig.savefig(buf, format=fmt, dpi=fig.dpi, metadata=_metadata(fmt))
    return buf.getvalue()


def _metadata(fmt: str) -> dict[str, Any]:
    # No creation dates, so the same data gives the same file.
    if fmt == "svg":
        return {"Date": None}
    if fmt == "png":
        return {"Software": "vpbatch"}
    return {}


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d1f24; background: #fafafa; }}
h1 {{ font-size: 1.3rem; margin: 0 0 4px 0; }}
p.meta {{ color: #555; margin: 0 0 12px 0; font-size: 0.9rem; }}
img {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}
p.howto {{ max-width: 70rem; font-size: 0.9rem; color: #333; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="meta">{meta}</p>
<img alt="{alt}" src="{src}">
<p class="howto">{howto}</p>
</body>
</html>
"""

#: One paragraph on how to read the picture (HTML page, report, walkthrough).
HOW_TO_READ: Final = (
    "Time runs left to right (America/New_York); each column is the last state in force. Each "
    "state's 2K+1 buckets are drawn at their absolute price, so the grid moves with spot. "
    "Orange = pressure (liquidity building: support below the mid, resistance above it), "
    "blue = vacuum (liquidity draining: a clear path for price). Brightness = resting depth: "
    "dark cells are empty buckets. Lines: best bid (green), best ask (red), mid (white dashes); "
    "dots: trades (white = buy aggressor, magenta = sell aggressor). The band underneath is the "
    "regime: UP green, DOWN red, CHOP grey."
)


def html_page(data: HeatmapData, png: bytes) -> str:
    """A standalone HTML page around the PNG (no scripts, no external files)."""
    title = title_text(data)
    return _PAGE.format(title=html.escape(title), meta=html.escape(subtitle_text(data)),
                        alt=html.escape(f"vacuum/pressure heatmap, {title}"), src=data_uri(png),
                        howto=html.escape(HOW_TO_READ))


def render_heatmap(data: HeatmapData, fmt: str, *, width: int = DEFAULT_WIDTH,
                   height: int = DEFAULT_HEIGHT, dpi: int = DEFAULT_DPI) -> bytes:
    """``.png``/``.svg``/``.html`` bytes of the heatmap."""
    fig = draw_heatmap(data, width=width, height=height, dpi=dpi)
    if fmt == ".svg":
        return figure_bytes(fig, "svg")
    png = figure_bytes(fig, "png")
    return html_page(data, png).encode() if fmt == ".html" else png


def plot_heatmap(lake: Path | str, symbol: str, day: dt.date, start: dt.time | dt.datetime | None,
                 end: dt.time | dt.datetime | None, out: Path, *, width: int = DEFAULT_WIDTH,
                 height: int = DEFAULT_HEIGHT, dpi: int = DEFAULT_DPI) -> Path:
    """Draw the vacuum/pressure heatmap of one built day over a time window.

    Parameters
    ----------
    lake : Path or str
        Lake root holding a complete build of ``symbol``/``day``.
    symbol : str
        Contract or ticker as built (``MNQH6``, ``GOOG``).
    day : datetime.date
        The build's ``dt``.
    start, end : datetime.time or datetime.datetime or None
        Window ``[start, end)``, America/New_York wall times on ``day`` (a naive datetime is
        America/New_York too); None = the build's first (last) state. Cut to the build's span.
    out : Path
        Output file; ``.png``, ``.svg`` or ``.html`` (a page embedding the PNG).
    width, height : int, default 1600 x 900
        Picture size in pixels.
    dpi : int, default 100
        Resolution (sets the text size relative to the picture).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        No complete build of ``symbol``/``day``, or no state in the window.
    ConfigError
        A bad window, size or suffix, or matplotlib is not installed.
    OutputError
        ``out`` cannot be written.
    """
    fmt = output_format(out)
    if not (MIN_PIXELS <= width <= MAX_PIXELS and MIN_PIXELS <= height <= MAX_PIXELS):
        raise ConfigError(f"size: {width}x{height} px; use {MIN_PIXELS}-{MAX_PIXELS} px a side")
    if not 10 <= dpi <= 1000:
        raise ConfigError(f"--dpi: {dpi}; use 10-1000")
    require_matplotlib()
    from vpbatch.pictures.plot_data import column_count, load_heatmap, open_session, resolve_window
    from vpbatch.sql import connect

    con = connect(lake)
    try:
        session = open_session(con, lake, symbol, day)
        start_ns, end_ns = resolve_window(session, start, end)
        data = load_heatmap(con, session, start_ns, end_ns, column_count(width))
    finally:
        con.close()
    save_output(Path(out), render_heatmap(data, fmt, width=width, height=height, dpi=dpi))
    return Path(out)
