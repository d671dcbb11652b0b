"""Cold start (issue 22): what the first ``vpbatch build`` of a fresh install pays before and
after numba's cache is warm.

    python -m benchmarks.startup            # 5,000,000-record day, 1 s sampling
    python -m benchmarks.startup compile    # only the per-kernel compile table

Every run gets its own ``NUMBA_CACHE_DIR`` (the in-tree cache other runs use is never
touched): an empty one for "cold", one filled by ``python -m vpbatch.book.precompile`` (what
``make install`` runs) for "after install", one filled by a previous build for "cached".
The day is ``vpbatch synth --records 5000000`` (``BENCH_SPARSE_RECORDS``), the sparse day of
``make bench``, built whole at 1 s sampling. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench"
RECORDS = int(os.environ.get("BENCH_SPARSE_RECORDS", "5000000"))
SYMBOL, DAY = "MNQH6", "2026-02-06"

#: Run in a fresh process: a cold build with numba's compile events recorded per dispatcher.
_PROFILE = """
import json, sys, time
from collections import defaultdict
from numba.core import event

incl, excl, count, stack = defaultdict(float), defaultdict(float), defaultdict(int), []

class Compiles(event.Listener):
    def on_start(self, ev):
        f = ev.data["dispatcher"].py_func
        stack.append([f"{f.__module__}.{f.__qualname__}", time.perf_counter(), 0.0])

    def on_end(self, ev):
        name, t0, child = stack.pop()
        took = time.perf_counter() - t0
        incl[name] += took
        excl[name] += took - child
        count[name] += 1
        if stack:
            stack[-1][2] += took

event.register("numba:compile", Compiles())
import atexit  # the CLI ends by cli.main.fast_exit, which runs exit handlers
atexit.register(lambda: print(json.dumps({k: [excl[k], incl[k], count[k]] for k in incl}),
                              file=sys.stderr))
from cli.main import main
sys.argv = ["vpbatch", *sys.argv[1:]]
main()
"""


def _build_args(lake: Path) -> list[str]:
    return ["build", "--symbol", SYMBOL, "--dt", DAY, "--sample", "1s", "--lake", str(lake),
            "--force", "--quiet"]


def _timed(cmd: list[str], cache: Path) -> tuple[float, str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stderr


def _vpbatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def prepare_lake() -> Path:
    """The benchmark day linked into a lake of its own (generated once into .bench/)."""
    WORK.mkdir(exist_ok=True)
    raw = WORK / f"synth-{RECORDS}.mbo.dbn.zst"
    if not raw.exists():
        subprocess.run([sys.executable, "-m", "benchmarks.steps", "synth", str(raw),
                        str(RECORDS)], cwd=ROOT, check=True, capture_output=True)
    lake = WORK / "startup-lake"
    shutil.rmtree(lake, ignore_errors=True)
    folder = (lake / "raw" / "source=databento" / "product_type=future_mbo" / "symbol=MNQ"
              / "table=market_by_order_dbn")
    folder.mkdir(parents=True)
    os.link(raw, folder / f"glbx-mdp3-{DAY.replace('-', '')}.mbo.dbn.zst")
    return lake


def compile_table(lake: Path, scratch: Path) -> tuple[float, list[tuple[str, float, float, int]]]:
    """A cold build with every dispatcher's compile time: (wall, [(name, excl, incl, n)])."""
    cache = scratch / "profile-cache"
    wall, err = _timed([sys.executable, "-c", _PROFILE, *_build_args(lake)], cache)
    stats = json.loads(err.strip().splitlines()[-1])
    rows = sorted(((k, *v) for k, v in stats.items()), key=lambda r: -r[1])
    return wall, rows


def startup(lake: Path, scratch: Path, repeats: int = 3) -> dict[str, Any]:
    """Cold, after-precompile and cached wall times of the build, and the precompile's own."""
    out: dict[str, Any] = {}
    out["cold"], _ = _timed(_vpbatch(*_build_args(lake)), scratch / "cold")
    out["cached"] = statistics.median(
        _timed(_vpbatch(*_build_args(lake)), scratch / "cold")[0] for _ in range(repeats))
    if importlib.util.find_spec("vpbatch.book.precompile") is not None:  # absent before #22
        installed = scratch / "installed"
        out["precompile"], _ = _timed([sys.executable, "-m", "vpbatch.book.precompile"],
                                      installed)
        out["after_precompile"], _ = _timed(_vpbatch(*_build_args(lake)), installed)
    return out


def main(argv: list[str]) -> None:
    lake = prepare_lake()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vpbatch-startup-") as tmp:
        scratch = Path(tmp)
        wall, rows = compile_table(lake, scratch)
        total = sum(r[1] for r in rows)
        print(f"Cold build with compile events: {wall:.1f} s wall, {total:.1f} s compiling "
              f"(load {load:.1f})\n")
        print("| dispatcher | compiles | own s | with callees s |\n|---|---|---|---|")
        for name, own, inclusive, n in rows[:25]:
            print(f"| `{name}` | {n} | {own:.2f} | {inclusive:.2f} |")
        if argv[:1] == ["compile"]:
            return
        times = startup(lake, scratch)
    print(f"\n| `vpbatch build`, {RECORDS:,}-record day, 1 s sampling | wall |\n|---|---|")
    print(f"| empty numba cache (first build of a fresh install) | {times['cold']:.1f} s |")
    if "precompile" in times:
        print(f"| `python -m vpbatch.book.precompile` (what `make install` adds) "
              f"| {times['precompile']:.1f} s |")
        print(f"| first build after it | {times['after_precompile']:.1f} s |")
    print(f"| cached (median of 3) | {times['cached']:.1f} s |")
    print(f"\nLoad average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after.")


if __name__ == "__main__":
    main(sys.argv[1:])
