"""``vpbatch build``: one day, or many (symbols x days, locally or on a Dask cluster)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.options import (
    cache_option,
    engine_config,
    engine_options,
    lake_option,
    model_options,
    model_scorer,
    parse_date_option,
    parse_time_option,
    publisher_option,
    quiet_option,
)
from vpbatch.errors import ConfigError, VpbatchError

if TYPE_CHECKING:
    from vpbatch.build.request import BuildResult

#: Retries of a crashed task (``vpbatch.build.cluster.DEFAULT_RETRIES``; not imported: --help stays
#: light).
_RETRIES = 2

_TABLES = ("vp", "mbp")


def _tables(value: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in value.split(",") if t.strip())
    bad = [t for t in names if t not in _TABLES]
    if bad or "vp" not in names:
        raise ConfigError(f"--tables: '{value}' is not valid; use vp or vp,mbp")
    return names


@click.command("build")
@click.option("--symbol", required=True, metavar="SYMBOL[,SYMBOL...]",
              help="Contract or ticker (MNQH6, QQQ); several comma-separated (MNQH6,ESH6).")
@click.option("--dt", "day", metavar="YYYY-MM-DD", callback=parse_date_option,
              help="Session date (one day); with --path, inferred from the file when omitted.")
@click.option("--start", "range_start", metavar="YYYY-MM-DD", callback=parse_date_option,
              help="First day of a range.")
@click.option("--end", "range_end", metavar="YYYY-MM-DD", callback=parse_date_option,
              help="Last day of a range (inclusive).")
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Explicit .dbn/.dbn.zst file instead of the lake layout.")
@click.option("--definition", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Instrument-definition DBN: its min_price_increment is the tick.")
@click.option("--start-time", metavar="HH:MM", callback=parse_time_option,
              help="Emit from this America/New_York time (warm-up and fast-forward before).")
@click.option("--end-time", metavar="HH:MM", callback=parse_time_option,
              help="Stop emitting at this time (needs --start-time).")
@engine_options
@click.option("--tables", default="vp", show_default=True,
              help="Tables to write: vp (vp_snapshot + vp_grid) or vp,mbp.")
@click.option("--mbp-levels", type=click.IntRange(1, 99), default=10, show_default=True,
              help="Book levels per side in the mbp table.")
@model_options
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="Builds in parallel on this machine, in N worker processes (default 1: one "
                   "after the other in this process).")
@click.option("--scheduler", metavar="ADDRESS", envvar="VPBATCH_SCHEDULER",
              help="Run the builds on this Dask scheduler (tcp://host:8786, or its scheduler "
                   "file); every worker must reach the lake: the same folder path, or the same "
                   "s3:// URL (env VPBATCH_SCHEDULER).")
@click.option("--retries", type=click.IntRange(0), default=_RETRIES, show_default=True,
              help="Retries of a build that crashed or whose worker died (a bad day fails "
                   "without retry).")
@click.option("--force", is_flag=True, help="Rebuild a partition that is already complete.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the book-state cache.")
@cache_option
@publisher_option
@lake_option
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def command(symbol: str, day: dt.date | None, range_start: dt.date | None,
            range_end: dt.date | None,
            path: Path | None, definition: Path | None, start_time: dt.time | None,
            end_time: dt.time | None, config_file: Path | None, warmup: str, sample: str, K: int,
            band: int, tables: str,
            mbp_levels: int, model_file: Path | None, model_name: str | None,
            model_target: str | None, jobs: int | None, scheduler: str | None, retries: int,
            force: bool, no_cache: bool, cache: str | None, publisher_id: int | None,
            lake: Path | str, quiet: bool, as_json: bool) -> None:
    """Build vacuum/pressure grids for symbols and days into the lake.

    Writes lake/gold/{vp_snapshot,vp_grid[,mbp]}/product_type=…/symbol=…/dt=…/ atomically,
    with _MANIFEST.json and _SUCCESS. A complete partition is skipped unless --force.
    Several symbols or days are one task per (symbol, day): in this process, in local
    processes (--jobs N) or on any Dask cluster (--scheduler); a bad day fails alone, and
    the exit code is 1 when any failed. --lake s3://bucket/prefix builds into an object
    store (workers then share no disk; docs/cluster.md). --model FILE adds a fitted model's
    call and probability per state to vp_snapshot (docs/fit.md); the model must have been
    fitted on days built with the same parameters.

    \b
    Example:
      vpbatch build --symbol MNQH6 --dt 2026-02-06 --start-time 09:30 --end-time 16:00
      vpbatch build --symbol MNQH6 --start 2026-02-02 --end 2026-02-06 --jobs 2
      vpbatch build --symbol MNQH6,ESH6 --start 2026-02-02 --end 2026-02-06 \\
          --scheduler tcp://scheduler:8786 --lake /mnt/lake
      vpbatch build --symbol ESM4 --path glbx-mdp3-esm4.mbo.dbn.zst --sample event
      vpbatch build --symbol MNQH6 --dt 2026-02-06 --lake s3://my-bucket/lake
      vpbatch build --symbol MNQH6 --dt 2026-02-09 --model model.json --force
    """
    from vpbatch.build.cluster import plan, run_range
    from vpbatch.build.pipeline import build
    from vpbatch.build.request import BuildRequest, check_request, infer_session_day
    from vpbatch.clock import date_range

    names = _tables(tables)
    config, warmup_ns = engine_config(config_file, sample, K, band, warmup)
    scorer = model_scorer(model_file, model_name, model_target)
    req = BuildRequest(
        symbol=symbol, day=day, lake=lake, path=path, start_time=start_time, end_time=end_time,
        warmup_ns=warmup_ns, config=config,
        mbp_levels=mbp_levels if "mbp" in names else 0, publisher_id=publisher_id,
        force=force, use_cache=not no_cache, progress=not quiet, definition=definition,
        cache=cache, scorer=scorer,
    )
    symbols = _symbols(symbol)
    if scorer is not None:  # a model that cannot score these builds: refused before any work
        scorer.check(config, None)  # (the bucket, maybe a definition's, is checked per day)
    if scheduler is not None and jobs is not None:
        raise ConfigError("--jobs is for this machine; with --scheduler the cluster's workers "
                          "run the builds")
    if range_start or range_end:
        if day or not (range_start and range_end):
            raise ConfigError("give either --dt, or both --start and --end")
        if path is not None:
            raise ConfigError("--path is one file, one day: use it with --dt (or alone), not "
                              "with --start/--end")
        days = date_range(range_start, range_end)
    elif req.day is not None:
        days = [req.day]
    elif path is not None and len(symbols) == 1 and scheduler is None:
        days = []
    else:
        raise ConfigError("--dt (or --path, or --start/--end) is required")
    if len(symbols) == 1 and len(days) <= 1 and scheduler is None:
        if not days and path is not None:
            inferred, how = infer_session_day(path)
            click.echo(f"--dt {inferred.isoformat()} ({how})", err=True)
            req = replace(req, day=inferred)
        results = [build(replace(req, symbol=symbols[0]))]
    else:
        if scheduler is None:
            check_request(req)
        results = run_range(plan(req, symbols, days), jobs=jobs or 1, scheduler=scheduler,
                            retries=retries, progress=not quiet)
    _report(results, as_json)
    if all(r.status == "no-data" for r in results):
        raise VpbatchError(f"no input files for {symbol} in the requested dates")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        who = [str(r.day) if len(symbols) == 1 else f"{r.symbol} {r.day}" for r in failed]
        raise VpbatchError(f"{len(failed)} of {len(results)} days failed: "
                           + "; ".join(f"{w}: {r.message}" for w, r in zip(who, failed,
                                                                          strict=True)))


def _symbols(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",")]
    if not all(names):
        raise ConfigError(f"--symbol: '{value}' has an empty name; use MNQH6 or MNQH6,ESH6")
    return list(dict.fromkeys(names))


def _report(results: list[BuildResult], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{
            "symbol": r.symbol, "dt": r.day.isoformat(), "status": r.status, "host": r.host,
            "rows": r.rows, "records": r.records, "cache": r.cache, "timings": r.timings,
            "anomalies": r.anomalies, "message": r.message,
            "partitions": {k: str(v) for k, v in r.partitions.items()},
        } for r in results], indent=2))
        return
    for r in results:
        if r.status != "built":
            click.echo(f"{r.symbol} {r.day}: {r.status} — {r.message}")
            continue
        anomalies = sum(r.anomalies.values())
        rate = r.records / r.timings["total"] if r.timings.get("total") else 0.0
        click.echo(f"{r.symbol} {r.day}: built {r.rows.get('vp_snapshot', 0):,} states, "
                   f"{r.rows.get('vp_grid', 0):,} grid rows from {r.records:,} records "
                   f"in {r.timings.get('total', 0):.1f}s ({rate:,.0f} rec/s, cache {r.cache}, "
                   f"{anomalies} anomalies)")
        for table, part in sorted(r.partitions.items()):
            if table in r.rows:
                click.echo(f"  {table}: {part}")
    if len(results) > 1:
        from vpbatch.build.cluster import summary_line

        click.echo(summary_line(results))
