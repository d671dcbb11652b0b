"""DuckDB over the lake's gold tables (SPEC §1, §11).

:func:`connect` opens an in-memory DuckDB connection with one view per gold table and a join:

* ``vp_snapshot``, ``vp_grid``, ``mbp`` — the Parquet files of every *complete* partition
  (one with ``_SUCCESS``; a build in progress or a crashed one is never visible), read with
  ``hive_partitioning`` so ``product_type`` (VARCHAR), ``symbol`` (VARCHAR) and ``dt`` (DATE)
  are columns. A table with no complete partition is an empty view with the right columns.
  ``vp_grid`` has the SPEC columns whatever the file layout: for lean files (docs/storage.md)
  ``rest_depth`` and the four forces are computed here (:data:`GRID_LEAN_SQL`), with each
  build's parameters from its manifest.
* ``vp`` — ``vp_snapshot JOIN vp_grid USING (product_type, symbol, dt, event_id)``: one row per
  grid cell with its state's snapshot columns.
* ``vp_features`` — one row per state with a valid, uncrossed book: the features of SPEC §15
  (:data:`FEATURES_SQL`; definitions in docs/fit.md). ``vpbatch.fit.features`` computes the same
  table about 14 times faster (a compiled pass over the grid instead of a SQL aggregation).

The file list is taken when the connection is opened; reconnect to see later builds. SQL text
lives in module constants; file lists are bound as parameters (``SET VARIABLE``), never pasted
into SQL.

Examples
--------
>>> from vpbatch.sql import connect, run_query  # doctest: +SKIP
>>> run_query("lake", "SELECT dt, count(*) FROM vp_snapshot GROUP BY dt")  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from vpbatch.book.mbp_layout import DEFAULT_LEVELS
from vpbatch.config import EngineConfig, ForceCoefficients
from vpbatch.errors import VpbatchError
from vpbatch.store.fs import Lake, open_lake
from vpbatch.store.lake import GOLD_TABLES
from vpbatch.store.partitions import (
    Partition,
    committed_partitions,
    list_partitions,
    partition_manifest,
)
from vpbatch.store.schema import (
    GRID_LAYOUT,
    GRID_STORED_FLOATS,
    arrow_array,
    arrow_strings,
    grid_view_schema,
    mbp_schema,
    snapshot_schema,
)

#: Hive partition columns and their SQL types.
HIVE_TYPES: Final = {"product_type": "VARCHAR", "symbol": "VARCHAR", "dt": "DATE"}

#: Where DuckDB spills large sorts and joins.
SET_TEMP_DIR_SQL: Final = "SET temp_directory = $dir"
#: Binds a list of files to a session variable (``$files``).
SET_FILES_SQL: Final = "SET VARIABLE {var} = $files"
#: A view over the files in a session variable; ``{name}``/``{var}`` are fixed identifiers.
CREATE_TABLE_VIEW_SQL: Final = (
    "CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet(getvariable('{var}'), "
    "hive_partitioning = true, union_by_name = true, "
    "hive_types = {{'product_type': VARCHAR, 'symbol': VARCHAR, 'dt': DATE}})"
)
#: An empty view with a table's columns (when no partition of it is complete).
CREATE_EMPTY_VIEW_SQL: Final = "CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}"
#: Binds a build's parameters (a STRUCT) to a session variable (``$params``).
SET_PARAMS_SQL: Final = "SET VARIABLE {var} = $params"
#: A SELECT over the Parquet files in a session variable (hive columns included).
READ_TABLE_SQL: Final = (
    "SELECT * FROM read_parquet(getvariable('{var}'), hive_partitioning = true, "
    "union_by_name = true, hive_types = {{'product_type': VARCHAR, 'symbol': VARCHAR, "
    "'dt': DATE}})"
)
#: A view from a SELECT built here (``{select}`` is SQL text of this module, never user input).
CREATE_VIEW_SQL: Final = "CREATE OR REPLACE {temp}VIEW {name} AS {select}"
#: SPEC §7-§8 as SQL macros, so the derived ``vp_grid`` columns read like the kernel
#: (:mod:`vpbatch.book.kernels`: ``pos``, ``alpha``, ``idle_chain``, ``forces``); ``c`` is the
#: build's parameters (a STRUCT bound as a session variable).
GRID_MACROS_SQL: Final = (
    "CREATE OR REPLACE MACRO vp_pos(x) AS CASE WHEN x > 0.0 THEN x ELSE 0.0::DOUBLE END",
    "CREATE OR REPLACE MACRO vp_alpha(dt, tau) AS "
    "CASE WHEN dt / tau > 50.0 THEN 1.0::DOUBLE ELSE 1.0 - exp(-(dt / tau)) END",
    "CREATE OR REPLACE MACRO vp_idle_v(av, v0) AS av * 0.0 + (1.0 - av) * v0",
    "CREATE OR REPLACE MACRO vp_idle_a(aa, av, v0, a0, dt) AS "
    "aa * (vp_idle_v(av, v0) - v0) / dt + (1.0 - aa) * a0",
    "CREATE OR REPLACE MACRO vp_pressure(c, v_add, a_add, v_rest) AS "
    "c.pressure_v_add * v_add + c.pressure_v_rest_pos * vp_pos(v_rest) "
    "+ c.pressure_a_add * vp_pos(a_add)",
    "CREATE OR REPLACE MACRO vp_vacuum(c, v_pull, a_pull, v_fill, v_rest) AS "
    "c.vacuum_v_pull * v_pull + c.vacuum_v_fill * v_fill + c.vacuum_v_rest_neg * vp_pos(-v_rest) "
    "+ c.vacuum_a_pull * vp_pos(a_pull)",
)
#: ``vp_grid`` of lean files (layout 2): stored floats widened to DOUBLE, ``rest_depth`` and the
#: forces computed (``*_now``: chains advanced without activity from ``last_ts`` to the state's
#: ``ts_event``, SPEC §8 as-of values). ``{source}``: a SELECT; ``{params}``: a variable name.
GRID_LEAN_SQL: Final = """
SELECT event_id, k, price, bid_depth, ask_depth, bid_depth + ask_depth AS rest_depth,
       {floats},
       vp_pressure(c, v_add, a_add, v_rest_depth) AS pressure,
       vp_vacuum(c, v_pull, a_pull, v_fill, v_rest_depth) AS vacuum,
       CASE WHEN age > 0 THEN vp_pressure(c, vp_idle_v(av, v_add),
                                          vp_idle_a(aa, av, v_add, a_add, age),
                                          vp_idle_v(av, v_rest_depth))
            ELSE vp_pressure(c, v_add, a_add, v_rest_depth) END AS pressure_now,
       CASE WHEN age > 0 THEN vp_vacuum(c, vp_idle_v(av, v_pull),
                                        vp_idle_a(aa, av, v_pull, a_pull, age),
                                        vp_idle_v(av, v_fill), vp_idle_v(av, v_rest_depth))
            ELSE vp_vacuum(c, v_pull, a_pull, v_fill, v_rest_depth) END AS vacuum_now,
       last_event_id, last_ts{extra}
