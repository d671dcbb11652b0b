"""``vpbatch info``: what is in an MBO file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from cli.options import json_option, lake_option, quiet_option, symbol_dt_options


@click.command("info")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@symbol_dt_options
@lake_option
@json_option
@quiet_option
def command(path: Path | None, symbol: str | None, day: dt.date | None, lake: Path,
            as_json: bool, quiet: bool) -> None:
    """Show records, instruments, publishers, time span, actions and flags of an MBO file.

    Give a PATH, or --symbol and --dt to find the day's raw file in the lake (or the
    day's live recording of the symbol when there is no day file).
    With --symbol the record statistics cover that instrument only. Records of other
    types between the MBO records (a live recording's symbol mappings, heartbeats,
    system and error messages) are counted and skipped.

    \b
    Example:
        vpbatch info ../shared/data/databento/glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst
        vpbatch info --symbol MNQH6 --dt 2026-02-06
        vpbatch info --json --symbol GOOG dbeq-basic-goog-20240403.mbo.dbn.zst
    """
    from vpbatch.ingest.info import file_info, format_info
    from vpbatch.ingest.reader import find_input
    from vpbatch.progress import Progress

    if path is None:
        if symbol is None or day is None:
            raise click.UsageError("give a PATH, or --symbol and --dt to find the file in the lake")
        path = find_input(lake, symbol, day)
    elif day is not None:
        raise click.UsageError("give either a PATH or --dt, not both")
    with Progress(total=None, enabled=not quiet, phase="reading") as bar:
        info = file_info(path, symbol=symbol, progress=bar.update)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))
