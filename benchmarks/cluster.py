"""``make bench-cluster``: ranges on this machine, ``--jobs 1`` against ``--jobs 2``, and the
per-task overhead of the Dask path against an in-process build.

* Speed-up: ``vpbatch build`` over ``BENCH_CLUSTER_DAYS`` synthetic days (default 4 x
  1,000,000 records, 09:30-12:00 ET) run as users run it, with ``--jobs 1`` and ``--jobs 2``,
  and ``run_range(jobs=2)`` with each local backend (process pool, LocalCluster),
  interleaved for ``BENCH_CLUSTER_ROUNDS`` rounds so that a change of load on a shared
  machine hits all three alike; the ratio of medians is the figure.
* Overhead: the same small task (a 60,000-record day) run in this process and submitted one
  at a time to a warm one-worker local Dask cluster; overhead = median difference.

Appends one entry to BENCHMARKS.md with the load average before and after.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.run import _commit, _machine
from vpbatch.build.cluster import LOCAL_BACKEND

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench" / "cluster"
DAYS = int(os.environ.get("BENCH_CLUSTER_DAYS", "4"))
RECORDS = int(os.environ.get("BENCH_CLUSTER_RECORDS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_CLUSTER_ROUNDS", "2"))
TASKS = int(os.environ.get("BENCH_CLUSTER_TASKS", "8"))
WINDOW = ("--start-time", "09:30", "--end-time", "12:00")
FIRST = dt.date(2026, 2, 2)  # a Monday


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _synth(lake: Path, days: list[dt.date], records: int) -> None:
    from vpbatch.synth import synth_to_lake

    for i, day in enumerate(days):
        marker = lake / f".synth-{day}-{records}"
        if not marker.exists():
            synth_to_lake(lake, "MNQH6", day, records=records, seed=700 + i)
            marker.touch()


def _range_command(lake: Path, days: list[dt.date], *extra: str) -> list[str]:
    return [str(Path(sys.executable).with_name("vpbatch")), "build", "-q", "--symbol", "MNQH6",
            "--start", days[0].isoformat(), "--end", days[-1].isoformat(), "--lake", str(lake),
            *WINDOW, "--force", *extra]


def _time(cmd: list[str]) -> float:
    """Wall seconds of ``cmd``; its CPU seconds (user + sys) are added to :data:`CPU`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
    return wall


#: CPU seconds of each timed command, in order.
CPU: list[float] = []


def _backend_command(lake: Path, days: list[dt.date], backend: str) -> list[str]:
    code = ("import sys, datetime as dt; from pathlib import Path; "
            "from vpbatch.build.cluster import plan, run_range; "
            "from vpbatch.build.request import BuildRequest; "
            "from vpbatch.clock import date_range, parse_wall_time; "
            "req = BuildRequest(symbol='MNQH6', day=None, lake=Path(sys.argv[1]), force=True, "
            "start_time=parse_wall_time('09:30', ''), end_time=parse_wall_time('12:00', '')); "
            "days = date_range(dt.date.fromisoformat(sys.argv[2]), "
            "dt.date.fromisoformat(sys.argv[3])); "
            "rs = run_range(plan(req, ['MNQH6'], days), jobs=2, local_backend=sys.argv[4]); "
            "assert all(r.status == 'built' for r in rs), rs")
    return [sys.executable, "-c", code, str(lake), days[0].isoformat(), days[-1].isoformat(),
            backend]


