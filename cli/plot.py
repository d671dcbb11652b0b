"""``vpbatch plot``: a heatmap of a built grid over a time window."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli.options import lake_option, symbol_dt_options
from vpbatch.clock import parse_clock
from vpbatch.pictures.plot import DEFAULT_DPI, parse_size


def _default_output(symbol: str, day: dt.date, start: str | None, end: str | None) -> Path:
    window = "" if start is None and end is None else \
        "_" + "-".join((t or "").replace(":", "") for t in (start, end))
    return Path(f"heatmap_{symbol.upper()}_{day.isoformat()}{window}.png")


@click.command("plot")
@symbol_dt_options(required=True)
@click.option("--from", "start", metavar="HH:MM[:SS]",
              help="Window start, America/New_York on --dt (default: first state).")
@click.option("--to", "end", metavar="HH:MM[:SS]",
              help="Window end, exclusive (default: last state).")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output .png, .svg or .html (default heatmap_SYMBOL_DT[_FROM-TO].png).")
@click.option("--width", default="1600", show_default=True, metavar="SIZE",
              help="Picture width: pixels (1600, 1600px) or inches (16in).")
@click.option("--height", default="900", show_default=True, metavar="SIZE",
              help="Picture height: pixels (900, 900px) or inches (9in).")
@click.option("--dpi", type=click.IntRange(10, 1000), default=DEFAULT_DPI, show_default=True,
              help="Dots per inch (larger = bigger text at the same pixel size).")
@lake_option
def command(symbol: str, day: dt.date, start: str | None, end: str | None, out: Path | None,
            width: str, height: str, dpi: int, lake: Path | str) -> None:
    """Draw a time x price heatmap of a built day (PNG, SVG or HTML).

    x is time (America/New_York), y the absolute price of each bucket; colour is
    pressure_now - vacuum_now (orange pressure, blue vacuum), brightness the resting depth.
    Best bid/ask and mid lines, trades as dots, the regime as a band underneath. Long
    windows are aggregated in SQL to at most 2000 time columns (last state per column).
    Prints the path of the written file. Needs the plot extra (pip install vpbatch[plot]).

    \b
    Example:
        vpbatch plot --symbol MNQH6 --dt 2026-02-06 --from 10:00 --to 10:05
        vpbatch plot --symbol MNQH6 --dt 2026-02-06 --from 10:00 --to 10:05 -o open.svg
        vpbatch plot --symbol GOOG --dt 2024-04-03 -o goog.html --width 12in --height 7in
    """
    from vpbatch.pictures.plot import plot_heatmap

    out = out if out is not None else _default_output(symbol, day, start, end)
    path = plot_heatmap(
        lake, symbol, day,
        parse_clock(start, "--from") if start is not None else None,
        parse_clock(end, "--to") if end is not None else None,
        out, width=parse_size(width, dpi, "--width"), height=parse_size(height, dpi, "--height"),
        dpi=dpi,
    )
    click.echo(str(path))
