"""``vpbatch synth``: write a synthetic CME MBO day (real DBN) into the lake or a file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli.options import lake_option, quiet_option, stage_lake
from vpbatch.products import resolve_product
from vpbatch.store.lake import raw_dir, raw_file_name

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
@click.option("--informed", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              metavar="SHARE",
              help="Planted signal: share of event groups in which an informed trader acts near "
                   "the touch ahead of the coming move (0 = off, the default stream).")
@click.option("--informed-jump", type=click.Choice(["aligned", "random", "none"]),
              default="aligned", show_default=True,
              help="With --informed: 'aligned' = the move follows the informed activity (the "
                   "planted signal); 'random' = placebo control, the same activity but the "
                   "move's direction an independent coin; 'none' = the activity, no move.")
@click.option("--flow", type=click.Choice(["depth", "touch"]), default="depth",
              show_default=True,
              help="How the ordinary flow follows the latent fair value: 'depth' = adds and "
                   "cancels lean towards it near and behind the touch (the default stream); "
                   "'touch' = only through the touch (joins, pulls, aggressor side), so an "
                   "unplanted day has no information beyond the level-1 book.")
@lake_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Write this file instead of the lake (.zst suffix = compressed).")
@quiet_option
def command(symbol: str, day: dt.datetime, records: int, seed: int, informed: float,
            informed_jump: str, flow: str, lake: Path | str, out: Path | None,
            quiet: bool) -> None:
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
      vpbatch synth --records 500000 --informed 0.3   # planted signal for vpbatch evaluate
      vpbatch synth --records 500000 --informed 0.3 --informed-jump random   # its placebo
      vpbatch synth --records 500000 --flow touch   # no information beyond the touch
      vpbatch synth --lake s3://my-bucket/lake     # written locally, then uploaded
    """
    from vpbatch.progress import Progress
    from vpbatch.synth import synth_session

    date = day.date()
    root = stage_lake(lake) if out is None else Path()
    path = out if out is not None else (
        raw_dir(root, resolve_product(symbol)) / raw_file_name(resolve_product(symbol).dataset,
                                                             date))
    enabled = not quiet and records >= PROGRESS_MIN_RECORDS
    with Progress(total=records, enabled=enabled, phase="synth") as bar:
        stats = synth_session(path, symbol=symbol, day=date, records=records, seed=seed,
                              progress=bar.update, informed=informed,
                              informed_jump=informed_jump, flow=flow)
    stage = click.get_current_context().meta.get("vpbatch.stage")
    if stage is not None:  # an object-store lake: the file goes up now, its URL is printed
        stage.sync()
    click.echo(str(stats.path) if stage is None else stage.location(stats.path))
    click.echo(stats.summary())
