"""Thresholds, confusion-matrix metrics and the moving-block bootstrap of ``vpbatch evaluate``.

Everything here works on whole arrays (SPEC §13): no Python loop per state or per resample.

Why the bootstrap is cheap: every metric we report is a function of sums over states (a
3 x 3 confusion matrix per predictor, and the sums of a Pearson correlation of ranks for the
information coefficient). The test states are cut into time *cells* of a quarter block; a
block is four consecutive cells, starting at any cell (a moving block on a quarter-block
grid). The sums of every possible block are computed once (``blocks x columns``); a resample
is then the sum of the rows of its drawn blocks, done by one small compiled kernel over all
resamples at once (:func:`_sum_drawn_blocks`). The metrics of all resamples are then
computed as whole arrays.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numba import njit, prange

#: Labels of a target or a call: down, flat (or no call), up.
CLASSES: Final = (-1, 0, 1)
#: Cells per bootstrap block (blocks start on a grid of a quarter block).
CELLS_PER_BLOCK: Final = 4
#: Fewer blocks than this in the test part: no interval (the resamples would all look alike).
MIN_BLOCKS: Final = 10
#: Candidate cut points per continuous score (quantiles of the training part).
THRESHOLD_QUANTILES: Final = 101

#: Metric names, in table order.
METRICS: Final = ("coverage", "hit_rate", "balanced_accuracy", "mcc", "ic")


# ------------------------------------------------------------------------------------------
# Thresholds


def _candidates(ordered: np.ndarray) -> np.ndarray:
    """Cut points between distinct quantiles of the sorted ``ordered`` (never a data value)."""
    at = np.round(np.linspace(0, ordered.size - 1, THRESHOLD_QUANTILES)).astype(np.int64)
    q = np.unique(ordered[at])
    mids = (q[:-1] + q[1:]) / 2.0 if q.size > 1 else np.empty(0)
    return np.concatenate(([-np.inf], mids, [np.inf]))


def fit_thresholds(score: np.ndarray, y: np.ndarray, three_class: bool) -> tuple[float, float]:
    """``(lo, hi)`` maximising balanced accuracy of the call ``+1 if s > hi, -1 if s < lo``.

    Two-class targets (event time, always up or down) gain nothing from a no-call band, so
    ``lo == hi`` there. Three-class targets (clock time) read "no call" as "flat". NaN scores
    are ignored. A training part without a usable class gives ``(-inf, inf)`` (never call).
    """
    ok = np.isfinite(score)
    if not ok.any():
        return -np.inf, np.inf
    order = np.argsort(score[ok], kind="stable")
    s, t = score[ok][order], y[ok][order]
    cand = _candidates(s)
    # below[c][i]: share of class-c states with score < cand[i] (s is sorted, so is s[t == c]).
    below = {}
    for c in CLASSES:
        sc = s[t == c]
        if sc.size:
            below[c] = np.searchsorted(sc, cand, side="left") / sc.size
    if not three_class:
        if -1 not in below or 1 not in below:
            return -np.inf, np.inf
        ba = 0.5 * (below[-1] + 1.0 - below[1])
        i = int(np.argmax(ba))
        return float(cand[i]), float(cand[i])
    parts = []
    lo_idx, hi_idx = np.triu_indices(cand.size)
    if -1 in below:
        parts.append(below[-1][lo_idx])
    if 0 in below:
        parts.append(below[0][hi_idx] - below[0][lo_idx])
    if 1 in below:
        parts.append(1.0 - below[1][hi_idx])
    if len(parts) < 2:
        return -np.inf, np.inf
    ba = np.mean(parts, axis=0)
    i = int(np.argmax(ba))
    return float(cand[lo_idx[i]]), float(cand[hi_idx[i]])


def apply_thresholds(score: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Calls in {-1, 0, +1} (0 = no call; NaN scores make no call)."""
    call = np.zeros(score.shape, np.int8)
    with np.errstate(invalid="ignore"):
        call[score > hi] = 1
        call[score < lo] = -1
    return call


# ------------------------------------------------------------------------------------------
# Per-state sums and metrics


