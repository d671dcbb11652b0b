"""One benchmark step per process: ``python -m benchmarks.steps <step> <args…>``.

Each step prints one JSON object with its own wall time, records/s and peak RSS, so the
figures of one step are not polluted by another's memory.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SESSION_DAY = dt.date(2026, 2, 6)
SYMBOL = "MNQH6"
BUCKET = 250_000_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step_synth(path: str, records: str) -> dict[str, Any]:
    from vpbatch.synth import synth_session

    started = time.perf_counter()
    stats = synth_session(Path(path), symbol=SYMBOL, day=SESSION_DAY, records=int(records))
    wall = time.perf_counter() - started
    return {"records": stats.records, "seconds": wall, "bytes": Path(path).stat().st_size}


def step_read(path: str) -> dict[str, Any]:
    from vpbatch.ingest.reader import open_mbo

    started = time.perf_counter()
    n = 0
    for chunk in open_mbo(Path(path)).iter_chunks(symbol=SYMBOL):
        n += len(chunk)
    return {"records": n, "seconds": time.perf_counter() - started}


def step_engine(path: str, mode: str) -> dict[str, Any]:
    """Full engine without emission, or the book-only fast path, over the whole file.

    ``full-noregime`` runs the full engine with the regime clock pushed out of reach: the
    difference to ``full`` is the cost of the regime evaluations (a per-unit-of-time cost).
    """
    from vpbatch.book.dtypes import MBO_DTYPE
    from vpbatch.book.engine import Engine
    from vpbatch.config import EngineConfig
    from vpbatch.ingest.reader import open_mbo

    config = EngineConfig(regime_step_ns=10**18) if mode == "full-noregime" else EngineConfig()
    warm = Engine(config, bucket=BUCKET)  # compile / load the numba cache first
    warm.process_book_only(np.zeros(0, dtype=MBO_DTYPE))
    engine = Engine(config, bucket=BUCKET)
    engine.set_emitting(False)
    n = 0
    busy = 0.0
    max_orders = 0
    for chunk in open_mbo(Path(path)).iter_chunks(symbol=SYMBOL):
        started = time.perf_counter()
        if mode == "book":
            engine.process_book_only(chunk)
        else:
            engine.process(chunk)
        busy += time.perf_counter() - started
        n += len(chunk)
        max_orders = max(max_orders, engine.live_orders)
    return {"records": n, "seconds": busy, "live_orders_end": engine.live_orders,
            "live_orders_max_at_chunk_end": max_orders}


def step_reference(path: str, records: str) -> dict[str, Any]:
    """Compiled vs pure-Python reference on the same slice of the busiest part of the day."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.reference.engine import ReferenceEngine
    from vpbatch.book.engine import Engine
    from vpbatch.config import EngineConfig
    from vpbatch.ingest.reader import open_mbo

    want = int(records)
    chunks, total = [], 0
    for chunk in open_mbo(Path(path)).iter_chunks(symbol=SYMBOL, chunk_records=want):
        chunks.append(chunk)
        total += len(chunk)
        if total >= 4 * want:
            break
    head = np.concatenate(chunks)[: 4 * want]
    config = EngineConfig()
    fast = Engine(config, bucket=BUCKET)
    fast.process_book_only(head[:want])
    fast.set_emitting(False)
    slow = ReferenceEngine(config, BUCKET)
    slow.process(head[:want])  # same starting book (reference has no fast path)
    body = head[want: 2 * want]
    started = time.perf_counter()
    fast.process(body)
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    slow.process(body)
    slow_s = time.perf_counter() - started
    return {"records": len(body), "compiled_seconds": fast_s, "reference_seconds": slow_s,
            "ratio": slow_s / fast_s}


def step_build(lake: str, cache: str) -> dict[str, Any]:
    """The product run: 09:30-16:00 ET with the default 25 ms sampling."""
    from vpbatch.build.pipeline import build
    from vpbatch.build.request import BuildRequest
    from vpbatch.config import EngineConfig

    req = BuildRequest(symbol=SYMBOL, day=SESSION_DAY, lake=Path(lake),
                       start_time=dt.time(9, 30), end_time=dt.time(16, 0),
                       config=EngineConfig(), force=True, use_cache=cache == "on")
    started = time.perf_counter()
    result = build(req)
    wall = time.perf_counter() - started
    part = result.partitions["vp_grid"] / "part-0.parquet"
    grid_rows = result.rows["vp_grid"]
    return {"records": result.records, "seconds": wall, "cache": result.cache,
            "timings": result.timings, "states": result.rows["vp_snapshot"],
            "grid_rows": grid_rows, "grid_bytes": part.stat().st_size,
            "anomalies": sum(result.anomalies.values())}


