"""``vpbatch fit``: learn the mapping from features to the next move (SPEC §15)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from cli.options import (
    json_option,
    lake_option,
    parse_date_option,
    quiet_option,
    symbol_dt_options,
)


def split_names(ctx: click.Context, param: click.Parameter, value: str | None
                ) -> tuple[str, ...] | None:
    """Click callback: ``a,b,c`` -> ``("a", "b", "c")`` (blank items dropped)."""
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give at least one name")
    return names


def check_choice(option: str, names: tuple[str, ...] | None, valid: tuple[str, ...]) -> None:
    """A name outside ``valid`` is a usage error naming the option and the valid names."""
    for name in names or ():
        if name not in valid:
            raise click.BadParameter(f"unknown name {name!r} (valid: {', '.join(valid)})",
                                     param_hint=f"'{option}'")


def day_range(day: dt.date | None, start: dt.date | None, end: dt.date | None
              ) -> tuple[dt.date, dt.date]:
    """``--dt`` or ``--start/--end`` (``--end`` defaults to the start)."""
    if day is not None and (start is not None or end is not None):
        raise click.UsageError("Use either --dt or --start/--end, not both.")
    first = day if day is not None else start
    if first is None:
        raise click.UsageError("Missing option '--start' (or '--dt').")
    return first, end if end is not None else first


@click.command("fit")
@symbol_dt_options
@click.option("--start", callback=parse_date_option, metavar="YYYY-MM-DD",
              help="First training day (with --end).")
@click.option("--end", callback=parse_date_option, metavar="YYYY-MM-DD",
              help="Last training day (inclusive; default: --start).")
@click.option("--models", callback=split_names, default="l1,vp,vp+l1", show_default=True,
              metavar="NAMES", help="Feature sets to fit: l1 (level-1 signals), vp (the "
              "vacuum/pressure field), vp+l1 (both).")
@click.option("--targets", callback=split_names, metavar="NAMES",
              help="Targets to fit (default: all of event_1,event_2,event_5,clock_1s,"
                   "clock_5s,clock_30s,clock_60s).")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Where to write the model JSON.")
@lake_option
@json_option
@quiet_option
def command(symbol: str | None, day: dt.date | None, start: dt.date | None,
            end: dt.date | None, models: tuple[str, ...], targets: tuple[str, ...] | None,
            out: Path, lake: Path | str, as_json: bool, quiet: bool) -> None:
    """Fit regularised logistic models of the next move on built days; write model JSON.

    One model per feature set and target: L2-regularised logistic regression (multinomial for
    the clock targets, where flat is a class) on standardised features, the regularisation
    chosen by time-ordered cross-validation inside the training days, and a call band fitted
    as evaluate fits its thresholds. The JSON holds the features, scaling, coefficients,
    band, training days, in-sample metrics and the vpbatch version; `vpbatch evaluate
    --model FILE` scores it on later days. Prints the in-sample metrics.

    \b
    Example:
      vpbatch fit --symbol MNQH6 --start 2026-02-02 --end 2026-02-05 -o model.json
      vpbatch fit --symbol MNQH6 --dt 2026-02-05 --models vp+l1 --targets event_5 -o m.json
      vpbatch evaluate --symbol MNQH6 --dt 2026-02-06 --model model.json
    """
    from vpbatch.fit import MODELS, TARGETS, fit_models, write_model_file
    from vpbatch.fit.model import file_to_dict
    from vpbatch.progress import Progress

    if symbol is None:
        raise click.UsageError("Missing option '--symbol'.")
    check_choice("--models", models, MODELS)
    check_choice("--targets", targets, TARGETS)
    first, last = day_range(day, start, end)
    chosen = targets or TARGETS
    with Progress(total=len(models) * len(chosen), enabled=not quiet, phase="fit",
                  unit="models") as bar:

        def done(what: str) -> None:
            bar.phase(f"fit (done {what})")
            bar.update(1)

        file = fit_models(lake, symbol, first, last, models=models, targets=chosen,
                          progress=done)
    write_model_file(file, out)
    click.echo(f"wrote {out}", err=True)
    if as_json:
        click.echo(json.dumps(file_to_dict(file), indent=1))
        return
    click.echo(f"{file.symbol} trained on {', '.join(file.training_days)}; "
               f"default model {file.default[0]}/{file.default[1]}")
    click.echo(f"{'model':<8} {'target':<10} {'C':>8} {'field s':>7} {'states':>9} "
               f"{'fitted':>7} {'bal. acc.':>9} {'MCC':>7} {'IC':>7}  (in sample)")
    for m in file.models:
        ins = m.info.get("in_sample", {})
        reg, tr = m.info["regularisation"], m.info["training"]
        ba, mcc, ic = (_metric(ins.get(k)) for k in ("balanced_accuracy", "mcc", "ic"))
        scale = "-" if "field_scale" not in reg else f"{reg['field_scale']:g}"
        click.echo(f"{m.name:<8} {m.target:<10} {reg['C']:>8g} {scale:>7} "
                   f"{tr['usable_states']:>9,} {tr['fit_states']:>7,} {ba:>9} {mcc:>7} {ic:>7}")


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
