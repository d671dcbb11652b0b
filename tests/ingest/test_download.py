"""``vpbatch download`` against a local HTTPS Databento stand-in (download_fake.py).

The real official client talks to 127.0.0.1 through its ``gateway``, trusting a ``trustme``
CA through ``REQUESTS_CA_BUNDLE``; the server answers with real MBO records.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import certifi
import databento as db
import pytest
import zstandard
from click.testing import CliRunner, Result

from cli.main import cli
from tests.conftest import data_file
from tests.ingest.download_fake import (
    DATASET,
    DAYS,
    ESM4_RECORDS,
    INSTRUMENT_ID,
    KEY,
    NEXT_RECORDS,
    REAL_DAY,
    SPREAD_RECORDS,
    SYMBOL,
    UNIT_PRICES,
    Script,
    stand_in,
)
from vpbatch.errors import OutputError
from vpbatch.ingest.definitions import read_definition_tick
from vpbatch.ingest.download import (
    DownloadRequest,
    count_records,
    merge_symbology,
    open_client,
    open_dbn,
    plan_download,
    resolve_request_symbols,
    run_download,
    usd,
)

FOLDER = Path("raw/source=databento/product_type=future_mbo/symbol=ES/table=market_by_order_dbn")
START, END = "2024-05-08", "2024-05-11"  # Wed .. Sat: Saturday has no data


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    yield from stand_in(tmp_path, monkeypatch)


def download(lake: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["download", "--lake", str(lake), *args])


def files(lake: Path, hidden: bool = False) -> list[str]:
    folder = lake / FOLDER
    return sorted(p.name for p in folder.iterdir() if hidden or not p.name.startswith(".")) \
        if folder.is_dir() else []


def expected_cost(days: int) -> float:
    """The fake's per-GB prices applied to the served bytes (independent of vpbatch):
    ESM4's 56-byte MBO records and one 360-byte definition record a day."""
    prices = UNIT_PRICES[DATASET]
    return days * (ESM4_RECORDS * 56 * prices["mbo"] + 360 * prices["definition"]) / 1e9


def test_download_given_range_writes_each_day_with_symbology_and_definitions(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", START, "--end", END, "--yes")
    assert result.exit_code == 0, result.output
    assert files(lake) == sorted(
        [f"glbx-mdp3-{d:%Y%m%d}.{s}.dbn.zst" for d in DAYS for s in ("mbo", "definition")]
        + ["symbology.json"])
    assert f"Cost: {usd(expected_cost(3))} for 6 file(s)" in result.output
    # The cost of every file is asked before the first paid call.
    names = [name for name, _ in fake.requests]
    assert names.index("timeseries.get_range") > max(
        i for i, n in enumerate(names) if n == "metadata.get_cost")
    # The real day's records arrive byte for byte.
    real = data_file("glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst")
    with open_dbn(lake / FOLDER / "glbx-mdp3-20240508.mbo.dbn.zst") as (meta, body):
        got = b"".join(body)
        assert (str(meta.dataset), str(meta.schema), meta.symbols) == (DATASET, "mbo", [SYMBOL])
    with open_dbn(real) as (_, body):
        assert got == b"".join(body)
    doc = json.loads((lake / FOLDER / "symbology.json").read_text())
    assert doc["stype_in"] == "instrument_id"
    assert doc["result"][str(INSTRUMENT_ID)][0]["s"] == SYMBOL
    tick = read_definition_tick(lake / FOLDER / "glbx-mdp3-20240510.definition.dbn.zst", SYMBOL)
    assert tick == 250_000_000


def test_download_given_complete_files_skips_them_and_pays_nothing(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert download(lake, "--symbol", SYMBOL, "--start", START, "--end", END,
                    "--yes").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in (lake / FOLDER).iterdir()}
    fake.requests.clear()
    again = download(lake, "--symbol", SYMBOL, "--start", START, "--end", END, "--yes")
    assert again.exit_code == 0, again.output
    assert "Nothing to download" in again.output
    assert not fake.calls("timeseries.get_range") and not fake.calls("metadata.get_cost")
    assert {p.name: p.stat().st_mtime_ns for p in (lake / FOLDER).iterdir()} == before


def test_downloaded_days_then_build_with_the_downloaded_definition(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert download(lake, "--symbol", SYMBOL, "--start", START, "--end", END,
                    "--yes").exit_code == 0
    built = CliRunner().invoke(cli, ["build", "--symbol", SYMBOL, "--start", START, "--end", END,
                                     "--lake", str(lake), "--quiet", "--json"],
                               catch_exceptions=False)
    assert built.exit_code == 0, built.output
    results = json.loads(built.output)
    assert [r["status"] for r in results] == ["built", "built", "built", "no-data"]
    assert all(r["records"] == 13796 for r in results if r["status"] == "built")
    manifest = json.loads((Path(results[0]["partitions"]["vp_snapshot"])
                           / "_MANIFEST.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == [
        "glbx-mdp3-20240508.mbo.dbn.zst", "glbx-mdp3-20240508.definition.dbn.zst"]


def test_download_given_rate_limits_and_server_errors_retries_then_succeeds(
        fake: Script, tmp_path: Path) -> None:
    fake.statuses = {"metadata.get_cost": [503], "timeseries.get_range": [429, 429]}
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", "2024-05-08", "--no-definitions",
                      "--yes")
    assert result.exit_code == 0, result.output
    assert "after 3 attempts" in result.output
    assert files(lake) == ["glbx-mdp3-20240508.mbo.dbn.zst", "symbology.json"]


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "clean-eof"])
def test_download_given_a_stream_cut_once_retries_and_completes(
        fake: Script, tmp_path: Path, with_length: bool) -> None:
    fake.cuts, fake.cut_with_length = 1, with_length
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", "2024-05-08", "--no-definitions",
                      "--yes")
    assert result.exit_code == 0, result.output
    assert "after 2 attempts" in result.output
    # Cut inside the day's opening snapshot (one timestamp): nothing to resume from, so the
    # day is asked again from its start.
    assert [f["start"] for f in fake.calls("timeseries.get_range")] == ["2024-05-08"] * 2
    with open_dbn(lake / FOLDER / "glbx-mdp3-20240508.mbo.dbn.zst") as (_, body):
        assert count_records(body) == 13796


