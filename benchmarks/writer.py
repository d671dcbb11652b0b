"""Emission kernel vs Parquet writer on the same states: ``python -m benchmarks.writer FILE LAKE``.

Builds the book up to 10:00 ET of the bench day, emits 10:00-10:05 (25 ms states) and times
the kernel, then writes the same emitted batches through :class:`PartitionWriter` twice (best
of two). Running it with ``PYTHONPATH`` at an older checkout compares writers in one sitting.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

import vpbatch
from vpbatch.book.engine import Engine
from vpbatch.config import EngineConfig
from vpbatch.ingest.reader import open_mbo
from vpbatch.products import resolve_product
from vpbatch.store.writer import PartitionWriter

DAY = dt.date(2026, 2, 6)


def _ns(hour: int, minute: int) -> int:
    stamp = dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute,
                        tzinfo=ZoneInfo("America/New_York"))
    return int(stamp.timestamp()) * 1_000_000_000


def main() -> None:
    raw, lake = Path(sys.argv[1]), Path(sys.argv[2])
    product, config = resolve_product("MNQH6"), EngineConfig()
    start, end = _ns(10, 0), _ns(10, 5)
    engine = Engine(config, bucket=product.bucket, tick=product.tick)
    warm: list[np.ndarray] = []
    emit: list[np.ndarray] = []
    for chunk in open_mbo(raw).iter_chunks(symbol="MNQH6"):
        ts = chunk["ts_event"]
        if ts[0] >= end:
            break
        engine.process_book_only(chunk[ts < start - 60 * 10**9])
        warm.append(chunk[(ts >= start - 60 * 10**9) & (ts < start)])
        emit.append(chunk[(ts >= start) & (ts < end)])
    engine.set_emitting(False)
    engine.process(np.concatenate(warm))
    engine.set_emitting(True)
    started = time.perf_counter()
    batches = list(engine.stream(np.concatenate(emit)))
    kernel = time.perf_counter() - started
    rows = sum(len(b.grid) for b in batches)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        with PartitionWriter(lake, product, DAY, config=config, force=True) as out:
            for b in batches:
                out.write_snapshots(b.snapshots)
                out.write_grid(b.grid)
        times.append(time.perf_counter() - started)
    print(json.dumps({"vpbatch": str(Path(vpbatch.__file__).parent), "grid_rows": rows,
                      "kernel_rows_per_s": rows / kernel, "writer_rows_per_s": rows / min(times)}))


if __name__ == "__main__":
    main()
