"""The property that makes the fast engine trustworthy: it equals the obvious one.

Random MBO streams (tests/strategies.py: ordinary flow mixed with every quirk real files
have) go through the compiled engine and the pure-Python reference; every emitted field must
agree (integers exactly, floats to 1e-9 relative), and SPEC §12 invariants 1-6 must hold on
every state. tests/book/mutations.py shows that each quirk the generator reaches is caught
when the kernel handling it is broken.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference.engine import ReferenceEngine
from tests.reference.invariants import ShadowBook, check_invariants, iter_states
from tests.strategies import (
    EQUITY_BUCKET,
    EQUITY_TICK,
    FUTURE_TICK,
    OWN_INSTRUMENT,
    OWN_PUBLISHER,
    build_stream,
    equity_edges,
    intents,
    own_records,
)
from vpbatch.book.dtypes import GRID_DTYPE, SIDE_ASK, SIDE_BID, SNAPSHOT_DTYPE
from vpbatch.book.engine import Engine
from vpbatch.config import EngineConfig
from vpbatch.ingest.reader import Selection, select_records

_OWN = Selection(OWN_INSTRUMENT, OWN_PUBLISHER, "TEST")
#: (K, band) of the futures property; K == band puts the band's edge inside the grid.
K_BANDS = [(4, 4), (3, 6), (8, 30), (20, 1000)]

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


def _compare(records: np.ndarray, config: EngineConfig, bucket: int, tick: int,
             own: np.ndarray | None = None) -> None:
    """Compiled engine on ``records`` == reference on ``own`` (default: the same records).

    The engine starts with 16-slot tables (not a day's 65,536): about one stream in eight
    outgrows them, so the property also covers growing the tables mid-stream, and the
    mutation check's plain-Python kernels scan small tables (23 s -> 10 s).
    """
    fast = Engine(config, bucket=bucket, tick=tick, batch_states=5, capacity=16)
    slow = ReferenceEngine(config, bucket)
    f_out = fast.process(records)
    f_end = fast.finish()
    s_snap, s_grid = slow.process(records if own is None else own)
    s_end_snap, s_end_grid = slow.finish()
    f_snap = np.concatenate([f_out.snapshots, f_end.snapshots])
    f_grid = np.concatenate([f_out.grid, f_end.grid])
    _assert_equal(f_snap, np.concatenate([s_snap, s_end_snap]), _INT_FIELDS, _FLOAT_FIELDS)
    _assert_equal(f_grid, np.concatenate([s_grid, s_end_grid]), _GRID_INT, _GRID_FLOAT)
    assert fast.anomalies == slow.anomalies
    # The off-tick walk mode lasts exactly while an off-tick level is live (issue 8).
    live = [p for side in (SIDE_BID, SIDE_ASK) for p in slow._levels[side]]
    assert fast.off_tick_levels == sum(1 for p in live if p % min(tick, bucket)), "off-tick"


@_PROPERTY
@given(intents, st.sampled_from(["event", "packet", "25ms", "100ms"]),
       st.sampled_from(K_BANDS), st.booleans())
def test_compiled_engine_equals_reference_on_futures_streams(plan, sample, k_band, foreign):
    """Several instruments/publishers interleaved: the filter + engine == reference on own."""
    K, band = k_band
    records = build_stream(plan, foreign=foreign)
    _compare(select_records(records, _OWN), EngineConfig.from_sample(sample, K=K, band=band),
             FUTURE_TICK, FUTURE_TICK, own=own_records(records))


@_PROPERTY
@given(intents, st.sampled_from(["event", "25ms"]), st.sampled_from([0, 12_345_678]))
def test_compiled_engine_equals_reference_on_equity_buckets(plan, sample, epoch):
    records = build_stream(plan, tick=EQUITY_TICK, start_mid_ticks=15_000,
                           edges=equity_edges(12, EQUITY_BUCKET // EQUITY_TICK))
    config = EngineConfig.from_sample(sample, K=6, band=12, epoch_ns=epoch)
    _compare(records, config, EQUITY_BUCKET, EQUITY_TICK)


@_PROPERTY
@given(intents, st.sampled_from(["event", "25ms"]))
def test_hash_tables_given_capacity_4_equal_default(plan, sample):
    """Tables of 4 slots grow (and delete, backward-shift) on nearly every step: same output."""
    records = build_stream(plan)
    config = EngineConfig.from_sample(sample, K=4, band=8)
    tiny = Engine(config, bucket=FUTURE_TICK, capacity=4, batch_states=3)
    roomy = Engine(config, bucket=FUTURE_TICK)
    a = [tiny.process(records), tiny.finish()]
    b = [roomy.process(records), roomy.finish()]
    for name in ("snapshots", "grid"):
        assert np.concatenate([getattr(x, name) for x in a]).tobytes() \
            == np.concatenate([getattr(x, name) for x in b]).tobytes(), name
    assert tiny.anomalies == roomy.anomalies
    assert tiny.export_book()["order_id"].tolist() == roomy.export_book()["order_id"].tolist()
    assert tiny.order_capacity > 4 or tiny.live_orders <= 1  # it did grow


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