FROM (SELECT *, vp_alpha(age, c.tau_v) AS av, vp_alpha(age, c.tau_a) AS aa
      FROM (SELECT event_id, k, price, bid_depth, ask_depth, {widen}, last_event_id, last_ts,
                   (epoch_ns(ts_event) - epoch_ns(last_ts)) / 1e9 AS age,
                   getvariable('{params}') AS c{extra}
            FROM ({source})))
"""
#: ``vp_grid`` of first-wave files (layout 1): every column stored.
GRID_STORED_SQL: Final = "SELECT {columns}{extra} FROM ({source})"
#: Snapshot columns beside each grid cell.
CREATE_VP_VIEW_SQL: Final = (
    "CREATE OR REPLACE VIEW vp AS SELECT * FROM vp_snapshot "
    "JOIN vp_grid USING (product_type, symbol, dt, event_id)"
)

#: Distance bands of the features (SPEC §15), in buckets from the mid: ``(first, last)``,
#: ``None`` = to the edge of the grid. A cell's distance is ``ceil(|price - mid| / bucket)``
#: (:data:`AT_MID`: a cell that close to the mid is neither above nor below).
FEATURE_BANDS: Final = ((1, 2), (3, 5), (6, 10), (11, 25), (26, None))
#: Per-cell quantities summed over the bands: the as-of forces and the four velocity chains
#: advanced idle to the state's time (``vp_idle_v``, as ``pressure_now`` reads them).
FEATURE_QUANTITIES: Final = ("pressure", "vacuum", "v_add", "v_pull", "v_fill", "v_rest_depth")
#: Sides of the mid.
FEATURE_SIDES: Final = ("above", "below")
#: ``|price - mid| / bucket`` below this is "at the mid" (guards float noise of non-binary ticks).
AT_MID: Final = 1e-6
#: Level-1 features (SPEC §13 signals) in table order.
L1_FEATURES: Final = ("queue_imbalance", "microprice", "ofi_1s", "ofi_5s", "ofi_10s")
#: The seed's regime outputs used as features.
REGIME_FEATURES: Final = ("regime_score", "regime_intensity")


def band_name(band: tuple[int, int | None]) -> str:
    """``1_2`` ... ``26_k``: the suffix of a band's feature names."""
    first, last = band
    return f"{first}_{'k' if last is None else last}"


