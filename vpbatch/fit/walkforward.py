"""Fitted models inside ``vpbatch evaluate`` (``--models``, ``--model``; SPEC §15).

``--models l1,vp,vp+l1`` adds the predictors ``fit_l1``, ``fit_vp``, ``fit_vp+l1``: for each
target and each split of evaluate's walk-forward (every earlier day trains and the day is
tested; one day: the first half trains), a model is fitted on exactly the training states
that evaluate's thresholds see (outcomes known before the test part starts) and scores the
test part, so no model ever sees its test part. ``fit_vp+l1`` minus ``fit_l1`` in MCC and IC,
per target, comes with a paired moving-block interval (the ``differences`` section).

``--model model.json`` adds ``model_<name>`` for each model in a ``vpbatch fit`` document,
scored with its saved coefficients and band (nothing refitted); its training days must not be
among the days tested.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from vpbatch.errors import ConfigError
from vpbatch.evaluate.evaluation import (
    Evaluation,
    Predictor,
    Split,
    States,
    Target,
    compute_predictors,
    compute_targets,
    evaluate_states,
    load_states,
    walk_forward_splits,
)
from vpbatch.evaluate.stats import Bootstrap, apply_thresholds
from vpbatch.fit.features import FEATURES, MODELS, feature_matrix
from vpbatch.fit.model import FittedModel, ModelFile, model_names, read_model_file
from vpbatch.fit.train import TARGETS, Design, check_names, fit_scored, fitting, parallel_map
from vpbatch.products import resolve_product

#: The comparison SPEC §15 asks for: does the field add to the level-1 book?
DIFFERENCES: Final = (("fit_vp+l1", "fit_l1"), ("model_vp+l1", "model_l1"))


def _fit_row(predictor: str, tg: Target, day: str, model: FittedModel | None,
             train_states: int) -> dict[str, Any]:
    row: dict[str, Any] = {"predictor": predictor, "target": tg.name, "test_day": day,
                           "train_states": train_states}
    if model is None:
        row["error"] = "no up or no down outcome in the training part: no model, no calls"
        return row
    reg, training = model.info["regularisation"], model.info["training"]
    row.update({"C": reg["C"], "cv_folds": reg["cv_folds"], "fit_states": training["fit_states"],
                "lo": model.lo if np.isfinite(model.lo) else None,
                "hi": model.hi if np.isfinite(model.hi) else None})
    if "field_scale" in reg:  # a model with level-1 and field features (group penalty)
        row["field_scale"] = reg["field_scale"]
    return row


def fitted_predictors(s: States, design: Design, targets: Sequence[Target],
                      splits: Sequence[Split], models: Sequence[str],
                      progress: Callable[[str], None] | None = None
                      ) -> tuple[list[Predictor], list[dict[str, Any]]]:
    """``fit_<model>`` predictors fitted walk-forward, and one row per fit (C, band, sizes).

    Each model is fitted per target and split on the states evaluate trains its thresholds on
    (``split.train``, outcome available and known before the test part starts), and makes its
    calls and scores on ``split.test`` only (NaN score and no call elsewhere).
    """
    tasks = [(name, tg, sp) for name in models for tg in targets for sp in splits]

    def one(task: tuple[str, Target, Split]) -> tuple[FittedModel, np.ndarray] | None:
        name, tg, sp = task
        train = np.flatnonzero(sp.train & tg.available & (tg.end_ts <= sp.split_ts))
        fitted = fit_scored(name, tg.name, tg.three_class, design, train, tg.y, s.ts,
                            tg.end_ts)
        if progress is not None:
            progress(f"fit_{name}/{tg.name}")
        # Keep the test part's scores only (the rest would hold every state per fit).
        return None if fitted is None else (fitted[0], fitted[1][sp.test])

    with fitting():
        fitted = dict(zip(((n, t.name, sp.test_day) for n, t, sp in tasks),
                          parallel_map(one, tasks), strict=True))
    predictors: list[Predictor] = []
    rows: list[dict[str, Any]] = []
    for name in models:
        per_target: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for tg in targets:
            call = np.zeros(len(s), np.int8)
            score = np.full(len(s), np.nan)
            for sp in splits:
                result = fitted[(name, tg.name, sp.test_day)]
                train = sp.train & tg.available & (tg.end_ts <= sp.split_ts)
                model = None if result is None else result[0]
                rows.append(_fit_row(f"fit_{name}", tg, str(s.days[sp.test_day]), model,
                                     int(train.sum())))
                if result is not None:
                    score[sp.test] = result[1]
                    call[sp.test] = apply_thresholds(result[1], result[0].lo, result[0].hi)
            per_target[tg.name] = (call, score)
        predictors.append(Predictor(f"fit_{name}", "fitted", None, np.full(len(s), np.nan),
                                    per_target))
    return predictors, rows


def saved_predictors(s: States, x: np.ndarray, file: ModelFile, source: str,
                     test_days: Sequence[str]) -> tuple[list[Predictor], list[dict[str, Any]]]:
    """``model_<name>`` predictors scoring a saved document's models on every state.

    Raises
    ------
    ConfigError
        When a day tested here is one of the document's training days (not out of sample).
    """
    overlap = sorted(set(file.training_days) & set(test_days))
    if overlap:
        raise ConfigError(f"{source}: trained on {', '.join(overlap)}, which is tested here; "
                          "evaluate a saved model on days after its training days")
    predictors: list[Predictor] = []
    rows: list[dict[str, Any]] = []
    for name in model_names(file.models):
        per_target = {}
        for m in file.models:
            if m.name != name:
                continue
            cols = x[:, [FEATURES.index(f) for f in m.features]]
            per_target[m.target] = (m.calls(cols), m.score(cols))
            rows.append({"predictor": f"model_{name}", "target": m.target, "file": source,
                         "training_days": list(file.training_days),
                         "lo": m.lo if np.isfinite(m.lo) else None,
                         "hi": m.hi if np.isfinite(m.hi) else None})
        predictors.append(Predictor(f"model_{name}", "fitted", None, np.full(len(s), np.nan),
                                    per_target))
    return predictors, rows


def evaluate_with_models(lake: Path | str, symbol: str, start: dt.date, end: dt.date | None = None,
                         *, models: Sequence[str] = (), model_file: Path | None = None,
                         targets: Sequence[str] | None = None,
                         settings: Bootstrap | None = None,
                         progress: Callable[[str], None] | None = None,
                         fit_progress: Callable[[str], None] | None = None) -> Evaluation:
    """``vpbatch evaluate`` with fitted models next to the §13 predictors.

    Parameters
    ----------
    lake, symbol, start, end, settings, progress
        As :func:`vpbatch.evaluate.evaluation.evaluate`.
    models : sequence of str
        Any of ``l1``, ``vp``, ``vp+l1``: fitted walk-forward inside the evaluation.
    model_file : Path, optional
        A ``vpbatch fit`` document scored out of sample.
    targets : sequence of str, optional
        Evaluate only these targets (default: all seven).
    fit_progress : callable, optional
        Called with ``"fit_<model>/<target>"`` after each model is fitted for a target.

    Raises
    ------
    InputError
        As ``evaluate``, or a missing or malformed model file.
    ConfigError
        An unknown model name, or a model file trained on a day tested here.
    """
    models = check_names("models", models, MODELS) if models else ()
    wanted = check_names("targets", targets, TARGETS) if targets is not None else TARGETS
    file = read_model_file(Path(model_file)) if model_file is not None else None
    end = start if end is None else end
    symbol = resolve_product(symbol).symbol
    states = load_states(lake, symbol, start, end)
    x = feature_matrix(lake, symbol, states)
    chosen = [t for t in compute_targets(states) if t.name in wanted]
    predictors = compute_predictors(states)
    _, splits = walk_forward_splits(states)
    saved: list[Predictor] = []
    rows: list[dict[str, Any]] = []
    if file is not None:  # scored from the raw features, before they are transformed
        test_days = [states.days[sp.test_day].isoformat() for sp in splits]
        saved, rows = saved_predictors(states, x, file, str(model_file), test_days)
    fitted, fits = fitted_predictors(states, Design.of(x, inplace=True), chosen, splits,
                                     models, fit_progress)
    fitted += saved
    fits += rows
    names = {p.name for p in fitted}
    pairs = [pair for pair in DIFFERENCES if set(pair) <= names]
    # The fitted predictors go before `majority`, which closes the table.
    ev = evaluate_states(states, symbol=symbol, settings=settings, targets=chosen,
                         predictors=predictors[:-1] + fitted + predictors[-1:],
                         differences=pairs, progress=progress)
    ev.fits = fits
    return ev
