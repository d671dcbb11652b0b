"""The ASGI app of ``vpbatch serve``: health, the list of built days, the viewer page, the
colour scale and the websocket stream.

Routes stay thin: the stream route validates the query into a :class:`StreamRequest`, looks it
up in the lake (:func:`~vpbatch.serve.sources.open_source`) and hands it to a
:class:`~vpbatch.serve.stream.Stream`; a refusal is an ``error`` frame and close code 1008
before any expensive work.
"""

from __future__ import annotations

import asyncio
import hmac
import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import pyarrow.parquet as pq
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from vpbatch import __version__
from vpbatch.errors import ConfigError, InputError, VpbatchError
from vpbatch.memory import cap_malloc_arenas
from vpbatch.serve import protocol
from vpbatch.serve.lake_cache import LakeCache
from vpbatch.serve.live import LiveFeed, LiveStream
from vpbatch.serve.request import LiveRequest, is_live, parse_live_query, parse_query
from vpbatch.serve.scale import color_scale
from vpbatch.serve.sources import Source, built_days, open_source
from vpbatch.serve.stream import Stream, et_text, runtime_fields
from vpbatch.store.fs import Lake, open_lake
from vpbatch.store.partitions import Partition, partition_manifest

STATIC_DIR: Final = Path(__file__).parent / "static"
PAGE: Final = "vacuum-pressure.html"


class _Served:
    """App state: the lake, the token, the live feeds and the open streams (for /health)."""

    def __init__(self, lake: Path | str, token: str | None,
                 live: Mapping[str, LiveFeed] | None = None,
                 cache: LakeCache | None = None) -> None:
        self.lake = open_lake(lake)
        self.token = token
        self.live = {symbol.upper(): feed for symbol, feed in (live or {}).items()}
        self.streams = 0
        #: Decoded lake chunks shared by the streams of each built day.
        self.cache = cache if cache is not None else LakeCache()

    def live_feed(self, req: LiveRequest) -> LiveFeed:
        """The live feed a ``source=live`` request names (refusals name the live symbols)."""
        feed = self.live.get(req.symbol)
        if feed is None or feed.ended:
            live = sorted(s for s, f in self.live.items() if not f.ended)
            state = "has ended" if feed is not None else "is not live here"
            raise InputError(f"symbol: {req.symbol} {state}; live symbols: "
                             f"{', '.join(live) if live else 'none'}")
        if req.product_type is not None and req.product_type != feed.product.product_type:
            raise ConfigError(f"product_type: {req.symbol} is {feed.product.product_type}, "
                              f"not {req.product_type}")
        if req.day is not None and req.day != feed.day:
            raise ConfigError(f"dt: the live session of {req.symbol} is "
                              f"{feed.day.isoformat()}, not {req.day.isoformat()}")
        return feed

    def allowed(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(),
                                                             self.token.encode())


def _span(lake: Lake, part: Partition) -> tuple[int, int] | None:
    """First and last ``ts_event`` of a ``vp_snapshot`` file from its first/last row group."""
    try:
        pf = pq.ParquetFile(part.part_file if lake.local else lake.open_input(part.part_url))
        if pf.metadata.num_rows == 0:
            return None
        first = pf.read_row_group(0, columns=["ts_event"]).column(0)
        last = pf.read_row_group(pf.num_row_groups - 1, columns=["ts_event"]).column(0)
        return (first.cast("int64")[0].as_py(), last.cast("int64")[-1].as_py())
    except OSError:
        return None


def days(lake: Path | str | Lake) -> list[dict[str, Any]]:
    """The built days of the lake with their states and time span (ET)."""
    lake = lake if isinstance(lake, Lake) else open_lake(lake)
    out = []
    for part in built_days(lake):
        try:
            rows = partition_manifest(part).get("tables", {}).get("vp_snapshot", {}).get("rows")
        except VpbatchError:
            rows = None
        span = _span(lake, part)
        out.append({"product_type": part.product_type, "symbol": part.symbol, "dt": part.dt,
                    "states": rows, "first_ns": str(span[0]) if span else None,
                    "last_ns": str(span[1]) if span else None,
                    "start_et": et_text(span[0]) if span else None,
                    "end_et": et_text(span[1]) if span else None})
    return out


