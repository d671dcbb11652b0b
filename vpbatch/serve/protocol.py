"""The websocket wire format of ``vpbatch serve``, in one place (documented in docs/stream.md).

Compatible with the system we replace: a text ``runtime_config`` frame, then per state a text
``grid_update`` frame followed by one binary frame (an Arrow IPC stream of the state's 2K+1
``vp_grid`` rows, k ascending), and finally ``end`` or ``error``. The page
(``static/js/protocol.js``) and the tests read the same field names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from vpbatch.book.dtypes import PRICE_SCALE

#: Bumped when a frame changes incompatibly.
PROTOCOL_VERSION: Final = 1
#: Websocket route (the old system's path).
STREAM_PATH: Final = "/v1/vacuum-pressure/stream"
#: Close code of a stream refused for bad parameters, missing data or a bad token.
CLOSE_POLICY: Final = 1008
#: Close code after ``end``.
CLOSE_NORMAL: Final = 1000
#: Close code of a stream that failed on the server (an error frame says why).
CLOSE_INTERNAL_ERROR: Final = 1011
#: Snapshot counters that sum over the states a throttle bin or a slow client skips.
ADDITIVE_FIELDS: Final = ("n_records", "buy_volume", "sell_volume")
#: ``vp_snapshot`` columns copied into ``grid_update`` as they are.
SNAPSHOT_FIELDS: Final = (
    "spot_price", "best_bid_price", "best_ask_price", "best_bid_size", "best_ask_size",
    "crossed", "n_records", "buy_volume", "sell_volume", "regime", "regime_score",
    "regime_intensity",
)
#: A fitted model's call (+1 up, -1 down, 0 inside its band) and probability of up (both null
#: without a score), when the day was built, or the live session runs, with ``--model``
#: (``vp_snapshot`` has them then; the viewer draws a second band).
MODEL_FIELDS: Final = ("model_call", "model_probability")
_FIXED: Final = round(1 / PRICE_SCALE)


@dataclass
class State:
    """One emitted state ready to send: snapshot values and its encoded grid frame."""

    ts_ns: int
    event_id: int
    snapshot: dict[str, Any]
    grid: bytes


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def price_int(price: float | None) -> str | None:
    """Currency price -> Databento fixed-point integer as a string (``None`` stays ``None``)."""
    if price is None or not math.isfinite(price):
        return None
    return str(round(price * _FIXED))


def dumps(frame: Mapping[str, Any]) -> str:
    """Compact JSON; NaN/inf never reach the wire (they become null)."""
    return json.dumps({k: _finite(v) for k, v in frame.items()}, separators=(",", ":"),
                      allow_nan=False)


def runtime_config(fields: Mapping[str, Any]) -> str:
    """First frame of every stream: product, grid geometry, source and data span."""
    return dumps({"type": "runtime_config", "protocol_version": PROTOCOL_VERSION,
                  "price_scale": PRICE_SCALE, "stream_format": "dense_grid", **fields})


def grid_update(state: State, *, dropped: int, dropped_total: int) -> str:
    """Per-state text frame; the binary grid frame follows it."""
    return grid_update_head(state) + grid_update_tail(dropped, dropped_total)


def grid_update_head(state: State) -> str:
    """``grid_update`` up to its per-client counters: encoded once for every viewer of a live
    feed, then completed by :func:`grid_update_tail` (same bytes as :func:`grid_update`)."""
    snap = state.snapshot
    frame: dict[str, Any] = {
        "type": "grid_update",
        "ts_ns": str(state.ts_ns),
        "ts_recv_ns": str(snap["ts_recv"]),
        "event_id": state.event_id,
        "mid_price": snap["mid_price"],
        "book_valid": snap["book_valid"],
        "spot_ref_price_int": price_int(snap["spot_price"]),
        "best_bid_price_int": price_int(snap["best_bid_price"]),
        "best_ask_price_int": price_int(snap["best_ask_price"]),
    }
    frame.update({name: snap[name] for name in SNAPSHOT_FIELDS})
    for name in MODEL_FIELDS:  # a build with --model (SPEC §15): the second band
        if name in snap:
            frame[name] = snap[name]
    return dumps(frame)[:-1]


def grid_update_tail(dropped: int, dropped_total: int) -> str:
    """The client's own ``dropped`` counters that close a :func:`grid_update_head`."""
    return f',"dropped":{int(dropped)},"dropped_total":{int(dropped_total)}}}'


