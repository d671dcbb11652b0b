"""The ``vp_grid`` view in numpy (``vpbatch.serve.view_numpy``) against DuckDB's SQL.

``GridView`` (DuckDB running ``vpbatch.sql.grid_select``) is the reference: for real engine
states (the ESM4 Databento sample and the synthetic MNQH6 day, under several configs), for the
lake's stored rows and for random stored rows, ``NumpyGridView`` must give the same Arrow
table (schema, columns, every value's bits) and ``StateConverter`` the same state frames
(``grid_update`` text and Arrow bytes) as the raw source's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from tests.serve.conftest import DAY, SYMBOL
from vpbatch.book.engine import Engine
from vpbatch.config import EngineConfig, ForceCoefficients
from vpbatch.errors import InputError, OutputError, VpbatchError
from vpbatch.ingest.reader import open_mbo
from vpbatch.products import resolve_product
from vpbatch.serve import protocol, view_kernel
from vpbatch.serve.rows import snapshot_rows, to_states
from vpbatch.serve.sources import GridView
from vpbatch.serve.view_numpy import (
    NumpyGridView,
    StateConverter,
    snapshot_values,
)
from vpbatch.sql import connect
from vpbatch.store.lake import find_raw_file
from vpbatch.store.partitions import list_partitions, read_manifest
from vpbatch.store.schema import (
    GRID_LAYOUT,
    GRID_STORED_FLOATS,
    grid_to_arrow,
    snapshots_to_arrow,
    state_times,
    stored_grid_table,
)

DATA = Path(__file__).resolve().parents[1] / "data"
ESM4_FILE = DATA / "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"


def manifest(config: EngineConfig, layout: int = GRID_LAYOUT) -> dict[str, Any]:
    return {"config": config.to_dict(), "writer": {"grid_layout": layout}}


def records_of(path: Path, symbol: str) -> np.ndarray:
    source = open_mbo(path)
    return np.concatenate(list(source.iter_selection(source.resolve(symbol))))


def batches(records: np.ndarray, symbol: str,
            config: EngineConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The engine's emitted batches over ``records``: (snapshot rows, their grid rows)."""
    product = resolve_product(symbol)
    engine = Engine(config, bucket=product.bucket, tick=product.tick)
    for emitted in [*engine.stream(records), engine.finish()]:
        if len(emitted.snapshots):
            yield emitted.snapshots, emitted.grid


def stored_of(snaps: np.ndarray, grid: np.ndarray) -> pa.Table:
    """The raw source's stored-layout table of engine rows."""
    return grid_to_arrow(grid, state_times(grid["event_id"], snaps["event_id"],
                                           snaps["ts_event"]))


def assert_same_tables(got: pa.Table, want: pa.Table) -> None:
    """Equal tables, and every float bit for bit (``Table.equals`` takes -0.0 for 0.0).

    Two NaNs count as equal whatever their payload: the stored files never hold one
    (``vpbatch verify`` refuses them), and which NaN x86 returns for an operation on two NaNs
    depends on the operand order a compiler chose.
    """
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a = got.column(name).combine_chunks()
        b = want.column(name).combine_chunks()
        assert a.null_count == b.null_count == 0, name
        if pa.types.is_floating(a.type):
            x, y = a.to_numpy(), b.to_numpy()
            both_nan = np.isnan(x) & np.isnan(y)
            differ = (x.view(np.int64) != y.view(np.int64)) & ~both_nan
            assert not differ.any(), (name, np.flatnonzero(differ)[:5], x[differ][:5],
                                      y[differ][:5])
        else:
            assert a.equals(b), name
    if not any(np.isnan(got.column(n).to_numpy()).any() for n in got.column_names
               if pa.types.is_floating(got.schema.field(n).type)):
        assert got.equals(want)


# --------------------------------------------------------------------------------------------
# Real states


@pytest.fixture(scope="module")
def esm4_records() -> np.ndarray:
    return records_of(ESM4_FILE, "ESM4")


@pytest.fixture(scope="module")
def mnq_records(serve_lake: Path) -> np.ndarray:
    return records_of(find_raw_file(serve_lake, resolve_product(SYMBOL), DAY), SYMBOL)


CONFIGS = {
    "default": EngineConfig(),
    "event-k20-forces": EngineConfig(
        sample="event", K=20, band=100, tau_v=0.3, tau_a=0.05,
        forces=ForceCoefficients(2.0, 0.0, 1.25, 0.7, 0.0, 3.0, 0.01)),
    "packet-k200": EngineConfig(sample="packet", K=200, band=400, tau_v=60.0, tau_a=1e-3),
    "1ms-k5-unit": EngineConfig(sample_ns=1_000_000, K=5, band=5, tau_v=1e-3, tau_a=7.5,
                                forces=ForceCoefficients(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)),
    "event-k100-zero": EngineConfig(
        sample="event", K=100, band=100,
        forces=ForceCoefficients(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5)),
}


