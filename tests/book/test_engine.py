"""The compiled engine: chunking parity, cache parity, real files, numba cache."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import EQUITY_BUCKET, EQUITY_TICK, build_stream, intents
from vpbatch.book.dtypes import UNDEF_PRICE, as_kernel_records
from vpbatch.book.engine import Emitted, Engine
from vpbatch.config import EngineConfig
from vpbatch.errors import CacheError

FUT = 250_000_000
SAMPLES = ("event", "packet", "10ms")


def _engine(sample: str = "event", **kw: int) -> Engine:
    cfg = EngineConfig.from_sample(sample, K=kw.pop("K", 8), band=kw.pop("band", 30))
    return Engine(cfg, bucket=kw.pop("bucket", FUT), tick=kw.pop("tick", FUT),
                  mbp_levels=kw.pop("mbp_levels", 3), batch_states=kw.pop("batch", 7))


def _run(engine: Engine, records: np.ndarray, cuts: list[int]) -> Emitted:
    parts = []
    bounds = [0, *sorted(set(cuts)), len(records)]
    for lo, hi in itertools.pairwise(bounds):
        parts.append(engine.process(records[lo:hi]))
    parts.append(engine.finish())
    return Emitted(*(np.concatenate([getattr(p, f) for p in parts]) for f in Emitted._fields))


def _assert_same(a: Emitted, b: Emitted) -> None:
    assert a.snapshots.tobytes() == b.snapshots.tobytes()
    assert a.grid.tobytes() == b.grid.tobytes()
    assert a.mbp.tobytes() == b.mbp.tobytes()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents, st.lists(st.integers(0, 400), max_size=6), st.sampled_from(SAMPLES))
def test_engine_given_any_chunking_emits_identical_bytes(plan, cuts, sample):
    records = build_stream(plan)
    whole = _run(_engine(sample), records, [])
    chunked = _run(_engine(sample), records, [c % (len(records) + 1) for c in cuts])
    one_by_one = _run(_engine(sample), records, list(range(1, len(records))))
    _assert_same(whole, chunked)
    _assert_same(whole, one_by_one)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents, st.integers(0, 400), st.sampled_from(SAMPLES))
def test_engine_given_exported_book_continues_like_cold_engine(plan, cut, sample):
    records = build_stream(plan)
    cut %= len(records) + 1
    cold = _engine(sample)
    cold.process_book_only(records[:cut])
    expected = _run(cold, records[cut:], [])

    donor = _engine(sample)
    donor.process_book_only(records[:cut])
    warm = _engine(sample)
    warm.import_book(donor.export_book())
    _assert_same(_run(warm, records[cut:], []), expected)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents)
def test_engine_given_equity_buckets_keeps_depth_equal_to_book(plan):
    records = build_stream(plan, tick=EQUITY_TICK, start_mid_ticks=15_000)
    engine = _engine("event", bucket=EQUITY_BUCKET, tick=EQUITY_TICK)
    out = engine.process(records)
    grid = out.grid
    assert (grid["rest_depth"] == grid["bid_depth"] + grid["ask_depth"]).all()
    assert (grid["rest_depth"] >= 0).all()
    # The depth columns are the simulated book's: rebuild it and compare the last state.
    if len(out.snapshots):
        resting: dict[int, tuple[int, int, int]] = {}
        for r in records:
            act, oid = chr(r["action"]), int(r["order_id"])
            if act == "R":
                resting.clear()
            elif act in "AM":
                if r["price"] == UNDEF_PRICE or chr(r["side"]) not in "BA":
                    continue  # anomalies: skipped entirely
                if r["size"] > 0:
                    resting[oid] = (r["side"], int(r["price"]), int(r["size"]))
                elif act == "M":
                    resting.pop(oid, None)  # M to size 0 removes (unknown id: skipped)
            elif act == "C" and oid in resting:
                side, px, sz = resting[oid]
                if sz - r["size"] > 0:
                    resting[oid] = (side, px, sz - int(r["size"]))
                else:
                    del resting[oid]
        last = grid[-(2 * 8 + 1):]
        for row in last:
            centre = round(row["price"] * 1e9)
            want = sum(sz for _, px, sz in resting.values()
                       if (2 * px + EQUITY_BUCKET) // (2 * EQUITY_BUCKET) * EQUITY_BUCKET
                       == centre)
            assert row["rest_depth"] == want


def test_import_book_given_foreign_bucket_raises_cache_error():
    donor = _engine(bucket=FUT)
    donor.process_book_only(build_stream([("add", 1, 1, 1, 10)]))
    other = _engine(bucket=2 * FUT)
    with pytest.raises(CacheError, match="bucket"):
        other.import_book(donor.export_book())


def test_import_book_given_missing_array_raises_cache_error():
    book = _engine().export_book()
    del book["price"]
    with pytest.raises(CacheError, match="malformed"):
        _engine().import_book(book)


def test_engine_on_esm4_snapshot_replays_without_anomalies(dbn_records):
    records = dbn_records("glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst")
    engine = Engine(EngineConfig(sample="event"), bucket=FUT)
    out = engine.process(records)
    assert sum(engine.anomalies.values()) == 0
    assert out.grid["rest_depth"].min() >= 0
    assert out.snapshots["book_valid"].all()
    assert not out.snapshots["crossed"].any()
    # One state per live record (everything after the 13.6k-record snapshot).
    live = int(((as_kernel_records(records)["flags"] & 0x20) == 0).sum())
    assert len(out.snapshots) == live


def test_engine_on_mesh5_cut_counts_unknown_cancels(dbn_records):
    records = dbn_records("glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst")
    engine = Engine(EngineConfig(), bucket=FUT)
    out = engine.process(records)
    out_end = engine.finish()
    assert engine.anomalies["cancel_unknown_order"] > 0
    assert len(out.snapshots) + len(out_end.snapshots) > 100
    assert out.grid["rest_depth"].min() >= 0


def test_kernels_load_from_numba_cache_in_a_fresh_process():
    """After one run has compiled (or loaded) the kernels, a new process must only load them."""
    script = textwrap.dedent("""
        import numpy as np
        from tests.strategies import build_stream
        from vpbatch.book.engine import Engine
        from vpbatch.config import EngineConfig
        e = Engine(EngineConfig(sample="event", K=3, band=10), bucket=250_000_000)
        e.process(build_stream([("add", 1, 1, 1, 10), ("trade", 0, 0, 3, 10)]))
        e.process_book_only(build_stream([("add", 1, 1, 1, 10)]))
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = [sys.executable, "-c", script]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    subprocess.run(run, env=env, check=True, cwd=root, capture_output=True)
    second = subprocess.run(run, env={**env, "NUMBA_DEBUG_CACHE": "1"}, check=True, cwd=root,
                            capture_output=True, text=True)
    log = second.stdout + second.stderr
    assert "data loaded from" in log
    assert "[cache] data saved" not in log


