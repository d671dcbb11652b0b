"""The lean ``vp_grid`` layout: the views give users every SPEC column, close to the engine's.

The engine's own float64 grid is written through :class:`PartitionWriter` and read back through
the DuckDB views (``vpbatch.sql.connect``) and ``verify``; the derived columns must equal the
engine's values (``rest_depth`` exactly, the forces within the documented float32 precision).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vpbatch.book.dtypes import GRID_DTYPE, GRID_FLOAT_FIELDS
from vpbatch.book.engine import Engine
from vpbatch.build.verify import verify
from vpbatch.config import EngineConfig
from vpbatch.ingest.reader import open_mbo
from vpbatch.products import resolve_product
from vpbatch.sql import connect
from vpbatch.store.lake import MANIFEST_FILE, PART_FILE, gold_partition
from vpbatch.store.schema import GRID_STORED_FLOATS, grid_view_schema
from vpbatch.store.writer import PartitionWriter
from vpbatch.synth import synth_session

DAY = dt.date(2026, 2, 6)
#: Documented bound (docs/storage.md): derived forces vs the engine's float64 values, relative
#: to the largest force of the same state (float32 chains carry 24 bits).
FORCE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def engine_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A synthetic day's first 60,000 records through the engine (K=8), written to a lake."""
    tmp = tmp_path_factory.mktemp("lean")
    raw = tmp / "day.mbo.dbn"
    synth_session(raw, symbol="MNQH6", day=DAY, records=60_000, seed=3)
    product = resolve_product("MNQH6")
    config = EngineConfig(K=8, band=40)
    engine = Engine(config, bucket=product.bucket, tick=product.tick)
    records = np.concatenate(list(open_mbo(raw).iter_chunks(symbol="MNQH6")))
    out = engine.process(records)
    assert len(out.snapshots) > 100
    with PartitionWriter(tmp / "lake", product, DAY, config=config, inputs=[raw],
                         row_group_rows={"vp_grid": 1000}) as writer:
        for lo in range(0, len(out.snapshots), 37):  # batches, as the pipeline writes them
            writer.write_snapshots(out.snapshots[lo:lo + 37])
            writer.write_grid(out.grid[lo * 17:(lo + 37) * 17])
    return tmp / "lake", out.snapshots, out.grid


def _view(lake: Path) -> dict[str, np.ndarray]:
    con = connect(lake)
    try:
        names = list(GRID_DTYPE.names or ())
        cols = ", ".join(f"epoch_ns({n})" if n == "last_ts" else n for n in names)
        rows = con.sql(f"SELECT {cols} FROM vp_grid ORDER BY event_id, k").fetchnumpy()
    finally:
        con.close()
    return dict(zip(names, rows.values(), strict=True))


def test_view_given_lean_files_has_every_spec_column_in_order(engine_build: tuple) -> None:
    lake, _, _ = engine_build
    con = connect(lake)
    try:
        columns = [r[0] for r in con.sql("DESCRIBE vp_grid").fetchall()]
        types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE vp_grid)").fetchall())
    finally:
        con.close()
    assert columns == [*GRID_DTYPE.names, "product_type", "symbol", "dt"]
    assert {types[n] for n in GRID_FLOAT_FIELDS} == {"DOUBLE"}


def test_view_given_lean_files_gives_stored_columns_and_rest_depth_exactly(
        engine_build: tuple) -> None:
    lake, _, grid = engine_build
    view = _view(lake)
    for name in ("event_id", "k", "price", "bid_depth", "ask_depth", "rest_depth",
                 "last_event_id", "last_ts"):
        assert np.array_equal(view[name], grid[name]), name
    for name in GRID_STORED_FLOATS:
        assert np.array_equal(view[name], grid[name].astype(np.float32).astype(np.float64)), name


def test_view_given_lean_files_recomputes_forces_like_the_engine(engine_build: tuple) -> None:
    lake, snaps, grid = engine_build
    view = _view(lake)
    rows = len(grid) // len(snaps)
    for name in ("pressure", "vacuum", "pressure_now", "vacuum_now"):
        want = grid[name].reshape(-1, rows)
        scale = np.maximum(np.abs(want).max(axis=1, keepdims=True), 1e-12)
        error = np.abs(view[name].reshape(-1, rows) - want) / scale
        assert error.max() <= FORCE_TOLERANCE, (name, float(error.max()))
        assert (view[name] >= 0).all() and np.isfinite(view[name]).all()
    moved = grid["pressure_now"] != grid["pressure"]
    assert moved.any()  # the as-of forces really decay between touches


def test_verify_given_lean_files_passes_every_check(engine_build: tuple) -> None:
    lake, _, _ = engine_build
    report = verify(lake, symbol="MNQH6", day=DAY)
    assert report.passed, report.format()


def _first_wave_file(grid: np.ndarray, path: Path) -> None:
    """The first wave's layout: every SPEC column as the engine wrote it."""
    schema = grid_view_schema()
    columns = [pa.array(grid[f.name].view(np.int64)).cast(f.type) if f.name == "last_ts"
               else pa.array(grid[f.name], type=f.type) for f in schema]
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), path)


def test_view_given_first_wave_and_lean_builds_in_one_lake_reads_both(
        engine_build: tuple, tmp_path: Path) -> None:
    lake, snaps, grid = engine_build
    old_day = dt.date(2026, 2, 5)
    product = resolve_product("MNQH6")
    with PartitionWriter(tmp_path, product, old_day, config=EngineConfig(K=8, band=40)) as out:
        out.write_snapshots(snaps)
        out.write_grid(grid)
    folder = gold_partition(tmp_path, "vp_grid", product, old_day)
    _first_wave_file(grid, folder / PART_FILE)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["writer"]["grid_layout"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    shutil.copytree(lake / "gold" / "vp_grid", tmp_path / "gold" / "vp_grid", dirs_exist_ok=True)
    con = connect(tmp_path)
    try:
        per_day = con.sql("SELECT dt, count(*), sum(pressure_now), sum(rest_depth) FROM vp_grid "
                          "GROUP BY dt ORDER BY dt").fetchall()
    finally:
        con.close()
    assert [(d, n) for d, n, _, _ in per_day] == [(old_day, len(grid)), (DAY, len(grid))]
    old, new = per_day[0], per_day[1]
    assert old[2] == pytest.approx(float(grid["pressure_now"].sum()), rel=1e-12)
    assert new[2] == pytest.approx(float(grid["pressure_now"].sum()), rel=1e-6)
    assert old[3] == new[3] == int(grid["rest_depth"].sum())


def test_column_kernels_warmed_at_install_are_the_ones_a_build_calls(tmp_path: Path) -> None:
    """``make install`` (``python -m cli.warm``) compiles the column kernels into numba's cache
    with ``load_kernels``; a build must then call only those specialisations (the split's two:
    a build's writable rows and the live viewer's read-only ones), else its first run compiles
    again."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from vpbatch.build.pipeline import build\n"
        "from vpbatch.build.request import BuildRequest\n"
        "from vpbatch.store import grid_columns as g\n"
        "g.load_kernels()\n"
        "warm = (len(g._split.signatures), len(g._state_times.signatures))\n"
        "build(BuildRequest(symbol='ESM4', day=None, lake=Path(sys.argv[1]),\n"
        "                   path=Path(sys.argv[2])))\n"
        "print(warm == (len(g._split.signatures), len(g._state_times.signatures)) == (2, 1))\n")
    esm4 = Path(__file__).parents[1] / "data" / "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(esm4)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