def check_states(records: np.ndarray, symbol: str, config: EngineConfig) -> int:
    """Every emitted batch: the numpy view's table is GridView's, the frames the raw
    source's, and StateConverter's states (per state) the same bytes; states checked."""
    rows = 2 * config.K + 1
    reference = GridView(manifest(config))
    view = NumpyGridView(manifest(config))
    convert = StateConverter(config)
    checked = 0
    try:
        for snaps, grid in batches(records, symbol, config):
            stored = stored_of(snaps, grid)
            want = reference(stored)
            got = view(stored)
            assert_same_tables(got, want)
            snapshot_table = snapshots_to_arrow(snaps)
            want_states = to_states(snapshot_table, want, rows)
            got_states = to_states(snapshot_table, got, rows)
            for i, (w, g) in enumerate(zip(want_states, got_states, strict=True)):
                assert g.grid == w.grid
                one = convert(snaps[i:i + 1], grid[i * rows:(i + 1) * rows])
                assert (one.ts_ns, one.event_id, one.snapshot) == (w.ts_ns, w.event_id,
                                                                   w.snapshot)
                assert one.grid == w.grid
                assert protocol.grid_update_head(one) == protocol.grid_update_head(w)
            checked += len(want_states)
    finally:
        reference.close()
    return checked


@pytest.mark.parametrize("name", list(CONFIGS))
def test_esm4_states_equal_duckdbs(esm4_records: np.ndarray, name: str) -> None:
    assert check_states(esm4_records, "ESM4", CONFIGS[name]) > 30


@pytest.mark.parametrize("name", ["default", "1ms-k5-unit", "event-k20-forces"])
def test_synthetic_day_states_equal_duckdbs(mnq_records: np.ndarray, name: str) -> None:
    records = mnq_records[:60_000] if name == "default" else mnq_records[:20_000]
    assert check_states(records, SYMBOL, CONFIGS[name]) > 3000


def test_lake_rows_equal_the_vp_grid_view(serve_lake: Path) -> None:
    """The lake's stored row groups, through both views, and the ``vp_grid`` view itself."""
    part = next(p for p in list_partitions(serve_lake, "vp_grid") if p.symbol == SYMBOL)
    built = read_manifest(part.path)
    reference, view = GridView(built), NumpyGridView(built)
    file = pq.ParquetFile(part.part_file)
    try:
        for i in range(min(file.num_row_groups, 3)):
            stored = file.read_row_group(i)
            assert_same_tables(view(stored), reference(stored))
    finally:
        reference.close()
    head = file.read_row_group(0).slice(0, 3 * 101)
    con = connect(serve_lake)
    try:
        ids = sorted(set(head.column("event_id").to_pylist()))
        sql_rows = con.sql(f"SELECT * EXCLUDE (product_type, symbol, dt) FROM vp_grid "
                           f"WHERE event_id IN ({', '.join(map(str, ids))}) "
                           "ORDER BY event_id, k").to_arrow_table()
    finally:
        con.close()
    got = view(head)
    assert_same_tables(got, sql_rows.select(got.column_names).cast(got.schema))


def test_layout_1_files_pass_through(esm4_records: np.ndarray) -> None:
    """First-wave files store every view column: both views just select them."""
    config = EngineConfig()
    snaps, grid = next(batches(esm4_records, "ESM4", config))
    rows = GridView(manifest(config))(stored_of(snaps, grid))
    old = pa.Table.from_arrays(rows.columns[::-1],  # another column order
                               names=rows.column_names[::-1])
    reference = GridView(manifest(config, layout=1))
    assert_same_tables(NumpyGridView(manifest(config, layout=1))(old), reference(old))
    reference.close()
    with pytest.raises(InputError, match="newer than this vpbatch"):
        NumpyGridView(manifest(config, layout=GRID_LAYOUT + 1))


# --------------------------------------------------------------------------------------------
# Random stored rows


@njit
def _alphas(ages: np.ndarray, tau: float) -> np.ndarray:
    out = np.empty_like(ages)
    for i in range(ages.shape[0]):
        out[i] = view_kernel._alpha(ages[i], tau)
    return out


