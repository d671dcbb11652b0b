"""``vpbatch download`` never pays twice for the same bytes: cut streams resume, a record
count that differs is asked once more for the rest and then kept under a marked name."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from databento.common.error import BentoError

from tests.conftest import data_file
from tests.ingest.download_fake import EQUITY_ID, Script, stand_in
from tests.ingest.test_download import FOLDER, download, files
from vpbatch.errors import DownloadError
from vpbatch.ingest.download import (
    DownloadRequest,
    open_client,
    open_dbn,
    plan_download,
    run_download,
)

DAY = "2024-05-08"
MBO_FILE = "glbx-mdp3-20240508.mbo.dbn.zst"
#: GOOG's day on DBEQ.BASIC spreads its 128,943 records over the session (ESM4's two seconds
#: are nearly all one opening snapshot at one timestamp, which a resume must ask again).
GOOG = ["--symbol", "GOOG", "--dataset", "DBEQ.BASIC", "--start", "2024-04-03",
        "--no-definitions", "--yes"]
GOOG_DAY = dt.date(2024, 4, 3)
GOOG_FOLDER = Path("raw/source=databento/product_type=equity_mbo/symbol=GOOG"
                   "/table=market_by_order_dbn")
GOOG_FILE = "dbeq-basic-20240403.mbo.dbn.zst"
PARTIAL = f".{GOOG_FILE}.partial"
GOOG_RECORDS = 128_943
CUT_AFTER = 100_000


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    yield from stand_in(tmp_path, monkeypatch)


def real_body() -> bytes:
    with open_dbn(data_file("glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst")) as (_, body):
        return b"".join(body)


def goog_body() -> bytes:
    with open_dbn(data_file("dbeq-basic-goog-20240403.mbo.dbn.zst")) as (_, body):
        rows = np.frombuffer(b"".join(body), np.uint8).reshape(-1, 56)
    return rows[rows[:, 4:8].copy().view("<u4").ravel() == EQUITY_ID].tobytes()


def ts_recv(body: bytes) -> np.ndarray:
    rows = np.frombuffer(body, np.uint8).reshape(-1, 56)
    return rows[:, 40:48].copy().view("<u8").ravel()


def day_body(lake: Path) -> bytes:
    with open_dbn(lake / FOLDER / MBO_FILE) as (meta, body):
        assert meta.symbols == ["ESM4"]
        return b"".join(body)


def goog_file_body(lake: Path) -> bytes:
    with open_dbn(lake / GOOG_FOLDER / GOOG_FILE) as (meta, body):
        assert meta.symbols == ["GOOG"]
        return b"".join(body)


def goog_files(lake: Path) -> list[str]:
    return sorted(p.name for p in (lake / GOOG_FOLDER).iterdir())


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "clean-eof"])
def test_download_given_a_stream_cut_midday_asks_only_for_the_rest(
        fake: Script, tmp_path: Path, with_length: bool) -> None:
    fake.cuts, fake.cut_after, fake.cut_with_length = 1, CUT_AFTER, with_length
    lake = tmp_path / "lake"
    result = download(lake, *GOOG)
    assert result.exit_code == 0, result.output
    assert "after 2 attempts, resumed 1x" in result.output
    # The second request starts at the ts_recv of the last whole record that arrived
    # (inclusive): it carries that timestamp's records and the rest, not the day again.
    real = goog_body()
    assert fake.served[0][0] == "2024-04-03"
    resume_at = int(fake.served[1][0])
    assert fake.served[1][1] == int(np.count_nonzero(ts_recv(real) >= resume_at))
    assert fake.served[1][1] < GOOG_RECORDS - CUT_AFTER + 2_000
    assert goog_file_body(lake) == real  # byte for byte: nothing lost, nothing doubled
    assert goog_files(lake) == [GOOG_FILE, "symbology.json"]


def test_download_given_streams_cut_every_time_keeps_what_arrived_and_the_rerun_pays_the_rest(
        fake: Script, tmp_path: Path) -> None:
    fake.cuts, fake.cut_after = 100, CUT_AFTER
    lake = tmp_path / "lake"
    failed = download(lake, *GOOG, "--retries", "1")
    assert failed.exit_code == 1
    last = failed.output.splitlines()[-1]
    assert last.startswith(f"Error: {GOOG_FILE}: gave up after 2 attempt(s): "), last
    assert f" of {GOOG_RECORDS:,} records in {PARTIAL} (about $" in last
    assert last.endswith("billed); run again to resume from there")
    # Nothing looks like a day file; what arrived waits, hidden, for the next run.
    assert goog_files(lake) == [PARTIAL, "symbology.json"]

    fake.cuts, fake.served = 0, []
    rerun = download(lake, *GOOG)
    assert rerun.exit_code == 0, rerun.output
    assert "records kept by an earlier run)" in rerun.output
    [(start, served)] = fake.served
    assert start != "2024-04-03" and served < GOOG_RECORDS - CUT_AFTER + 2_000
    assert goog_file_body(lake) == goog_body()
    assert goog_files(lake) == [GOOG_FILE, "symbology.json"]


def test_plan_given_a_kept_partial_prices_only_the_rest(fake: Script, tmp_path: Path) -> None:
    client = open_client(gateway=os.environ["VPBATCH_DATABENTO_GATEWAY"])
    request = DownloadRequest("GOOG", GOOG_DAY, GOOG_DAY, tmp_path / "lake",
                              dataset="DBEQ.BASIC", definitions=False, retries=0,
                              progress=False)
    whole = plan_download(client, request)
    fake.cuts, fake.cut_after = 1, CUT_AFTER
    with pytest.raises(DownloadError, match="run again to resume"):
        run_download(client, whole)
    rest = plan_download(client, request)
    [target] = rest.targets
    assert CUT_AFTER - 2_000 < target.kept <= CUT_AFTER and target.records == GOOG_RECORDS
    assert 0 < rest.cost < whole.cost * (GOOG_RECORDS - CUT_AFTER + 2_000) / GOOG_RECORDS


def test_download_given_a_short_answer_asks_once_for_the_rest_and_completes(
        fake: Script, tmp_path: Path) -> None:
    fake.short, fake.short_by = 1, 50  # a clean end, 50 records early
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "ESM4", "--start", DAY, "--no-definitions", "--yes")
    assert result.exit_code == 0, result.output
    assert len(fake.served) == 2 and fake.served[1][0] != DAY and fake.served[1][1] < 200
    assert day_body(lake) == real_body()


def test_download_given_a_count_that_never_matches_keeps_the_file_marked_and_asks_once(
        fake: Script, tmp_path: Path) -> None:
    fake.count_extra = 6  # the service counts 6 records it never sends
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "ESM4", "--start", DAY, "--no-definitions", "--yes")
    assert result.exit_code == 1
    kept = "glbx-mdp3-20240508.mbo.count-mismatch.dbn.zst"
    last = result.output.splitlines()[-1]
    assert last.startswith(
        f"Error: {MBO_FILE}: 13,796 records received, 13,802 expected "
        f"(metadata.get_record_count), also after asking once more for the rest; kept as "
        f"{kept} (about $"), last
    # One whole download and one request for the rest: never the whole day again.
    assert [start == DAY for start, _ in fake.served] == [True, False]
    assert fake.served[1][1] < 200
    assert files(lake, hidden=True) == [kept, "symbology.json"]
    with open_dbn(lake / FOLDER / kept) as (_, body):
        assert b"".join(body) == real_body()  # what was paid for is all there

    fake.served = []
    again = download(lake, "--symbol", "ESM4", "--start", DAY, "--no-definitions", "--yes")
    assert again.exit_code == 0, again.output
    assert f"not fetched again (--force to fetch it again): {kept}" in again.output
    assert "Nothing to download" in again.output and not fake.served


def test_download_given_more_records_than_counted_keeps_the_file_without_asking_again(
        fake: Script, tmp_path: Path) -> None:
    fake.count_extra = -6
    lake = tmp_path / "lake"
    result = download(lake, "--symbol", "ESM4", "--start", DAY, "--no-definitions", "--yes")
    assert result.exit_code == 1
    assert "13,796 records received, 13,790 expected (metadata.get_record_count), more than " \
           "counted, not asked again" in result.output.splitlines()[-1]
    assert len(fake.served) == 1


def test_run_download_given_ctrl_c_during_a_stream_keeps_what_arrived_for_the_next_run(
        fake: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = open_client(gateway=os.environ["VPBATCH_DATABENTO_GATEWAY"])
    lake = tmp_path / "lake"
    request = DownloadRequest("GOOG", GOOG_DAY, GOOG_DAY, lake, dataset="DBEQ.BASIC",
                              definitions=False, progress=False)
    plan = plan_download(client, request)
    real_get_range = client.timeseries.get_range

    def interrupted(**kwargs: object) -> object:
        try:
            return real_get_range(**kwargs)  # type: ignore[arg-type]
        except BentoError:
            raise KeyboardInterrupt from None

    monkeypatch.setattr(client.timeseries, "get_range", interrupted)
    fake.cuts, fake.cut_after = 1, CUT_AFTER
    with pytest.raises(KeyboardInterrupt):
        run_download(client, plan)
    assert goog_files(lake) == [PARTIAL, "symbology.json"]  # no temporary file
    monkeypatch.setattr(client.timeseries, "get_range", real_get_range)
    fake.served = []
    [fetched] = run_download(client, plan_download(client, request))
    assert fetched.records == GOOG_RECORDS and fake.served[0][0] != "2024-04-03"
    assert goog_file_body(lake) == goog_body()
