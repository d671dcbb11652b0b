"""vpbatch.build.verify and ``vpbatch verify``: good builds pass, each kind of damage is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.verify import command
from tests.fakes import CORRUPTIONS, DAY, STORED, FakeBuild, corrupt, fake_build, untouched_cell
from vpbatch.build.verify import CHECKS, _Key, _Partition, select_partitions, verify
from vpbatch.build.verify_sql import (
    COMPLETENESS_ORDERED_SQL,
    COMPLETENESS_SQL,
    CONTINUITY_HASH_SQL,
    CONTINUITY_SQL,
    GRID_ORDER_SQL,
)
from vpbatch.errors import ConfigError, InputError, VerifyError
from vpbatch.store.fs import open_lake
from vpbatch.store.lake import MANIFEST_FILE, PART_FILE, SUCCESS_FILE, gold_partition
from vpbatch.store.writer import PartitionWriter

#: The check that must fail for each corruption of tests.fakes.
EXPECTED = {
    "missing_row": "cardinality",
    "duplicate_k": "completeness",
    "nan": "finite",
    "inf": "finite",
    "continuity": "continuity",
    "negative_depth": "depth",
    "snapshot_order": "event_order",
    "future_touch": "provenance",
    "price": "prices",
    "event_update": "event_update",
    "book": "book",
    "top_of_book": "book",
    "crossed": "snapshot",
    "band_reset": "continuity",
}


def write(lake: Path, build: FakeBuild, *, mbp: bool = True, force: bool = True) -> None:
    with PartitionWriter(lake, build.product, build.day, config=build.config, force=force,
                         mbp_levels=build.levels if mbp else None) as out:
        out.write_snapshots(build.snapshots)
        out.write_grid(build.grid)
        if mbp:
            out.write_mbp(build.mbp)


def failed(lake: Path) -> set[str]:
    return verify(lake, "MNQH6", DAY).failed_checks()


@pytest.mark.parametrize("symbol", ["MNQH6", "6EH6", "QQQ"])
def test_verify_given_good_event_build_passes_every_check(tmp_path: Path, symbol: str) -> None:
    build = fake_build(n_states=60, jump_every=9, symbol=symbol)
    write(tmp_path, build)
    report = verify(tmp_path, symbol, DAY)
    assert report.passed, report.format()
    assert [r.name for r in report.results] == list(CHECKS)
    assert report.partitions == [f"{build.product.product_type}/{symbol}/2026-02-06"]
    report.raise_for_failures()


def test_verify_given_time_sampling_with_band_reset_passes(tmp_path: Path) -> None:
    build = fake_build(n_states=50, sample="time", excursion_at=20)
    # the excursion really reset cells carried over from state 19 to state 20
    before = dict(zip(build.state(19)["price"], build.state(19)["last_event_id"], strict=True))
    reset = [p for p, last in zip(build.state(20)["price"], build.state(20)["last_event_id"],
                                  strict=True) if last == 0 and before.get(p, 0) > 0]
    assert reset
    write(tmp_path, build)
    report = verify(tmp_path, "MNQH6", DAY)
    assert report.passed, report.format()
    update = next(r for r in report.results if r.name == "event_update")
    assert update.example == "not applicable (sample=time)"


def test_verify_given_build_without_mbp_skips_book_check(tmp_path: Path) -> None:
    write(tmp_path, fake_build(), mbp=False)
    report = verify(tmp_path, "MNQH6", DAY)
    assert report.passed, report.format()
    book = next(r for r in report.results if r.name == "book")
    assert book.example == "not applicable (no mbp table)"


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_verify_given_corruption_names_the_check(tmp_path: Path, kind: str) -> None:
    write(tmp_path, corrupt(fake_build(), kind))
    report = verify(tmp_path, "MNQH6", DAY)
    assert EXPECTED[kind] in report.failed_checks(), report.format()
    assert not report.failed_checks() & {"manifest", "files", "row_counts"} or kind == (
        "missing_row")
    bad = next(r for r in report.failures if r.name == EXPECTED[kind])
    assert bad.violations >= 1 and bad.example.startswith(("event_id=", "vp_", "mbp"))
    with pytest.raises(VerifyError, match=f"future_mbo/MNQH6/2026-02-06:{EXPECTED[kind]}"):
        report.raise_for_failures()


def test_verify_given_event_sample_gap_fails_event_update(tmp_path: Path) -> None:
    build = fake_build()
    keep = [i for i in range(len(build.snapshots)) if i != 7]
    rows = build.rows
    build.snapshots = build.snapshots[keep]
    build.grid = build.grid.reshape(-1, rows)[keep].reshape(-1)
    build.mbp = build.mbp[keep]
    write(tmp_path, build)
    report = verify(tmp_path, "MNQH6", DAY)
    assert "event_update" in report.failed_checks()
    assert "follows event_id" in next(r for r in report.failures
                                      if r.name == "event_update").example


def test_verify_given_manifest_row_count_mismatch_fails_row_counts(tmp_path: Path) -> None:
    build = fake_build()
    write(tmp_path, build)
    folder = gold_partition(tmp_path, "vp_snapshot", build.product, DAY)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["tables"]["vp_grid"]["rows"] += 11
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, sort_keys=True, indent=2))
    report = verify(tmp_path, "MNQH6", DAY)
    assert {"row_counts", "manifest"} <= report.failed_checks()
    row_counts = next(r for r in report.failures if r.name == "row_counts")
    assert row_counts.example == "vp_grid: 440 rows in Parquet, manifest says 451"


def test_verify_given_replaced_data_file_fails_files(tmp_path: Path) -> None:
    write(tmp_path, fake_build(seed=1))
    other = tmp_path / "other"
    write(other, fake_build(seed=2))
    src = gold_partition(other, "vp_grid", fake_build().product, DAY) / PART_FILE
    dst = gold_partition(tmp_path, "vp_grid", fake_build().product, DAY) / PART_FILE
    dst.write_bytes(src.read_bytes())
    assert "files" in failed(tmp_path)


def test_verify_given_missing_success_fails_manifest(tmp_path: Path) -> None:
    build = fake_build()
    write(tmp_path, build)
    (gold_partition(tmp_path, "mbp", build.product, DAY) / SUCCESS_FILE).unlink()
    report = verify(tmp_path, "MNQH6", DAY)
    assert report.failed_checks() == {"manifest"}
    assert "no _SUCCESS (incomplete build)" in report.failures[0].example


def test_verify_given_unreadable_manifest_reports_only_manifest(tmp_path: Path) -> None:
    build = fake_build()
    write(tmp_path, build)
    (gold_partition(tmp_path, "vp_snapshot", build.product, DAY) / MANIFEST_FILE).write_text("{")
    report = verify(tmp_path, "MNQH6", DAY)
    assert [(r.name, r.passed) for r in report.results] == [("manifest", False)]
    assert "manifest is not valid JSON" in report.results[0].example


# --- selection ------------------------------------------------------------------------------


def test_verify_selection_by_symbol_day_or_all(tmp_path: Path) -> None:
    write(tmp_path, fake_build())
    later = fake_build(seed=3)
    later.day = DAY.replace(day=9)
    write(tmp_path, later)
    write(tmp_path, fake_build(symbol="QQQ", n_states=5), mbp=False)
    assert select_partitions(tmp_path, "mnqh6") == ["future_mbo/MNQH6/2026-02-06",
                                                     "future_mbo/MNQH6/2026-02-09"]
    assert select_partitions(tmp_path, day="2026-02-06") == ["equity_mbo/QQQ/2026-02-06",
                                                             "future_mbo/MNQH6/2026-02-06"]
    report = verify(tmp_path, all=True)
    assert len(report.partitions) == 3 and report.passed, report.format()
    assert len(report.results) == 3 * len(CHECKS)


def test_verify_given_no_matching_partition_raises_input_error(tmp_path: Path) -> None:
    write(tmp_path, fake_build())
    with pytest.raises(InputError, match=r"gold: no partition for symbol=ESH6 dt=2026-02-06 "
                                         r"\(have: MNQH6/2026-02-06\)"):
        verify(tmp_path, "ESH6", DAY)
    with pytest.raises(ConfigError, match="give --symbol and/or --dt, or --all"):
        verify(tmp_path)


# --- CLI --------------------------------------------------------------------------------------


def test_verify_cli_given_good_build_prints_table_and_exits_0(tmp_path: Path) -> None:
    write(tmp_path, fake_build())
    result = CliRunner().invoke(command, ["--symbol", "MNQH6", "--dt", "2026-02-06",
                                          "--lake", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["partition", "check", "status", "violations", "example"]
    assert lines[1].split() == ["future_mbo/MNQH6/2026-02-06", "manifest", "ok", "0"]
    assert lines[-1] == f"{len(CHECKS)} of {len(CHECKS)} checks passed in 1 partition(s)"


def test_verify_cli_given_violation_raises_verify_error_exit_4(tmp_path: Path) -> None:
    write(tmp_path, corrupt(fake_build(), "negative_depth"), mbp=False)
    result = CliRunner().invoke(command, ["--all", "--lake", str(tmp_path)])
    assert isinstance(result.exception, VerifyError) and result.exception.exit_code == 4
    assert str(result.exception) == ("1 of 14 checks failed: future_mbo/MNQH6/2026-02-06:depth")
    row = next(line for line in result.output.splitlines() if " depth " in line)
    assert row.split()[2:4] == ["FAIL", "1"] and "bid_depth -2 + ask_depth" in row


def test_verify_cli_json_and_usage_errors(tmp_path: Path) -> None:
    write(tmp_path, fake_build())
    out = CliRunner().invoke(command, ["--all", "--json", "--lake", str(tmp_path)],
                             catch_exceptions=False)
    data = json.loads(out.output)
    assert data["passed"] is True and len(data["checks"]) == len(CHECKS)
    neither = CliRunner().invoke(command, ["--lake", str(tmp_path)])
    assert neither.exit_code == 2 and "give --symbol and/or --dt, or --all" in neither.output
    both = CliRunner().invoke(command, ["--all", "--symbol", "MNQH6", "--lake", str(tmp_path)])
    assert both.exit_code == 2
    missing = CliRunner().invoke(command, ["--symbol", "ESH6", "--lake", str(tmp_path)])
    assert isinstance(missing.exception, InputError) and missing.exception.exit_code == 3


def _rows(lake: Path, *sqls: str) -> list[tuple]:
    """Each of verify's ``sqls`` run on the MNQH6 partition's views, as verify binds them."""
    part = _Partition(open_lake(lake), _Key("future_mbo", "MNQH6", DAY.isoformat()))
    assert part.check_manifest()
    con = part.open()
    try:
        return [con.execute(sql, part.params(sql)).fetchone() for sql in sqls]
    finally:
        con.close()


def test_continuity_hash_pass_flags_exactly_the_cells_the_value_comparison_flags(
        tmp_path: Path) -> None:
    """A passing build runs only the hashed pass of the continuity check: it must count every
    changed stored value of an untouched cell (each column, one cell each), and nothing more
    (here a cell whose 0.0 became -0.0, equal by value)."""
    build = fake_build(n_states=120)
    g, rows = build.grid, build.rows
    changed = 0
    for name in (*STORED, "last_event_id", "last_ts"):
        i, j = untouched_cell(build, after=changed * 4)
        cell = i * rows + j
        g[name][cell] = g[name][cell] - 1 if name.startswith("last_") else g[name][cell] + 1.0
        changed += 1
    # a never touched cell of a state whose window is the previous one's (spot did not move)
    blank = next(i * rows + j for i in range(changed * 4 + 1, len(build.snapshots))
                 if np.array_equal(build.state(i)["price"], build.state(i - 1)["price"])
                 for j in range(rows) if build.state(i)["last_event_id"][j] == 0)
    assert g["a_add"][blank] == 0.0
    g["a_add"][blank] = -0.0
    write(tmp_path, build)
    (hashed,), (exact, example) = _rows(tmp_path, CONTINUITY_HASH_SQL, CONTINUITY_SQL)
    assert exact >= changed and example.startswith("event_id=")
    assert hashed == exact
    result = next(r for r in verify(tmp_path, "MNQH6", DAY).results if r.name == "continuity")
    assert (result.violations, result.example) == (exact, example)


def test_completeness_without_distinct_counts_the_states_the_distinct_count_finds(
        tmp_path: Path) -> None:
    """With the grid in ``(event_id, k)`` order, check (2) counts rows, min and max only: it
    must find the same states as ``count(DISTINCT k)`` (a state missing a row, a state whose
    ``k`` run is shifted by one), and the report must read as the exact query's."""
    build = fake_build(n_states=30)
    rows, K = build.rows, build.config.K
    build.grid["k"][5 * rows:6 * rows] += 1  # -K+1..K+1: ordered, 2K+1 rows, wrong range
    drop = 12 * rows + 4
    build.grid = np.delete(build.grid, drop)
    write(tmp_path, build)
    (ordered,), (exact, example), (misordered, _) = _rows(
        tmp_path, COMPLETENESS_ORDERED_SQL, COMPLETENESS_SQL, GRID_ORDER_SQL)
    assert misordered == 0
    assert ordered == exact == 2
    assert example == (f"event_id={build.snapshots['event_id'][5]}: {rows} distinct k in "
                       f"[{-K + 1}, {K + 1}] over {rows} rows, expected each of -{K}..{K} once")
    result = next(r for r in verify(tmp_path, "MNQH6", DAY).results if r.name == "completeness")
    assert (result.violations, result.example) == (exact, example)
