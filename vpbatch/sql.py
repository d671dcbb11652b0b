"""DuckDB over the lake's gold tables (SPEC §1, §11).

:func:`connect` opens an in-memory DuckDB connection with one view per gold table and a join:

* ``vp_snapshot``, ``vp_grid``, ``mbp`` — the Parquet files of every *complete* partition
  (one with ``_SUCCESS``; a build in progress or a crashed one is never visible), read with
  ``hive_partitioning`` so ``product_type`` (VARCHAR), ``symbol`` (VARCHAR) and ``dt`` (DATE)
  are columns. A table with no complete partition is an empty view with the right columns.
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
from pathlib import Path
from typing import Any, Final

import duckdb
import polars as pl
import pyarrow as pa

from vpbatch.errors import VpbatchError
from vpbatch.lake import GOLD_TABLES
from vpbatch.mbp_layout import DEFAULT_LEVELS
from vpbatch.partitions import list_partitions
from vpbatch.schema import grid_schema, mbp_schema, snapshot_schema

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
        return grid_schema()
    return mbp_schema(DEFAULT_LEVELS)


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
        files = complete_files(lake, table)
        var = f"vpbatch_{table}_files"
        if files:
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