def speedup() -> dict[str, object]:
    lake = WORK / "range"
    days = [FIRST + dt.timedelta(days=i) for i in range(DAYS)]
    _synth(lake, days, RECORDS)
    cmds = {"jobs1": _range_command(lake, days, "--jobs", "1"),
            "jobs2": _range_command(lake, days, "--jobs", "2"),
            "pool2": _backend_command(lake, days, "pool"),
            "dask2": _backend_command(lake, days, "dask")}
    _time(cmds["jobs1"])  # warm the page cache and the book cache
    times: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(ROUNDS):
        for name, cmd in cmds.items():
            times[name].append(_time(cmd))
            cpu[name].append(CPU[-1])
            print(f"{name}: {times[name][-1]:.1f} s, cpu {CPU[-1]:.1f} s (load {_load()})",
                  file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    par = {k: statistics.median(c / t for c, t in zip(cpu[k], times[k], strict=True))
           for k in cmds}
    return {"times": times, "median": med, "commands": cmds, "days": days, "parallelism": par}


def overhead() -> dict[str, float]:
    from distributed import Client, LocalCluster

    from vpbatch.build.cluster import plan, run_task
    from vpbatch.build.request import BuildRequest
    from vpbatch.clock import parse_wall_time

    lake = WORK / "small"
    day = FIRST
    _synth(lake, [day], 60_000)
    req = BuildRequest(symbol="MNQH6", day=day, lake=lake, force=True,
                       start_time=parse_wall_time("09:30", ""),
                       end_time=parse_wall_time("12:00", ""))
    task = plan(req, ["MNQH6"], [day])[0]
    run_task(task)  # load kernels in this process
    local = []
    for _ in range(TASKS):
        started = time.perf_counter()
        assert run_task(task).status == "built"
        local.append(time.perf_counter() - started)
    started = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        startup = time.perf_counter() - started
        t0 = time.perf_counter()
        client.submit(run_task, task, pure=False).result()  # kernels load on the worker
        first = time.perf_counter() - t0
        remote = []
        for _ in range(TASKS):
            t0 = time.perf_counter()
            result = client.submit(run_task, replace(task), pure=False).result()
            remote.append(time.perf_counter() - t0)
            assert result.status == "built"
    return {"local": statistics.median(local), "remote": statistics.median(remote),
            "startup": startup, "first": first}


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    when = dt.datetime.now(dt.UTC)
    s = speedup()
    o = overhead()
    load_after = _load()
    med = s["median"]
    assert isinstance(med, dict)
    days = s["days"]
    assert isinstance(days, list)
    cmds = s["commands"]
    assert isinstance(cmds, dict)

    def show(cmd: list[str]) -> str:
        return " ".join(Path(c).name if c.startswith("/") and "bin/" in c else
                        c.replace(str(ROOT) + "/", "") for c in cmd)

    lines = [
        f"## {when:%Y-%m-%d %H:%M} UTC — commit {_commit()} — `make bench-cluster`",
        "",
        f"Machine: {_machine()}. Numba cache warm. Load average (1/5/15 min) before "
        f"{load_before}, after {load_after} (a shared machine: the ratios below come from "
        f"interleaved runs, {ROUNDS} rounds, medians; CPU/wall = CPU seconds of the command "
        "over its wall seconds: the cores it actually got).",
        f"Input: {len(days)} synthetic MNQH6 days of {RECORDS:,} records (`vpbatch synth`), "
        "built 09:30-12:00 ET with `--force`.",
        "",
        "| what | figure | command |",
        "|---|---|---|",
        f"| range, --jobs 1 | {med['jobs1']:.1f} s (runs {_runs(s, 'jobs1')}) | "
        f"`{show(cmds['jobs1'])}` |",
        f"| range, --jobs 2 (default backend: {LOCAL_BACKEND}) | {med['jobs2']:.1f} s (runs "
        f"{_runs(s, 'jobs2')}); speed-up **{med['jobs1'] / med['jobs2']:.2f}x** | "
        f"`{show(cmds['jobs2'])}` |",
        f"| range, 2 processes, ProcessPoolExecutor backend (from Python) | {med['pool2']:.1f} s "
        f"(runs {_runs(s, 'pool2')}); speed-up {med['jobs1'] / med['pool2']:.2f}x | "
        "`run_range(..., jobs=2, local_backend='pool')` |",
        f"| range, 2 processes, LocalCluster backend (from Python) | {med['dask2']:.1f} s "
        f"(runs {_runs(s, 'dask2')}); speed-up {med['jobs1'] / med['dask2']:.2f}x | "
        "`run_range(..., jobs=2, local_backend='dask')` |",
        f"| one small task (60,000-record day), in process | {o['local']:.2f} s (median of "
        f"{TASKS}) | `run_task(req)` |",
        f"| same task submitted to a warm 1-worker local Dask cluster | {o['remote']:.2f} s; "
        f"per-task overhead **{o['remote'] - o['local']:+.2f} s** | "
        "`client.submit(run_task, req).result()` |",
        f"| local cluster start (1 worker) / first task on a fresh worker (kernels from "
        f"numba's cache) | {o['startup']:.1f} s / {o['first']:.1f} s | `LocalCluster(...)` |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with (ROOT / "BENCHMARKS.md").open("a") as fh:
        fh.write(text + "\n")
    shutil.rmtree(WORK / "range" / "gold", ignore_errors=True)


def _runs(s: dict[str, object], name: str) -> str:
    times, par = s["times"], s["parallelism"]
    assert isinstance(times, dict) and isinstance(par, dict)
    return (", ".join(f"{t:.1f}" for t in times[name])
            + f"; CPU/wall {par[name]:.2f}")


if __name__ == "__main__":
    main()
