"""``vpbatch evaluate``: does the regime predict the next move? (SPEC §13)

The pipeline, all on whole arrays (numpy over the ``vp_snapshot`` rows of the built days):

1. :func:`load_states` reads the states of ``symbol`` over a date range through the lake's
   DuckDB view, and drops (and counts) states with an invalid or crossed book.
2. :func:`compute_targets`: direction of the mid after the 1st, 2nd and 5th next mid change
   (event time) and over 1/5/30/60 s (clock time, flat is a class); missing past the end.
3. :func:`compute_predictors`: ``regime``, ``regime_score``, queue imbalance, micro-price
   minus mid, order-flow imbalance over 1/5/10 s, momentum over 1/5/10 s. Each uses states
   ``<= n`` only.
4. :func:`evaluate_states`: thresholds fitted on the training part (earlier days, or the
   first half of one day), metrics on the test part with moving-block bootstrap intervals
   (:mod:`vpbatch.evaluate.stats`).

Every computation is per day: a target never reaches into the next day, a trailing window
never reaches into the previous one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from vpbatch.clock import NS_PER_SECOND
from vpbatch.errors import ConfigError, InputError
from vpbatch.evaluate.stats import (
    CELLS_PER_BLOCK,
    METRICS,
    MIN_BLOCKS,
    Bootstrap,
    apply_thresholds,
    block_bootstrap,
    cell_index,
    fit_thresholds,
    interval,
    metrics_from_sums,
    state_columns,
    subset_order,
)
from vpbatch.products import resolve_product
from vpbatch.sql import connect, execute
from vpbatch.store.partitions import list_partitions

#: Event-time horizons: the h-th next change of the mid.
EVENT_HORIZONS: Final = (1, 2, 5)
#: Clock-time horizons (seconds).
CLOCK_HORIZONS: Final = (1, 5, 30, 60)
#: Trailing windows of order-flow imbalance and momentum (seconds).
TRAILING_WINDOWS: Final = (1, 5, 10)
#: The shortest bootstrap block (SPEC §13: block = horizon, at least 1 s).
MIN_BLOCK_NS: Final = NS_PER_SECOND
#: Below this many test states a result is flagged as a small sample.
SMALL_SAMPLE: Final = 2_000
#: ... or when the test part spans fewer bootstrap blocks than this.
SMALL_BLOCKS: Final = 30

#: The states of one symbol over a date range, in engine order.
STATES_SQL: Final = """
SELECT dt, event_id, epoch_ns(ts_event) AS ts,
       best_bid_price AS bid, best_ask_price AS ask,
       best_bid_size AS bid_size, best_ask_size AS ask_size,
       book_valid, crossed, CAST(regime AS VARCHAR) AS regime, regime_score,
       regime_intensity
