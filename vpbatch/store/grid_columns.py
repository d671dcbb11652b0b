"""Engine grid rows (``GRID_DTYPE``, 212-byte records) -> the stored columns of
:func:`vpbatch.store.schema.grid_schema` (floats narrowed to float32), compiled.

A build hands each batch here while it is still in the CPU's cache; a compiled pass per field
then writes each column in order (see ``_split``). Kept apart from :mod:`vpbatch.store.schema`
so that reading the lake never imports numba.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from vpbatch.book.dtypes import GRID_DTYPE
from vpbatch.errors import OutputError

#: float32 stored columns, in :data:`vpbatch.store.schema.GRID_STORED_FLOATS` order.
FLOAT_ORDER = ("add_mass", "pull_mass", "fill_mass", "v_add", "v_pull", "v_fill", "v_rest_depth",
               "a_add", "a_pull", "a_fill", "a_rest_depth", "j_add", "j_pull", "j_fill",
               "j_rest_depth")
#: int64 stored columns (``k`` is int32, ``price`` float64, both apart).
INT_ORDER = ("event_id", "bid_depth", "ask_depth", "last_event_id", "last_ts")
_F32_MAX = float(np.finfo(np.float32).max)


@njit(cache=True, nogil=True)
def _copy(src: np.ndarray, dst: np.ndarray, at: int) -> None:
    for i in range(src.shape[0]):
        dst[at + i] = src[i]


@njit(cache=True, nogil=True)
def _narrow(src: np.ndarray, dst: np.ndarray, at: int, f32_max: float) -> int:
    """float64 field -> float32 column from ``at``; first row too large for float32, else -1.

    The check reads the narrowed column (contiguous, one compare a value) and looks at the
    field again only where a value came out as inf or float32's largest.
    """
    n = src.shape[0]
    for i in range(n):
        dst[at + i] = np.float32(src[i])
    edge = np.float32(f32_max)
    near = False
    for i in range(n):
        near |= abs(dst[at + i]) >= edge
    if near:
        for i in range(n):
            if f32_max < abs(src[i]) < np.inf:
                return i
    return -1


@njit(cache=True, nogil=True)
def _first(bad: int, row: int) -> int:
    return row if row >= 0 and (bad < 0 or row < bad) else bad


@njit(cache=True, nogil=True)
def _split(rows: Any, ints: np.ndarray, k: np.ndarray, price: np.ndarray,
           floats: np.ndarray, f32_max: float, at: int) -> int:
    """Fill the column arrays from index ``at``; first row too large for float32, else -1.

    ``rows`` are ``GRID_DTYPE`` records (``Any``: numba reads their fields as attributes,
    which mypy does not know); the field tuples follow ``INT_ORDER`` and ``FLOAT_ORDER``. A
    field at a time: each pass reads one field of the (cache-resident) rows and writes one
    column in order; row by row, the same work wrote 23 columns at once and took 3x as long.
    """
    int_fields = (rows.event_id, rows.bid_depth, rows.ask_depth, rows.last_event_id,
                  rows.last_ts)
    float_fields = (rows.add_mass, rows.pull_mass, rows.fill_mass, rows.v_add, rows.v_pull,
                    rows.v_fill, rows.v_rest_depth, rows.a_add, rows.a_pull, rows.a_fill,
                    rows.a_rest_depth, rows.j_add, rows.j_pull, rows.j_fill, rows.j_rest_depth)
    for j in range(len(int_fields)):
        _copy(int_fields[j], ints[j], at)
    _copy(rows.k, k, at)
    _copy(rows.price, price, at)
    bad = -1
    for j in range(len(float_fields)):
        bad = _first(bad, _narrow(float_fields[j], floats[j], at, f32_max))
    return bad


@njit(cache=True, nogil=True)
def _state_times(ts: np.ndarray, at: int, n: int, snap_ts: np.ndarray, first: int,
                 per_state: int) -> None:
    """``ts[at:at+n]``: the time of each row's state (rows ``first..`` of the batch)."""
    for i in range(n):
        ts[at + i] = snap_ts[(first + i) // per_state]


class _Columns:
    """Preallocated stored columns of one row group."""

    def __init__(self, n: int) -> None:
        self.ints = np.empty((len(INT_ORDER), n), dtype=np.int64)
        self.k = np.empty(n, dtype=np.int32)
        self.price = np.empty(n, dtype=np.float64)
        self.floats = np.empty((len(FLOAT_ORDER), n), dtype=np.float32)
        self.ts = np.empty(n, dtype=np.int64)

    def named(self, n: int) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = {
            name: self.ints[i, :n] for i, name in enumerate(INT_ORDER)}
        columns.update({name: self.floats[i, :n] for i, name in enumerate(FLOAT_ORDER)})
        columns["k"] = self.k[:n]
        columns["price"] = self.price[:n]
        columns["ts_event"] = self.ts[:n]
        return columns


class StoredGridBuffer:
    """Engine grid rows -> stored columns (with each row's state time), a row group at a time.

    A build's engine hands each batch's rows here while they are still in its cache-sized
    buffer (``Engine.send_grid_to``); ``on_group`` receives every full group of
    ``group_rows`` rows and, from :meth:`flush`, the last partial one: the same row groups
    the writer's own buffering makes, so the file is the same.
    """

    def __init__(self, group_rows: int,
                 on_group: Callable[[dict[str, np.ndarray]], None]) -> None:
        self.group_rows = group_rows
        self.on_group = on_group
        self._cols: _Columns | None = None
        self._filled = 0

    def add(self, snapshots: np.ndarray, rows: np.ndarray) -> None:
        """Convert ``rows`` (the 2K+1 rows of each of ``snapshots``, in order)."""
        n = rows.shape[0]
        if n == 0:
            return
        per_state = n // len(snapshots)
        snap_ts = np.ascontiguousarray(snapshots["ts_event"])
        pos = 0
        while pos < n:
            if self._cols is None:
                self._cols = _Columns(self.group_rows)
            take = min(self.group_rows - self._filled, n - pos)
            piece = rows[pos:pos + take]
            bad = _split(piece, self._cols.ints, self._cols.k, self._cols.price,
                         self._cols.floats, _F32_MAX, self._filled)
            if bad >= 0:
                name = next(f for f in FLOAT_ORDER if _F32_MAX < abs(piece[f][bad]) < np.inf)
                raise OutputError(f"vp_grid.{name}: {float(piece[name][bad])!r} at event_id "
                                  f"{piece['event_id'][bad]} does not fit float32")
            _state_times(self._cols.ts, self._filled, take, snap_ts, pos, per_state)
            self._filled += take
            pos += take
            if self._filled == self.group_rows:
                self._emit()

    def flush(self) -> None:
        """Hand over the last, partial group (if any)."""
        if self._filled:
            self._emit()

    def _emit(self) -> None:
        assert self._cols is not None
        columns, self._cols, filled = self._cols, None, self._filled
        self._filled = 0
        self.on_group(columns.named(filled))


def load_kernels() -> None:
    """Compile (into numba's cache) or load this module's kernels for the engine's own row
    buffers, exactly as a build calls them: ``make install`` runs it (``python -m cli.warm``),
    so the first build does not compile them (~0.5 s)."""
    from vpbatch.book.engine import Engine  # the engine only when asked: reading needs none
    from vpbatch.config import EngineConfig

    engine = Engine(EngineConfig(), bucket=1)
    out = engine._allocate_output(1)
    rows = 2 * engine.params.K + 1
    StoredGridBuffer(rows, lambda columns: None).add(out.snap[:1], out.grid[:rows])
    # and read-only rows, as the live viewer converts each state from its bytes
    split_grid(np.frombuffer(out.grid[:rows].tobytes(), GRID_DTYPE))


def split_grid(rows: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
    """Stored columns of ``GRID_DTYPE`` rows by name, and the first float32 overflow row (-1)."""
    assert rows.dtype == GRID_DTYPE
    n = rows.shape[0]
    ints = np.empty((len(INT_ORDER), n), dtype=np.int64)
    k = np.empty(n, dtype=np.int32)
    price = np.empty(n, dtype=np.float64)
    floats = np.empty((len(FLOAT_ORDER), n), dtype=np.float32)
    bad = _split(rows, ints, k, price, floats, _F32_MAX, 0)
    columns = {name: ints[i] for i, name in enumerate(INT_ORDER)}
    columns.update({name: floats[i] for i, name in enumerate(FLOAT_ORDER)})
    columns["k"] = k
    columns["price"] = price
    return columns, int(bad)