#: Band-sum feature names: quantity-major, then side, then band.
BAND_FEATURES: Final = tuple(f"{q}_{side}_{band_name(b)}" for q in FEATURE_QUANTITIES
                             for side in FEATURE_SIDES for b in FEATURE_BANDS)
#: Every feature column of ``vp_features`` in order.
FEATURE_COLUMNS: Final = L1_FEATURES + REGIME_FEATURES + BAND_FEATURES


def _band_sum_sql(quantity: str, side: str, band: tuple[int, int | None]) -> str:
    first, last = band
    within = f"dist >= {first}" + ("" if last is None else f" AND dist <= {last}")
    up = "up" if side == "above" else "NOT up"
    return (f"coalesce(sum({quantity}) FILTER (WHERE {up} AND {within}), 0.0) "
            f"AS {quantity}_{side}_{band_name(band)}")


#: ``vp_features``: usable states (valid, uncrossed book: the exclusions of ``vpbatch
#: evaluate``), their level-1 signals (order-flow imbalance over the usable states of the
#: day, in ``(t - w, t]``, as evaluate computes it) and the band sums of their grid cells.
#: ``vpbatch_feature_params`` holds each build's bucket (price units) and ``tau_v``.
FEATURES_SQL: Final = """
WITH s AS (
  SELECT product_type, symbol, dt, event_id, ts_event, epoch_ns(ts_event) AS ts,
         best_bid_price AS b, best_ask_price AS a,
         CAST(best_bid_size AS DOUBLE) AS qb, CAST(best_ask_size AS DOUBLE) AS qa,
         (best_bid_price + best_ask_price) / 2.0 AS mid, regime_score, regime_intensity
  FROM vp_snapshot
  WHERE coalesce(book_valid, false) AND best_bid_price IS NOT NULL
    AND best_ask_price IS NOT NULL AND coalesce(best_bid_size, 0) > 0
    AND coalesce(best_ask_size, 0) > 0 AND NOT coalesce(crossed, false)
    AND best_bid_price < best_ask_price
), e AS (
  SELECT *, CASE WHEN lag(b) OVER w IS NULL THEN 0.0 ELSE
      (CASE WHEN b >= lag(b) OVER w THEN qb ELSE 0.0 END)
      - (CASE WHEN b <= lag(b) OVER w THEN lag(qb) OVER w ELSE 0.0 END)
      - (CASE WHEN a <= lag(a) OVER w THEN qa ELSE 0.0 END)
      + (CASE WHEN a >= lag(a) OVER w THEN lag(qa) OVER w ELSE 0.0 END) END AS ofi_e
  FROM s WINDOW w AS (PARTITION BY product_type, symbol, dt ORDER BY event_id)
), c AS (
  SELECT *, sum(ofi_e) OVER (PARTITION BY product_type, symbol, dt ORDER BY event_id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_e,
         ts - 1000000000 AS ts_1s, ts - 5000000000 AS ts_5s, ts - 10000000000 AS ts_10s
  FROM e
), at_ts AS (
  SELECT product_type, symbol, dt, ts, arg_max(cum_e, event_id) AS cum_e
  FROM c GROUP BY product_type, symbol, dt, ts
), l1 AS (
  SELECT c.product_type, c.symbol, c.dt, c.event_id, c.ts_event, c.ts, c.mid,
         (c.qb - c.qa) / (c.qb + c.qa) AS queue_imbalance,
         (c.a * c.qb + c.b * c.qa) / (c.qb + c.qa) - c.mid AS microprice,
         c.cum_e - coalesce(t1.cum_e, 0.0) AS ofi_1s,
         c.cum_e - coalesce(t5.cum_e, 0.0) AS ofi_5s,
         c.cum_e - coalesce(t10.cum_e, 0.0) AS ofi_10s,
         c.regime_score, c.regime_intensity
  FROM c
  ASOF LEFT JOIN at_ts t1 ON c.product_type = t1.product_type AND c.symbol = t1.symbol
    AND c.dt = t1.dt AND c.ts_1s >= t1.ts
  ASOF LEFT JOIN at_ts t5 ON c.product_type = t5.product_type AND c.symbol = t5.symbol
    AND c.dt = t5.dt AND c.ts_5s >= t5.ts
  ASOF LEFT JOIN at_ts t10 ON c.product_type = t10.product_type AND c.symbol = t10.symbol
    AND c.dt = t10.dt AND c.ts_10s >= t10.ts
), cells AS (
  SELECT l1.product_type, l1.symbol, l1.dt, l1.event_id, g.price > l1.mid AS up,
         CAST(ceil(abs(g.price - l1.mid) / p.bucket - {at_mid}) AS INTEGER) AS dist,
         g.pressure_now AS pressure, g.vacuum_now AS vacuum,
         vp_alpha((l1.ts - epoch_ns(g.last_ts)) / 1e9, p.tau_v) AS av,
         vp_idle_v(av, g.v_add) AS v_add, vp_idle_v(av, g.v_pull) AS v_pull,
         vp_idle_v(av, g.v_fill) AS v_fill, vp_idle_v(av, g.v_rest_depth) AS v_rest_depth
  FROM l1 JOIN vp_grid g USING (product_type, symbol, dt, event_id)
  JOIN vpbatch_feature_params p USING (product_type, symbol, dt)
  WHERE abs(g.price - l1.mid) / p.bucket >= {at_mid}
), bands AS (
  SELECT product_type, symbol, dt, event_id,
         {band_sums}
  FROM cells GROUP BY product_type, symbol, dt, event_id
)
SELECT l1.product_type, l1.symbol, l1.dt, l1.event_id, l1.ts_event,
       {l1_columns}, {band_columns}
FROM l1 LEFT JOIN bands USING (product_type, symbol, dt, event_id)
""".format(
    at_mid=repr(AT_MID),
    band_sums=",\n         ".join(_band_sum_sql(q, side, b) for q in FEATURE_QUANTITIES
                                   for side in FEATURE_SIDES for b in FEATURE_BANDS),
    l1_columns=", ".join(f"l1.{name}" for name in L1_FEATURES + REGIME_FEATURES),
    band_columns=", ".join(f"coalesce(bands.{name}, 0.0) AS {name}" for name in BAND_FEATURES))
