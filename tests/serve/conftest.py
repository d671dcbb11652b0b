"""A small built day and a real uvicorn server on 127.0.0.1 for the serve tests."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa
import pytest
import uvicorn
from playwright.sync_api import Browser, sync_playwright
from websockets.sync.client import ClientConnection, connect

from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.serve import create_app
from vpbatch.synth import synth_to_lake

DAY = dt.date(2026, 2, 6)
SYMBOL = "MNQH6"
START = dt.time(9, 30)
END = dt.time(9, 40)
#: Seconds any single websocket receive may take before the test fails.
RECV_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def serve_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MNQH6 day (200k records) built 09:30-09:40 ET (~1,600 states)."""
    root = tmp_path_factory.mktemp("serve-lake")
    synth_to_lake(root, SYMBOL, DAY, records=200_000)
    build(BuildRequest(symbol=SYMBOL, day=DAY, lake=root, start_time=START, end_time=END))
    return root


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                ws="websockets-sansio", lifespan="off",
                                ws_per_message_deflate=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.thread.is_alive() and not any(exc):  # never hide the test's own failure
            raise RuntimeError(f"uvicorn on port {self.port} did not stop within 10 s")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, **params: Any) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/vacuum-pressure/stream?{urlencode(params)}"


@pytest.fixture(scope="session")
def server(serve_lake: Path) -> Iterator[ServerThread]:
    with ServerThread(create_app(serve_lake)) as running:
        yield running


@dataclass
class Received:
    """Everything one stream sent: the config, (update, grid bytes) pairs, the last frame."""

    config: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    grids: list[bytes] = field(default_factory=list)
    last: dict[str, Any] | None = None
    close_code: int | None = None

    def grid_table(self, i: int) -> pa.Table:
        return pa.ipc.open_stream(self.grids[i]).read_all()


def open_stream(server: ServerThread, *, max_queue: int | None = None,
                **params: Any) -> ClientConnection:
    """A websocket client. ``max_queue=None`` reads the socket as fast as frames come (so
    closing is quick); a small ``max_queue`` makes a client that stops reading when it is busy
    (a slow client: the server sees backpressure)."""
    params.setdefault("symbol", SYMBOL)
    params.setdefault("dt", DAY.isoformat())
    return connect(server.ws_url(**params), max_size=None, compression=None,
                   open_timeout=RECV_TIMEOUT, max_queue=max_queue)


def receive(ws: ClientConnection, *, limit: int | None = None) -> Received:
    """Read frames until ``end``/``error``/close (or ``limit`` states)."""
    from websockets.exceptions import ConnectionClosed

    got: Received | None = None
    try:
        while True:
            message = ws.recv(timeout=RECV_TIMEOUT)
            if isinstance(message, bytes):
                assert got is not None and len(got.grids) == len(got.updates) - 1
                got.grids.append(message)
                if limit is not None and len(got.grids) >= limit:
                    return got
                continue
            frame = json.loads(message)
            if got is None:
                if frame["type"] != "runtime_config":
                    got = Received(config={})
                    got.last = frame
                    continue
                got = Received(config=frame)
            elif frame["type"] == "grid_update":
                got.updates.append(frame)
                got.texts.append(message)
            elif frame["type"] == "status":
                continue
            else:
                got.last = frame
    except ConnectionClosed as exc:
        assert got is not None
        got.close_code = exc.rcvd.code if exc.rcvd is not None else None
        return got


def stream_all(server: ServerThread, **params: Any) -> Received:
    with open_stream(server, **params) as ws:
        return receive(ws)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's, driven by Playwright), one per test module."""
    from tests.serve.test_browser import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
