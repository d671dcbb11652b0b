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
Everything goes through the DuckDB views of :mod:`vpbatch.sql`, with the symbol, day and time
window bound as parameters and pushed into the Parquet scans: only the states in the window (and
the one in force at its start) are read, aggregated in SQL to one state per column, and only the
grid rows of those states are fetched. Memory is bounded by ``columns x (2K+1)`` whatever the
length of the window.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb
import numpy as np

from vpbatch.book.dtypes import FIXED_PRICE_SCALE
from vpbatch.errors import ConfigError, InputError, OutputError
from vpbatch.lake import gold_partition
from vpbatch.products import NEW_YORK, Product, resolve_product
from vpbatch.sql import connect, execute
from vpbatch.writer import (
    CORE_TABLES,
    is_complete,
    list_partitions,
    read_manifest,
    write_file_atomic,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Time zone of the time axis and of ``--from``/``--to``.
ET: Final = NEW_YORK
#: Most time columns a heatmap is aggregated to.
MAX_COLUMNS: Final = 2000
#: Default picture size in pixels and resolution.
DEFAULT_WIDTH: Final = 1600
DEFAULT_HEIGHT: Final = 900
DEFAULT_DPI: Final = 100
#: Accepted picture sizes, pixels.
MIN_PIXELS: Final = 400
MAX_PIXELS: Final = 12_000
#: Output formats, by file suffix.
FORMATS: Final = (".png", ".svg", ".html")
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
#: Marker area (points²) of the largest trade dot.
MAX_DOT_AREA: Final = 60.0
#: Up to this many trade dots keep full size; beyond it they shrink with 1/sqrt(count).
DOTS_UNCROWDED: Final = 400

_NS: Final = 1_000_000_000
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(px|in)?\s*$", re.IGNORECASE)

#: States of one partition: count and first/last ``ts_event`` (epoch ns).
SPAN_SQL: Final = """
SELECT count(*) AS states,
       epoch_ns(min(ts_event)) AS first_ns,
       epoch_ns(max(ts_event)) AS last_ns
FROM vp_snapshot
WHERE symbol = $symbol AND dt = $dt
"""

#: States inside ``[$start, $end)``, and the state in force at ``$start`` (0: none).
WINDOW_SQL: Final = """
SELECT count(*) FILTER (WHERE ts_event >= $start::TIMESTAMPTZ_NS) AS states,
       coalesce(max(event_id) FILTER (WHERE ts_event < $start::TIMESTAMPTZ_NS), 0) AS asof_id
FROM vp_snapshot
WHERE symbol = $symbol AND dt = $dt AND ts_event < $end::TIMESTAMPTZ_NS
"""

#: One row per time column: the last state at or before the column's right edge (the state in
#: force at ``$start`` lands in column 0), with the column's own state count and volumes.
STATES_SQL: Final = """
WITH win AS (
    SELECT event_id, ts_event, spot_price, mid_price, best_bid_price, best_ask_price,
           CAST(regime AS VARCHAR) AS regime, n_records, buy_volume, sell_volume,
           ts_event >= $start::TIMESTAMPTZ_NS AS inside,
           greatest(0, (epoch_ns(ts_event) - $start_ns) // $bin_ns) AS col
    FROM vp_snapshot
    WHERE symbol = $symbol AND dt = $dt
      AND event_id >= $asof_id AND ts_event < $end::TIMESTAMPTZ_NS
),
per_col AS (
    SELECT col, max(event_id) AS event_id,
           count(*) FILTER (WHERE inside) AS states,
           coalesce(sum(n_records) FILTER (WHERE inside), 0) AS n_records,
           coalesce(sum(buy_volume) FILTER (WHERE inside), 0) AS buy_volume,
           coalesce(sum(sell_volume) FILTER (WHERE inside), 0) AS sell_volume
    FROM win
    GROUP BY col
)
SELECT p.col, p.states, p.n_records, p.buy_volume, p.sell_volume, w.event_id,
       epoch_ns(w.ts_event) AS ts_ns, w.spot_price, w.mid_price, w.best_bid_price,
       w.best_ask_price, w.regime
FROM per_col AS p JOIN win AS w USING (col, event_id)
ORDER BY p.col
"""

#: The grid cells of the chosen states (``$lo``/``$hi`` let Parquet skip row groups).
GRID_SQL: Final = """
SELECT event_id, k, price, rest_depth, pressure_now - vacuum_now AS net
FROM vp_grid
WHERE symbol = $symbol AND dt = $dt AND event_id BETWEEN $lo AND $hi
  AND event_id IN (SELECT unnest($ids))
ORDER BY event_id, k
"""

#: Trades (``mbp`` rows with action ``T``) in the window, summed per column, price and side.
TRADES_SQL: Final = """
SELECT (epoch_ns(ts_event) - $start_ns) // $bin_ns AS col, price, side,
       sum(size)::BIGINT AS volume, count(*) AS trades
FROM mbp
WHERE symbol = $symbol AND dt = $dt AND action = 'T' AND price IS NOT NULL
  AND ts_event >= $start::TIMESTAMPTZ_NS AND ts_event < $end::TIMESTAMPTZ_NS
GROUP BY ALL
ORDER BY col, price, side
"""


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


def parse_clock(text: str, param: str = "--from") -> dt.time | dt.datetime:
    """``'10:00'``, ``'10:00:30.5'`` (America/New_York on the partition's day) or a full
    ``'2026-02-05T20:00'`` (a naive one is America/New_York too).

    Raises
    ------
    ConfigError
        When ``text`` is neither.
    """
    value = str(text).strip()
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{param}: '{text}' is not a time; use HH:MM[:SS] (America/New_York) "
                          f"or YYYY-MM-DDTHH:MM") from None


