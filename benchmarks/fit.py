"""``python -m benchmarks.fit``: features, fits and ``evaluate --models`` on the benchmark day.

Uses the day of ``benchmarks.evaluate`` (the ``BENCH_RECORDS``-record MNQH6 day built
09:30-16:00 ET into ``.bench/lake-eval``; synthesized and built there when absent), then times,
in a fresh process with a warm numba cache, what ``vpbatch evaluate --models l1,vp,vp+l1``
does: read ``vp_snapshot``, compute the features, fit the three models walk-forward for the
seven targets (first half trains), and evaluate every predictor with 1,000 bootstrap
resamples and the paired differences. Then, separately, what ``vpbatch fit`` does on the whole
day. Appends one entry to BENCHMARKS.md.

``python -m benchmarks.fit step LAKE`` runs only the timed step and prints JSON.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.evaluate import DAY, RECORDS, ROOT, SYMBOL, _run, bench_lake


def step(lake: str) -> dict[str, Any]:
    """Timed in-process, in the order ``evaluate --models`` runs them."""
    from vpbatch.evaluate.evaluation import (
        compute_predictors,
        compute_targets,
        evaluate_states,
        load_states,
        walk_forward_splits,
    )
    from vpbatch.evaluate.stats import Bootstrap
    from vpbatch.fit import fit_models
    from vpbatch.fit.features import feature_matrix
    from vpbatch.fit.train import Design
    from vpbatch.fit.walkforward import DIFFERENCES, fitted_predictors

    load = os.getloadavg()[0]
    marks = [time.perf_counter()]
    cpu0 = time.process_time()
    states = load_states(Path(lake), SYMBOL, DAY, DAY)
    marks.append(time.perf_counter())
    design = Design.of(feature_matrix(Path(lake), SYMBOL, states), inplace=True)
    marks.append(time.perf_counter())
    targets = compute_targets(states)
    _, splits = walk_forward_splits(states)
    fitted, fits = fitted_predictors(states, design, targets, splits, ("l1", "vp", "vp+l1"))
    marks.append(time.perf_counter())
    base = compute_predictors(states)
    ev = evaluate_states(states, symbol=SYMBOL, settings=Bootstrap(), targets=targets,
                         predictors=base[:-1] + fitted + base[-1:],
                         differences=[DIFFERENCES[0]])
    marks.append(time.perf_counter())
    cpu = time.process_time() - cpu0
    fit_start = time.perf_counter()
    file = fit_models(Path(lake), SYMBOL, DAY, DAY)
    fit_seconds = time.perf_counter() - fit_start
    read, features, fitting, evaluating = (b - a for a, b in itertools.pairwise(marks))
    return {"states": states.total, "usable": len(states), "tested": ev.states["test"],
            "read_seconds": read, "features_seconds": features, "fit_seconds": fitting,
            "evaluate_seconds": evaluating, "total_seconds": marks[-1] - marks[0],
            "cpu_seconds": cpu, "fits": len(fits), "results": len(ev.results),
            "differences": len(ev.differences), "fit_command_seconds": fit_seconds,
            "fit_command_models": len(file.models), "load_avg": load,
            "load_avg_after": os.getloadavg()[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main() -> None:
    from benchmarks.run import _commit, _machine

    lake = bench_lake()
    cmd = [sys.executable, "-m", "benchmarks.fit", "step", str(lake)]
    _run(*cmd)  # warm the numba caches (band pass, bootstrap)
    r = json.loads(_run(*cmd).strip().splitlines()[-1])
    text = "\n".join([
        f"## {dt.date.today().isoformat()} — commit {_commit()} — fitted models "
        "(`python -m benchmarks.fit`)",
        "",
        f"Machine: {_machine()}. Numba cache warm.",
        f"Input: the {RECORDS:,}-record synthetic MNQH6 day built 09:30-16:00 ET "
        f"({r['states']:,} states, {r['usable']:,} usable; {r['tested']:,} in the test half).",
        "",
        "| what | figure | peak RSS | command |",
        "|---|---|---|---|",
        f"| `evaluate --models l1,vp,vp+l1` (features, 3 models x 7 targets fitted on the "
        f"first half, 14 predictors x 7 targets x 5 metrics and the paired differences, 1,000 "
        f"resamples) | {r['total_seconds']:.1f} s: read vp_snapshot {r['read_seconds']:.1f} s, "
        f"features {r['features_seconds']:.1f} s, {r['fits']} fits {r['fit_seconds']:.1f} s, "
        f"evaluate {r['evaluate_seconds']:.1f} s ({r['cpu_seconds']:.1f} s CPU) | "
        f"{r['peak_rss_mb']:,.0f} MB | `python -m benchmarks.fit step {lake}` |",
        f"| `vpbatch fit` of the whole day ({r['fit_command_models']} models) | "
        f"{r['fit_command_seconds']:.1f} s | | same step |",
        "",
        f"Load average (1 min) when the step started: {r['load_avg']:.1f}, when it ended: "
        f"{r['load_avg_after']:.1f}, on {os.cpu_count()} cores.",
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
