"""The ``vpbatch`` command line: exit codes, exact error lines, help text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from vpbatch.errors import ConfigError, InputError, VerifyError

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
GOOG = "dbeq-basic-goog-20240403.mbo.dbn.zst"
DEFINITION = "glbx-mdp3-es-fut.definition.dbn.zst"
REPO = Path(__file__).parents[1]

DbnPath = Callable[[str], Path]


def run(*args: str, ok: bool = False) -> Result:
    """Invoke the group; on the success path let a traceback through."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=not ok)


def error_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-1]


# -- help and version ----------------------------------------------------------------------------


def test_cli_given_help_lists_commands_and_exit_codes() -> None:
    result = run("--help", ok=True)
    assert result.exit_code == 0
    for name in ("info", "products"):
        assert name in result.stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert code in result.stdout


def test_cli_given_version_prints_it() -> None:
    result = run("--version", ok=True)
    assert result.exit_code == 0
    assert result.stdout.startswith("vpbatch, version ")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_given_help_has_an_example_and_option_help(name: str) -> None:
    result = run(name, "--help", ok=True)
    assert result.exit_code == 0
    assert "Example" in result.stdout
    command = cli.commands[name]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_given_readme_is_documented(name: str) -> None:
    assert f"vpbatch {name}" in (REPO / "README.md").read_text()


# -- info ----------------------------------------------------------------------------------------


def test_info_given_path_prints_the_summary(dbn_path: DbnPath) -> None:
    result = run("info", str(dbn_path(ESM4)), ok=True)
    assert result.exit_code == 0
    assert "records     13,796" in result.stdout.splitlines()
    assert result.stderr == ""


def test_info_given_json_prints_parseable_json(dbn_path: DbnPath) -> None:
    result = run("info", "--json", "--symbol", "GOOG", str(dbn_path(GOOG)), ok=True)
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["records"] == 128_943
    assert info["selection"] == {"symbol": "GOOG", "instrument_id": 7151}


