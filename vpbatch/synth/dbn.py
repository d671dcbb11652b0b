"""DBN encoding of a synthetic day: record constants, metadata, chunk buffers, the snapshot.

Records are ``MBO_DTYPE`` rows (the kernel fills the per-event fields of a preset buffer);
the metadata is encoded by Databento's own ``databento_dbn`` as a raw-symbol day query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import databento_dbn as dbn
import numpy as np
from databento_dbn.metadata import MappingInterval

from vpbatch.book.dtypes import (
    ACTION_ADD,
    ACTION_CLEAR,
    F_BAD_TS_RECV,
    F_LAST,
    F_SNAPSHOT,
    MBO_DTYPE,
    SIDE_ASK,
    SIDE_BID,
    SIDE_NONE,
    UNDEF_PRICE,
)
from vpbatch.clock import NS_PER_SECOND
from vpbatch.synth.calendar import DAY_SECONDS, day_start_ns
from vpbatch.synth.state import OD_ALIVE, OD_LEVEL, OD_SEQ, OD_SIDE, OD_SIZE, OD_TS, Simulation

#: CME sets this publisher-specific bit on every record that carries ``F_LAST`` (flags 130).
F_PUBLISHER_SPECIFIC: Final = 0x02
#: Flags of the last record of a live event (every other live record has flags 0).
LIVE_LAST_FLAGS: Final = F_LAST | F_PUBLISHER_SPECIFIC
#: Databento's start-of-day snapshot records carry ``F_SNAPSHOT | F_BAD_TS_RECV`` (flags 40).
SNAPSHOT_FLAGS: Final = F_SNAPSHOT | F_BAD_TS_RECV

MBO_RTYPE: Final = 0xA0
MBO_LENGTH: Final = MBO_DTYPE.itemsize // 4
DBN_VERSION: Final = 3


@dataclass
class _MappingInterval:
    """``databento_dbn.metadata.MappingInterval``: one symbol -> instrument_id interval."""

    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass
class _SymbolMapping:
    """``databento_dbn.metadata.SymbolMapping``: the intervals of one raw symbol."""

    raw_symbol: str
    intervals: Sequence[MappingInterval]


def metadata(symbol: str, dataset: str, day: dt.date, instrument_id: int) -> bytes:
    """DBN metadata as Databento writes it for a raw-symbol day query (one mapping interval)."""
    start = day_start_ns(day)
    mapping = _SymbolMapping(symbol, [_MappingInterval(day, day + dt.timedelta(days=1),
                                                       str(instrument_id))])
    meta = dbn.Metadata(dataset=dataset, start=start, stype_in=dbn.SType("raw_symbol"),
                        stype_out=dbn.SType("instrument_id"), schema=dbn.Schema("mbo"),
                        symbols=[symbol], partial=[], not_found=[], mappings=[mapping],
                        end=start + DAY_SECONDS * NS_PER_SECOND, version=DBN_VERSION)
    return bytes(meta.encode())


def record_buffer(n: int, instrument_id: int, publisher_id: int) -> np.ndarray:
    """A reusable chunk buffer with the per-file constant fields already set."""
    buf = np.zeros(n, MBO_DTYPE)
    buf["length"] = MBO_LENGTH
    buf["rtype"] = MBO_RTYPE
    buf["publisher_id"] = publisher_id
    buf["instrument_id"] = instrument_id
    return buf


def snapshot_records(sim: Simulation, day0: int, instrument_id: int,
                     publisher_id: int) -> np.ndarray:
    """The live book as Databento's start-of-day snapshot: ``R`` then adds by age."""
    od, st = sim.orders, sim.state[0]
    slots = np.flatnonzero(od[OD_ALIVE] == 1)
    slots = slots[np.lexsort((od[OD_SEQ, slots], od[OD_TS, slots]))]
    snap = record_buffer(len(slots) + 1, instrument_id, publisher_id)
    tick, base = int(st["tick"]), int(st["base_tick"])
    snap["ts_recv"] = day0
    snap["flags"] = SNAPSHOT_FLAGS
    snap[0]["ts_event"] = od[OD_TS, slots].min()
    snap[0]["price"] = UNDEF_PRICE
    snap[0]["action"] = ACTION_CLEAR
    snap[0]["side"] = SIDE_NONE
    body = snap[1:]
    body["ts_event"] = od[OD_TS, slots]
    body["order_id"] = sim.order_ids[slots]
    body["price"] = (base + od[OD_LEVEL, slots]) * tick
    body["size"] = od[OD_SIZE, slots]
    body["action"] = ACTION_ADD
    body["side"] = np.where(od[OD_SIDE, slots] == 0, SIDE_BID, SIDE_ASK)
    body["sequence"] = od[OD_SEQ, slots]
    snap["flags"][-1] = SNAPSHOT_FLAGS | F_LAST
    return snap
