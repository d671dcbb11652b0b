"""``vpbatch.build.pipeline.build``: determinism, the book cache, the three phases, verify, skip.

Synthetic MNQH6 sessions (200k records) are generated once per test session and copied into
each test's lake; builds emit short windows (09:30-09:45 ET) to stay fast. Error paths and
faults seen by users (exact ``Error:`` lines, disk full, kill -9, concurrent builds, date
ranges) are in ``test_build_cli.py``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from vpbatch.book.dtypes import F_LAST, F_SNAPSHOT
from vpbatch.book.engine import Engine
from vpbatch.build.pipeline import BuildJob, build
from vpbatch.build.request import BuildRequest, BuildResult
from vpbatch.build.verify import verify
from vpbatch.config import EngineConfig
from vpbatch.errors import OutputError, VpbatchWarning
from vpbatch.ingest.reader import MboSource, find_input, open_mbo
from vpbatch.products import resolve_product
from vpbatch.sql import run_query
from vpbatch.store.cache import cache_dir
from vpbatch.store.lake import MANIFEST_FILE, PART_FILE, SUCCESS_FILE
from vpbatch.store.partitions import read_manifest, read_success
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
FEB = dt.date(2026, 2, 6)  # Friday, EST (UTC-5)
JAN = dt.date(2026, 1, 7)  # Wednesday, EST (UTC-5)
JUL = dt.date(2026, 7, 8)  # Wednesday, EDT (UTC-4)
SEEDS = {FEB: 11, JAN: 12, JUL: 13}
RECORDS = 200_000
OPEN = dt.time(9, 30)
CLOSE = dt.time(9, 45)
NS = 1_000_000_000

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
MESH5 = "glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst"


@pytest.fixture(scope="session")
def raw_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with only raw synthetic sessions (FEB, JAN, JUL), generated once."""
    root = tmp_path_factory.mktemp("pipeline_raw")
    for day, seed in SEEDS.items():
        synth_to_lake(root, SYMBOL, day, records=RECORDS, seed=seed)
    return root


@pytest.fixture
def lake(tmp_path: Path, raw_lake: Path) -> Path:
    """This test's own lake: a copy of the raw sessions, no gold, no cache."""
    shutil.copytree(raw_lake / "raw", tmp_path / "lake" / "raw")
    return tmp_path / "lake"


