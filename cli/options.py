"""Options shared by several commands, defined once as decorators."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vpbatch.clock import parse_wall_time
from vpbatch.config import (
    DEFAULT_SAMPLE,
    DEFAULT_WARMUP,
    EngineConfig,
    load_config_file,
    parse_duration_ns,
)
from vpbatch.errors import ConfigError
from vpbatch.store.lake import parse_date

F = TypeVar("F", bound=Callable[..., Any])


def parse_date_option(ctx: click.Context, param: click.Parameter,
                      value: str | None) -> dt.date | None:
    """Click callback of a ``YYYY-MM-DD`` option: a bad date is a usage error (exit 2)."""
    if value is None:
        return None
    try:
        return parse_date(value, param.opts[0])
    except ConfigError as exc:
        raise click.BadParameter(f"'{value}' is not a date; use YYYY-MM-DD") from exc


def parse_time_option(ctx: click.Context, param: click.Parameter,
                      value: str | None) -> dt.time | None:
    """Click callback of an ``HH:MM`` option (America/New_York): a bad time is a usage error."""
    try:
        return parse_wall_time(value, param.opts[0])
    except ConfigError as exc:
        raise click.BadParameter(f"'{value}' is not a time; use HH:MM (America/New_York)") \
            from exc


def lake_option(fn: F) -> F:
    """``--lake DIR``: the lake root (``$VPBATCH_LAKE``, default ``./lake``)."""
    return click.option(
        "--lake",
        type=click.Path(file_okay=False, path_type=Path),
        default="lake",
        envvar="VPBATCH_LAKE",
        show_default=True,
        help="Lake root folder (env VPBATCH_LAKE).",
    )(fn)


def symbol_dt_options(fn: F | None = None, *, required: bool = False) -> Any:
    """``--symbol`` and ``--dt`` (bare, or ``@symbol_dt_options(required=True)``).

    The command receives ``symbol: str | None`` and ``day: datetime.date | None``.
    """

    def decorate(f: F) -> F:
        f = click.option(
            "--dt",
            "day",
            callback=parse_date_option,
            required=required,
            metavar="YYYY-MM-DD",
            help="Trading day of the raw file in the lake.",
        )(f)
        return click.option(
            "--symbol",
            required=required,
            metavar="SYMBOL",
            help="Contract or ticker, e.g. MNQH6, ESM4, QQQ.",
        )(f)

    return decorate(fn) if fn is not None else decorate


def publisher_option(fn: F) -> F:
    """``--publisher ID``: keep one Databento publisher (needed when a file has several)."""
    return click.option(
        "--publisher",
        "publisher_id",
        type=click.IntRange(min=0),
        default=None,
        metavar="ID",
        help="Databento publisher_id to keep, e.g. 41 (DBEQ.BASIC.IEXG).",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON instead of text.")(fn)


def quiet_option(fn: F) -> F:
    """``-q/--quiet``: no progress bar."""
    return click.option("-q", "--quiet", is_flag=True,
                        help="No progress bar on stderr.")(fn)


def engine_config(config_file: Path | None, sample: str, K: int, band: int,
                   warmup: str) -> tuple[EngineConfig, int]:
    """``--config``, ``--sample``, ``--K``, ``--band``, ``--warmup``; options win over the file."""
    if config_file is None:
        return (EngineConfig.from_sample(sample, K=K, band=band),
                parse_duration_ns(warmup, "--warmup"))
    ctx = click.get_current_context()
    given = {name for name in ("sample", "K", "band", "warmup")
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    overrides: dict[str, int] = {name: value for name, value in (("K", K), ("band", band))
                                 if name in given}
    if "warmup" in given:
        overrides["warmup_ns"] = parse_duration_ns(warmup, "--warmup")
    settings = load_config_file(config_file, sample=sample if "sample" in given else None,
                                overrides=overrides)
    return settings.config, settings.warmup_ns


_DEFAULTS = EngineConfig()


def engine_options(fn: F) -> F:
    """``--config``, ``--warmup``, ``--sample``, ``--K``, ``--band`` (see :func:`engine_config`)."""
    for option in reversed([
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="vp.toml with engine parameters (docs/config.md); "
                     "options given on the command line win."),
        click.option("--warmup", default=DEFAULT_WARMUP, show_default=True,
                     help="Full-engine warm-up before --start-time, e.g. 30m, 5m, 90s."),
        click.option("--sample", default=DEFAULT_SAMPLE, show_default=True,
                     help="Emission: a duration (25ms: last state per bin), 'packet' or "
                          "'event'."),
        click.option("--K", "K", type=click.IntRange(1, 10_000), default=_DEFAULTS.K,
                     show_default=True, help="Grid half-width: 2K+1 buckets around spot."),
        click.option("--band", type=click.IntRange(1), default=_DEFAULTS.band,
                     show_default=True, help="Buckets of state kept around spot (>= K)."),
    ]):
        fn = option(fn)
    return fn