def step_cli(path: str, runs: str = "5") -> dict[str, Any]:
    """``vpbatch --help`` and ``vpbatch info FILE`` in fresh processes, bytecode not written.

    Best and median of ``runs`` runs each (the machine is shared: the best is the cost, the
    median shows the noise).
    """
    import os
    import statistics
    import subprocess

    exe = str(Path(sys.executable).with_name("vpbatch"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out: dict[str, Any] = {"records": 0, "seconds": 0.0}
    for name, args in (("help", [exe, "--help"]), ("info", [exe, "info", path])):
        times = []
        for _ in range(int(runs)):
            started = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - started)
        out[f"{name}_best"] = min(times)
        out[f"{name}_median"] = statistics.median(times)
    return out


def step_split(batches: str = "1211") -> dict[str, Any]:
    """Engine grid rows -> stored columns (``StoredGridBuffer.add``) as a build converts them:
    batches of 64 states (101 rows each, random values), 1,211 of them being the 5M-record
    day at 1 s sampling (7,829,520 rows). Best of 3, after a first call loads the kernels."""
    from vpbatch.book.dtypes import GRID_DTYPE, SNAPSHOT_DTYPE
    from vpbatch.store.grid_columns import StoredGridBuffer

    rng = np.random.default_rng(1)
    rows = np.zeros(64 * 101, GRID_DTYPE)
    for name in GRID_DTYPE.names:
        rows[name] = rng.normal(0, 100, len(rows)).astype(GRID_DTYPE[name])
    snapshots = np.zeros(64, SNAPSHOT_DTYPE)
    StoredGridBuffer(len(rows), lambda columns: None).add(snapshots, rows)
    best = float("inf")
    for _ in range(3):
        buffer = StoredGridBuffer(262_144, lambda columns: None)
        started = time.perf_counter()
        for _ in range(int(batches)):
            buffer.add(snapshots, rows)
        best = min(best, time.perf_counter() - started)
    return {"rows": int(batches) * len(rows), "seconds": best}


def step_load() -> dict[str, Any]:
    """What a build pays before its first record, in this fresh process: importing the engine
    and the column split, and loading their compiled kernels from numba's cache (run it once
    first, so that the cache is filled)."""
    started = time.perf_counter()
    from vpbatch.book.engine import load_kernels
    from vpbatch.store.grid_columns import load_kernels as load_column_kernels

    load_kernels()
    load_column_kernels()
    return {"seconds": time.perf_counter() - started,
            "scipy_linalg_imported": "scipy.linalg" in sys.modules}


def step_verify(lake: str, symbol: str = SYMBOL, day: str = SESSION_DAY.isoformat()
                ) -> dict[str, Any]:
    """``vpbatch verify`` of one partition, with the seconds of each check (each from the end
    of the one before it: the first check also carries opening the partition)."""
    from vpbatch.build import verify as verify_module

    checks: dict[str, float] = {}
    add = verify_module._Partition.add
    last = time.perf_counter()

    def timed_add(part: Any, name: str, *args: Any) -> None:
        nonlocal last
        now = time.perf_counter()
        checks[name] = round(now - last, 3)
        last = now
        add(part, name, *args)

    verify_module._Partition.add = timed_add  # type: ignore[method-assign]
    started = time.perf_counter()
    report = verify_module.verify(lake, symbol, day)
    return {"seconds": time.perf_counter() - started, "passed": report.passed, "checks": checks}


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "synth": step_synth, "read": step_read, "engine": step_engine, "reference": step_reference,
    "build": step_build, "cli": step_cli, "split": step_split, "load": step_load,
    "verify": step_verify}


def main() -> None:
    name, *args = sys.argv[1:]
    out = STEPS[name](*args)
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
