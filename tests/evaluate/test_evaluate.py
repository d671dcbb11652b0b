"""``vpbatch evaluate`` on hand-made states: targets, predictors, thresholds, metrics (SPEC §13).

Expected values come from the SPEC's formulas written out directly (loops, dicts) in the test,
never from the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import numpy as np
import polars as pl
import pytest

from vpbatch.clock import NS_PER_SECOND
from vpbatch.errors import ConfigError
from vpbatch.evaluate.evaluation import (
    Predictor,
    States,
    compute_predictors,
    compute_targets,
    evaluate_states,
    order_flow_imbalance,
    states_from_frame,
)
from vpbatch.evaluate.stats import (
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

TICK = 0.25


def make_states(mid_ticks: list[float] | np.ndarray, ts_s: list[float] | np.ndarray, *,
                bid_size: np.ndarray | None = None, ask_size: np.ndarray | None = None,
                regime: np.ndarray | None = None, score: np.ndarray | None = None,
                day: np.ndarray | None = None) -> States:
    mid = np.asarray(mid_ticks, float) * TICK
    n = mid.size
    return States(
        day=np.zeros(n, np.int32) if day is None else np.asarray(day, np.int32),
        days=(dt.date(2026, 2, 6),) if day is None else tuple(
            dt.date(2026, 2, 2) + dt.timedelta(days=int(d)) for d in np.unique(day)),
        ts=(np.asarray(ts_s, float) * NS_PER_SECOND).astype(np.int64),
        bid=mid - TICK / 2, ask=mid + TICK / 2,
        bid_size=np.full(n, 5.0) if bid_size is None else np.asarray(bid_size, float),
        ask_size=np.full(n, 5.0) if ask_size is None else np.asarray(ask_size, float),
        regime=np.zeros(n, np.int8) if regime is None else np.asarray(regime, np.int8),
        regime_score=np.zeros(n) if score is None else np.asarray(score, float),
        total=n)


def random_walk_states(n: int, seed: int, rate_hz: float = 20.0) -> States:
    rng = np.random.default_rng(seed)
    steps = rng.choice([-1, 0, 0, 0, 1], size=n)
    ts = np.cumsum(rng.exponential(1.0 / rate_hz, size=n))
    return make_states(np.cumsum(steps) + 1000, ts,
                       bid_size=rng.integers(1, 30, n), ask_size=rng.integers(1, 30, n),
                       regime=rng.choice([-1, 0, 1], n), score=rng.uniform(-1, 1, n))


def _arrays(s: States) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
            if isinstance(getattr(s, f.name), np.ndarray)}


def by_name(items: list) -> dict:
    return {x.name: x for x in items}


# ------------------------------------------------------------------------------------------
# Targets


def test_event_targets_given_mid_path_take_sign_at_hth_next_change() -> None:
    # mid (ticks):   0  0  1  1  0  2  2
    s = make_states([0, 0, 1, 1, 0, 2, 2], [0, 1, 2, 3, 4, 5, 6])
    t = by_name(compute_targets(s))
    e1 = t["event_1"]
    # Next change after states 0,1 is to 1 (up); after 2,3 to 0 (down); after 4 to 2 (up).
    assert e1.y[:5].tolist() == [1, 1, -1, -1, 1]
    assert np.isnan(e1.change[5:]).all() and not e1.available[5:].any()
    e2 = t["event_2"]
    # State 0: 2nd change lands on 0 -> no move: missing (event targets are up or down).
    assert not e2.available[0] and not e2.available[1]
    # State 2 (mid 1): 2nd next change lands on 2 -> up.
    assert e2.available[2] and e2.y[2] == 1 and e2.change[2] == pytest.approx(TICK)
    assert not t["event_5"].available.any()


def test_clock_targets_given_times_use_last_state_at_or_before_and_flat_class() -> None:
    # States at 0, 0.5, 1.0, 1.7, 2.0 s; mids 0, 1, 1, 0, 0.
    s = make_states([0, 1, 1, 0, 0], [0.0, 0.5, 1.0, 1.7, 2.0])
    c1 = by_name(compute_targets(s))["clock_1s"]
    # t=0 -> m(1.0)=1 up; t=0.5 -> m(1.5) = state at 1.0 = 1 -> flat; t=1.0 -> m(2.0)=0 down.
    assert c1.y[:3].tolist() == [1, 0, -1]
    assert c1.available[:3].all()
    # t=1.7 and 2.0: t + 1 s is past the last state: missing, not flat.
    assert not c1.available[3:].any()
    assert c1.three_class


def test_targets_given_two_days_never_reach_into_the_next_day() -> None:
    s = make_states([0, 0, 5, 6], [0, 1, 100_000, 100_001], day=np.array([0, 0, 1, 1]))
    t = by_name(compute_targets(s))
    assert not t["event_1"].available[:2].any()  # the change happens on the next day
    assert t["event_1"].available[2]
    assert not t["clock_60s"].available.any()


# ------------------------------------------------------------------------------------------
# Predictors


def test_order_flow_imbalance_given_quote_changes_matches_cont_kukanov_stoikov() -> None:
    rng = np.random.default_rng(3)
    n = 200
    bid = 100 + np.cumsum(rng.choice([-1, 0, 0, 1], n)) * TICK
    ask = bid + TICK * rng.choice([1, 1, 2], n)
    qb, qa = rng.integers(1, 20, n).astype(float), rng.integers(1, 20, n).astype(float)
    s = States(day=np.zeros(n, np.int32), days=(dt.date(2026, 2, 6),),
               ts=np.arange(n, dtype=np.int64) * NS_PER_SECOND // 10, bid=bid, ask=ask, bid_size=qb,
               ask_size=qa, regime=np.zeros(n, np.int8), regime_score=np.zeros(n), total=n)
    expected = [0.0]
    for i in range(1, n):
        e = 0.0
        if bid[i] >= bid[i - 1]:
            e += qb[i]
        if bid[i] <= bid[i - 1]:
            e -= qb[i - 1]
        if ask[i] <= ask[i - 1]:
            e -= qa[i]
        if ask[i] >= ask[i - 1]:
            e += qa[i - 1]
        expected.append(e)
    np.testing.assert_allclose(order_flow_imbalance(s), expected)
    # OFI(1 s) at state i sums e over states in (t - 1 s, t]: 10 states at 10 per second.
    ofi = by_name(compute_predictors(s))["ofi_1s"].score
    for i in (0, 5, 50, 199):
        assert ofi[i] == pytest.approx(sum(expected[max(0, i - 9):i + 1]))


def test_book_predictors_given_sizes_follow_gould_bonart_and_stoikov() -> None:
    s = make_states([10, 10], [0, 1], bid_size=np.array([30, 1]), ask_size=np.array([10, 1]))
    p = by_name(compute_predictors(s))
    assert p["queue_imbalance"].score.tolist() == pytest.approx([0.5, 0.0])
    # (a*qb + b*qa)/(qb+qa) - m with a - b = 1 tick: (qb - qa)/(qb + qa) * tick / 2.
    assert p["microprice"].score.tolist() == pytest.approx([0.5 * TICK / 2, 0.0])


def test_predictors_given_future_states_changed_are_unchanged_no_look_ahead() -> None:
    s = random_walk_states(3_000, seed=1)
    cut = 1_700
    head = dataclasses.replace(s, **{k: v[:cut] for k, v in _arrays(s).items()})
    full = compute_predictors(s)
    part = compute_predictors(head)
    for a, b in zip(full, part, strict=True):
        np.testing.assert_array_equal(a.score[:cut], b.score, err_msg=a.name)
        if a.call is not None:
            np.testing.assert_array_equal(a.call[:cut], b.call, err_msg=a.name)


def test_momentum_given_day_start_is_missing_and_sign_of_trailing_return() -> None:
    s = make_states([0, 1, 3, 2], [0.0, 0.5, 1.2, 1.6])
    m = by_name(compute_predictors(s))["momentum_1s"]
    assert np.isnan(m.score[:2]).all() and m.call[:2].tolist() == [0, 0]
    # t=1.2: m(0.2) = state at 0.0 -> 3 - 0 = +3 ticks; t=1.6: m(0.6) = state at 0.5 -> +1.
    assert m.score[2:].tolist() == pytest.approx([3 * TICK, 1 * TICK])
    assert m.call[2:].tolist() == [1, 1]


# ------------------------------------------------------------------------------------------
# Exclusions


def test_states_from_frame_given_invalid_and_crossed_books_excludes_and_counts_them() -> None:
    frame = pl.DataFrame({
        "dt": [dt.date(2026, 2, 6)] * 5, "event_id": [1, 2, 3, 4, 5],
        "ts": [1, 2, 3, 4, 5],
        "bid": [100.0, None, 100.0, 100.5, 100.0], "ask": [100.25, 100.25, 100.25, 100.25,
                                                          100.25],
        "bid_size": [1, 1, 1, 1, 0], "ask_size": [1, 1, 1, 1, 1],
        "book_valid": [True, True, False, True, True],
        "crossed": [False, False, False, True, False],
        "regime": ["UP", "DOWN", "CHOP", "UP", "UP"], "regime_score": [0.5] * 5,
    })
    s = states_from_frame(frame)
    assert len(s) == 1 and s.total == 5
    assert s.excluded_crossed == 1
    assert s.excluded_invalid == 3  # not valid, a missing price, an empty touch
    assert s.regime.tolist() == [1]


# ------------------------------------------------------------------------------------------
# Thresholds and metrics


def test_fit_thresholds_given_separable_two_class_training_cuts_between_classes() -> None:
    score = np.array([-3.0, -2, -1, 1, 2, 3])
    y = np.array([-1, -1, -1, 1, 1, 1], np.int8)
    lo, hi = fit_thresholds(score, y, three_class=False)
    assert lo == hi and -1 < lo < 1
    assert apply_thresholds(score, lo, hi).tolist() == y.tolist()


def test_fit_thresholds_given_three_classes_leaves_flat_band_as_no_call() -> None:
    score = np.array([-3.0, -2, -0.1, 0, 0.1, 2, 3])
    y = np.array([-1, -1, 0, 0, 0, 1, 1], np.int8)
    lo, hi = fit_thresholds(score, y, three_class=True)
    assert apply_thresholds(score, lo, hi).tolist() == y.tolist()


def test_thresholds_given_test_half_scores_changed_are_unchanged() -> None:
    s = random_walk_states(4_000, seed=2)
    base = evaluate_states(s, settings=Bootstrap(resamples=20))
    score = s.regime_score.copy()
    score[2_000:] = -score[2_000:] * 7
    changed = dataclasses.replace(s, regime_score=score)
    other = evaluate_states(changed, settings=Bootstrap(resamples=20))
    pick = [(t["target"], t["lo"], t["hi"]) for t in base.thresholds
            if t["predictor"] == "regime_score"]
    pick2 = [(t["target"], t["lo"], t["hi"]) for t in other.thresholds
             if t["predictor"] == "regime_score"]
    assert pick == pick2
    assert len(pick) == 7


def _direct_metrics(call: np.ndarray, y: np.ndarray, three_class: bool) -> dict[str, float]:
    called = call != 0
    out = {"coverage": called.mean(), "hit_rate": (call[called] == y[called]).mean()}
    classes: tuple[int, ...] = (-1, 0, 1) if three_class else (-1, 1)
    pred, true = (call, y) if three_class else (call[called], y[called])
    recalls = [(pred[true == c] == c).mean() for c in classes if (true == c).any()]
    out["balanced_accuracy"] = float(np.mean(recalls))
    # Multi-class MCC (Gorodkin) from its confusion matrix, written out.
    conf = np.array([[np.sum((true == t) & (pred == p)) for p in classes] for t in classes])
    n = conf.sum()
    c = np.trace(conf)
    tk, pk = conf.sum(1), conf.sum(0)
    out["mcc"] = (c * n - tk @ pk) / np.sqrt((n * n - pk @ pk) * (n * n - tk @ tk))
    return out


@pytest.mark.parametrize("three_class", [False, True])
def test_metrics_from_sums_given_random_calls_match_direct_formulas(three_class: bool) -> None:
    rng = np.random.default_rng(5)
    n = 500
    y = rng.choice([-1, 0, 1] if three_class else [-1, 1], n).astype(np.int8)
    call = np.where(rng.random(n) < 0.7, y, rng.choice([-1, 0, 1], n)).astype(np.int8)
    score = y + rng.normal(0, 2, n)
    change = y + rng.normal(0, 0.5, n)
    cols = state_columns(call[None], score[None], y, change)
    got = metrics_from_sums(cols.sum(0), 1, three_class)[0]
    want = _direct_metrics(call, y, three_class)
    assert got[0] == pytest.approx(want["coverage"])
    assert got[1] == pytest.approx(want["hit_rate"])
    assert got[2] == pytest.approx(want["balanced_accuracy"])
    assert got[3] == pytest.approx(want["mcc"])
    # Spearman = Pearson correlation of the ranks (no ties here).
    rx = np.argsort(np.argsort(score))
    ry = np.argsort(np.argsort(change))
    assert got[4] == pytest.approx(np.corrcoef(rx, ry)[0, 1])


def test_block_bootstrap_given_autocorrelated_data_is_wider_than_without_blocks() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    ts = np.arange(n, dtype=np.int64) * (NS_PER_SECOND // 100)  # 100 states per second
    # Level shifts every 5 s: strong serial dependence inside a 5-s block.
    level = np.repeat(rng.normal(0, 1, n // 500), 500)
    x = level + rng.normal(0, 0.1, n)
    cols = np.stack([np.ones(n), x], axis=1)
    settings = Bootstrap(resamples=300, seed=1)

    def per_cell(block_ns: int) -> np.ndarray:
        cells = cell_index(ts, block_ns)
        out = np.zeros((cells.max() + 1, 2))
        np.add.at(out, cells, cols)
        return out

    wide = block_bootstrap(per_cell(5 * NS_PER_SECOND), settings, np.random.default_rng(1))
    narrow = block_bootstrap(per_cell(NS_PER_SECOND // 100 * 4), settings, np.random.default_rng(1))
    mean_w = wide[:, 1] / wide[:, 0]
    mean_n = narrow[:, 1] / narrow[:, 0]
    lo, hi = interval(mean_w, 0.95)
    assert lo < x.mean() < hi
    assert np.std(mean_w) > 3 * np.std(mean_n)


def test_evaluate_states_given_predictor_that_knows_the_future_finds_it() -> None:
    s = random_walk_states(6_000, seed=4)
    future = by_name(compute_targets(s))["event_1"].change
    noise = np.random.default_rng(0).normal(0, 0.3, len(s))
    oracle = dataclasses.replace(s, regime_score=np.nan_to_num(future) * 10 + noise)
    ev = evaluate_states(oracle, settings=Bootstrap(resamples=100))
    r = {(x["predictor"], x["target"], x["metric"]): x for x in ev.results}
    assert r[("regime_score", "event_1", "balanced_accuracy")]["ci_low"] > 0.9
    assert r[("regime_score", "event_1", "ic")]["ci_low"] > 0.5
    # A random regime on a random walk: chance within its interval.
    ba = r[("regime", "event_1", "balanced_accuracy")]
    assert ba["ci_low"] < 0.5 < ba["ci_high"]


def test_evaluate_states_given_bad_settings_raises_config_error() -> None:
    s = random_walk_states(100, seed=0)
    with pytest.raises(ConfigError, match="confidence"):
        evaluate_states(s, settings=Bootstrap(confidence=1.5))
    with pytest.raises(ConfigError, match="resamples"):
        evaluate_states(s, settings=Bootstrap(resamples=1))


def test_evaluate_states_given_three_days_walks_forward_by_day() -> None:
    parts = [random_walk_states(1_500, seed=d) for d in range(3)]
    day = np.repeat(np.arange(3), 1_500)
    day_ns = 86_400 * NS_PER_SECOND
    arrays: dict[str, Any] = {
        k: np.concatenate([v + (d * day_ns if k == "ts" else 0)
                           for d, v in enumerate(_arrays(p)[k] for p in parts)])
        for k in _arrays(parts[0])}
    arrays["day"] = day.astype(np.int32)
    merged = dataclasses.replace(parts[0], days=tuple(dt.date(2026, 2, 2 + d) for d in range(3)),
                                 total=4_500, **arrays)
    ev = evaluate_states(merged, settings=Bootstrap(resamples=20))
    assert "walk-forward" in ev.split
    assert ev.states["test"] == 3_000  # days 2 and 3
    days = {t["test_day"] for t in ev.thresholds}
    assert days == {"2026-02-03", "2026-02-04"}
    train = {t["test_day"]: t["train_states"] for t in ev.thresholds
             if t["predictor"] == "queue_imbalance" and t["target"] == "clock_1s"}
    assert train["2026-02-04"] > train["2026-02-03"]  # expanding window


def test_state_columns_given_cells_equal_per_state_rows_summed_by_cell() -> None:
    rng = np.random.default_rng(9)
    n = 300
    y = rng.choice([-1, 0, 1], n).astype(np.int8)
    calls = rng.choice([-1, 0, 1], (2, n)).astype(np.int8)
    scores = np.stack([rng.normal(size=n), np.full(n, np.nan)])
    change = rng.normal(size=n)
    cells = np.sort(rng.integers(0, 40, n))
    per_state = state_columns(calls, scores, y, change)
    per_cell = state_columns(calls, scores, y, change, cells=cells)
    expected = np.zeros((np.unique(cells).size, per_state.shape[1]))
    for row, cell in zip(per_state, np.unique(cells, return_inverse=True)[1], strict=True):
        expected[cell] += row
    np.testing.assert_allclose(per_cell, expected, atol=1e-12)


def test_evaluate_states_given_test_part_shorter_than_ten_blocks_gives_no_interval() -> None:
    s = random_walk_states(4_000, seed=6, rate_hz=100.0)  # 40 s: test half 20 s
    ev = evaluate_states(s, settings=Bootstrap(resamples=50))
    info = {t["target"]: t for t in ev.targets}
    assert info["clock_60s"]["test_states"] == 0 or info["clock_30s"]["blocks"] < 10
    rows = [r for r in ev.results if r["target"] == "clock_5s"]
    assert info["clock_5s"]["blocks"] < 10 and info["clock_5s"]["small_sample"]
    assert rows and all(r["ci_low"] is None and r["ci_high"] is None for r in rows)
    one = [r for r in ev.results if r["target"] == "clock_1s"]
    assert all(r["ci_low"] is not None for r in one if r["metric"] != "coverage")


def test_state_columns_given_precomputed_orders_match_sorting_afresh() -> None:
    rng = np.random.default_rng(12)
    n = 400
    full = np.round(rng.normal(size=(2, n + 100)), 1)  # ties on purpose
    full[1, rng.choice(n + 100, 30, replace=False)] = np.nan
    keep = np.ones(n + 100, bool)
    keep[rng.choice(n + 100, 100, replace=False)] = False
    scores = full[:, keep]
    orders = [subset_order(np.argsort(row, kind="stable"), keep) for row in full]
    calls = rng.choice([-1, 0, 1], (2, n)).astype(np.int8)
    y = rng.choice([-1, 1], n).astype(np.int8)
    change = rng.normal(size=n)
    np.testing.assert_allclose(state_columns(calls, scores, y, change, orders=orders),
                               state_columns(calls, scores, y, change), atol=1e-12)


# ------------------------------------------------------------------------------------------
# Per-target (fitted) predictors and paired differences


def _fitted(name: str, s: States, per_target: dict[str, np.ndarray]) -> Predictor:
    """A per-target predictor calling the sign of its score."""
    return Predictor(name, "fitted", None, np.full(len(s), np.nan),
                     {t: (np.sign(v).astype(np.int8), v) for t, v in per_target.items()})


def test_evaluate_states_given_fitted_predictor_uses_its_own_score_per_target() -> None:
    s = random_walk_states(5_000, seed=7)
    targets = by_name(compute_targets(s))
    noise = np.random.default_rng(1).normal(0, 1, len(s))
    good = np.nan_to_num(targets["event_1"].change) * 10 + noise * 0.1
    fitted = _fitted("fit_x", s, {"event_1": good, "clock_1s": noise})
    ev = evaluate_states(s, predictors=[*compute_predictors(s), fitted],
                         settings=Bootstrap(resamples=50))
    r = {(x["predictor"], x["target"], x["metric"]): x for x in ev.results}
    assert r[("fit_x", "event_1", "ic")]["estimate"] > 0.8
    assert abs(r[("fit_x", "clock_1s", "ic")]["estimate"]) < 0.1
    # A target the predictor was not fitted for has no rows.
    assert not any(k[0] == "fit_x" and k[1] == "event_2" for k in r)


def test_paired_differences_given_identical_predictors_are_exactly_zero() -> None:
    s = random_walk_states(4_000, seed=8)
    score = {t.name: s.regime_score for t in compute_targets(s)}
    ev = evaluate_states(s, predictors=[_fitted("a", s, score), _fitted("b", s, score)],
                         differences=[("a", "b")], settings=Bootstrap(resamples=50))
    assert {(d["target"], d["metric"]) for d in ev.differences} == {
        (t, m) for t in score for m in ("mcc", "ic")}
    for d in ev.differences:
        assert (d["a"], d["b"]) == ("a", "b")
        assert d["estimate"] == 0.0
        assert (d["ci_low"], d["ci_high"]) in ((0.0, 0.0), (None, None))  # None: < 10 blocks
    assert sum(d["ci_low"] == 0.0 for d in ev.differences) >= 6


def test_paired_differences_given_correlated_predictors_are_narrower_than_either_interval(
        ) -> None:
    """Both predictors are resampled with the same blocks: the block-to-block swings they
    share cancel in the difference, so its interval is far narrower than resampling them apart
    would give, and the estimate is exactly a's metric minus b's."""
    s = random_walk_states(8_000, seed=9)
    tg = by_name(compute_targets(s))["event_1"]
    rng = np.random.default_rng(2)
    base = np.nan_to_num(tg.change) * 4 + rng.normal(0, 1, len(s))
    a = _fitted("a", s, {"event_1": base + rng.normal(0, 0.2, len(s))})
    b = _fitted("b", s, {"event_1": base})
    ev = evaluate_states(s, predictors=[a, b], differences=[("a", "b")],
                         settings=Bootstrap(resamples=300))
    r = {(x["predictor"], x["metric"]): x for x in ev.results if x["target"] == "event_1"}
    d = {x["metric"]: x for x in ev.differences if x["target"] == "event_1"}
    for metric in ("mcc", "ic"):
        assert d[metric]["estimate"] == pytest.approx(
            r[("a", metric)]["estimate"] - r[("b", metric)]["estimate"])
        wa, wb = (r[(p, metric)]["ci_high"] - r[(p, metric)]["ci_low"] for p in ("a", "b"))
        # Resampled apart, the difference's interval would be about sqrt(wa^2 + wb^2) wide.
        assert d[metric]["ci_high"] - d[metric]["ci_low"] < 0.5 * math.hypot(wa, wb), metric
        assert d[metric]["ci_low"] <= d[metric]["estimate"] <= d[metric]["ci_high"]


def test_evaluate_states_given_difference_of_unknown_predictor_raises() -> None:
    s = random_walk_states(200, seed=0)
    with pytest.raises(ConfigError, match="differences: no predictor 'fit_vp'"):
        evaluate_states(s, differences=[("fit_vp", "regime")], settings=Bootstrap(resamples=10))