FROM vp_snapshot
WHERE symbol = $symbol AND dt BETWEEN $start AND $end
ORDER BY dt, event_id
"""


# ------------------------------------------------------------------------------------------
# States


@dataclass(frozen=True)
class States:
    """Usable states (valid, uncrossed books) as arrays, and what was dropped."""

    day: np.ndarray  # int32 day number (0 = first day)
    days: tuple[dt.date, ...]
    ts: np.ndarray  # int64 ns
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    regime: np.ndarray  # int8 +1 UP, -1 DOWN, 0 CHOP
    regime_score: np.ndarray
    total: int = 0
    excluded_invalid: int = 0
    excluded_crossed: int = 0
    #: ``vp_snapshot.event_id`` and ``regime_intensity`` (empty when not read from the lake).
    event_id: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    regime_intensity: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def mid(self) -> np.ndarray:
        return (self.bid + self.ask) / 2.0

    def __len__(self) -> int:
        return int(self.ts.size)


def states_from_frame(frame: pl.DataFrame) -> States:
    """Arrays from ``vp_snapshot`` rows (columns of :data:`STATES_SQL`); drops and counts
    states whose book is invalid (or lacks a price or size) or crossed."""
    total = frame.height
    valid = (frame["book_valid"].fill_null(False)
             & frame["bid"].is_not_null() & frame["ask"].is_not_null()
             & (frame["bid_size"].fill_null(0) > 0) & (frame["ask_size"].fill_null(0) > 0))
    crossed = valid & (frame["crossed"].fill_null(False) | (frame["bid"] >= frame["ask"]))
    keep = valid & ~crossed
    kept = frame.filter(keep)
    day_values = kept["dt"].to_list()
    days = tuple(sorted(set(day_values)))
    index = {d: i for i, d in enumerate(days)}
    regime = kept["regime"].replace_strict({"UP": 1, "DOWN": -1}, default=0,
                                           return_dtype=pl.Int8)
    return States(
        day=np.array([index[d] for d in day_values], np.int32) if days else np.empty(0, np.int32),
        days=days,
        ts=kept["ts"].to_numpy().astype(np.int64),
        bid=kept["bid"].to_numpy().astype(float),
        ask=kept["ask"].to_numpy().astype(float),
        bid_size=kept["bid_size"].to_numpy().astype(float),
        ask_size=kept["ask_size"].to_numpy().astype(float),
        regime=regime.to_numpy(),
        regime_score=kept["regime_score"].fill_null(np.nan).to_numpy().astype(float),
        total=total,
        excluded_invalid=int((~valid).sum()),
        excluded_crossed=int(crossed.sum()),
        event_id=kept["event_id"].to_numpy().astype(np.int64),
        regime_intensity=(kept["regime_intensity"].fill_null(np.nan).to_numpy().astype(float)
                          if "regime_intensity" in kept.columns else np.full(kept.height, np.nan)),
    )


def load_states(lake: Path | str, symbol: str, start: dt.date, end: dt.date) -> States:
    """The states of ``symbol`` from the complete builds of ``start..end`` (inclusive).

    Raises
    ------
    InputError
        When no day of the range is built (the message lists the built days).
    """
    product = resolve_product(symbol)
    if end < start:
        raise ConfigError(f"--end: {end.isoformat()} is before --start {start.isoformat()}")
    built = sorted({p.dt for p in list_partitions(lake, "vp_snapshot")
                    if p.symbol == product.symbol})
    wanted = [d for d in built if start.isoformat() <= d <= end.isoformat()]
    if not wanted:
        span = start.isoformat() if start == end else f"{start.isoformat()}..{end.isoformat()}"
        hint = (f"built days of {product.symbol}: {', '.join(built[-12:])}" if built
                else f"no builds of {product.symbol}")
        raise InputError(f"{lake}: no complete build of {product.symbol} for {span} ({hint}); "
                         f"run `vpbatch build --symbol {product.symbol} --dt ...` first")
    con = connect(lake)
    try:
        frame = execute(con, STATES_SQL, {"symbol": product.symbol, "start": start, "end": end})
    finally:
        con.close()
    states = states_from_frame(frame)
    if len(states) == 0:
        raise InputError(f"{product.symbol} {start.isoformat()}..{end.isoformat()}: "
                         f"{states.total} states, none with a valid uncrossed book")
    return states


# ------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Target:
    """One target: classes (-1/0/+1), forward mid change and when it is known."""

    name: str
    three_class: bool
    horizon_ns: int  # 0 for event-time targets (block length comes from the data)
    y: np.ndarray  # int8
    change: np.ndarray  # float64, NaN = missing
    end_ts: np.ndarray  # int64 time at which the outcome is known (purging)

    @property
    def available(self) -> np.ndarray:
        return np.isfinite(self.change) & ((self.y != 0) | self.three_class)


def _day_bounds(day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index of each state's day, and one past its last."""
    n = day.size
    starts = np.flatnonzero(np.concatenate(([True], day[1:] != day[:-1])))
    ends = np.concatenate((starts[1:], [n]))
    counts = ends - starts
    return np.repeat(starts, counts), np.repeat(ends, counts)