def et_ns(day: dt.date, value: dt.time | dt.datetime) -> int:
    """UTC epoch nanoseconds of an America/New_York wall time on ``day`` (or a datetime)."""
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=ET)
    else:
        stamp = dt.datetime.combine(day, value.replace(tzinfo=None), tzinfo=ET)
    seconds = int(stamp.replace(microsecond=0).timestamp())
    return seconds * _NS + stamp.microsecond * 1000


def format_et(ns: int, day: dt.date | None = None, *, millis: bool = False) -> str:
    """``HH:MM:SS[.mmm]`` in America/New_York, with the date when it is not ``day``."""
    stamp = dt.datetime.fromtimestamp(ns // _NS, tz=ET) + dt.timedelta(microseconds=ns % _NS
                                                                         // 1000)
    text = stamp.strftime("%H:%M:%S")
    if millis:
        text += f".{stamp.microsecond // 1000:03d}"
    return text if stamp.date() == day else f"{stamp.date().isoformat()} {text}"


def ts_param(ns: int) -> str:
    """A UTC timestamp literal with nanoseconds, for ``$x::TIMESTAMPTZ_NS`` parameters.

    (An explicit ``+00`` keeps the value independent of DuckDB's ``TimeZone`` setting.)
    """
    stamp = dt.datetime.fromtimestamp(ns // _NS, tz=dt.UTC)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{ns % _NS:09d}+00"


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
# The partition and the window


@dataclass(frozen=True)
class Session:
    """One complete build of ``symbol``/``day`` in the lake, as the plots need it."""

    lake: Path
    product: Product
    day: dt.date
    K: int
    bucket: float
    tick: float
    states: int
    first_ns: int
    last_ns: int
    has_mbp: bool
    manifest: dict[str, Any] = field(repr=False, compare=False)

    @property
    def params(self) -> dict[str, Any]:
        """Bound parameters naming the partition."""
        return {"symbol": self.product.symbol, "dt": self.day}

    def span_text(self) -> str:
        """``09:30:00.045 – 10:29:59.984 ET`` (with dates when they are not ``day``)."""
        return (f"{format_et(self.first_ns, self.day, millis=True)} – "
                f"{format_et(self.last_ns, self.day, millis=True)} ET")


def _missing_partition(lake: Path, product: Product, day: dt.date) -> InputError:
    parts = list_partitions(lake, "vp_snapshot")
    days = sorted({p.dt for p in parts if p.symbol == product.symbol})
    if days:
        shown = ", ".join(days[-12:]) + (f" (+{len(days) - 12} more)" if len(days) > 12 else "")
        hint = f"built days of {product.symbol}: {shown}"
    else:
        symbols = sorted({p.symbol for p in parts})
        hint = (f"no builds of {product.symbol}; symbols built: {', '.join(symbols)}" if symbols
                else "the lake has no builds")
    return InputError(f"{lake}: no complete build of {product.symbol} for {day.isoformat()} "
                      f"({hint}); run `vpbatch build --symbol {product.symbol} "
                      f"--dt {day.isoformat()}`")


def open_session(con: duckdb.DuckDBPyConnection, lake: Path, symbol: str,
                 day: dt.date) -> Session:
    """The complete build of ``symbol``/``day`` (its manifest, K, bucket and time span).

    Raises
    ------
    InputError
        When there is no complete build (the message lists the days that exist), or it is empty.
    """
    lake = Path(lake)
    product = resolve_product(symbol)
    if not is_complete(lake, product, day, CORE_TABLES):
        raise _missing_partition(lake, product, day)
    manifest = read_manifest(gold_partition(lake, "vp_snapshot", product, day))
    config = manifest.get("config", {})
    params = manifest.get("parameters", {})
    span = execute(con, SPAN_SQL, {"symbol": product.symbol, "dt": day}).row(0, named=True)
    if not span["states"]:
        raise InputError(f"{product.symbol} {day.isoformat()}: the build has no states")
    bucket = params.get("bucket") or manifest.get("product", {}).get("bucket") or product.bucket
    return Session(
        lake=lake, product=product, day=day, K=int(config.get("K", 50)),
        bucket=int(bucket) / FIXED_PRICE_SCALE,
        tick=int(params.get("tick") or product.tick) / FIXED_PRICE_SCALE,
        states=int(span["states"]),
        first_ns=int(span["first_ns"]), last_ns=int(span["last_ns"]),
        has_mbp=is_complete(lake, product, day, (*CORE_TABLES, "mbp")), manifest=manifest,
    )


def resolve_window(session: Session, start: dt.time | dt.datetime | None,
                   end: dt.time | dt.datetime | None) -> tuple[int, int]:
    """``[start_ns, end_ns)`` of the requested window, cut to the partition's time span.

    ``None`` means the partition's first (last) state.

    Raises
    ------
    ConfigError
        When ``end`` is not after ``start``.
    InputError
        When the window lies outside the partition's time span.
    """
    lo = session.first_ns if start is None else et_ns(session.day, start)
    hi = session.last_ns + 1 if end is None else et_ns(session.day, end)
    if start is not None and end is not None and hi <= lo:
        raise ConfigError(f"--to ({format_et(hi, session.day)}) must be after --from "
                          f"({format_et(lo, session.day)}) (America/New_York)")
    cut_lo, cut_hi = max(lo, session.first_ns), min(hi, session.last_ns + 1)
    if cut_hi <= cut_lo:
        raise _empty_window(session, lo, hi)
    return cut_lo, cut_hi


def _empty_window(session: Session, lo: int, hi: int) -> InputError:
    return InputError(
        f"{session.product.symbol} {session.day.isoformat()}: no states between "
        f"{format_et(lo, session.day)} and {format_et(hi, session.day)} ET (the build covers "
        f"{session.span_text()}, {session.states:,} states)")


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class HeatmapData:
    """What one heatmap shows, on a grid of ``columns`` time columns of ``bin_ns`` each.

    Per column (``col_*``, length ``columns``): index of the state in force (-1: none yet), the
    number of states that fall in the column, and its buy/sell aggressor volume. Per chosen state
    (``state_*``, length S) and cell (``cell_*``, S x (2K+1)): snapshot values and grid values.
    """

    session: Session
    start_ns: int
    end_ns: int
    bin_ns: int
    columns: int
    states_in_window: int
    col_state: np.ndarray
    col_states: np.ndarray
    col_buy: np.ndarray
    col_sell: np.ndarray
    state_ts: np.ndarray
    state_mid: np.ndarray
    state_bid: np.ndarray
    state_ask: np.ndarray
    state_regime: np.ndarray
    cell_bucket: np.ndarray
    cell_depth: np.ndarray
    cell_net: np.ndarray
    trades: dict[str, np.ndarray] | None

    @property
    def edges_ns(self) -> np.ndarray:
        """Column edges, epoch ns (the last one is ``end_ns``)."""
        edges = self.start_ns + np.arange(self.columns + 1, dtype=np.int64) * self.bin_ns
        return np.minimum(edges, self.end_ns)

    def col_values(self, values: np.ndarray) -> np.ndarray:
        """A per-state array spread over the columns (NaN where no state is in force)."""
        out = np.full(self.columns, np.nan)
        ok = self.col_state >= 0
        out[ok] = values[self.col_state[ok]]
        return out


def _column_count(width: int) -> int:
    return int(min(MAX_COLUMNS, max(100, round(width * 0.8))))


def _forward_fill(index: np.ndarray) -> np.ndarray:
    """``[-1, 3, -1, -1, 5, -1] -> [-1, 3, 3, 3, 5, 5]``."""
    pos = np.where(index >= 0, np.arange(index.size), 0)
    np.maximum.accumulate(pos, out=pos)
    return index[pos]  # a leading gap keeps index[0] == -1


def load_heatmap(con: duckdb.DuckDBPyConnection, session: Session, start_ns: int, end_ns: int,
                 columns: int) -> HeatmapData:
    """Read the window ``[start_ns, end_ns)`` onto ``columns`` time columns (see module doc).

    Raises
    ------
    InputError
        When no state falls inside the window.
    """
    columns = max(1, min(int(columns), MAX_COLUMNS, end_ns - start_ns))
    bin_ns = max(1, -(-(end_ns - start_ns) // columns))
    bounds = {**session.params, "start": ts_param(start_ns), "end": ts_param(end_ns)}
    window = execute(con, WINDOW_SQL, bounds).row(0, named=True)
    if not window["states"]:
        raise _empty_window(session, start_ns, end_ns)
    states = execute(con, STATES_SQL, {**bounds, "start_ns": start_ns, "bin_ns": bin_ns,
                                       "asof_id": int(window["asof_id"])})
    ids = states["event_id"].to_numpy()
    grid = execute(con, GRID_SQL, {**session.params, "lo": int(ids.min()), "hi": int(ids.max()),
                                   "ids": ids.tolist()})
    width = 2 * session.K + 1
    row = np.searchsorted(ids, grid["event_id"].to_numpy())
    k = grid["k"].to_numpy().astype(np.int64) + session.K
    bucket = np.zeros((ids.size, width), dtype=np.int64)
    depth = np.zeros((ids.size, width))
    net = np.zeros((ids.size, width))
    bucket[row, k] = np.rint(grid["price"].to_numpy() / session.bucket).astype(np.int64)
    depth[row, k] = grid["rest_depth"].to_numpy()
    net[row, k] = grid["net"].to_numpy()

    col_state = np.full(columns, -1, dtype=np.int64)
    col = states["col"].to_numpy().astype(np.int64)
    col_state[col] = np.arange(ids.size)
    per_col = {name: np.zeros(columns) for name in ("states", "buy", "sell")}
    for name, source in (("states", "states"), ("buy", "buy_volume"), ("sell", "sell_volume")):
        per_col[name][col] = states[source].to_numpy()

    def floats(name: str) -> np.ndarray:
        return states[name].cast(float).fill_null(np.nan).to_numpy()

    trades = None
    if session.has_mbp:
        df = execute(con, TRADES_SQL, {**bounds, "start_ns": start_ns, "bin_ns": bin_ns})
        trades = {"col": df["col"].to_numpy().astype(np.int64),
                  "price": df["price"].to_numpy().astype(float),
                  "side": df["side"].to_numpy().astype(str),
                  "volume": df["volume"].to_numpy().astype(float)}
    return HeatmapData(
        session=session, start_ns=start_ns, end_ns=end_ns, bin_ns=bin_ns, columns=columns,
        states_in_window=int(window["states"]), col_state=_forward_fill(col_state),
        col_states=per_col["states"], col_buy=per_col["buy"], col_sell=per_col["sell"],
        state_ts=states["ts_ns"].to_numpy(), state_mid=floats("mid_price"),
        state_bid=floats("best_bid_price"), state_ask=floats("best_ask_price"),
        state_regime=states["regime"].to_numpy().astype(str), cell_bucket=bucket,
        cell_depth=depth, cell_net=net, trades=trades,
    )


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


def _net_cmap() -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("vpbatch_net", list(NET_COLORS), N=512)


def _brightness(depth: np.ndarray, limit: float) -> np.ndarray:
    level = np.clip(np.log1p(np.maximum(depth, 0)) / math.log1p(limit), 0.0, 1.0)
    return BRIGHTNESS_FLOOR + (1.0 - BRIGHTNESS_FLOOR) * level


def _cell_colors(data: HeatmapData, sc: Scales) -> np.ndarray:
    """RGB (S, 2K+1, 3) of every chosen cell: colour from the net force, brightness from depth."""
    cmap = _net_cmap()
    unit = np.clip(data.cell_net / sc.net_limit, -1.0, 1.0) * 0.5 + 0.5
    rgb = cmap(np.nan_to_num(unit, nan=0.5))[..., :3]
    return rgb * _brightness(data.cell_depth, sc.depth_limit)[..., None]


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
    seconds = ns / _NS
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
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=_net_cmap()), cax=caxes[0])
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
    grey = np.array(_net_cmap()(0.5)[:3]) * (BRIGHTNESS_FLOOR
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


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temp file + rename (parents are created).

    Raises
    ------
    OutputError
        When the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, payload)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def render_heatmap(data: HeatmapData, fmt: str, *, width: int = DEFAULT_WIDTH,
                   height: int = DEFAULT_HEIGHT, dpi: int = DEFAULT_DPI) -> bytes:
    """``.png``/``.svg``/``.html`` bytes of the heatmap."""
    fig = draw_heatmap(data, width=width, height=height, dpi=dpi)
    if fmt == ".svg":
        return figure_bytes(fig, "svg")
    png = figure_bytes(fig, "png")
    return html_page(data, png).encode() if fmt == ".html" else png


def plot_heatmap(lake: Path, symbol: str, day: dt.date, start: dt.time | dt.datetime | None,
                 end: dt.time | dt.datetime | None, out: Path, *, width: int = DEFAULT_WIDTH,
                 height: int = DEFAULT_HEIGHT, dpi: int = DEFAULT_DPI) -> Path:
    """Draw the vacuum/pressure heatmap of one built day over a time window.

    Parameters
    ----------
    lake : Path
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
    con = connect(Path(lake))
    try:
        session = open_session(con, Path(lake), symbol, day)
        start_ns, end_ns = resolve_window(session, start, end)
        data = load_heatmap(con, session, start_ns, end_ns, _column_count(width))
    finally:
        con.close()
    write_atomic(Path(out), render_heatmap(data, fmt, width=width, height=height, dpi=dpi))
    return Path(out)
