"""``--lake s3://...`` for synth, build, verify, sql and cache, against a real S3 server.

A build into the bucket writes the Parquet bytes of a build into a folder; verify and sql read
the bucket with the folder's results. A build killed mid-run leaves no visible partition and
the re-run commits; of two concurrent builds one commits and the other reports it skipped.
A missing bucket, refused credentials or an unreachable endpoint: one line naming the URL,
exit 3.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from moto import settings as moto_settings

from cli.main import cli
from tests.s3.conftest import keys, subprocess_env
from vpbatch.products import resolve_product
from vpbatch.store import find_partition, list_partitions, open_lake, partition_manifest
from vpbatch.store.lake import PART_FILE, gold_partition
from vpbatch.store.lease import read_lease
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
PRODUCT = resolve_product(SYMBOL)
FEB6 = dt.date(2026, 2, 6)
FEB9 = dt.date(2026, 2, 9)
KEY = ("future_mbo", SYMBOL, "2026-02-06")
WINDOW = ("--start-time", "09:30", "--end-time", "09:40")
REPO = Path(__file__).parents[2]
LEASE = "gold/.locks/future_mbo.MNQH6.2026-02-06.lock"


@pytest.fixture(scope="module")
def raw_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw synthetic sessions for 2026-02-06 and 2026-02-09 (200k records each)."""
    root = tmp_path_factory.mktemp("s3_raw")
    synth_to_lake(root, SYMBOL, FEB6, records=200_000, seed=21)
    synth_to_lake(root, SYMBOL, FEB9, records=200_000, seed=22)
    return root


