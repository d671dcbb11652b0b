"""vpbatch.store.writer, schema, partitions, mbp_layout: layout, types, determinism, atomicity."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import DAY, FakeBuild, empty_levels, fake_build
from vpbatch.book.dtypes import GRID_DTYPE, REGIME_NAMES, SNAPSHOT_DTYPE, UNDEF_PRICE
from vpbatch.book.mbp_layout import levels_of, mbp_columns, mbp_dtype, mbp_kernel_dtype
from vpbatch.errors import ConfigError, OutputError
from vpbatch.store.grid_columns import FLOAT_ORDER, StoredGridBuffer, split_grid
from vpbatch.store.lake import GOLD_TABLES, MANIFEST_FILE, PART_FILE, SUCCESS_FILE, gold_partition
from vpbatch.store.partitions import (
    InputFile,
    build_digest,
    is_complete,
    list_partitions,
    read_manifest,
    read_success,
)
from vpbatch.store.schema import (
    GRID_DERIVED,
    GRID_STORED_FLOATS,
    grid_schema,
    grid_to_arrow,
    mbp_to_arrow,
    snapshots_to_arrow,
)
from vpbatch.store.writer import PartitionWriter

REPO = Path(__file__).resolve().parents[2]
SMALL_GROUPS = {"vp_snapshot": 7, "vp_grid": 50, "mbp": 9}


def write(lake: Path, build: FakeBuild, *, mbp: bool = True, force: bool = False,
          chunks: int = 1, inputs: tuple = (), **kwargs: object) -> dict[str, Path]:
    """Write ``build`` through a PartitionWriter, the arrays split into ``chunks`` pieces."""
    with PartitionWriter(lake, build.product, build.day, config=build.config, force=force,
                         mbp_levels=build.levels if mbp else None, inputs=inputs,
                         row_group_rows=SMALL_GROUPS, **kwargs) as out:  # type: ignore[arg-type]
        for part in np.array_split(build.snapshots, chunks):
            out.write_snapshots(part)
        for part in np.array_split(build.grid, chunks):
            out.write_grid(part)
        if mbp:
            for part in np.array_split(build.mbp, chunks):
                out.write_mbp(part)
        out.anomalies.update({"cancel_unknown_order": 3})
        out.timings.update({"engine": 1.5})
    return {t: gold_partition(lake, t, build.product, build.day)
            for t in (GOLD_TABLES if mbp else GOLD_TABLES[:2])}


def gold_files(lake: Path) -> list[str]:
    return sorted(str(p.relative_to(lake)) for p in (lake / "gold").rglob("*") if p.is_file())


def hidden_dirs(lake: Path) -> list[str]:
    return sorted(p.name for p in (lake / "gold").glob(".*") if p.name != ".locks")


# --- layout, manifest, types ------------------------------------------------------------------


def test_writer_given_fake_build_writes_part_manifest_and_success(tmp_path: Path) -> None:
    build = fake_build()
    parts = write(tmp_path, build)
    for table, folder in parts.items():
        assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_FILE, SUCCESS_FILE,
                                                            PART_FILE]
        assert folder.relative_to(tmp_path).parts[:2] == ("gold", table)
        assert folder.name == "dt=2026-02-06" and folder.parent.name == "symbol=MNQH6"
        assert folder.parent.parent.name == "product_type=future_mbo"
    assert is_complete(tmp_path, build.product, DAY)
    assert is_complete(tmp_path, build.product, DAY, GOLD_TABLES)
    assert hidden_dirs(tmp_path) == []
    assert pq.read_metadata(parts["vp_grid"] / PART_FILE).num_rows == len(build.grid)


def test_writer_rows_and_partitions_given_commit_report_this_build(tmp_path: Path) -> None:
    build = fake_build()
    with PartitionWriter(tmp_path, build.product, DAY, config=build.config,
                         row_group_rows=SMALL_GROUPS) as out:
        out.write_snapshots(build.snapshots)
        for i in range(0, len(build.grid), 3):  # most writes leave rows below one row group
            out.write_grid(build.grid[i:i + 3])
            assert out.rows["vp_grid"] == min(i + 3, len(build.grid))  # buffered rows count
        assert out.rows == {"vp_snapshot": 40, "vp_grid": 440}
    assert out.rows == {"vp_snapshot": 40, "vp_grid": 440}
    assert sorted(out.partitions) == ["vp_grid", "vp_snapshot"]
    assert out.partitions["vp_grid"] == gold_partition(tmp_path, "vp_grid", build.product, DAY)


def test_writer_manifest_records_inputs_parameters_counts_and_digest(tmp_path: Path) -> None:
    raw = tmp_path / "glbx-mdp3-20260206.mbo.dbn.zst"
    raw.write_bytes(b"not really dbn")
    build = fake_build()
    parts = write(tmp_path / "lake", build, inputs=(raw,), params={"sample": "event"})
    text = (parts["vp_grid"] / MANIFEST_FILE).read_text()
    manifest = json.loads(text)
    assert text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert manifest["manifest_version"] == 1
    assert manifest["engine"] == {"name": "vpbatch", "version": "0.1.0"}
    assert manifest["inputs"] == [{
        "path": str(raw.resolve()), "name": raw.name, "size": 14,
        "sha256": hashlib.sha256(b"not really dbn").hexdigest()}]
    assert InputFile.from_path(raw).to_dict() == manifest["inputs"][0]
    assert manifest["config"]["K"] == 5 and manifest["config"]["sample"] == "event"
    assert manifest["parameters"] == {"sample": "event"}
    assert manifest["product"]["symbol"] == "MNQH6" and manifest["dt"] == "2026-02-06"
    assert manifest["anomalies"] == {"cancel_unknown_order": 3}
    assert manifest["timings"]["engine"] == 1.5 and "commit" in manifest["timings"]
    rows = {t: manifest["tables"][t]["rows"] for t in manifest["tables"]}
    assert rows == {"vp_snapshot": 40, "vp_grid": 440, "mbp": 40}
    assert manifest["tables"]["vp_grid"]["row_groups"] == 9  # 440 rows in groups of 50
    for folder in parts.values():
        assert read_success(folder) == build_digest(manifest)
        assert read_manifest(folder) == manifest
    for table, folder in parts.items():  # hashed while written: must be the file's own digest
        data = (folder / PART_FILE).read_bytes()
        assert manifest["tables"][table]["sha256"] == hashlib.sha256(data).hexdigest(), table
        assert manifest["tables"][table]["bytes"] == len(data)


def test_writer_columns_have_documented_types_and_round_trip(tmp_path: Path) -> None:
    build = fake_build()
    build.snapshots["best_bid_price"][3] = np.nan
    build.snapshots["mid_price"][3] = np.nan
    parts = write(tmp_path, build)
    snap = pq.read_table(parts["vp_snapshot"] / PART_FILE)
    grid = pq.read_table(parts["vp_grid"] / PART_FILE)
    utc = pa.timestamp("ns", tz="UTC")
    assert snap.schema.field("ts_event").type == utc
    assert snap.schema.field("regime").type == pa.dictionary(pa.int8(), pa.string())
    assert grid.schema.field("last_ts").type == utc
    assert grid.schema.field("k").type == pa.int32()
    assert not grid.schema.field("v_add").nullable and snap.schema.field("mid_price").nullable
    assert snap.column_names == list(SNAPSHOT_DTYPE.names or ())
    assert grid.column_names == grid_schema().names
    assert set(grid.column_names) | set(GRID_DERIVED) == set(GRID_DTYPE.names or ()) | {"ts_event"}
    assert grid.schema.field("v_add").type == pa.float32()
    assert grid.schema.field("price").type == pa.float64()
    assert snap["best_bid_price"].null_count == 1 and snap["mid_price"].null_count == 1
    assert snap["best_bid_price"][3].as_py() is None
    assert snap["regime"].to_pylist() == [REGIME_NAMES[c] for c in build.snapshots["regime"]]
    ts = snap["ts_event"].cast(pa.int64()).to_numpy()
    assert np.array_equal(ts, build.snapshots["ts_event"])
    for name in GRID_DTYPE.names or ():
        if name in GRID_DERIVED:
            continue
        col = grid[name]
        values = col.cast(pa.int64()).to_numpy() if name == "last_ts" else col.to_numpy()
        want = build.grid[name]
        if name in GRID_STORED_FLOATS:
            want = want.astype(np.float32)
        assert np.array_equal(values, want), name
    state_ts = np.repeat(build.snapshots["ts_event"], build.rows)
    assert np.array_equal(grid["ts_event"].cast(pa.int64()).to_numpy(), state_ts)
    never = grid.filter(pa.compute.equal(grid["last_event_id"], 0))
    assert never.num_rows > 0
    assert set(never["last_ts"].cast(pa.int64()).to_pylist()) == {0}


def test_writer_declares_sorting_columns_and_bounded_row_groups(tmp_path: Path) -> None:
    parts = write(tmp_path, fake_build())
    meta = pq.ParquetFile(parts["vp_grid"] / PART_FILE).metadata
    assert meta.num_row_groups == 9
    assert all(meta.row_group(i).num_rows == 50 for i in range(8))
    assert meta.row_group(8).num_rows == 40
    sorting = meta.row_group(0).sorting_columns
    assert [(s.column_index, s.descending) for s in sorting] == [(0, False), (1, False)]
    assert meta.row_group(0).column(0).statistics.has_min_max
    assert meta.created_by.startswith("parquet-cpp-arrow version ")
    assert meta.metadata[b"vpbatch.table"] == b"vp_grid"


def test_writer_given_wrong_dtype_raises_type_error(tmp_path: Path) -> None:
    build = fake_build(n_states=3)
    with PartitionWriter(tmp_path, build.product, DAY, config=build.config) as out:
        with pytest.raises(TypeError, match="vp_grid"):
            out.write_grid(build.snapshots)
        with pytest.raises(OutputError, match="mbp is not part of this build"):
            out.write_mbp(build.mbp)
        out.write_snapshots(build.snapshots)
        out.write_grid(build.grid)


def test_writer_given_too_many_mbp_levels_raises_config_error(tmp_path: Path) -> None:
    build = fake_build(n_states=2)
    with pytest.raises(ConfigError, match="mbp_levels: must be between 1 and 99, was 100"):
        PartitionWriter(tmp_path, build.product, DAY, config=build.config, mbp_levels=100)


def test_snapshots_to_arrow_given_unknown_regime_code_raises_output_error() -> None:
    snaps = fake_build(n_states=3).snapshots
    snaps["regime"][1] = 7
    with pytest.raises(OutputError, match=r"vp_snapshot.regime: code 7"):
        snapshots_to_arrow(snaps)


# --- determinism ----------------------------------------------------------------------------


def test_writer_given_same_build_twice_data_files_are_byte_identical(tmp_path: Path) -> None:
    build = fake_build(n_states=60, seed=3)
    first = write(tmp_path / "a", build)
    second = write(tmp_path / "b", build, chunks=7)
    write(tmp_path / "a", build, force=True, chunks=13)
    for table in first:
        assert (first[table] / PART_FILE).read_bytes() == (second[table] / PART_FILE).read_bytes()
        m1 = read_manifest(first[table])
        m2 = read_manifest(second[table])
        assert build_digest(m1) == build_digest(m2)
        assert read_success(first[table]) == read_success(second[table])


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=440), max_size=8))
def test_writer_given_any_chunking_grid_file_is_identical(tmp_path_factory: pytest.TempPathFactory,
                                                         cuts: list[int]) -> None:
    build = fake_build(seed=5)
    base = tmp_path_factory.mktemp("chunks")
    ref = write(base / "ref", build, mbp=False)["vp_grid"] / PART_FILE
    with PartitionWriter(base / "cut", build.product, DAY, config=build.config,
                         row_group_rows=SMALL_GROUPS) as out:
        out.write_snapshots(build.snapshots)
        for piece in np.split(build.grid, sorted(cuts)):
            out.write_grid(piece)
    got = gold_partition(base / "cut", "vp_grid", build.product, DAY) / PART_FILE
    assert got.read_bytes() == ref.read_bytes()


@settings(max_examples=15, deadline=None)
@given(batch_states=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=12))
def test_grid_through_stored_columns_gives_the_file_of_write_grid(
        tmp_path_factory: pytest.TempPathFactory, batch_states: list[int]) -> None:
    """A build's path (engine batches -> StoredGridBuffer -> whole row groups) == write_grid."""
    build = fake_build(seed=5)
    base = tmp_path_factory.mktemp("stored")
    ref = write(base / "ref", build, mbp=False)["vp_grid"] / PART_FILE
    rows = len(build.grid) // len(build.snapshots)
    with PartitionWriter(base / "cols", build.product, DAY, config=build.config,
                         row_group_rows=SMALL_GROUPS) as out:
        out.write_snapshots(build.snapshots)
        buffer = StoredGridBuffer(SMALL_GROUPS["vp_grid"], out.write_grid_group)
        state = 0
        for n in itertools.cycle(batch_states):
            if state >= len(build.snapshots):
                break
            buffer.add(build.snapshots[state:state + n],
                       build.grid[state * rows:(state + n) * rows])
            state += n
        buffer.flush()
    got = gold_partition(base / "cols", "vp_grid", build.product, DAY) / PART_FILE
    assert got.read_bytes() == ref.read_bytes()


