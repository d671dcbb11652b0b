"""Pure-Python ground truth for the compiled engine (dicts and plain loops, no numba)."""

from __future__ import annotations

from .engine import ANOMALY_NAMES, ReferenceEngine

__all__ = ["ANOMALY_NAMES", "ReferenceEngine"]
