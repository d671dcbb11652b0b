"""``vpbatch cache``: list or clear the book-state cache (``lake/cache/book`` or ``--cache``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from cli.options import cache_option, json_option, lake_option


@click.group("cache")
def command() -> None:
    """Inspect or clear the book-state cache under LAKE/cache/book (or --cache).

    For a lake on an object store the cache is on each host's disk
    (~/.cache/vpbatch/book) unless --cache names a folder or an s3:// URL.

    \b
    Example:
        vpbatch cache ls
        vpbatch cache clear --lake /data/lake
        vpbatch cache ls --cache s3://my-bucket/vpbatch-cache
    """


def _boundary(ns: object) -> str:
    from vpbatch.clock import NS_PER_SECOND

    if not isinstance(ns, int):
        return "?"
    stamp = dt.datetime.fromtimestamp(ns // NS_PER_SECOND, dt.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ns % NS_PER_SECOND:09d}Z"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@command.command("ls")
@lake_option
@cache_option
@json_option
def ls_command(lake: Path | str, cache: str | None, as_json: bool) -> None:
    """List cache entries: input, instrument, publisher, boundary, format, size, created.

    \b
    Example:
        vpbatch cache ls --lake lake
    """
    from vpbatch.store.cache import cache_location, list_entries

    entries = list_entries(lake, cache=cache)
    if as_json:
        data = [{"digest": e.digest, "path": str(e.path), "size": e.size, "created": e.created,
                 "key": e.key, "meta": e.meta, "error": e.error} for e in entries]
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if not entries:
        click.echo(f"no cache entries in {cache_location(lake, cache)}")
        return
    header = ("digest", "source", "instrument", "publisher", "boundary (UTC)", "format", "size",
              "created")
    rows: list[tuple[str, ...]] = [header]
    for e in entries:
        k = e.key
        if e.error:
            rows.append((e.digest[:12], f"unreadable: {e.error}", "", "", "", "", _size(e.size),
                         ""))
            continue
        rows.append((e.digest[:12], str(k.get("source") or "?"), str(k.get("instrument_id")),
                     str(k.get("publisher_id")), _boundary(k.get("boundary_ts")),
                     str(k.get("book_format")), _size(e.size), e.created))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    total = sum(e.size for e in entries)
    click.echo(f"{len(entries)} entries, {_size(total)} in {cache_location(lake, cache)}")


@command.command("clear")
@lake_option
@cache_option
def clear_command(lake: Path | str, cache: str | None) -> None:
    """Delete every cache entry (builds recompute the book on their next run).

    \b
    Example:
        vpbatch cache clear --lake lake
    """
    from vpbatch.store.cache import cache_location, clear

    n = clear(lake, cache=cache)
    click.echo(f"removed {n} cache entr{'y' if n == 1 else 'ies'} from "
               f"{cache_location(lake, cache)}")
