"""The engine's one state container: a NamedTuple of numpy arrays, built by ``allocate_state``.

Hash tables (orders, price levels, bucket depths) use open addressing with linear probing,
keyed by int64 (``EMPTY_KEY`` marks a free slot). Per-bucket flow state lives in a ring of
``2*band+1`` cells indexed by ``bucket mod W``; a cell's ``bucket`` tag says whose it is.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np

from vpbatch.book.borrow import kernel_array
from vpbatch.book.dtypes import REGIME_CHOP
from vpbatch.config import EngineConfig

#: Free hash slot marker (an order id of exactly 2**63 would collide; never seen in practice).
EMPTY_KEY: Final = np.iinfo(np.int64).min
#: Tables grow (x2) before their load factor passes this.
MAX_LOAD: Final = 0.7
#: Bump when the exported book layout changes (invalidates cached books).
BOOK_FORMAT_VERSION: Final = 1

#: Anomaly counters (index into ``state.anomalies``), in report order.
ANOMALY_NAMES: Final = (
    "cancel_unknown_order",
    "fill_unknown_order",
    "modify_unknown_order",
    "duplicate_order_id",
    "undefined_price",
    "side_none",
    "zero_size_add",
    "unknown_action",
)
AN_CANCEL_UNKNOWN: Final = 0
AN_FILL_UNKNOWN: Final = 1
AN_MODIFY_UNKNOWN: Final = 2
AN_DUPLICATE_ID: Final = 3
AN_UNDEF_PRICE: Final = 4
AN_SIDE_NONE: Final = 5
AN_ZERO_SIZE: Final = 6
AN_UNKNOWN_ACTION: Final = 7

#: Book side index: 0 = bid, 1 = ask.
BID: Final = 0
ASK: Final = 1

#: Kernel exit status.
STATUS_DONE: Final = 0
STATUS_OUT_FULL: Final = 1
STATUS_GROW: Final = 2

ORDER_DTYPE: Final = np.dtype(
    [("key", "<i8"), ("price", "<i8"), ("size", "<i8"), ("pending", "<i8"), ("side", "<i8")]
)
LEVEL_DTYPE: Final = np.dtype([("key", "<i8"), ("size", "<i8"), ("count", "<i8")])
BUCKET_DTYPE: Final = np.dtype([("key", "<i8"), ("bid", "<i8"), ("ask", "<i8")])

_CHAINS = ("add", "pull", "fill", "rest")
_CHAIN_FIELDS = [f"{d}_{q}" for q in _CHAINS for d in ("v", "a", "j")]
#: One ring cell: current values, the time group's base, accumulated deltas.
CELL_DTYPE: Final = np.dtype(
    [("bucket", "<i8"), ("t_b", "<i8"), ("dt", "<f8"), ("rest_mem", "<i8"),
     ("base_rest", "<i8"), ("last_event_id", "<i8"), ("last_ts", "<i8")]
    + [(f"{q}_mass", "<f8") for q in ("add", "pull", "fill")]
    + [(f"base_{q}_mass", "<f8") for q in ("add", "pull", "fill")]
    + [(f"d_{q}", "<f8") for q in ("add", "pull", "fill")]
    + [(name, "<f8") for name in _CHAIN_FIELDS]
    + [(f"base_{name}", "<f8") for name in _CHAIN_FIELDS]
    + [("pressure", "<f8"), ("vacuum", "<f8")]
    # Regime filter cache (kernels.filtered_score): exp(-dt/tau_v), exp(-dt/tau_a) as of e_t
    # for a cell whose t_b was e_tb, carried forward e_n times. A pure function of
    # (e_t, e_tb): never part of any output.
    + [("e_t", "<i8"), ("e_tb", "<i8"), ("e_n", "<i8"), ("e_v", "<f8"), ("e_a", "<f8")]
)

#: Engine scalars, one record.
SCALARS_DTYPE: Final = np.dtype(
    [
        ("n", "<i8"),              # records fed (event_id of the last one)
        ("t", "<i8"),              # engine clock, ns
        ("t0", "<i8"),             # first non-snapshot time
        ("started", "?"),          # a non-snapshot record has been seen
        ("consistent", "?"),
        ("in_snapshot", "?"),
        ("spot_defined", "?"),
        ("spot", "<i8"),           # spot bucket
        ("mid2", "<i8"),           # bid + ask of the book spot came from
        ("best_bid", "<i8"),
        ("best_ask", "<i8"),
        ("n_orders", "<i8"),
        ("n_levels", "<i8"),
        ("n_buckets", "<i8"),
        ("bid_levels", "<i8"),
        ("ask_levels", "<i8"),
        ("bid_lo", "<i8"),         # loose bounds of prices ever resting on each side
        ("ask_hi", "<i8"),
        ("off_tick_levels", "<i8"),  # live levels off the tick grid: walk by scanning
        ("regime", "<i8"),
        ("pending", "?"),
        ("pending_bin", "<i8"),
        ("since_records", "<i8"),
        ("since_buy", "<i8"),
        ("since_sell", "<i8"),
        ("last_ts_recv", "<i8"),
        ("full", "?"),             # full engine (False = book-only fast path)
        ("emit", "?"),             # write states (False during warm-up)
        ("resync_due", "?"),       # resync rest memory before the next full record
        ("eval_t", "<i8"),         # time of the last filtered regime evaluation
        ("wild", "?"),             # a chain left TAME_LIMIT: regime steps take the exact path
        ("exact_steps", "<i8"),    # regime steps the filter could not decide (diagnostic)
    ]
)


class Params(NamedTuple):
    """Numba-friendly copy of ``EngineConfig`` plus the instrument's bucket/tick."""

    K: int
    band: int
    W: int
    bucket: int
    tick: int
    tau_v: float
    tau_a: float
    tau_j: float
    tau_rest: float
    c_p_v_add: float
    c_p_v_rest: float
    c_p_a_add: float
    c_v_v_pull: float
    c_v_v_fill: float
    c_v_v_rest: float
    c_v_a_pull: float
    theta_on: float
    theta_off: float
    intensity_floor: float
    eps: float
    regime_step: int
    sample_mode: int
    sample_ns: int
    epoch: int
    mbp_levels: int


