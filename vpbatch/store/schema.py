"""Arrow schemas of the gold tables and the numpy -> Arrow conversion (SPEC §11).

The one place that turns engine output (``SNAPSHOT_DTYPE``, ``GRID_DTYPE``, MBP records) into
Arrow: the Parquet writer and anything that streams the same rows (e.g. Arrow IPC batches)
call these functions, so stored and streamed layouts cannot drift apart.

Column types
------------
* ``event_id``, ``last_event_id``, depths, sizes and counters: ``int64``; ``k``: ``int32``.
* ``ts_event``, ``ts_recv`` and ``last_ts``: ``timestamp[ns, tz=UTC]``. ``last_ts`` of a
  never-touched cell is the epoch ``1970-01-01T00:00:00Z`` (SPEC's 0); ``last_event_id == 0``
  is the marker to test for "never touched".
* ``vp_grid`` files hold the lean layout (:data:`GRID_LAYOUT`, docs/storage.md): masses and
  chains as ``float32``, ``rest_depth``/``pressure``/``vacuum``/``pressure_now``/``vacuum_now``
  computed by the DuckDB views, plus the state's ``ts_event``. :func:`grid_view_schema` is
  what users see.
* Prices: ``float64`` in currency units. ``best_bid_price``, ``best_ask_price`` and
  ``mid_price`` are null when that side of the book is empty (NaN in the arrays); every
  other float is written as is (``vpbatch verify`` rejects NaN/inf).
* ``regime``: dictionary-encoded string, dictionary always ``['CHOP', 'UP', 'DOWN']``.
* ``model_call`` (``int8``: -1, 0, +1) and ``model_probability`` (``float64``): only in a build
  with ``--model`` (SPEC §15, :data:`MODEL_COLUMNS`), after the engine's columns; both null
  where the model gives no score (an unusable book, a missing feature).
* ``mbp``: Databento MBP-10 ``to_df()`` column order and types (see :mod:`vpbatch.book.mbp_layout`):
  times ``timestamp[ns, UTC]`` (``UINT64_MAX`` -> null), prices ``float64`` = fixed * 1e-9
  (undefined price or empty level -> null), sizes/counts/sequence ``uint32``, flags ``uint8``,
  action/side one-character strings.
* Columns that can never be null are declared non-nullable (Parquet ``REQUIRED``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import pyarrow as pa

from vpbatch.book.dtypes import (
    GRID_DTYPE,
    GRID_FLOAT_FIELDS,
    PRICE_SCALE,
    REGIME_NAMES,
    SNAPSHOT_DTYPE,
    UNDEF_PRICE,
)
from vpbatch.book.dtypes import read_only as read_only  # fit's way to it (fit imports no book)
from vpbatch.book.mbp_layout import (
    DEFAULT_LEVELS,
    LEVEL_COLUMN_PREFIXES,
    level_name,
    levels_of,
    mbp_columns,
    mbp_dtype,
)
from vpbatch.errors import OutputError
from vpbatch.store.lake import MANIFEST_VERSION

#: Layout of stored ``vp_grid`` files: 1 = every SPEC column as float64 (first wave),
#: 2 = lean (float32 chains and masses; :data:`GRID_DERIVED` computed by the views).
GRID_LAYOUT: Final = 2
#: ``vp_grid`` columns the DuckDB views compute from stored ones (SPEC §8 formulas and
#: ``rest_depth = bid_depth + ask_depth``); not in the files.
GRID_DERIVED: Final = ("rest_depth", "pressure", "vacuum", "pressure_now", "vacuum_now")
#: Floats stored in ``vp_grid`` files, as ``float32``: masses and the four chains.
GRID_STORED_FLOATS: Final = tuple(n for n in GRID_FLOAT_FIELDS if n not in GRID_DERIVED)

#: ``vp_snapshot`` columns of a build with a fitted model (``vpbatch build --model``).
MODEL_COLUMNS: Final = ("model_call", "model_probability")
#: Engine snapshot rows with the model's two columns (NaN probability: null call and
#: probability), what a build with ``--model`` hands the writer.
SCORED_SNAPSHOT_DTYPE: Final = np.dtype(
    [(name, SNAPSHOT_DTYPE.fields[name][0]) for name in SNAPSHOT_DTYPE.names or ()]  # type: ignore[index]
    + [("model_call", "i1"), ("model_probability", "<f8")])

_UTC_NS: Final = pa.timestamp("ns", tz="UTC")
_UINT64_MAX: Final = np.iinfo(np.uint64).max
_REGIME_TYPE: Final = pa.dictionary(pa.int8(), pa.string())
_NULLABLE_SNAPSHOT: Final = ("best_bid_price", "best_ask_price", "mid_price")


def _field(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def _metadata(table: str) -> dict[bytes, bytes]:
    return {b"vpbatch.table": table.encode(), b"vpbatch.manifest_version": b"%d" % MANIFEST_VERSION}


def snapshot_schema(model: bool = False) -> pa.Schema:
    """Arrow schema of ``vp_snapshot`` (column order of ``SNAPSHOT_DTYPE``; with ``model``,
    :data:`MODEL_COLUMNS` after them)."""
    fields = []
    for name in SNAPSHOT_DTYPE.names or ():
        kind = SNAPSHOT_DTYPE.fields[name][0]  # type: ignore[index]
        if name in ("ts_event", "ts_recv"):
            fields.append(_field(name, _UTC_NS))
        elif name == "regime":
            fields.append(_field(name, _REGIME_TYPE))
        elif kind.kind == "f":
            fields.append(_field(name, pa.float64(), nullable=name in _NULLABLE_SNAPSHOT))
        elif kind.kind == "b":
            fields.append(_field(name, pa.bool_()))
        else:
            fields.append(_field(name, pa.int64()))
    if model:
        fields += [_field("model_call", pa.int8(), nullable=True),
                   _field("model_probability", pa.float64(), nullable=True)]
    return pa.schema(fields, metadata=_metadata("vp_snapshot"))


def scored_snapshots(snapshots: np.ndarray, call: np.ndarray,
                     probability: np.ndarray) -> np.ndarray:
    """``SNAPSHOT_DTYPE`` rows with a model's call and probability (NaN: no score), as
    :data:`SCORED_SNAPSHOT_DTYPE` rows."""
    snapshots = check_dtype(snapshots, SNAPSHOT_DTYPE, "vp_snapshot")
    if not len(call) == len(probability) == len(snapshots):
        raise ValueError(f"vp_snapshot: {len(call)} calls and {len(probability)} "
                         f"probabilities for {len(snapshots)} states")
    out = np.empty(len(snapshots), SCORED_SNAPSHOT_DTYPE)
    for name in SNAPSHOT_DTYPE.names or ():
        out[name] = snapshots[name]
    out["model_call"] = call
    out["model_probability"] = probability
    return out


def grid_view_schema() -> pa.Schema:
    """Arrow schema of ``vp_grid`` as users see it (SPEC §11, the DuckDB view's columns)."""
    fields = [_field("event_id", pa.int64()), _field("k", pa.int32()),
              _field("price", pa.float64())]
    fields += [_field(name, pa.int64()) for name in ("bid_depth", "ask_depth", "rest_depth")]
    fields += [_field(name, pa.float64()) for name in GRID_FLOAT_FIELDS]
    fields += [_field("last_event_id", pa.int64()), _field("last_ts", _UTC_NS)]
    assert [f.name for f in fields] == list(GRID_DTYPE.names or ())
    return pa.schema(fields, metadata=_metadata("vp_grid"))


def grid_schema() -> pa.Schema:
    """Arrow schema of a stored ``vp_grid`` file (layout :data:`GRID_LAYOUT`).

    The view's columns minus :data:`GRID_DERIVED`, the stored floats as ``float32``, plus
    ``ts_event`` (the state's time, which the ``*_now`` forces need).
    """
    fields = [_field("event_id", pa.int64()), _field("k", pa.int32()),
              _field("ts_event", _UTC_NS), _field("price", pa.float64()),
              _field("bid_depth", pa.int64()), _field("ask_depth", pa.int64())]
    fields += [_field(name, pa.float32()) for name in GRID_STORED_FLOATS]
    fields += [_field("last_event_id", pa.int64()), _field("last_ts", _UTC_NS)]
    return pa.schema(fields, metadata={**_metadata("vp_grid"),
                                       b"vpbatch.grid_layout": b"%d" % GRID_LAYOUT})


def mbp_schema(levels: int = DEFAULT_LEVELS) -> pa.Schema:
    """Arrow schema of ``mbp`` with ``levels`` levels per side (Databento ``to_df()`` order)."""
    types = {"ts_recv": _UTC_NS, "ts_event": _UTC_NS, "action": pa.string(),
             "side": pa.string(), "price": pa.float64(), "size": pa.uint32(),
             "flags": pa.uint8(), "sequence": pa.uint32(), "event_id": pa.int64()}
    prefix_types = {"px": pa.float64(), "sz": pa.uint32(), "ct": pa.uint32()}
    fields = []
    for name in mbp_columns(levels):
        if name in types:
            nullable = name in ("ts_recv", "ts_event", "price")
            fields.append(_field(name, types[name], nullable=nullable))
        else:
            kind = name.split("_")[1]
            fields.append(_field(name, prefix_types[kind], nullable=kind == "px"))
    return pa.schema(fields, metadata=_metadata("mbp"))


def check_dtype(arr: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``arr`` flattened, or ``TypeError`` when it is not an array of ``dtype``."""
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
        got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise TypeError(f"{what}: expected an array of the {what} dtype, got {got}")
    return arr.reshape(-1)


def arrow_array(values: np.ndarray, type: pa.DataType,
                mask: np.ndarray | None = None) -> pa.Array:
    """``pa.array(values, type=type, mask=mask)`` for a numpy column, without importing pandas.

    ``pa.array`` asks pandas whether its argument is a Series, and so imports pandas: 0.4 s
    of every build's start. This wraps the column's buffer as an Arrow array of its own
    type (no copy; ``bool`` is bit-packed), with ``mask`` (True = null) as the validity
    bitmap, then casts (checked, as ``pa.array`` does) when ``type`` differs.
    """
    values = np.ascontiguousarray(values)
    n = len(values)
    if values.dtype == np.bool_:
        own: pa.DataType = pa.bool_()
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
    else:
        own = pa.from_numpy_dtype(values.dtype)
        if own.bit_width != 8 * values.dtype.itemsize:  # datetime64[D] is date32 on 8 bytes
            raise TypeError(f"arrow_array: {values.dtype} is not stored as {own} as it is")
        data = pa.py_buffer(values)
    validity, nulls = None, 0
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=np.bool_)
        nulls = int(np.count_nonzero(mask))
        if nulls:
            validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
    array = pa.Array.from_buffers(own, n, [validity, data], null_count=nulls)
    return array if own == type else array.cast(type)


def arrow_strings(names: Sequence[str]) -> pa.Array:
    """``pa.array(names, type=pa.string())`` without importing pandas (see :func:`arrow_array`)."""
    encoded = [name.encode() for name in names]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _col(arr: np.ndarray, name: str) -> np.ndarray:
    return np.ascontiguousarray(arr[name])


def _timestamps(values: np.ndarray, nullable: bool = False) -> pa.Array:
    ints = np.ascontiguousarray(values).view(np.int64)
    mask = (np.ascontiguousarray(values) == _UINT64_MAX) if nullable else None
    # A view, not a cast: the same int64 buffer, typed (a cast imports pyarrow.compute, 50 ms).
    return arrow_array(ints, pa.int64(), mask).view(_UTC_NS)


def snapshots_to_arrow(arr: np.ndarray) -> pa.Table:
    """``SNAPSHOT_DTYPE`` rows -> Arrow table with :func:`snapshot_schema`;
    ``SCORED_SNAPSHOT_DTYPE`` rows -> with ``snapshot_schema(model=True)`` (the call and the
    probability null where the probability is NaN)."""
    scored = isinstance(arr, np.ndarray) and arr.dtype == SCORED_SNAPSHOT_DTYPE
    arr = check_dtype(arr, SCORED_SNAPSHOT_DTYPE if scored else SNAPSHOT_DTYPE, "vp_snapshot")
    schema = snapshot_schema(model=scored)
    columns = []
    unscored = np.isnan(_col(arr, "model_probability")) if scored else None
    for field in schema:
        name = field.name
        if name in ("ts_event", "ts_recv"):
            columns.append(_timestamps(arr[name]))
        elif name == "regime":
            codes = _col(arr, name)
            if codes.size and (codes.min() < 0 or codes.max() >= len(REGIME_NAMES)):
                bad = codes[(codes < 0) | (codes >= len(REGIME_NAMES))][0]
                raise OutputError(f"vp_snapshot.regime: code {bad} is not one of "
                                  f"0..{len(REGIME_NAMES) - 1} ({', '.join(REGIME_NAMES)})")
            columns.append(pa.DictionaryArray.from_arrays(
                arrow_array(codes, pa.int8()), arrow_strings(REGIME_NAMES)))
        elif name in _NULLABLE_SNAPSHOT:
            col = _col(arr, name)
            columns.append(arrow_array(col, pa.float64(), np.isnan(col)))
        elif name in MODEL_COLUMNS:
            columns.append(arrow_array(_col(arr, name), field.type, unscored))
        else:
            columns.append(arrow_array(_col(arr, name), field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def grid_to_arrow(arr: np.ndarray, ts_event: np.ndarray) -> pa.Table:
    """``GRID_DTYPE`` rows -> Arrow table with :func:`grid_schema` (the stored layout).

    Parameters
    ----------
    arr : numpy.ndarray
        ``GRID_DTYPE`` rows as the engine emits them.
    ts_event : numpy.ndarray
        Each row's state time, UTC ns (``int64``, one per row; see :func:`state_times`).

    Raises
    ------
    OutputError
        A finite value too large for ``float32`` (never seen in practice: chains are rates
        smoothed over seconds).
    """
    from vpbatch.store.grid_columns import FLOAT_ORDER, split_grid  # numba: only when writing

    arr = check_dtype(arr, GRID_DTYPE, "vp_grid")
    if len(ts_event) != len(arr):
        raise ValueError(f"vp_grid: {len(ts_event)} state times for {len(arr)} rows")
    assert FLOAT_ORDER == GRID_STORED_FLOATS
    values, bad = split_grid(np.ascontiguousarray(arr))
    if bad >= 0:
        name = next(n for n in GRID_STORED_FLOATS if not np.isfinite(values[n][bad]))
        raise OutputError(f"vp_grid.{name}: {float(arr[name][bad])!r} at event_id "
                          f"{arr['event_id'][bad]} does not fit float32")
    values["ts_event"] = np.asarray(ts_event, dtype=np.int64)
    return stored_grid_table(values)


def stored_grid_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    """Stored ``vp_grid`` columns by name (``grid_columns`` order and types) -> Arrow table.

    No copies: each Arrow array wraps its numpy column.
    """
    schema = grid_schema()
    arrays = [_timestamps(columns[f.name]) if f.name in ("ts_event", "last_ts")
              else arrow_array(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def state_times(grid_event_ids: np.ndarray, state_ids: np.ndarray,
                state_ts: np.ndarray) -> np.ndarray:
    """Each grid row's state time: ``state_ts`` of the state with the row's ``event_id``.

    Raises
    ------
    OutputError
        A grid row whose ``event_id`` is not among ``state_ids`` (sorted ascending).
    """
    ids = np.asarray(grid_event_ids)
    pos = np.searchsorted(state_ids, ids)
    pos = np.minimum(pos, max(len(state_ids) - 1, 0))
    if len(state_ids) == 0 or not np.array_equal(state_ids[pos], ids):
        bad = ids[0] if len(state_ids) == 0 else ids[state_ids[pos] != ids][0]
        raise OutputError(f"vp_grid: event_id {bad} has no vp_snapshot row; write a batch's "
                          "snapshots before its grid")
    return np.asarray(state_ts)[pos]


def _chars(values: np.ndarray) -> pa.Array:
    """One-byte codes as strings; a 0 byte is the empty string (as numpy's ``S1`` reads it)."""
    codes = np.ascontiguousarray(values).view(np.uint8)
    present = codes != 0
    offsets = np.zeros(len(codes) + 1, dtype=np.int32)
    np.cumsum(present, out=offsets[1:])
    strings = pa.Array.from_buffers(pa.string(), len(codes), [
        None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(codes[present]))])
    strings.validate(full=True)  # UTF-8, as a cast from binary checks (without pyarrow.compute)
    return strings


def _prices(values: np.ndarray, empty: np.ndarray | None = None) -> pa.Array:
    values = np.ascontiguousarray(values)
    mask = values == UNDEF_PRICE
    if empty is not None:
        mask |= empty
    # Same expression as the engine's prices (fixed * 1e-9), so mbp and vp_* join exactly.
    return arrow_array(values * PRICE_SCALE, pa.float64(), mask)


def mbp_to_arrow(arr: np.ndarray) -> pa.Table:
    """MBP rows (:func:`~vpbatch.book.mbp_layout.mbp_dtype` or its kernel view) -> Arrow table."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"mbp: expected an MBP record array, got {type(arr).__name__}")
    levels = levels_of(arr.dtype)
    flat = arr.reshape(-1).view(mbp_dtype(levels))
    schema = mbp_schema(levels)
    data: dict[str, pa.Array] = {
        "ts_recv": _timestamps(flat["ts_recv"], nullable=True),
        "ts_event": _timestamps(flat["ts_event"], nullable=True),
        "action": _chars(flat["action"]),
        "side": _chars(flat["side"]),
        "price": _prices(flat["price"]),
    }
    for name in ("size", "flags", "sequence", "event_id"):
        data[name] = arrow_array(_col(flat, name), schema.field(name).type)
    for i in range(levels):
        for side in ("bid", "ask"):
            size = _col(flat, level_name(f"{side}_sz", i))
            px = level_name(f"{side}_px", i)
            data[px] = _prices(flat[px], empty=size == 0)
            for prefix in (f"{side}_sz", f"{side}_ct"):
                name = level_name(prefix, i)
                data[name] = arrow_array(_col(flat, name), pa.uint32())
    assert all(level_name(p, 0) in data for p in LEVEL_COLUMN_PREFIXES)
    return pa.Table.from_arrays([data[f.name] for f in schema], schema=schema)