_F32_MAX = float(np.finfo(np.float32).max)
#: Values a float field can hold, with the edges of float32 and the non-finite ones.
_GRID_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([_F32_MAX, -_F32_MAX, np.nextafter(_F32_MAX, np.inf), 3.4028235e38,
                     3.4028236e38, 1e39, -1e300, np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-46]))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(min_value=0, max_value=40))
def test_split_grid_equals_numpy_field_by_field(data: st.DataObject, n: int) -> None:
    """The compiled split gives each stored column as numpy's own per-field cast does, and
    the first row (over every float field) that does not fit float32."""
    rows = np.zeros(n, GRID_DTYPE)
    for name in GRID_DTYPE.names:
        kind = GRID_DTYPE[name].kind
        values = st.integers(-(2 ** 62), 2 ** 62) if kind == "i" else _GRID_VALUES
        if kind == "i" and GRID_DTYPE[name].itemsize == 4:
            values = st.integers(-(2 ** 31), 2 ** 31 - 1)
        rows[name] = data.draw(st.lists(values, min_size=n, max_size=n), label=name)
    columns, bad = split_grid(rows)
    for name, column in columns.items():
        with np.errstate(over="ignore"):
            want = rows[name].astype(np.float32) if name in FLOAT_ORDER else rows[name]
        assert column.dtype == want.dtype and column.tobytes() == want.tobytes(), name
    too_big = np.zeros(n, bool)
    for name in FLOAT_ORDER:
        x = np.abs(rows[name])
        too_big |= (x > _F32_MAX) & np.isfinite(x)
    assert bad == (int(np.argmax(too_big)) if too_big.any() else -1)


