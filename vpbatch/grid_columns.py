"""One compiled pass from engine grid rows (``GRID_DTYPE``, 212-byte records) to stored columns.

Pulling 20 fields out of a record array with numpy reads every record once per field; this
reads each record once and writes all the stored columns of :func:`vpbatch.schema.grid_schema`
(floats narrowed to float32). Kept apart from :mod:`vpbatch.schema` so that reading the lake
never imports numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from vpbatch.book.dtypes import GRID_DTYPE

#: float32 stored columns, in :data:`vpbatch.schema.GRID_STORED_FLOATS` order.
FLOAT_ORDER = ("add_mass", "pull_mass", "fill_mass", "v_add", "v_pull", "v_fill", "v_rest_depth",
               "a_add", "a_pull", "a_fill", "a_rest_depth", "j_add", "j_pull", "j_fill",
               "j_rest_depth")
#: int64 stored columns (``k`` is int32, ``price`` float64, both apart).
INT_ORDER = ("event_id", "bid_depth", "ask_depth", "last_event_id", "last_ts")
_F32_MAX = float(np.finfo(np.float32).max)


@njit(cache=True, nogil=True)
def _split(rows: np.ndarray, ints: np.ndarray, k: np.ndarray, price: np.ndarray,
           floats: np.ndarray, f32_max: float) -> int:
    """Fill the column arrays; index of the first value too large for float32, else -1."""
    bad = -1
    for i in range(rows.shape[0]):
        r = rows[i]
        ints[0, i] = r.event_id
        ints[1, i] = r.bid_depth
        ints[2, i] = r.ask_depth
        ints[3, i] = r.last_event_id
        ints[4, i] = r.last_ts
        k[i] = r.k
        price[i] = r.price
        values = (r.add_mass, r.pull_mass, r.fill_mass, r.v_add, r.v_pull, r.v_fill,
                  r.v_rest_depth, r.a_add, r.a_pull, r.a_fill, r.a_rest_depth, r.j_add,
                  r.j_pull, r.j_fill, r.j_rest_depth)
        for j in range(15):
            x = values[j]
            if bad < 0 and abs(x) > f32_max and abs(x) < np.inf:
                bad = i
            floats[j, i] = np.float32(x)
    return bad


def split_grid(rows: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
    """Stored columns of ``GRID_DTYPE`` rows by name, and the first float32 overflow row (-1)."""
    assert rows.dtype == GRID_DTYPE
    n = rows.shape[0]
    ints = np.empty((len(INT_ORDER), n), dtype=np.int64)
    k = np.empty(n, dtype=np.int32)
    price = np.empty(n, dtype=np.float64)
    floats = np.empty((len(FLOAT_ORDER), n), dtype=np.float32)
    bad = _split(rows, ints, k, price, floats, _F32_MAX)
    columns = {name: ints[i] for i, name in enumerate(INT_ORDER)}
    columns.update({name: floats[i] for i, name in enumerate(FLOAT_ORDER)})
    columns["k"] = k
    columns["price"] = price
    return columns, int(bad)
