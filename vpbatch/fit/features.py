"""Features per state (SPEC §15): the level-1 signals, the seed's regime outputs and the
vacuum/pressure field summed over distance bands around the mid.

The definitions are the ``vp_features`` view's (:data:`vpbatch.sql.FEATURES_SQL`, docs/fit.md);
this module computes the same table fast: the level-1 signals are ``vpbatch evaluate``'s own
arrays (:func:`vpbatch.evaluate.evaluation.level1_signals`), and the band sums come from one
compiled pass over the day's ``vp_grid`` rows (the stored chains, read through the view)
instead of a SQL aggregation with a filter per band (about 14 times slower on a full day).
Every value at state n uses state n's grid and snapshot and earlier states only.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Final, NamedTuple

import duckdb
import numpy as np
import polars as pl
from numba import get_num_threads, njit, prange

from vpbatch.evaluate.evaluation import States, level1_signals, load_states
from vpbatch.products import resolve_product
from vpbatch.sql import (
    AT_MID,
    BAND_FEATURES,
    FEATURE_BANDS,
    FEATURE_COLUMNS,
    FEATURE_PARAM_NAMES,
    FEATURE_PARAMS_TABLE,
    L1_FEATURES,
    REGIME_FEATURES,
    connect,
    execute,
)
from vpbatch.store.schema import read_only

#: Every feature, in column order (level-1, regime, band sums).
FEATURES: Final = FEATURE_COLUMNS
#: The vacuum/pressure field: the seed's regime outputs and the band sums.
VP_FEATURES: Final = REGIME_FEATURES + BAND_FEATURES
#: Feature sets of the models (SPEC §15).
MODEL_FEATURES: Final = {"l1": L1_FEATURES, "vp": VP_FEATURES, "vp+l1": L1_FEATURES + VP_FEATURES}
#: Model names in table order.
MODELS: Final = tuple(MODEL_FEATURES)
#: Heavy-tailed features (rates summed over cells, order-flow sums, the intensity) enter the
#: models as ``asinh(x)``: linear near 0, logarithmic in the tails, sign kept.
ASINH_FEATURES: Final = frozenset(BAND_FEATURES) | {"ofi_1s", "ofi_5s", "ofi_10s",
                                                    "regime_intensity"}

#: The grid columns the band pass reads (through the ``vp_grid`` view).
GRID_CELLS_SQL: Final = """
SELECT event_id, price, v_add, a_add, v_pull, a_pull, v_fill, v_rest_depth,
       epoch_ns(last_ts) AS last_ns
