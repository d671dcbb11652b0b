"""The group penalty of a model with level-1 and field features (``vp+l1``): the field columns'
scale ``s`` chosen with ``C`` by the time-ordered cross-validation, ``s = 0`` being the level-1
model itself, the scale folded into the stored coefficients (docs/fit.md, Models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

import vpbatch.fit.train as train
from tests.fit.conftest import DAYS, SYMBOL
from tests.fit.test_model import synthetic
from vpbatch.evaluate.evaluation import compute_targets, load_states
from vpbatch.fit import FEATURES, ModelFile, read_model_file, write_model_file
from vpbatch.fit.features import L1_FEATURES, VP_FEATURES, feature_matrix
from vpbatch.fit.train import (
    C_GRID,
    FIELD_SCALES,
    Design,
    choose_penalty,
    fit_scored,
    fitting,
    group_of,
)

NEW_KEYS = ("field_scale", "field_scale_grid", "field_scale_cv_log_loss")


def _fit_both(x: np.ndarray, y: np.ndarray, ts: np.ndarray, end: np.ndarray,
              three_class: bool = False) -> tuple[tuple, tuple]:
    design = Design.of(x)
    rows = np.arange(y.size)
    with fitting():
        l1 = fit_scored("l1", "event_1", three_class, design, rows, y, ts, end)
        both = fit_scored("vp+l1", "event_1", three_class, design, rows, y, ts, end)
    assert l1 is not None and both is not None
    return l1, both


def with_field_signal(n: int, seed: int, weight: float) -> tuple[np.ndarray, ...]:
    """:func:`synthetic` with the outcome driven by queue imbalance and, as strongly, by one
    field feature (``vacuum_above_3_5``)."""
    rng = np.random.default_rng(seed)
    x, _, ts, end = synthetic(n, seed, 0.0)
    qi = x[:, FEATURES.index("queue_imbalance")]
    field = rng.uniform(-1, 1, n)
    x[:, FEATURES.index("vacuum_above_3_5")] = np.sinh(field)  # asinh gives `field` back
    up = rng.random(n) < 1 / (1 + np.exp(-weight * (qi + field)))
    return x, np.where(up, 1, -1).astype(np.int8), ts, end


@pytest.mark.parametrize(("seed", "three_class"), [(1, False), (5, True), (11, False)])
def test_vp_l1_given_pure_noise_field_chooses_no_field_and_scores_as_the_l1_model(
        seed: int, three_class: bool) -> None:
    """Every field column noise: the cross-validation picks s = 0 and the vp+l1 model is the
    l1 model, bit for bit (coefficients, band, scores, probabilities), its field weights 0."""
    x, y, ts, end = synthetic(20_000, seed=seed, weight=2.0, three_class=three_class)
    (l1, l1_scores), (both, both_scores) = _fit_both(x, y, ts, end, three_class)
    reg = both.info["regularisation"]
    assert reg["field_scale"] == 0.0
    assert reg["field_scale_grid"] == list(FIELD_SCALES)
    assert reg["C"] == l1.info["regularisation"]["C"]
    assert reg["cv_log_loss"] == l1.info["regularisation"]["cv_log_loss"]
    assert "field_scale" not in l1.info["regularisation"]
    field = group_of(both.features)
    assert field is not None and field.sum() == len(VP_FEATURES)
    assert np.all(both.coef[:, field] == 0.0)
    np.testing.assert_array_equal(both.coef[:, ~field], l1.coef)
    np.testing.assert_array_equal(both.intercept, l1.intercept)
    assert (both.lo, both.hi) == (l1.lo, l1.hi)
    np.testing.assert_array_equal(both_scores, l1_scores)
    table = pl.DataFrame({name: x[:500, i] for i, name in enumerate(FEATURES)})
    for got, want in zip(both.predict(table), l1.predict(table), strict=True):
        np.testing.assert_array_equal(got, want)


def test_vp_l1_given_a_field_feature_that_drives_the_outcome_keeps_the_field() -> None:
    x, y, ts, end = with_field_signal(20_000, seed=3, weight=2.0)
    (_, l1_scores), (both, both_scores) = _fit_both(x, y, ts, end)
    reg = both.info["regularisation"]
    assert reg["field_scale"] > 0
    coef = dict(zip(both.features, both.coef[0], strict=True))
    assert coef["vacuum_above_3_5"] > 0.3
    assert abs(coef["vacuum_above_3_5"]) > 5 * max(abs(v) for k, v in coef.items()
                                                   if k in VP_FEATURES
                                                   and k != "vacuum_above_3_5")
    losses = np.array(reg["field_scale_cv_log_loss"])
    assert losses.shape == (len(FIELD_SCALES), len(C_GRID))
    assert losses[FIELD_SCALES.index(reg["field_scale"])].min() < losses[0].min()
    assert not np.array_equal(both_scores, l1_scores)


def test_vp_l1_given_a_field_scale_folds_it_into_the_stored_coefficients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At s = 0.5 the stored model's probabilities are those of a logistic regression fitted
    on the standardised features with the field columns halved."""
    monkeypatch.setattr(train, "FIELD_SCALES", (0.5,))
    x, y, ts, end = with_field_signal(6_000, seed=4, weight=2.0)
    (_, _), (both, _) = _fit_both(x, y, ts, end)
    reg = both.info["regularisation"]
    assert reg["field_scale"] == 0.5
    cols = [FEATURES.index(f) for f in both.features]
    z = Design.of(x).z[:, cols]
    zs = np.clip((z - both.mean) / both.scale, -train.CLIP, train.CLIP)
    zs[:, len(L1_FEATURES):] *= 0.5
    with fitting():
        ref = LogisticRegression(C=reg["C"], solver="newton-cholesky", max_iter=100, tol=1e-3
                                 ).fit(zs, y)
    np.testing.assert_allclose(both.probabilities(x[:, cols]), ref.predict_proba(zs),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(both.coef[0, len(L1_FEATURES):], 0.5 * ref.coef_[0, 5:],
                               rtol=1e-12)


def test_choose_penalty_given_equal_losses_takes_the_smallest_scale_and_strongest_c(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, ts, end = synthetic(2_000, seed=6, weight=1.0)
    field = group_of(L1_FEATURES + VP_FEATURES)

    def fake(losses: np.ndarray) -> None:  # one row per call, in the order of the scales
        rows = iter(losses)
        monkeypatch.setattr(train, "cv_log_loss", lambda *a, **k: (next(rows), 3))

    fake(np.full((len(FIELD_SCALES), len(C_GRID)), 0.5))
    c, s, _, _ = choose_penalty(x, y, ts, end, field, FIELD_SCALES)
    assert (c, s) == (C_GRID[0], 0.0)
    losses = np.full((len(FIELD_SCALES), len(C_GRID)), 0.7)
    losses[2, 3] = losses[3, 1] = 0.6
    fake(losses)
    c, s, table, _ = choose_penalty(x, y, ts, end, field, FIELD_SCALES)
    assert (c, s) == (C_GRID[3], FIELD_SCALES[2])
    assert table == losses.tolist()


def test_choose_penalty_given_no_usable_fold_gives_no_field_weight() -> None:
    """Each fold's training rows lack the down class: nothing to validate on, so C = 1 and
    s = 0 (the level-1 model) rather than a field the data never tested."""
    x, y, ts, end = synthetic(400, seed=7, weight=1.0)
    y[:] = 1
    y[-5:] = -1
    field = group_of(L1_FEATURES + VP_FEATURES)
    with fitting():
        c, s, losses, folds = choose_penalty(Design.of(x).z, y, ts, end, field, FIELD_SCALES)
    assert (c, s, folds) == (1.0, 0.0, 0)
    assert losses == [[None] * len(C_GRID)] * len(FIELD_SCALES)


def test_fit_given_a_feature_with_only_decayed_remnants_keeps_it_at_unit_scale() -> None:
    """A field column whose training values are remnants of order 1e-30 (standard deviation
    below MIN_SCALE) is constant to the models: scale 1, so a real value later is not 1e30
    standard deviations and the score stays a probability, not 0 or 1."""
    x, y, ts, end = synthetic(6_000, seed=9, weight=2.0)
    j = FEATURES.index("v_fill_above_26_k")
    rng = np.random.default_rng(9)
    x[:, j] = rng.random(y.size) * 1e-30
    rows = np.arange(4_000)
    x[4_000:, j] = 2.0  # a real burst after the training part
    with fitting():
        fitted = fit_scored("vp", "event_1", False, Design.of(x), rows, y, ts, end)
    assert fitted is not None
    model, scores = fitted
    assert model.scale[model.features.index("v_fill_above_26_k")] == 1.0
    assert train.MIN_SCALE == 1e-6
    assert np.all((scores[4_000:] > 0.01) & (scores[4_000:] < 0.99))


@pytest.mark.parametrize("clip", [5.0, float("inf")])
def test_vp_l1_given_a_few_wild_states_in_a_validation_chunk_still_finds_the_field(
        clip: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A far band quiet through the early states bursts in 100 states of a validation chunk,
    thousands of standard deviations out (as on a planted day, docs/fit.md). Clipped at 5, the
    cross-validation still sees the field that drives the outcome; unclipped (the fit before
    clipping), those 100 states' log-loss hid it and the model fell back to level 1."""
    monkeypatch.setattr(train, "CLIP", clip)
    x, y, ts, end = with_field_signal(20_000, seed=3, weight=1.0)
    j = FEATURES.index("v_fill_below_11_25")
    x[:, j] = np.random.default_rng(4).normal(0, 1e-3, y.size)
    x[12_000:12_100, j] = 3_000.0
    (_, _), (both, _) = _fit_both(x, y, ts, end)
    chosen = both.info["regularisation"]["field_scale"]
    assert (chosen > 0) == np.isfinite(clip)


def test_group_of_given_one_kind_of_feature_has_no_group() -> None:
    assert group_of(L1_FEATURES) is None and group_of(VP_FEATURES) is None


def test_vp_l1_given_planted_days_keeps_the_field(lake: Path) -> None:
    """On the planted days (informed activity beyond the touch) the cross-validation gives the
    field weight at the horizons the episodes move the price over."""
    states = load_states(lake, SYMBOL, DAYS[0], DAYS[1])
    design = Design.of(feature_matrix(lake, SYMBOL, states))
    chosen = {}
    for tg in compute_targets(states):
        if tg.name in ("event_2", "event_5"):
            with fitting():
                fitted = fit_scored("vp+l1", tg.name, tg.three_class, design,
                                    np.flatnonzero(tg.available), tg.y, states.ts, tg.end_ts)
            assert fitted is not None
            chosen[tg.name] = fitted[0].info["regularisation"]["field_scale"]
    assert all(s > 0 for s in chosen.values()), chosen


def test_model_file_given_a_document_without_the_field_scale_reads_and_scores_the_same(
        tmp_path: Path) -> None:
    """A document written before the group penalty (no field-scale keys, which did not change
    the format) is read and scores as the one with them."""
    x, y, ts, end = with_field_signal(3_000, seed=8, weight=2.0)
    (l1, _), (both, _) = _fit_both(x, y, ts, end)
    file = ModelFile(symbol=SYMBOL, training_days=("2026-02-05",), vpbatch_version="0.1.0",
                     models=(l1, both), default=("vp+l1", "event_1"))
    new = write_model_file(file, tmp_path / "new.json")
    doc = json.loads(new.read_text())
    assert doc["format_version"] == 2
    assert set(NEW_KEYS) <= set(doc["models"][1]["regularisation"])
    for m in doc["models"]:
        for key in NEW_KEYS:
            m["regularisation"].pop(key, None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc, indent=1))
    a, b = read_model_file(new), read_model_file(old)
    table = pl.DataFrame({name: x[:200, i] for i, name in enumerate(FEATURES)})
    for ma, mb in zip(a.models, b.models, strict=True):
        assert ma.features == mb.features
        for got, want in zip(ma.predict(table), mb.predict(table), strict=True):
            np.testing.assert_array_equal(got, want)
    assert "field_scale" not in b.get("vp+l1", "event_1").info["regularisation"]
