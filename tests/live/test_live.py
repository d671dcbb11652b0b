"""``vpbatch live`` against the stand-in gateway, through the unmodified official client.

Parity (SPEC §14): the live run's partitions equal ``build`` of its recording and, when the
gateway plays a file, ``build`` of that file; drops and silences lose and double nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import data_file
from tests.live.conftest import ESM4_FILE, REPO, SYNTH_DAY
from tests.live.gateway import TEST_KEY, Fault, StandInGateway
from vpbatch.book.dtypes import F_SNAPSHOT
from vpbatch.book.engine import Engine
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.config import EngineConfig
from vpbatch.ingest.reader import open_mbo
from vpbatch.live.session import LiveRequest, LiveResult, run_live
from vpbatch.products import resolve_product
from vpbatch.store.lake import live_recording_name, raw_dir

ESM4_DAY = dt.date(2024, 5, 8)
TABLES = ("vp_snapshot", "vp_grid")
#: Records of the ESM4 sample (13,601 of them its start-of-day snapshot).
ESM4_RECORDS = 13_796


def parts(partitions: dict[str, Path]) -> dict[str, Path]:
    """Each table's Parquet file in these partitions."""
    return {t: next(Path(partitions[t]).glob("*.parquet")) for t in TABLES}


def built(lake: Path, path: Path, symbol: str, sample: str, **kw: object) -> dict[str, Path]:
    result = build(BuildRequest(symbol=symbol, day=None, lake=lake, path=path,
                                config=EngineConfig.from_sample(sample), use_cache=False,
                                force=True, **kw))  # type: ignore[arg-type]
    return parts(result.partitions)


def live(gw: StandInGateway, lake: Path, symbol: str, day: dt.date, sample: str,
         **kw: object) -> LiveResult:
    req = LiveRequest(symbols=(symbol,), day=day, lake=lake, key=TEST_KEY,
                      gateway="127.0.0.1", port=gw.port,
                      config=EngineConfig.from_sample(sample), **kw)  # type: ignore[arg-type]
    return run_live(req)


def recording(lake: Path, symbol: str, day: dt.date) -> Path:
    product = resolve_product(symbol)
    return raw_dir(lake, product) / live_recording_name(product.dataset, day, symbol)


def assert_same(a: dict[str, Path], b: dict[str, Path]) -> None:
    """Byte-identical Parquet files (same records and parameters give the same bytes), not
    empty: stronger than equal tables, and no decoding of a large event-sampled grid."""
    for t in TABLES:
        rows = pq.read_metadata(a[t]).num_rows
        assert rows > 0, f"{t}: {a[t]} has no rows"
        assert a[t].read_bytes() == b[t].read_bytes(), \
            f"{t}: {a[t]} ({rows} rows) differs from {b[t]} ({pq.read_metadata(b[t]).num_rows})"


@pytest.mark.parametrize("sample", ["event", "packet", "25ms"])
def test_live_given_gateway_playing_real_file_equals_build_of_recording_and_of_file(
        standin: Callable[..., StandInGateway], tmp_path: Path, sample: str) -> None:
    gw = standin()
    result = live(gw, tmp_path / "live", "ESM4", ESM4_DAY, sample)
    (run,) = result.symbols
    assert run.status == "built" and run.records == ESM4_RECORDS and run.late == 0
    live_files = parts(run.partitions)
    rec = recording(tmp_path / "live", "ESM4", ESM4_DAY)
    assert run.recording == rec and rec.is_file() and not Path(f"{rec}.part").exists()
    assert_same(live_files, built(tmp_path / "b1", rec, "ESM4", sample))
    assert_same(live_files, built(tmp_path / "b2", data_file(ESM4_FILE), "ESM4", sample))
    assert result.stats.reconnects == [] and result.stats.duplicates == 0


