"""What a heatmap shows, read from the lake through DuckDB (no drawing, no matplotlib).

Everything goes through the DuckDB views of :mod:`vpbatch.sql`, with the symbol, day and time
window bound as parameters and pushed into the Parquet scans: only the states in the window (and
the one in force at its start) are read, aggregated in SQL to one state per column, and only the
grid rows of those states are fetched. Memory is bounded by ``columns x (2K+1)`` whatever the
length of the window.

The picture itself is drawn by :mod:`vpbatch.pictures.plot`; the one-page report reuses these
loaders.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np

from vpbatch.book.dtypes import FIXED_PRICE_SCALE
from vpbatch.clock import NS_PER_SECOND, et_ns, format_et
from vpbatch.errors import ConfigError, InputError
from vpbatch.products import Product, resolve_product
from vpbatch.sql import execute
from vpbatch.store.lake import CORE_TABLES
from vpbatch.store.partitions import (
    find_partition,
    is_complete,
    list_partitions,
    partition_manifest,
)

#: Most time columns a heatmap is aggregated to.
MAX_COLUMNS: Final = 2000

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


def ts_param(ns: int) -> str:
    """A UTC timestamp literal with nanoseconds, for ``$x::TIMESTAMPTZ_NS`` parameters.

    (An explicit ``+00`` keeps the value independent of DuckDB's ``TimeZone`` setting.)
    """
    stamp = dt.datetime.fromtimestamp(ns // NS_PER_SECOND, tz=dt.UTC)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{ns % NS_PER_SECOND:09d}+00"



# --------------------------------------------------------------------------------------------
# The partition and the window


@dataclass(frozen=True)
class Session:
    """One complete build of ``symbol``/``day`` in the lake, as the plots need it."""

    lake: Path | str
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


def _missing_partition(lake: Path | str, product: Product, day: dt.date) -> InputError:
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


def open_session(con: duckdb.DuckDBPyConnection, lake: Path | str, symbol: str,
                 day: dt.date) -> Session:
    """The complete build of ``symbol``/``day`` (its manifest, K, bucket and time span).

    Raises
    ------
    InputError
        When there is no complete build (the message lists the days that exist), or it is empty.
    """
    product = resolve_product(symbol)
    if not is_complete(lake, product, day, CORE_TABLES):
        raise _missing_partition(lake, product, day)
    part = find_partition(lake, "vp_snapshot", product.product_type, product.symbol,
                          day.isoformat())
    if part is None:  # pragma: no cover - is_complete found it a moment ago
        raise _missing_partition(lake, product, day)
    manifest = partition_manifest(part)
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


def column_count(width: int) -> int:
    """Time columns for a picture ``width`` pixels wide (about one per pixel)."""
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