def _mbo(rows: list[tuple[str, str, int, int, int]]) -> np.ndarray:
    """(action, side, price, size, order_id) rows at one time, each ending its event."""
    from vpbatch.book.dtypes import F_LAST, MBO_DTYPE

    out = np.zeros(len(rows), dtype=MBO_DTYPE)
    for i, (action, side, price, size, oid) in enumerate(rows):
        out[i]["ts_event"] = out[i]["ts_recv"] = 1_000_000_000_000 + i
        out[i]["action"], out[i]["side"] = ord(action), ord(side)
        out[i]["price"], out[i]["size"], out[i]["order_id"] = price, size, oid
        out[i]["flags"] = F_LAST
    return out


def test_off_tick_mode_given_last_off_tick_level_gone_or_clear_ends():
    """Issue 8: one off-tick price no longer makes every later walk scan the whole table."""
    engine = _engine()
    engine.process(_mbo([("A", "B", 100 * FUT, 1, 1), ("A", "A", 102 * FUT, 1, 2),
                         ("A", "B", 100 * FUT + 7, 2, 3), ("A", "B", 99 * FUT + 3, 2, 4)]))
    assert engine.off_tick_levels == 2
    assert engine.best_bid() == 100 * FUT + 7
    engine.process(_mbo([("C", "B", 100 * FUT + 7, 2, 3)]))
    # the walk from the removed off-grid best still finds the on-grid level behind it
    assert engine.off_tick_levels == 1 and engine.best_bid() == 100 * FUT
    engine.process(_mbo([("C", "B", 99 * FUT + 3, 2, 4)]))
    assert engine.off_tick_levels == 0
    engine.process(_mbo([("A", "A", 101 * FUT + 1, 1, 5)]))
    assert engine.off_tick_levels == 1 and engine.best_ask() == 101 * FUT + 1
    engine.process(_mbo([("R", "N", 0, 0, 0)]))
    assert engine.off_tick_levels == 0
