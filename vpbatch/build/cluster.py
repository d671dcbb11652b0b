"""Many (symbol, day) builds: in this process, in local processes, or on any Dask cluster.

A task is one ``(symbol, day)``: :func:`run_task`, a plain function of a picklable
:class:`~vpbatch.build.request.BuildRequest` that returns a picklable
:class:`~vpbatch.build.request.BuildResult`. The same function runs in this process
(``--jobs 1``), in ``--jobs N`` local processes (a process pool, or a
:class:`distributed.LocalCluster`), or on the workers of any Dask scheduler
(``--scheduler tcp://host:8786``): only the address changes. Retries, progress and the
summary sit outside the task, here.

Faults. A day that fails (bad file, unknown symbol) fails alone: its result says
``failed`` and the other tasks go on. A task that raises anything else (an ``OSError`` of a
flaky mount, a bug) is retried ``retries`` times by Dask. A worker that dies mid-task (OOM
kill, preemption, ``kill -9``) makes the scheduler run the task again on another worker
(up to ``distributed.scheduler.allowed-failures`` times, then ``KilledWorker``); the dead
task's partition never looks complete (temp dir + rename) and its lock is broken by the next
build of that partition (:mod:`vpbatch.store.locks`).

Every worker must reach the lake: the same absolute path (a shared mount), or the same
object-store URL (``s3://bucket/prefix``: workers then share no file system at all; each
keeps its book cache on its own disk) and run the same vpbatch version; both are checked
before the first task is submitted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest, BuildResult
from vpbatch.errors import ConfigError, InputError, StoreError, VpbatchError
from vpbatch.ingest.reader import find_input
from vpbatch.memory import reuse_freed_memory
from vpbatch.products import resolve_product
from vpbatch.progress import Progress
from vpbatch.store.fs import is_url, open_lake
from vpbatch.store.lake import find_raw_location

if TYPE_CHECKING:
    from distributed import Client

#: Dask ``retries=`` of a task that raised something other than a VpbatchError.
DEFAULT_RETRIES: Final = 2
#: How long to wait for the scheduler to answer.
CONNECT_TIMEOUT: Final = "30s"
#: Statuses of a result, in summary order.
STATUSES: Final = ("built", "skipped", "no-data", "failed")
#: What runs ``--jobs N`` (N > 1) without a scheduler: "pool" (forked processes) or "dask"
#: (a LocalCluster). The pool is measurably cheaper on one machine (BENCHMARKS.md): a
#: LocalCluster's spawned workers import everything again (4-5 CPU s more per run), and
#: scripts calling it need an ``if __name__ == "__main__"`` guard.
LOCAL_BACKEND: Final = "pool"

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def plan(req: BuildRequest, symbols: Sequence[str], days: Sequence[dt.date]) -> list[BuildRequest]:
    """One request per ``(symbol, day)``, symbol-major, duplicates dropped.

    Paths become absolute, so a worker with another working directory finds the same lake.
    """
    if not symbols:
        raise ConfigError("--symbol: give at least one symbol")
    if req.path is not None and (len(symbols) > 1 or len(days) > 1):
        raise ConfigError("--path is one file, one day: use it with --dt (or alone), not "
                          "with several symbols or --start/--end")
    lake = req.lake if is_url(req.lake) else Path(req.lake).absolute()
    base = replace(req, lake=lake, progress=False,
                   path=Path(req.path).absolute() if req.path else None,
                   definition=Path(req.definition).absolute() if req.definition else None)
    unique_symbols = list(dict.fromkeys(symbols))
    unique_days = sorted(set(days))
    return [replace(base, symbol=s, day=d) for s in unique_symbols for d in unique_days]


def run_task(req: BuildRequest) -> BuildResult:
    """Build one ``(symbol, day)``; a bad day is a ``failed`` result, never an exception.

    Runs anywhere: in this process, a process pool or a Dask worker. Exceptions other than
    :class:`~vpbatch.errors.VpbatchError` (a flaky mount, a bug) propagate so that Dask
    retries the task.
    """
    assert req.day is not None
    reuse_freed_memory()  # also undoes the Dask nanny's MALLOC_TRIM_THRESHOLD_
    host = socket.gethostname()
    lake = open_lake(req.lake)
    if lake.local and req.path is None and not lake.folder.is_dir():
        return BuildResult(req.symbol, req.day, "failed", host=host,
                           message=f"{req.lake}: lake folder not found on host {host} (every "
                           "worker needs the lake at the same path)")
    try:
        if lake.local or req.path is not None:
            find_input(Path(req.lake), req.symbol, req.day, path=req.path)
        else:
            find_raw_location(lake, resolve_product(req.symbol), req.day)
    except StoreError as exc:  # the store refused or cannot be reached from this worker
        return BuildResult(req.symbol, req.day, "failed", message=str(exc), host=host)
    except InputError as exc:
        return BuildResult(req.symbol, req.day, "no-data", message=str(exc), host=host)
    try:
        result = build(req)
    except VpbatchError as exc:  # one bad day must not stop the others
        return BuildResult(req.symbol, req.day, "failed", message=str(exc), host=host)
    result.host = host
    return result


def counts(results: Sequence[BuildResult]) -> dict[str, int]:
    """Results per status, every status present (``built, skipped, no-data, failed``)."""
    return {status: sum(r.status == status for r in results) for status in STATUSES}


def summary_line(results: Sequence[BuildResult]) -> str:
    """``6 tasks: 5 built, 0 skipped, 0 no-data, 1 failed``."""
    n = counts(results)
    return f"{len(results)} tasks: " + ", ".join(f"{n[s]} {s}" for s in STATUSES)


def run_range(tasks: Sequence[BuildRequest], *, jobs: int = 1, scheduler: str | None = None,
              retries: int = DEFAULT_RETRIES, progress: bool = False, log: Log = _stderr,
              local_backend: str = LOCAL_BACKEND) -> list[BuildResult]:
    """Run every task; results in task order.

    Parameters
    ----------
    tasks : sequence of BuildRequest
        From :func:`plan`.
    jobs : int, default 1
        Without ``scheduler``: 1 runs the tasks one after the other in this process (with a
        record progress bar each); N > 1 runs them in N local processes
        (``local_backend``).
    scheduler : str, default None
        Address of a running Dask scheduler (``tcp://host:8786``) or the path of its
        scheduler file (``--scheduler-file`` of ``dask scheduler``).
    retries : int, default 2
        Dask retries of a task that raised, and reruns of a task whose process died (not of
        a ``failed`` day: that is a result).
    progress : bool, default False
        A bar over tasks on stderr (when it is a terminal).
    log : callable, default print to stderr
        Where the scheduler and dashboard addresses go.
    local_backend : str, default :data:`LOCAL_BACKEND`
        ``"pool"`` (forked processes) or ``"dask"`` (a LocalCluster, with its dashboard) for
        ``jobs > 1`` without ``scheduler``; ``make bench-cluster`` compares the two.

    Raises
    ------
    ConfigError
        The scheduler cannot be reached, or a worker cannot see the lake or runs another
        vpbatch version.
    """
    if scheduler is not None:
        with _connect(scheduler) as client:
            return _run_dask(client, tasks, retries=retries, progress=progress, log=log)
    if jobs <= 1:
        return [run_task(replace(t, progress=progress)) for t in tasks]
    if local_backend == "pool":
        return _run_pool(tasks, jobs, progress, retries)
    if local_backend != "dask":
        raise ConfigError(f"local_backend: '{local_backend}' is not valid; use dask or pool")
    with _local_cluster(jobs) as client:
        return _run_dask(client, tasks, retries=retries, progress=progress, log=log)


# -- backends -------------------------------------------------------------------------------


class _Tally:
    """The task bar: one tick per finished task, counts in its description."""

    def __init__(self, total: int, progress: bool) -> None:
        self.bar = Progress(total=total, enabled=progress, phase="tasks", unit="task")
        self.done: list[BuildResult] = []

    def add(self, result: BuildResult) -> None:
        self.done.append(result)
        n = counts(self.done)
        self.bar.update(1)
        self.bar.phase(", ".join(f"{n[s]} {s}" for s in STATUSES if n[s]) or "tasks")


def _run_pool(tasks: Sequence[BuildRequest], jobs: int, progress: bool,
              retries: int) -> list[BuildResult]:
    """Tasks in ``jobs`` forked processes; a pool broken by a dead process is rebuilt and
    its unfinished tasks rerun (``retries`` times each)."""
    results: dict[int, BuildResult] = {}
    attempts = dict.fromkeys(range(len(tasks)), 0)
    pending = list(range(len(tasks)))
    tally = _Tally(len(tasks), progress)
    with tally.bar:
        while pending:
            broken: list[int] = []
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(run_task, tasks[i]): i for i in pending}
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except BrokenProcessPool as exc:
                        attempts[i] += 1
                        if attempts[i] <= retries:
                            broken.append(i)
                            continue
                        results[i] = _crashed(tasks[i], exc)
                    except Exception as exc:  # a crashed task is a failed day
                        results[i] = _crashed(tasks[i], exc)
                    tally.add(results[i])
            pending = sorted(broken)
    return [results[i] for i in range(len(tasks))]


def _crashed(task: BuildRequest, exc: BaseException) -> BuildResult:
    assert task.day is not None
    if type(exc).__name__ == "KilledWorker" or isinstance(exc, BrokenProcessPool):
        message = (f"workers died running this task too often ({exc}); see the worker logs "
                   "(memory limit? OOM killer?)")
    else:
        message = f"{type(exc).__name__}: {exc}"
    return BuildResult(task.symbol, task.day, "failed", message=message)


@contextlib.contextmanager
def _connect(scheduler: str) -> Iterator[Client]:
    from distributed import Client

    kwargs: dict[str, Any] = ({"scheduler_file": scheduler} if os.path.isfile(scheduler)
                              else {"address": scheduler})
    if "address" in kwargs and "://" not in scheduler and ":" not in scheduler:
        raise ConfigError(f"--scheduler: '{scheduler}' is neither an address "
                          "(tcp://host:8786) nor a scheduler file")
    try:
        client = Client(timeout=CONNECT_TIMEOUT, set_as_default=False, **kwargs)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler: "
                          f"{exc}") from None
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _local_cluster(jobs: int) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR)
    try:
        with Client(cluster, set_as_default=False) as client:
            yield client
    finally:
        cluster.close()


def _probe(lake: str) -> dict[str, Any]:
    """What a worker sees (run on every worker before the first task): whether the lake
    folder is there, or why the object store cannot be used from there ('' when it can)."""
    import vpbatch

    seen: bool | str = os.path.isdir(lake)
    if is_url(lake):
        try:
            open_lake(lake).check()
            seen = True
        except VpbatchError as exc:
            seen = str(exc)
    return {"host": socket.gethostname(), "lake": seen, "vpbatch": vpbatch.__version__}


def _check_workers(client: Client, tasks: Sequence[BuildRequest], log: Log) -> None:
    import vpbatch

    lake = str(tasks[0].lake)
    facts: dict[str, dict[str, Any]] = client.run(_probe, lake)
    if not facts:
        log("dask: no workers yet; the tasks wait for workers to join")
    for address, fact in sorted(facts.items()):
        if fact["vpbatch"] != vpbatch.__version__:
            raise ConfigError(f"dask worker {address} (host {fact['host']}) runs vpbatch "
                              f"{fact['vpbatch']}, this client {vpbatch.__version__}: install "
                              "the same version everywhere")
        if isinstance(fact["lake"], str):
            raise ConfigError(f"dask worker {address} (host {fact['host']}) cannot use the "
                              f"lake: {fact['lake']}")
        if tasks[0].path is None and not fact["lake"]:
            raise ConfigError(f"dask worker {address} (host {fact['host']}) cannot see the lake "
                              f"{lake}: mount it at the same path on every worker")


def _dashboard(client: Client) -> str:
    services = client.scheduler_info().get("services", {})
    if "dashboard" not in services:
        return "none (the scheduler runs without a dashboard; install bokeh there)"
    return str(client.dashboard_link)


def _run_dask(client: Client, tasks: Sequence[BuildRequest], *, retries: int, progress: bool,
              log: Log) -> list[BuildResult]:
    from distributed import as_completed as dask_completed

    if not tasks:
        return []
    n_workers = len(client.scheduler_info().get("workers", {}))
    log(f"dask: scheduler {client.scheduler.address}, {n_workers} workers, "
        f"dashboard {_dashboard(client)}")
    _check_workers(client, tasks, log)
    keys = [f"vpbatch-build-{t.symbol}-{t.day}-{os.urandom(4).hex()}" for t in tasks]
    futures = client.map(run_task, list(tasks), key=keys, retries=retries, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    results: dict[int, BuildResult] = {}
    tally = _Tally(len(tasks), progress)
    try:
        with tally.bar:
            for future in dask_completed(futures, loop=client.loop):
                i = index[future.key]
                try:
                    results[i] = future.result()
                except Exception as exc:  # retries spent: a failed day
                    results[i] = _crashed(tasks[i], exc)
                tally.add(results[i])
    finally:
        client.cancel([f for f in futures if not f.done()])
    return [results[i] for i in range(len(tasks))]
