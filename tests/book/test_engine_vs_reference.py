"""The property that makes the fast engine trustworthy: it equals the obvious one.

Random valid MBO streams (tests/strategies.py) go through the compiled engine and the
pure-Python reference; every emitted field must agree (integers exactly, floats to 1e-9
relative), and SPEC §12 invariants 1-6 must hold on every state.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference.engine import ReferenceEngine
from tests.reference.invariants import ShadowBook, check_invariants, iter_states
from tests.strategies import EQUITY_BUCKET, EQUITY_TICK, FUTURE_TICK, build_stream, intents
from vpbatch.book.dtypes import GRID_DTYPE, SNAPSHOT_DTYPE
from vpbatch.book.engine import Engine
from vpbatch.config import EngineConfig

_PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
_INT_FIELDS = [n for n in SNAPSHOT_DTYPE.names if SNAPSHOT_DTYPE[n].kind in "iub"]
_FLOAT_FIELDS = [n for n in SNAPSHOT_DTYPE.names if SNAPSHOT_DTYPE[n].kind == "f"]
_GRID_INT = [n for n in GRID_DTYPE.names if GRID_DTYPE[n].kind in "iub"]
_GRID_FLOAT = [n for n in GRID_DTYPE.names if GRID_DTYPE[n].kind == "f"]


def _assert_equal(fast: np.ndarray, slow: np.ndarray, ints: list[str], floats: list[str]) -> None:
    assert len(fast) == len(slow)
    for name in ints:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
    for name in floats:
        np.testing.assert_allclose(fast[name], slow[name], rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=name)


def _compare(records: np.ndarray, config: EngineConfig, bucket: int, tick: int) -> None:
    fast = Engine(config, bucket=bucket, tick=tick, batch_states=5)
    slow = ReferenceEngine(config, bucket)
    f_out = fast.process(records)
    f_end = fast.finish()
    s_snap, s_grid = slow.process(records)
    s_end_snap, s_end_grid = slow.finish()
    f_snap = np.concatenate([f_out.snapshots, f_end.snapshots])
    f_grid = np.concatenate([f_out.grid, f_end.grid])
    _assert_equal(f_snap, np.concatenate([s_snap, s_end_snap]), _INT_FIELDS, _FLOAT_FIELDS)
    _assert_equal(f_grid, np.concatenate([s_grid, s_end_grid]), _GRID_INT, _GRID_FLOAT)
    assert fast.anomalies == slow.anomalies


@_PROPERTY
@given(intents, st.sampled_from(["event", "packet", "25ms", "100ms"]),
       st.sampled_from([(3, 6), (8, 30), (20, 1000)]))
def test_compiled_engine_equals_reference_on_futures_streams(plan, sample, k_band):
    K, band = k_band
    records = build_stream(plan)
    _compare(records, EngineConfig.from_sample(sample, K=K, band=band), FUTURE_TICK,
             FUTURE_TICK)


@_PROPERTY
@given(intents, st.sampled_from(["event", "25ms"]))
def test_compiled_engine_equals_reference_on_equity_buckets(plan, sample):
    records = build_stream(plan, tick=EQUITY_TICK, start_mid_ticks=15_000)
    _compare(records, EngineConfig.from_sample(sample, K=6, band=12), EQUITY_BUCKET,
             EQUITY_TICK)


@_PROPERTY
@given(intents, st.booleans())
def test_invariants_hold_after_every_record(plan, equity):
    bucket, tick = (EQUITY_BUCKET, EQUITY_TICK) if equity else (FUTURE_TICK, FUTURE_TICK)
    records = build_stream(plan, tick=tick, start_mid_ticks=15_000 if equity else 20_000)
    K = 5
    engine = Engine(EngineConfig(sample="event", K=K, band=9), bucket=bucket, tick=tick)
    shadow = ShadowBook(bucket)
    prev_snap = prev_grid = None
    for i in range(len(records)):
        touched = shadow.apply(records[i])
        out = engine.process(records[i: i + 1])
        for snap, grid in iter_states(out.snapshots, out.grid, K):
            spot = round(snap["spot_price"] * 1e9 / bucket)
            check_invariants(prev_snap, prev_grid, snap, grid, K,
                             touched_in_window=any(abs(b - spot) <= K for b in touched),
                             book_depth=shadow.depth_by_bucket(), bucket=bucket)
            prev_snap, prev_grid = snap, grid
