"""``vpbatch sql``: DuckDB SQL over the lake's gold tables."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import TextIO

import click

from cli.options import lake_option
from vpbatch.errors import VpbatchError

FORMATS = ("table", "csv", "json")
_QUIT = {".quit", ".exit", "\\q", "quit", "exit"}


def _render(con: object, query: str, fmt: str, max_rows: int) -> str:
    """Run ``query`` and format its result; '' for statements without a result set."""
    import duckdb

    from vpbatch.sql import execute, relation

    if fmt == "table":
        rel = relation(con, query)  # type: ignore[arg-type]
        if rel is None:
            return ""
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                rel.show(max_rows=max_rows, max_width=10_000)
        except duckdb.Error as exc:  # runtime errors surface inside show()
            raise VpbatchError(f"sql: {str(exc).strip().splitlines()[0]}") from None
        return buf.getvalue().rstrip("\n")
    df = execute(con, query)  # type: ignore[arg-type]
    if df.width == 0:
        return ""
    if fmt == "csv":
        return df.write_csv().rstrip("\n")
    return df.write_json()


def _statements(stream: TextIO, prompt: bool) -> list[str] | None:
    """Read one ';'-terminated statement (lines joined); None at end of input or on quit."""
    lines: list[str] = []
    while True:
        if prompt:
            click.echo("vpbatch> " if not lines else "    ...> ", nl=False, err=True)
        line = stream.readline()
        if not line:
            rest = " ".join(lines).strip()
            return [rest] if rest else None
        text = line.strip()
        if not lines and text.lower().rstrip(";") in _QUIT:
            return None
        if text:
            lines.append(text)
        if text.endswith(";"):
            return [" ".join(lines)]


@click.command("sql")
@click.argument("query", required=False)
@lake_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format of the result.")
@click.option("--max-rows", type=click.IntRange(min=1), default=40, show_default=True,
              help="Rows shown by --format table (csv/json print everything).")
def command(query: str | None, lake: Path, fmt: str, max_rows: int) -> None:
    """Run DuckDB SQL over the lake: views vp_snapshot, vp_grid, mbp, vp (their join) and
    vp_features (the SPEC §15 features per state).

    Hive partitions are columns: product_type, symbol, dt. Only complete builds are
    visible. Without QUERY, read ';'-terminated statements from stdin (an interactive shell
    on a terminal; .quit to leave).

    \b
    Example:
        vpbatch sql "SELECT dt, count(*) AS states FROM vp_snapshot GROUP BY dt"
        vpbatch sql --format csv "SELECT * FROM vp WHERE symbol = 'MNQH6' AND k = 0" > spot.csv
        echo "SELECT regime, count(*) FROM vp_snapshot GROUP BY 1;" | vpbatch sql
    """
    from vpbatch.sql import connect

    con = connect(lake)
    try:
        if query is not None:
            out = _render(con, query, fmt, max_rows)
            if out:
                click.echo(out)
            return
        stdin = sys.stdin
        interactive = stdin.isatty()
        while (stmts := _statements(stdin, interactive)) is not None:
            for stmt in stmts:
                try:
                    out = _render(con, stmt, fmt, max_rows)
                except VpbatchError as exc:
                    if not interactive:
                        raise
                    click.echo(f"Error: {exc}", err=True)
                    continue
                if out:
                    click.echo(out)
    finally:
        con.close()
