"""``vpbatch build`` as users run it: exact error lines, faults, date ranges, publishers.

In-process through ``CliRunner`` (exit code and the ``Error: ...`` line on stderr), and as
real ``python -m cli build`` processes for ``kill -9`` and two concurrent builds. The
synthetic sessions are generated once per test session and copied into each test's lake.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from vpbatch.build.verify import verify
from vpbatch.products import resolve_product
from vpbatch.store import writer as writer_module
from vpbatch.store.lake import PART_FILE, SUCCESS_FILE, gold_partition, raw_dir
from vpbatch.store.partitions import is_complete, read_success
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
PRODUCT = resolve_product(SYMBOL)
FEB6 = dt.date(2026, 2, 6)  # Friday
FEB9 = dt.date(2026, 2, 9)  # Monday
KEY = "future_mbo.MNQH6.2026-02-06"
WINDOW = ("--start-time", "09:30", "--end-time", "09:40")
REPO = Path(__file__).parents[2]

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
GOOG = "dbeq-basic-goog-20240403.mbo.dbn.zst"
DbnPath = Callable[[str], Path]


@pytest.fixture(scope="session")
def raw_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw synthetic sessions for 2026-02-06 and 2026-02-09 (200k records), generated once."""
    root = tmp_path_factory.mktemp("build_cli_raw")
    synth_to_lake(root, SYMBOL, FEB6, records=200_000, seed=21)
    synth_to_lake(root, SYMBOL, FEB9, records=200_000, seed=22)
    return root