def test_download_given_cost_over_the_limit_refuses_before_fetching(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", START, "--end", END,
                      "--max-cost", "0.005", "--yes")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: --max-cost: the download costs {usd(expected_cost(3))}, above the limit "
        f"of $0.0050; nothing downloaded")
    assert not fake.calls("timeseries.get_range")
    assert not lake.exists()


def test_download_given_no_terminal_and_no_yes_refuses_to_spend(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", "2024-05-08")
    assert result.exit_code == 1
    assert "confirm on a terminal, or pass --yes" in result.output.splitlines()[-1]
    assert not fake.calls("timeseries.get_range") and not lake.exists()


def test_download_given_a_declined_confirmation_fetches_nothing(
        fake: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cli.download as download_cli

    monkeypatch.setattr(download_cli, "_stdin_is_terminal", lambda: True)
    lake = tmp_path / "lake"
    result = CliRunner().invoke(cli, ["download", "--lake", str(lake), "--symbol", SYMBOL,
                                      "--start", "2024-05-08"], input="n\n")
    assert result.exit_code == 1
    assert "Download for $" in result.output
    assert result.output.splitlines()[-1] == "Error: not confirmed; nothing downloaded"
    assert not fake.calls("timeseries.get_range") and not lake.exists()


def test_download_given_dry_run_shows_the_cost_and_writes_nothing(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", START, "--end", END, "--dry-run")
    assert result.exit_code == 0
    assert "2024-05-11" in result.output and "no data" in result.output
    assert not fake.calls("timeseries.get_range") and not lake.exists()


@pytest.mark.parametrize(("args", "env_key", "code", "message"), [
    (["--symbol", SYMBOL, "--start", "2024-05-08"], "db-wrong-key", 1,
     "Error: DATABENTO_API_KEY was rejected by Databento (HTTP 401: Authentication failed.)"),
    (["--symbol", SYMBOL, "--start", "2024-05-08"], None, 1,
     "Error: DATABENTO_API_KEY is not set: export your Databento API key "
     "(portal: Settings > API keys)"),
    (["--symbol", "ESZ9", "--start", "2024-05-08"], KEY, 3,
     "Error: ESZ9: not found in GLBX.MDP3 between 2024-05-08 and 2024-05-08"),
    (["--symbol", SYMBOL, "--start", "2024-05-11"], KEY, 3,
     "Error: ESM4 on GLBX.MDP3: no MBO data for 2024-05-11 (weekend, holiday, or outside "
     "the dataset's range)"),
    (["--symbol", SYMBOL, "--start", "2024-05-08", "--dataset", "XNAS.BOGUS"], KEY, 1,
     "Error: metadata.get_dataset_range: Databento refused the request (HTTP 422: Invalid "
     "dataset 'XNAS.BOGUS'."),
    (["--symbol", SYMBOL, "--start", "2024-05-08", "--dataset", "glbx"], KEY, 1,
     "Error: --dataset: 'glbx' is not a Databento dataset code (e.g. GLBX.MDP3, XNAS.ITCH, "
     "DBEQ.BASIC)"),
    (["--symbol", SYMBOL, "--start", "2024-05-10", "--end", "2024-05-08"], KEY, 1,
     "Error: --end 2024-05-08 is before --start 2024-05-10"),
    (["--symbol", "ES.OPT", "--start", "2024-05-08"], KEY, 1,
     "Error: --symbol: 'ES.OPT' is not supported; give a contract (MNQH6), a futures parent "
     "(MNQ.FUT) or a ticker (QQQ)"),
], ids=["bad-key", "no-key", "unknown-symbol", "no-data-day", "unknown-dataset",
        "malformed-dataset", "reversed-dates", "options-parent"])
def test_download_given_bad_input_fails_with_one_line_and_writes_nothing(
        fake: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
        env_key: str | None, code: int, message: str) -> None:
    if env_key is None:
        monkeypatch.delenv("DATABENTO_API_KEY")
    else:
        monkeypatch.setenv("DATABENTO_API_KEY", env_key)
    lake = tmp_path / "lake"
    result = download(lake, *args, "--yes")
    assert result.exit_code == code, result.output
    assert result.output.splitlines()[-1].startswith(message), result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
    assert not lake.exists()


def test_download_given_a_day_file_of_another_contract_refuses_unless_forced(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert download(lake, "--symbol", SYMBOL, "--start", "2024-05-08", "--yes").exit_code == 0
    other = download(lake, "--symbol", "ES.FUT", "--start", "2024-05-08", "--yes")
    assert other.exit_code == 1
    assert "already holds ESM4 (GLBX.MDP3), not ES.FUT" in other.output.splitlines()[-1]
    forced = download(lake, "--symbol", "ES.FUT", "--start", "2024-05-08", "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    with open_dbn(lake / FOLDER / "glbx-mdp3-20240508.mbo.dbn.zst") as (meta, body):
        assert (meta.symbols, count_records(body)) == (
            ["ES.FUT"], ESM4_RECORDS + NEXT_RECORDS + SPREAD_RECORDS)


@pytest.mark.parametrize(("symbol", "dataset", "product_type", "root", "stype"), [
    ("MNQH6", "GLBX.MDP3", "future_mbo", "MNQ", "raw_symbol"),
    ("mnq.fut", "GLBX.MDP3", "future_mbo", "MNQ", "parent"),
    ("QQQ", "XNAS.ITCH", "equity_mbo", "QQQ", "raw_symbol"),
    ("BRK.B", "XNAS.ITCH", "equity_mbo", "BRK.B", "raw_symbol"),
    ("brk.a", "XNAS.ITCH", "equity_mbo", "BRK.A", "raw_symbol"),
])
def test_resolve_request_symbols_given_contract_parent_or_ticker_routes_to_dataset_and_folder(
        symbol: str, dataset: str, product_type: str, root: str, stype: str) -> None:
    product, symbols, stype_in = resolve_request_symbols(symbol)
    assert (product.dataset, product.product_type, product.root, stype_in) == (
        dataset, product_type, root, stype)
    assert symbols == [symbol.upper()]


def test_real_day_fixture_is_the_data_file() -> None:
    """Guard for the fake: the day served verbatim is the shared file's own day."""
    with open_dbn(data_file("glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst")) as (meta, _):
        day = dt.datetime.fromtimestamp(meta.start / 1e9, dt.UTC).date()
    assert day == REAL_DAY


def test_download_given_a_day_not_over_yet_refuses_it(fake: Script, tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    result = download(tmp_path / "lake", "--symbol", SYMBOL, "--start", str(today), "--yes")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: --end {today}: the UTC day is not over yet; download days up to "
        f"{today - dt.timedelta(days=1)}")
    assert not fake.requests


def test_download_given_an_uncompressed_day_file_of_the_old_system_skips_that_day(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert download(lake, "--symbol", SYMBOL, "--start", "2024-05-08", "--no-definitions",
                    "--yes").exit_code == 0
    packed = lake / FOLDER / "glbx-mdp3-20240508.mbo.dbn.zst"
    with open_dbn(packed) as (_, body):
        count = count_records(body)
    plain = packed.with_name("glbx-mdp3-20240508.mbo.dbn")
    plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(
        packed.open("rb"), read_across_frames=True).read())
    packed.unlink()
    fake.requests.clear()
    again = download(lake, "--symbol", SYMBOL, "--start", "2024-05-08", "--no-definitions",
                     "--yes")
    assert "Nothing to download" in again.output, again.output
    assert not fake.calls("timeseries.get_range")
    with open_dbn(plain) as (_, body):
        assert count_records(body) == count == 13796


def test_download_given_an_empty_200_answer_retries_and_reports_it(
        fake: Script, tmp_path: Path) -> None:
    fake.empty = 100
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", SYMBOL, "--start", "2024-05-08", "--retries", "1",
                      "--no-definitions", "--yes")
    assert result.exit_code == 1
    assert "gave up after 2 attempt(s): unreadable response" in result.output.splitlines()[-1]
    assert files(lake) == ["symbology.json"]


def test_make_download_given_symbol_and_dates_runs_the_command(
        fake: Script, tmp_path: Path) -> None:
    repo = Path(__file__).parents[2]
    lake = tmp_path / "lake"
    done = subprocess.run(
        ["make", "-s", "-o", "install", "download", f"SYMBOL={SYMBOL}", "START=2024-05-08",
         "END=2024-05-09", "MAX_COST=5", "YES=1", f"LAKE={lake}"],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Cost: $" in done.stderr and "Downloaded 4 file(s)" in done.stdout
    assert "glbx-mdp3-20240509.mbo.dbn.zst" in files(lake)


def resolution(stype_in: str, result: dict[str, list[dict[str, str]]]) -> dict[str, object]:
    return {"result": result, "stype_in": stype_in, "start_date": "2024-05-08",
            "end_date": "2024-05-10"}


def test_merge_symbology_given_runs_on_other_days_keeps_every_interval(tmp_path: Path) -> None:
    merge_symbology(tmp_path, resolution("instrument_id", {
        "5602": [{"d0": "2024-05-08", "d1": "2024-05-09", "s": "ESM4"}]}))
    # A Databento batch-job file (raw_symbol -> id) already there is turned around, not lost.
    (tmp_path / "symbology.json").write_text(json.dumps(resolution("raw_symbol", {
        "ESU4": [{"d0": "2024-05-09", "d1": "2024-05-10", "s": "7001"}]})))
    merge_symbology(tmp_path, resolution("instrument_id", {
        "5602": [{"d0": "2024-05-09", "d1": "2024-05-10", "s": "ESM4"}]}))
    doc = json.loads((tmp_path / "symbology.json").read_text())
    assert doc["stype_in"] == "instrument_id" and doc["stype_out"] == "raw_symbol"
    assert doc["result"] == {
        "5602": [{"d0": "2024-05-09", "d1": "2024-05-10", "s": "ESM4"}],
        "7001": [{"d0": "2024-05-09", "d1": "2024-05-10", "s": "ESU4"}],
    }
    merge_symbology(tmp_path, resolution("instrument_id", {
        "5602": [{"d0": "2024-05-08", "d1": "2024-05-09", "s": "ESM4"}]}))
    doc = json.loads((tmp_path / "symbology.json").read_text())
    assert [e["d0"] for e in doc["result"]["5602"]] == ["2024-05-08", "2024-05-09"]


def test_merge_symbology_given_a_parent_file_refuses_and_leaves_it(tmp_path: Path) -> None:
    original = json.dumps(resolution("parent", {
        "ES.FUT": [{"d0": "2024-05-08", "d1": "2024-05-09", "s": "5602"}]}))
    (tmp_path / "symbology.json").write_text(original)
    with pytest.raises(OutputError, match="stype_in is 'parent'"):
        merge_symbology(tmp_path, resolution("instrument_id", {}))
    assert (tmp_path / "symbology.json").read_text() == original


def test_merge_symbology_given_a_write_failing_at_fsync_keeps_the_old_file_and_no_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    merge_symbology(tmp_path, resolution("instrument_id", {
        "5602": [{"d0": "2024-05-08", "d1": "2024-05-09", "s": "ESM4"}]}))
    before = (tmp_path / "symbology.json").read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # Disk full shows up at fsync on many filesystems: the new text never replaces the old.
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        merge_symbology(tmp_path, resolution("instrument_id", {
            "7001": [{"d0": "2024-05-09", "d1": "2024-05-10", "s": "ESU4"}]}))
    assert (tmp_path / "symbology.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["symbology.json"]


def test_count_records_given_a_cut_record_reports_ragged() -> None:
    record = bytes([14]) + bytes(55)  # length byte 14 -> 56-byte records
    assert count_records(iter([record * 3])) == 3
    assert count_records(iter([record * 3 + record[:20]])) == -1
    assert count_records(iter([])) == 0


def test_download_given_an_untrusted_certificate_fails_at_once_without_retrying(
        fake: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # the public CAs only
    result = download(tmp_path / "lake", "--symbol", SYMBOL, "--start", "2024-05-08", "--yes")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(
        "Error: metadata.get_dataset_range: TLS failed (")
    assert not fake.requests and not (tmp_path / "lake").exists()


def test_download_given_an_equity_on_its_dataset_writes_the_equity_folder_and_builds(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "GOOG", "--dataset", "DBEQ.BASIC", "--start",
                      "2024-04-03", "--yes")
    assert result.exit_code == 0, result.output
    folder = lake / "raw/source=databento/product_type=equity_mbo/symbol=GOOG" \
        / "table=market_by_order_dbn"
    # No definition records that day: only the MBO file (and the symbology) are written.
    assert sorted(p.name for p in folder.iterdir()) == [
        "dbeq-basic-20240403.mbo.dbn.zst", "symbology.json"]
    with open_dbn(folder / "dbeq-basic-20240403.mbo.dbn.zst") as (meta, body):
        assert (str(meta.dataset), meta.symbols, count_records(body)) == (
            "DBEQ.BASIC", ["GOOG"], 128_943)
    built = CliRunner().invoke(cli, ["build", "--symbol", "GOOG", "--dt", "2024-04-03",
                                     "--publisher", "39", "--lake", str(lake), "--quiet",
                                     "--json"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    shared = db.DBNStore.from_file(data_file("dbeq-basic-goog-20240403.mbo.dbn.zst"))
    records = shared.to_ndarray()
    expected = int(((records["instrument_id"] == 7151) & (records["publisher_id"] == 39)).sum())
    assert json.loads(built.output)[0]["records"] == expected


def test_download_help_given_fresh_interpreter_imports_no_heavy_module() -> None:
    from tests.test_cli_startup import _imported_after

    assert _imported_after("download", "--help") == []


def test_download_given_a_databento_notice_shows_it_on_stderr(
        fake: Script, tmp_path: Path) -> None:
    fake.notice = "Reduced quality data on 2024-05-08 (feed gap)."
    result = CliRunner().invoke(cli, ["download", "--lake", str(tmp_path / "lake"), "--symbol",
                                      SYMBOL, "--start", "2024-05-08", "--no-definitions",
                                      "--yes"], catch_exceptions=False)
    assert result.exit_code == 0
    assert ("Databento notice for glbx-mdp3-20240508.mbo.dbn.zst: Reduced quality data on "
            "2024-05-08 (feed gap).") in result.stderr


def test_python_api_given_a_plan_fetches_exactly_its_files(fake: Script,
                                                           tmp_path: Path) -> None:
    client = open_client(gateway=os.environ["VPBATCH_DATABENTO_GATEWAY"])
    plan = plan_download(client, DownloadRequest(
        SYMBOL, dt.date(2024, 5, 8), dt.date(2024, 5, 11), tmp_path / "lake", max_cost=25,
        progress=False))
    assert not (tmp_path / "lake").exists()  # planning writes nothing
    assert plan.empty_days == [dt.date(2024, 5, 11)]
    assert plan.cost == pytest.approx(expected_cost(3))
    fetched = run_download(client, plan)
    assert [(f.day, f.schema, f.records) for f in fetched] == [
        (t.day, t.schema, t.records) for t in plan.targets]
    assert all(f.path.is_file() and f.attempts == 1 for f in fetched)