def subset_order(order: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The stable argsort of ``x[keep]`` from the stable argsort ``order`` of ``x``."""
    picked = order[keep[order]]
    return (np.cumsum(keep) - 1)[picked]


def average_ranks(x: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Ranks 1..n with ties averaged (the ranks of Spearman's coefficient); ``order`` is a
    precomputed stable argsort of ``x``."""
    if order is None:
        order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.concatenate(([True], xs[1:] != xs[:-1]))
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.concatenate((starts[1:], [xs.size]))
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = avg[group]
    return ranks


#: Columns of one predictor's block in the per-state matrix.
CONF_COLS: Final = 9
IC_COLS: Final = 6
PRED_COLS: Final = CONF_COLS + IC_COLS


def state_columns(calls: np.ndarray, scores: np.ndarray, y: np.ndarray,
                  change: np.ndarray, cells: np.ndarray | None = None,
                  orders: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """Additive statistics per state, or summed per cell: ``(n or cells, P * 15)`` float64.

    Per predictor: 9 one-hot cells of the confusion matrix (call x target, each in -1/0/+1),
    then ``n, sx, sy, sxx, syy, sxy`` of the centred ranks of the score and of the forward mid
    change, over states where the score is finite (all zero when the predictor has no score).
    With ``cells`` (cell number per state, 0..cells-1) the rows are summed per cell with
    ``np.bincount``, so no ``n x columns`` matrix is ever built.

    Parameters
    ----------
    calls : int8 (P, n)
    scores : float64 (P, n), NaN where the predictor has no continuous score
    y : int8 (n,) target classes
    change : float64 (n,) forward mid change
    cells : int64 (n,), optional
    orders : per predictor, the stable argsort of its scores (saves re-sorting), optional
    """
    n_pred, n = calls.shape
    cell = np.arange(n) if cells is None else np.asarray(cells, np.int64)
    n_cells = int(cell.max()) + 1 if n else 0
    out = np.zeros((n_cells, n_pred * PRED_COLS))
    if n == 0:
        return out
    ycode = y.astype(np.int64) + 1
    ry_all: np.ndarray | None = None
    for p in range(n_pred):
        base = p * PRED_COLS
        code = cell * CONF_COLS + (calls[p].astype(np.int64) + 1) * 3 + ycode
        out[:, base:base + CONF_COLS] = np.bincount(
            code, minlength=n_cells * CONF_COLS).reshape(n_cells, CONF_COLS)
        ok = np.isfinite(scores[p])
        k = int(ok.sum())
        if k < 3:
            continue
        order = orders[p] if orders is not None else None
        if k == n:
            if ry_all is None:
                ry_all = average_ranks(change)
            ry = ry_all
            c = cell
            rx = average_ranks(scores[p], order)
        else:
            ry = average_ranks(change[ok])
            c = cell[ok]
            rx = average_ranks(scores[p, ok],
                               None if order is None else subset_order(order, ok))
        # Centred and scaled ranks keep the sums small and exact enough in float64.
        rx = (rx - (k + 1) / 2.0) / k
        ry = (ry - (k + 1) / 2.0) / k
        for j, w in enumerate((None, rx, ry, rx * rx, ry * ry, rx * ry)):
            out[:, base + CONF_COLS + j] = np.bincount(c, weights=w, minlength=n_cells)
    return out


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def metrics_from_sums(sums: np.ndarray, n_pred: int, three_class: bool) -> np.ndarray:
    """Metrics ``(..., P, 5)`` from summed columns ``(..., P * 15)`` (see :data:`METRICS`).

    * coverage: share of states with a call;
    * hit rate: share of calls equal to the target;
    * balanced accuracy and Matthews correlation: two-class targets over the states with a
      call (chance 0.5 and 0); three-class targets over every state, no call = flat (chance
      1/3 and 0; Gorodkin's multi-class MCC);
    * ic: Pearson correlation of the ranks (Spearman), NaN without a score.
    """
    s = sums.reshape(*sums.shape[:-1], n_pred, PRED_COLS)
    conf = s[..., :CONF_COLS].reshape(*s.shape[:-1], 3, 3)  # [call, target]
    total = conf.sum(axis=(-1, -2))
    called = conf[..., 0, :].sum(-1) + conf[..., 2, :].sum(-1)
    hits = conf[..., 0, 0] + conf[..., 2, 2]
    coverage = _div(called, total)
    hit_rate = _div(hits, called)
    m = conf if three_class else conf[..., [0, 2], :][..., :, [0, 2]]
    diag = np.diagonal(m, axis1=-2, axis2=-1)
    per_class = m.sum(-2)  # targets of each class
    recall = _div(diag, per_class)
    present = per_class > 0
    with np.errstate(invalid="ignore"):
        ba = np.where(present.any(-1),
                      np.nansum(np.where(present, recall, 0.0), -1)
                      / np.maximum(present.sum(-1), 1), np.nan)
    # Gorodkin: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)).
    n = m.sum(axis=(-1, -2))
    c = diag.sum(-1)
    p_k = m.sum(-1)  # predicted per class
    t_k = per_class
    num = c * n - (p_k * t_k).sum(-1)
    den = np.sqrt((n * n - (p_k * p_k).sum(-1)) * (n * n - (t_k * t_k).sum(-1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(n > 0, 0.0, np.nan))
    k, sx, sy, sxx, syy, sxy = (s[..., CONF_COLS + i] for i in range(IC_COLS))
    with np.errstate(invalid="ignore", divide="ignore"):
        kk = np.where(k > 0, k, 1.0)
        cov = sxy - sx * sy / kk
        vx = sxx - sx * sx / kk
        vy = syy - sy * sy / kk
        ic = np.where((k >= 3) & (vx > 0) & (vy > 0), cov / np.sqrt(np.abs(vx * vy)), np.nan)
    return np.stack([coverage, hit_rate, ba, mcc, ic], axis=-1)


# ------------------------------------------------------------------------------------------
# Moving-block bootstrap


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap settings: resamples, interval level and seed."""

    resamples: int = 1_000
    confidence: float = 0.95
    seed: int = 0


def cell_index(ts: np.ndarray, block_ns: int) -> np.ndarray:
    """Dense cell number of each state: quarter-block clock bins, empty bins dropped.

    Dropping empty bins keeps the market's closed hours from turning into empty blocks.
    """
    width = max(int(block_ns) // CELLS_PER_BLOCK, 1)
    if ts.size == 0:
        return np.zeros(0, np.int64)
    bins = (ts - ts[0]) // width  # ts is sorted, so new bins are where the value changes
    return np.concatenate(([0], np.cumsum(bins[1:] != bins[:-1]))).astype(np.int64)


@njit(cache=True, parallel=True)
def _sum_drawn_blocks(block_sums: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``out[r] = sum_j block_sums[starts[r, j]]``: the column sums of every resample."""
    n_res, n_draw = starts.shape
    n_col = block_sums.shape[1]
    out = np.zeros((n_res, n_col))
    for r in prange(n_res):
        acc = np.zeros(n_col)
        for j in range(n_draw):
            row = block_sums[starts[r, j]]
            for k in range(n_col):
                acc[k] += row[k]
        out[r] = acc
    return out


def _distinct_columns(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a[:, first], inverse)`` with ``a == a[:, first][:, inverse]``: identical columns once.

    Columns are grouped by a random projection, then checked exactly (no grouping if any
    check fails).
    """
    probe = np.random.default_rng(0).standard_normal(a.shape[0])
    _, first, inverse = np.unique(probe @ a, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(a[:, first][:, inverse], a):
        return a, np.arange(a.shape[1])
    return a[:, first], inverse


def load_kernels() -> None:
    """Compile (into numba's cache) or load :func:`_sum_drawn_blocks` as
    :func:`block_bootstrap` calls it: ``make install`` runs it (``python -m cli.warm``), so
    that a first ``vpbatch evaluate`` does not spend seconds compiling its parallel loop."""
    block_bootstrap(np.ones((8, 2)), Bootstrap(resamples=2), np.random.default_rng(0))


def block_bootstrap(cell_sums: np.ndarray, settings: Bootstrap,
                    rng: np.random.Generator) -> np.ndarray:
    """Summed columns of each resample, ``(R, columns)``, from per-cell sums ``(cells, columns)``.

    A resample draws ``ceil(cells / 4)`` blocks of four consecutive cells, each starting at a
    uniformly drawn cell (blocks running past the end wrap around: a circular block bootstrap,
    so every cell is equally likely to be drawn). Identical columns (all-zero ones, the
    target's rank sums shared by predictors) are resampled once. Block sums are stored as
    float32 (counts stay exact below 2**24; rank sums lose nothing an interval shows) and
    accumulated in float64.
    """
    n_cells = cell_sums.shape[0]
    if n_cells == 0:
        return np.zeros((settings.resamples, cell_sums.shape[1]))
    unique, inverse = _distinct_columns(cell_sums)
    # Sums of the block starting at each cell (it covers that cell and the next three).
    block_sums = unique.copy()
    for k in range(1, min(CELLS_PER_BLOCK, n_cells)):
        block_sums += np.roll(unique, -k, axis=0)
    n_blocks = -(-n_cells // CELLS_PER_BLOCK)
    starts = rng.integers(0, n_cells, size=(settings.resamples, n_blocks))
    sums = _sum_drawn_blocks(np.ascontiguousarray(block_sums, np.float32), starts)
    return sums[:, inverse.reshape(-1)]


def interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN resamples."""
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
        lo = np.nanquantile(samples, alpha, axis=0)
        hi = np.nanquantile(samples, 1.0 - alpha, axis=0)
    return lo, hi
