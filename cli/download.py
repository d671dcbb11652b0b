"""``vpbatch download``: Databento MBO days into the lake, the cost shown (and confirmed) first."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.options import lake_option, parse_date_option, quiet_option, stage_lake

if TYPE_CHECKING:
    from vpbatch.ingest.download import Fetched


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@click.command("download")
@click.option("--symbol", required=True, metavar="SYMBOL",
              help="Contract (MNQH6), futures parent (MNQ.FUT: every contract of each day) "
                   "or equity ticker (QQQ, BRK.B).")
@click.option("--start", "start", required=True, metavar="YYYY-MM-DD", callback=parse_date_option,
              help="First UTC day.")
@click.option("--end", "end", metavar="YYYY-MM-DD", callback=parse_date_option,
              help="Last UTC day, inclusive (default --start).")
@click.option("--dataset", metavar="CODE",
              help="Databento dataset (default GLBX.MDP3 for futures, XNAS.ITCH for equities; "
                   "e.g. DBEQ.BASIC).")
@click.option("--max-cost", type=click.FloatRange(min=0), metavar="USD",
              help="Refuse (before anything is fetched) when the download costs more.")
@click.option("-y", "--yes", is_flag=True,
              help="Do not ask for confirmation (scripts); --max-cost still applies.")
@click.option("--dry-run", is_flag=True,
              help="Show what would be fetched and its cost; fetch nothing.")
@click.option("--no-definitions", is_flag=True,
              help="Skip the instrument definitions (build then uses the product table's tick).")
@click.option("--force", is_flag=True, help="Download again files that are already complete.")
@click.option("--retries", type=click.IntRange(0, 20), default=5, show_default=True,
              help="Retries per call on HTTP 429, 5xx and cut connections (exponential backoff).")
@click.option("--gateway", envvar="VPBATCH_DATABENTO_GATEWAY", hidden=True,
              help="Historical API gateway URL (tests; env VPBATCH_DATABENTO_GATEWAY).")
@lake_option
@quiet_option
def command(symbol: str, start: dt.date, end: dt.date | None, dataset: str | None,
            max_cost: float | None, yes: bool, dry_run: bool, no_definitions: bool, force: bool,
            retries: int, gateway: str | None, lake: Path | str, quiet: bool) -> None:
    """Download Databento MBO days (and instrument definitions) into the lake.

    Uses the official client with the key in DATABENTO_API_KEY. Days Historical does not
    serve whole yet (metadata.get_dataset_range) are listed and skipped. The cost is computed
    first (metadata.get_cost) and shown on stderr; above --max-cost nothing is fetched;
    otherwise it is confirmed on a terminal (--yes for scripts). One file per UTC day under
    lake/raw/source=databento/product_type=…/symbol=ROOT/table=market_by_order_dbn/, with
    symbology.json and the day's definition file beside it. Complete files are skipped and
    cut streams resume where they stopped, so an interrupted run is finished by running it
    again without paying twice. See docs/download.md.

    \b
    Example:
      export DATABENTO_API_KEY=db-...
      vpbatch download --symbol MNQH6 --start 2026-02-02 --end 2026-02-06 --max-cost 25
      vpbatch download --symbol MNQ.FUT --start 2026-02-06 --yes
      vpbatch download --symbol QQQ --start 2026-02-06 --dataset XNAS.ITCH --dry-run
    """
    from vpbatch.errors import ConfigError
    from vpbatch.ingest.download import (
        DownloadRequest,
        check_cost,
        open_client,
        plan_download,
        run_download,
        usd,
    )
    from vpbatch.store.staging import dated_between

    # An object-store lake: a local stage holding the range's raw files, synced back at exit.
    lake = stage_lake(lake, dated_between(start, end if end is not None else start))
    req = DownloadRequest(
        symbol=symbol, start=start, end=end if end is not None else start, lake=lake,
        dataset=dataset, max_cost=max_cost, definitions=not no_definitions, force=force,
        retries=retries, progress=not quiet)
    client = open_client(gateway=gateway)
    plan = plan_download(client, req)
    click.echo(plan.summary(), err=True)
    check_cost(plan)
    if dry_run or not plan.targets:
        if not plan.targets:
            held = (f"; {len(plan.held)} kept with a record count that differs are not "
                    f"fetched again (--force to fetch them)" if plan.held else "")
            click.echo(f"Nothing to download: every file is already complete{held}.")
        return
    if plan.cost > 0 and not yes:
        if not _stdin_is_terminal():
            raise ConfigError(f"the download costs {usd(plan.cost)}: confirm on a terminal, "
                              f"or pass --yes (with --max-cost as a limit)")
        if not click.confirm(f"Download for {usd(plan.cost)}?", default=False, err=True):
            raise ConfigError("not confirmed; nothing downloaded")

    def report(f: Fetched) -> None:
        for notice in f.notices:
            click.echo(f"Databento notice for {f.path.name}: {notice}", err=True)
        if not f.complete:
            click.echo(f"{f.day} {f.schema}: {f.records:,} records received, {f.expected:,} "
                       f"expected: kept as {f.path}", err=True)
            return
        retried = f" after {f.attempts} attempts" if f.attempts > 1 else ""
        resumed = f", resumed {f.resumes}x" if f.resumes else ""
        click.echo(f"{f.day} {f.schema}: {f.records:,} records, {f.size:,} bytes{retried}"
                   f"{resumed}, about {usd(f.billed)} billed -> {f.path}")

    done = run_download(client, plan, on_file=report)
    click.echo(f"Downloaded {len(done)} file(s), about {usd(sum(f.billed for f in done))} "
               f"billed (planned {usd(plan.cost)}); {len(plan.present)} already complete; "
               f"{len(plan.empty_days)} day(s) without data; "
               f"{len(plan.unavailable)} day(s) not available.")
