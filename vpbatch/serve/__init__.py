"""``vpbatch serve``: the live view (websocket stream of grids + a heatmap page)."""

from __future__ import annotations

from vpbatch.serve.app import create_app
from vpbatch.serve.server import run_server

__all__ = ["create_app", "run_server"]
