"""Record layout of the reconstructed-book table ``mbp`` (SPEC §11).

Two numpy views of the same memory, so the kernel and the writer each get the shape they want:

* :func:`mbp_kernel_dtype` — per-level subarray fields (``bid_px``, shape ``(levels,)``), which a
  numba kernel can index with a loop variable: ``out[i].bid_px[j] = price``.
* :func:`mbp_dtype` — the same bytes with flat Databento names (``bid_px_00`` … ``ask_ct_09``).
  ``kernel_array.view(mbp_dtype(levels))`` is a zero-copy conversion (checked by the tests).

In memory, prices are Databento fixed-point ``int64`` (1 unit = 1e-9, ``INT64_MAX`` undefined),
times ``uint64`` nanoseconds, ``action``/``side`` one ASCII byte. An empty level is
``(UNDEF_PRICE, 0, 0)`` as in Databento's own MBP-10 records; a level of size 0 is empty too.

In Parquet the columns follow Databento's ``to_df()`` order for MBP-10
(:func:`mbp_columns`): ``ts_recv, ts_event, action, side, price, size, flags, sequence`` and then
per level ``bid_px_NN, ask_px_NN, bid_sz_NN, ask_sz_NN, bid_ct_NN, ask_ct_NN``, plus ``event_id``
last. Databento's ``rtype``, ``publisher_id``, ``instrument_id``, ``depth`` and ``ts_in_delta``
are not produced (one instrument and publisher per partition; the book is rebuilt, not read).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

#: Default number of levels per side (Databento's MBP-10).
DEFAULT_LEVELS: Final = 10
#: Largest supported depth (level names have two digits).
MAX_LEVELS: Final = 99

#: Per-record header fields, in memory order.
_HEADER: Final = (
    ("ts_recv", "<u8"),
    ("ts_event", "<u8"),
    ("event_id", "<i8"),
    ("price", "<i8"),
    ("size", "<u4"),
    ("sequence", "<u4"),
    ("action", "u1"),
    ("side", "u1"),
    ("flags", "u1"),
)
#: Per-level blocks, in memory order: (prefix, numpy type).
_LEVEL_BLOCKS: Final = (
    ("bid_px", "<i8"),
    ("bid_sz", "<u4"),
    ("bid_ct", "<u4"),
    ("ask_px", "<i8"),
    ("ask_sz", "<u4"),
    ("ask_ct", "<u4"),
)
#: Raw kernel rows (an ``int64`` matrix, one row per MBP record): these header columns in this
#: order, then the level blocks of :data:`RAW_LEVEL_BLOCKS`, ``levels`` columns each.
RAW_HEADER: Final = ("ts_recv", "ts_event", "sequence", "action", "side", "price", "size",
                     "flags", "event_id")
#: Index of the first level column of a raw kernel row.
RAW_FIXED: Final = len(RAW_HEADER)
#: Level blocks of a raw kernel row (same order as the record layout's level blocks).
RAW_LEVEL_BLOCKS: Final = tuple(prefix for prefix, _ in _LEVEL_BLOCKS)
#: Header columns in Databento's ``to_df()`` order (the ones vpbatch produces).
HEADER_COLUMNS: Final = ("ts_recv", "ts_event", "action", "side", "price", "size", "flags",
                         "sequence")
#: Per-level columns in Databento's ``to_df()`` order.
LEVEL_COLUMN_PREFIXES: Final = ("bid_px", "ask_px", "bid_sz", "ask_sz", "bid_ct", "ask_ct")


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise TypeError(f"levels: must be an int, was {levels!r}")
    if not 1 <= int(levels) <= MAX_LEVELS:
        raise ValueError(f"levels: must be between 1 and {MAX_LEVELS}, was {levels}")
    return int(levels)


def level_name(prefix: str, level: int) -> str:
    """``('bid_px', 3)`` -> ``'bid_px_03'`` (Databento's naming)."""
    return f"{prefix}_{level:02d}"


def mbp_kernel_dtype(levels: int = DEFAULT_LEVELS) -> np.dtype:
    """MBP row with one subarray field per level block (``bid_px``: ``int64[levels]`` …).

    Parameters
    ----------
    levels : int, default 10
        Levels per side, 1-99.

    Returns
    -------
    numpy.dtype
        Aligned structured dtype; same itemsize and offsets as :func:`mbp_dtype`.
    """
    n = _check_levels(levels)
    fields: list[tuple[Any, ...]] = [(name, kind) for name, kind in _HEADER]
    fields += [(prefix, kind, (n,)) for prefix, kind in _LEVEL_BLOCKS]
    return np.dtype(fields, align=True)


def mbp_dtype(levels: int = DEFAULT_LEVELS) -> np.dtype:
    """MBP row with Databento's flat field names (``bid_px_00``, …, ``ask_ct_09``).

    Parameters
    ----------
    levels : int, default 10
        Levels per side, 1-99.

    Returns
    -------
    numpy.dtype
        Aligned structured dtype; a zero-copy view of :func:`mbp_kernel_dtype`.
    """
    n = _check_levels(levels)
    fields = [(name, kind) for name, kind in _HEADER]
    for prefix, kind in _LEVEL_BLOCKS:
        fields += [(level_name(prefix, i), kind) for i in range(n)]
    return np.dtype(fields, align=True)


def mbp_columns(levels: int = DEFAULT_LEVELS) -> tuple[str, ...]:
    """Parquet column order: Databento's ``to_df()`` order for MBP-N, then ``event_id``."""
    n = _check_levels(levels)
    cols = list(HEADER_COLUMNS)
    for i in range(n):
        cols += [level_name(prefix, i) for prefix in LEVEL_COLUMN_PREFIXES]
    return (*cols, "event_id")


def raw_columns(levels: int) -> int:
    """Width of a raw kernel row with ``levels`` levels per side."""
    return RAW_FIXED + len(RAW_LEVEL_BLOCKS) * levels


def records_from_raw(raw: np.ndarray, levels: int) -> np.ndarray:
    """Raw kernel rows (``int64[n, raw_columns(levels)]``) -> :func:`mbp_dtype` records."""
    out = np.zeros(len(raw), dtype=mbp_kernel_dtype(levels))
    for col, name in enumerate(RAW_HEADER):
        out[name] = raw[:, col]
    for block, name in enumerate(RAW_LEVEL_BLOCKS):
        start = RAW_FIXED + block * levels
        out[name] = raw[:, start:start + levels]
    return out.view(mbp_dtype(levels))


def levels_of(dtype: np.dtype) -> int:
    """Number of levels of an MBP dtype (either view); ``TypeError`` for anything else."""
    names = dtype.names or ()
    if "bid_px" in names:
        shape = dtype.fields["bid_px"][0].shape  # type: ignore[index]
        n = int(shape[0]) if shape else 0
    else:
        n = sum(1 for name in names if name.startswith("bid_px_"))
    if n < 1 or n > MAX_LEVELS or dtype not in (mbp_dtype(n), mbp_kernel_dtype(n)):
        raise TypeError(f"not an MBP record array: dtype {dtype}")
    return n
