"""``vpbatch serve``: the live view of built (or raw) days in a browser."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from cli.options import lake_option
from vpbatch.serve.server import DEFAULT_HOST, DEFAULT_PORT, exposure_warning, viewer_url


@click.command("serve")
@lake_option
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind; anything but loopback serves the data to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="TCP port.")
@click.option("--token", envvar="VPBATCH_TOKEN", default=None, metavar="SECRET",
              help="Require this token from the page and the websocket (env VPBATCH_TOKEN).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="uvicorn log level.")
def command(lake: Path | str, host: str, port: int, token: str | None, log_level: str) -> None:
    """Stream grids to a browser heatmap: the built days of the lake, at replay speed.

    Opens http://HOST:PORT/ with the list of built days; each links to the viewer
    (/vacuum-pressure.html?...). The websocket /v1/vacuum-pressure/stream speaks the
    protocol in docs/stream.md. Stop with Ctrl-C.

    \b
    Example:
      vpbatch serve --lake lake
      open http://127.0.0.1:8002/vacuum-pressure.html?symbol=MNQH6&dt=2026-02-06&start_time=09:30
    """
    from vpbatch.serve.server import check_options, run_server

    check_options(lake, port)
    message = exposure_warning(host, token)
    if message:
        click.echo(f"Warning: {message}", err=True)
    click.echo(f"vpbatch serve: {viewer_url(host, port, token)} (Ctrl-C to stop)", err=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning was printed above, once
        run_server(lake, host=host, port=port, token=token, log_level=log_level)
