"""``vpbatch live``: the Databento live feed through build's engine, recorded and watched."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from cli.options import (
    engine_config,
    engine_options,
    lake_option,
    model_options,
    model_scorer,
    parse_date_option,
    parse_time_option,
    publisher_option,
    quiet_option,
    stage_lake,
)
from vpbatch.errors import ConfigError


def _gateway(value: str | None) -> tuple[str | None, int]:
    if not value:
        return None, 13000
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not port:
        return value, 13000
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--gateway: '{value}' is not HOST or HOST:PORT")
    return host, int(port)


@click.command("live")
@click.option("--symbol", required=True, metavar="SYMBOL[,SYMBOL...]",
              help="Contracts or tickers of one dataset (MNQH6 or MNQH6,ESH6).")
@click.option("--dt", "day", metavar="YYYY-MM-DD", callback=parse_date_option,
              help="Session date: where --warm replay starts and where partitions go "
                   "[default: today, UTC].")
@click.option("--dataset", default=None, help="Databento dataset [default: the product's].")
@click.option("--warm", type=click.Choice(["replay", "snapshot", "none"]), default="replay",
              show_default=True,
              help="replay: from the start of the day file; snapshot: MBO snapshot, then live; "
                   "none: live only.")
@click.option("--start-time", metavar="HH:MM", callback=parse_time_option,
              help="Emit from this America/New_York time (warm-up before, as build).")
@click.option("--end-time", metavar="HH:MM", callback=parse_time_option,
              help="End the session at this time (needs --start-time).")
@engine_options
@click.option("--grace", default="50ms", show_default=True,
              help="live_grace: a heartbeat closes a time bin this long after its end.")
@click.option("--no-record", is_flag=True,
              help="Watch only: no recording and no partitions.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Viewer address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8002, show_default=True,
              help="Viewer TCP port.")
@click.option("--no-serve", is_flag=True, help="No viewer server.")
@click.option("--token", envvar="VPBATCH_TOKEN", default=None, metavar="SECRET",
              help="Require this token from the page and the websocket (env VPBATCH_TOKEN).")
@click.option("--gateway", metavar="HOST[:PORT]", default=None,
              help="Another live gateway than Databento's (tests, on-premise).")
@click.option("--heartbeat", type=click.IntRange(5, 1800), default=30, show_default=True,
              help="Gateway heartbeat interval in seconds; silence past it + 10 s reconnects.")
@model_options
@publisher_option
@lake_option
@quiet_option
def command(symbol: str, day: dt.date | None, dataset: str | None, warm: str,
            start_time: dt.time | None, end_time: dt.time | None, warmup: str, sample: str,
            K: int, band: int, config_file: Path | None, grace: str, no_record: bool,
            host: str, port: int, no_serve: bool, token: str | None, gateway: str | None,
            heartbeat: int, model_file: Path | None, model_name: str | None,
            model_target: str | None, publisher_id: int | None, lake: Path | str,
            quiet: bool) -> None:
    """Run Databento's live MBO feed through the build engine: record, write, watch.

    The key comes from DATABENTO_API_KEY. The session replays the day from its start
    (--warm replay), records every record once to the lake's raw area
    (<day file>.live-<SYMBOL>.mbo.dbn.zst), writes the emitted states as partitions like
    build's, and serves the viewer at http://HOST:PORT/ (source=live). It ends, exit 0, when
    the gateway ends the session, at --end-time, or on Ctrl-C / SIGTERM. Authentication,
    entitlement and symbol errors exit 3. With --model FILE, a fitted model's call and
    probability go with every state: in the viewer (a second band) and in the partitions,
    as `vpbatch build --model` of the recording computes them. docs/live.md has the
    guarantees.

    \b
    Example:
      vpbatch live --symbol MNQH6 --start-time 09:30
      vpbatch live --symbol MNQH6,ESH6 --warm snapshot --no-record --port 8003
      vpbatch live --symbol MNQH6 --start-time 09:30 --model model.json
    """
    from vpbatch.config import parse_duration_ns
    from vpbatch.live.session import LiveRequest, check_live_request, run_live

    symbols = tuple(s.strip() for s in symbol.split(",") if s.strip())
    config, warmup_ns = engine_config(config_file, sample, K, band, warmup)
    scorer = model_scorer(model_file, model_name, model_target)
    gw_host, gw_port = _gateway(gateway)
    day = day or dt.datetime.now(dt.UTC).date()
    # An object-store lake: the recording grows in a local stage (its earlier recordings of
    # the day copied in, so an existing one is refused), uploaded when the command ends; the
    # partitions are committed to the store itself.
    record_lake = stage_lake(lake, lambda rel: f"-{day:%Y%m%d}.live-" in rel.rsplit("/", 1)[-1])
    req = LiveRequest(symbols=symbols, day=day, lake=record_lake,
                      gold_lake=None if isinstance(lake, Path) else lake,
                      dataset=dataset, warm=warm, start_time=start_time, end_time=end_time,
                      warmup_ns=warmup_ns, config=config, record=not no_record,
                      gateway=gw_host, port=gw_port, heartbeat_s=heartbeat,
                      grace_ns=parse_duration_ns(grace, "--grace"), publisher_id=publisher_id,
                      scorer=scorer)
    check_live_request(req)  # before the viewer server starts (a model that does not fit)

    def report(fields: dict[str, Any]) -> None:
        if not quiet:
            click.echo(f"\rlive: {fields['state']:<12} {fields['records']:>12,} records "
                       f"({fields['records_per_s']:,}/s) reconnects {fields['reconnects']} "
                       f"gaps {len(fields['gaps'])}   ", err=True, nl=False)

    if no_serve:
        result = run_live(req, report=report)
    else:
        from vpbatch.live.viewers import serving

        with serving(req, lake, host=host, port=port, token=token) as (feeds, url):
            click.echo(f"vpbatch live: {url} (Ctrl-C to stop)", err=True)
            result = run_live(req, feeds=feeds, report=report)
    if not quiet:
        click.echo("", err=True)
    stage = click.get_current_context().meta.get("vpbatch.stage")
    for r in result.symbols:
        where = ", ".join(str(p) for p in r.partitions.values()) or "no partitions"
        recording = r.recording if stage is None or r.recording is None \
            else stage.location(r.recording)
        click.echo(f"{r.symbol}: {r.status}, {r.records:,} records, {r.states:,} states, "
                   f"{r.late} late; recording {recording or '-'}; {where}")
        if r.other_publishers:
            click.echo(f"{r.symbol}: {r.other_publishers:,} records of other publishers than "
                       f"{r.publisher_id} were recorded but not in the engine (build the "
                       f"recording with --publisher {r.publisher_id})", err=True)
    stats = result.stats
    click.echo(f"session: {stats.records:,} records, {len(stats.reconnects)} reconnects, "
               f"{stats.duplicates:,} duplicates dropped, {len(stats.gaps)} gaps")
    sys.stdout.flush()
