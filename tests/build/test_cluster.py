"""``vpbatch build`` on a real Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes on 127.0.0.1, started here exactly as users start them (no mocks, no in-process
cluster). The cluster builds must give the bytes of a ``--jobs 1`` build and pass verify,
also when a worker is killed with SIGKILL in the middle of a task.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from tests.dask_cluster import Cluster
from vpbatch.build.cluster import plan, summary_line
from vpbatch.build.request import BuildRequest, BuildResult
from vpbatch.build.verify import verify
from vpbatch.errors import ConfigError
from vpbatch.products import resolve_product
from vpbatch.store.lake import gold_partition, raw_dir, raw_file_name
from vpbatch.store.writer import PART_FILE, is_complete
from vpbatch.synth import synth_to_lake

SYMBOLS = ("MNQH6", "ESH6")
DAYS = (dt.date(2026, 2, 4), dt.date(2026, 2, 5), dt.date(2026, 2, 6))  # Wed-Fri
RANGE = ("--symbol", ",".join(SYMBOLS), "--start", "2026-02-04", "--end", "2026-02-06")
ARGS = ("--start-time", "09:30", "--end-time", "10:30", "--K", "10")
TABLES = ("vp_snapshot", "vp_grid")
REPO = Path(__file__).parents[2]
#: Workers print numba's cache activity: kernels must be loaded, never compiled.
NUMBA_CACHE_LOG = {"NUMBA_DEBUG_CACHE": "1"}
WORKER_RE = re.compile(r"dask: scheduler (tcp://127\.0\.0\.1:\d+), 2 workers, dashboard "
                       r"(http://127\.0\.0\.1:\d+/status)\n")


@pytest.fixture(scope="module")
def raw_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small synthetic days of two contracts (60k records each)."""
    root = tmp_path_factory.mktemp("cluster_raw")
    for i, (symbol, day) in enumerate((s, d) for s in SYMBOLS for d in DAYS):
        synth_to_lake(root, symbol, day, records=60_000, seed=900 + i)
    return root


