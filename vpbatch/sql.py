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
import polars as pl
import pyarrow as pa

from vpbatch.book.mbp_layout import DEFAULT_LEVELS
from vpbatch.config import EngineConfig, ForceCoefficients
from vpbatch.errors import VpbatchError
from vpbatch.store.lake import GOLD_TABLES
from vpbatch.store.partitions import Partition, list_partitions, read_manifest
from vpbatch.store.schema import (
    GRID_LAYOUT,
    GRID_STORED_FLOATS,
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


def _empty_table(schema: pa.Schema) -> pa.Table:
    fields = [pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
              for f in schema]
    fields += [pa.field("product_type", pa.string()), pa.field("symbol", pa.string()),
               pa.field("dt", pa.date32())]
    return pa.schema(fields).empty_table()


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


def _create_grid_view(con: duckdb.DuckDBPyConnection, partitions: Sequence[Partition]) -> None:
    """``vp_grid``: one SELECT per (layout, parameters) group of builds, UNION ALL."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for part in partitions:
        layout, params = grid_parameters(read_manifest(part.path))
        groups.setdefault((layout, tuple(params.items())), []).append(str(part.part_file))
    selects = []
    for i, ((layout, params), files) in enumerate(sorted(groups.items())):
        var = f"vpbatch_vp_grid_files_{i}"
        con.execute(SET_FILES_SQL.format(var=var), {"files": files})
        selects.append(grid_select(con, f"vpbatch_vp_grid_params_{i}", layout, dict(params),
                                   READ_TABLE_SQL.format(var=var),
                                   extra=("product_type", "symbol", "dt")))
    con.execute(CREATE_VIEW_SQL.format(temp="", name="vp_grid",
                                       select=" UNION ALL ".join(selects)))


def complete_files(lake: Path, table: str) -> list[str]:
    """Part files of every complete partition of ``table`` (sorted)."""
    return [str(p.part_file) for p in list_partitions(lake, table)]


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that spills to the system temp dir (not ``./.tmp``)."""
    con = duckdb.connect()
    con.execute(SET_TEMP_DIR_SQL, {"dir": str(Path(tempfile.gettempdir()) / "vpbatch-duckdb")})
    return con


def connect(lake: Path, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (see module docstring).

    Parameters
    ----------
    lake : Path
        Lake root (``lake/gold/<table>/...``); a lake without any build gives empty views.
    threads : int, optional
        DuckDB worker threads (default: DuckDB's own, one per core).

    Returns
    -------
    duckdb.DuckDBPyConnection
        With views ``vp_snapshot``, ``vp_grid``, ``mbp`` and ``vp``.
    """
    con = new_connection()
    if threads is not None:
        con.execute("SET threads = $n", {"n": int(threads)})
    for table in GOLD_TABLES:
        partitions = list_partitions(lake, table)
        files = [str(p.part_file) for p in partitions]
        var = f"vpbatch_{table}_files"
        if files and table == "vp_grid":
            _create_grid_view(con, partitions)
        elif files:
            con.execute(SET_FILES_SQL.format(var=var), {"files": files})
            con.execute(CREATE_TABLE_VIEW_SQL.format(name=table, var=var))
        else:
            source = f"vpbatch_empty_{table}"
            con.register(source, _empty_table(_schema(table)))
            con.execute(CREATE_EMPTY_VIEW_SQL.format(name=table, source=source))
    con.execute(CREATE_VP_VIEW_SQL)
    return con


def _error(exc: duckdb.Error) -> VpbatchError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return VpbatchError(f"sql: {message}")


def run_query(lake: Path, sql: str,
              params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
    """Run one query over the lake's views and return the result as a polars DataFrame.

    Parameters
    ----------
    lake : Path
        Lake root.
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