def test_stored_grid_buffer_given_value_beyond_float32_raises_output_error() -> None:
    snapshots = np.zeros(1, SNAPSHOT_DTYPE)
    grid = np.zeros(2, GRID_DTYPE)
    grid["event_id"] = 7
    grid["v_fill"][0] = np.inf  # infinities are stored as such
    grid["a_add"][1] = 1e300
    buffer = StoredGridBuffer(10, lambda columns: None)
    with pytest.raises(OutputError, match=r"^vp_grid\.a_add: 1e\+300 at event_id 7 does not "
                                          r"fit float32$"):
        buffer.add(snapshots, grid)


# --- mbp layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [1, 3, 10])
def test_mbp_dtypes_given_levels_share_one_memory_layout(levels: int) -> None:
    flat, kernel = mbp_dtype(levels), mbp_kernel_dtype(levels)
    assert flat.itemsize == kernel.itemsize and flat.itemsize % 8 == 0
    arr = np.zeros(2, kernel)
    arr["bid_px"][1, levels - 1] = 123
    arr["ask_ct"][0, 0] = 9
    view = arr.view(flat)
    assert view[f"bid_px_{levels - 1:02d}"][1] == 123 and view["ask_ct_00"][0] == 9
    assert levels_of(flat) == levels_of(kernel) == levels


