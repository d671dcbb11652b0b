"""Stored rows -> states, shared by the lake and raw sources and by the lake cache.

:func:`to_states` pairs each ``vp_snapshot`` row with the encoded grid frame of its 2K+1
``vp_grid`` rows (view columns); :class:`RowTaker` and :func:`row_group_start` read a Parquet
file in exact slices of rows from any row (one row group decoded at a time at most).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vpbatch.errors import InputError
from vpbatch.serve import protocol
from vpbatch.serve.protocol import State

#: States read per batch from the lake (a batch is the unit of work between control checks,
#: and the unit the lake cache decodes and shares).
LAKE_BATCH_STATES: Final = 256


def snapshot_rows(table: pa.Table) -> list[dict[str, Any]]:
    """``vp_snapshot`` rows as dicts: times as int ns, regime as text, null prices as None."""
    columns: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        elif pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        columns[name] = col.to_pylist()
    return [{name: values[i] for name, values in columns.items()}
            for i in range(table.num_rows)]


def to_states(snapshots: pa.Table, grid: pa.Table, rows: int) -> list[State]:
    """Pair each snapshot row with the grid frame of its ``rows`` grid rows (view columns)."""
    if grid.num_rows != snapshots.num_rows * rows:
        raise InputError(f"vp_grid: {grid.num_rows} rows for {snapshots.num_rows} states "
                         f"(expected {rows} per state)")
    grid = grid.combine_chunks()
    ids = grid.column("event_id").to_numpy()[::rows]
    k = grid.column("k").to_numpy().reshape(-1, rows) if grid.num_rows else None
    if k is not None and not (k == np.arange(rows) - rows // 2).all():
        raise InputError("vp_grid: a state's rows are not k = -K..K in order")
    frames = protocol.grid_frames(grid, rows)
    states = []
    for i, snap in enumerate(snapshot_rows(snapshots)):
        if ids[i] != snap["event_id"]:
            raise InputError(f"vp_grid: rows of event {ids[i]} where vp_snapshot has event "
                             f"{snap['event_id']}")
        states.append(State(snap["ts_event"], snap["event_id"], snap, frames[i]))
    return states


class RowTaker:
    """Exactly ``n`` rows at a time from a stream of record batches."""

    def __init__(self, batches: Iterator[pa.RecordBatch], skip: int = 0) -> None:
        self._batches = batches
        self._held: list[pa.RecordBatch] = []
        self._rows = 0
        self._skip = skip

    def close(self) -> None:
        """Close the batch iterator (a generator's ``finally`` runs now)."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
        self._held = []

    def take(self, n: int) -> pa.Table | None:
        while self._rows < n + self._skip:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._held.append(batch)
            self._rows += batch.num_rows
        if not self._held:
            return None
        table = pa.Table.from_batches(self._held)
        if self._skip:
            table = table.slice(min(self._skip, table.num_rows))
            self._rows -= min(self._skip, self._rows)
            self._skip = 0
        head, rest = table.slice(0, n), table.slice(n)
        self._held = rest.to_batches() if rest.num_rows else []
        self._rows = rest.num_rows
        return head if head.num_rows else None


def row_group_start(meta: pq.FileMetaData, row: int) -> tuple[int, int]:
    """``(row group, rows to skip in it)`` of a file row index."""
    offset = 0
    for i in range(meta.num_row_groups):
        rows = meta.row_group(i).num_rows
        if row < offset + rows:
            return i, row - offset
        offset += rows
    return meta.num_row_groups, 0