def copy_lake(raw: Path, dest: Path) -> Path:
    shutil.copytree(raw / "raw", dest / "raw")
    return dest


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["build", "-q", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def reference(raw_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same range built with ``--jobs 1`` in this process (also warms numba's cache)."""
    lake = copy_lake(raw_lake, tmp_path_factory.mktemp("cluster_ref") / "lake")
    result = run(*RANGE, *ARGS, "--jobs", "1", "--lake", lake)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("6 tasks: 6 built, 0 skipped, 0 no-data, 0 failed\n")
    return lake


def part_bytes(lake: Path) -> dict[str, bytes]:
    return {f"{table}/{symbol}/{day}": (gold_partition(lake, table, resolve_product(symbol), day)
                                        / PART_FILE).read_bytes()
            for table in TABLES for symbol in SYMBOLS for day in DAYS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that keep their workers alive."""
    started = Cluster(tmp_path_factory.mktemp("cluster"), env=NUMBA_CACHE_LOG)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test alone (it kills a worker)."""
    started = Cluster(tmp_path / "cluster", env=NUMBA_CACHE_LOG)
    try:
        yield started
    finally:
        started.close()


def test_build_on_dask_cluster_writes_the_bytes_of_jobs_1_and_verifies(
        reference: Path, cluster: Cluster, raw_lake: Path, tmp_path: Path) -> None:
    lake = copy_lake(raw_lake, tmp_path / "lake")
    result = run(*RANGE, *ARGS, "--scheduler", cluster.address, "--lake", lake)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("6 tasks: 6 built, 0 skipped, 0 no-data, 0 failed\n")
    printed = WORKER_RE.fullmatch(result.stderr)
    assert printed is not None, result.stderr
    assert printed[1] == cluster.address
    with urllib.request.urlopen(printed[2], timeout=30) as page:  # the dashboard is live
        assert page.status == 200
    assert part_bytes(lake) == part_bytes(reference)
    for symbol in SYMBOLS:
        assert verify(lake, symbol).passed
    assert not list((lake / "gold" / ".locks").iterdir())

    # Kernels came from numba's cache on the workers: loaded at most once per worker
    # process (whatever the number of tasks it ran), never compiled and saved.
    logs = [cluster.log(f"worker{i}") for i in range(2)]
    loads = [log.count("[cache] data loaded from") for log in logs]
    assert sum(loads) > 0, logs
    assert all(sum("data loaded from" in line and "kernels.process_chunk" in line
                   for line in log.splitlines()) <= 1 for log in logs), logs
    assert not any("[cache] data saved to" in log for log in logs), logs


def test_build_on_dask_cluster_given_worker_killed_mid_task_completes_and_verifies(
        reference: Path, own_cluster: Cluster, raw_lake: Path, tmp_path: Path) -> None:
    cluster = own_cluster
    lake = copy_lake(raw_lake, tmp_path / "lake")
    locks = lake / "gold" / ".locks"
    workers = {proc.pid: proc for proc in cluster.workers}
    build = subprocess.Popen(
        [sys.executable, "-m", "cli", "build", "-q", *RANGE, *ARGS, "--scheduler",
         cluster.address, "--lake", str(lake)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: tuple[int, str] | None = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and build.poll() is None and time.monotonic() < deadline:
            for owner in locks.glob("*.lock/*.owner"):  # a task holding its partition's lock
                try:
                    pid = json.loads(owner.read_text())["pid"]
                except (OSError, ValueError):
                    continue
                if pid in workers:
                    workers[pid].send_signal(signal.SIGKILL)
                    killed = (pid, owner.parent.name)
                    break
            time.sleep(0.005)
        out, err = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()

    assert killed is not None, "no task was caught holding a lock"
    assert workers[killed[0]].wait(timeout=30) == -signal.SIGKILL
    assert build.returncode == 0, err
    assert out.endswith("6 tasks: 6 built, 0 skipped, 0 no-data, 0 failed\n")
    assert part_bytes(lake) == part_bytes(reference)
    for symbol in SYMBOLS:
        assert verify(lake, symbol).passed
    # The dead task's temp folder and lock were cleaned by its rerun on the other worker.
    assert not list((lake / "gold").glob(".tmp.*"))
    assert not list(locks.iterdir())


def test_build_jobs_2_given_worker_process_killed_mid_task_reruns_it_and_verifies(
        reference: Path, raw_lake: Path, tmp_path: Path) -> None:
    lake = copy_lake(raw_lake, tmp_path / "lake")
    locks = lake / "gold" / ".locks"
    build = subprocess.Popen(
        [sys.executable, "-m", "cli", "build", "-q", *RANGE, *ARGS, "--jobs", "2", "--lake",
         str(lake)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and build.poll() is None and time.monotonic() < deadline:
            for owner in locks.glob("*.lock/*.owner"):
                try:
                    pid = json.loads(owner.read_text())["pid"]
                except (OSError, ValueError):
                    continue
                if pid != build.pid:  # a worker process of this build's pool
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.005)
        out, err = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()

    assert killed is not None, "no task was caught holding a lock"
    assert build.returncode == 0, err
    assert out.endswith("6 tasks: 6 built, 0 skipped, 0 no-data, 0 failed\n")
    assert part_bytes(lake) == part_bytes(reference)
    for symbol in SYMBOLS:
        assert verify(lake, symbol).passed
    assert not list((lake / "gold").glob(".tmp.*"))
    assert not list(locks.iterdir())


def test_build_on_dask_cluster_given_bad_and_missing_days_fails_them_alone(
        reference: Path, cluster: Cluster, raw_lake: Path, tmp_path: Path) -> None:
    lake = copy_lake(raw_lake, tmp_path / "lake")
    product = resolve_product("ESH6")
    corrupt = raw_dir(lake, product) / raw_file_name(product.dataset, DAYS[1])
    corrupt.write_bytes(corrupt.read_bytes()[:4000])
    result = run("--symbol", ",".join(SYMBOLS), "--start", "2026-02-04", "--end", "2026-02-07",
                 *ARGS, "--scheduler", cluster.address, "--lake", lake)

    assert result.exit_code == 1
    assert result.stdout.endswith("8 tasks: 5 built, 0 skipped, 2 no-data, 1 failed\n")
    assert "ESH6 2026-02-05: failed — " in result.stdout
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: 1 of 8 days failed: ESH6 2026-02-05: ")
    assert corrupt.name in error
    assert not is_complete(lake, product, DAYS[1])
    for symbol, day in ((s, d) for s in SYMBOLS for d in DAYS):
        if (symbol, day) != ("ESH6", DAYS[1]):
            assert is_complete(lake, resolve_product(symbol), day)


def test_build_given_unparsable_scheduler_exits_1_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["build", "-q", *RANGE, "--scheduler", "nowhere",
                                      "--lake", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == ("Error: --scheduler: 'nowhere' is neither an address "
                             "(tcp://host:8786) nor a scheduler file\n")


def test_build_given_jobs_with_scheduler_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["build", "-q", *RANGE, "--scheduler", "tcp://127.0.0.1:1",
                                      "--jobs", "2", "--lake", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == ("Error: --jobs is for this machine; with --scheduler the "
                             "cluster's workers run the builds\n")


def test_plan_gives_one_absolute_task_per_symbol_and_day_without_duplicates() -> None:
    req = BuildRequest(symbol="", day=None, lake=Path("lake"), progress=True)
    tasks = plan(req, ["MNQH6", "ESH6", "MNQH6"], [DAYS[1], DAYS[0], DAYS[1]])
    assert [(t.symbol, t.day) for t in tasks] == [
        ("MNQH6", DAYS[0]), ("MNQH6", DAYS[1]), ("ESH6", DAYS[0]), ("ESH6", DAYS[1])]
    assert all(t.lake == Path.cwd() / "lake" and not t.progress for t in tasks)
    with pytest.raises(ConfigError, match="--path is one file, one day"):
        plan(BuildRequest(symbol="", day=None, lake=Path("lake"), path=Path("x.dbn")),
             ["MNQH6"], list(DAYS))


def test_summary_line_counts_every_status() -> None:
    day = DAYS[0]
    results = [BuildResult("A", day, s) for s in ("built", "built", "failed", "no-data")]
    assert summary_line(results) == "4 tasks: 2 built, 0 skipped, 1 no-data, 1 failed"