def _viewer_url(day: dict[str, Any], token: str | None) -> str:
    query = {"product_type": day["product_type"], "symbol": day["symbol"], "dt": day["dt"],
             "speed": "1", "throttle_ms": "25"}
    if day["start_et"]:
        query["start_time"] = day["start_et"][:8]
    if token:
        query["token"] = token
    return f"/{PAGE}?{urlencode(query)}"


def _live_url(feed: LiveFeed, token: str | None) -> str:
    query = {"product_type": feed.product.product_type, "symbol": feed.product.symbol,
             "dt": feed.day.isoformat(), "source": "live"}
    if token:
        query["token"] = token
    return f"/{PAGE}?{urlencode(query)}"


def _live_html(live: Mapping[str, LiveFeed], token: str | None) -> str:
    """The live sessions' table (empty when there are none)."""
    if not live:
        return ""
    cells = []
    for symbol, feed in sorted(live.items()):
        status = feed.status()
        latency = feed.latency()
        p50 = "" if latency["p50_ms"] is None else f"{latency['p50_ms']:.1f} ms"
        cells.append(
            f"<tr><td>{html.escape(feed.product.product_type)}</td>"
            f"<td><a href=\"{html.escape(_live_url(feed, token))}\">{html.escape(symbol)}</a>"
            f"</td><td>{html.escape(feed.day.isoformat())}</td>"
            f"<td>{html.escape(str(status.get('state', '')))}</td>"
            f"<td class=n>{feed.states_published:,}</td><td class=n>{len(feed.viewers)}</td>"
            f"<td class=n>{p50}</td></tr>")
    return ("<h2>Live sessions</h2><table class=live><thead><tr><th>product type</th>"
            "<th>symbol</th><th>dt</th><th>state</th><th>states</th><th>viewers</th>"
            f"<th>latency p50</th></tr></thead><tbody>{''.join(cells)}</tbody></table>")


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _index_html(rows: list[dict[str, Any]], lake: Lake, token: str | None,
                live: Mapping[str, LiveFeed] | None = None) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(d['product_type'])}</td><td>{html.escape(d['symbol'])}</td>"
        f"<td><a href=\"{html.escape(_viewer_url(d, token))}\">{html.escape(d['dt'])}</a></td>"
        f"<td class=n>{_count(d['states'])}</td>"
        f"<td>{html.escape(d['start_et'] or '')} – {html.escape(d['end_et'] or '')} ET</td></tr>"
        for d in rows)
    body = (f"<table><thead><tr><th>product type</th><th>symbol</th><th>dt</th><th>states</th>"
            f"<th>time span</th></tr></thead><tbody>{cells}</tbody></table>" if rows else
            "<p>No built days yet: run <code>vpbatch build --symbol MNQH6 --dt 2026-02-06 "
            "--start-time 09:30</code>.</p>")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><link rel=icon href=data:,>"
        "<title>vpbatch serve</title>"
        "<link rel=stylesheet href=/static/viewer.css></head><body class=index>"
        f"<h1>vpbatch serve</h1>{_live_html(live or {}, token)}"
        f"<p>Lake <code>{html.escape(lake.url)}</code>: built days "
        f"(click one to watch it).</p>{body}</body></html>")


