"""The ``vp_grid`` view's rows without DuckDB: :func:`vpbatch.sql.grid_select` in numpy.

DuckDB costs ~15-30 ms per call whatever the row count, too much for a live frame; the same
columns here cost ~0.06 ms for one state's 2K+1 rows (the forces in one compiled ``nogil``
call, :func:`~vpbatch.serve.view_kernel.grid_forces`). Each formula is the SQL's, operation
for operation, so the results are bit for bit DuckDB's (tested against
:class:`~vpbatch.serve.sources.GridView` on engine states and on random rows,
``tests/serve/test_view_numpy.py``):

* ``+ - * /`` in the SQL's order (left to right), on float64 after widening the stored float32
  chains exactly (``CAST(x AS DOUBLE)``); a constant ``1.0``/``0.0``/``50.0`` is a double;
* ``exp`` is numba's ``math.exp``: like DuckDB it calls the C library's ``exp`` (numpy's own
  SIMD ``exp`` differs from it in the last bit for ~5 % of the arguments);
* ``x > c`` is DuckDB's comparison, in which NaN is greater than every number: ``vp_pos(NaN)``
  is NaN and ``vp_alpha`` of a NaN ratio is 1;
* ``CASE WHEN c THEN a ELSE b END`` is an ``if`` (a null condition takes ``ELSE``);
* int64 overflow in ``bid_depth + ask_depth`` or in the age's ``ts_event - last_ts`` is an
  error, as DuckDB's checked arithmetic makes it.

A stored column with a null is refused (:class:`ValueError`, as ``GridView``'s cast to the
view's non-nullable schema refuses it), except ``ts_event``: the row's age is then null and its
``*_now`` forces are ``pressure``/``vacuum``, as the SQL gives.

:class:`NumpyGridView` has :class:`~vpbatch.serve.sources.GridView`'s interface (stored Arrow
rows in, view rows out). :class:`StateConverter` takes one engine state (``SNAPSHOT_DTYPE`` row
and ``GRID_DTYPE`` rows) straight to a :class:`~vpbatch.serve.protocol.State`, skipping the
Arrow tables: the same snapshot values as ``snapshot_rows(snapshots_to_arrow(...))`` and the
same frame bytes as :func:`~vpbatch.serve.protocol.grid_frames` (its IPC header, checked once
against pyarrow's writer, reused around each state's column bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pyarrow as pa

from vpbatch import sql
from vpbatch.book.dtypes import GRID_DTYPE, REGIME_NAMES, SNAPSHOT_DTYPE, read_only
from vpbatch.config import EngineConfig
from vpbatch.errors import InputError, OutputError
from vpbatch.serve import protocol
from vpbatch.serve.protocol import State
from vpbatch.serve.view_kernel import (
    PARAM_ORDER,
    PRESSURE,
    PRESSURE_NOW,
    VACUUM,
    VACUUM_NOW,
    grid_forces,
)
from vpbatch.serve.view_kernel import param_vector as _param_vector
from vpbatch.store.schema import (
    GRID_LAYOUT,
    GRID_STORED_FLOATS,
    grid_view_schema,
    snapshot_schema,
)

#: The view's columns as streamed (``grid_view_schema`` without metadata), in frame order.
VIEW_SCHEMA: Final = grid_view_schema().remove_metadata()
_VIEW_NAMES: Final = tuple(VIEW_SCHEMA.names)
#: Stored columns the view passes through unchanged.
PASSED: Final = ("event_id", "k", "price", "bid_depth", "ask_depth", "last_event_id", "last_ts")
#: ``vp_snapshot`` columns whose NaN is a null (an empty side of the book).
_NULLABLE_SNAPSHOT: Final = tuple(f.name for f in snapshot_schema() if f.nullable)
_SNAPSHOT_NAMES: Final = tuple(SNAPSHOT_DTYPE.names or ())
#: The stored chains the forces read, in :func:`~vpbatch.serve.view_kernel.grid_forces`' order.
FORCE_CHAINS: Final = ("v_add", "v_pull", "v_fill", "v_rest_depth", "a_add", "a_pull")


# --------------------------------------------------------------------------------------------
# GRID_LEAN_SQL


def _checked(total: np.ndarray, a: np.ndarray | int, b: np.ndarray, what: str,
             subtract: bool) -> np.ndarray:
    """``total`` (``a + b`` or ``a - b``, wrapped) or an error where int64 overflowed."""
    if subtract:
        bad = ((np.asarray(a) ^ b) & (np.asarray(a) ^ total)) < 0
    else:
        bad = ((np.asarray(a) ^ total) & (b ^ total)) < 0
    if bad.any():
        raise InputError(f"vp_grid: {what} overflows int64 at row {int(np.argmax(bad))}")
    return total


def _grid_forces(chains: np.ndarray, last_ts: np.ndarray, ns: np.ndarray,
                 params: np.ndarray, forces: np.ndarray) -> int:
    """:func:`grid_forces` with the times always read-only (:func:`read_only`); ``chains``
    is a fresh stack: writable, float32 as stored."""
    return int(grid_forces(chains, read_only(last_ts, np.int64), read_only(ns, np.int64),
                           params, forces))


def load_kernels() -> None:
    """Compile (into numba's cache) or load the view's force kernel as :func:`view_columns`
    calls it: ``make install`` runs it (``python -m cli.warm``), so that the first frames of a
    ``vpbatch serve`` stream do not wait for numba."""
    n = 2
    _grid_forces(np.zeros((len(FORCE_CHAINS), n), np.float32), np.zeros(n, np.int64),
                 np.zeros(1, np.int64), np.ones(len(PARAM_ORDER)), np.empty((4, n)))


def view_columns(stored: Mapping[str, np.ndarray], params: Mapping[str, float],
                 ts_event: np.ndarray | int, ts_valid: np.ndarray | None = None,
                 ) -> dict[str, np.ndarray]:
    """The columns ``GRID_LEAN_SQL`` computes from one group of stored rows.

    Parameters
    ----------
    stored : mapping
        Stored columns by name (:func:`vpbatch.store.schema.grid_schema`'s layout):
        ``bid_depth``, ``ask_depth`` and ``last_ts`` (UTC ns) as int64, the
        :data:`~vpbatch.store.schema.GRID_STORED_FLOATS` as float32 (or float64).
    params : mapping
        The build's parameters (:func:`vpbatch.sql.grid_parameters`).
    ts_event : numpy.ndarray or int
        Each row's state time, UTC ns (an int: the same for every row).
    ts_valid : numpy.ndarray, optional
        False where ``ts_event`` is null.

    Returns
    -------
    dict
        ``rest_depth`` (int64), every stored float widened to float64, ``pressure``,
        ``vacuum``, ``pressure_now``, ``vacuum_now`` (float64).
    """
    bid, ask = stored["bid_depth"], stored["ask_depth"]
    last_ts = stored["last_ts"]
    with np.errstate(all="ignore"):
        rest_depth = _checked(bid + ask, bid, ask, "bid_depth + ask_depth", False)
    ns = np.asarray(ts_event, dtype=np.int64).reshape(-1)
    if ts_valid is not None:
        ns = np.where(ts_valid, ns, last_ts)  # a null age: not > 0, never overflows
    chains = np.stack([stored[name] for name in FORCE_CHAINS])
    forces = np.empty((4, len(last_ts)), dtype=np.float64)
    bad = _grid_forces(chains, last_ts, ns, _param_vector(params), forces)
    if bad >= 0:
        raise InputError(f"vp_grid: ts_event - last_ts overflows int64 at row {bad}")
    out = {"rest_depth": rest_depth}
    out.update((name, np.asarray(stored[name], dtype=np.float64)) for name in GRID_STORED_FLOATS)
    out["pressure"], out["vacuum"] = forces[PRESSURE], forces[VACUUM]
    out["pressure_now"], out["vacuum_now"] = forces[PRESSURE_NOW], forces[VACUUM_NOW]
    return out


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A stored column as numpy (timestamps as int64 ns); :class:`ValueError` on a null."""
    col = table.column(name)
    if col.null_count:
        raise ValueError(f"Casting field '{name}' with null values to non-nullable")
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return col.to_numpy()


class NumpyGridView:
    """Stored ``vp_grid`` rows -> the view's columns, as :class:`GridView` (same interface,
    same tables) but in numpy: ~0.1 ms a state instead of ~20 ms."""

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self.layout, self.params = sql.grid_parameters(manifest)
        if self.layout not in (1, GRID_LAYOUT):
            raise InputError(f"vp_grid: file layout {self.layout} is newer than this vpbatch "
                             f"(knows 1-{GRID_LAYOUT}); upgrade vpbatch")
        self.schema = VIEW_SCHEMA

    def __call__(self, stored: pa.Table) -> pa.Table:
        if self.layout == 1:  # every view column stored
            for name in self.schema.names:
                if stored.column(name).null_count:
                    raise ValueError(f"Casting field '{name}' with null values to non-nullable")
            return stored.select(self.schema.names).cast(self.schema)
        ts = stored.column("ts_event")
        ts_valid = None
        if ts.null_count:
            ts_valid = ts.is_valid().to_numpy(zero_copy_only=False)
            ts = ts.fill_null(pa.scalar(0, ts.type))
        floats = {name: _column(stored, name) for name in
                  ("bid_depth", "ask_depth", "last_ts", *GRID_STORED_FLOATS)}
        derived = view_columns(floats, self.params,
                               ts.cast(pa.int64()).to_numpy(), ts_valid)
        arrays = []
        for field in self.schema:
            if field.name in PASSED:
                col = stored.column(field.name)
                if col.null_count:
                    raise ValueError(f"Casting field '{field.name}' with null values to "
                                     "non-nullable")
                arrays.append(col if col.type == field.type else col.cast(field.type))
            else:
                arrays.append(pa.chunked_array([derived[field.name]], type=field.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def close(self) -> None:
        """Nothing to release (``GridView``'s interface)."""


# --------------------------------------------------------------------------------------------
# One engine state -> one State (the live path)


def snapshot_values(snapshot: np.ndarray) -> dict[str, Any]:
    """One ``SNAPSHOT_DTYPE`` row as :func:`~vpbatch.serve.rows.snapshot_rows` gives it
    after :func:`~vpbatch.store.schema.snapshots_to_arrow`: Python numbers, the regime's name,
    None for a NaN price of an empty side of the book."""
    values = dict(zip(_SNAPSHOT_NAMES, snapshot.reshape(-1)[0].item(), strict=True))
    for name in _NULLABLE_SNAPSHOT:
        if values[name] != values[name]:
            values[name] = None
    code = values["regime"]
    if not 0 <= code < len(REGIME_NAMES):
        raise OutputError(f"vp_snapshot.regime: code {code} is not one of "
                          f"0..{len(REGIME_NAMES) - 1} ({', '.join(REGIME_NAMES)})")
    values["regime"] = REGIME_NAMES[code]
    return values


class FrameEncoder:
    """The view's columns of one state -> its grid frame, the bytes of
    :func:`~vpbatch.serve.protocol.grid_frames`.

    Every state's frame has the same IPC header and end (same schema, row count, no nulls,
    buffer sizes): the first frame is pyarrow's, and its header and end, once checked to
    rebuild it around the state's column bytes (each padded to 8), frame every later state.
    Should they not rebuild it, every frame is pyarrow's.
    """

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._head: bytes | None = None
        self._tail = b""
        self._exact = True

    def __call__(self, columns: list[np.ndarray]) -> bytes:
        """``columns``: the 2K+1 values of each :data:`VIEW_SCHEMA` column, in its order and
        types (int64 ns for ``last_ts``)."""
        parts = []
        for col in columns:
            data = col.tobytes()
            parts.append(data)
            if len(data) % 8:
                parts.append(bytes(-len(data) % 8))
        body = b"".join(parts)
        if self._head is not None:
            return self._head + body + self._tail
        frame = protocol.grid_frames(self.table(columns), self.rows)[0]
        if self._exact:
            head, tail = frame[:len(frame) - 8 - len(body)], frame[len(frame) - 8:]
            if head + body + tail == frame:
                self._head, self._tail = head, tail
            else:  # pragma: no cover - pyarrow changed its IPC layout
                self._exact = False
        return frame

    @staticmethod
    def table(columns: list[np.ndarray]) -> pa.Table:
        """The view's columns as an Arrow table."""
        return pa.Table.from_arrays([pa.array(col, type=field.type) for col, field in
                                     zip(columns, VIEW_SCHEMA, strict=True)], schema=VIEW_SCHEMA)


class StateConverter:
    """One engine state (a ``SNAPSHOT_DTYPE`` row and its 2K+1 ``GRID_DTYPE`` rows) -> the
    :class:`~vpbatch.serve.protocol.State` the raw source makes of it (``state_times``,
    ``grid_to_arrow``, ``GridView``, ``to_states``), with the same checks and errors, in
    ~0.2 ms at K=50 instead of ~20 ms.
    """

    def __init__(self, config: EngineConfig) -> None:
        from vpbatch.store.grid_columns import split_grid  # numba: only for engine rows

        self._split = split_grid
        self.layout, self.params = sql.grid_parameters(
            {"config": config.to_dict(), "writer": {"grid_layout": GRID_LAYOUT}})
        self.rows = 2 * config.K + 1
        self._k = np.arange(self.rows, dtype=np.int32) - config.K
        self.encode = FrameEncoder(self.rows)

    def warm(self) -> None:
        """Convert a blank state once (numba's dispatch, the frame header), so that the first
        real state is as quick as the others."""
        grid = np.zeros(self.rows, GRID_DTYPE)
        grid["k"] = self._k
        self(np.zeros(1, SNAPSHOT_DTYPE), np.frombuffer(grid.tobytes(), GRID_DTYPE))

    def __call__(self, snapshot: np.ndarray, grid: np.ndarray) -> State:
        if grid.dtype != GRID_DTYPE or snapshot.dtype != SNAPSHOT_DTYPE:
            raise TypeError("a SNAPSHOT_DTYPE row and GRID_DTYPE rows expected")
        if grid.shape[0] != self.rows or snapshot.size != 1:
            raise InputError(f"vp_grid: {grid.shape[0]} rows for {snapshot.size} states "
                             f"(expected {self.rows} per state)")
        stored, bad = self._split(np.ascontiguousarray(grid))
        if bad >= 0:
            name = next(n for n in GRID_STORED_FLOATS if not np.isfinite(stored[n][bad]))
            raise OutputError(f"vp_grid.{name}: {float(grid[name][bad])!r} at event_id "
                              f"{grid['event_id'][bad]} does not fit float32")
        snap = snapshot_values(snapshot)
        event_id = snap["event_id"]
        ids = stored["event_id"]
        if not (ids == event_id).all():
            bad_id = ids[ids != event_id][0]
            raise OutputError(f"vp_grid: event_id {bad_id} has no vp_snapshot row; write a "
                              "batch's snapshots before its grid")
        if not (stored["k"] == self._k).all():
            raise InputError("vp_grid: a state's rows are not k = -K..K in order")
        derived = view_columns(stored, self.params, snap["ts_event"])
        frame = self.encode([stored[name] if name in PASSED else derived[name]
                             for name in _VIEW_NAMES])
        return State(snap["ts_event"], event_id, snap, frame)
