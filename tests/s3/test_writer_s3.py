"""The commit without rename (SPEC §16) on a real S3 server: attempts, markers, readers.

A partition on an object store is the attempt its latest commit marker names; the marker is
created with ``If-None-Match: *``. Same Parquet bytes as a folder lake, nothing visible before
the commit, never two builds mixed, stale attempts removed by the next commit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.fakes import DAY, FakeBuild, fake_build
from tests.s3.conftest import keys, subprocess_env
from vpbatch.errors import PartitionExists
from vpbatch.sql import run_query
from vpbatch.store import (
    find_partition,
    is_complete,
    list_partitions,
    open_lake,
    partition_manifest,
)
from vpbatch.store.lake import GOLD_TABLES, MANIFEST_FILE, PART_FILE, gold_partition
from vpbatch.store.objects import commit_dir, latest_commit
from vpbatch.store.writer import PartitionWriter

GROUPS = {"vp_snapshot": 7, "vp_grid": 50, "mbp": 9}
KEY = ("future_mbo", "MNQH6", DAY.isoformat())


def write(lake: str | Path, build: FakeBuild, *, mbp: bool = True, force: bool = False,
          commit: bool = True) -> PartitionWriter:
    out = PartitionWriter(lake, build.product, build.day, config=build.config, force=force,
                          mbp_levels=build.levels if mbp else None, row_group_rows=GROUPS)
    out.open()
    for part in np.array_split(build.snapshots, 3):
        out.write_snapshots(part)
    for part in np.array_split(build.grid, 3):
        out.write_grid(part)
    if mbp:
        out.write_mbp(build.mbp)
    out.anomalies.update({"cancel_unknown_order": 3})
    if commit:
        out.commit()
    return out


def part_bytes(lake_url: str, table: str) -> bytes:
    part = find_partition(lake_url, table, *KEY)
    assert part is not None
    return open_lake(lake_url).read_bytes(part.part_url)


def attempts(lake_url: str) -> list[str]:
    return sorted({k.split("/")[-2] for k in keys(lake_url, "gold") if "/attempt-" in k})


def test_writer_into_bucket_writes_the_bytes_of_a_folder_and_one_marker(
        lake_url: str, tmp_path: Path) -> None:
    build = fake_build()
    write(tmp_path, build)
    out = write(lake_url, build)

    assert sorted(out.locations) == sorted(GOLD_TABLES)
    for table in GOLD_TABLES:
        folder = gold_partition(tmp_path, table, build.product, DAY)
        assert part_bytes(lake_url, table) == (folder / PART_FILE).read_bytes()
        part = find_partition(lake_url, table, *KEY)
        assert part is not None and part.url == out.locations[table]
        assert part.url.startswith(f"{lake_url}/gold/{table}/product_type=future_mbo/"
                                   "symbol=MNQH6/dt=2026-02-06/attempt-00000001-")
        local = json.loads((folder / MANIFEST_FILE).read_text())
        remote = partition_manifest(part)
        assert {k: v for k, v in remote.items() if k != "timings"} == \
            {k: v for k, v in local.items() if k != "timings"}
    assert keys(lake_url, "gold/_commits") == [
        "gold/_commits/product_type=future_mbo/symbol=MNQH6/dt=2026-02-06/00000001.json"]
    assert keys(lake_url, "gold/.locks") == []  # the lease is released
    assert is_complete(lake_url, build.product, DAY, GOLD_TABLES)
    assert [p.symbol for p in list_partitions(lake_url, "vp_grid")] == ["MNQH6"]
    df = run_query(lake_url, "SELECT count(*) AS n, min(dt) AS dt FROM vp_grid")
    assert df.row(0) == (len(build.grid), DAY)


def test_writer_into_bucket_shows_nothing_before_the_commit(lake_url: str) -> None:
    build = fake_build()
    out = write(lake_url, build, commit=False)
    for table in ("vp_snapshot", "vp_grid"):
        out._sinks[table]._writer.close()  # a row group or two uploaded: still invisible
    assert list_partitions(lake_url, "vp_snapshot") == []
    assert not is_complete(lake_url, build.product, DAY)
    assert run_query(lake_url, "SELECT count(*) FROM vp_snapshot").item() == 0
    out.abort()
    assert keys(lake_url, "gold") == []  # attempt and lease gone


def test_writer_given_complete_partition_refuses_and_force_replaces_it_at_once(
        lake_url: str) -> None:
    old, new = fake_build(seed=1), fake_build(seed=2)
    write(lake_url, old)
    old_grid = part_bytes(lake_url, "vp_grid")
    with pytest.raises(PartitionExists, match="partition already built; use --force"):
        write(lake_url, new)

    forced = write(lake_url, new, force=True, commit=False)
    assert part_bytes(lake_url, "vp_grid") == old_grid  # readers see the old build meanwhile
    forced.commit()
    new_grid = part_bytes(lake_url, "vp_grid")
    assert new_grid != old_grid
    commit = latest_commit(open_lake(lake_url), *KEY)
    assert commit is not None and commit.seq == 2
    assert [a.split("-")[1] for a in attempts(lake_url)] == ["00000002"]  # the old one removed
    assert keys(lake_url, "gold/_commits")[-1].endswith("/00000002.json")
    assert len(keys(lake_url, "gold/_commits")) == 1


def test_writer_given_force_without_mbp_retires_the_old_mbp_table(lake_url: str) -> None:
    write(lake_url, fake_build(seed=1), mbp=True)
    write(lake_url, fake_build(seed=2), mbp=False, force=True)
    assert find_partition(lake_url, "mbp", *KEY) is None
    assert not any("/mbp/" in k for k in keys(lake_url, "gold"))


def test_writer_losing_the_commit_race_drops_its_attempt(lake_url: str) -> None:
    build = fake_build()
    out = write(lake_url, build, commit=False)
    # another writer committed number 1 meanwhile (a lease taken over from a stalled host)
    other = {"commit_version": 1, "attempt": "00000001-" + "a" * 32, "build": "b" * 64,
             "tables": ["vp_snapshot", "vp_grid"], "manifest": {"dt": DAY.isoformat()}}
    lake = open_lake(lake_url)
    assert lake.create(f"{commit_dir(lake, *KEY)}/00000001.json", json.dumps(other).encode())
    with pytest.raises(PartitionExists, match=r"another build of future_mbo\.MNQH6\.2026-02-06 "
                                              r"committed first"):
        out.commit()
    assert attempts(lake_url) == []  # its files are gone; the winner's marker stands
    commit = latest_commit(lake, *KEY)
    assert commit is not None and commit.attempt == other["attempt"]


def test_commit_cleans_dead_attempts_and_uploads_but_not_later_ones(lake_url: str) -> None:
    lake = open_lake(lake_url)
    prefix = f"{lake_url}/gold/vp_grid/product_type=future_mbo/symbol=MNQH6/dt=2026-02-06"
    dead = f"{prefix}/attempt-00000001-{'d' * 32}"
    later = f"{prefix}/attempt-00000007-{'e' * 32}"
    lake.put(f"{dead}/{PART_FILE}", b"half a file")
    lake.put(f"{later}/{PART_FILE}", b"a build still running elsewhere")
    bucket, key = lake_url.split("/", 3)[2], f"{dead.split('/', 3)[3]}/big.parquet"
    boto3.client("s3").create_multipart_upload(Bucket=bucket, Key=key)
    assert len(lake.uploads(prefix + "/")) == 1

    write(lake_url, fake_build())
    assert [a.split("-")[1] for a in attempts(lake_url)] == ["00000001", "00000007"]
    assert not lake.exists(f"{dead}/{PART_FILE}") and lake.exists(f"{later}/{PART_FILE}")
    assert lake.uploads(prefix + "/") == []


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from tests.fakes import fake_build
    from vpbatch.store.writer import PartitionWriter

    build = fake_build(seed=4)
    out = PartitionWriter(sys.argv[1], build.product, build.day, config=build.config,
                          row_group_rows={"vp_grid": 11})
    out.open()
    out.write_snapshots(build.snapshots)
    print("writing", flush=True)
    for i in range(0, len(build.grid), 11):
        out.write_grid(build.grid[i:i + 11])
        time.sleep(0.05)
    print("written", flush=True)
    time.sleep(120)
    out.commit()
""")