@pytest.fixture(scope="module")
def long_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200,000-record 2026-02-06: built with --sample event (several seconds on a bucket:
    long enough to kill it mid-write, or to start a second build while it holds the lease)."""
    root = tmp_path_factory.mktemp("s3_long")
    synth_to_lake(root, SYMBOL, FEB6, records=200_000, seed=23)
    return root


def upload_raw(raw: Path, lake_url: str) -> None:
    lake = open_lake(lake_url)
    for path in sorted((raw / "raw").rglob("*")):
        if path.is_file():
            lake.upload(path, lake.loc(*path.relative_to(raw).parts))


def folder_lake(raw: Path, where: Path) -> Path:
    shutil.copytree(raw / "raw", where / "raw")
    return where


def invoke(*args: str | Path, ok: bool = False) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.stderr
    return result


def build(lake: str | Path, *args: str, ok: bool = False) -> Result:
    return invoke("build", "-q", "--symbol", SYMBOL, "--lake", lake, *args, ok=ok)


def part_bytes(lake: str | Path, day: dt.date = FEB6) -> dict[str, bytes]:
    out = {}
    for table in ("vp_snapshot", "vp_grid"):
        if isinstance(lake, Path):
            out[table] = (gold_partition(lake, table, PRODUCT, day) / PART_FILE).read_bytes()
        else:
            part = find_partition(lake, table, "future_mbo", SYMBOL, day.isoformat())
            assert part is not None, (table, day)
            out[table] = open_lake(lake).read_bytes(part.part_url)
    return out


def test_build_into_bucket_gives_the_folder_bytes_and_verify_and_sql_agree(
        raw_days: Path, lake_url: str, tmp_path: Path) -> None:
    folder = folder_lake(raw_days, tmp_path / "lake")
    upload_raw(raw_days, lake_url)
    build(folder, "--dt", "2026-02-06", *WINDOW, ok=True)
    result = build(lake_url, "--dt", "2026-02-06", *WINDOW, ok=True)

    lines = result.stdout.splitlines()
    assert lines[0].startswith("MNQH6 2026-02-06: built ")
    assert lines[1].startswith(f"  vp_grid: {lake_url}/gold/vp_grid/product_type=future_mbo/"
                               "symbol=MNQH6/dt=2026-02-06/attempt-00000001-")
    assert part_bytes(lake_url) == part_bytes(folder)
    part = find_partition(lake_url, "vp_grid", *KEY)
    assert part is not None
    (read,) = partition_manifest(part)["inputs"]
    assert read["path"] == (f"{lake_url}/raw/source=databento/product_type=future_mbo/"
                            "symbol=MNQ/table=market_by_order_dbn/glbx-mdp3-20260206.mbo.dbn.zst")
    local = json.loads((gold_partition(folder, "vp_grid", PRODUCT, FEB6)
                        / "_MANIFEST.json").read_text())["inputs"][0]
    assert (read["name"], read["size"], read["sha256"]) == (local["name"], local["size"],
                                                            local["sha256"])

    checked = invoke("verify", "--symbol", SYMBOL, "--lake", lake_url, ok=True)
    assert checked.stdout.splitlines()[-1] == "14 of 14 checks passed in 1 partition(s)"
    query = ("SELECT dt, count(*) AS cells, round(sum(pressure_now), 6) AS p, "
             "round(sum(vacuum_now), 6) AS v FROM vp WHERE k BETWEEN -3 AND 3 GROUP BY dt")
    from_bucket = invoke("sql", "--format", "csv", "--lake", lake_url, query, ok=True)
    from_folder = invoke("sql", "--format", "csv", "--lake", folder, query, ok=True)
    assert from_bucket.stdout == from_folder.stdout and from_bucket.stdout.count("\n") == 2

    again = build(lake_url, "--dt", "2026-02-06", *WINDOW, ok=True)
    assert again.stdout == ("MNQH6 2026-02-06: skipped — partition already built "
                            "(use --force to rebuild)\n")
    assert keys(lake_url, "gold/.locks") == []


def test_build_jobs_2_into_bucket_gives_the_bytes_of_jobs_1_into_a_folder(
        raw_days: Path, lake_url: str, tmp_path: Path) -> None:
    folder = folder_lake(raw_days, tmp_path / "lake")
    upload_raw(raw_days, lake_url)
    span = ("--start", "2026-02-06", "--end", "2026-02-09", "--json", *WINDOW)
    in_folder = json.loads(build(folder, *span, "--jobs", "1", ok=True).stdout)
    in_bucket = json.loads(build(lake_url, *span, "--jobs", "2", ok=True).stdout)
    assert [(r["dt"], r["status"]) for r in in_bucket] == [
        (r["dt"], r["status"]) for r in in_folder] == [
        ("2026-02-06", "built"), ("2026-02-07", "no-data"), ("2026-02-08", "no-data"),
        ("2026-02-09", "built")]
    for day in (FEB6, FEB9):
        assert part_bytes(lake_url, day) == part_bytes(folder, day)


def test_synth_into_bucket_writes_the_raw_file_there(lake_url: str, tmp_path: Path) -> None:
    result = invoke("synth", "-q", "--records", "20000", "--dt", "2026-02-06", "--lake",
                    lake_url, ok=True)
    name = ("raw/source=databento/product_type=future_mbo/symbol=MNQ/"
            "table=market_by_order_dbn/glbx-mdp3-20260206.mbo.dbn.zst")
    assert result.stdout.splitlines()[0] == f"{lake_url}/{name}"
    assert keys(lake_url) == [name]
    local = invoke("synth", "-q", "--records", "20000", "--dt", "2026-02-06", "--lake",
                   tmp_path, ok=True)
    assert open_lake(lake_url).read_bytes(f"{lake_url}/{name}") == \
        Path(local.stdout.splitlines()[0]).read_bytes()


def test_book_cache_of_a_bucket_lake_is_on_the_host_or_in_the_store(
        raw_days: Path, lake_url: str, host_cache: Path, bucket: str) -> None:
    upload_raw(raw_days, lake_url)
    args = ("--dt", "2026-02-06", *WINDOW)
    assert "cache miss" in build(lake_url, *args, ok=True).stdout
    assert sorted(p.name for p in host_cache.iterdir())[-1] == "inputs.json"
    assert len(list(host_cache.glob("*.npz"))) == 1
    assert "cache hit" in build(lake_url, *args, "--force", ok=True).stdout

    shared = f"s3://{bucket}/book-cache"
    assert "cache miss" in build(lake_url, *args, "--force", "--cache", shared, ok=True).stdout
    assert "cache hit" in build(lake_url, *args, "--force", "--cache", shared, ok=True).stdout
    assert sorted(k.rsplit(".", 1)[-1] for k in keys(shared)) == ["json", "npz"]
    listed = invoke("cache", "ls", "--lake", lake_url, "--cache", shared, ok=True)
    assert listed.stdout.splitlines()[-1].startswith("1 entries, ")
    assert listed.stdout.splitlines()[-1].endswith(f" in {shared}")
    on_host = invoke("cache", "ls", "--lake", lake_url, ok=True)
    assert on_host.stdout.splitlines()[-1].endswith(f" in {host_cache}")
    cleared = invoke("cache", "clear", "--lake", lake_url, "--cache", shared, ok=True)
    assert cleared.stdout == f"removed 1 cache entry from {shared}\n"
    assert keys(shared) == []


# -- a killed build, two builds at once ---------------------------------------------------------

LONG = ("--dt", "2026-02-06", "--sample", "event", "--K", "10", "--no-cache")


def spawn(lake_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "build", "-q", "--symbol", SYMBOL, "--lake", lake_url,
         *LONG], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str],
             timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"build ended (exit {proc.returncode}) before the condition: {out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)


def holds_lease(lake_url: str, proc: subprocess.Popen[str]) -> Callable[[], bool]:
    def check() -> bool:
        body = read_lease(open_lake(lake_url), f"{lake_url}/{LEASE}")
        return body is not None and body["owner"]["pid"] == proc.pid
    return check


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_build_killed_mid_run_leaves_no_partition_and_the_rerun_commits(
        long_day: Path, lake_url: str, procs: list[subprocess.Popen[str]]) -> None:
    upload_raw(long_day, lake_url)
    proc = spawn(lake_url)
    procs.append(proc)
    wait_for(holds_lease(lake_url, proc), proc)  # writing its attempt
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    assert list_partitions(lake_url, "vp_snapshot") == []
    assert keys(lake_url, "gold/_commits") == []
    counted = invoke("sql", "--format", "csv", "--lake", lake_url,
                     "SELECT count(*) AS n FROM vp_grid", ok=True)
    assert counted.stdout == "n\n0\n"

    rerun = build(lake_url, *LONG, ok=True)
    assert rerun.stdout.startswith("MNQH6 2026-02-06: built ")
    assert invoke("verify", "--symbol", SYMBOL, "--lake", lake_url).exit_code == 0
    gold = keys(lake_url, "gold")
    assert len({k.split("/")[-2] for k in gold if "/attempt-" in k}) == 1
    assert keys(lake_url, "gold/.locks") == [] and open_lake(lake_url).uploads(
        f"{lake_url}/gold/") == []


def test_two_concurrent_builds_one_commits_the_other_reports_skipped(
        long_day: Path, lake_url: str, procs: list[subprocess.Popen[str]]) -> None:
    upload_raw(long_day, lake_url)
    first = spawn(lake_url)
    procs.append(first)
    wait_for(holds_lease(lake_url, first), first)  # the first is building
    second = spawn(lake_url)
    procs.append(second)
    outputs = [p.communicate(timeout=300) for p in (first, second)]

    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert outputs[0][0].startswith("MNQH6 2026-02-06: built ")
    assert outputs[1][0] == ("MNQH6 2026-02-06: skipped — partition already built "
                             "(use --force to rebuild)\n")
    assert "another build of future_mbo.MNQH6.2026-02-06 is running" in outputs[1][1]
    assert [k.rsplit("/", 1)[-1] for k in keys(lake_url, "gold/_commits")] == ["00000001.json"]
    assert len({k.split("/")[-2] for k in keys(lake_url, "gold") if "/attempt-" in k}) == 1
    assert invoke("verify", "--symbol", SYMBOL, "--lake", lake_url).exit_code == 0


# -- the store refuses ---------------------------------------------------------------------------

COMMANDS = {
    "build": ("build", "-q", "--symbol", SYMBOL, "--dt", "2026-02-06"),
    "verify": ("verify", "--symbol", SYMBOL),
    "sql": ("sql", "SELECT count(*) FROM vp_grid"),
    "cache": ("cache", "ls", "--cache", "{lake}/cache"),
    "synth": ("synth", "-q", "--records", "1000"),
}


@pytest.fixture
def refusing(s3_server: str) -> Iterator[None]:
    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # every request authenticated: none passes
    try:
        yield
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def _refused(command: str, lake: str) -> Result:
    args = [a.format(lake=lake) for a in COMMANDS[command]]
    return CliRunner().invoke(cli, [*args, "--lake", lake])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_bucket_is_one_line_naming_the_url_exit_3(command: str, s3_server: str) -> None:
    lake = "s3://vpbatch-no-such-bucket/lake"
    result = _refused(command, lake)
    assert result.exit_code == 3, result.output
    named = f"{lake}/cache" if command == "cache" else lake  # the cache's own URL
    assert result.stderr == f"Error: {named}: bucket 'vpbatch-no-such-bucket' does not exist\n"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_wrong_credentials_are_one_line_naming_the_url_exit_3(
        command: str, lake_url: str, refusing: None) -> None:
    result = _refused(command, lake_url)
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith(f"Error: {lake_url}")
    assert ": access denied (" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["build", "sql"])
def test_unreachable_endpoint_is_one_line_naming_the_url_exit_3(
        command: str, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # botocore retries a refused connection with back-off (~8 s) before the same error
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = _refused(command, "s3://some-bucket/lake")
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Error: s3://some-bucket/lake: cannot reach the object "
                                    "store at http://127.0.0.1:9 (")
    assert result.stderr.count("\n") == 1


def test_lake_url_of_an_unsupported_scheme_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["sql", "--lake", "gs://bucket/lake", "SELECT 1"])
    assert result.exit_code == 2
    assert "scheme 'gs' is not supported; use a folder or s3://bucket/prefix" in result.stderr


def test_lake_url_for_a_command_that_reads_folders_only_is_a_usage_error() -> None:
    """``info`` reads a local file (give it a PATH); every other command takes a store."""
    result = CliRunner().invoke(cli, ["info", "--symbol", SYMBOL, "--dt", "2026-02-06",
                                      "--lake", "s3://bucket/lake"])
    assert result.exit_code == 2
    assert "vpbatch info reads a lake folder only" in result.stderr
