"""``vpbatch serve``: the live view (websocket stream of grids + a heatmap page).

``create_app`` and ``run_server`` are imported on first use, so ``vpbatch --help`` stays
instant (the app pulls in pyarrow and the engine).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from vpbatch.serve.app import create_app

        return create_app
    if name == "run_server":
        from vpbatch.serve.server import run_server

        return run_server
    raise AttributeError(f"module 'vpbatch.serve' has no attribute {name!r}")
