"""A Dask cluster whose workers share no disk builds into a bucket (moto, 127.0.0.1).

A real ``dask scheduler`` and two ``dask worker`` processes, each started in its own empty
temporary folder (working directory, ``TMPDIR``, book cache); the raw files are in the bucket
and so is every byte of output. 3 days x 2 symbols give the bytes of a local ``--jobs 1``
build and pass verify, also when a worker is killed with SIGKILL in the middle of a task.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from tests.dask_cluster import Cluster
from tests.s3.conftest import keys
from vpbatch.build.verify import verify
from vpbatch.products import resolve_product
from vpbatch.store import find_partition, open_lake
from vpbatch.store.lake import PART_FILE, gold_partition
from vpbatch.synth import synth_to_lake

SYMBOLS = ("MNQH6", "ESH6")
DAYS = (dt.date(2026, 2, 4), dt.date(2026, 2, 5), dt.date(2026, 2, 6))
RANGE = ("--symbol", ",".join(SYMBOLS), "--start", "2026-02-04", "--end", "2026-02-06")
ARGS = ("--start-time", "09:30", "--end-time", "10:30", "--K", "10")
TABLES = ("vp_snapshot", "vp_grid")
REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3_cluster_raw")
    for i, (symbol, day) in enumerate((s, d) for s in SYMBOLS for d in DAYS):
        synth_to_lake(root, symbol, day, records=60_000, seed=900 + i)
    return root


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["build", "-q", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def reference(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The range built into a folder with ``--jobs 1`` in this process."""
    lake = tmp_path_factory.mktemp("s3_cluster_ref") / "lake"
    shutil.copytree(raw / "raw", lake / "raw")
    result = run(*RANGE, *ARGS, "--jobs", "1", "--lake", lake)
    assert result.exit_code == 0, result.stderr
    return lake


def in_bucket(raw: Path, lake_url: str) -> str:
    lake = open_lake(lake_url)
    for path in sorted((raw / "raw").rglob("*")):
        if path.is_file():
            lake.upload(path, lake.loc(*path.relative_to(raw).parts))
    return lake_url


def part_bytes(lake: str | Path) -> dict[str, bytes]:
    out = {}
    for table in TABLES:
        for symbol in SYMBOLS:
            product = resolve_product(symbol)
            for day in DAYS:
                if isinstance(lake, Path):
                    data = (gold_partition(lake, table, product, day) / PART_FILE).read_bytes()
                else:
                    part = find_partition(lake, table, product.product_type, symbol,
                                          day.isoformat())
                    assert part is not None, (table, symbol, day)
                    data = open_lake(lake).read_bytes(part.part_url)
                out[f"{table}/{symbol}/{day}"] = data
    return out


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path / "cluster", isolated=True)
    try:
        yield started
    finally:
        started.close()


def attempts(lake_url: str) -> set[str]:
    return {k.rsplit("/", 2)[0] for k in keys(lake_url, "gold") if "/attempt-" in k}


def test_cluster_without_shared_disk_builds_into_bucket_the_bytes_of_jobs_1(
        reference: Path, raw: Path, cluster: Cluster, lake_url: str) -> None:
    in_bucket(raw, lake_url)
    result = run(*RANGE, *ARGS, "--scheduler", cluster.address, "--lake", lake_url)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("6 tasks: 6 built, 0 skipped, 0 no-data, 0 failed\n")
    assert part_bytes(lake_url) == part_bytes(reference)
    for symbol in SYMBOLS:
        assert verify(lake_url, symbol).passed
    assert len(attempts(lake_url)) == 12  # one attempt per table partition, nothing else
    assert keys(lake_url, "gold/.locks") == []
    # the workers' folders hold only their own book caches and logs, no lake files
    for home in cluster.homes:
        assert not list(home.rglob("*.parquet")) and not list(home.rglob("*.dbn.zst"))
        assert len(list((home / "cache" / "vpbatch" / "book").glob("*.npz"))) >= 1


def test_cluster_given_worker_killed_mid_task_completes_and_verifies(
        reference: Path, raw: Path, cluster: Cluster, lake_url: str) -> None:
    in_bucket(raw, lake_url)
    lake = open_lake(lake_url)
    workers = {proc.pid: proc for proc in cluster.workers}
    build = subprocess.Popen(
        [sys.executable, "-m", "cli", "build", "-q", *RANGE, *ARGS, "--scheduler",
         cluster.address, "--lake", lake_url],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: tuple[int, str] | None = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and build.poll() is None and time.monotonic() < deadline:
            for held in lake.find(lake.loc("gold", ".locks")):  # a task holding a lease
                got = lake.get(held.location)
                pid = json.loads(got[0])["owner"]["pid"] if got is not None else None
                if pid in workers:
                    workers[pid].send_signal(signal.SIGKILL)
                    killed = (pid, held.location)
                    break
            time.sleep(0.02)
        out, err = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()

    assert killed is not None, "no task was caught holding a lease"
    assert workers[killed[0]].wait(timeout=30) == -signal.SIGKILL
    assert build.returncode == 0, err
    assert out.endswith("6 tasks: 6 built, 0 skipped, 0 no-data, 0 failed\n")
    assert part_bytes(lake_url) == part_bytes(reference)
    for symbol in SYMBOLS:
        assert verify(lake_url, symbol).passed
    # the dead task's attempt was removed by its rerun, its lease taken over and released
    assert len(attempts(lake_url)) == 12
    assert keys(lake_url, "gold/.locks") == []
