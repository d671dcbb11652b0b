"""The regime filter (kernels.step_regime) decides exactly what the exact score decides.

The filter evaluates the window without exps and bounds its error; it may decide a step only
when every score within the bound decides the same, and otherwise falls back to the exact
``regime_score``. Two checks: the decision rule itself over arbitrary sums and bounds, and a
real file whose thresholds are set to scores that occur at its regime boundaries, so the
filter must fall back and the regime sequence must still equal the reference's.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from tests.reference.engine import ReferenceEngine
from vpbatch.book import kernels
from vpbatch.book.dtypes import F_SNAPSHOT, REGIME_CHOP, REGIME_DOWN, REGIME_UP, as_kernel_records
from vpbatch.book.engine import Engine
from vpbatch.book.state import make_params
from vpbatch.config import EngineConfig

FUT = 250_000_000
MESH5 = "glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst"

_SUMS = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


# The regime helpers are compiled only into the engine's kernels; these compile them for the test.
@njit(cache=True)
def _next_regime(prm, regime, score, intensity):
    return kernels.next_regime(prm, regime, score, intensity)


@njit(cache=True)
def _filtered_regime(prm, regime, bull, bear, bound):
    return kernels.filtered_regime(prm, regime, bull, bear, bound)


@njit(cache=True)
def _regime_score(st, prm, t):
    return kernels.regime_score(st, prm, t)


def _exact_next(prm, regime: int, bull: float, bear: float) -> int:
    intensity = bull + bear
    return _next_regime(prm, regime, (bull - bear) / (intensity + prm.eps), intensity)


@settings(max_examples=2000, deadline=None)
@given(bull=_SUMS, bear=_SUMS, rel_bound=st.sampled_from([0.0, 1e-15, 1e-9, 1e-4, 0.3]),
       regime=st.sampled_from([REGIME_CHOP, REGIME_UP, REGIME_DOWN]),
       theta=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
       floor=st.sampled_from([0.0, 1e-9, 0.5, 10.0]),
       snap=st.booleans())
def test_a_filtered_decision_holds_for_every_score_within_its_bound(
        bull, bear, rel_bound, regime, theta, floor, snap):
    theta_off, theta_on = theta
    config = EngineConfig(theta_on=theta_on, theta_off=theta_off, intensity_floor=floor)
    prm = make_params(config, FUT, FUT)
    if snap:  # put the sums right on a threshold: the filter must not decide
        total = bull + bear
        bull, bear = total * (1 + theta_on) / 2, total * (1 - theta_on) / 2
    bound = rel_bound * (bull + bear)
    decided = _filtered_regime(prm, regime, bull, bear, bound)
    if decided == kernels.UNDECIDED:
        return
    slack = bound + kernels.FILTER_KAPPA * (bull + bear)
    for d_bull, d_bear in ((1, 0), (-1, 0), (0, 1), (0, -1), (0.5, -0.5), (-0.5, 0.5),
                           (0.5, 0.5), (-0.5, -0.5), (0, 0)):
        b, r = bull + d_bull * slack, bear + d_bear * slack
        if b >= 0 and r >= 0:
            assert _exact_next(prm, regime, b, r) == decided, (b, r)


def test_the_filter_defers_right_at_a_threshold():
    prm = make_params(EngineConfig(theta_on=0.3, theta_off=0.15), FUT, FUT)
    bull, bear = 0.65, 0.35  # score (0.65 - 0.35) / (1 + eps): 0.3 within rounding
    assert _filtered_regime(prm, REGIME_CHOP, bull, bear, 0.0) == kernels.UNDECIDED
    assert _filtered_regime(prm, REGIME_CHOP, 0.9, 0.1, 1e-6) == REGIME_UP
    assert _filtered_regime(prm, REGIME_UP, 0.1, 0.9, 1e-6) == REGIME_DOWN


def _boundary_scores(records: np.ndarray, config: EngineConfig) -> list[float]:
    """The exact score the machine sees at each regime step (one record at a time)."""
    engine = Engine(config, bucket=FUT)
    engine.set_emitting(False)
    prm, step, epoch = engine.params, config.regime_step_ns, config.epoch_ns
    scores = []
    kernel_records = as_kernel_records(records)
    for i in range(len(records)):
        sc = engine.kernel_state.sc[0]
        ts = int(kernel_records["ts_event"][i])
        boundary = epoch + ((max(int(sc["t"]), ts) - epoch) // step) * step
        if sc["started"] and not kernel_records["flags"][i] & F_SNAPSHOT \
                and boundary > sc["t"]:
            scores.append(_regime_score(engine.kernel_state, prm, boundary)[0])
        engine.process(records[i:i + 1])
    return scores


def test_thresholds_on_real_boundary_scores_take_the_exact_path(dbn_records):
    """Thresholds equal to scores the machine meets: the filter defers, regimes stay exact."""
    records = dbn_records(MESH5)
    scores = np.array(_boundary_scores(records, EngineConfig()))
    positive = np.unique(np.abs(scores[np.abs(scores) > 0.05]))
    assert len(positive) >= 4, "the file has too few distinct boundary scores"
    picks = [(positive[len(positive) // 2], positive[len(positive) // 4]),
             (positive[-1], positive[0]), (positive[len(positive) // 3],) * 2]
    for theta_on, theta_off in picks:
        config = EngineConfig.from_sample("100ms", theta_on=float(theta_on),
                                          theta_off=float(theta_off))
        fast = Engine(config, bucket=FUT)
        f_snap = np.concatenate([fast.process(records).snapshots, fast.finish().snapshots])
        slow = ReferenceEngine(config, FUT)
        s_snap = np.concatenate([slow.process(records)[0], slow.finish()[0]])
        assert int(fast.kernel_state.sc[0]["exact_steps"]) >= 1, (theta_on, theta_off)
        np.testing.assert_array_equal(f_snap["regime"], s_snap["regime"])
        assert len(np.unique(f_snap["regime"])) >= 2  # the thresholds matter on this file
