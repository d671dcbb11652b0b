"""Fitted models: the logistic fit, its cross-validation and band, the model JSON and its
checks, and ``predict`` against the formula written out."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from vpbatch.errors import ConfigError, InputError
from vpbatch.fit import FEATURES, FittedModel, ModelFile, load_model, read_model_file
from vpbatch.fit.model import write_model_file
from vpbatch.fit.train import C_GRID, Design, choose_c, fit_model, fitting

L1 = ("queue_imbalance", "microprice", "ofi_1s", "ofi_5s", "ofi_10s")


def synthetic(n: int, seed: int, weight: float, three_class: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features with every column noise except queue imbalance, which drives the outcome with
    log-odds ``weight * qi``; states 0.1 s apart, each outcome known 1 s later."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, len(FEATURES)))
    qi = rng.uniform(-1, 1, n)
    x[:, FEATURES.index("queue_imbalance")] = qi
    up = rng.random(n) < 1 / (1 + np.exp(-weight * qi))
    y = np.where(up, 1, -1).astype(np.int8)
    if three_class:
        y[rng.random(n) < 0.3] = 0
    ts = np.arange(n, dtype=np.int64) * 100_000_000
    return x, y, ts, ts + 1_000_000_000


def _fit(x: np.ndarray, y: np.ndarray, ts: np.ndarray, end: np.ndarray, name: str = "l1",
         three_class: bool = False) -> FittedModel:
    with fitting():
        model = fit_model(name, "event_1", three_class, Design.of(x), np.arange(y.size), y, ts,
                          end, change=y.astype(float))
    assert model is not None
    return model


def test_fit_model_given_a_planted_coefficient_finds_its_sign_and_calls_with_it() -> None:
    x, y, ts, end = synthetic(8_000, seed=1, weight=3.0)
    model = _fit(x, y, ts, end)
    coef = dict(zip(model.features, model.coef[0], strict=True))
    assert coef["queue_imbalance"] > 0.5
    assert all(abs(v) < 0.2 for k, v in coef.items() if k != "queue_imbalance")
    assert model.info["in_sample"]["balanced_accuracy"] > 0.6
    # Standardisation is the training rows' own: mean 0 / sd 1 on the (asinh-)transformed data.
    z = Design.of(x).z[:, [FEATURES.index(f) for f in model.features]]
    np.testing.assert_allclose(model.mean, z.mean(0))
    np.testing.assert_allclose(model.scale, z.std(0))
    assert model.transforms == ("none", "none", "asinh", "asinh", "asinh")


def test_fit_model_given_training_rows_ignores_every_other_row() -> None:
    """Standardisation and coefficients come from the training rows only: scrambling the rest
    changes nothing."""
    x, y, ts, end = synthetic(6_000, seed=2, weight=2.0)
    rows = np.arange(3_000)
    other = x.copy()
    other[3_000:] = np.random.default_rng(9).normal(50, 9, other[3_000:].shape)
    with fitting():
        a = fit_model("vp+l1", "event_1", False, Design.of(x), rows, y, ts, end)
        b = fit_model("vp+l1", "event_1", False, Design.of(other), rows, y, ts, end)
    assert a is not None and b is not None
    for field in ("mean", "scale", "coef", "intercept"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.lo, a.hi) == (b.lo, b.hi)


def test_choose_c_given_noise_regularises_hardest_and_given_signal_less() -> None:
    """Time-ordered cross-validation: a fit on pure noise loses out of sample, so the strongest
    regularisation wins; a strong signal earns a weaker one."""
    x, y, ts, end = synthetic(4_000, seed=3, weight=0.0)
    z = Design.of(x).z
    with fitting():
        c_noise, loss, folds = choose_c(z, y, ts, end)
        x2, y2, ts2, end2 = synthetic(4_000, seed=3, weight=6.0)
        c_signal, _, _ = choose_c(Design.of(x2).z, y2, ts2, end2)
    assert folds == 3 and len(loss) == len(C_GRID)
    assert c_noise == C_GRID[0]
    assert c_signal > c_noise


def test_fit_model_given_one_class_only_returns_none() -> None:
    x, _, ts, end = synthetic(500, seed=4, weight=1.0)
    with fitting():
        assert fit_model("l1", "event_1", False, Design.of(x), np.arange(500),
                         np.ones(500, np.int8), ts, end) is None


def test_predict_given_feature_table_matches_the_logistic_formula_written_out() -> None:
    x, y, ts, end = synthetic(3_000, seed=5, weight=2.0)
    model = _fit(x, y, ts, end)
    table = pl.DataFrame({name: x[:20, i] for i, name in enumerate(FEATURES)})
    call, prob = model.predict(table)
    assert call.dtype == np.int8 and prob.dtype == np.float64
    for i in range(20):
        logit = model.intercept[0]
        for j, name in enumerate(model.features):
            v = x[i, FEATURES.index(name)]
            v = math.asinh(v) if model.transforms[j] == "asinh" else v
            zj = min(max((v - model.mean[j]) / model.scale[j], -5.0), 5.0)
            logit += model.coef[0, j] * zj
        p = 1 / (1 + math.exp(-logit))
        assert prob[i] == pytest.approx(p, rel=1e-12)
        assert call[i] == (1 if p > model.hi else -1 if p < model.lo else 0)


def _at_standard_deviations(model: FittedModel, j: int, k: float) -> float:
    """The raw value of model feature ``j`` that standardises to ``k``."""
    v = model.mean[j] + k * model.scale[j]
    return math.sinh(v) if model.transforms[j] == "asinh" else v


def test_predict_given_features_far_outside_training_clips_them_at_five_deviations() -> None:
    """A state whose features lie thousands of standard deviations outside the training rows
    scores as if they lay at 5 (the far bands' bursts after a quiet training part): a bounded
    score, the same from the per-state loop, the design path evaluate uses and the feature
    table."""
    x, y, ts, end = synthetic(3_000, seed=5, weight=2.0)
    model = _fit(x, y, ts, end, "vp+l1")
    assert model.clip == 5.0
    cols = [FEATURES.index(f) for f in model.features]
    wild = x[:40].copy()
    at_edge = wild.copy()
    rng = np.random.default_rng(3)
    for i in range(40):
        for j in rng.choice(len(cols), 6, replace=False):
            sign = 1 if rng.random() < 0.5 else -1
            wild[i, cols[j]] = sign * 1e12
            at_edge[i, cols[j]] = _at_standard_deviations(model, j, sign * 5.0)
    np.testing.assert_allclose(model.probabilities(wild[:, cols]),
                               model.probabilities(at_edge[:, cols]), rtol=1e-9)
    design = Design.of(wild)
    np.testing.assert_allclose(design.scores(model), model.score(wild[:, cols]), rtol=1e-9)
    unclipped = dataclasses.replace(model, clip=math.inf)
    assert not np.allclose(unclipped.score(wild[:, cols]), model.score(wild[:, cols]))
    table = pl.DataFrame({name: wild[:, i] for i, name in enumerate(FEATURES)})
    np.testing.assert_array_equal(model.predict(table)[1], model.up_probability(wild[:, cols]))


def test_predict_given_three_classes_and_a_missing_feature_gives_up_probability_and_no_call(
        ) -> None:
    x, y, ts, end = synthetic(4_000, seed=6, weight=3.0, three_class=True)
    model = _fit(x, y, ts, end, three_class=True)
    assert model.classes == (-1, 0, 1) and model.coef.shape == (3, 5)
    table = pl.DataFrame({name: x[:50, i] for i, name in enumerate(FEATURES)})
    table = table.with_columns(pl.when(pl.int_range(50) == 3).then(None)
                               .otherwise(pl.col("ofi_5s")).alias("ofi_5s"))
    call, prob = model.predict(table)
    p = model.probabilities(x[:50, [FEATURES.index(f) for f in model.features]])
    np.testing.assert_allclose(p.sum(1)[np.arange(50) != 3], 1.0)
    assert np.isnan(prob[3]) and call[3] == 0
    keep = np.arange(50) != 3
    np.testing.assert_allclose(prob[keep], p[keep, 2])


def test_predict_given_table_without_a_feature_names_it() -> None:
    x, y, ts, end = synthetic(2_000, seed=7, weight=2.0)
    model = _fit(x, y, ts, end)
    with pytest.raises(ConfigError,
                       match="missing column 'microprice' that model l1/event_1 needs"):
        model.predict(pl.DataFrame({"queue_imbalance": [0.1]}))


# ------------------------------------------------------------------------------------------
# The JSON document


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y, ts, end = synthetic(3_000, seed=8, weight=2.0)
    models = (_fit(x, y, ts, end, "l1"), _fit(x, y, ts, end, "vp+l1"))
    file = ModelFile(symbol="MNQH6", training_days=("2026-02-05",), vpbatch_version="0.1.0",
                     models=tuple(dataclasses.replace(m, name=m.name) for m in models),
                     default=("vp+l1", "event_1"))
    return write_model_file(file, tmp_path_factory.mktemp("model") / "model.json")


def test_model_file_given_round_trip_scores_exactly_as_before(model_file: Path) -> None:
    doc = json.loads(model_file.read_text())
    assert doc["format"] == "vpbatch-model" and doc["format_version"] == 2
    assert {"vpbatch_version", "symbol", "training_days", "default", "models"} <= set(doc)
    entry = doc["models"][1]
    assert entry["clip"] == 5.0
    for key in ("features", "transforms", "mean", "scale", "coef", "intercept", "band", "clip",
                "regularisation", "training", "in_sample"):
        assert key in entry, key
    model = load_model(model_file)
    assert (model.name, model.target) == ("vp+l1", "event_1")
    assert len(model.features) == 67
    x = np.random.default_rng(1).normal(0, 1, (100, len(FEATURES)))
    table = pl.DataFrame({name: x[:, i] for i, name in enumerate(FEATURES)})
    again = read_model_file(model_file).get("vp+l1", "event_1")
    np.testing.assert_array_equal(model.predict(table)[1], again.predict(table)[1])
    l1 = load_model(model_file, "l1", "event_1")
    assert l1.features == L1


def test_model_file_given_version_1_document_scores_without_clipping(model_file: Path,
                                                                     tmp_path: Path) -> None:
    """A document written before clipping (version 1, no ``clip``) keeps scoring as it was
    fitted: unclipped; version 2 requires the key."""
    doc = json.loads(model_file.read_text())
    doc["format_version"] = 1
    for m in doc["models"]:
        del m["clip"]
    old = tmp_path / "v1.json"
    old.write_text(json.dumps(doc))
    model = load_model(old, "l1", "event_1")
    assert model.clip == math.inf and "clip" not in model.info
    x = np.random.default_rng(2).normal(0, 1, (5, len(L1)))
    x[:, 0] = 1e6  # queue imbalance far outside
    want = [1 / (1 + math.exp(-(model.intercept[0] + sum(
        model.coef[0, j] * ((math.asinh(v) if model.transforms[j] == "asinh" else v)
                            - model.mean[j]) / model.scale[j] for j, v in enumerate(row)))))
        for row in x]
    np.testing.assert_allclose(model.up_probability(x), want, rtol=1e-12)
    doc["format_version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"v2\.json: models\[0\]\.clip: missing"):
        read_model_file(tmp_path / "v2.json")


def _corrupt(doc: dict[str, Any], how: str) -> Any:
    m = doc["models"][0]
    if how == "format":
        doc["format"] = "something-else"
    elif how == "version":
        doc["format_version"] = 99
    elif how == "coef":
        m["coef"][0] = m["coef"][0][:-1]
    elif how == "feature":
        m["features"][0] = "queue_imbalanse"
    elif how == "missing":
        del m["scale"]
    elif how == "nan":
        m["mean"][1] = "NaN"
    elif how == "band":
        m["band"] = {"lo": 0.9, "hi": 0.1}
    elif how == "default":
        doc["default"]["target"] = "clock_5s"
    elif how == "clip":
        m["clip"] = -1
    return doc


@pytest.mark.parametrize(("how", "message"), [
    ("format", "format: expected 'vpbatch-model'"),
    ("version", "format_version: 99 is newer"),
    ("coef", r"models\[0\].coef\[0\].row: expected 5 finite numbers"),
    ("feature", r"models\[0\].features: unknown feature 'queue_imbalanse'"),
    ("missing", r"models\[0\].scale: missing"),
    ("nan", r"models\[0\].mean: expected 5 finite numbers"),
    ("band", r"models\[0\].band: lo 0.9 is above hi 0.1"),
    ("default", "default: no model 'vp\\+l1' for target 'clock_5s'"),
    ("clip", r"models\[0\].clip: must be positive \(or null: none\), got -1"),
])
def test_read_model_file_given_a_bad_field_names_the_file_and_the_field(
        model_file: Path, tmp_path: Path, how: str, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_corrupt(json.loads(model_file.read_text()), how)))
    with pytest.raises(InputError, match=f"^{bad}: {message}") as info:
        read_model_file(bad)
    assert "\n" not in str(info.value)


def test_read_model_file_given_not_json_or_missing_says_so(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match=r"x\.json: not a JSON document"):
        read_model_file(tmp_path / "x.json")
    with pytest.raises(InputError, match=r"nope\.json: cannot read model file"):
        read_model_file(tmp_path / "nope.json")


def test_load_model_given_unknown_model_or_target_lists_what_the_file_has(
        model_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"no model 'vp' for target 'event_1' \(have: "
                                          r"l1/event_1, vp\+l1/event_1\)"):
        load_model(model_file, "vp", "event_1")