def _event_target(s: States, h: int) -> Target:
    mid = s.mid
    n = mid.size
    _, day_end = _day_bounds(s.day)
    changed = np.concatenate(([False], (mid[1:] != mid[:-1]) & (s.day[1:] == s.day[:-1])))
    pos = np.flatnonzero(changed)
    j = np.searchsorted(pos, np.arange(n), side="right") + (h - 1)
    ok = j < pos.size
    at = np.where(ok, pos[np.minimum(j, max(pos.size - 1, 0))] if pos.size else 0, 0)
    ok &= at < day_end  # the h-th change must happen on the same day
    change = np.where(ok, mid[at] - mid, np.nan)
    y = np.sign(np.nan_to_num(change)).astype(np.int8)
    end_ts = np.where(ok, s.ts[at], np.iinfo(np.int64).max)
    return Target(f"event_{h}", False, 0, y, change, end_ts)


def _clock_target(s: States, seconds: int) -> Target:
    mid = s.mid
    tau = seconds * NS_PER_SECOND
    _, day_end = _day_bounds(s.day)
    at = _last_at_or_before(s.day, s.ts, s.ts + tau)
    last_ts = s.ts[day_end - 1]
    ok = (s.ts + tau) <= last_ts
    change = np.where(ok, mid[at] - mid, np.nan)
    y = np.sign(np.nan_to_num(change)).astype(np.int8)
    return Target(f"clock_{seconds}s", True, tau, y, change, s.ts + tau)