@pytest.mark.parametrize("sample", ["event", "packet", "25ms"])
def test_live_given_synthetic_day_equals_build_of_recording_and_of_file(
        synth_file: Path, tmp_path: Path, sample: str) -> None:
    with StandInGateway(synth_file) as gw:
        result = live(gw, tmp_path / "live", "MNQH6", SYNTH_DAY, sample,
                      start_time=dt.time(9, 30), warmup_ns=60 * 10**9)
    (run,) = result.symbols
    assert run.records == 150_000
    live_files = parts(run.partitions)
    rec = recording(tmp_path / "live", "MNQH6", SYNTH_DAY)
    kw = {"start_time": dt.time(9, 30), "warmup_ns": 60 * 10**9}
    assert_same(live_files, built(tmp_path / "b1", rec, "MNQH6", sample, **kw))
    assert_same(live_files, built(tmp_path / "b2", synth_file, "MNQH6", sample, **kw))


@pytest.mark.parametrize("drop_after", [40, 6_801, 13_700])
def test_live_given_connection_dropped_loses_and_doubles_nothing(
        standin: Callable[..., StandInGateway], tmp_path: Path, drop_after: int) -> None:
    # 6,801 cuts the snapshot's A records (old ts_event), 13,700 the live part.
    gw = standin(faults={0: Fault(drop_after=drop_after)}, replay_filter="each")
    result = live(gw, tmp_path / "live", "ESM4", ESM4_DAY, "event")
    assert len(gw.connections) == 2
    assert gw.connections[1].subscriptions[0].start is not None
    (reconnect,) = result.stats.reconnects
    assert gw.connections[0].records == drop_after
    # The replay repeated what had been delivered: dropped, each exactly once.
    assert 0 < reconnect.duplicates <= drop_after
    assert reconnect.duplicates + ESM4_RECORDS == sum(c.records for c in gw.connections)
    rec = recording(tmp_path / "live", "ESM4", ESM4_DAY)
    original = np.concatenate(list(open_mbo(data_file(ESM4_FILE)).iter_raw()))
    recorded = np.concatenate(list(open_mbo(rec).iter_raw()))
    assert recorded.tobytes() == original.tobytes()  # none lost, none doubled, same order
    assert_same(parts(result.symbols[0].partitions),
                built(tmp_path / "b", data_file(ESM4_FILE), "ESM4", "event"))