def test_mbp_columns_follow_databento_mbp10_to_df_order() -> None:
    databento_dbn = pytest.importorskip("databento_dbn")
    ours = [c for c in mbp_columns(10) if c != "event_id"]
    theirs = [c for c in databento_dbn.MBP10Msg._ordered_fields if c in set(ours)]
    assert ours == theirs
    assert mbp_columns(10)[-1] == "event_id"


def test_mbp_to_arrow_given_empty_level_and_undefined_price_writes_nulls() -> None:
    build = fake_build(n_states=4)
    mbp = empty_levels(build.mbp)
    mbp["price"][0] = UNDEF_PRICE
    mbp["action"][0] = ord("R")
    table = mbp_to_arrow(mbp)
    assert table.column_names == list(mbp_columns(3))
    assert table["price"][0].as_py() is None
    assert table["action"][0].as_py() == "R" and table["side"][1].as_py() in ("A", "B", "N")
    assert table["ask_px_02"].null_count == 4
    assert table["ask_sz_02"].to_pylist() == [0] * 4
    assert table["bid_px_00"][0].as_py() == build.mbp["bid_px"][0, 0] / 1e9
    assert table.schema.field("bid_sz_00").type == pa.uint32()
    assert table.schema.field("ts_recv").type == pa.timestamp("ns", tz="UTC")
    assert mbp_to_arrow(mbp.view(mbp_dtype(3))).equals(table)