def _last_at_or_before(day: np.ndarray, ts: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Index of the last state of the same day with ``ts <= when`` (-1 maps to the day start).

    Days are searched in one pass by offsetting each day's times past the previous days'.
    """
    span = int(ts.max() - ts.min()) + 1 if ts.size else 1
    pad = 2 * span + int(np.max(when - ts, initial=0)) + 1
    shift = day.astype(np.int64) * pad
    key = ts - ts.min() + shift
    want = when - ts.min() + shift
    idx = np.searchsorted(key, want, side="right") - 1
    day_start, _ = _day_bounds(day)
    return np.maximum(idx, day_start)


def compute_targets(s: States) -> list[Target]:
    """SPEC §13 targets in table order: ``event_1/2/5`` then ``clock_1s/5s/30s/60s``.

    Event time: the sign of the mid at the h-th next change minus the mid now (up or down;
    a return to the same mid after 2 or 5 changes is *missing*, not flat). Clock time: the
    sign of ``m(t + tau) - m(t)`` with ``m(t + tau)`` the mid of the last state at or before
    ``t + tau``; flat is a class; missing when ``t + tau`` is past the day's last state.
    """
    return ([_event_target(s, h) for h in EVENT_HORIZONS]
            + [_clock_target(s, sec) for sec in CLOCK_HORIZONS])


# ------------------------------------------------------------------------------------------
# Predictors


@dataclass(frozen=True)
class Predictor:
    """A predictor: a fixed call, or a continuous score turned into a call by thresholds.

    Kind "fitted" (a model fitted per target, walk-forward, by :mod:`vpbatch.fit`) brings its
    own calls and score for each target in ``per_target``; a target it lacks gets no rows.
    """

    name: str
    kind: str  # "call" (fixed calls), "score" (thresholds fitted), "majority", "fitted"
    call: np.ndarray | None  # int8 calls for kind "call"
    score: np.ndarray  # float64 score for the IC (NaN: none)
    per_target: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None  # (call, score)

    def score_for(self, target: str) -> np.ndarray:
        """The continuous score used for ``target``'s IC."""
        if self.per_target is not None:
            return self.per_target[target][1] if target in self.per_target else self.score
        return self.score

    def covers(self, target: str) -> bool:
        """Whether the predictor makes calls for ``target`` (a fitted one may not)."""
        return self.per_target is None or target in self.per_target


def _trailing_sum(s: States, values: np.ndarray, seconds: int) -> np.ndarray:
    """Sum of ``values`` over the same day's states with ``ts`` in ``(t - w, t]``."""
    cs = np.concatenate(([0.0], np.cumsum(values)))
    first = _last_at_or_before(s.day, s.ts, s.ts - seconds * NS_PER_SECOND) + 1
    day_start, _ = _day_bounds(s.day)
    # _last_at_or_before clamps to the day's first state; nothing at or before means "from
    # the day's first state".
    before = (s.ts - seconds * NS_PER_SECOND) < s.ts[day_start]
    first = np.where(before, day_start, first)
    return cs[np.arange(values.size) + 1] - cs[first]


def ofi_terms(b0: np.ndarray, a0: np.ndarray, qb0: np.ndarray, qa0: np.ndarray,
              b1: np.ndarray, a1: np.ndarray, qb1: np.ndarray, qa1: np.ndarray) -> np.ndarray:
    """Cont-Kukanov-Stoikov ``e_n`` from the touch before (``*0``) and after (``*1``) each state
    change, elementwise (shared by :func:`order_flow_imbalance` and the streaming scorer of
    ``build --model``, so both compute the same bits)."""
    return (b1 >= b0) * qb1 - (b1 <= b0) * qb0 - (a1 <= a0) * qa1 + (a1 >= a0) * qa0


def touch_signals(bid: np.ndarray, ask: np.ndarray, bid_size: np.ndarray,
                  ask_size: np.ndarray) -> dict[str, np.ndarray]:
    """Queue imbalance and micro-price minus mid of each state's touch, elementwise."""
    depth = bid_size + ask_size
    mid = (bid + ask) / 2.0
    return {"queue_imbalance": (bid_size - ask_size) / depth,
            "microprice": (ask * bid_size + bid * ask_size) / depth - mid}


def order_flow_imbalance(s: States) -> np.ndarray:
    """Cont-Kukanov-Stoikov ``e_n`` per state change (0 for a day's first state)."""
    b, a, qb, qa = s.bid, s.ask, s.bid_size, s.ask_size
    e = np.zeros(b.size)
    e[1:] = ofi_terms(b[:-1], a[:-1], qb[:-1], qa[:-1], b[1:], a[1:], qb[1:], qa[1:])
    e[1:][s.day[1:] != s.day[:-1]] = 0.0
    return e


def level1_signals(s: States) -> dict[str, np.ndarray]:
    """Queue imbalance, micro-price minus mid and OFI over 1/5/10 s (SPEC §13), by name.

    Each value at state n uses states <= n only (the fitted models' level-1 features too).
    ``vpbatch.fit.online.Level1Window`` computes the same values a batch of states at a time
    (tested equal, bit for bit).
    """
    out = touch_signals(s.bid, s.ask, s.bid_size, s.ask_size)
    e = order_flow_imbalance(s)
    out.update({f"ofi_{w}s": _trailing_sum(s, e, w) for w in TRAILING_WINDOWS})
    return out


def compute_predictors(s: States) -> list[Predictor]:
    """SPEC §13 predictors in table order. Each value at state n uses states <= n only."""
    mid = s.mid
    signals = level1_signals(s)
    out = [
        Predictor("regime", "call", s.regime.astype(np.int8), np.full(len(s), np.nan)),
        Predictor("regime_score", "score", None, s.regime_score),
        Predictor("queue_imbalance", "score", None, signals["queue_imbalance"]),
        Predictor("microprice", "score", None, signals["microprice"]),
    ]
    out += [Predictor(f"ofi_{w}s", "score", None, signals[f"ofi_{w}s"])
            for w in TRAILING_WINDOWS]
    day_start, _ = _day_bounds(s.day)
    for w in TRAILING_WINDOWS:
        past = s.ts - w * NS_PER_SECOND
        at = _last_at_or_before(s.day, s.ts, past)
        ret = np.where(past >= s.ts[day_start], mid - mid[at], np.nan)
        call = np.sign(np.nan_to_num(ret)).astype(np.int8)
        out.append(Predictor(f"momentum_{w}s", "call", call, ret))
    out.append(Predictor("majority", "majority", None, np.full(len(s), np.nan)))
    return out


# ------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Split:
    """Which states train and which test, for one test day."""

    test_day: int
    train: np.ndarray  # bool mask over states
    test: np.ndarray
    split_ts: int  # first test time (training outcomes known after it are purged)


def walk_forward_splits(s: States) -> tuple[str, list[Split]]:
    """Walk-forward by day (train on all earlier days, test each later day); a single day
    trains on its first half of states and tests on the second half."""
    n_days = len(s.days)
    if n_days == 1:
        half = len(s) // 2
        train = np.arange(len(s)) < half
        return "first half of the day trains, second half tests", [
            Split(0, train, ~train, int(s.ts[half]) if half < len(s) else 0)]
    splits = []
    for d in range(1, n_days):
        test = s.day == d
        splits.append(Split(d, s.day < d, test, int(s.ts[np.argmax(test)])))
    return "walk-forward by day: each day is tested with thresholds fitted on all earlier days", \
        splits


@dataclass
class Evaluation:
    """What ``vpbatch evaluate`` reports (see :func:`evaluation_to_dict`)."""

    symbol: str
    days: list[str]
    split: str
    states: dict[str, int]
    targets: list[dict[str, Any]]
    predictors: list[str]
    results: list[dict[str, Any]]
    thresholds: list[dict[str, Any]]
    bootstrap: dict[str, Any]
    calibration: list[dict[str, Any]] = field(default_factory=list)
    #: Paired differences (``a`` minus ``b``) per target and metric, with paired intervals.
    differences: list[dict[str, Any]] = field(default_factory=list)
    #: The fitted models behind the ``fit_*`` / ``model_*`` predictors (one row per fit).
    fits: list[dict[str, Any]] = field(default_factory=list)


def _block_ns(target: Target, s: States, test: np.ndarray) -> int:
    """Bootstrap block length: the horizon, at least 1 s; for event time the median time
    until the outcome is known on the test part."""
    if target.horizon_ns:
        return max(target.horizon_ns, MIN_BLOCK_NS)
    ok = test & target.available
    if not ok.any():
        return MIN_BLOCK_NS
    return max(int(np.median(target.end_ts[ok] - s.ts[ok])), MIN_BLOCK_NS)


def evaluate_states(s: States, *, symbol: str = "", settings: Bootstrap | None = None,
                    targets: Sequence[Target] | None = None,
                    predictors: Sequence[Predictor] | None = None,
                    differences: Sequence[tuple[str, str]] = (),
                    progress: Callable[[str], None] | None = None) -> Evaluation:
    """Fit on the training part, score the test part, bootstrap every metric.

    ``targets`` and ``predictors`` default to :func:`compute_targets` and
    :func:`compute_predictors` (tests pass modified ones, e.g. shuffled futures);
    ``differences``: pairs ``(a, b)`` of predictor names whose MCC and IC difference ``a - b``
    is reported per target with a paired interval (both resampled with the same blocks);
    ``progress`` is called with each target's name when it is done.
    """
    settings = settings or Bootstrap()
    if not 0.0 < settings.confidence < 1.0:
        raise ConfigError(f"confidence: must be in (0, 1), was {settings.confidence}")
    if settings.resamples < 10:
        raise ConfigError(f"resamples: must be at least 10, was {settings.resamples}")
    targets = list(targets) if targets is not None else compute_targets(s)
    predictors = list(predictors) if predictors is not None else compute_predictors(s)
    split_text, splits = walk_forward_splits(s)
    rng = np.random.default_rng(settings.seed)
    results: list[dict[str, Any]] = []
    thresholds: list[dict[str, Any]] = []
    target_info: list[dict[str, Any]] = []
    diff_rows: list[dict[str, Any]] = []
    test_all = np.zeros(len(s), bool)
    for sp in splits:
        test_all |= sp.test
    n_pred = len(predictors)
    tested = np.flatnonzero(test_all)
    # One sort per predictor over the test part; each target takes its subset's order.
    full_orders = [np.argsort(pr.score[tested], kind="stable") if pr.per_target is None
                   else None for pr in predictors]
    names = [pr.name for pr in predictors]
    for a, b in differences:
        for name in (a, b):
            if name not in names:
                raise ConfigError(f"differences: no predictor {name!r} (have: {', '.join(names)})")
    for tg in targets:
        avail = tg.available
        calls = np.zeros((n_pred, len(s)), np.int8)
        for sp in splits:
            train = sp.train & avail & (tg.end_ts <= sp.split_ts)
            for p, pr in enumerate(predictors):
                if pr.kind == "call":
                    assert pr.call is not None
                    calls[p, sp.test] = pr.call[sp.test]
                elif pr.kind == "fitted":
                    if pr.per_target is not None and tg.name in pr.per_target:
                        calls[p, sp.test] = pr.per_target[tg.name][0][sp.test]
                elif pr.kind == "majority":
                    classes, counts = np.unique(tg.y[train], return_counts=True)
                    major = int(classes[np.argmax(counts)]) if classes.size else 0
                    calls[p, sp.test] = major
                    thresholds.append({"predictor": pr.name, "target": tg.name,
                                       "test_day": str(s.days[sp.test_day]), "class": major})
                else:
                    lo, hi = fit_thresholds(pr.score[train], tg.y[train], tg.three_class)
                    calls[p, sp.test] = apply_thresholds(pr.score[sp.test], lo, hi)
                    thresholds.append({"predictor": pr.name, "target": tg.name,
                                       "test_day": str(s.days[sp.test_day]),
                                       "lo": _f(lo), "hi": _f(hi),
                                       "train_states": int(train.sum())})
        use = test_all & avail
        idx = np.flatnonzero(use)
        scores = np.stack([pr.score_for(tg.name)[idx] for pr in predictors])
        block = _block_ns(tg, s, test_all)
        keep = avail[tested]
        orders = [None if o is None else subset_order(o, keep) for o in full_orders]
        sums = state_columns(calls[:, idx], scores, tg.y[idx], tg.change[idx],
                             cells=cell_index(s.ts[idx], block), orders=orders)
        point = metrics_from_sums(sums.sum(0), n_pred, tg.three_class)
        boot = block_bootstrap(sums, settings, rng)
        samples = metrics_from_sums(boot, n_pred, tg.three_class)
        ci_lo, ci_hi = interval(samples, settings.confidence)
        n_blocks = -(-sums.shape[0] // CELLS_PER_BLOCK)
        if n_blocks < MIN_BLOCKS:  # the test part spans too few blocks for an interval
            ci_lo = np.full_like(ci_lo, np.nan)
            ci_hi = np.full_like(ci_hi, np.nan)
        per_class = {str(c): int((tg.y[idx] == c).sum()) for c in (-1, 0, 1)}
        target_info.append({
            "target": tg.name, "classes": 3 if tg.three_class else 2,
            "horizon_s": tg.horizon_ns / NS_PER_SECOND if tg.horizon_ns else None,
            "test_states": int(idx.size),
            "missing": int((test_all & ~avail).sum()),
            "down": per_class["-1"], "flat": per_class["0"], "up": per_class["1"],
            "block_s": round(block / NS_PER_SECOND, 3), "blocks": int(n_blocks),
            "small_sample": bool(idx.size < SMALL_SAMPLE or n_blocks < SMALL_BLOCKS),
            "chance_balanced_accuracy": 1 / 3 if tg.three_class else 0.5,
        })
        for p, pr in enumerate(predictors):
            if not pr.covers(tg.name):
                continue
            for m, metric in enumerate(METRICS):
                value = float(point[p, m])
                if not np.isfinite(value):
                    continue
                results.append({"predictor": pr.name, "target": tg.name, "metric": metric,
                                "estimate": value, "ci_low": _f(ci_lo[p, m]),
                                "ci_high": _f(ci_hi[p, m]), "n": int(idx.size)})
        diff_rows += paired_differences(
            tg.name, [(names.index(a), names.index(b), a, b) for a, b in differences
                      if predictors[names.index(a)].covers(tg.name)
                      and predictors[names.index(b)].covers(tg.name)],
            point, samples, settings.confidence, with_interval=n_blocks >= MIN_BLOCKS)
        if progress is not None:
            progress(tg.name)
    cal = calibration(s, targets, test_all)
    return Evaluation(
        symbol=symbol, days=[d if isinstance(d, str) else d.isoformat() for d in s.days],
        split=split_text,
        states={"total": s.total, "excluded_invalid_book": s.excluded_invalid,
                "excluded_crossed_book": s.excluded_crossed, "evaluated": len(s),
                "test": int(test_all.sum())},
        targets=target_info, predictors=[pr.name for pr in predictors], results=results,
        thresholds=thresholds,
        bootstrap={"resamples": settings.resamples, "confidence": settings.confidence,
                   "seed": settings.seed, "method": "moving block (circular), blocks start on "
                   "a quarter-block clock grid; block = horizon, at least 1 s"},
        calibration=cal, differences=diff_rows)


#: Metrics whose paired differences are reported (SPEC §15).
DIFFERENCE_METRICS: Final = ("mcc", "ic")


def paired_differences(target: str, pairs: Sequence[tuple[int, int, str, str]],
                       point: np.ndarray, samples: np.ndarray, confidence: float, *,
                       with_interval: bool = True) -> list[dict[str, Any]]:
    """``a - b`` in MCC and IC: the estimate from the point metrics ``(P, 5)``, the interval from
    the same resamples ``(R, P, 5)`` of both (the blocks drawn are shared, so the interval is
    that of the paired difference, narrower than two separate intervals would suggest)."""
    rows: list[dict[str, Any]] = []
    for pa, pb, a, b in pairs:
        for metric in DIFFERENCE_METRICS:
            m = METRICS.index(metric)
            estimate = float(point[pa, m] - point[pb, m])
            if not np.isfinite(estimate):
                continue
            lo, hi = interval(samples[:, pa, m] - samples[:, pb, m], confidence)
            rows.append({"a": a, "b": b, "target": target, "metric": metric,
                         "estimate": estimate,
                         "ci_low": _f(lo) if with_interval else None,
                         "ci_high": _f(hi) if with_interval else None})
    return rows


def _f(x: Any) -> float | None:
    v = float(x)
    return v if np.isfinite(v) else None


#: Bins of ``regime_score`` for the calibration table.
CALIBRATION_BINS: Final = np.linspace(-1.0, 1.0, 11)


def calibration(s: States, targets: Sequence[Target], test: np.ndarray) -> list[dict[str, Any]]:
    """Share of up moves per ``regime_score`` bin on the test part, for each event-time target
    (with a Wilson 95% interval: a calibration curve, read against the diagonal 0.5 + score/2
    only if the score were a probability)."""
    rows: list[dict[str, Any]] = []
    score = s.regime_score
    edges = CALIBRATION_BINS
    for tg in targets:
        if tg.three_class:
            continue
        ok = test & tg.available & np.isfinite(score)
        b = np.clip(np.digitize(score[ok], edges) - 1, 0, edges.size - 2)
        n = np.bincount(b, minlength=edges.size - 1)
        up = np.bincount(b, weights=(tg.y[ok] > 0).astype(float), minlength=edges.size - 1)
        for i in np.flatnonzero(n):
            p = up[i] / n[i]
            z = 1.96
            den = 1 + z * z / n[i]
            centre = (p + z * z / (2 * n[i])) / den
            half = z * np.sqrt(p * (1 - p) / n[i] + z * z / (4 * n[i] * n[i])) / den
            rows.append({"target": tg.name, "bin_low": float(edges[i]),
                         "bin_high": float(edges[i + 1]), "n": int(n[i]), "up_share": float(p),
                         "ci_low": float(centre - half), "ci_high": float(centre + half)})
    return rows


def evaluate(lake: Path | str, symbol: str, start: dt.date, end: dt.date | None = None, *,
             settings: Bootstrap | None = None,
             progress: Callable[[str], None] | None = None) -> Evaluation:
    """Evaluate the built days ``start..end`` of ``symbol`` (SPEC §13).

    Parameters
    ----------
    lake : Path
        Lake root with complete ``vp_snapshot`` builds.
    symbol : str
        Contract or ticker as built.
    start, end : datetime.date
        Inclusive range; ``end`` defaults to ``start`` (one day: first half trains).
    settings : Bootstrap, optional
        Resamples (default 1,000), confidence (0.95) and seed (0).
    progress : callable, optional
        Called with each target's name when it is evaluated.

    Returns
    -------
    Evaluation

    Raises
    ------
    InputError
        No complete build in the range, or no state with a valid uncrossed book.
    ConfigError
        A bad range or bootstrap setting.
    """
    end = start if end is None else end
    states = load_states(lake, symbol, start, end)
    return evaluate_states(states, symbol=resolve_product(symbol).symbol, settings=settings,
                           progress=progress)
