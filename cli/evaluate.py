"""``vpbatch evaluate``: does the regime predict the next move? (SPEC §13)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli.fit import check_choice, split_names
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
@click.option("--models", callback=split_names, metavar="NAMES",
              help="Also fit these models walk-forward and evaluate them as fit_<name>: any of "
                   "l1, vp, vp+l1 (with l1 and vp+l1: their MCC and IC difference, paired).")
@click.option("--model", "model_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also score the models of a `vpbatch fit` JSON (as model_<name>) out of "
                   "sample: its training days must not be tested here.")
@quiet_option
def command(symbol: str | None, day: dt.date | None, start: dt.date | None,
            end: dt.date | None, lake: Path | str, as_json: bool, out: Path | None, resamples: int,
            confidence: float, seed: int, models: tuple[str, ...] | None,
            model_file: Path | None, quiet: bool) -> None:
    """Measure whether the regime and standard order-book signals predict the next move.

    Targets: direction of the mid after the next 1, 2 and 5 mid changes (event time) and
    over 1, 5, 30 and 60 s (clock time, flat is a class). Predictors: regime, regime_score,
    queue imbalance, micro-price minus mid, order-flow imbalance and momentum over 1/5/10 s,
    majority class. Thresholds are fitted on earlier data only (walk-forward by day; one
    day: the first half trains, the second half tests). Metrics (coverage, hit rate,
    balanced accuracy, Matthews correlation, Spearman IC) come with moving-block bootstrap
    intervals. States with an invalid or crossed book are excluded and counted.

    With --models, regularised logistic models over the vacuum/pressure field and the
    level-1 signals are fitted on the training part of each split (never on its test part)
    and reported as predictors, with fit_vp+l1 minus fit_l1 per target (does the field add
    to the level-1 book?). With --model, a saved `vpbatch fit` model is scored.

    \b
    Example:
      vpbatch evaluate --symbol ESH4 --dt 2023-12-24
      vpbatch evaluate --symbol MNQH6 --start 2026-02-02 --end 2026-02-06 -o eval.html
      vpbatch evaluate --symbol MNQH6 --dt 2026-02-06 --json > eval.json
      vpbatch evaluate --symbol MNQH6 --dt 2026-02-06 --models l1,vp,vp+l1
      vpbatch evaluate --symbol MNQH6 --dt 2026-02-09 --model model.json
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
    settings = Bootstrap(resamples=resamples, confidence=confidence, seed=seed)
    if models:
        from vpbatch.fit import MODELS

        check_choice("--models", models, MODELS)
    steps = 7 * (1 + len(models or ()))
    with Progress(total=steps, enabled=not quiet, phase="evaluate", unit="steps") as bar:

        def done(what: str) -> None:
            bar.phase(f"evaluate (done {what})")
            bar.update(1)

        if models or model_file is not None:
            from vpbatch.fit import evaluate_with_models

            ev = evaluate_with_models(lake, symbol, day, end, models=models or (),
                                      model_file=model_file, settings=settings, progress=done,
                                      fit_progress=done)
        else:
            ev = evaluate(lake, symbol, day, end, settings=settings, progress=done)
    if out is not None:
        write_html(ev, out)
        click.echo(f"wrote {out}", err=True)
    click.echo(to_json(ev) if as_json else format_table(ev))
