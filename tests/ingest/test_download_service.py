"""``vpbatch download`` on what the real service does: parents with many contracts, the
available range, weekends, dotted tickers, per-byte prices; and the stand-in's own checks."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import databento as db
import numpy as np
import pytest
import requests
from click.testing import CliRunner
from databento.common.error import BentoClientError

from cli.main import cli
from tests.conftest import data_file
from tests.ingest.download_fake import (
    DATASET,
    DOTTED,
    DOTTED_ID,
    ESM4_RECORDS,
    INSTRUMENT_ID,
    KEY,
    NEW_ID,
    NEW_SYMBOL,
    NEXT_ID,
    NEXT_RECORDS,
    NEXT_SYMBOL,
    PARENT,
    SPREAD_ID,
    SPREAD_RECORDS,
    SPREAD_SYMBOL,
    SUNDAY_RECORDS,
    UDS_COUNT,
    UNIT_PRICES,
    Script,
    stand_in,
)
from tests.ingest.test_download import FOLDER, download, files
from vpbatch.ingest.definitions import read_definition_symbols
from vpbatch.ingest.download import count_records, open_dbn, usd

PARENT_IDS = 4 + UDS_COUNT  # ESM4, ESU4, the spread, ESH5 (from 05-09) and the UD spreads
PARENT_RECORDS = ESM4_RECORDS + NEXT_RECORDS + SPREAD_RECORDS


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    yield from stand_in(tmp_path, monkeypatch)


def build(lake: Path, symbol: str, day: str) -> dict[str, object]:
    done = CliRunner().invoke(cli, ["build", "--symbol", symbol, "--dt", day, "--lake",
                                    str(lake), "--quiet", "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    result: dict[str, object] = json.loads(done.output)[0]
    return result


# -- parents: many contracts, several intervals ----------------------------------------------


def test_download_given_a_parent_of_many_contracts_maps_them_all_and_build_picks_each(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", PARENT, "--start", "2024-05-08", "--end", "2024-05-09",
                      "--yes")
    assert result.exit_code == 0, result.output
    # The parent resolves to 2,304 ids, turned into raw symbols 2,000 at a time (the limit).
    resolves = fake.calls("symbology.resolve")
    assert [(r["stype_in"], len(r["symbols"].split(","))) for r in resolves] == [
        ("parent", 1), ("instrument_id", 2_000), ("instrument_id", PARENT_IDS - 2_000)]
    doc = json.loads((lake / FOLDER / "symbology.json").read_text())
    assert len(doc["result"]) == PARENT_IDS
    assert {doc["result"][str(i)][0]["s"] for i in (INSTRUMENT_ID, NEXT_ID, SPREAD_ID)} == {
        "ESM4", NEXT_SYMBOL, SPREAD_SYMBOL}
    # ESH5 is listed from the second day: its interval says so.
    assert doc["result"][str(NEW_ID)] == [{"d0": "2024-05-09", "d1": "2024-05-10",
                                           "s": NEW_SYMBOL}]
    for day in ("20240508", "20240509"):
        with open_dbn(lake / FOLDER / f"glbx-mdp3-{day}.mbo.dbn.zst") as (meta, body):
            assert (meta.symbols, str(meta.stype_in)) == ([PARENT], "parent")
            assert count_records(body) == PARENT_RECORDS
    defined = read_definition_symbols(lake / FOLDER / "glbx-mdp3-20240509.definition.dbn.zst")
    assert len(defined) == PARENT_IDS and defined[NEW_ID] == NEW_SYMBOL
    # Each contract builds from the shared day file with its own records only.
    assert build(lake, "ESM4", "2024-05-08")["records"] == ESM4_RECORDS
    assert build(lake, NEXT_SYMBOL, "2024-05-09")["records"] == NEXT_RECORDS
    spread = CliRunner().invoke(cli, ["build", "--symbol", SPREAD_SYMBOL, "--dt", "2024-05-08",
                                      "--lake", str(lake), "--quiet"])
    assert spread.exit_code == 1 and "is a spread" in spread.output.splitlines()[-1]
    # A later request for one contract of those days is covered by the parent's files.
    fake.requests.clear()
    again = download(lake, "--symbol", "ESM4", "--start", "2024-05-08", "--yes")
    assert "Nothing to download" in again.output and not fake.calls("timeseries.get_range")


def test_download_given_a_parent_prices_every_contract_by_the_byte(
        fake: Script, tmp_path: Path) -> None:
    prices = UNIT_PRICES[DATASET]
    mbo = PARENT_RECORDS * 56 * prices["mbo"] / 1e9
    definitions = (PARENT_IDS - 1) * 360 * prices["definition"] / 1e9  # no ESH5 on 05-08
    cost = mbo + definitions
    lake = tmp_path / "lake"
    over = download(lake, "--symbol", PARENT, "--start", "2024-05-08", "--max-cost",
                    f"{cost * 0.99:.6f}", "--yes")
    assert over.exit_code == 1
    assert over.output.splitlines()[-1].startswith(
        f"Error: --max-cost: the download costs {usd(cost)}, above the limit")
    assert f"mbo {PARENT_RECORDS:,} records {usd(mbo)}" in over.output
    assert not fake.calls("timeseries.get_range") and not lake.exists()
    under = download(lake, "--symbol", PARENT, "--start", "2024-05-08", "--max-cost",
                     f"{cost * 1.01:.6f}", "--yes")
    assert under.exit_code == 0, under.output


def test_usd_given_small_amounts_shows_the_digits_that_matter() -> None:
    assert [usd(x) for x in (0.0, 0.00312, 0.0000427, 0.01, 1234.5)] == [
        "$0.00", "$0.0031", "$0.000043", "$0.01", "$1,234.50"]


# -- the available range: recent days --------------------------------------------------------


def test_download_given_days_past_the_available_range_skips_them_before_any_charge(
        fake: Script, tmp_path: Path) -> None:
    fake.available_end[DATASET] = "2024-05-10T12:00:00.000000000Z"  # Friday noon
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "ESM4", "--start", "2024-05-08", "--end", "2024-05-10",
                      "--yes")
    assert result.exit_code == 0, result.output
    assert ("not available yet (GLBX.MDP3 mbo ends at 2024-05-10 12:00 UTC): 2024-05-10 Fri"
            in result.output)
    assert fake.requests[0][0] == "metadata.get_dataset_range"
    asked = [f["start"] for name, f in fake.requests if "start" in f]
    assert asked and not any(s.startswith("2024-05-10") for s in asked)
    assert files(lake) == sorted([f"glbx-mdp3-2024050{d}.{s}.dbn.zst" for d in (8, 9)
                                  for s in ("mbo", "definition")] + ["symbology.json"])


def test_download_given_no_day_available_yet_fails_naming_the_range_end(
        fake: Script, tmp_path: Path) -> None:
    fake.available_end[DATASET] = "2024-05-09T00:00:00.000000000Z"
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "ESM4", "--start", "2024-05-09", "--end", "2024-05-10",
                      "--yes")
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        "Error: ESM4 on GLBX.MDP3: 2024-05-09 .. 2024-05-10 not available yet (GLBX.MDP3 mbo "
        "ends at 2024-05-09 00:00 UTC); nothing downloaded")
    assert [name for name, _ in fake.requests] == ["metadata.get_dataset_range"]
    assert not lake.exists()


def test_download_given_a_day_before_the_dataset_starts_says_so(
        fake: Script, tmp_path: Path) -> None:
    result = download(tmp_path / "lake", "--symbol", "ESM4", "--start", "2010-06-05", "--yes")
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        "Error: ESM4 on GLBX.MDP3: 2010-06-05 before GLBX.MDP3 starts (2010-06-06); "
        "nothing downloaded")


# -- weekends ---------------------------------------------------------------------------------


def test_download_given_a_weekend_fetches_sunday_and_reports_saturday_as_no_data(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "ESH4", "--start", "2023-12-23", "--end", "2023-12-24",
                      "--yes")
    assert result.exit_code == 0, result.output
    assert f"2023-12-24 Sun: mbo {SUNDAY_RECORDS:,} records" in result.output
    assert "no data (Saturday, holiday, or the symbol not listed): 2023-12-23 Sat" \
        in result.output
    assert files(lake) == ["glbx-mdp3-20231224.definition.dbn.zst",
                           "glbx-mdp3-20231224.mbo.dbn.zst", "symbology.json"]
    with open_dbn(lake / FOLDER / "glbx-mdp3-20231224.mbo.dbn.zst") as (_, body):
        got = b"".join(body)
    with open_dbn(data_file("glbx-mdp3-esh4-20231224.mbo.dbn.zst")) as (_, body):
        assert got == b"".join(body)  # the Sunday snapshot, as the service has it


# -- dotted tickers ---------------------------------------------------------------------------


def test_download_given_a_dotted_ticker_asks_for_the_raw_symbol_and_builds(
        fake: Script, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", DOTTED, "--start", "2024-04-03", "--yes")
    assert result.exit_code == 0, result.output
    [get] = fake.calls("timeseries.get_range")
    assert (get["dataset"], get["symbols"], get["stype_in"]) == ("XNAS.ITCH", DOTTED,
                                                                 "raw_symbol")
    folder = lake / "raw/source=databento/product_type=equity_mbo/symbol=BRK.B" \
        / "table=market_by_order_dbn"
    with open_dbn(folder / "xnas-itch-20240403.mbo.dbn.zst") as (meta, body):
        rows = np.frombuffer(b"".join(body), np.uint8).reshape(-1, 56)
    assert meta.symbols == [DOTTED]
    assert set(rows[:, 4:8].copy().view("<u4").ravel().tolist()) == {DOTTED_ID}
    assert build(lake, DOTTED, "2024-04-03")["records"] == len(rows)


# -- the stand-in answers only what the service would ------------------------------------------


def client() -> db.Historical:
    return db.Historical(KEY, gateway=os.environ["VPBATCH_DATABENTO_GATEWAY"])


@pytest.mark.parametrize(("call", "case"), [
    (lambda c, p: c.timeseries.get_range(dataset=DATASET, symbols="ESM4", schema="mbo",
                                         start="2024-05-08", path=p), "param_missing"),
    (lambda c, p: c.timeseries.get_range(dataset=DATASET, symbols="ESM4", schema="mbo",
                                         start="2024-05-08", end="2024-05-09",
                                         stype_out="raw_symbol", path=p),
     "symbology_invalid_combination"),
    (lambda c, p: c.timeseries.get_range(dataset=DATASET, symbols="ES", schema="mbo",
                                         stype_in="parent", start="2024-05-08",
                                         end="2024-05-09", path=p),
     "symbology_invalid_symbol"),
    (lambda c, p: c.metadata.get_cost(dataset=DATASET, symbols="ESM4", schema="trades",
                                      start="2024-05-08", end="2024-05-09"), "schema_invalid"),
    (lambda c, p: c.metadata.get_record_count(dataset=DATASET, symbols="ESM4", schema="mbo",
                                              start="2024-05-13", end="2024-05-14"),
     "data_end_after_available_end"),
    (lambda c, p: c.symbology.resolve(dataset=DATASET, symbols=[str(i) for i in range(2_001)],
                                      stype_in="instrument_id", stype_out="raw_symbol",
                                      start_date="2024-05-08", end_date="2024-05-09"),
     "symbols_too_many"),
], ids=["no-end", "stype-out", "bad-parent", "schema", "past-range", "2001-symbols"])
def test_stand_in_given_a_request_the_service_would_refuse_answers_422(
        fake: Script, tmp_path: Path, call: Callable[[db.Historical, Path], object],
        case: str) -> None:
    with pytest.raises(BentoClientError) as refused:
        call(client(), tmp_path / "out.dbn.zst")
    assert refused.value.http_status == 422
    assert (refused.value.json_body or {})["detail"]["case"] == case


@pytest.mark.parametrize(("path", "fields", "status"), [
    ("/v0/timeseries.get_range", {"encoding": "csv"}, 422),
    ("/v0/timeseries.get_range", {"compression": "none"}, 422),
    ("/v0/timeseries.get_range", {"mode": "historical-streaming"}, 422),
    ("/v1/timeseries.get_range", {}, 404),
    ("/timeseries.get_range", {}, 404),
], ids=["csv", "uncompressed", "unknown-field", "wrong-version", "no-version"])
def test_stand_in_given_what_the_client_never_sends_refuses_it(
        fake: Script, path: str, fields: dict[str, str], status: int) -> None:
    gateway = os.environ["VPBATCH_DATABENTO_GATEWAY"]
    form = {"dataset": DATASET, "symbols": "ESM4", "schema": "mbo", "start": "2024-05-08",
            "end": "2024-05-09", "stype_in": "raw_symbol", "stype_out": "instrument_id",
            "encoding": "dbn", "compression": "zstd"}
    understood = requests.post(f"{gateway}/v0/timeseries.get_range", data=form,
                               auth=(KEY, ""), timeout=10)
    assert understood.status_code == 200  # the control: what the client sends
    answer = requests.post(gateway + path, data={**form, **fields}, auth=(KEY, ""), timeout=10)
    assert answer.status_code == status


def test_download_given_any_run_sends_only_requests_the_service_understands(
        fake: Script, tmp_path: Path) -> None:
    """Every request vpbatch makes names an exclusive ``end`` and the stypes and encoding the
    service expects; the stand-in would have answered anything else with a 4xx."""
    result = download(tmp_path / "lake", "--symbol", PARENT, "--start", "2024-05-08", "--yes")
    assert result.exit_code == 0, result.output
    for name, form in fake.requests:
        if name in ("metadata.get_record_count", "metadata.get_cost", "timeseries.get_range"):
            start = dt.date.fromisoformat(form["start"])
            assert form["end"] == str(start + dt.timedelta(days=1))
            assert form["stype_in"] == "parent"
        if name == "timeseries.get_range":
            assert (form["stype_out"], form["encoding"], form["compression"]) == (
                "instrument_id", "dbn", "zstd")