def test_kernel_alpha_is_duckdbs() -> None:
    """``exp`` is the one function the view calls: the kernel's (numba's ``math.exp``, the C
    library's) and DuckDB's agree bit for bit (numpy's SIMD exp does not: it differs in the
    last bit for ~5 % of these), and so does ``vp_alpha`` at its edges (NaN, 50, infinities)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(0, 50, 300_000), rng.exponential(1e-3, 100_000),
                        rng.uniform(-800, 800, 100_000),
                        [0.0, -0.0, 50.0, np.nextafter(50.0, 99), np.inf, -np.inf, np.nan]])
    con = duckdb.connect()
    con.register("x", pa.table({"x": x}))
    for tau in (1.0, 0.3):
        want = con.sql(f"SELECT CASE WHEN x / {tau}::DOUBLE > 50.0 THEN 1.0::DOUBLE "
                       f"ELSE 1.0 - exp(-(x / {tau}::DOUBLE)) END FROM x"
                       ).to_arrow_table().column(0).to_numpy()
        assert np.array_equal(_alphas(x, tau).view(np.int64), want.view(np.int64))
    con.close()


F32 = st.floats(width=32)  # NaN, infinities, zeros of both signs, subnormals, the extremes
FINITE = st.floats(min_value=-1e6, max_value=1e6, width=32)
NS = 2**61  # timestamps within +-2**61: their differences never overflow


@st.composite
def stored_rows(draw: st.DrawFn) -> tuple[pa.Table, EngineConfig]:
    n = draw(st.integers(1, 24))
    tau_v = draw(st.sampled_from([2.0, 1e-9, 1e9]) | st.floats(1e-6, 1e6))
    tau_a = draw(st.sampled_from([5.0, 1e-3]) | st.floats(1e-6, 1e6))
    forces = ForceCoefficients(*(draw(st.sampled_from([0.0, 1.0, 0.3]) | st.floats(0, 1e9))
                                 for _ in range(7)))
    config = EngineConfig(tau_v=tau_v, tau_a=tau_a, forces=forces)

    def ints(lo: int, hi: int) -> np.ndarray:
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)),
                        dtype=np.int64)

    shared = draw(st.booleans())  # one state's rows (one ts_event) or rows of many states
    ts = ints(-NS, NS) if not shared else np.full(n, draw(st.integers(-NS, NS)), np.int64)
    # Ages at the formulas' edges (0, just past, a ratio of exactly 50, the epoch's last_ts)
    # and anything at all.
    edges = [min(age, NS) for age in (0, 1, -1, 999, 10**9, int(50 * tau_v * 1e9),
                                      int(50 * tau_a * 1e9), int(50 * tau_v * 1e9) + 1)]
    age = st.sampled_from(edges) | st.integers(-NS, NS)
    ages = np.array([draw(age) for _ in range(n)], dtype=np.int64)
    last_ts = ts - ages
    if draw(st.booleans()):
        last_ts[draw(st.integers(0, n - 1))] = 0  # a never-touched cell
    columns: dict[str, np.ndarray] = {
        "event_id": ints(0, 2**62), "k": ints(-10_000, 10_000).astype(np.int32),
        "ts_event": ts,
        "price": np.array(draw(st.lists(st.floats(), min_size=n, max_size=n))),
        # rest_depth = bid + ask must fit int64 (DuckDB raises on overflow): 2**62 + 2**62 did not
        "bid_depth": ints(-2**62, 2**62 - 1), "ask_depth": ints(-2**62, 2**62 - 1),
        "last_event_id": ints(0, 2**62), "last_ts": last_ts,
    }
    for name in GRID_STORED_FLOATS:
        values = draw(st.lists(draw(st.sampled_from([F32, FINITE])), min_size=n, max_size=n))
        columns[name] = np.array(values, dtype=np.float32)
    return stored_grid_table(columns), config


@given(stored_rows())
def test_random_stored_rows_equal_duckdbs(case: tuple[pa.Table, EngineConfig]) -> None:
    stored, config = case
    reference = GridView(manifest(config))
    try:
        want = reference(stored)
    finally:
        reference.close()
    assert_same_tables(NumpyGridView(manifest(config))(stored), want)


def _stored(n: int = 3, **override: Any) -> pa.Table:
    columns: dict[str, Any] = {
        "event_id": np.full(n, 7, np.int64), "k": np.arange(n, dtype=np.int32) - n // 2,
        "ts_event": np.full(n, 10**18, np.int64), "price": np.linspace(1.0, 2.0, n),
        "bid_depth": np.arange(n, dtype=np.int64), "ask_depth": np.ones(n, np.int64),
        "last_event_id": np.arange(n, dtype=np.int64),
        "last_ts": 10**18 - np.array([0, 10**9, 10**12, 1, 5][:n], dtype=np.int64),
    }
    columns.update({name: np.linspace(-2, 2, n).astype(np.float32)
                    for name in GRID_STORED_FLOATS})
    columns.update(override)
    return stored_grid_table(columns)


@pytest.mark.parametrize("override", [
    {"bid_depth": np.array([2**62, 0, 0]), "ask_depth": np.array([2**62, 0, 0])},
    {"bid_depth": np.array([0, -2**63, 0]), "ask_depth": np.array([0, -1, 0])},
    {"ts_event": np.full(3, 2**62, np.int64), "last_ts": np.array([0, -2**62, 0])},
])
def test_int64_overflow_is_an_error_in_both(override: dict[str, np.ndarray]) -> None:
    stored = _stored(**override)
    config = EngineConfig()
    reference = GridView(manifest(config))
    with pytest.raises(duckdb.Error, match=r"[Oo]verflow"):
        reference(stored)
    reference.close()
    with pytest.raises(InputError, match="overflows int64 at row"):
        NumpyGridView(manifest(config))(stored)


def _with_nulls(stored: pa.Table, name: str, valid: list[bool]) -> pa.Table:
    i = stored.schema.get_field_index(name)
    col = stored.column(i).combine_chunks()
    values = [v if ok else None for v, ok in zip(col.to_pylist(), valid, strict=True)]
    schema = pa.schema([f.with_nullable(True) for f in stored.schema])
    return stored.set_column(i, schema.field(i), pa.array(values, col.type)).cast(schema)


def test_nulls_as_duckdb_treats_them() -> None:
    """A null ``ts_event`` leaves a row's age null (``*_now`` = the forces as stored); a null
    anywhere else cannot be cast to the view's non-nullable columns, in both views."""
    config = EngineConfig()
    stored = _with_nulls(_stored(5), "ts_event", [True, False, True, False, True])
    reference = GridView(manifest(config))
    want = reference(stored)
    got = NumpyGridView(manifest(config))(stored)
    assert_same_tables(got, want)
    assert got.column("pressure_now")[1] == got.column("pressure")[1]
    for name in ("v_add", "bid_depth", "last_ts", "k"):
        broken = _with_nulls(_stored(5), name, [True, True, False, True, True])
        with pytest.raises(ValueError, match="null values to non-nullable"):
            reference(broken)
        with pytest.raises(ValueError, match=f"'{name}' with null values"):
            NumpyGridView(manifest(config))(broken)
    reference.close()


