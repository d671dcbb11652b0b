"""``make bench-evaluate``: ``vpbatch evaluate`` on the benchmark day (935k states).

Synthesizes the ``BENCH_RECORDS``-record MNQH6 day (default 50,000,000) into ``.bench/`` when
absent, builds it 09:30-16:00 ET into ``.bench/lake-eval`` when not built, then times, in a
fresh process, the read of ``vp_snapshot`` (DuckDB), the evaluation with 1,000 bootstrap
resamples, and within it the bootstrap alone. Appends one entry to BENCHMARKS.md.

``python -m benchmarks.evaluate step LAKE`` runs only the timed step and prints JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench"
RECORDS = int(os.environ.get("BENCH_RECORDS", "50000000"))
SYMBOL = "MNQH6"
DAY = dt.date(2026, 2, 6)


def step(lake: str) -> dict[str, Any]:
    """Timed in-process: load, evaluate (1,000 resamples), and the bootstrap share."""
    import vpbatch.evaluate.evaluation as ev
    import vpbatch.evaluate.stats as stats

    boot_seconds = 0.0
    original = stats.block_bootstrap

    def timed(*args: Any, **kw: Any) -> Any:
        nonlocal boot_seconds
        t0 = time.perf_counter()
        try:
            return original(*args, **kw)
        finally:
            boot_seconds += time.perf_counter() - t0

    ev.block_bootstrap = timed  # type: ignore[assignment]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    states = ev.load_states(Path(lake), SYMBOL, DAY, DAY)
    t1 = time.perf_counter()
    result = ev.evaluate_states(states, symbol=SYMBOL, settings=stats.Bootstrap())
    t2 = time.perf_counter()
    return {"states": states.total, "tested": result.states["test"],
            "load_seconds": t1 - t0, "evaluate_seconds": t2 - t1,
            "bootstrap_seconds": boot_seconds, "results": len(result.results),
            "load_avg": load,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def _run(*args: str) -> str:
    print("$", " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def bench_lake() -> Path:
    """The benchmark day built 09:30-16:00 in ``.bench/lake-eval`` (made once; a complete
    build is skipped by ``vpbatch build`` itself). Shared with ``benchmarks.fit``."""
    WORK.mkdir(exist_ok=True)
    raw = WORK / f"synth-{RECORDS}.mbo.dbn.zst"
    lake = WORK / "lake-eval"
    vpbatch = str(Path(sys.executable).with_name("vpbatch"))
    if not raw.exists():
        _run(vpbatch, "synth", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--records",
             str(RECORDS), "--out", str(raw), "--quiet")
    lake_raw = (lake / "raw" / "source=databento" / "product_type=future_mbo" / "symbol=MNQ"
                / "table=market_by_order_dbn")
    target = lake_raw / "glbx-mdp3-20260206.mbo.dbn.zst"
    if not target.exists():
        lake_raw.mkdir(parents=True, exist_ok=True)
        os.link(raw, target)
    # A complete build is skipped by `vpbatch build` itself (no --force).
    _run(vpbatch, "build", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--start-time", "09:30",
         "--end-time", "16:00", "--lake", str(lake), "--quiet")
    return lake


def main() -> None:
    from benchmarks.run import _commit, _machine

    lake = bench_lake()
    cmd = [sys.executable, "-m", "benchmarks.evaluate", "step", str(lake)]
    _run(*cmd)  # warm the numba cache of the bootstrap kernel
    r = json.loads(_run(*cmd).strip().splitlines()[-1])
    text = "\n".join([
        f"## {dt.date.today().isoformat()} — commit {_commit()} — `make bench-evaluate`",
        "",
        f"Machine: {_machine()}. Numba cache warm.",
        f"Input: the {RECORDS:,}-record synthetic MNQH6 day built 09:30-16:00 ET "
        f"({r['states']:,} states; {r['tested']:,} in the test half).",
        "",
        "| what | figure | peak RSS | command |",
        "|---|---|---|---|",
        f"| evaluate (7 targets x 11 predictors x 5 metrics, 1,000 moving-block resamples) | "
        f"{r['load_seconds'] + r['evaluate_seconds']:.1f} s: read vp_snapshot "
        f"{r['load_seconds']:.1f} s, evaluate {r['evaluate_seconds']:.1f} s, of which bootstrap "
        f"{r['bootstrap_seconds']:.1f} s | {r['peak_rss_mb']:,.0f} MB | "
        f"`python -m benchmarks.evaluate step {lake}` |",
        "",
        f"Load average (1 min) when the step started: {r['load_avg']:.1f} on {os.cpu_count()} "
        "cores.",
        "",
    ])
    print(text)
    with (ROOT / "BENCHMARKS.md").open("a") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["step"]:
        print(json.dumps(step(sys.argv[2])))
    else:
        main()
