"""vpbatch.sql and ``vpbatch sql``: views over complete partitions, hive columns, output."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli.sql import command
from tests.fakes import DAY, FakeBuild, fake_build
from vpbatch.errors import VpbatchError
from vpbatch.sql import complete_files, connect, run_query
from vpbatch.store.lake import SUCCESS_FILE, gold_partition
from vpbatch.store.writer import PartitionWriter


def write(lake: Path, build: FakeBuild, *, day: dt.date = DAY, mbp: bool = True) -> None:
    with PartitionWriter(lake, build.product, day, config=build.config,
                         mbp_levels=build.levels if mbp else None) as out:
        out.write_snapshots(build.snapshots)
        out.write_grid(build.grid)
        if mbp:
            out.write_mbp(build.mbp)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three complete builds (two futures days with mbp, one equity without) + junk."""
    root = tmp_path_factory.mktemp("lake")
    write(root, fake_build(n_states=10, seed=1))
    write(root, fake_build(n_states=12, seed=2), day=DAY + dt.timedelta(days=3))
    write(root, fake_build(n_states=5, seed=3, symbol="QQQ"), mbp=False)
    # a crashed build (no _SUCCESS) and a temp dir must stay invisible
    crashed = fake_build(n_states=7, seed=4, symbol="ESH6")
    write(root, crashed, mbp=False)
    for table in ("vp_snapshot", "vp_grid"):
        (gold_partition(root, table, crashed.product, DAY) / SUCCESS_FILE).unlink()
    tmp = root / "gold" / ".tmp.future_mbo.NQH6.2026-02-06.x" / "vp_grid"
    tmp.mkdir(parents=True)
    (tmp / "part-0.parquet").write_bytes(b"PAR1 not really")
    return root


def test_connect_given_empty_lake_gives_empty_views_with_columns(tmp_path: Path) -> None:
    con = connect(tmp_path)
    for view in ("vp_snapshot", "vp_grid", "mbp", "vp"):
        assert con.sql(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
        columns = [row[0] for row in con.sql(f"DESCRIBE {view}").fetchall()]
        assert {"product_type", "symbol", "dt", "event_id"} <= set(columns), view
    assert "bid_px_09" in [row[0] for row in con.sql("DESCRIBE mbp").fetchall()]


def test_connect_counts_only_complete_partitions(lake: Path) -> None:
    df = run_query(lake, "SELECT product_type, symbol, CAST(dt AS VARCHAR) AS dt, count(*) AS n "
                         "FROM vp_snapshot GROUP BY ALL ORDER BY ALL")
    assert df.rows() == [("equity_mbo", "QQQ", "2026-02-06", 5),
                         ("future_mbo", "MNQH6", "2026-02-06", 10),
                         ("future_mbo", "MNQH6", "2026-02-09", 12)]
    assert len(complete_files(lake, "vp_grid")) == 3
    assert run_query(lake, "SELECT count(*) FROM vp_grid").item() == 27 * 11
    assert run_query(lake, "SELECT count(*) FROM mbp").item() == 22


def test_connect_exposes_hive_columns_with_types(lake: Path) -> None:
    df = run_query(lake, "SELECT typeof(product_type), typeof(symbol), typeof(dt), "
                         "typeof(ts_event), typeof(regime) FROM vp_snapshot LIMIT 1")
    assert df.row(0) == ("VARCHAR", "VARCHAR", "DATE", "TIMESTAMPTZ_NS", "VARCHAR")


def test_vp_view_joins_each_cell_with_its_snapshot(lake: Path) -> None:
    df = run_query(lake, "SELECT count(*) AS n, count(DISTINCT (symbol, dt, event_id)) AS states,"
                         " bool_and(price = spot_price + k * 0.25) AS ok FROM vp "
                         "WHERE product_type = 'future_mbo'")
    assert df.row(0) == (22 * 11, 22, True)


def test_run_query_binds_parameters(lake: Path) -> None:
    df = run_query(lake, "SELECT count(*) FROM vp_snapshot WHERE symbol = $sym AND dt = $day",
                   {"sym": "MNQH6", "day": DAY})
    assert df.item() == 10


def test_run_query_given_bad_sql_raises_vpbatch_error(lake: Path) -> None:
    with pytest.raises(VpbatchError, match=r"^sql: Catalog Error: Table with name nope"):
        run_query(lake, "SELECT * FROM nope")


# --- CLI ------------------------------------------------------------------------------------


def test_sql_cli_given_query_prints_table(lake: Path) -> None:
    result = CliRunner().invoke(command, ["--lake", str(lake), "SELECT symbol, count(*) AS n "
                                          "FROM vp_snapshot GROUP BY 1 ORDER BY 1"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert "│ MNQH6   │    22 │" in result.output and "│ QQQ     │     5 │" in result.output


def test_sql_cli_given_csv_and_json_formats(lake: Path) -> None:
    query = "SELECT event_id, regime FROM vp_snapshot WHERE symbol = 'QQQ' ORDER BY 1 LIMIT 2"
    csv = CliRunner().invoke(command, ["--lake", str(lake), "--format", "csv", query],
                             catch_exceptions=False)
    assert csv.output.splitlines()[0] == "event_id,regime" and len(csv.output.splitlines()) == 3
    out = CliRunner().invoke(command, ["--lake", str(lake), "--format", "json", query],
                             catch_exceptions=False)
    rows = json.loads(out.output)
    assert [set(r) for r in rows] == [{"event_id", "regime"}] * 2


def test_sql_cli_given_stdin_runs_each_statement(lake: Path) -> None:
    script = "SELECT 41 + 1 AS answer;\nSELECT\n  count(*) AS n\nFROM vp_snapshot;\n.quit\n"
    result = CliRunner().invoke(command, ["--lake", str(lake), "--format", "csv"], input=script,
                                catch_exceptions=False)
    assert result.output.splitlines() == ["answer", "42", "n", "27"]


def test_sql_cli_given_bad_query_raises_vpbatch_error_exit_1(lake: Path) -> None:
    # cli.main's group turns the error into "Error: <message>" and its exit_code
    result = CliRunner().invoke(command, ["--lake", str(lake), "SELECT * FROM nope"])
    assert isinstance(result.exception, VpbatchError) and result.exception.exit_code == 1
    assert str(result.exception).startswith("sql: Catalog Error: Table with name nope")


def test_sql_cli_has_help_with_example() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    assert isinstance(command, click.Command)


@pytest.mark.parametrize("empty", [False, True])
def test_sql_cli_imports_no_pandas(lake: Path, tmp_path: Path, empty: bool) -> None:
    """``pa.array`` of a list and ``Schema.empty_table`` import pandas: 0.3 s of each query's
    start, kept out (views over the lake, ``vp_features`` with its parameters table; the
    empty views of a lake without builds)."""
    code = ("import atexit, sys\n"
            "from cli.main import main\n"
            "sys.argv = ['vpbatch', 'sql', '--lake', sys.argv[1], sys.argv[2]]\n"
            "atexit.register(lambda: print('pandas' in sys.modules))\n"  # main ends the process
            "main()\n")
    where, query = ((tmp_path, "select count(*) from vp_snapshot") if empty
                    else (lake, "select count(*) from vp_features"))
    out = subprocess.run([sys.executable, "-c", code, str(where), query], capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines()[-1] == "False"
    assert "│" in out  # the query ran and printed its table