@pytest.fixture
def book_only_records(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records fed through the book-only fast-forward path, per build call (appended)."""
    fed: list[int] = []
    original = Engine.process_book_only

    def counting(self: Engine, records: np.ndarray) -> Any:
        if fed:  # builds run without `fed=` are not counted
            fed[-1] += len(records)
        return original(self, records)

    monkeypatch.setattr(Engine, "process_book_only", counting)
    return fed


def run(lake: Path, day: dt.date = FEB, *, sample: str = "25ms", K: int = 50,
        start: dt.time | None = OPEN, end: dt.time | None = CLOSE, fed: list[int] | None = None,
        **kw: Any) -> BuildResult:
    """One library build of the synthetic symbol; ``fed`` gets a new counter slot."""
    if fed is not None:
        fed.append(0)
    return build(BuildRequest(symbol=SYMBOL, day=day, lake=lake, start_time=start, end_time=end,
                              config=EngineConfig.from_sample(sample, K=K), **kw))


def part_bytes(result: BuildResult) -> dict[str, bytes]:
    return {table: (folder / PART_FILE).read_bytes() for table, folder in result.partitions.items()}


def digests(result: BuildResult) -> dict[str, str | None]:
    return {table: read_success(folder) for table, folder in result.partitions.items()}


def column(result: BuildResult, table: str, name: str) -> np.ndarray:
    path = result.partitions[table] / PART_FILE
    return pq.read_table(path, columns=[name]).column(name).to_numpy()


def ts_ns(result: BuildResult, table: str = "vp_snapshot", name: str = "ts_event") -> np.ndarray:
    return column(result, table, name).astype("datetime64[ns]").astype(np.int64)


def utc_ns(day: dt.date, hour: int, minute: int) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hour, minute,
                           tzinfo=dt.UTC).timestamp()) * NS


def selected_records(lake: Path, day: dt.date) -> np.ndarray:
    """Every record of the synthetic symbol in the day's raw file, in engine order."""
    path = next((lake / "raw").rglob(f"*{day:%Y%m%d}*.mbo.dbn.zst"))
    source = open_mbo(path)
    return np.concatenate(list(source.iter_selection(source.resolve(SYMBOL))))


def first_at(records: np.ndarray, ts: int) -> int:
    """Index of the first non-snapshot record at or after ``ts`` (the phase-split rule)."""
    hit = (records["ts_event"] >= np.uint64(ts)) & ((records["flags"] & F_SNAPSHOT) == 0)
    return int(np.argmax(hit)) if hit.any() else len(records)


# -- determinism -------------------------------------------------------------------------------


def test_build_given_same_request_twice_writes_identical_bytes(lake: Path) -> None:
    first = run(lake, mbp_levels=10, use_cache=False)
    before = part_bytes(first)
    first_digests = digests(first)
    second = run(lake, mbp_levels=10, use_cache=False, force=True)

    assert set(before) == {"vp_snapshot", "vp_grid", "mbp"}
    assert all(first.rows[t] > 0 for t in before)
    assert part_bytes(second) == before
    assert digests(second) == first_digests
    assert None not in first_digests.values()
    assert len(set(first_digests.values())) == 1  # one build across the tables


def test_build_given_rebuild_manifest_differs_only_in_timings(lake: Path) -> None:
    first = read_manifest(run(lake, use_cache=False).partitions["vp_grid"])
    second = read_manifest(run(lake, use_cache=False, force=True).partitions["vp_grid"])
    first.pop("timings")
    second.pop("timings")
    assert first == second
    assert first["parameters"]["start_time"] == "09:30:00"
    assert first["parameters"]["records"] > 0


# -- book cache --------------------------------------------------------------------------------


def test_build_given_cached_book_hits_skips_fast_forward_and_writes_identical_bytes(
        lake: Path, book_only_records: list[int]) -> None:
    cold = run(lake, fed=book_only_records)
    cold_bytes, cold_digests = part_bytes(cold), digests(cold)
    assert cold.cache == "miss"
    assert book_only_records[-1] > 0
    assert len(list(cache_dir(lake).glob("*.npz"))) == 1

    hit = run(lake, force=True, fed=book_only_records)
    assert hit.cache == "hit"
    assert book_only_records[-1] == 0  # the cached book replaced the fast-forward
    assert hit.records == cold.records  # event ids continue from the cached book
    assert part_bytes(hit) == cold_bytes
    assert digests(hit) == cold_digests

    off = run(lake, force=True, use_cache=False, fed=book_only_records)
    assert off.cache == "off"
    assert book_only_records[-1] == book_only_records[0]
    assert part_bytes(off) == cold_bytes


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _scribble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(range(64))
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a zip file at all")


@pytest.mark.parametrize("corrupt", [_truncate, _scribble, _garbage],
                         ids=["truncated", "overwritten", "garbage"])
def test_build_given_corrupt_cache_file_warns_rebuilds_and_writes_identical_bytes(
        lake: Path, book_only_records: list[int], corrupt: Callable[[Path], None]) -> None:
    cold = run(lake)
    (entry,) = cache_dir(lake).glob("*.npz")
    corrupt(entry)

    with pytest.warns(VpbatchWarning, match=r"book cache entry is corrupt .*; removed, rebuilding"):
        rebuilt = run(lake, force=True, fed=book_only_records)
    assert rebuilt.cache == "miss"
    assert book_only_records[-1] > 0
    assert part_bytes(rebuilt) == part_bytes(cold)

    again = run(lake, force=True)  # the rewritten entry is valid
    assert again.cache == "hit"


@pytest.mark.parametrize(("sample", "K"), [("25ms", 10), ("packet", 50)])
def test_build_given_other_k_or_sample_reuses_cached_book(lake: Path, sample: str,
                                                          K: int) -> None:
    assert run(lake).cache == "miss"
    hit = run(lake, sample=sample, K=K, force=True)
    assert hit.cache == "hit"
    hit_bytes = part_bytes(hit)
    cold = run(lake, sample=sample, K=K, force=True, use_cache=False)
    assert part_bytes(cold) == hit_bytes


def test_build_given_input_edited_keeping_size_and_mtime_rebuilds_without_cached_book(
        lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 8: the cache is keyed on the whole input's sha256, computed while reading."""
    import hashlib
    import os

    import zstandard

    from vpbatch.book.dtypes import MBO_DTYPE
    from vpbatch.store import partitions

    src = next((lake / "raw").rglob(f"*{FEB:%Y%m%d}*.mbo.dbn.zst"))
    with open(src, "rb") as fh:
        dbn = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    path = tmp_path / "day.mbo.dbn"
    path.write_bytes(dbn)
    hashed: list[str] = []
    original = partitions.file_sha256
    monkeypatch.setattr(partitions, "file_sha256", lambda p: hashed.append(str(p)) or original(p))
    first = run(lake, path=path)
    assert first.cache == "miss"
    assert read_manifest(first.partitions["vp_grid"])["inputs"][0]["sha256"] \
        == hashlib.sha256(dbn).hexdigest()
    assert hashed == []  # the manifest reused the reader's hash: no second pass

    # One more lot on an add after the first MiB and before the cache boundary (09:00 ET).
    meta_len = 8 + int.from_bytes(dbn[4:8], "little")
    records = np.frombuffer(dbn, MBO_DTYPE, offset=meta_len)
    late = (np.arange(len(records)) * MBO_DTYPE.itemsize > (1 << 20)) \
        & (records["action"] == ord("A")) & (records["ts_event"] < utc_ns(FEB, 14, 0))
    i = int(np.argmax(late))
    assert late[i]
    edited = bytearray(dbn)
    at = meta_len + i * MBO_DTYPE.itemsize + MBO_DTYPE.fields["size"][1]
    edited[at:at + 4] = (int(records["size"][i]) + 1).to_bytes(4, "little")
    st = path.stat()
    path.write_bytes(bytes(edited))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size

    with pytest.warns(VpbatchWarning, match=r"day\.mbo\.dbn: changed since its book was cached"):
        again = run(lake, path=path, force=True)
    cold = run(lake, path=path, force=True, use_cache=False)
    assert part_bytes(again) == part_bytes(cold)
    assert read_manifest(again.partitions["vp_grid"])["inputs"][0]["sha256"] \
        == hashlib.sha256(bytes(edited)).hexdigest()
    assert run(lake, path=path, force=True).cache == "hit"  # re-saved under the new sha256


def test_build_given_other_start_time_misses_cache(lake: Path) -> None:
    run(lake)
    later = run(lake, start=dt.time(9, 40), end=dt.time(9, 50), force=True)
    assert later.cache == "miss"
    assert len(list(cache_dir(lake).glob("*.npz"))) == 2


# -- the three phases --------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "utc_hour"), [(JAN, 14), (JUL, 13)], ids=["EST", "EDT"])
def test_build_given_start_and_end_time_emits_only_inside_the_et_window(
        lake: Path, day: dt.date, utc_hour: int) -> None:
    result = run(lake, day, start=dt.time(9, 30), end=dt.time(10, 0))
    ts = ts_ns(result)
    start, end = utc_ns(day, utc_hour, 30), utc_ns(day, utc_hour + 1, 0)

    assert ts[0] >= start
    assert ts[0] - start < 5 * NS  # starts at the open, not an hour off
    assert ts[-1] < end
    assert end - ts[-1] < 5 * NS
    assert np.all(np.diff(ts) >= 0)
    assert set(result.timings) >= {"fast_forward", "warmup", "emit", "total"}


def test_build_given_start_time_first_state_counts_no_warmup_records(lake: Path) -> None:
    result = run(lake)
    records = selected_records(lake, FEB)
    before = first_at(records, utc_ns(FEB, 14, 30))  # fed during fast-forward and warm-up
    until = first_at(records, utc_ns(FEB, 14, 45))
    event_id = column(result, "vp_snapshot", "event_id")
    n_records = column(result, "vp_snapshot", "n_records")

    assert before > 10_000  # the warm-up is not empty: the check below can fail
    assert n_records[0] == event_id[0] - before
    assert n_records.sum() == until - before
    assert event_id[-1] == until == result.records


def test_build_given_sample_modes_emits_event_ge_packet_ge_25ms(lake: Path) -> None:
    records = selected_records(lake, FEB)
    lo, hi = first_at(records, utc_ns(FEB, 14, 30)), first_at(records, utc_ns(FEB, 14, 40))
    window = records[lo:hi]
    states = {sample: run(lake, sample=sample, K=10, end=dt.time(9, 40), force=True)
              .rows["vp_snapshot"] for sample in ("event", "packet", "25ms")}

    assert states["event"] == len(window)  # the book is two-sided all through the window
    assert states["packet"] == np.count_nonzero(window["flags"] & F_LAST)
    assert states["event"] > states["packet"] > states["25ms"] > 0


def test_build_given_k_10_writes_21_grid_rows_per_state(lake: Path) -> None:
    result = run(lake, K=10)
    event_ids = column(result, "vp_snapshot", "event_id")
    grid_ids = column(result, "vp_grid", "event_id").reshape(-1, 21)
    ks = column(result, "vp_grid", "k").reshape(-1, 21)

    assert result.rows["vp_grid"] == 21 * result.rows["vp_snapshot"] > 0
    assert np.array_equal(grid_ids, np.repeat(event_ids[:, None], 21, axis=1))
    assert np.array_equal(ks, np.broadcast_to(np.arange(-10, 11), ks.shape))


# -- verify and skip ---------------------------------------------------------------------------


def test_build_given_event_sampling_with_mbp_passes_verify(lake: Path) -> None:
    result = run(lake, sample="event", K=10, end=dt.time(9, 35), mbp_levels=10)
    report = verify(lake, SYMBOL, FEB)
    assert result.status == "built"
    assert report.passed, report.format()
    assert len(report.results) > 5


@pytest.mark.parametrize(("name", "symbol"), [(ESM4, "ESM4"), (MESH5, "MESH5")])
def test_build_given_real_cme_file_builds_and_passes_verify(
        tmp_path: Path, dbn_path: Callable[[str], Path], name: str, symbol: str) -> None:
    result = build(BuildRequest(symbol=symbol, day=None, lake=tmp_path, path=dbn_path(name),
                                config=EngineConfig.from_sample("event", K=10), mbp_levels=10))
    assert result.status == "built"
    assert result.rows["vp_snapshot"] > 0
    assert result.rows["mbp"] > 0
    assert verify(tmp_path, symbol, result.day).passed
    # Prices are the same floats in every table: an exact join finds the top of book.
    unmatched = run_query(tmp_path, """
        SELECT count(*) AS n FROM vp_snapshot s JOIN mbp m USING (event_id)
        WHERE s.best_bid_price IS DISTINCT FROM m.bid_px_00
           OR s.best_ask_price IS DISTINCT FROM m.ask_px_00""")
    assert unmatched["n"][0] == 0


def test_build_given_no_progress_bar_reads_the_file_without_a_counting_pass(
        lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a full counting pass over the file (only the bar needs it)")

    monkeypatch.setattr(MboSource, "scan", no_scan)
    assert run(lake, progress=False).status == "built"


def test_build_given_complete_partition_without_force_skips_and_keeps_files(lake: Path) -> None:
    first = run(lake)
    stamps = {p: p.stat().st_mtime_ns for folder in first.partitions.values()
              for p in (folder / PART_FILE, folder / MANIFEST_FILE, folder / SUCCESS_FILE)}
    again = run(lake, K=10)  # other parameters do not matter: the partition exists

    assert again.status == "skipped"
    assert again.message == "partition already built (use --force to rebuild)"
    assert again.rows == {}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_build_given_vp_partition_and_mbp_requested_without_force_refuses(lake: Path) -> None:
    run(lake)
    with pytest.raises(OutputError, match=r"partition already built; use --force to replace it"):
        run(lake, mbp_levels=10)


def test_build_given_no_start_time_emits_the_whole_file(tmp_path: Path,
                                                        dbn_path: Callable[[str], Path]) -> None:
    path = dbn_path(MESH5)
    result = build(BuildRequest(symbol="MESH5", day=None, lake=tmp_path, path=path,
                                config=EngineConfig.from_sample("packet", K=5)))
    source = open_mbo(path)
    records = np.concatenate(list(source.iter_selection(source.resolve("MESH5"))))
    assert result.timings.keys() == {"emit", "total"}
    assert result.cache == "off"
    assert result.records == len(records)
    assert len(list((tmp_path / "gold").rglob(PART_FILE))) == 2


def test_build_given_equity_book_prices_join_exactly_across_tables(
        tmp_path: Path, dbn_path: Callable[[str], Path]) -> None:
    """Cent prices are where fixed/1e9 and fixed*1e-9 disagree (~40% of them)."""
    result = build(BuildRequest(symbol="GOOG", day=None, lake=tmp_path, publisher_id=39,
                                path=dbn_path("dbeq-basic-goog-20240403.mbo.dbn.zst"),
                                config=EngineConfig.from_sample("1s"), mbp_levels=1))
    assert result.rows["mbp"] > 1000
    counts = run_query(tmp_path, """
        SELECT count(*) AS n, count(*) FILTER (WHERE s.best_bid_price IS DISTINCT FROM
               m.bid_px_00 OR s.best_ask_price IS DISTINCT FROM m.ask_px_00) AS unmatched
        FROM vp_snapshot s JOIN mbp m USING (event_id)""")
    assert counts["n"][0] > 100
    assert counts["unmatched"][0] == 0


def test_build_job_given_writes_that_finished_keeps_no_future_of_them(raw_lake: Path) -> None:
    """A live session queues a write per state for hours: finished writes are let go at once
    (before, their futures stayed queued until 96 MB of states had, ~1 KB each)."""
    req = BuildRequest(symbol=SYMBOL, day=FEB, lake=raw_lake)
    product = resolve_product(SYMBOL)
    job = BuildJob(req, product, FEB, open_mbo(find_input(raw_lake, SYMBOL, FEB)))
    try:
        for _ in range(1_000):
            job._submit(200, lambda: None)
            job._pool.submit(lambda: None).result()  # one writer thread: the write is done
        job._submit(200, lambda: None)
        assert len(job._writes) <= 1
        assert job._pending_bytes == 200 * len(job._writes)
    finally:
        job.close()


def test_freeze_startup_objects_keeps_them_from_the_gc_and_exits_without_leak_reports(
        ) -> None:
    """Frozen start-up objects are not walked by later collections (the live stalls), and
    the interpreter still finalises them: duckdb (nanobind) reports nothing at exit."""
    code = ("import gc, duckdb\n"
            "duckdb.sql('select 1').fetchall()\n"
            "from vpbatch.memory import freeze_startup_objects\n"
            "before = len(gc.get_objects())\n"
            "freeze_startup_objects()\n"
            "print(before, len(gc.get_objects()), gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    before, after, frozen = map(int, done.stdout.split())
    assert before > 10_000 and after < before // 100 and frozen >= before - 100
    assert done.stderr == ""
