"""``vpbatch evaluate``: does the regime predict the next move? (SPEC §13)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli.options import (
    json_option,
    lake_option,
    parse_date_option,
    quiet_option,
    symbol_dt_options,
)


@click.command("evaluate")
@symbol_dt_options
@click.option("--start", callback=parse_date_option, metavar="YYYY-MM-DD",
              help="First day of a walk-forward range (with --end).")
@click.option("--end", callback=parse_date_option, metavar="YYYY-MM-DD",
              help="Last day of the range (inclusive).")
@lake_option
@json_option
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write an HTML report with plots (needs the plot extra).")
@click.option("--resamples", type=click.IntRange(min=10), default=1_000, show_default=True,
              help="Moving-block bootstrap resamples.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.9999), default=0.95,
              show_default=True, help="Level of the bootstrap intervals.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the bootstrap.")
@quiet_option
def command(symbol: str | None, day: dt.date | None, start: dt.date | None,
            end: dt.date | None, lake: Path, as_json: bool, out: Path | None, resamples: int,
            confidence: float, seed: int, quiet: bool) -> None:
    """Measure whether the regime and standard order-book signals predict the next move.

    Targets: direction of the mid after the next 1, 2 and 5 mid changes (event time) and
    over 1, 5, 30 and 60 s (clock time, flat is a class). Predictors: regime, regime_score,
    queue imbalance, micro-price minus mid, order-flow imbalance and momentum over 1/5/10 s,
    majority class. Thresholds are fitted on earlier data only (walk-forward by day; one
    day: the first half trains, the second half tests). Metrics (coverage, hit rate,
    balanced accuracy, Matthews correlation, Spearman IC) come with moving-block bootstrap
    intervals. States with an invalid or crossed book are excluded and counted.

    \b
    Example:
      vpbatch evaluate --symbol ESH4 --dt 2023-12-24
      vpbatch evaluate --symbol MNQH6 --start 2026-02-02 --end 2026-02-06 -o eval.html
      vpbatch evaluate --symbol MNQH6 --dt 2026-02-06 --json > eval.json
    """
    from vpbatch.evaluate.evaluation import evaluate
    from vpbatch.evaluate.report import format_table, to_json, write_html
    from vpbatch.evaluate.stats import Bootstrap
    from vpbatch.progress import Progress

    if symbol is None:
        raise click.UsageError("Missing option '--symbol'.")
    if day is not None and (start is not None or end is not None):
        raise click.UsageError("Use either --dt or --start/--end, not both.")
    if day is None:
        if start is None:
            raise click.UsageError("Missing option '--dt' (or '--start' and '--end').")
        day = start
    end = end if end is not None else day
    if out is not None:
        from vpbatch.pictures.plot import require_matplotlib

        require_matplotlib()
    with Progress(total=7, enabled=not quiet, phase="evaluate", unit="targets") as bar:

        def done(target: str) -> None:
            bar.phase(f"evaluate (done {target})")
            bar.update(1)

        ev = evaluate(lake, symbol, day, end,
                      settings=Bootstrap(resamples=resamples, confidence=confidence, seed=seed),
                      progress=done)
    if out is not None:
        write_html(ev, out)
        click.echo(f"wrote {out}", err=True)
    click.echo(to_json(ev) if as_json else format_table(ev))
