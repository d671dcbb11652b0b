"""The ``vpbatch`` click group; errors become exit codes here, in one place."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from typing import Any, NoReturn

import click

from cli import (
    build,
    cache,
    download,
    evaluate,
    fit,
    info,
    live,
    plot,
    products,
    report,
    serve,
    sql,
    synth,
    verify,
)
from vpbatch import __version__
from vpbatch.errors import VpbatchError

#: Exit code of an interrupted run (128 + SIGINT).
EXIT_INTERRUPTED = 130


class VpbatchGroup(click.Group):
    """A click group that turns library errors into ``Error: <message>`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except VpbatchError as exc:
            _report(str(exc), debug)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            # Disk full, permission denied, broken pipe: the environment, not a bug.
            where = f": {exc.filename}" if exc.filename else ""
            _report(f"{exc.strerror or exc}{where}", debug)
            ctx.exit(1)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            click.echo("Interrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _report(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"Error: {message}", err=True)


@click.group(cls=VpbatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vpbatch")
@click.option("--debug", is_flag=True, envvar="VPBATCH_DEBUG",
              help="Show the traceback of an error (env VPBATCH_DEBUG=1).")
def cli(debug: bool) -> None:
    """Batch vacuum/pressure order-flow grids from Databento MBO files.

    Results go to stdout; progress and errors go to stderr.

    \b
    Exit codes:
      0    ok
      1    other error
      2    usage error (bad option or argument)
      3    input or symbol error (missing/corrupt file, unknown symbol, ambiguous publisher;
           live: key, entitlement or symbol refused by the gateway)
      4    verify found violations
      130  interrupted
    """


for _module in (synth, info, products, build, verify, sql, cache, plot, report, evaluate,
                fit, serve, live):
    cli.add_command(_module.command)
cli.add_command(download.command)


def main() -> None:
    """Entry point of the ``vpbatch`` script (``[project.scripts]``) and ``python -m cli``.

    Errors are converted by :class:`VpbatchGroup` (so ``CliRunner`` tests see the same exit
    codes); click's own usage errors exit 2. The process then ends by :func:`fast_exit`.
    """
    try:
        cli.main(prog_name="vpbatch")
    except SystemExit as done:
        fast_exit(done.code)


def fast_exit(code: object) -> NoReturn:
    """End the process without the interpreter's teardown, as mypy does by default.

    Tearing down numba's and pyarrow's objects took 0.15-0.2 s after every command (the
    last collections walk every object the imports made): 6% of a 3 s build. Everything a
    command writes is closed and committed before it returns; the exit handlers still run
    (``atexit``, ``weakref.finalize``: temporary folders, coverage data), then stdout and
    stderr are flushed. While a non-daemon thread still runs, the exit is the usual one.
    """
    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (vpbatch sql | head) or stream
            status = status or 1
    os._exit(status)
