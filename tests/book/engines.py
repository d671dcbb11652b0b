"""The compiled engine behind the reference engine's API, so one test serves both."""

from __future__ import annotations

import numpy as np

from vpbatch.book.engine import Engine
from vpbatch.config import EngineConfig


class CompiledEngine:
    """``vpbatch.book.engine.Engine`` returning ``(snapshots, grid)`` like ``ReferenceEngine``."""

    def __init__(self, config: EngineConfig, bucket: int, tick: int | None = None) -> None:
        self.engine = Engine(config, bucket=bucket, tick=tick)

    def process(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.engine.process(records)
        return out.snapshots, out.grid

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        out = self.engine.finish()
        return out.snapshots, out.grid

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        out = self.engine.state()
        return out.snapshots, out.grid

    def reset_counters(self) -> None:
        self.engine.reset_counters()

    @property
    def anomalies(self) -> dict[str, int]:
        return self.engine.anomalies

    def depth(self, side: int | str, price: int) -> int:
        return self.engine.depth(side, price)

    def best_bid(self) -> int | None:
        return self.engine.best_bid()

    def best_ask(self) -> int | None:
        return self.engine.best_ask()
