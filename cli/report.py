"""``vpbatch report``: a one-page HTML summary of a built day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli.options import lake_option, symbol_dt_options


@click.command("report")
@symbol_dt_options(required=True)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output .html file (default report_SYMBOL_DT.html).")
@lake_option
def command(symbol: str, day: dt.date, out: Path | None, lake: Path | str) -> None:
    """Write a self-contained one-page HTML report of a built day.

    Records and anomalies (from _MANIFEST.json), book validity, regime shares and
    durations (time-weighted), pressure/vacuum profiles by distance from spot, activity,
    and the heatmap of the busiest half hour. All numbers come from DuckDB SQL over the
    lake; images are embedded. Prints the path of the written file. Needs the plot extra
    (pip install vpbatch[plot]).

    \b
    Example:
        vpbatch report --symbol MNQH6 --dt 2026-02-06
        vpbatch report --symbol GOOG --dt 2024-04-03 -o goog.html --lake lake
    """
    from vpbatch.pictures.report import write_report

    out = out if out is not None else Path(f"report_{symbol.upper()}_{day.isoformat()}.html")
    click.echo(str(write_report(lake, symbol, day, out)))
