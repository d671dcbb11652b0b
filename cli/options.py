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


#: Commands that take an object-store ``--lake`` (``s3://bucket/prefix``); the others read a
#: lake folder until they are wired to :mod:`vpbatch.store`.
URL_LAKE_COMMANDS: set[str] = {"build", "verify", "sql", "cache", "synth", "download", "serve",
                               "plot", "report", "live", "evaluate", "fit"}


def _command_names(ctx: click.Context) -> list[str]:
    names = []
    current: click.Context | None = ctx
    while current is not None:
        names.append(current.command.name or "")
        current = current.parent
    return names


def parse_lake_option(ctx: click.Context, param: click.Parameter,
                      value: str | None) -> Path | str | None:
    """Click callback of ``--lake``: a folder (Path) or an object-store URL (str).

    A URL with a scheme vpbatch cannot serve, or given to a command that reads folders only,
    is a usage error (exit 2).
    """
    if value is None:
        return None
    text = str(value)
    if "://" not in text or text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    from vpbatch.store.fs import open_lake

    try:
        url = open_lake(text).url
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--lake {text}: ")) from None
    names = _command_names(ctx)
    if not URL_LAKE_COMMANDS.intersection(names):
        raise click.BadParameter(f"'{text}': vpbatch {names[0]} reads a lake folder only "
                                 f"(object-store lakes: {', '.join(sorted(URL_LAKE_COMMANDS))})")
    return url


def lake_option(fn: F) -> F:
    """``--lake DIR|URL``: the lake root (``$VPBATCH_LAKE``, default ``./lake``): a folder, or
    ``s3://bucket/prefix`` (credentials and endpoint from the standard AWS environment)."""
    return click.option(
        "--lake",
        callback=parse_lake_option,
        default="lake",
        envvar="VPBATCH_LAKE",
        show_default=True,
        metavar="DIR|URL",
        help="Lake root: a folder, or s3://bucket/prefix (credentials, endpoint and region "
             "from the standard AWS environment: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, "
             "AWS_REGION, AWS_PROFILE...) (env VPBATCH_LAKE).",
    )(fn)


def cache_option(fn: F) -> F:
    """``--cache DIR|URL``: where the book-state cache is (``$VPBATCH_CACHE``)."""
    return click.option(
        "--cache",
        envvar="VPBATCH_CACHE",
        default=None,
        metavar="DIR|URL",
        help="Book-state cache folder, or s3://bucket/prefix to share it through the store "
             "(default: LAKE/cache/book for a folder lake; ~/.cache/vpbatch/book on each host "
             "for an object-store lake) (env VPBATCH_CACHE).",
    )(fn)


def stage_lake(lake: Path | str, include: Callable[[str], bool] | None = None) -> Path:
    """A local folder for a command that writes raw files through local names (synth,
    download): the lake folder itself, or for an object-store lake a stage whose new files
    are uploaded when the command ends (:class:`vpbatch.store.staging.Stage`)."""
    if isinstance(lake, Path):
        return lake
    from vpbatch.store.staging import Stage

    stage = Stage(lake, include)
    ctx = click.get_current_context()

    def finish() -> None:
        stage.close()
        if stage.uploaded:
            click.echo(f"uploaded {len(stage.uploaded)} file(s) to {stage.lake.url}", err=True)

    ctx.call_on_close(finish)
    ctx.meta["vpbatch.stage"] = stage
    return stage.root


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


def model_options(fn: F) -> F:
    """``--model FILE``, ``--model-name``, ``--model-target`` (see :func:`model_scorer`)."""
    for option in reversed([
        click.option("--model", "model_file", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="A `vpbatch fit` model JSON: its call and P(up) per "
                     "state become vp_snapshot's model_call and model_probability (and the "
                     "viewer's second band); the manifest names the file and its sha256."),
        click.option("--model-name", metavar="NAME", default=None,
                     help="Which model of the file (l1, vp, vp+l1) [default: the file's]."),
        click.option("--model-target", metavar="TARGET", default=None,
                     help="Which target's model (event_1, clock_5s, ...) [default: the "
                          "file's]."),
    ]):
        fn = option(fn)
    return fn


def model_scorer(model_file: Path | None, name: str | None, target: str | None) -> Any:
    """The :class:`vpbatch.fit.online.ModelScorer` of ``--model`` (None without it).

    Raises
    ------
    click.UsageError
        ``--model-name`` or ``--model-target`` without ``--model``.
    InputError, ConfigError
        A missing or malformed file (exit 3); no such model in it.
    """
    if model_file is None:
        if name is not None or target is not None:
            raise click.UsageError("--model-name and --model-target choose a model of --model "
                                   "FILE; give --model too")
        return None
    from vpbatch.fit.online import ModelScorer

    return ModelScorer.from_file(model_file, name, target)