FROM vp_grid WHERE symbol = $symbol AND dt = $day
"""
#: The build parameters of one partition (bucket, time constants, force coefficients).
PARAMS_SQL: Final = (f"SELECT {', '.join(FEATURE_PARAM_NAMES)} FROM {FEATURE_PARAMS_TABLE} "
                     "WHERE symbol = $symbol AND dt = $day")
#: DuckDB draws its own bar on long queries; the commands have theirs.
NO_PROGRESS_BAR_SQL: Final = "SET enable_progress_bar = false"
#: Grid rows per batch of the band pass (about 20,000 states at K = 50).
BATCH_ROWS: Final = 2_020_000
#: Runs of rows per worker thread in one batch (balances threads of unequal speed).
RUNS_PER_THREAD: Final = 4
#: The first distance of each band (the last band runs to the grid's edge).
BAND_FIRST: Final = np.array([first for first, _ in FEATURE_BANDS], np.int64)


class StateRefs(NamedTuple):
    """The states of one day the band pass accumulates into (sorted by ``event_id``)."""

    event_id: np.ndarray  # int64
    ts: np.ndarray  # int64 ns
    mid: np.ndarray  # float64


class Cells(NamedTuple):
    """One batch of ``vp_grid`` rows (float64 chains as the view widens them)."""

    event_id: np.ndarray
    price: np.ndarray
    v_add: np.ndarray
    a_add: np.ndarray
    v_pull: np.ndarray
    a_pull: np.ndarray
    v_fill: np.ndarray
    v_rest: np.ndarray
    last_ns: np.ndarray


# ------------------------------------------------------------------------------------------
# The compiled band pass: the view's formulas (GRID_MACROS_SQL), operation for operation.


@njit(cache=True, inline="always")
def _pos(x: float) -> float:
    return x if (x > 0.0 or x != x) else 0.0


@njit(cache=True, inline="always")
def _alpha(age: float, tau: float) -> float:
    ratio = age / tau
    if ratio > 50.0 or ratio != ratio:
        return 1.0
    return 1.0 - math.exp(-ratio)


@njit(cache=True, inline="always")
def _idle_v(av: float, v0: float) -> float:
    return av * 0.0 + (1.0 - av) * v0


@njit(cache=True, inline="always")
def _idle_a(aa: float, av: float, v0: float, a0: float, age: float) -> float:
    return aa * (_idle_v(av, v0) - v0) / age + (1.0 - aa) * a0


@njit(cache=True)
def _band_of(dist: int) -> int:
    band = 0
    for i in range(BAND_FIRST.size):
        if dist >= BAND_FIRST[i]:
            band = i
    return band


@njit(cache=True)
def _add_rows(out: np.ndarray, states: StateRefs, cells: Cells, prm: np.ndarray, first: int,
              stop: int) -> None:
    """Rows ``first..stop-1`` of :func:`add_band_sums`."""
    bucket, tau_v, tau_a = prm[0], prm[1], prm[2]
    p_a_add, p_v_add, p_v_rest_pos = prm[3], prm[4], prm[5]
    v_a_pull, v_v_fill, v_v_pull, v_v_rest_neg = prm[6], prm[7], prm[8], prm[9]
    n_bands = BAND_FIRST.size
    step = 2 * n_bands
    last_eid = -1
    row = -1
    for i in range(first, stop):
        eid = cells.event_id[i]
        if eid != last_eid:
            last_eid = eid
            j = np.searchsorted(states.event_id, eid)
            row = j if j < states.event_id.size and states.event_id[j] == eid else -1
        if row < 0:
            continue
        mid = states.mid[row]
        x = abs(cells.price[i] - mid) / bucket
        if x < AT_MID:
            continue
        col = (0 if cells.price[i] > mid else n_bands) + _band_of(math.ceil(x - AT_MID))
        age = (states.ts[row] - cells.last_ns[i]) / 1e9
        av = _alpha(age, tau_v)
        v_add = cells.v_add[i]
        v_pull = cells.v_pull[i]
        v_fill = cells.v_fill[i]
        v_rest = cells.v_rest[i]
        if age > 0.0:
            aa = _alpha(age, tau_a)
            pressure = (p_v_add * _idle_v(av, v_add) + p_v_rest_pos * _pos(_idle_v(av, v_rest))
                        + p_a_add * _pos(_idle_a(aa, av, v_add, cells.a_add[i], age)))
            vacuum = (v_v_pull * _idle_v(av, v_pull) + v_v_fill * _idle_v(av, v_fill)
                      + v_v_rest_neg * _pos(-_idle_v(av, v_rest))
                      + v_a_pull * _pos(_idle_a(aa, av, v_pull, cells.a_pull[i], age)))
        else:
            pressure = (p_v_add * v_add + p_v_rest_pos * _pos(v_rest)
                        + p_a_add * _pos(cells.a_add[i]))
            vacuum = (v_v_pull * v_pull + v_v_fill * v_fill
                      + v_v_rest_neg * _pos(-v_rest) + v_a_pull * _pos(cells.a_pull[i]))
        out[row, col] += pressure
        out[row, col + step] += vacuum
        out[row, col + 2 * step] += _idle_v(av, v_add)
        out[row, col + 3 * step] += _idle_v(av, v_pull)
        out[row, col + 4 * step] += _idle_v(av, v_fill)
        out[row, col + 5 * step] += _idle_v(av, v_rest)


@njit(cache=True, parallel=True)
def add_band_sums(out: np.ndarray, states: StateRefs, cells: Cells, prm: np.ndarray,
                  bounds: np.ndarray) -> None:
    """Add each cell's as-of forces and idle velocities to its state's band sums.

    ``out`` is ``(states, quantities * 2 * bands)`` in :data:`BAND_FEATURES` order; ``prm`` is
    :data:`FEATURE_PARAM_NAMES` (bucket in price units, ``tau`` in s). Rows of states not in
    ``states`` (unusable books) are skipped. ``bounds`` cut the rows into runs that share no
    state (so the runs are added in parallel without two writing one row).
    """
    for c in prange(bounds.size - 1):
        _add_rows(out, states, cells, prm, bounds[c], bounds[c + 1])


@njit(cache=True, nogil=True)
def add_band_sums_of_rows(out: np.ndarray, event_id: np.ndarray, ts: np.ndarray,
                          mid: np.ndarray, rows: np.ndarray, prm: np.ndarray) -> None:
    """:func:`add_band_sums` over engine grid rows (``GRID_DTYPE``) in the calling thread:
    the few states of one engine batch (``build --model``, ``live --model``).

    The chains are narrowed to ``float32`` as the writer stores them and widened back as the
    ``vp_grid`` view reads them, then summed by the same compiled row loop as a built day's
    pass, so a state's sums are those of its stored rows, bit for bit. ``event_id``, ``ts``
    and ``mid`` are the states' (:class:`StateRefs`, sorted); rows of other states are skipped.
    """
    n = rows.shape[0]
    cell_id = np.empty(n, np.int64)
    last_ns = np.empty(n, np.int64)
    price = np.empty(n)
    v_add = np.empty(n)
    a_add = np.empty(n)
    v_pull = np.empty(n)
    a_pull = np.empty(n)
    v_fill = np.empty(n)
    v_rest = np.empty(n)
    for i in range(n):
        r = rows[i]
        cell_id[i] = r.event_id
        last_ns[i] = r.last_ts
        price[i] = r.price
        v_add[i] = np.float32(r.v_add)
        a_add[i] = np.float32(r.a_add)
        v_pull[i] = np.float32(r.v_pull)
        a_pull[i] = np.float32(r.a_pull)
        v_fill[i] = np.float32(r.v_fill)
        v_rest[i] = np.float32(r.v_rest_depth)
    _add_rows(out, StateRefs(event_id, ts, mid),
              Cells(cell_id, price, v_add, a_add, v_pull, a_pull, v_fill, v_rest, last_ns),
              prm, 0, n)


def load_kernels(grid_dtype: np.dtype) -> None:
    """Compile (into numba's cache) or load the band kernels for the arguments
    :func:`band_sums` and :class:`vpbatch.fit.online.ModelScorer` pass (``grid_dtype``: the
    engine's grid rows, which fit does not import): ``make install`` runs it (``python -m
    cli.warm``), so that a first ``fit`` or ``evaluate --models`` does not compile them."""
    n = 1
    ints, floats = np.zeros(n, np.int64), np.zeros(n)
    prm = np.ones(len(FEATURE_PARAM_NAMES))
    states = StateRefs(ints.copy(), ints.copy(), floats.copy())
    cells = Cells(*(read_only(c) for c in (ints, *[floats] * 7, ints)))
    add_band_sums(np.zeros((n, len(BAND_FEATURES))), states, cells, prm,
                  np.array([0, n], np.int64))
    add_band_sums_of_rows(np.zeros((n, len(BAND_FEATURES))), ints.copy(), ints.copy(),
                          floats.copy(), np.zeros(n, grid_dtype), prm)


def _run_bounds(event_id: np.ndarray, runs: int) -> np.ndarray:
    """Cut points at changes of ``event_id`` splitting the rows into about ``runs`` runs; one
    run when the rows are not sorted (a state's rows could then sit in two runs)."""
    n = event_id.size
    if n == 0 or runs <= 1 or np.any(event_id[1:] < event_id[:-1]):
        return np.array([0, n], np.int64)
    cuts = np.linspace(0, n, runs + 1).astype(np.int64)[1:-1]
    # Move each cut to the first row of the state it falls in (or past its end).
    cuts = np.searchsorted(event_id, event_id[cuts], side="left")
    return np.unique(np.concatenate(([0], cuts, [n]))).astype(np.int64)


def band_sums(con: duckdb.DuckDBPyConnection, symbol: str, day: dt.date,
              states: StateRefs) -> np.ndarray:
    """The band sums ``(states, 60)`` of one built day, in :data:`BAND_FEATURES` order."""
    out = np.zeros((states.event_id.size, len(BAND_FEATURES)))
    params = execute(con, PARAMS_SQL, {"symbol": symbol, "day": day})
    if params.height == 0 or states.event_id.size == 0:
        return out
    prm = np.array(params.row(0), np.float64)
    reader = con.sql(GRID_CELLS_SQL, params={"symbol": symbol, "day": day}).to_arrow_reader(
        BATCH_ROWS)
    for batch in reader:
        cols = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(batch.num_columns)]
        cells = Cells(*(read_only(c) for c in cols))
        add_band_sums(out, states, cells, prm, _run_bounds(cells.event_id,
                                                        RUNS_PER_THREAD * get_num_threads()))
    return out


# ------------------------------------------------------------------------------------------
# Feature tables


def feature_matrix(lake: Path | str, symbol: str, states: States) -> np.ndarray:
    """Every feature of every state, ``(states, len(FEATURES))`` float64 in :data:`FEATURES`
    order (NaN where a value is missing, e.g. a null ``regime_score``).

    ``states`` come from :func:`vpbatch.evaluate.evaluation.load_states` (usable books, with
    ``event_id`` and ``regime_intensity``).
    """
    n = len(states)
    out = np.empty((n, len(FEATURES)))
    for name, values in level1_signals(states).items():
        out[:, FEATURES.index(name)] = values
    out[:, FEATURES.index("regime_score")] = states.regime_score
    out[:, FEATURES.index("regime_intensity")] = states.regime_intensity
    first = FEATURES.index(BAND_FEATURES[0])
    con = connect(lake)
    con.execute(NO_PROGRESS_BAR_SQL)  # progress is the caller's (``-q`` means quiet)
    try:
        for d, day in enumerate(states.days):
            rows = np.flatnonzero(states.day == d)
            refs = StateRefs(np.ascontiguousarray(states.event_id[rows]),
                             np.ascontiguousarray(states.ts[rows]),
                             np.ascontiguousarray(states.mid[rows]))
            order = np.argsort(refs.event_id, kind="stable")
            sums = band_sums(con, symbol, day, StateRefs(*(a[order] for a in refs)))
            out[rows[order], first:] = sums
    finally:
        con.close()
    return out


def features(lake: Path | str, symbol: str, start: dt.date,
             end: dt.date | None = None) -> pl.DataFrame:
    """The ``vp_features`` table of ``symbol`` over ``start..end`` as a polars DataFrame.

    One row per state with a valid, uncrossed book (``dt``, ``event_id``, ``ts_event`` and the
    features of :data:`FEATURES`, docs/fit.md), in engine order; the same values as the
    ``vp_features`` view (tested), computed about 14 times faster.

    Raises
    ------
    InputError
        No complete build of ``symbol`` in the range, or no usable state.
    """
    end = start if end is None else end
    symbol = resolve_product(symbol).symbol
    states = load_states(lake, symbol, start, end)
    matrix = feature_matrix(lake, symbol, states)
    days = np.array(states.days, dtype="datetime64[D]")
    frame = pl.DataFrame({
        "dt": pl.Series(days[states.day], dtype=pl.Date),
        "event_id": states.event_id,
        "ts_event": pl.Series(states.ts).cast(pl.Datetime("ns", "UTC")),
    })
    data = pl.DataFrame({name: matrix[:, i] for i, name in enumerate(FEATURES)})
    return pl.concat([frame, data.fill_nan(None)], how="horizontal")


def day_features(lake: Path | str, symbol: str, day: dt.date) -> pl.DataFrame:
    """The feature table of one built partition (one symbol, one day); see :func:`features`."""
    return features(lake, symbol, day, day)