# --------------------------------------------------------------------------------------------
# StateConverter's own steps


def test_snapshot_values_equal_the_arrow_round_trip(esm4_records: np.ndarray) -> None:
    snaps = np.concatenate([s for s, _ in batches(esm4_records, "ESM4", CONFIGS["default"])])
    odd = snaps[:4].copy()
    odd["best_bid_price"][0] = np.nan  # an empty side: null, mid too
    odd["mid_price"][0] = np.nan
    odd["spot_price"][1] = -0.0
    odd["regime_score"][2] = np.inf
    odd["regime"] = [0, 1, 2, 1]
    for rows in (snaps, odd):
        want = snapshot_rows(snapshots_to_arrow(rows))
        got = [snapshot_values(rows[i:i + 1]) for i in range(len(rows))]
        assert [list(g.items()) for g in got] == [list(w.items()) for w in want]
        assert [[type(v) for v in g.values()] for g in got] == \
            [[type(v) for v in w.values()] for w in want]
    assert snapshot_values(odd[:1])["best_bid_price"] is None
    bad = odd[:1].copy()
    bad["regime"] = 3
    with pytest.raises(OutputError) as numpy_error:
        snapshot_values(bad)
    with pytest.raises(OutputError) as arrow_error:
        snapshots_to_arrow(bad)
    assert str(numpy_error.value) == str(arrow_error.value)


def test_state_converter_refuses_what_the_raw_path_refuses(esm4_records: np.ndarray) -> None:
    config = EngineConfig()
    snaps, grid = next(batches(esm4_records, "ESM4", config))
    one, rows = snaps[:1], grid[:101].copy()
    convert = StateConverter(config)
    convert.warm()
    too_big = rows.copy()
    too_big["v_fill"][7] = 1e39
    with pytest.raises(OutputError) as numpy_error:
        convert(one, too_big)
    with pytest.raises(OutputError) as arrow_error:
        stored_of(one, too_big)
    assert str(numpy_error.value) == str(arrow_error.value)
    other = rows.copy()
    other["event_id"][3] += 1
    with pytest.raises(OutputError, match="has no vp_snapshot row"):
        convert(one, other)
    with pytest.raises(OutputError, match="has no vp_snapshot row"):
        stored_of(one, other)
    shuffled = rows.copy()
    shuffled["k"][[0, 1]] = shuffled["k"][[1, 0]]
    with pytest.raises(InputError, match="not k = -K"):
        convert(one, shuffled)
    with pytest.raises(InputError, match="not k = -K"):
        to_states(snapshots_to_arrow(one), GridView(manifest(config))(stored_of(one, shuffled)),
                  101)
    with pytest.raises(VpbatchError, match="expected 101 per state"):
        convert(one, rows[:-1])
    with pytest.raises(TypeError):
        convert(one.astype(one.dtype.newbyteorder()), rows)