class EngineState(NamedTuple):
    """All mutable engine state; replaced wholesale when a table grows."""

    sc: np.ndarray          # SCALARS_DTYPE, shape (1,)
    orders: np.ndarray      # ORDER_DTYPE hash table
    levels: np.ndarray      # LEVEL_DTYPE hash table, key = price * 2 + side
    buckets: np.ndarray     # BUCKET_DTYPE hash table: resting size per bucket and side
    cells: np.ndarray       # CELL_DTYPE ring, W = 2 * band + 1
    weights: np.ndarray     # regime proximity weight per k = -K..K
    anomalies: np.ndarray   # int64 counters, ANOMALY_NAMES order


def make_params(config: EngineConfig, bucket: int, tick: int, mbp_levels: int = 0) -> Params:
    """Freeze a config for the kernels; ``bucket``/``tick`` in fixed-point price units.

    Every field is a plain ``int`` or ``float`` whatever the config holds (``tau_v = 2`` in a
    vp.toml is an int): the kernels are compiled once per argument types, so one ``Params``
    type means one compilation. The values are the same (int -> float64 is exact here).
    """
    f = config.forces
    return Params(
        K=int(config.K), band=int(config.band), W=2 * int(config.band) + 1, bucket=int(bucket),
        tick=int(tick), tau_v=float(config.tau_v), tau_a=float(config.tau_a),
        tau_j=float(config.tau_j), tau_rest=float(config.tau_rest),
        c_p_v_add=float(f.pressure_v_add), c_p_v_rest=float(f.pressure_v_rest_pos),
        c_p_a_add=float(f.pressure_a_add), c_v_v_pull=float(f.vacuum_v_pull),
        c_v_v_fill=float(f.vacuum_v_fill), c_v_v_rest=float(f.vacuum_v_rest_neg),
        c_v_a_pull=float(f.vacuum_a_pull), theta_on=float(config.theta_on),
        theta_off=float(config.theta_off), intensity_floor=float(config.intensity_floor),
        eps=float(config.eps), regime_step=int(config.regime_step_ns),
        sample_mode=int(config.sample_code), sample_ns=int(config.sample_ns),
        epoch=int(config.epoch_ns), mbp_levels=int(mbp_levels),
    )


def empty_table(dtype: np.dtype, capacity: int) -> np.ndarray:
    """A hash table of ``capacity`` (a power of two) free slots."""
    table = np.zeros(capacity, dtype=dtype)
    table["key"] = EMPTY_KEY
    return kernel_array(table)


def allocate_state(config: EngineConfig, capacity: int = 1 << 16) -> EngineState:
    """A cold engine: empty book, no cell state, regime CHOP."""
    sc = np.zeros(1, dtype=SCALARS_DTYPE)
    sc["regime"] = REGIME_CHOP
    sc["full"] = True
    sc["emit"] = True
    sc["eval_t"] = EMPTY_KEY
    cells = np.zeros(2 * config.band + 1, dtype=CELL_DTYPE)
    cells["bucket"] = EMPTY_KEY
    cells["e_tb"] = EMPTY_KEY
    k = np.arange(-config.K, config.K + 1)
    weights = np.exp(-(np.abs(k) - 1) / config.regime_lambda)
    return EngineState(
        sc=kernel_array(sc),
        orders=empty_table(ORDER_DTYPE, capacity),
        levels=empty_table(LEVEL_DTYPE, capacity),
        buckets=empty_table(BUCKET_DTYPE, capacity),
        cells=kernel_array(cells),
        weights=weights,
        anomalies=np.zeros(len(ANOMALY_NAMES), dtype=np.int64),
    )