#: The per-build parameters of ``vp_features`` (one row per ``vp_grid`` partition, columns
#: ``product_type, symbol, dt`` and :data:`FEATURE_PARAM_NAMES`).
FEATURE_PARAMS_TABLE: Final = "vpbatch_feature_params"
#: Bucket (price units), the chains' time constants and the force coefficients.
FEATURE_PARAM_NAMES: Final = ("bucket", "tau_v", "tau_a",
                              *sorted(asdict(ForceCoefficients())))


def _empty_table(schema: pa.Schema) -> pa.Table:
    fields = [pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
              for f in schema]
    fields += [pa.field("product_type", pa.string()), pa.field("symbol", pa.string()),
               pa.field("dt", pa.date32())]
    # Schema.empty_table imports pandas (0.2 s of every `vpbatch sql`); no batches is the same.
    return pa.Table.from_batches([], schema=pa.schema(fields))


def _schema(table: str) -> pa.Schema:
    if table == "vp_snapshot":
        return snapshot_schema()
    if table == "vp_grid":
        return grid_view_schema()
    return mbp_schema(DEFAULT_LEVELS)


def grid_parameters(manifest: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """(file layout, parameters of the derived columns) of one ``vp_grid`` build."""
    layout = int((manifest.get("writer") or {}).get("grid_layout", 1))
    config = {**EngineConfig().to_dict(), **(manifest.get("config") or {})}
    forces = {**asdict(ForceCoefficients()), **(config.get("forces") or {})}
    params = {"tau_v": float(config["tau_v"]), "tau_a": float(config["tau_a"])}
    params.update({name: float(value) for name, value in sorted(forces.items())})
    return layout, params


def grid_select(con: duckdb.DuckDBPyConnection, var: str, layout: int,
                params: Mapping[str, float], source: str, extra: Sequence[str] = ()) -> str:
    """A SELECT with ``vp_grid``'s view columns over ``source`` (a SELECT of stored files).

    Binds ``params`` to the session variable ``var`` and creates the SPEC macros. ``extra``
    columns of ``source`` (hive columns, ``file_row_number``) are passed through.
    """
    more = "".join(f", {name}" for name in extra)
    if layout == 1:
        return GRID_STORED_SQL.format(columns=", ".join(grid_view_schema().names), extra=more,
                                      source=source)
    if layout != GRID_LAYOUT:
        raise VpbatchError(f"vp_grid: file layout {layout} is newer than this vpbatch "
                           f"(knows 1-{GRID_LAYOUT}); upgrade vpbatch")
    for statement in GRID_MACROS_SQL:
        con.execute(statement)
    con.execute(SET_PARAMS_SQL.format(var=var), {"params": dict(params)})
    return GRID_LEAN_SQL.format(
        floats=", ".join(GRID_STORED_FLOATS), params=var, extra=more, source=source,
        widen=", ".join(f"CAST({n} AS DOUBLE) AS {n}" for n in GRID_STORED_FLOATS))


def feature_parameters(manifest: Mapping[str, Any]) -> dict[str, float] | None:
    """What ``vp_features`` needs from one build's manifest: the bucket (price units) and the
    derived columns' parameters (:func:`grid_parameters`); None without a bucket size."""
    _, params = grid_parameters(manifest)
    product = manifest.get("product") or {}
    bucket = product.get("bucket") or (manifest.get("parameters") or {}).get("bucket")
    if not bucket:
        return None
    return {"bucket": int(bucket) / 1e9, **params}


def _feature_params_table(builds: Sequence[tuple[Partition, Mapping[str, Any]]]) -> pa.Table:
    """One row per ``vp_grid`` build with a known bucket (a build without one has no features)."""
    rows = [(part, params) for part, manifest in builds
            if (params := feature_parameters(manifest)) is not None]
    # Built from numpy, not Python lists: pa.array of a list imports pandas (0.26 s of `sql`).
    days = np.array([p.dt for p, _ in rows], dtype="datetime64[D]").astype(np.int32)
    columns = {
        "product_type": arrow_strings([p.product_type for p, _ in rows]),
        "symbol": arrow_strings([p.symbol for p, _ in rows]),
        "dt": arrow_array(days, pa.int32()).cast(pa.date32()),
        **{name: arrow_array(np.array([params[name] for _, params in rows], np.float64),
                             pa.float64()) for name in FEATURE_PARAM_NAMES},
    }
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def _create_grid_view(con: duckdb.DuckDBPyConnection, partitions: Sequence[Partition]
                      ) -> list[tuple[Partition, dict[str, Any]]]:
    """``vp_grid``: one SELECT per (layout, parameters) group of builds, UNION ALL.

    Returns each partition with its manifest (``vp_features`` takes its parameters from them).
    """
    groups: dict[tuple[Any, ...], list[str]] = {}
    manifests = []
    for part in partitions:
        manifest = partition_manifest(part)
        manifests.append((part, manifest))
        layout, params = grid_parameters(manifest)
        groups.setdefault((layout, tuple(params.items())), []).append(part.part_url)
    selects = []
    for i, ((layout, params), files) in enumerate(sorted(groups.items())):
        var = f"vpbatch_vp_grid_files_{i}"
        con.execute(SET_FILES_SQL.format(var=var), {"files": files})
        selects.append(grid_select(con, f"vpbatch_vp_grid_params_{i}", layout, dict(params),
                                   READ_TABLE_SQL.format(var=var),
                                   extra=("product_type", "symbol", "dt")))
    con.execute(CREATE_VIEW_SQL.format(temp="", name="vp_grid",
                                       select=" UNION ALL ".join(selects)))
    return manifests


def complete_files(lake: Path | str | Lake, table: str) -> list[str]:
    """Part files of every complete partition of ``table`` (sorted; paths or URLs)."""
    return [p.part_url for p in list_partitions(lake, table)]


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that spills to the system temp dir (not ``./.tmp``)."""
    con = duckdb.connect()
    con.execute(SET_TEMP_DIR_SQL, {"dir": str(Path(tempfile.gettempdir()) / "vpbatch-duckdb")})
    return con


def connect(lake: Path | str | Lake, *,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (see module docstring).

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root (``lake/gold/<table>/...``); a lake without any build gives empty views.
        On an object store (``s3://bucket/prefix``) DuckDB reads the objects with range
        requests through the lake's registered filesystem (:meth:`vpbatch.store.fs.Lake.attach`).
    threads : int, optional
        DuckDB worker threads (default: DuckDB's own, one per core).

    Returns
    -------
    duckdb.DuckDBPyConnection
        With views ``vp_snapshot``, ``vp_grid``, ``mbp``, ``vp`` and ``vp_features``.
    """
    store = open_lake(lake)
    store.check()
    built = committed_partitions(store, GOLD_TABLES)
    con = new_connection()
    store.attach(con)
    if threads is not None:
        con.execute("SET threads = $n", {"n": int(threads)})
    grid_builds: list[tuple[Partition, dict[str, Any]]] = []
    for table in GOLD_TABLES:
        partitions = built[table]
        files = [p.part_url for p in partitions]
        var = f"vpbatch_{table}_files"
        if files and table == "vp_grid":
            grid_builds = _create_grid_view(con, partitions)
        elif files:
            con.execute(SET_FILES_SQL.format(var=var), {"files": files})
            con.execute(CREATE_TABLE_VIEW_SQL.format(name=table, var=var))
        else:
            source = f"vpbatch_empty_{table}"
            con.register(source, _empty_table(_schema(table)))
            con.execute(CREATE_EMPTY_VIEW_SQL.format(name=table, source=source))
    con.execute(CREATE_VP_VIEW_SQL)
    for statement in GRID_MACROS_SQL:
        con.execute(statement)
    con.register(FEATURE_PARAMS_TABLE, _feature_params_table(grid_builds))
    con.execute(CREATE_VIEW_SQL.format(temp="", name="vp_features", select=FEATURES_SQL))
    return con


def _error(exc: duckdb.Error) -> VpbatchError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return VpbatchError(f"sql: {message}")


def run_query(lake: Path | str | Lake, sql: str,
              params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
    """Run one query over the lake's views and return the result as a polars DataFrame.

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root (a folder or an object-store URL).
    sql : str
        A query (its last statement's result is returned).
    params : sequence or mapping, optional
        Values for ``?``/``$name`` placeholders.

    Raises
    ------
    VpbatchError
        With DuckDB's message when the query fails.
    """
    con = connect(lake)
    try:
        return execute(con, sql, params)
    finally:
        con.close()


def execute(con: duckdb.DuckDBPyConnection, sql: str,
            params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
    """Run ``sql`` on an open connection; an empty DataFrame for statements without rows."""
    try:
        rel = con.sql(sql, params=params)
        return pl.DataFrame() if rel is None else rel.pl()
    except duckdb.Error as exc:
        raise _error(exc) from None


def relation(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation | None:
    """``con.sql(sql)`` with DuckDB errors as :class:`VpbatchError` (None: no result set)."""
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        raise _error(exc) from None
