"""``vpbatch synth``: write a synthetic CME MBO day (real DBN) into the lake or a file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli.options import lake_option, quiet_option
from vpbatch.lake import raw_dir, raw_file_name
from vpbatch.products import resolve_product

#: Below this many records the run takes a second or two: no progress bar.
PROGRESS_MIN_RECORDS = 2_000_000


@click.command("synth")
@click.option("--symbol", default="MNQH6", show_default=True, metavar="SYMBOL",
              help="Contract or ticker; its tick comes from the product table.")
@click.option("--dt", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default="2026-02-06",
              show_default=True, metavar="YYYY-MM-DD",
              help="UTC trading day (Mon-Fri); the file covers 00:00-24:00 UTC.")
@click.option("--records", type=click.IntRange(min=1_000), default=1_000_000,
              show_default=True, help="Exact number of records, snapshot included.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
              help="Same seed and options give a byte-identical file.")
@lake_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Write this file instead of the lake (.zst suffix = compressed).")
@quiet_option
def command(symbol: str, day: dt.datetime, records: int, seed: int, lake: Path,
            out: Path | None, quiet: bool) -> None:
    """Write a synthetic, internally consistent CME MBO day as a real DBN file.

    The stream looks like Databento GLBX.MDP3 MBO: a start-of-day snapshot, then adds,
    cancels, modifies and trades (T + FIFO fills + C/M of each filled order) with bursty
    timing and regular trading hours busiest. Used for demos, tests and benchmarks.
    Prints the written path on the first line, then the file's statistics.

    \b
    Example:
      vpbatch synth --symbol MNQH6 --dt 2026-02-06 --records 1000000
      vpbatch synth --records 50000000 --seed 1 --lake /data/lake
      vpbatch synth --symbol ESM6 --out /tmp/es.mbo.dbn.zst --quiet
    """
    from vpbatch.progress import Progress
    from vpbatch.synth import synth_session

    date = day.date()
    path = out if out is not None else (
        raw_dir(lake, resolve_product(symbol)) / raw_file_name(resolve_product(symbol).dataset,
                                                             date))
    enabled = not quiet and records >= PROGRESS_MIN_RECORDS
    with Progress(total=records, enabled=enabled, phase="synth") as bar:
        stats = synth_session(path, symbol=symbol, day=date, records=records, seed=seed,
                              progress=bar.update)
    click.echo(str(stats.path))
    click.echo(stats.summary())