def test_info_given_symbol_and_dt_finds_the_file_in_the_lake(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    folder = (tmp_path / "raw" / "source=databento" / "product_type=future_mbo" / "symbol=ES"
              / "table=market_by_order_dbn")
    folder.mkdir(parents=True)
    shutil.copyfile(dbn_path(ESM4), folder / "glbx-mdp3-20240508.mbo.dbn.zst")
    ok = run("info", "--symbol", "ESM4", "--dt", "2024-05-08", "--lake", str(tmp_path), ok=True)
    assert ok.exit_code == 0
    assert "selection   ESM4 (instrument_id 5602): 13,796 records" in ok.stdout
    missing = run("info", "--symbol", "ESM4", "--dt", "2024-05-09", "--lake", str(tmp_path))
    assert missing.exit_code == 3
    assert error_line(missing) == (f"Error: {folder}: no MBO file for 2024-05-09 "
                                   f"(dates there: 20240508)")


def test_info_given_lake_from_environment_uses_it(dbn_path: DbnPath, tmp_path: Path) -> None:
    result = CliRunner(env={"VPBATCH_LAKE": str(tmp_path)}).invoke(
        cli, ["info", "--symbol", "ESM4", "--dt", "2024-05-08"])
    assert result.exit_code == 3
    assert str(tmp_path / "raw") in error_line(result)


def test_info_given_missing_file_exits_3_listing_the_folder(tmp_path: Path) -> None:
    (tmp_path / "other.mbo.dbn.zst").write_bytes(b"x")
    missing = tmp_path / "glbx-mdp3-20260206.mbo.dbn.zst"
    result = run("info", str(missing))
    assert result.exit_code == 3
    assert error_line(result) == (f"Error: {missing}: no such file "
                                  f"(in {tmp_path}: other.mbo.dbn.zst)")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_info_given_definition_file_exits_3_with_the_schema(dbn_path: DbnPath) -> None:
    result = run("info", str(dbn_path(DEFINITION)))
    assert result.exit_code == 3
    assert result.stderr == f"Error: {DEFINITION}: schema is definition, expected mbo\n"


def test_info_given_truncated_file_exits_3(dbn_path: DbnPath, tmp_path: Path) -> None:
    data = dbn_path(ESM4).read_bytes()
    cut = tmp_path / "cut.mbo.dbn.zst"
    cut.write_bytes(data[: len(data) // 2])
    result = run("info", str(cut))
    assert result.exit_code == 3
    assert error_line(result).startswith("Error: cut.mbo.dbn.zst: truncated")


def test_info_given_symbol_not_in_file_exits_3_listing_symbols(dbn_path: DbnPath) -> None:
    result = run("info", "--symbol", "MSFT", str(dbn_path(GOOG)))
    assert result.exit_code == 3
    assert result.stderr == f"Error: {GOOG}: symbol 'MSFT' not in file (have: GOOG, GOOGL)\n"


def test_info_given_no_path_and_no_symbol_is_a_usage_error() -> None:
    result = run("info")
    assert result.exit_code == 2
    assert "give a PATH, or --symbol and --dt" in result.stderr


def test_info_given_path_and_dt_is_a_usage_error(dbn_path: DbnPath) -> None:
    result = run("info", str(dbn_path(ESM4)), "--dt", "2024-05-08")
    assert result.exit_code == 2
    assert "give either a PATH or --dt, not both" in result.stderr


def test_info_given_bad_date_is_a_usage_error() -> None:
    result = run("info", "--symbol", "MNQH6", "--dt", "2026-02-30")
    assert result.exit_code == 2
    assert "Invalid value for '--dt': '2026-02-30' is not a date; use YYYY-MM-DD" in result.stderr


def test_cli_given_unknown_command_is_a_usage_error() -> None:
    assert run("frobnicate").exit_code == 2


# -- products ------------------------------------------------------------------------------------


def test_products_given_no_option_lists_the_table() -> None:
    result = run("products", ok=True)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["root", "type", "tick", "bucket", "multiplier", "dataset"]
    assert ["MNQ", "future_mbo", "0.25", "0.25", "2", "GLBX.MDP3"] in [ln.split() for ln in lines]
    assert ["6E", "future_mbo", "0.00005", "0.00005", "125000", "GLBX.MDP3"] in [
        ln.split() for ln in lines]
    assert ["QQQ", "equity_mbo", "0.01", "0.5", "1", "XNAS.ITCH"] in [ln.split() for ln in lines]


def test_products_given_symbol_and_json_resolves_it() -> None:
    result = run("products", "--symbol", "MNQH6", "--json", ok=True)
    assert json.loads(result.stdout) == [{
        "symbol": "MNQH6", "root": "MNQ", "product_type": "future_mbo", "tick": "0.25",
        "bucket": "0.25", "multiplier": 2, "dataset": "GLBX.MDP3"}]


def test_products_given_definition_file_uses_its_tick(dbn_path: DbnPath) -> None:
    result = run("products", "--symbol", "ESM3", "--definition", str(dbn_path(DEFINITION)),
                 "--json", ok=True)
    assert json.loads(result.stdout)[0]["tick"] == "0.25"
    missing = run("products", "--symbol", "ESU3", "--definition", str(dbn_path(DEFINITION)))
    assert missing.exit_code == 3
    assert missing.stderr == f"Error: {DEFINITION}: symbol 'ESU3' not defined\n"


def test_products_given_spread_exits_1_naming_the_parameter() -> None:
    result = run("products", "--symbol", "MNQH6-MNQM6")
    assert result.exit_code == 1
    assert result.stderr == ("Error: symbol: 'MNQH6-MNQM6' is a spread or combination; "
                             "give one outright contract\n")


# -- error conversion ----------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "code"), [
    (ConfigError("K: must be between 1 and 10000, was 0"), 1),
    (InputError("x.dbn: empty file (0 bytes)"), 3),
    (VerifyError("3 invariant violations"), 4),
])
def test_cli_given_library_error_prints_one_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception, code: int
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("vpbatch.ingest.info.file_info", fail)
    result = run("info", str(tmp_path / "x.dbn"))
    assert result.exit_code == code
    assert result.stderr == f"Error: {error}\n"


def test_cli_given_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    result = run("--debug", "info", str(tmp_path / "missing.mbo.dbn.zst"))
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert error_line(result).startswith("Error: ")


def test_cli_given_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("vpbatch.ingest.info.file_info", interrupt)
    result = run("info", str(tmp_path / "x.dbn"))
    assert result.exit_code == 130
    assert result.stderr == "Interrupted.\n"


def test_cli_given_os_error_exits_1_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", "/root/x")

    monkeypatch.setattr("vpbatch.ingest.info.file_info", denied)
    result = run("info", str(tmp_path / "x.dbn"))
    assert result.exit_code == 1
    assert result.stderr == "Error: Permission denied: /root/x\n"


def test_python_m_cli_given_missing_file_exits_3(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH", "")]))}
    missing = tmp_path / "x.mbo.dbn.zst"
    proc = subprocess.run([sys.executable, "-m", "cli", "info", str(missing)], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 3
    assert proc.stderr == f"Error: {missing}: no such file (in {tmp_path}: it is empty)\n"
    assert proc.stdout == ""