def test_writer_killed_before_its_commit_leaves_nothing_visible_and_rerun_commits(
        lake_url: str, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), lake_url], stdout=subprocess.PIPE,
                            text=True, env=subprocess_env(), cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    build = fake_build(seed=4)
    assert not is_complete(lake_url, build.product, DAY)
    assert list_partitions(lake_url, "vp_snapshot") == []
    assert keys(lake_url, "gold/_commits") == []
    assert len(keys(lake_url, "gold/.locks")) == 1  # the dead writer's lease

    write(lake_url, build)  # the lease of a dead process on this machine is taken at once
    assert is_complete(lake_url, build.product, DAY, GOLD_TABLES)
    assert len(attempts(lake_url)) == 1 and keys(lake_url, "gold/.locks") == []


def test_verify_on_bucket_reads_each_file_once_and_leaves_no_copy(
        lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    from vpbatch.build.verify import verify

    write(lake_url, fake_build())
    fetched: Counter[str] = Counter()
    read_range = s3fs.core.S3File._fetch_range

    def counted(self: s3fs.core.S3File, start: int, end: int) -> bytes:
        data = read_range(self, start, end)
        fetched[f"s3://{self.path}"] += len(data)
        return bytes(data)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counted)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    report = verify(lake_url, "MNQH6", DAY)
    assert report.passed, report.format()
    lake = open_lake(lake_url)
    parts = {}
    for table in GOLD_TABLES:
        part = find_partition(lake_url, table, *KEY)
        assert part is not None
        parts[part.part_url] = lake.info(part.part_url).size
    assert {url: n for url, n in fetched.items() if url.endswith(PART_FILE)} == parts
    assert list(tmp_path.iterdir()) == []  # the copies are gone


def test_verify_on_bucket_passes_and_names_a_replaced_object(lake_url: str) -> None:
    from vpbatch.build.verify import verify

    write(lake_url, fake_build())
    report = verify(lake_url, "MNQH6", DAY)
    assert report.passed, report.format()
    part = find_partition(lake_url, "vp_grid", *KEY)
    assert part is not None
    lake = open_lake(lake_url)
    data = bytearray(lake.read_bytes(part.part_url))
    data[100] ^= 0xFF  # same size, other bytes
    lake.put(part.part_url, bytes(data))
    failed = verify(lake_url, "MNQH6", DAY)
    first = failed.failures[0]
    assert (first.name, first.example) == (
        "files", f"{part.part_url}: sha256 differs from the manifest")
