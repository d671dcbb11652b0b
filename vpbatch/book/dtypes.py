"""Every record layout and event code the engine uses, in one place.

The kernels compare plain integers, so Databento's one-byte ``action``/``side``
characters are viewed as ``uint8`` (same memory layout, zero copy).
"""

from __future__ import annotations

from typing import Final

import numpy as np

#: Databento fixed-point price scale: 1 unit = 1e-9.
FIXED_PRICE_SCALE: Final = 1_000_000_000
#: Fixed-point -> currency as every vpbatch table computes it (``price * PRICE_SCALE``),
#: so prices join exactly across vp_snapshot, vp_grid and mbp.
PRICE_SCALE: Final = 1e-9
#: Databento's undefined price (``INT64_MAX``).
UNDEF_PRICE: Final = 9_223_372_036_854_775_807

#: ``action`` codes (``ord`` of Databento's character).
ACTION_ADD: Final = ord("A")
ACTION_CANCEL: Final = ord("C")
ACTION_MODIFY: Final = ord("M")
ACTION_CLEAR: Final = ord("R")
ACTION_TRADE: Final = ord("T")
ACTION_FILL: Final = ord("F")
ACTION_NONE: Final = ord("N")

#: ``side`` codes: bid (buy aggressor on a trade), ask (sell aggressor), none.
SIDE_BID: Final = ord("B")
SIDE_ASK: Final = ord("A")
SIDE_NONE: Final = ord("N")

#: Record ``flags`` bits.
F_LAST: Final = 0x80
F_TOB: Final = 0x40
F_SNAPSHOT: Final = 0x20
F_MBP: Final = 0x10
F_BAD_TS_RECV: Final = 0x08
F_MAYBE_BAD_BOOK: Final = 0x04

#: Regime codes as stored by the kernel (written as strings).
REGIME_CHOP: Final = 0
REGIME_UP: Final = 1
REGIME_DOWN: Final = 2
REGIME_NAMES: Final = ("CHOP", "UP", "DOWN")

#: Emission modes.
SAMPLE_TIME: Final = 0
SAMPLE_PACKET: Final = 1
SAMPLE_EVENT: Final = 2

#: Databento's MBO record (rtype 0xA0), as the kernels see it.
MBO_DTYPE: Final = np.dtype(
    [
        ("length", "u1"),
        ("rtype", "u1"),
        ("publisher_id", "<u2"),
        ("instrument_id", "<u4"),
        ("ts_event", "<u8"),
        ("order_id", "<u8"),
        ("price", "<i8"),
        ("size", "<u4"),
        ("flags", "u1"),
        ("channel_id", "u1"),
        ("action", "u1"),
        ("side", "u1"),
        ("ts_recv", "<u8"),
        ("ts_in_delta", "<i4"),
        ("sequence", "<u4"),
    ]
)
assert MBO_DTYPE.itemsize == 56

#: One emitted state (``vp_snapshot`` row). Prices in currency units; NaN = no price.
SNAPSHOT_DTYPE: Final = np.dtype(
    [
        ("event_id", "<i8"),
        ("ts_event", "<i8"),
        ("ts_recv", "<i8"),
        ("spot_price", "<f8"),
        ("best_bid_price", "<f8"),
        ("best_ask_price", "<f8"),
        ("best_bid_size", "<i8"),
        ("best_ask_size", "<i8"),
        ("mid_price", "<f8"),
        ("book_valid", "?"),
        ("crossed", "?"),
        ("n_records", "<i8"),
        ("buy_volume", "<i8"),
        ("sell_volume", "<i8"),
        ("regime", "i1"),
        ("regime_score", "<f8"),
        ("regime_intensity", "<f8"),
    ]
)

#: Per-cell float columns of ``vp_grid``, in output order.
GRID_FLOAT_FIELDS: Final = (
    "add_mass",
    "pull_mass",
    "fill_mass",
    "v_add",
    "v_pull",
    "v_fill",
    "v_rest_depth",
    "a_add",
    "a_pull",
    "a_fill",
    "a_rest_depth",
    "j_add",
    "j_pull",
    "j_fill",
    "j_rest_depth",
    "pressure",
    "vacuum",
    "pressure_now",
    "vacuum_now",
)

#: One grid cell of one emitted state (``vp_grid`` row).
GRID_DTYPE: Final = np.dtype(
    [("event_id", "<i8"), ("k", "<i4"), ("price", "<f8")]
    + [("bid_depth", "<i8"), ("ask_depth", "<i8"), ("rest_depth", "<i8")]
    + [(name, "<f8") for name in GRID_FLOAT_FIELDS]
    + [("last_event_id", "<i8"), ("last_ts", "<i8")]
)


def as_kernel_records(records: np.ndarray) -> np.ndarray:
    """View Databento MBO records (``action``/``side`` as ``S1``) as ``MBO_DTYPE``."""
    if records.dtype == MBO_DTYPE:
        return records
    if records.dtype.itemsize != MBO_DTYPE.itemsize or records.dtype.names != MBO_DTYPE.names:
        raise TypeError(f"not an MBO record array: dtype {records.dtype}")
    return records.view(MBO_DTYPE)


def copy_rows(rows: np.ndarray) -> np.ndarray:
    """A contiguous, writable copy of a (structured) array, copied as raw bytes.

    numpy copies structured arrays field by field: 8x slower for MBO records, 14x for grid
    rows, and both are copied on every chunk and batch.
    """
    out = np.empty_like(rows, order="C")
    out.view(np.uint8)[...] = np.ascontiguousarray(rows).view(np.uint8)
    return out


def read_only(values: np.ndarray, dtype: type | None = None) -> np.ndarray:
    """A contiguous read-only view of a column (a copy only when the type or layout differs).

    Columns read from Arrow are read-only, computed ones are not (and a live feed's records
    are read-only, a build's decoded chunks are not), and numba compiles one version of a
    kernel per mix: kernels fed both (the engine's records, the viewer's forces, fit's band
    sums) get every such array read-only, so that one version, warmed at install, serves
    every path.
    """
    view: np.ndarray = np.ascontiguousarray(values, dtype=dtype).view()
    view.flags.writeable = False
    return view
