"""``LiveJob``: build's job over a queue; a heartbeat closes a 25 ms bin, late records count."""

from __future__ import annotations

import datetime as dt
import queue
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.conftest import data_file
from tests.live.conftest import ESM4_FILE
from vpbatch.book.dtypes import F_LAST, F_SNAPSHOT
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.config import EngineConfig
from vpbatch.ingest.dbn_file import FileMetadata
from vpbatch.ingest.reader import open_mbo
from vpbatch.live.job import END, HEARTBEAT, Item, LiveJob, LiveSource
from vpbatch.products import resolve_product
from vpbatch.progress import Progress
from vpbatch.store.writer import PartitionWriter

DAY = dt.date(2024, 5, 8)
GRACE = 50_000_000


def run_job(items: list[Item], lake: Path) -> tuple[LiveJob, dict[str, np.ndarray]]:
    path = data_file(ESM4_FILE)
    source = open_mbo(path)
    selection = source.resolve("ESM4")
    q: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for item in [*items, END]:
        q.put(item)
    meta = FileMetadata("GLBX.MDP3", "mbo", 3, source.metadata.start, None, ("ESM4",),
                        "raw_symbol", "instrument_id", None, True, 0)
    config = EngineConfig.from_sample("25ms")
    req = BuildRequest(symbol="ESM4", day=DAY, lake=lake, path=path, config=config,
                       use_cache=False, force=True)
    product = resolve_product("ESM4")
    job = LiveJob(req, product, DAY, LiveSource("live ESM4", path, meta, selection), q, GRACE)
    with PartitionWriter(lake, product, DAY, config=config, force=True) as writer:
        job.run(writer, Progress(total=None, enabled=False))
        writer.commit(inputs=[])
    job.close()
    snaps = pq.read_table(next(writer.partitions["vp_snapshot"].glob("*.parquet")))
    return job, {"ts_event": snaps.column("ts_event").cast("int64").to_numpy(),
                 "event_id": snaps.column("event_id").to_numpy()}


def events() -> list[np.ndarray]:
    records = np.concatenate(list(open_mbo(data_file(ESM4_FILE)).iter_raw()))
    ends = np.flatnonzero(records["flags"] & F_LAST) + 1
    return np.split(records, ends)[:-1] if ends[-1] == len(records) else np.split(records, ends)


def test_heartbeat_past_grace_closes_the_bin_with_the_state_build_writes(tmp_path: Path) -> None:
    evs = events()
    items: list[Item] = []
    for i, ev in enumerate(evs):
        items.append((ev.tobytes(), 0))
        nxt = evs[i + 1] if i + 1 < len(evs) else None
        if nxt is not None and not nxt["flags"][0] & F_SNAPSHOT:
            items.append((HEARTBEAT, int(nxt["ts_event"][0])))  # the clock, before the record
    job, live = run_job(items, tmp_path / "live")
    assert job.flushed_bins > 0 and job.late == 0
    result = build(BuildRequest(symbol="ESM4", day=None, lake=tmp_path / "b",
                                path=data_file(ESM4_FILE), config=EngineConfig.from_sample("25ms"),
                                use_cache=False))
    built = pq.read_table(next(result.partitions["vp_snapshot"].glob("*.parquet")))
    assert np.array_equal(live["event_id"], built.column("event_id").to_numpy())


def test_record_after_its_bin_was_closed_is_applied_and_counted_late(tmp_path: Path) -> None:
    evs = events()
    live_events = [i for i, ev in enumerate(evs) if not ev["flags"][0] & F_SNAPSHOT]
    # Close the bin of one live event by a heartbeat far past it, then deliver an event of
    # that same bin: it arrived late.
    target = next(i for i in live_events[1:-1]
                  if evs[i + 1]["ts_event"][0] // 25_000_000 == evs[i]["ts_event"][0] // 25_000_000)
    items: list[Item] = []
    for i, ev in enumerate(evs):
        items.append((ev.tobytes(), 0))
        if i == target:
            items.append((HEARTBEAT, int(ev["ts_event"][-1]) + 10 * GRACE))
    job, live = run_job(items, tmp_path / "live")
    bin_end = (int(evs[target]["ts_event"][0]) // 25_000_000 + 1) * 25_000_000
    after = np.concatenate(evs[target + 1:])
    assert job.late == int(np.count_nonzero(after["ts_event"] < bin_end)) > 0
    bins = live["ts_event"] // 25_000_000
    assert np.count_nonzero(bins == evs[target]["ts_event"][0] // 25_000_000) == 2
