"""``serve``, ``plot``, ``report`` and ``live`` on a lake on a real S3 server.

One synthetic day is built into a folder and into a bucket; the viewer's stream of the bucket
sends the folder's frames byte for byte, the day listing is the same, and the heatmap PNG and
the report page are the same bytes (the page names the lake, so that line is compared apart).
A live session into the bucket uploads its recording and commits the build of the file played.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import data_file
from tests.live.conftest import ESM4_FILE, REPO
from tests.live.gateway import TEST_KEY, StandInGateway
from tests.s3.conftest import keys, make_bucket, subprocess_env
from tests.s3.test_build_s3 import build, invoke, upload_raw
from tests.serve.conftest import ServerThread, stream_all
from vpbatch.build.pipeline import build as run_build
from vpbatch.build.request import BuildRequest
from vpbatch.config import EngineConfig
from vpbatch.serve.app import create_app
from vpbatch.store import find_partition, open_lake
from vpbatch.store.lake import live_recording_name
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
DAY = dt.date(2026, 2, 6)
WINDOW = ("--start-time", "09:30", "--end-time", "09:40")


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> tuple[Path, str]:
    """The same day built into a folder and into a bucket (the bucket's own raw file)."""
    raw = tmp_path_factory.mktemp("read_s3_raw")
    synth_to_lake(raw, SYMBOL, DAY, records=120_000, seed=31)
    folder = tmp_path_factory.mktemp("read_s3_folder")
    shutil.copytree(raw / "raw", folder / "raw")
    url = f"s3://{make_bucket(s3_server)}/lake"
    upload_raw(raw, url)
    for lake in (folder, url):
        build(lake, "--dt", DAY.isoformat(), *WINDOW, ok=True)
    return folder, url


def _days(server: ServerThread) -> list[dict[str, object]]:
    with urlopen(f"{server.base}/v1/days", timeout=30) as r:
        return list(json.loads(r.read()))


def test_serve_streams_a_bucket_lake_with_the_folder_frames(lakes: tuple[Path, str]) -> None:
    folder, url = lakes
    with ServerThread(create_app(folder)) as local, ServerThread(create_app(url)) as remote:
        assert _days(remote) == _days(local) and len(_days(local)) == 1
        want = stream_all(local, speed="0", start_time="09:35")
        got = stream_all(remote, speed="0", start_time="09:35")
        assert len(want.grids) > 100
        assert got.texts == want.texts and got.grids == want.grids
        assert got.last == want.last and got.last is not None and got.last["type"] == "end"
        with urlopen(f"{remote.base}/", timeout=30) as r:
            assert url in r.read().decode()
        # A day that is not built: on a store there is no raw fallback, and it says why.
        missing = stream_all(remote, speed="0", dt="2026-02-09")
        assert missing.last is not None and missing.last["type"] == "error"
        assert "no complete build of MNQH6 for 2026-02-09" in missing.last["message"]
        assert f"not {url}: build the day into the store" in missing.last["message"]


def test_serve_refuses_raw_source_on_a_bucket_naming_it(lakes: tuple[Path, str]) -> None:
    _, url = lakes
    with ServerThread(create_app(url)) as remote:
        got = stream_all(remote, speed="0", source="raw")
    assert got.last is not None and got.last["type"] == "error"
    assert f"source=raw reads a lake folder, not {url}" in got.last["message"]


def test_plot_and_report_of_a_bucket_lake_equal_the_folder_ones(lakes: tuple[Path, str],
                                                                tmp_path: Path) -> None:
    from vpbatch.pictures.plot import plot_heatmap
    from vpbatch.pictures.report import write_report

    folder, url = lakes
    start, end = dt.time(9, 31), dt.time(9, 36)
    pngs = [plot_heatmap(lake, SYMBOL, DAY, start, end, tmp_path / f"{i}.png")
            for i, lake in enumerate((folder, url))]
    assert pngs[0].read_bytes() == pngs[1].read_bytes()
    pages = [write_report(lake, SYMBOL, DAY, tmp_path / f"{i}.html").read_text()
             for i, lake in enumerate((folder, url))]
    # The page shows each build's own timings (two builds, two timings): compared apart.
    same = [re.sub(r"<td>[0-9.,]+ (ms|s|µs)</td>", "<td>T</td>", page.replace(lake, "LAKE"))
            for page, lake in zip(pages, (str(folder), url), strict=True)]
    assert same[0] == same[1]
    assert len(pages[0]) > 10_000


def test_live_into_a_bucket_records_there_and_commits_the_build_of_the_file(
        bucket: str, tmp_path: Path) -> None:
    """``vpbatch live --lake s3://...``: the recording is uploaded into the bucket's raw area
    and the partitions committed to the bucket equal ``build`` of the played file."""
    lake_url = f"s3://{bucket}/lake"
    with StandInGateway(data_file(ESM4_FILE)) as gw:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "live", "--symbol", "ESM4", "--dt", "2024-05-08",
             "--gateway", f"127.0.0.1:{gw.port}", "--no-serve", "--sample", "event",
             "--lake", lake_url, "--quiet"],
            cwd=REPO, env=subprocess_env(DATABENTO_API_KEY=TEST_KEY), capture_output=True,
            text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    name = live_recording_name("GLBX.MDP3", dt.date(2024, 5, 8), "ESM4")
    recorded = [k for k in keys(lake_url, "raw") if k.endswith(name)]
    assert len(recorded) == 1 and f"recording {lake_url}/{recorded[0]}" in done.stdout
    assert not any(k.endswith(".part") for k in keys(lake_url))
    local = build_tables(tmp_path / "folder", data_file(ESM4_FILE))
    for table in ("vp_snapshot", "vp_grid"):
        part = find_partition(lake_url, table, "future_mbo", "ESM4", "2024-05-08")
        assert part is not None, table
        got = pq.read_table(open_lake(lake_url).open_input(part.part_url))
        assert got.num_rows > 0 and got.equals(local[table]), table


def build_tables(lake: Path, path: Path) -> dict[str, pa.Table]:
    result = run_build(BuildRequest(symbol="ESM4", day=None, lake=lake, path=path,
                                    config=EngineConfig.from_sample("event"), use_cache=False))
    return {t: pq.read_table(next(Path(result.partitions[t]).glob("*.parquet")))
            for t in ("vp_snapshot", "vp_grid")}


def test_evaluate_and_fit_of_a_bucket_lake_equal_the_folder_ones(lakes: tuple[Path, str],
                                                                 tmp_path: Path) -> None:
    """``evaluate --models`` (features, fits, metrics) and ``fit`` read the bucket's builds
    with the folder's results."""
    folder, url = lakes
    reports, models = [], []
    for i, lake in enumerate((folder, url)):
        done = invoke("evaluate", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--lake", lake,
                      "--json", "--resamples", "50", "--models", "l1,vp+l1", "-q", ok=True)
        reports.append(json.loads(done.stdout))
        out = tmp_path / f"model-{i}.json"
        invoke("fit", "--symbol", SYMBOL, "--start", DAY.isoformat(), "--end", DAY.isoformat(),
               "--lake", lake, "--targets", "event_1", "--models", "l1", "-o", out, "-q",
               ok=True)
        models.append(json.loads(out.read_text()))
    for report in reports:
        report.pop("lake", None)
    assert reports[0] == reports[1] and reports[0]["differences"]
    for model in models:
        model.pop("created", None)
        model.pop("lake", None)
    assert models[0] == models[1]
