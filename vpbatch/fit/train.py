"""Fitting one model: regularised logistic regression with time-ordered cross-validation.

SPEC §15: per target, an L2-regularised logistic regression (multinomial for the three-class
clock targets) on the standardised features of one set (``l1``, ``vp``, ``vp+l1``), the
regularisation chosen by time-ordered cross-validation inside the training part, the
standardisation fitted on training data only, and the call band fitted on the training part
as §13 fits a threshold.

Decisions (docs/fit.md):

* **Fit sample.** States 25 ms apart carry nearly the same features, so a fit on every state
  costs much and adds little: the model is fitted on every k-th training state (time order
  kept), k the smallest stride that leaves at most :data:`MAX_FIT_STATES`; the
  cross-validation strides over that sample again, to at most :data:`MAX_CV_STATES`. The band
  and the in-sample metrics use every training state.
* **Cross-validation.** The fit sample is cut into :data:`CV_FOLDS` + 1 consecutive chunks;
  fold f trains on chunks 0..f-1 and is scored (mean log-loss) on chunk f, with training states
  whose outcome is known only after the scored chunk starts left out (purging), and the scaler
  fitted on the fold's training rows. The ``C`` with the lowest mean log-loss over the folds
  wins (ties: the stronger regularisation). Each fold walks the grid from strong to weak
  regularisation, warm-starting from the previous solution.
* **Group penalty.** A model with level-1 *and* field features (``vp+l1``) has its standardised
  field columns multiplied by a scale ``s`` of :data:`FIELD_SCALES`, chosen jointly with ``C``
  by the same cross-validation (lowest mean log-loss; ties: the smaller ``s``, then the smaller
  ``C``). In an L2 model that is a penalty ``1/s^2`` times heavier on the field group than on the
  level-1 group; ``s = 0`` is fitted as the level-1 model itself (the field columns left out),
  so the model can differ from ``l1`` only where the cross-validation sees the field help. The
  scale is folded into the stored coefficients (field coefficients times ``s``: exactly 0 at
  ``s = 0``), so a stored model scores as any other.
* **Clipping.** Standardised features are clipped to ``±CLIP`` (:data:`CLIP`), in every fit,
  every fold and every score: a far band that was quiet through the training rows can later
  take values thousands of standard deviations out, and one such state then dominated a
  fold's mean log-loss (the cross-validation gave the field no weight on a planted day) and
  pinned its own score at 0 or 1.
* **Solver.** ``newton-cholesky`` (a few hundred rows per feature, under 70 features: Newton's
  method converges in a few steps where lbfgs needs hundreds on these collinear sums).
* **Determinism.** Newton from a zero start, one BLAS thread: the same data give the same
  model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from vpbatch.errors import ConfigError, InputError
from vpbatch.evaluate.evaluation import (
    CLOCK_HORIZONS,
    EVENT_HORIZONS,
    Target,
    compute_targets,
    load_states,
)
from vpbatch.evaluate.stats import (
    METRICS,
    apply_thresholds,
    fit_thresholds,
    metrics_from_sums,
    state_columns,
)
from vpbatch.fit.features import (
    ASINH_FEATURES,
    FEATURES,
    MODEL_FEATURES,
    MODELS,
    VP_FEATURES,
    feature_matrix,
)
from vpbatch.fit.model import FittedModel, ModelFile
from vpbatch.products import resolve_product
from vpbatch.store.partitions import find_partition, partition_manifest
from vpbatch.version import engine_version

T = TypeVar("T")
R = TypeVar("R")

#: Target names in table order (SPEC §13).
TARGETS: Final = (*(f"event_{h}" for h in EVENT_HORIZONS),
                  *(f"clock_{s}s" for s in CLOCK_HORIZONS))
#: Inverse regularisation strengths tried by the cross-validation (standardised features).
C_GRID: Final = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Scales of the standardised field columns tried jointly with ``C`` in a model with level-1
#: and field features: an L2 penalty ``1/s^2`` times heavier on the field group (0: none of it).
FIELD_SCALES: Final[tuple[float, ...]] = (0.0, 0.25, 0.5, 1.0)
#: A feature whose standard deviation on the training rows is below this (in its transformed
#: units) is constant to the models and keeps scale 1: the far bands' chains are often only
#: the decayed remnants of an old burst there (standard deviations down to 1e-46), and dividing
#: by such a scale turns the next real value into 1e40 standard deviations.
MIN_SCALE: Final = 1e-6
#: Standardised features are clipped to ``[-CLIP, CLIP]`` (the training rows' mean ± 5 standard
#: deviations) before they enter a fit or a score; stored with each model.
CLIP: Final = 5.0
#: Time-ordered validation folds inside the training part.
CV_FOLDS: Final = 3
#: At most this many training states enter a fit (a stride over the training part) ...
MAX_FIT_STATES: Final = 20_000
#: ... and at most this many its cross-validation (a stride over the fit sample).
MAX_CV_STATES: Final = 10_000
#: Newton iterations per fit, and the solver's tolerance (on the gradient).
MAX_ITER: Final = 100
TOL: Final = 1e-3
#: Fits run side by side on this many threads (the heavy parts are BLAS calls and release
#: the GIL); each fit itself is single-threaded, so results never depend on it.
FIT_THREADS: Final = min(2, os.cpu_count() or 1)
#: Probabilities are clipped to [EPS, 1 - EPS] in the validation log-loss.
EPS: Final = 1e-12


@dataclass(frozen=True)
class Design:
    """Every state's features as the models read them, computed once for all fits.

    ``z`` is ``(states, len(FEATURES))``: the raw features with :data:`ASINH_FEATURES`
    transformed and missing values set to 0; ``missing`` marks those (a state missing one of a
    model's features gets no score and no call from it).
    """

    z: np.ndarray
    missing: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, *, inplace: bool = False) -> Design:
        """From the raw feature matrix (:func:`~vpbatch.fit.features.feature_matrix`);
        ``inplace`` transforms ``x`` itself (a C-contiguous float64 array) to save memory."""
        linear = [FEATURES.index(f) for f in FEATURES if f not in ASINH_FEATURES]
        keep = x[:, linear].copy()
        z = x if inplace else np.empty(x.shape)
        np.arcsinh(x, out=z)  # one pass; the few linear columns put back
        z[:, linear] = keep
        missing = ~np.isfinite(z)
        if missing.any():
            z[missing] = 0.0
        return cls(z, missing)

    def complete(self, features: Sequence[str]) -> np.ndarray:
        """States with every one of ``features``."""
        if not self.missing.any():
            return np.ones(self.z.shape[0], bool)
        cols = [FEATURES.index(f) for f in features]
        return np.asarray(~self.missing[:, cols].any(axis=1))

    def scores(self, model: FittedModel) -> np.ndarray:
        """``model``'s score for every state (NaN where a feature is missing)."""
        out = model.score_design(self.z)
        out[~self.complete(model.features)] = np.nan
        return out


@contextlib.contextmanager
def fitting() -> Iterator[None]:
    """Around a batch of fits: one BLAS thread per fit (fits run side by side in threads, and
    the results do not depend on the machine's threading), no convergence warnings (the
    iterations are recorded with each model)."""
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(i) for i in items]`` on :data:`FIT_THREADS` threads (results in order)."""
    if FIT_THREADS <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=FIT_THREADS) as pool:
        return list(pool.map(fn, items))


def _standardise(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each column; a column whose standard deviation is below
    :data:`MIN_SCALE` is constant to the models (scale 1)."""
    mean = z.mean(axis=0)
    scale = z.std(axis=0)
    return mean, np.where(scale >= MIN_SCALE, scale, 1.0)