def test_live_given_silent_gateway_reconnects_after_heartbeat_timeout_with_parity(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    gw = standin(faults={0: Fault(silent_after=9_000)})
    t0 = time.monotonic()
    result = live(gw, tmp_path / "live", "ESM4", ESM4_DAY, "packet", heartbeat_s=5)
    assert time.monotonic() - t0 > 14  # the client waits heartbeat + 10 s
    assert len(result.stats.reconnects) == 1 and "timeout" in result.stats.reconnects[0].reason
    assert result.symbols[0].records == ESM4_RECORDS
    assert_same(parts(result.symbols[0].partitions),
                built(tmp_path / "b", data_file(ESM4_FILE), "ESM4", "packet"))


def test_live_given_snapshot_start_rebuilds_the_book_and_equals_build_of_recording(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    at = 13_650  # past the file's own snapshot, inside its live part
    gw = standin(now=at)
    result = live(gw, tmp_path / "live", "ESM4", ESM4_DAY, "event", warm="snapshot")
    assert gw.connections[0].subscriptions[0].snapshot
    rec = recording(tmp_path / "live", "ESM4", ESM4_DAY)
    records = np.concatenate(list(open_mbo(rec).iter_raw()))
    snap = records[(records["flags"] & F_SNAPSHOT) != 0]
    assert chr(snap["action"][0]) == "R" and len(records) - len(snap) == ESM4_RECORDS - at
    # The book the snapshot builds is the file's book at that point, level for level.
    product = resolve_product("ESM4")
    file_records = np.concatenate(list(open_mbo(data_file(ESM4_FILE)).iter_raw()))
    from_file, from_snapshot = (Engine(bucket=product.bucket, tick=product.tick)
                                for _ in range(2))
    from_file.process_book_only(file_records[:at])
    from_snapshot.process_book_only(snap)
    assert from_snapshot.best_bid() == from_file.best_bid() is not None
    assert from_snapshot.best_ask() == from_file.best_ask() is not None
    prices = np.unique(file_records["price"][:at][file_records["action"][:at] == ord("A")])
    for side in "BA":
        depths = [(p, from_file.depth(side, int(p))) for p in prices]
        assert [(p, from_snapshot.depth(side, int(p))) for p in prices] == depths
    assert_same(parts(result.symbols[0].partitions), built(tmp_path / "b", rec, "ESM4", "event"))


def test_live_given_end_time_ends_the_session_and_commits(
        synth_file: Path, tmp_path: Path) -> None:
    with StandInGateway(synth_file) as gw:
        result = live(gw, tmp_path / "live", "MNQH6", SYNTH_DAY, "25ms",
                      start_time=dt.time(9, 30), end_time=dt.time(9, 40), warmup_ns=60 * 10**9)
    (run,) = result.symbols
    snaps = pq.read_table(parts(run.partitions)["vp_snapshot"], columns=["ts_event"])
    last = snaps.column("ts_event").cast(pa.int64()).to_numpy()[-1]
    end = int(dt.datetime(2026, 2, 6, 14, 40, tzinfo=dt.UTC).timestamp()) * 10**9
    assert last < end
    assert_same(parts(run.partitions),
                built(tmp_path / "b", synth_file, "MNQH6", "25ms", start_time=dt.time(9, 30),
                      end_time=dt.time(9, 40), warmup_ns=60 * 10**9))


def test_live_given_refused_key_exits_3_with_one_line(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    gw = standin()
    done = run_cli(gw, tmp_path, key="db-" + "x" * 29)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: live gateway: ")
    assert "Authentication failed" in done.stderr
    assert len(gw.connections) == 1  # never retried


def test_live_given_unknown_symbol_exits_3_naming_it(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    gw = standin()
    done = run_cli(gw, tmp_path, symbol="ESZ9")
    assert done.returncode == 3, done.stderr
    assert "Failed to resolve symbol: ESZ9" in done.stderr.splitlines()[-1]
    assert len(gw.connections) == 1


def test_live_given_missing_key_exits_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABENTO_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "cli", "live", "--symbol", "ESM4", "--no-serve",
                           "--lake", str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    assert "DATABENTO_API_KEY is not set" in done.stderr


def run_cli(gw: StandInGateway, lake: Path, *, key: str = TEST_KEY, symbol: str = "ESM4",
            extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABENTO_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "cli", "live", "--symbol", symbol, "--dt", ESM4_DAY.isoformat(),
         "--gateway", f"127.0.0.1:{gw.port}", "--no-serve", "--lake", str(lake), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def start_cli(gw: StandInGateway, lake: Path, *extra: str) -> subprocess.Popen[str]:
    """``vpbatch live`` on the synthetic day, as a process."""
    env = {**os.environ, "DATABENTO_API_KEY": TEST_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "live", "--symbol", "MNQH6", "--dt", SYNTH_DAY.isoformat(),
         "--gateway", f"127.0.0.1:{gw.port}", "--no-serve", "--sample", "event", "--lake",
         str(lake), *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def test_live_killed_with_sigkill_leaves_a_recording_that_builds_up_to_its_last_flush(
        synth_file: Path, tmp_path: Path) -> None:
    with StandInGateway(synth_file, rate=20_000) as gw:  # 7.5 s for the day
        proc = start_cli(gw, tmp_path)
        try:
            gw.wait_for(lambda g: g.position > 60_000, timeout=60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            proc.kill()
            proc.communicate()
    part = Path(f"{recording(tmp_path, 'MNQH6', SYNTH_DAY)}.part")
    assert part.is_file()
    records = np.concatenate(list(open_mbo(part).iter_raw()))
    original = np.concatenate(list(open_mbo(synth_file).iter_raw()))
    # Flushed every 0.25 s: at most ~0.5 s (10,000 records) behind the gateway.
    assert 45_000 < len(records) < 150_000
    assert records.tobytes() == original[:len(records)].tobytes()  # a whole prefix
    done = subprocess.run([sys.executable, "-m", "cli", "build", "--symbol", "MNQH6", "--path",
                           str(part), "--sample", "event", "--lake", str(tmp_path / "b")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "gold" / "vp_grid").exists() \
        or not list((tmp_path / "gold" / "vp_grid").rglob("_SUCCESS"))  # nothing committed


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_live_given_sigterm_or_ctrl_c_finishes_recording_and_commits_what_it_emitted(
        synth_file: Path, tmp_path: Path, stop: signal.Signals) -> None:
    with StandInGateway(synth_file, rate=20_000) as gw:
        proc = start_cli(gw, tmp_path)
        try:
            gw.wait_for(lambda g: g.position > 60_000, timeout=60)
            proc.send_signal(stop)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    rec = recording(tmp_path, "MNQH6", SYNTH_DAY)
    assert rec.is_file() and not Path(f"{rec}.part").exists()
    manifest = json.loads(Path(f"{rec}.json").read_text())
    assert manifest["subscription"]["symbols"] == ["MNQH6"] and manifest["reconnects"] == []
    assert 40_000 < manifest["records"] < 150_000  # what had arrived (some was in flight)
    assert "MNQH6: built" in out
    partitions = {t: next((tmp_path / "gold" / t).rglob("dt=2026-02-06")) for t in TABLES}
    assert_same(parts(partitions), built(tmp_path / "b", rec, "MNQH6", "event"))


def test_live_given_replay_unavailable_on_reconnect_resyncs_from_snapshot_and_records_gap(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    gw = standin(faults={0: Fault(drop_after=13_700), 1: Fault(replay_unavailable=True)})
    result = live(gw, tmp_path / "live", "ESM4", ESM4_DAY, "event")
    assert [c.subscriptions[0].snapshot for c in gw.connections] == [False, False, True]
    (gap,) = result.stats.gaps
    assert gap[1] is not None and gap[1] >= gap[0]
    rec = recording(tmp_path / "live", "ESM4", ESM4_DAY)
    manifest = json.loads(Path(f"{rec}.json").read_text())
    assert manifest["gaps"] == [list(gap)]
    assert_same(parts(result.symbols[0].partitions), built(tmp_path / "b", rec, "ESM4", "event"))


def test_live_given_two_symbols_runs_one_connection_two_engines_two_recordings(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    gw = standin(file="dbeq-basic-goog-20240403.mbo.dbn.zst")
    day = dt.date(2024, 4, 3)
    req = LiveRequest(symbols=("GOOG", "GOOGL"), day=day, lake=tmp_path / "live",
                      dataset="DBEQ.BASIC", key=TEST_KEY, gateway="127.0.0.1", port=gw.port,
                      config=EngineConfig.from_sample("packet"), publisher_id=39)
    result = run_live(req)
    assert len(gw.connections) == 1
    assert gw.connections[0].subscriptions[0].symbols == ["GOOG", "GOOGL"]
    goog, googl = result.symbols
    assert (goog.records, googl.records) == (128_943, 157_187)  # every record, in its engine
    assert goog.other_publishers > 0 and goog.publisher_id == 39
    file = data_file("dbeq-basic-goog-20240403.mbo.dbn.zst")
    for run in (goog, googl):
        assert run.recording is not None and run.recording.name == \
            f"dbeq-basic-20240403.live-{run.symbol}.mbo.dbn.zst"
        mine = open_mbo(run.recording)
        assert set(mine.instruments().values()) == {run.symbol}
        kw = {"publisher_id": 39}
        assert_same(parts(run.partitions),
                    built(tmp_path / f"b-{run.symbol}", run.recording, run.symbol, "packet", **kw))
        assert_same(parts(run.partitions),
                    built(tmp_path / f"f-{run.symbol}", file, run.symbol, "packet", **kw))


def test_live_given_recording_of_earlier_session_refuses_and_leaves_it(
        standin: Callable[..., StandInGateway], tmp_path: Path) -> None:
    gw = standin()
    rec = recording(tmp_path, "ESM4", ESM4_DAY)
    part = Path(f"{rec}.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"what a crashed session recorded")
    done = run_cli(gw, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: {part}: a recording of ESM4 on 2024-05-08 exists from an earlier session; "
        f"build it with `vpbatch build --symbol ESM4 --path {part}`, then move it out of the "
        f"lake's raw folder to record again")
    assert part.read_bytes() == b"what a crashed session recorded" and not rec.exists()
    assert gw.connections == []  # refused before connecting