@pytest.fixture(scope="session")
def big_raw_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2,000,000-record session for 2026-02-06: slow enough to kill or race."""
    root = tmp_path_factory.mktemp("build_cli_big")
    synth_to_lake(root, SYMBOL, FEB6, records=2_000_000, seed=23)
    return root


def _copy(raw: Path, tmp_path: Path) -> Path:
    shutil.copytree(raw / "raw", tmp_path / "lake" / "raw")
    return tmp_path / "lake"


@pytest.fixture
def lake(tmp_path: Path, raw_lake: Path) -> Path:
    return _copy(raw_lake, tmp_path)


@pytest.fixture
def big_lake(tmp_path: Path, big_raw_lake: Path) -> Path:
    return _copy(big_raw_lake, tmp_path)


def errors(result: Result) -> str:
    """stderr without the ``--dt … (from the file's header …)`` note of ``--path`` builds."""
    return "".join(line for line in result.stderr.splitlines(keepends=True)
                   if not line.startswith("--dt "))


def run(*args: str | Path, ok: bool = False) -> Result:
    """``vpbatch build -q ARGS`` in process; on the success path let a traceback through."""
    result = CliRunner().invoke(cli, ["build", "-q", *map(str, args)], catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.stderr
    return result


def build_feb6(lake: Path, *args: str, ok: bool = False) -> Result:
    return run("--symbol", SYMBOL, "--dt", "2026-02-06", "--lake", lake, *WINDOW, *args, ok=ok)


def gold_dirs(lake: Path) -> list[Path]:
    """Every partition folder and temp/old folder under ``lake/gold`` (not the lock files)."""
    gold = lake / "gold"
    return sorted([*gold.glob("*/product_type=*/symbol=*/dt=*"), *gold.glob(".tmp.*"),
                   *gold.glob(".old.*")])


def part_bytes(lake: Path, day: dt.date = FEB6) -> dict[str, bytes]:
    return {table: (gold_partition(lake, table, PRODUCT, day) / PART_FILE).read_bytes()
            for table in ("vp_snapshot", "vp_grid")}


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH", "")]))}


def spawn(lake: Path, *args: str) -> subprocess.Popen[str]:
    """``python -m cli build`` in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "build", "-q", "--symbol", SYMBOL, "--dt", "2026-02-06",
         "--lake", str(lake), *args],
        cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


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


# -- bad input: the exact Error line -------------------------------------------------------------


@pytest.mark.parametrize("days", [("--dt", "2026-02-06"),
                                  ("--start", "2026-02-05", "--end", "2026-02-09")],
                         ids=["day", "range"])
def test_build_given_missing_lake_folder_exits_3_naming_it(tmp_path: Path,
                                                           days: tuple[str, ...]) -> None:
    missing = tmp_path / "nolake"
    result = run("--symbol", SYMBOL, *days, "--lake", missing)
    assert result.exit_code == 3
    assert errors(result) == (f"Error: {missing}: lake folder does not exist (give --lake or set "
                             "VPBATCH_LAKE; raw files go under lake/raw/)\n")
    assert not missing.exists()


def test_build_given_date_without_file_exits_3_listing_the_dates(lake: Path) -> None:
    result = run("--symbol", SYMBOL, "--dt", "2026-02-05", "--lake", lake)
    assert result.exit_code == 3
    assert errors(result) == (f"Error: {raw_dir(lake, PRODUCT)}: no MBO file for 2026-02-05 "
                             "(dates there: 20260206, 20260209)\n")
    assert result.stdout == ""


def test_build_given_symbol_not_in_file_exits_3(tmp_path: Path, dbn_path: DbnPath) -> None:
    result = run("--symbol", "ESH5", "--path", dbn_path(ESM4), "--lake", tmp_path)
    assert result.exit_code == 3
    assert errors(result) == f"Error: {ESM4}: symbol 'ESH5' not in file (have: ESM4)\n"
    assert not (tmp_path / "gold").exists()


def test_build_given_start_time_outside_the_data_exits_1(tmp_path: Path,
                                                         dbn_path: DbnPath) -> None:
    result = run("--symbol", "ESM4", "--path", dbn_path(ESM4), "--lake", tmp_path,
                 "--start-time", "09:30")
    assert result.exit_code == 1
    assert errors(result) == (
        f"Error: {ESM4}: --start-time 09:30 ET on 2024-05-08 is outside the data "
        "(2024-05-08 00:00:00 UTC (20:00 ET) to 2024-05-08 00:00:02 UTC (20:00 ET))\n")
    assert not (tmp_path / "gold").exists()


@pytest.mark.parametrize("partition_exists", [False, True], ids=["fresh", "built"])
def test_build_given_end_time_before_start_time_exits_1(lake: Path,
                                                        partition_exists: bool) -> None:
    if partition_exists:  # checked before the "already built" skip
        build_feb6(lake, ok=True)
    result = run("--symbol", SYMBOL, "--dt", "2026-02-06", "--lake", lake,
                 "--start-time", "10:00", "--end-time", "09:30")
    assert result.exit_code == 1
    assert errors(result) == "Error: --end-time 09:30:00 is not after --start-time 10:00:00\n"


def test_build_given_end_time_without_start_time_exits_1(lake: Path) -> None:
    result = run("--symbol", SYMBOL, "--dt", "2026-02-06", "--lake", lake, "--end-time", "10:00")
    assert result.exit_code == 1
    assert errors(result) == "Error: --end-time needs --start-time\n"


@pytest.mark.parametrize(("args", "message"), [
    (("--dt", "2026-02-06", "--start-time", "9h30"),
     "Invalid value for '--start-time': '9h30' is not a time; use HH:MM (America/New_York)"),
    (("--dt", "2026-02-30"),
     "Invalid value for '--dt': '2026-02-30' is not a date; use YYYY-MM-DD"),
    (("--start", "2026-02-02", "--end", "2026-02-31"),
     "Invalid value for '--end': '2026-02-31' is not a date; use YYYY-MM-DD"),
])
def test_build_given_malformed_date_or_time_is_a_usage_error_naming_the_option(
        lake: Path, args: tuple[str, ...], message: str) -> None:
    result = run("--symbol", SYMBOL, "--lake", lake, *args)
    assert result.exit_code == 2  # README: 2 = usage error (bad option or argument)
    assert result.stderr.splitlines()[-1] == f"Error: {message}"
    assert not (lake / "gold").exists()


def test_build_given_malformed_sample_exits_1_naming_the_option(lake: Path) -> None:
    result = run("--symbol", SYMBOL, "--lake", lake, "--dt", "2026-02-06", "--sample", "often")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --sample: 'often' "), result.stderr


def test_build_given_lake_under_a_regular_file_exits_1(tmp_path: Path,
                                                       dbn_path: DbnPath) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run("--symbol", "ESM4", "--path", dbn_path(ESM4), "--lake", blocker / "lake")
    assert result.exit_code == 1
    assert errors(result) == (f"Error: {blocker}/lake/gold: cannot create lake folder: "
                             "Not a directory\n")


# -- faults while writing -------------------------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_build_given_disk_full_mid_build_exits_1_and_leaves_nothing(
        lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: pq.ParquetWriter, *args: Any, **kwargs: Any) -> None:
        raise _enospc()

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    # 09:30-10:00 fills a vp_grid row group during emission (at commit vp_snapshot goes first)
    result = run("--symbol", SYMBOL, "--dt", "2026-02-06", "--lake", lake,
                 "--start-time", "09:30", "--end-time", "10:00")

    assert result.exit_code == 1
    tmp = re.escape(str(lake / "gold" / f".tmp.{KEY}."))
    assert re.fullmatch(rf"Error: {tmp}[0-9a-f]{{32}}/vp_grid/part-0\.parquet: writing vp_grid "
                        rf"failed: No space left on device\n", result.stderr), result.stderr
    assert gold_dirs(lake) == []
    assert not list((lake / "gold").rglob(SUCCESS_FILE))

    monkeypatch.undo()  # space again: the lock was released, the build goes through
    build_feb6(lake, ok=True)
    assert is_complete(lake, PRODUCT, FEB6)


def test_build_given_disk_full_at_commit_of_forced_rebuild_keeps_old_partition(
        lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_feb6(lake, ok=True)
    old_bytes = part_bytes(lake)
    old_build = read_success(gold_partition(lake, "vp_grid", PRODUCT, FEB6))
    real_write = writer_module.write_file_atomic
    successes: list[Path] = []

    def full_on_second_success(path: Path, data: bytes) -> None:
        if path.name == SUCCESS_FILE:
            successes.append(path)
            if len(successes) == 2:  # one table of the new build already has its _SUCCESS
                raise _enospc()
        real_write(path, data)

    monkeypatch.setattr(writer_module, "write_file_atomic", full_on_second_success)
    result = build_feb6(lake, "--force", "--K", "10")

    assert result.exit_code == 1
    snapshot_dir = gold_partition(lake, "vp_snapshot", PRODUCT, FEB6)
    assert errors(result) == f"Error: {snapshot_dir}: commit failed: No space left on device\n"
    assert len(successes) == 2
    assert part_bytes(lake) == old_bytes  # the old build is back, complete
    assert {read_success(gold_partition(lake, t, PRODUCT, FEB6))
            for t in ("vp_snapshot", "vp_grid")} == {old_build}
    assert is_complete(lake, PRODUCT, FEB6)
    assert [p.name for p in gold_dirs(lake)] == ["dt=2026-02-06", "dt=2026-02-06"]


def test_build_given_kill_9_mid_run_leaves_nothing_complete_and_rerun_succeeds(
        big_lake: Path) -> None:
    gold = big_lake / "gold"

    def writing_rows() -> bool:  # a vp_grid row group is on disk: deep in the emission
        sizes = []
        for part in gold.glob(f".tmp.{KEY}.*/vp_grid/{PART_FILE}"):
            with contextlib.suppress(FileNotFoundError):
                sizes.append(part.stat().st_size)
        return any(size > 100_000 for size in sizes)

    proc = spawn(big_lake, "--sample", "event")
    try:
        wait_for(writing_rows, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    leftovers = list(gold.glob(f".tmp.{KEY}.*"))
    assert len(leftovers) == 1  # the dead build's temp folder, never renamed into place
    assert not list(gold.glob("*/product_type=*"))
    assert not list(gold.rglob(SUCCESS_FILE))
    assert not is_complete(big_lake, PRODUCT, FEB6)

    result = build_feb6(big_lake, ok=True)  # no --force needed: nothing was complete
    assert result.stdout.startswith("MNQH6 2026-02-06: built ")
    assert not leftovers[0].exists()  # cleaned by the next build of the partition
    assert [p.parent.parent.parent.name for p in gold_dirs(big_lake)] == ["vp_grid",
                                                                          "vp_snapshot"]
    assert verify(big_lake, SYMBOL, FEB6).passed


def test_build_given_two_concurrent_builds_of_one_partition_one_fails_clearly(
        big_lake: Path) -> None:
    args = ("--start-time", "09:30", "--end-time", "09:45", "--sample", "event", "--K", "10")
    procs = [spawn(big_lake, *args) for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    codes = [proc.returncode for proc in procs]

    assert sorted(codes) == [0, 1], outputs
    (won_out, won_err), (lost_out, lost_err) = outputs[codes.index(0)], outputs[codes.index(1)]
    lock = big_lake / "gold" / ".locks" / f"{KEY}.lock"
    assert re.fullmatch(rf"Error: {re.escape(str(lock))}: another build of {KEY} is running "
                        rf"\(host \S+ pid \d+ since \S+\)\n", lost_err), lost_err
    assert lost_out == ""
    assert won_out.startswith("MNQH6 2026-02-06: built ")
    assert won_err == ""
    assert is_complete(big_lake, PRODUCT, FEB6)
    assert not list((big_lake / "gold").glob(".tmp.*"))
    assert verify(big_lake, SYMBOL, FEB6).passed


# -- skip, date ranges, jobs ---------------------------------------------------------------------


def test_build_given_complete_partition_without_force_prints_skipped(lake: Path) -> None:
    build_feb6(lake, ok=True)
    result = build_feb6(lake, ok=True)
    assert result.stdout == ("MNQH6 2026-02-06: skipped — partition already built "
                             "(use --force to rebuild)\n")
    forced = build_feb6(lake, "--force", ok=True)
    assert forced.stdout.startswith("MNQH6 2026-02-06: built ")


def test_build_given_date_range_with_two_files_builds_both_and_reports_the_rest(
        lake: Path) -> None:
    result = run("--symbol", SYMBOL, "--start", "2026-02-05", "--end", "2026-02-09",
                 "--lake", lake, *WINDOW, ok=True)

    lines = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    folder = raw_dir(lake, PRODUCT)
    for day, line in zip(("2026-02-05", "2026-02-07", "2026-02-08"),
                         (lines[0], lines[2], lines[3]), strict=True):
        assert line == (f"MNQH6 {day}: no-data — {folder}: no MBO file for {day} "
                        "(dates there: 20260206, 20260209)")
    assert lines[1].startswith("MNQH6 2026-02-06: built ")
    assert lines[4].startswith("MNQH6 2026-02-09: built ")
    assert lines[5] == "5 tasks: 2 built, 0 skipped, 3 no-data, 0 failed"
    assert len(lines) == 6
    assert is_complete(lake, PRODUCT, FEB6)
    assert is_complete(lake, PRODUCT, FEB9)
    assert verify(lake, SYMBOL).passed


def test_build_given_date_range_with_one_corrupt_file_builds_the_rest_and_exits_1(
        lake: Path) -> None:
    corrupt = raw_dir(lake, PRODUCT) / "glbx-mdp3-20260209.mbo.dbn.zst"
    corrupt.write_bytes(corrupt.read_bytes()[:5000])
    result = run("--symbol", SYMBOL, "--start", "2026-02-06", "--end", "2026-02-09",
                 "--lake", lake, *WINDOW)
    assert result.exit_code == 1
    assert "MNQH6 2026-02-06: built " in result.stdout
    assert "MNQH6 2026-02-09: failed — " in result.stdout
    assert result.stderr.startswith("Error: 1 of 4 days failed: 2026-02-09: ")
    assert "glbx-mdp3-20260209.mbo.dbn.zst" in result.stderr
    assert is_complete(lake, PRODUCT, FEB6)
    assert not is_complete(lake, PRODUCT, FEB9)


def test_build_given_date_range_without_any_file_exits_1(lake: Path) -> None:
    result = run("--symbol", SYMBOL, "--start", "2026-03-02", "--end", "2026-03-03",
                 "--lake", lake)
    assert result.exit_code == 1
    assert errors(result) == "Error: no input files for MNQH6 in the requested dates\n"
    assert result.stdout.count(": no-data — ") == 2


def test_build_given_path_with_date_range_exits_1_instead_of_copying_one_file_to_each_day(
        tmp_path: Path, dbn_path: DbnPath) -> None:
    result = run("--symbol", "ESM4", "--path", dbn_path(ESM4), "--start", "2024-05-07",
                 "--end", "2024-05-09", "--lake", tmp_path)
    assert result.exit_code == 1
    assert errors(result) == ("Error: --path is one file, one day: use it with --dt (or alone), "
                             "not with --start/--end\n")
    assert not (tmp_path / "gold").exists()


def test_build_given_jobs_2_writes_the_same_bytes_as_jobs_1(tmp_path: Path,
                                                            raw_lake: Path) -> None:
    results: dict[int, list[dict[str, Any]]] = {}
    lakes = {jobs: _copy(raw_lake, tmp_path / f"jobs{jobs}") for jobs in (1, 2)}
    for jobs, lake in lakes.items():
        result = run("--symbol", SYMBOL, "--start", "2026-02-06", "--end", "2026-02-09",
                     "--lake", lake, "--jobs", str(jobs), "--json", *WINDOW, ok=True)
        results[jobs] = json.loads(result.stdout)

    for jobs in (1, 2):
        assert [(r["dt"], r["status"]) for r in results[jobs]] == [
            ("2026-02-06", "built"), ("2026-02-07", "no-data"), ("2026-02-08", "no-data"),
            ("2026-02-09", "built")]
    for day in (FEB6, FEB9):
        assert part_bytes(lakes[2], day) == part_bytes(lakes[1], day)


# -- publishers ----------------------------------------------------------------------------------


def test_build_given_goog_with_publisher_39_builds_and_passes_verify(
        tmp_path: Path, dbn_path: DbnPath) -> None:
    result = run("--symbol", "GOOG", "--path", dbn_path(GOOG), "--lake", tmp_path,
                 "--publisher", "39", "--K", "10", ok=True)
    assert result.stdout.startswith("GOOG 2024-04-03: built ")
    assert "from 17,953 records" in result.stdout
    assert verify(tmp_path, "GOOG", "2024-04-03").passed


def test_build_given_goog_without_publisher_exits_3_listing_publishers(
        tmp_path: Path, dbn_path: DbnPath) -> None:
    result = run("--symbol", "GOOG", "--path", dbn_path(GOOG), "--lake", tmp_path)
    assert result.exit_code == 3
    assert errors(result) == (
        f"Error: {GOOG}: GOOG has records from 3 publishers; choose one publisher id (have: "
        "39 DBEQ.BASIC.XCHI (17,953 records), 40 DBEQ.BASIC.XCIS (2,676 records), "
        "41 DBEQ.BASIC.IEXG (108,314 records))\n")


@pytest.mark.parametrize(("publisher", "name", "tob", "total"), [
    (40, "DBEQ.BASIC.XCIS", "2,636", "2,676"), (41, "DBEQ.BASIC.IEXG", "108,314", "108,314")])
def test_build_given_top_of_book_publisher_exits_3_suggesting_full_depth_one(
        tmp_path: Path, dbn_path: DbnPath, publisher: int, name: str, tob: str,
        total: str) -> None:
    result = run("--symbol", "GOOG", "--path", dbn_path(GOOG), "--lake", tmp_path,
                 "--publisher", str(publisher))
    assert result.exit_code == 3
    assert errors(result) == (
        f"Error: {GOOG}: no state to write for GOOG: publisher {publisher} {name} is a "
        f"top-of-book feed ({tob} of {total} records carry F_TOB: best bid/ask restatements, "
        "not individual orders), so no order book can be rebuilt from it; use a full-depth "
        "publisher: --publisher 39 (DBEQ.BASIC.XCHI)\n")
    assert gold_dirs(tmp_path) == []


def test_build_given_definition_without_the_symbol_exits_3(tmp_path: Path,
                                                           dbn_path: DbnPath) -> None:
    result = run("--symbol", "ESM4", "--path", dbn_path(ESM4), "--definition",
                 dbn_path("glbx-mdp3-es-fut.definition.dbn.zst"), "--lake", tmp_path)
    assert result.exit_code == 3
    assert errors(result) == ("Error: glbx-mdp3-es-fut.definition.dbn.zst: no "
                             "min_price_increment for ESM4\n")


def test_build_given_definition_uses_its_tick_as_the_bucket(
        tmp_path: Path, dbn_path: DbnPath, monkeypatch: pytest.MonkeyPatch) -> None:
    import vpbatch.build.pipeline

    monkeypatch.setattr(vpbatch.build.pipeline, "read_definition_tick",
                        lambda path, symbol: 500_000_000)
    run("--symbol", "ESM4", "--path", dbn_path(ESM4), "--definition", dbn_path(ESM4),
        "--sample", "event", "--lake", tmp_path, ok=True)
    grid = pq.read_table(next((tmp_path / "gold" / "vp_grid").rglob("part-0.parquet")))
    prices = sorted(set(grid.column("price").to_pylist()))
    steps = {round(b - a, 9) for a, b in itertools.pairwise(prices)}
    assert steps == {0.5}
