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
#: Snapshot counters that sum over the states a throttle bin or a slow client skips.
ADDITIVE_FIELDS: Final = ("n_records", "buy_volume", "sell_volume")
#: ``vp_snapshot`` columns copied into ``grid_update`` as they are.
SNAPSHOT_FIELDS: Final = (
    "spot_price", "best_bid_price", "best_ask_price", "best_bid_size", "best_ask_size",
    "crossed", "n_records", "buy_volume", "sell_volume", "regime", "regime_score",
    "regime_intensity",
)
_FIXED: Final = round(1 / PRICE_SCALE)


@dataclass
class State:
    """One emitted state ready to send: snapshot values and its encoded grid frame."""

    ts_ns: int
    event_id: int
    snapshot: dict[str, Any]
    grid: bytes
    #: The grid rows until :func:`vpbatch.serve.sources.encode` turns them into ``grid``.
    table: pa.Table | None = None


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
    frame["dropped"] = dropped
    frame["dropped_total"] = dropped_total
    return dumps(frame)


def end(**fields: Any) -> str:
    """Last frame of a stream that ran out of data (or reached ``end_time``)."""
    return dumps({"type": "end", **fields})


def error(message: str) -> str:
    """Sent before closing with :data:`CLOSE_POLICY`."""
    return dumps({"type": "error", "message": message})


def status(**fields: Any) -> str:
    """Answer to a control message: the stream's playback state now."""
    return dumps({"type": "status", **fields})


def grid_frame(table: pa.Table) -> bytes:
    """One state's grid rows as a self-contained Arrow IPC stream (schema + one batch).

    The schema's key-value metadata is dropped so the bytes depend only on the columns and
    values, whichever source (lake Parquet or the engine) produced them.
    """
    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.combine_chunks().to_batches():
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def schema_fields(schema: pa.Schema) -> list[dict[str, str]]:
    """``[{"name": ..., "type": ...}]`` of the grid frames (``grid_schema_fields``)."""
    return [{"name": f.name, "type": str(f.type)} for f in schema]
