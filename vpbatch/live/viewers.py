"""The viewer server of a live session: ``vpbatch serve``'s app with one feed per symbol,
on uvicorn in a thread, for as long as the session runs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vpbatch.errors import ConfigError
from vpbatch.products import resolve_product
from vpbatch.serve.server import exposure_warning, viewer_url

if TYPE_CHECKING:
    from vpbatch.live.session import LiveRequest
    from vpbatch.serve.live import LiveFeed

#: Seconds to wait for uvicorn to listen (or to stop).
_START_SECONDS: Final = 20.0


@contextlib.contextmanager
def serving(req: LiveRequest, lake: Path | str, *, host: str, port: int, token: str | None,
            log_level: str = "warning") -> Iterator[tuple[dict[str, LiveFeed], str]]:
    """Serve the viewer for ``req``'s symbols; yields (feeds by symbol, the index URL).

    Raises
    ------
    ConfigError
        When the server cannot listen (port taken, bad address).
    """
    import uvicorn

    from vpbatch.serve.app import create_app
    from vpbatch.serve.live import LiveFeed

    feeds = {s: LiveFeed(resolve_product(s), req.day, req.config, lake=lake)
             for s in req.symbols}
    message = exposure_warning(host, token)
    if message:
        import warnings

        from vpbatch.errors import VpbatchWarning
        warnings.warn(message, VpbatchWarning, stacklevel=3)
    Path(lake).mkdir(parents=True, exist_ok=True)
    config = uvicorn.Config(create_app(Path(lake), token=token, live=feeds), host=host,
                            port=port, log_level=log_level, ws="websockets-sansio",
                            lifespan="off", ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="vpbatch-live-viewers", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"--port: cannot serve the viewer on {host}:{port} (in use?)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    try:
        yield feeds, viewer_url(host, int(bound), token)
    finally:
        for feed in feeds.values():
            feed.end()
        server.should_exit = True
        thread.join(_START_SECONDS)