def _standardised(z: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(z - mean) / scale`` clipped to ``±CLIP``: what every fit and score reads."""
    return np.clip((z - mean) / scale, -CLIP, CLIP)


def _logistic(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="newton-cholesky", max_iter=MAX_ITER, tol=TOL,
                              warm_start=True)


def _log_loss(model: LogisticRegression, z: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(model.predict_proba(z), EPS, 1 - EPS)
    col = np.searchsorted(model.classes_, y)
    return float(-np.mean(np.log(p[np.arange(y.size), col])))


def cv_log_loss(z: np.ndarray, y: np.ndarray, ts: np.ndarray, end_ts: np.ndarray,
                field: np.ndarray | None = None, s: float = 1.0) -> tuple[np.ndarray, int]:
    """Mean validation log-loss per ``C`` of :data:`C_GRID` by time-ordered cross-validation,
    and the number of folds used (the losses are NaN with none).

    ``field`` marks the columns of ``z`` multiplied by ``s`` after the fold's standardisation.
    A fold whose training rows lack a class of the whole sample, or whose scored chunk holds a
    class its training rows lack, is skipped.
    """
    n = y.size
    edges = np.linspace(0, n, CV_FOLDS + 2).astype(np.int64)
    classes = np.unique(y)
    losses = np.zeros(len(C_GRID))
    used = 0
    for f in range(1, CV_FOLDS + 1):
        start, stop = edges[f], edges[f + 1]
        if stop <= start:
            continue
        train = np.flatnonzero(end_ts[:start] <= ts[start])
        if train.size == 0 or not np.array_equal(np.unique(y[train]), classes):
            continue
        mean, scale = _standardise(z[train])
        zt, zv = _standardised(z[train], mean, scale), _standardised(z[start:stop], mean, scale)
        if field is not None and s != 1.0:
            zt[:, field] *= s
            zv[:, field] *= s
        model = _logistic(C_GRID[0])
        for i, c in enumerate(C_GRID):
            model.set_params(C=c)
            model.fit(zt, y[train])
            losses[i] += _log_loss(model, zv, y[start:stop])
        used += 1
    if used == 0:
        return np.full(len(C_GRID), np.nan), 0
    return losses / used, used


def choose_c(z: np.ndarray, y: np.ndarray, ts: np.ndarray, end_ts: np.ndarray
             ) -> tuple[float, list[float | None], int]:
    """``(C, mean validation log-loss per C, folds used)`` by time-ordered cross-validation
    (:func:`cv_log_loss`); the lowest loss wins (ties: the stronger regularisation); with no
    usable fold ``C = 1``."""
    c, _, loss, used = choose_penalty(z, y, ts, end_ts)
    return c, loss[0], used


def _level1(z: np.ndarray, field: np.ndarray) -> np.ndarray:
    """The columns outside the field group (``s = 0``)."""
    return z[:, np.flatnonzero(~field)]


def choose_penalty(z: np.ndarray, y: np.ndarray, ts: np.ndarray, end_ts: np.ndarray,
                   field: np.ndarray | None = None, scales: Sequence[float] = (1.0,),
                   level1: np.ndarray | None = None
                   ) -> tuple[float, float, list[list[float | None]], int]:
    """``(C, field scale, mean validation log-loss per scale and C, folds used)``.

    ``field`` marks the columns of ``z`` each of ``scales`` multiplies; at scale 0 the
    cross-validation is the one of the other columns alone, ``level1`` (default
    ``z[:, ~field]``; :func:`fit_scored` passes the level-1 model's own array, so that the
    losses are that model's to the bit).

    The pair with the lowest mean log-loss wins; ties go to the smaller scale, then the smaller
    ``C`` (the stronger regularisation). With no usable fold: ``C = 1`` and the smallest scale
    (without evidence for the field, no weight on it).
    """
    rows = []
    used = 0
    for s in scales:
        if field is not None and s == 0.0:  # the level-1 model's own cross-validation
            row, used = cv_log_loss(_level1(z, field) if level1 is None else level1, y, ts,
                                    end_ts)
        else:
            row, used = cv_log_loss(z, y, ts, end_ts, field, s)
        rows.append(row)
    if used == 0:
        return 1.0, float(scales[0]), [[None] * len(C_GRID) for _ in scales], 0
    losses = np.stack(rows)
    # argmin takes the first of equal losses: rows run from the smallest scale, columns from
    # the strongest regularisation.
    k, i = (int(v) for v in np.unravel_index(int(np.argmin(losses)), losses.shape))
    return (float(C_GRID[i]), float(scales[k]),
            [[float(v) for v in row] for row in losses], used)


def in_sample_metrics(calls: np.ndarray, score: np.ndarray, y: np.ndarray,
                      change: np.ndarray, three_class: bool) -> dict[str, float | None]:
    """§13's metrics of the calls and score on the states they were fitted on."""
    sums = state_columns(calls[None], score[None], y, change).sum(0)
    values = metrics_from_sums(sums, 1, three_class)[0]
    return {m: (float(v) if np.isfinite(v) else None) for m, v in zip(METRICS, values,
                                                                          strict=True)}


def group_of(features: Sequence[str]) -> np.ndarray | None:
    """Which of ``features`` form the field group of the group penalty (None unless the set
    has both level-1 and field features)."""
    field = np.array([f in VP_FEATURES for f in features])
    return field if field.any() and not field.all() else None


def fit_model(name: str, target: str, three_class: bool, design: Design, rows: np.ndarray,
              y: np.ndarray, ts: np.ndarray, end_ts: np.ndarray,
              change: np.ndarray | None = None) -> FittedModel | None:
    """Fit model ``name`` for one target on the training states ``rows`` (see
    :func:`fit_scored`, which also returns the model's score of every state)."""
    fitted = fit_scored(name, target, three_class, design, rows, y, ts, end_ts, change)
    return None if fitted is None else fitted[0]


def fit_scored(name: str, target: str, three_class: bool, design: Design, rows: np.ndarray,
               y: np.ndarray, ts: np.ndarray, end_ts: np.ndarray,
               change: np.ndarray | None = None) -> tuple[FittedModel, np.ndarray] | None:
    """Fit model ``name`` for one target on the training states ``rows``.

    Parameters
    ----------
    design : Design
        Every state's transformed features.
    rows : int array
        The training states (indices into ``design``, in time order).
    y : int8 (states,)
        The target's classes (-1/+1, or -1/0/+1 for three-class targets).
    ts, end_ts : int64 (states,)
        Each state's time and the time its outcome is known (for purging the folds).
    change : float64 (states,), optional
        Forward mid change: with it the model records its in-sample metrics.

    Returns
    -------
    (FittedModel, scores of every state of ``design``), or None when the training states
    lack an up or a down outcome.
    """
    features = MODEL_FEATURES[name]
    cols = [FEATURES.index(f) for f in features]
    ok = rows[design.complete(features)[rows]]
    present = np.unique(y[ok])
    if -1 not in present or 1 not in present:
        return None
    stride = max(1, -(-ok.size // MAX_FIT_STATES))
    sample = ok[::stride]
    z = design.z[sample][:, cols]
    ys = y[sample]
    cv = slice(None, None, max(1, -(-sample.size // MAX_CV_STATES)))
    field = group_of(features)
    scales = (1.0,) if field is None else FIELD_SCALES
    # The level-1 columns exactly as the l1 model selects them (the same layout: the same bits).
    level1 = None if field is None else design.z[sample][:, np.asarray(cols)[~field]]
    c, s, cv_loss, folds = choose_penalty(z[cv], ys[cv], ts[sample][cv], end_ts[sample][cv],
                                          field, scales, None if level1 is None else level1[cv])
    mean, scale = _standardise(z)
    if field is None or s == 1.0:
        model = _logistic(c).fit(_standardised(z, mean, scale), ys)
        coef = model.coef_.astype(np.float64)
    elif s == 0.0:  # the level-1 model itself; the field's coefficients exactly 0
        assert level1 is not None
        mean[~field], scale[~field] = _standardise(level1)
        model = _logistic(c).fit(_standardised(level1, mean[~field], scale[~field]), ys)
        coef = np.zeros((model.coef_.shape[0], len(features)))
        coef[:, ~field] = model.coef_
    else:  # the scale folded into the field's stored coefficients
        zs = _standardised(z, mean, scale)
        zs[:, field] *= s
        model = _logistic(c).fit(zs, ys)
        coef = model.coef_.astype(np.float64)
        coef[:, field] *= s
    # A clock target whose training part never stays flat gives a two-class model: its
    # score is then P(up), and the band still leaves room for "flat" (no call).
    classes = tuple(int(k) for k in model.classes_)
    intercept = model.intercept_.astype(np.float64)
    transforms = tuple("asinh" if f in ASINH_FEATURES else "none" for f in features)
    regularisation: dict[str, Any] = {"penalty": "l2", "C": c, "grid": list(C_GRID)}
    k = scales.index(s)
    if field is not None:
        regularisation.update({"field_scale": s, "field_scale_grid": list(FIELD_SCALES)})
    regularisation.update({"cv_folds": folds, "cv_log_loss": cv_loss[k]})
    if field is not None:
        regularisation["field_scale_cv_log_loss"] = cv_loss
    regularisation["iterations"] = int(np.max(model.n_iter_))
    info: dict[str, Any] = {
        "regularisation": regularisation,
        "training": {"states": int(rows.size), "usable_states": int(ok.size),
                     "fit_states": int(sample.size), "stride": int(stride)},
    }
    fitted = FittedModel(name, target, classes, features, transforms, mean, scale, coef,
                         intercept, -np.inf, np.inf, info, clip=CLIP)
    scores = design.scores(fitted)
    lo, hi = fit_thresholds(scores[ok], y[ok], three_class)
    fitted = dataclasses.replace(fitted, lo=lo, hi=hi)
    if change is not None:
        calls = apply_thresholds(scores[ok], lo, hi)
        info["in_sample"] = in_sample_metrics(calls, scores[ok], y[ok], change[ok],
                                              three_class)
    return fitted, scores


# ------------------------------------------------------------------------------------------
# `vpbatch fit`: every model for every target on the given days


def check_names(kind: str, given: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    """``given`` in ``valid`` (order kept, duplicates dropped), else a one-line ConfigError."""
    for name in given:
        if name not in valid:
            raise ConfigError(f"{kind}: unknown {kind.rstrip('s')} {name!r} "
                              f"(valid: {', '.join(valid)})")
    if not given:
        raise ConfigError(f"{kind}: none given (valid: {', '.join(valid)})")
    return tuple(dict.fromkeys(given))


def fit_models(lake: Path | str, symbol: str, start: dt.date, end: dt.date | None = None, *,
               models: Sequence[str] = MODELS, targets: Sequence[str] = TARGETS,
               progress: Callable[[str], None] | None = None) -> ModelFile:
    """Fit each model for each target on every usable state of the built days ``start..end``.

    Parameters
    ----------
    lake : Path
        Lake root with complete builds.
    symbol : str
        Contract or ticker as built.
    start, end : datetime.date
        Inclusive range of training days (``end`` defaults to ``start``); days without a build
        are skipped (the file lists the days used).
    models : sequence of str
        Any of ``l1``, ``vp``, ``vp+l1`` (default: all three).
    targets : sequence of str
        Any of ``event_1/2/5``, ``clock_1s/5s/30s/60s`` (default: all seven).
    progress : callable, optional
        Called with ``"model/target"`` after each fit.

    Returns
    -------
    ModelFile
        Write it with :func:`vpbatch.fit.model.write_model_file`.

    Raises
    ------
    InputError
        No complete build in the range, no usable state, or a target without up and down
        outcomes in the training days.
    ConfigError
        An unknown model or target name.
    """
    models = check_names("models", models, MODELS)
    targets = check_names("targets", targets, TARGETS)
    end = start if end is None else end
    symbol = resolve_product(symbol).symbol
    states = load_states(lake, symbol, start, end)
    days = tuple(d.isoformat() for d in states.days)
    build_parameters = training_build_parameters(lake, symbol, days)
    design = Design.of(feature_matrix(lake, symbol, states), inplace=True)
    chosen = [t for t in compute_targets(states) if t.name in targets]

    def one(task: tuple[str, Target]) -> FittedModel | None:
        name, tg = task
        model = fit_model(name, tg.name, tg.three_class, design, np.flatnonzero(tg.available),
                          tg.y, states.ts, tg.end_ts, tg.change)
        if progress is not None:
            progress(f"{name}/{tg.name}")
        return model

    tasks = [(name, tg) for name in models for tg in chosen]
    with fitting():
        results = parallel_map(one, tasks)
    fitted = []
    for (_, tg), model in zip(tasks, results, strict=True):
        if model is None:
            raise InputError(f"{symbol} {', '.join(days)}: target {tg.name} has no up or no "
                             "down outcome on usable states; cannot fit it (choose other "
                             "--targets or more days)")
        fitted.append(model)
    default = ("vp+l1" if "vp+l1" in models else models[0], chosen[0].name)
    return ModelFile(symbol=symbol, training_days=days, vpbatch_version=engine_version(),
                     models=tuple(fitted), default=default, build_parameters=build_parameters)


def training_build_parameters(lake: Path | str, symbol: str, days: Sequence[str]
                              ) -> dict[str, Any]:
    """The parameters the training days were built with (``{"bucket", "config"}`` of their
    manifests), which ``build --model`` and ``live --model`` hold a build to.

    Raises
    ------
    ConfigError
        When two training days were built with different parameters (their features do not
        measure the same thing).
    """
    product = resolve_product(symbol)
    found: dict[str, Any] | None = None
    first = ""
    for day in days:
        part = find_partition(lake, "vp_snapshot", product.product_type, product.symbol, day)
        if part is None:  # pragma: no cover - load_states read it a moment ago
            raise InputError(f"{lake}: no complete build of {product.symbol} for {day}")
        manifest = partition_manifest(part)
        params = {"bucket": int(manifest["product"]["bucket"]), "config": manifest["config"]}
        if found is None:
            found, first = params, day
        elif params != found:
            field = "bucket" if params["bucket"] != found["bucket"] else "config." + next(
                k for k in sorted(set(found["config"]) | set(params["config"]))
                if found["config"].get(k) != params["config"].get(k))
            raise ConfigError(f"{product.symbol}: training days {first} and {day} were built "
                              f"with different parameters ({field}); fit on days built alike")
    assert found is not None
    return found