def test_grid_to_arrow_given_empty_array_gives_empty_table() -> None:
    empty = np.zeros(0, np.int64)
    assert grid_to_arrow(np.zeros(0, GRID_DTYPE), empty).num_rows == 0


def test_grid_to_arrow_given_value_beyond_float32_raises_output_error() -> None:
    grid = np.zeros(2, GRID_DTYPE)
    grid["event_id"] = 7
    grid["a_add"][1] = 1e300
    with pytest.raises(OutputError, match=r"^vp_grid\.a_add: 1e\+300 at event_id 7 does not "
                                          r"fit float32$"):
        grid_to_arrow(grid, np.zeros(2, np.int64))


def test_writer_given_grid_before_its_snapshots_raises_and_leaves_nothing(tmp_path: Path) -> None:
    build = fake_build(n_states=3)
    with pytest.raises(OutputError, match=r"^vp_grid: event_id \d+ has no vp_snapshot row"), \
            PartitionWriter(tmp_path, build.product, DAY, config=build.config,
                            row_group_rows={"vp_grid": 11}) as out:
        out.write_grid(build.grid)
    assert not (tmp_path / "gold" / "vp_grid").exists() or hidden_dirs(tmp_path) == []


# --- atomicity ------------------------------------------------------------------------------


def test_writer_given_exception_inside_block_leaves_nothing(tmp_path: Path) -> None:
    build = fake_build()
    with pytest.raises(RuntimeError, match="boom"), PartitionWriter(
            tmp_path, build.product, DAY, config=build.config,
            row_group_rows=SMALL_GROUPS) as out:
        out.write_snapshots(build.snapshots)
        out.write_grid(build.grid[:200])
        raise RuntimeError("boom")
    assert not is_complete(tmp_path, build.product, DAY)
    assert gold_files(tmp_path) == []  # the lock (a directory) is released too
    assert hidden_dirs(tmp_path) == []
    write(tmp_path, build)  # the lock was released
    assert is_complete(tmp_path, build.product, DAY)


def test_writer_given_stale_temp_dirs_of_same_partition_removes_them(tmp_path: Path) -> None:
    build = fake_build()
    gold = tmp_path / "gold"
    stale = gold / f".tmp.future_mbo.MNQH6.2026-02-06.{'a' * 32}" / "vp_grid"
    old = gold / f".old.future_mbo.MNQH6.2026-02-06.{'b' * 32}" / "vp_snapshot"
    other = gold / f".tmp.future_mbo.MNQH6.2026-02-07.{'c' * 32}" / "vp_grid"
    for folder in (stale, old, other):
        folder.mkdir(parents=True)
        (folder / PART_FILE).write_bytes(b"half a file")
    write(tmp_path, build)
    assert hidden_dirs(tmp_path) == [other.parent.name]


def test_writer_given_leftover_final_dir_without_success_replaces_it(tmp_path: Path) -> None:
    build = fake_build()
    folder = gold_partition(tmp_path, "vp_grid", build.product, DAY)
    folder.mkdir(parents=True)
    (folder / PART_FILE).write_bytes(b"junk")
    parts = write(tmp_path, build)
    assert pq.read_metadata(parts["vp_grid"] / PART_FILE).num_rows == len(build.grid)


def test_writer_given_complete_partition_without_force_refuses(tmp_path: Path) -> None:
    build = fake_build()
    write(tmp_path, build)
    with pytest.raises(OutputError, match="already built; use --force"):
        write(tmp_path, build)
    assert is_complete(tmp_path, build.product, DAY, GOLD_TABLES)