def live_status(fields: Mapping[str, Any]) -> str:
    """A live session's status (``source=live`` streams): state, counters, gaps, latency."""
    return dumps({"type": "live_status", **fields})


def end(**fields: Any) -> str:
    """Last frame of a stream that ran out of data (or reached ``end_time``)."""
    return dumps({"type": "end", **fields})


def error(message: str) -> str:
    """Sent before closing with :data:`CLOSE_POLICY`."""
    return dumps({"type": "error", "message": message})


def status(**fields: Any) -> str:
    """Answer to a control message: the stream's playback state now."""
    return dumps({"type": "status", **fields})


def split_states(table: pa.Table, rows: int) -> list[pa.RecordBatch]:
    """Cut grid rows into one record batch of ``rows`` rows per state.

    Fixed-width columns without nulls are cut with :meth:`pyarrow.Buffer.slice`, so every
    piece owns a buffer of exactly its size: an ``Array.slice`` would keep its parent's buffer
    and the IPC writer would pad with the parent's neighbouring bytes, so equal rows could
    give unequal frames depending on where a source happened to cut its batches.
    """
    schema = table.schema.remove_metadata()
    if table.num_rows == 0:
        return []
    columns = table.combine_chunks().to_batches()[0].columns
    widths: list[int | None] = []
    for arr in columns:
        try:
            bits = arr.type.bit_width
        except ValueError:
            bits = 0
        widths.append(bits // 8 if bits % 8 == 0 and bits and arr.null_count == 0 else None)
    out = []
    for i in range(table.num_rows // rows):
        arrays = []
        for arr, width in zip(columns, widths, strict=True):
            if width is None:  # bool, strings or nulls: a copy (take) owns its buffers too
                arrays.append(arr.slice(i * rows, rows).take(pa.array(range(rows), pa.int32())))
            else:
                data = arr.buffers()[1].slice((arr.offset + i * rows) * width, rows * width)
                arrays.append(pa.Array.from_buffers(arr.type, rows, [None, data]))
        out.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    return out


def grid_frame(batch: pa.RecordBatch) -> bytes:
    """One state's grid rows (from :func:`split_states`) as a self-contained Arrow IPC stream
    (schema + one batch); the schema carries no key-value metadata."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _fixed_widths(table: pa.Table) -> list[int] | None:
    """Byte width of every column, or None unless all are fixed-width without nulls."""
    widths = []
    for col in table.columns:
        try:
            bits = col.type.bit_width
        except ValueError:
            return None
        if bits % 8 or not bits or col.null_count:
            return None
        widths.append(bits // 8)
    return widths


def grid_frames(table: pa.Table, rows: int) -> list[bytes]:
    """The grid frame of every state in ``table`` (``rows`` rows each, in order).

    Every frame has the same schema and record-batch header (same row count, no nulls, same
    buffer sizes), so pyarrow writes the first frame and the others reuse its bytes around
    their own body: each column's values, padded to 8 bytes, in column order (Arrow's IPC
    layout). The first frame is rebuilt that way and compared with pyarrow's before any is
    used; columns with nulls or of variable width, or any mismatch, take pyarrow's writer for
    every frame. Both paths give the same bytes (tested).
    """
    n = table.num_rows // rows
    if n == 0:
        return []
    widths = _fixed_widths(table)
    first = grid_frame(split_states(table.slice(0, rows), rows)[0])
    if widths is None:
        return [first] + [grid_frame(b) for b in split_states(table.slice(rows), rows)]
    sizes = [rows * w for w in widths]
    padded = [-(-size // 8) * 8 for size in sizes]
    body_len = sum(padded)
    body = np.zeros((n, body_len), dtype=np.uint8)
    at = 0
    for col, size, pad in zip(table.columns, sizes, padded, strict=True):
        values = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        flat = np.frombuffer(values.buffers()[1], dtype=np.uint8,
                             count=size * n, offset=values.offset * (size // rows))
        body[:, at:at + size] = flat.reshape(n, size)
        at += pad
    head, tail = first[:len(first) - 8 - body_len], first[len(first) - 8:]
    if head + body[0].tobytes() + tail != first:
        return [first] + [grid_frame(b) for b in split_states(table.slice(rows), rows)]
    return [head + body[i].tobytes() + tail for i in range(n)]


def schema_fields(schema: pa.Schema) -> list[dict[str, str]]:
    """``[{"name": ..., "type": ...}]`` of the grid frames (``grid_schema_fields``)."""
    return [{"name": f.name, "type": str(f.type)} for f in schema]
