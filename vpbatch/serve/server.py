"""Run the app on uvicorn (what ``vpbatch serve`` does)."""

from __future__ import annotations

import ipaddress
import warnings
from pathlib import Path
from typing import Final

from vpbatch.errors import ConfigError, VpbatchWarning

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8002


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning ``vpbatch serve`` prints when the data is reachable from other machines."""
    if is_loopback(host) or token:
        return None
    return (f"serving on {host}: anyone who can reach this port can read the lake's data; "
            "pass --token SECRET to require a token")


def viewer_url(host: str, port: int, token: str | None = None) -> str:
    """The URL of the list of built days."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def check_options(lake: Path | str, port: int) -> None:
    """Refuse a missing lake folder, an unusable object store or a port out of range (before
    anything is printed).

    Raises
    ------
    ConfigError
        Naming the option.
    StoreError
        An object-store lake that cannot be listed (missing bucket, credentials, endpoint).
    """
    from vpbatch.store.fs import is_url, open_lake

    if is_url(lake):
        open_lake(lake).check()
    elif not Path(lake).is_dir():
        raise ConfigError(f"--lake: {lake} is not a folder (build a day first: vpbatch build)")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port} is not a TCP port (0-65535)")


def run_server(lake: Path | str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
               token: str | None = None, log_level: str = "warning") -> None:
    """Serve ``lake`` until interrupted.

    Raises
    ------
    ConfigError
        When the lake folder does not exist or the port is out of range.
    """
    import uvicorn

    from vpbatch.memory import freeze_startup_objects
    from vpbatch.serve.app import create_app

    check_options(lake, port)
    message = exposure_warning(host, token)
    if message:
        warnings.warn(message, VpbatchWarning, stacklevel=2)
    config = uvicorn.Config(create_app(lake, token=token), host=host, port=port,
                            log_level=log_level, ws="websockets-sansio", lifespan="off",
                            ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    freeze_startup_objects()  # full GC passes over start-up objects would stall every stream
    server.run()