def test_writer_given_force_replaces_and_retires_tables_of_old_build(tmp_path: Path) -> None:
    write(tmp_path, fake_build(seed=1))
    build = fake_build(seed=2)
    parts = write(tmp_path, build, mbp=False, force=True)
    assert not gold_partition(tmp_path, "mbp", build.product, DAY).exists()
    assert pq.read_table(parts["vp_grid"] / PART_FILE)["v_add"].to_pylist() == list(
        build.grid["v_add"].astype(np.float32))
    assert is_complete(tmp_path, build.product, DAY)
    assert hidden_dirs(tmp_path) == []


def test_writer_given_second_writer_of_same_partition_refuses(tmp_path: Path) -> None:
    build = fake_build(n_states=3)
    with PartitionWriter(tmp_path, build.product, DAY, config=build.config) as out:
        with pytest.raises(OutputError, match=r"another build of future_mbo\.MNQH6\.2026-02-06"):
            PartitionWriter(tmp_path, build.product, DAY, config=build.config).open()
        out.write_snapshots(build.snapshots)
        out.write_grid(build.grid)
    assert is_complete(tmp_path, build.product, DAY)


def test_is_complete_given_success_of_another_build_is_false(tmp_path: Path) -> None:
    build = fake_build()
    parts = write(tmp_path, build)
    (parts["vp_grid"] / SUCCESS_FILE).write_text('{"build":"other"}\n')
    assert not is_complete(tmp_path, build.product, DAY)
    (parts["vp_grid"] / SUCCESS_FILE).unlink()
    assert not is_complete(tmp_path, build.product, DAY)
    assert [p.table for p in list_partitions(tmp_path, "vp_grid")] == []
    assert len(list_partitions(tmp_path, "vp_grid", complete_only=False)) == 1


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from tests.fakes import fake_build
    from vpbatch.store.writer import PartitionWriter

    build = fake_build(seed=4)
    out = PartitionWriter(sys.argv[1], build.product, build.day, config=build.config,
                          row_group_rows={"vp_grid": 11})
    out.open()
    out.write_snapshots(build.snapshots)
    print("writing", flush=True)
    for i in range(0, len(build.grid), 11):
        out.write_grid(build.grid[i:i + 11])
        print("row group written", flush=True)
        time.sleep(0.05)
    out.commit()
""")

_CRASH_DRIVER = textwrap.dedent("""
    # For each n, fork a child that writes a forced rebuild and dies (os._exit, no cleanup)
    # just before its n-th rename during commit; report what the lake looks like afterwards.
    import json, os, sys
    from tests.fakes import fake_build
    from vpbatch.store.lake import gold_partition
    from vpbatch.store.lake import PART_FILE
    from vpbatch.store.partitions import is_complete, read_success
    from vpbatch.store.writer import PartitionWriter

    lake, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    build = fake_build(seed=2)
    try:  # pa.array imports pandas lazily: do it once here, not in every child
        import pandas  # noqa: F401
    except ImportError:
        pass

    def child(crash_at):
        out = PartitionWriter(lake, build.product, build.day, config=build.config, force=True,
                              row_group_rows={"vp_grid": 11})
        out.open()
        out.write_snapshots(build.snapshots)
        out.write_grid(build.grid)
        calls = [0]

        def crashing(real):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == crash_at:
                    os._exit(17)
                return real(*args, **kwargs)
            return call

        os.rename, os.replace = crashing(os.rename), crashing(os.replace)
        out.commit()
        os._exit(100 + calls[0])

    for crash_at in range(first, last + 1):
        pid = os.fork()
        if pid == 0:
            child(crash_at)
        _, status = os.waitpid(pid, 0)
        folders = {t: gold_partition(lake, t, build.product, build.day)
                   for t in ("vp_snapshot", "vp_grid")}
        grid = folders["vp_grid"] / PART_FILE
        print(json.dumps({
            "crash_at": crash_at, "exit": os.waitstatus_to_exitcode(status),
            "complete": is_complete(lake, build.product, build.day),
            "builds": {t: read_success(f) for t, f in folders.items()},
            "grid": grid.read_bytes().hex() if grid.is_file() else None,
        }), flush=True)
