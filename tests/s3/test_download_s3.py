"""``vpbatch download --lake s3://...`` against the Databento stand-in and a real S3 server.

The day files, definitions and ``symbology.json`` land in the bucket's raw area byte for byte
as in a folder lake, and a second run into the bucket fetches nothing and pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from tests.ingest.download_fake import SYMBOL, Script, stand_in
from tests.s3.conftest import keys
from vpbatch.store import open_lake

START, END = "2024-05-08", "2024-05-11"  # Wed .. Sat: Saturday has no data


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    yield from stand_in(tmp_path, monkeypatch)


def download(lake: Path | str) -> Result:
    return CliRunner().invoke(cli, ["download", "--lake", str(lake), "--symbol", SYMBOL,
                                    "--start", START, "--end", END, "--yes"])


def test_download_into_a_bucket_writes_the_folder_files_and_never_fetches_twice(
        fake: Script, lake_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "lake"
    assert download(folder).exit_code == 0
    fake.requests.clear()
    first = download(lake_url)
    assert first.exit_code == 0, first.output
    local = {str(p.relative_to(folder)): p.read_bytes()
             for p in sorted((folder / "raw").rglob("*")) if p.is_file()}
    lake = open_lake(lake_url)
    remote = {k: lake.read_bytes(lake.loc(k)) for k in keys(lake_url, "raw")}
    assert len(local) == 7 and remote == local  # 3 days x (mbo, definition) + symbology
    assert fake.calls("timeseries.get_range")
    fake.requests.clear()
    again = download(lake_url)
    assert again.exit_code == 0, again.output
    assert "Nothing to download" in again.output
    assert not fake.calls("timeseries.get_range") and not fake.calls("metadata.get_cost")
    assert {k: lake.read_bytes(lake.loc(k)) for k in keys(lake_url, "raw")} == local
