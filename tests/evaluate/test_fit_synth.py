"""``vpbatch evaluate --models`` on built synthetic days (SPEC §15): does the vacuum/pressure
field add information beyond the level-1 book? Found where it was planted beyond the touch,
not on the controls beyond what the unplanted market already has, not from features detached
from the outcome, and nothing at all with the future shuffled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.evaluate.conftest import DAY, RESAMPLES, SYMBOL, away_from_chance, shuffled
from vpbatch.evaluate.evaluation import (
    Evaluation,
    compute_targets,
    evaluate_states,
    load_states,
    walk_forward_splits,
)
from vpbatch.evaluate.stats import Bootstrap
from vpbatch.fit import FEATURES, evaluate_with_models
from vpbatch.fit.features import VP_FEATURES, feature_matrix
from vpbatch.fit.train import Design
from vpbatch.fit.walkforward import fitted_predictors

#: The comparison and the horizons the planted episodes move the price over.
MODELS = ("l1", "vp+l1")
TARGETS = ("event_2", "event_5")
PAIR = ("fit_vp+l1", "fit_l1")


def _fit_eval(lake: Path) -> Evaluation:
    return evaluate_with_models(lake, SYMBOL, DAY, models=MODELS, targets=TARGETS,
                                settings=Bootstrap(resamples=RESAMPLES))


@pytest.fixture(scope="session")
def fit_evals(plain_lake: Path, planted_lake: Path, placebo_lake: Path,
              activity_lake: Path) -> dict[str, Evaluation]:
    return {"plain": _fit_eval(plain_lake), "planted": _fit_eval(planted_lake),
            "placebo": _fit_eval(placebo_lake), "activity": _fit_eval(activity_lake)}


def _diff(ev: Evaluation, target: str, metric: str) -> dict:
    (row,) = [d for d in ev.differences
              if (d["a"], d["b"], d["target"], d["metric"]) == (*PAIR, target, metric)]
    return row


def test_fit_given_planted_day_finds_the_information_beyond_the_touch(
        fit_evals: dict[str, Evaluation]) -> None:
    """The planted episodes act 1-10 ticks beyond the touch: the field model beats the
    level-1 model, paired interval above 0 and above the unplanted day's."""
    for target in TARGETS:
        for metric in ("mcc", "ic"):
            planted = _diff(fit_evals["planted"], target, metric)
            plain = _diff(fit_evals["plain"], target, metric)
            assert planted["ci_low"] > 0, (target, metric, planted)
            assert planted["ci_low"] > plain["ci_high"], (target, metric, planted, plain)


def test_fit_given_placebo_and_activity_days_finds_nothing_the_unplanted_day_lacks(
        fit_evals: dict[str, Evaluation]) -> None:
    """The same informed-looking activity without information about the move (placebo: the
    move's direction a coin; activity only: no move): no gain beyond what the unplanted market
    shows (its ordinary flow leans towards the latent value at every depth, docs/fit.md), and
    the planted day's gain is above both."""
    for control in ("placebo", "activity"):
        for target in TARGETS:
            for metric in ("mcc", "ic"):
                got = _diff(fit_evals[control], target, metric)
                plain = _diff(fit_evals["plain"], target, metric)
                planted = _diff(fit_evals["planted"], target, metric)
                assert got["ci_low"] <= plain["ci_high"], (control, target, metric, got, plain)
                assert planted["ci_low"] > got["ci_high"], (control, target, metric)


def test_fit_given_field_features_from_another_time_adds_nothing(planted_lake: Path) -> None:
    """Method check: the planted day's field features moved half a day away (same values,
    same serial dependence, no link to the outcome) give vp+l1 no edge over l1: no paired
    interval lies above 0, so 62 extra features alone make no discovery. (They can cost: an
    interval below 0 is the price of fitting features that carry nothing, docs/fit.md.)"""
    states = load_states(planted_lake, SYMBOL, DAY, DAY)
    x = feature_matrix(planted_lake, SYMBOL, states)
    cols = [FEATURES.index(f) for f in VP_FEATURES]
    x[:, cols] = np.roll(x[:, cols], len(states) // 2, axis=0)
    targets = [t for t in compute_targets(states) if t.name in TARGETS]
    _, splits = walk_forward_splits(states)
    fitted, _ = fitted_predictors(states, Design.of(x), targets, splits, MODELS)
    ev = evaluate_states(states, targets=targets, predictors=fitted, differences=[PAIR],
                         settings=Bootstrap(resamples=RESAMPLES))
    assert len(ev.differences) == 4
    for d in ev.differences:
        assert d["ci_low"] <= 0, d


def test_fit_given_shuffled_future_every_model_is_at_chance(planted_lake: Path) -> None:
    """Outcomes permuted across states: every fitted model's balanced accuracy, MCC and IC is
    at chance within a Bonferroni-widened band (as the §13 predictors' test), and so is the
    difference."""
    states = load_states(planted_lake, SYMBOL, DAY, DAY)
    x = feature_matrix(planted_lake, SYMBOL, states)
    targets = [t for t in shuffled(compute_targets(states), seed=3)
               if t.name in ("event_2", "clock_5s")]
    _, splits = walk_forward_splits(states)
    fitted, _ = fitted_predictors(states, Design.of(x), targets, splits, ("l1", "vp", "vp+l1"))
    ev = evaluate_states(states, targets=targets, predictors=fitted, differences=[PAIR],
                         settings=Bootstrap(resamples=400))
    chance = {t["target"]: t["chance_balanced_accuracy"] for t in ev.targets}
    rows = [r for r in ev.results if r["metric"] in ("balanced_accuracy", "mcc", "ic")]
    rows += [{**d, "predictor": "difference"} for d in ev.differences]
    misses = away_from_chance(rows, chance)
    assert len(rows) == 3 * 2 * 3 + 4
    assert not misses
