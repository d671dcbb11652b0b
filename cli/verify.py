"""``vpbatch verify``: check the written Parquet against SPEC §12 and the manifests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from cli.options import json_option, lake_option, symbol_dt_options


@click.command("verify")
@symbol_dt_options
@click.option("--all", "all_partitions", is_flag=True,
              help="Verify every partition in the lake.")
@lake_option
@json_option
def command(symbol: str | None, day: dt.date | None, all_partitions: bool, lake: Path,
            as_json: bool) -> None:
    """Check the invariants of built partitions in DuckDB and print one line per check.

    Checks: manifest, files, row_counts, event_order, cardinality (2K+1 rows per state),
    completeness (k = -K..K once), finite, continuity, event_update, depth, book (against
    mbp), prices, provenance, snapshot. Exits with code 4 when any check fails.

    \b
    Example:
        vpbatch verify --symbol MNQH6 --dt 2026-02-06
        vpbatch verify --symbol MNQH6
        vpbatch verify --all --lake /data/lake
    """
    if all_partitions and (symbol is not None or day is not None):
        raise click.UsageError("give --all, or --symbol and/or --dt, not both")
    if not all_partitions and symbol is None and day is None:
        raise click.UsageError("give --symbol and/or --dt, or --all")
    from vpbatch.build.verify import verify

    report = verify(lake, symbol=symbol, day=day, all=all_partitions)
    if as_json:
        click.echo(json.dumps({"passed": report.passed, "partitions": report.partitions,
                               "checks": report.to_rows()}, indent=2))
    else:
        click.echo(report.format())
    report.raise_for_failures()