def create_app(lake: Path | str, *, token: str | None = None,
               live: Mapping[str, LiveFeed] | None = None,
               cache: LakeCache | None = None) -> Starlette:
    """The ``vpbatch serve`` app over ``lake``; with ``token`` every page and stream needs it.

    Parameters
    ----------
    lake : Path or str
        Lake root (``lake/gold/...`` for built days, ``lake/raw/...`` for the raw source).
    token : str, optional
        Shared secret the page (``?token=``) and the websocket (``token=``) must present.
    live : Mapping[str, LiveFeed], optional
        Live feeds by symbol (``vpbatch live``): streamed with ``source=live``, listed on
        ``/`` and reported on ``/health``.
    cache : LakeCache, optional
        The cache of decoded lake chunks the streams of each built day share (default: a new
        one of :data:`~vpbatch.serve.lake_cache.DEFAULT_BUDGET_BYTES`); also
        ``app.state.lake_cache``.
    """
    cap_malloc_arenas()
    served = _Served(lake, token, live, cache)
    served.cache.warm()  # the view's kernel loads in the background, not at the first frame

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "version": __version__,
                                "protocol_version": protocol.PROTOCOL_VERSION,
                                "streams": served.streams, "cache": served.cache.stats()}
        if served.live:
            body["live"] = {symbol: feed.health() for symbol, feed in served.live.items()}
        return JSONResponse(body)

    def _refused(request: Request) -> Response | None:
        if served.allowed(request.query_params.get("token")):
            return None
        return JSONResponse({"type": "error", "message": "token: missing or wrong"},
                            status_code=401)

    async def index(request: Request) -> Response:
        if (refusal := _refused(request)) is not None:
            return refusal
        rows = await asyncio.to_thread(days, served.lake)
        return HTMLResponse(_index_html(rows, served.lake, served.token, served.live))

    async def days_json(request: Request) -> Response:
        if (refusal := _refused(request)) is not None:
            return refusal
        return JSONResponse(await asyncio.to_thread(days, served.lake))

    async def page(request: Request) -> Response:
        if (refusal := _refused(request)) is not None:
            return refusal
        return FileResponse(STATIC_DIR / PAGE, headers={"Cache-Control": "no-cache"})

    async def scale(request: Request) -> Response:
        return JSONResponse(color_scale())

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        params = dict(websocket.query_params)
        if not served.allowed(params.pop("token", None)):
            await _refuse(websocket, "token: missing or wrong")
            return
        if is_live(params):
            await _stream_live(websocket, params)
            return
        try:
            req = parse_query(params)
            source = await _opened(open_source, served.lake, req, served.cache)
        except VpbatchError as exc:
            await _refuse(websocket, str(exc))
            return
        served.streams += 1
        try:
            await Stream(websocket, source, req).run(runtime_fields(source, req))
        finally:
            served.streams -= 1

    async def _stream_live(websocket: WebSocket, params: dict[str, str]) -> None:
        try:
            feed = served.live_feed(parse_live_query(params))
        except VpbatchError as exc:
            await _refuse(websocket, str(exc))
            return
        served.streams += 1
        try:
            await LiveStream(websocket, feed).run()
        finally:
            served.streams -= 1

    routes = [
        Route("/health", health),
        Route("/", index),
        Route("/v1/days", days_json),
        Route(f"/{PAGE}", page),
        Route("/v1/vacuum-pressure/scale.json", scale),
        WebSocketRoute(protocol.STREAM_PATH, stream),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.lake_cache = served.cache
    return app


async def _opened(open_fn: Callable[..., Source], *args: Any) -> Source:
    """``open_fn(*args)`` in a thread; if this task is cancelled meanwhile, the source opened
    anyway is closed (a lake source holds its day in the shared cache until closed)."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, open_fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        def close(done: asyncio.Future[Source]) -> None:
            if not done.cancelled() and done.exception() is None:
                loop.run_in_executor(None, done.result().close)

        future.add_done_callback(close)
        raise


async def _refuse(websocket: WebSocket, message: str) -> None:
    await websocket.send_text(protocol.error(message))
    # A close reason is at most 123 bytes; the full message is in the error frame.
    await websocket.close(protocol.CLOSE_POLICY,
                          reason=message.encode()[:120].decode("utf-8", "ignore"))