""")


def _run(tmp_path: Path, script: str, *args: object) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_writer_given_crash_at_every_commit_step_never_shows_new_build(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    old = fake_build(seed=1)
    write(lake, old, mbp=False)
    old_build = read_success(gold_partition(lake, "vp_grid", old.product, DAY))
    old_grid = (gold_partition(lake, "vp_grid", old.product, DAY) / PART_FILE).read_bytes().hex()
    # how many renames a clean forced commit makes (exit code 100 + n)
    write(tmp_path / "probe", old, mbp=False)
    probe = _run(tmp_path, _CRASH_DRIVER, tmp_path / "probe", 0, 0)
    assert probe.returncode == 0, probe.stderr
    n_renames = json.loads(probe.stdout)["exit"] - 100
    assert n_renames == 8  # 2 manifests, 2 old partitions away, 2 new in, 2 _SUCCESS
    result = _run(tmp_path, _CRASH_DRIVER, lake, 1, n_renames)
    assert result.returncode == 0, result.stderr
    states = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["exit"] for s in states] == [17] * n_renames
    for state in states:
        if state["complete"]:  # crashed before the old build moved away: still the old one
            assert state["builds"] == {"vp_snapshot": old_build, "vp_grid": old_build}
            assert state["grid"] == old_grid
        else:
            assert None in state["builds"].values() or len(set(state["builds"].values())) > 1
    assert any(s["complete"] for s in states) and not all(s["complete"] for s in states)
    # the next build cleans up the leftovers and succeeds
    rerun = fake_build(seed=2)
    write(lake, rerun, mbp=False, force=True)
    assert is_complete(lake, rerun.product, DAY)
    assert hidden_dirs(lake) == []


def test_writer_given_sigkill_mid_write_leaves_nothing_complete(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(lake)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        for _ in range(3):  # killed with row groups on disk and more to come
            assert proc.stdout.readline().strip() == "row group written"
        assert hidden_dirs(lake), "the writer should be writing into a temp dir"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    build = fake_build(seed=4)
    assert not is_complete(lake, build.product, DAY)
    assert not list((lake / "gold").rglob(SUCCESS_FILE))
    write(lake, build)
    assert is_complete(lake, build.product, DAY, GOLD_TABLES)
    assert hidden_dirs(lake) == []


# --- failures -------------------------------------------------------------------------------


def test_writer_given_lake_under_a_regular_file_raises_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    build = fake_build(n_states=2)
    with pytest.raises(OutputError, match=r"file\.txt/lake/gold: cannot create lake folder"):
        PartitionWriter(blocker / "lake", build.product, DAY, config=build.config).open()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_writer_given_read_only_lake_raises_output_error(tmp_path: Path) -> None:
    build = fake_build(n_states=2)
    (tmp_path / "gold").mkdir()
    (tmp_path / "gold").chmod(0o500)
    try:
        with pytest.raises(OutputError, match="gold"):
            PartitionWriter(tmp_path, build.product, DAY, config=build.config).open()
    finally:
        (tmp_path / "gold").chmod(0o700)


class _DiskFull(pq.ParquetWriter):
    """A ParquetWriter whose third ``vp_grid`` row group hits a full disk."""

    calls = 0

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        type(self).calls += "k" in table.column_names
        if type(self).calls >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write_table(table, row_group_size=row_group_size)


def test_writer_given_disk_full_mid_write_removes_temp_and_raises(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vpbatch.store.writer.pq.ParquetWriter", _DiskFull)
    _DiskFull.calls = 0
    build = fake_build()
    with pytest.raises(OutputError, match=r"part-0\.parquet: writing vp_grid failed: "
                                          r"No space left on device"):
        write(tmp_path, build, mbp=False)
    assert not is_complete(tmp_path, build.product, DAY)
    assert gold_files(tmp_path) == []  # the lock (a directory) is released too
    assert hidden_dirs(tmp_path) == []


def test_writer_given_commit_rename_failure_restores_old_partition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_build(seed=1)
    write(tmp_path, old, mbp=False)
    before = read_success(gold_partition(tmp_path, "vp_grid", old.product, DAY))
    real = os.rename

    def failing(src: object, dst: object) -> None:
        if ".tmp." in str(src):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("vpbatch.store.writer.os.rename", failing)
    with pytest.raises(OutputError, match="commit failed: Invalid cross-device link"):
        write(tmp_path, fake_build(seed=2), mbp=False, force=True)
    monkeypatch.undo()
    assert is_complete(tmp_path, old.product, DAY)
    assert read_success(gold_partition(tmp_path, "vp_grid", old.product, DAY)) == before
    assert hidden_dirs(tmp_path) == []
