"""A fitted model and its JSON document (``vpbatch fit -o model.json``, SPEC §15).

A model is one regularised logistic regression for one target over one feature set, plus the
call band fitted on its training part. The document is small and versioned: everything needed
to score a state again (features, transforms, standardisation, coefficients, band) and what it
was fitted on (symbol, days, the build parameters of those days, states, regularisation,
in-sample metrics, vpbatch version). Reading it checks every field and names the first bad one
(file and field) in one line.

A saved model scores states with one compiled loop per state (:func:`model_probabilities`):
each state's probabilities are a function of that state's features alone, the same bits
whether it is scored with a whole day (``evaluate --model``, :meth:`FittedModel.predict`) or in
a batch of one (``build --model``, ``live --model``). A BLAS matrix product would not promise
that: its summation order can depend on the number of rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from numba import njit
from scipy.special import expit

from vpbatch.errors import ConfigError, InputError
from vpbatch.evaluate.stats import apply_thresholds
from vpbatch.fit.features import FEATURES

#: ``format`` of the document.
FORMAT: Final = "vpbatch-model"
#: Version of the document's layout (a reader refuses a newer one). 2 added each model's
#: ``clip``: a version-1 reader would have scored such a model without it.
FORMAT_VERSION: Final = 2
#: Rows scored per block by :meth:`FittedModel.score_design` (bounds its copy of the features).
SCORE_BLOCK: Final = 1 << 16
#: Feature transforms a model may apply before standardising.
TRANSFORMS: Final = ("none", "asinh")


def load_kernels() -> None:
    """Compile (into numba's cache) or load :func:`model_probabilities` for the arguments
    scoring passes (C-ordered float64 features, a bool per transform): ``make install`` runs it
    (``python -m cli.warm``), so that a first ``fit``, ``build --model`` or ``live --model``
    does not compile it."""
    n, k = 1, 2
    model_probabilities(np.zeros((n, k)), np.zeros(k, dtype=np.bool_), np.zeros(k), np.ones(k),
                        1.0, np.zeros((1, k)), np.zeros(1))


@njit(cache=True, nogil=True)
def model_probabilities(x: np.ndarray, asinh: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                        clip: float, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``(n, classes)`` probabilities of a logistic model, one state (row of ``x``) at a time.

    ``x``: raw features in model order; ``asinh``: which enter as ``asinh(x)``; then
    ``(z - mean) / scale`` clipped to ``±clip``; one logit per row of ``coef`` (one row: the up
    class's log-odds of two classes; three: multinomial down/flat/up), summed over the features
    in order. A row with a missing (NaN) feature is all NaN.
    """
    n, p = x.shape
    rows = coef.shape[0]
    k = 2 if rows == 1 else rows
    out = np.empty((n, k))
    z = np.empty(p)
    logit = np.empty(rows)
    for i in range(n):
        missing = False
        for j in range(p):
            v = x[i, j]
            if v != v:
                missing = True
            if asinh[j]:
                v = math.asinh(v)
            z[j] = min(max((v - mean[j]) / scale[j], -clip), clip)
        if missing:
            out[i, :] = np.nan
            continue
        for c in range(rows):
            acc = intercept[c]
            for j in range(p):
                acc += z[j] * coef[c, j]
            logit[c] = acc
        if rows == 1:
            up = 1.0 / (1.0 + math.exp(-logit[0]))
            out[i, 0] = 1.0 - up
            out[i, 1] = up
            continue
        top = logit[0]
        for c in range(1, rows):
            top = max(top, logit[c])
        total = 0.0
        for c in range(rows):
            out[i, c] = math.exp(logit[c] - top)
            total += out[i, c]
        for c in range(rows):
            out[i, c] /= total
    return out


@dataclass(frozen=True)
class FittedModel:
    """One fitted model: ``P(class | features)`` by a (multinomial) logistic regression.

    ``classes`` is ``(-1, 1)`` (down/up: the event targets, or a clock target that never stayed
    flat in training) or ``(-1, 0, 1)`` (down/flat/up). ``coef`` has one row per class for three
    classes, one row (the up class's log-odds) for two. ``lo``/``hi`` is the call band on
    :meth:`score` (SPEC §13).
    """

    name: str
    target: str
    classes: tuple[int, ...]
    features: tuple[str, ...]
    transforms: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    lo: float
    hi: float
    info: dict[str, Any] = field(default_factory=dict)
    #: Standardised features are clipped to ``±clip`` (``inf``: a version-1 document's model).
    clip: float = math.inf

    @property
    def three_class(self) -> bool:
        return len(self.classes) == 3

    def design(self, x: np.ndarray) -> np.ndarray:
        """Transformed and standardised features ``(n, p)`` from raw ones in model order."""
        z = np.array(x, dtype=np.float64, copy=True)
        cols = [j for j, transform in enumerate(self.transforms) if transform == "asinh"]
        z[:, cols] = np.arcsinh(z[:, cols])
        return np.clip((z - self.mean) / self.scale, -self.clip, self.clip)

    def _from_logits(self, logits: np.ndarray) -> np.ndarray:
        if self.coef.shape[0] == 1:
            up = expit(logits[:, 0])
            return np.column_stack([1.0 - up, up])
        logits = logits - np.max(logits, axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def _score_from(self, p: np.ndarray) -> np.ndarray:
        up = p[:, self.classes.index(1)]
        return up - p[:, self.classes.index(-1)] if self.three_class else up

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(n, classes)`` probabilities; NaN rows where a feature is missing.

        Each row from its own features only, in one compiled loop (:func:`model_probabilities`):
        the same bits for a state scored alone or with its whole day.
        """
        asinh = np.array([t == "asinh" for t in self.transforms])
        return model_probabilities(np.ascontiguousarray(x, dtype=np.float64), asinh,
                                   self.mean, self.scale, float(self.clip),
                                   np.ascontiguousarray(self.coef), self.intercept)

    def score_design(self, z_all: np.ndarray) -> np.ndarray:
        """:meth:`score` from the transformed features of every column of ``FEATURES``
        (``z_all``, missing values 0), a block of rows at a time: each block's features are
        clipped to ``mean ± clip * scale`` (the same as clipping the standardised ones) and
        the standardisation is folded into the coefficients. Features whose coefficients are
        all 0 (the field of a ``vp+l1`` model whose cross-validation chose no field) are left
        out, so such a model scores exactly as the model without them."""
        used = np.any(self.coef != 0, axis=0)
        cols = [FEATURES.index(f) for f, u in zip(self.features, used, strict=True) if u]
        mean, scale, coef = self.mean[used], self.scale[used], self.coef[:, used]
        w = (coef / scale).T
        b = self.intercept - (mean / scale) @ coef.T
        lo, hi = mean - self.clip * scale, mean + self.clip * scale
        logits = np.empty((z_all.shape[0], coef.shape[0]))
        for start in range(0, z_all.shape[0], SCORE_BLOCK):
            stop = start + SCORE_BLOCK
            block = z_all[start:stop, cols]  # a copy (a list of columns)
            np.clip(block, lo, hi, out=block)
            np.matmul(block, w, out=logits[start:stop])
        return self._score_from(self._from_logits(logits + b))

    def up_probability(self, x: np.ndarray) -> np.ndarray:
        """``P(up)`` per state (NaN where a feature is missing)."""
        return self.probabilities(x)[:, self.classes.index(1)]

    def score(self, x: np.ndarray) -> np.ndarray:
        """The continuous score the band and the IC use: ``P(up)`` for two classes,
        ``P(up) - P(down)`` (the expected direction) for three."""
        return self._score_from(self.probabilities(x))

    def calls(self, x: np.ndarray) -> np.ndarray:
        """Calls in {-1, 0, +1} (0: inside the band, or a missing feature)."""
        return apply_thresholds(self.score(x), self.lo, self.hi)

    def columns(self, features: pl.DataFrame) -> np.ndarray:
        """This model's raw features ``(n, p)`` from a feature table (``vpbatch.fit.features``)."""
        missing = [f for f in self.features if f not in features.columns]
        if missing:
            raise ConfigError(f"features: missing column {missing[0]!r} that model "
                              f"{self.name}/{self.target} needs")
        return features.select(self.features).cast(pl.Float64).fill_null(np.nan).to_numpy()

    def predict(self, features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(call, probability)`` per row of a feature table, vectorised.

        ``call`` is int8 in {-1, 0, +1} (0 = no call: inside the band, or a missing feature);
        ``probability`` is the model's ``P(up)`` (NaN where a feature is missing).
        """
        x = self.columns(features)
        return self.calls(x).astype(np.int8), self.up_probability(x)


@dataclass(frozen=True)
class ModelFile:
    """What ``vpbatch fit`` writes: the fitted models of one symbol and their provenance.

    ``build_parameters`` (``{"bucket": int, "config": EngineConfig.to_dict()}``) are the
    parameters the training days were built with: the features mean what they meant in
    training only for states built the same way, which ``build --model`` and ``live --model``
    check (None in a document written before they were recorded: nothing to check).
    """

    symbol: str
    training_days: tuple[str, ...]
    vpbatch_version: str
    models: tuple[FittedModel, ...]
    default: tuple[str, str]  # (model name, target) of the model used when none is named
    build_parameters: dict[str, Any] | None = None

    def get(self, name: str | None = None, target: str | None = None,
            source: str = "model file") -> FittedModel:
        """The model ``name`` for ``target`` (the file's default for an omitted one)."""
        name = self.default[0] if name is None else name
        target = self.default[1] if target is None else target
        for m in self.models:
            if (m.name, m.target) == (name, target):
                return m
        have = ", ".join(f"{m.name}/{m.target}" for m in self.models)
        raise ConfigError(f"{source}: no model {name!r} for target {target!r} (have: {have})")


# ------------------------------------------------------------------------------------------
# JSON


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def model_to_dict(m: FittedModel) -> dict[str, Any]:
    return {
        "name": m.name, "target": m.target, "classes": list(m.classes),
        "features": list(m.features), "transforms": list(m.transforms),
        "mean": [float(v) for v in m.mean], "scale": [float(v) for v in m.scale],
        "coef": [[float(v) for v in row] for row in m.coef],
        "intercept": [float(v) for v in m.intercept],
        "band": {"lo": _num(m.lo), "hi": _num(m.hi)}, "clip": _num(m.clip),
        **m.info,
    }


def file_to_dict(f: ModelFile) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                           "vpbatch_version": f.vpbatch_version, "symbol": f.symbol,
                           "training_days": list(f.training_days)}
    if f.build_parameters is not None:
        doc["build_parameters"] = f.build_parameters
    doc.update({"default": {"model": f.default[0], "target": f.default[1]},
                "models": [model_to_dict(m) for m in f.models]})
    return doc


def write_model_file(f: ModelFile, path: Path) -> Path:
    """Write the document atomically (parents created); the same fit writes the same bytes."""
    from vpbatch.store.files import save_output

    text = json.dumps(file_to_dict(f), indent=1, allow_nan=False) + "\n"
    save_output(Path(path), text.encode("utf-8"))
    return Path(path)


class _Reader:
    """Field checks that name the file and the field of the first problem."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> InputError:
        return InputError(f"{self.path}: {where}: {what}")

    def get(self, obj: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]
            ) -> Any:
        here = f"{where}.{key}" if where else key
        if key not in obj:
            raise self.fail(here, "missing")
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            kinds = (kind,) if isinstance(kind, type) else kind
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(here, f"expected {names}, got {type(value).__name__}")
        return value

    def numbers(self, obj: Mapping[str, Any], key: str, where: str, n: int) -> np.ndarray:
        values = self.get(obj, key, where, list)
        if len(values) != n or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                       and math.isfinite(v) for v in values):
            raise self.fail(f"{where}.{key}", f"expected {n} finite number{'s' * (n != 1)}")
        return np.array(values, np.float64)

    def bound(self, obj: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = self.get(obj, key, where, (int, float, type(None)))
        return default if value is None else float(value)


def _read_model(r: _Reader, obj: Any, where: str, version: int) -> FittedModel:
    if not isinstance(obj, dict):
        raise r.fail(where, "expected an object")
    name = r.get(obj, "name", where, str)
    target = r.get(obj, "target", where, str)
    classes = tuple(r.get(obj, "classes", where, list))
    if classes not in ((-1, 1), (-1, 0, 1)):
        raise r.fail(f"{where}.classes", f"expected [-1, 1] or [-1, 0, 1], got {list(classes)}")
    features = r.get(obj, "features", where, list)
    unknown = [f for f in features if f not in FEATURES]
    if not features or unknown:
        raise r.fail(f"{where}.features", f"unknown feature {unknown[0]!r}" if unknown
                     else "empty")
    p = len(features)
    transforms = r.get(obj, "transforms", where, list)
    if len(transforms) != p or any(t not in TRANSFORMS for t in transforms):
        raise r.fail(f"{where}.transforms", f"expected {p} of {', '.join(TRANSFORMS)}")
    mean = r.numbers(obj, "mean", where, p)
    scale = r.numbers(obj, "scale", where, p)
    if np.any(scale <= 0):
        raise r.fail(f"{where}.scale", "must be positive")
    rows = 1 if len(classes) == 2 else 3
    coef_rows = r.get(obj, "coef", where, list)
    if len(coef_rows) != rows:
        raise r.fail(f"{where}.coef", f"expected {rows} row(s) of {p} numbers")
    coef = np.stack([r.numbers({"row": row}, "row", f"{where}.coef[{i}]", p)
                     for i, row in enumerate(coef_rows)])
    intercept = r.numbers(obj, "intercept", where, rows)
    band = r.get(obj, "band", where, dict)
    lo = r.bound(band, "lo", f"{where}.band", -math.inf)
    hi = r.bound(band, "hi", f"{where}.band", math.inf)
    if lo > hi:
        raise r.fail(f"{where}.band", f"lo {lo} is above hi {hi}")
    clip = math.inf  # version 1: no clipping
    if version >= 2:
        clip = r.bound(obj, "clip", where, math.inf)
        if not clip > 0:
            raise r.fail(f"{where}.clip", f"must be positive (or null: none), got {clip}")
    known = {"name", "target", "classes", "features", "transforms", "mean", "scale", "coef",
             "intercept", "band", "clip"}
    info = {k: v for k, v in obj.items() if k not in known}
    return FittedModel(name, target, classes, tuple(features), tuple(transforms), mean, scale,
                       coef, intercept, lo, hi, info, clip=clip)


def _read_build_parameters(r: _Reader, doc: Mapping[str, Any]) -> dict[str, Any] | None:
    if "build_parameters" not in doc:
        return None
    params = r.get(doc, "build_parameters", "", dict)
    bucket = r.get(params, "bucket", "build_parameters", int)
    if bucket <= 0:
        raise r.fail("build_parameters.bucket", "must be positive")
    config = r.get(params, "config", "build_parameters", dict)
    return {"bucket": bucket, "config": config}


def read_model_bytes(path: Path) -> bytes:
    """The bytes of a model document (InputError naming the file when unreadable)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read model file: {exc.strerror or exc}") from None


def read_model_file(path: Path, data: bytes | None = None) -> ModelFile:
    """Read and check a model document (``data``: its bytes, already read).

    Raises
    ------
    InputError
        Missing or unreadable file, not JSON, another format or a newer version, or a bad
        field (the message names the file and the field).
    """
    path = Path(path)
    if data is None:
        data = read_model_bytes(path)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{path}: not a JSON document: {exc}") from None
    r = _Reader(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise r.fail("format", f"expected {FORMAT!r} (a file written by `vpbatch fit`)")
    version = r.get(doc, "format_version", "", int)
    if version > FORMAT_VERSION:
        raise r.fail("format_version", f"{version} is newer than this vpbatch reads "
                     f"({FORMAT_VERSION}); upgrade vpbatch")
    models = r.get(doc, "models", "", list)
    if not models:
        raise r.fail("models", "empty")
    parsed = tuple(_read_model(r, m, f"models[{i}]", version) for i, m in enumerate(models))
    default = r.get(doc, "default", "", dict)
    file = ModelFile(symbol=r.get(doc, "symbol", "", str),
                     training_days=tuple(r.get(doc, "training_days", "", list)),
                     vpbatch_version=r.get(doc, "vpbatch_version", "", str), models=parsed,
                     default=(r.get(default, "model", "default", str),
                              r.get(default, "target", "default", str)),
                     build_parameters=_read_build_parameters(r, doc))
    try:
        file.get(source=str(path))
    except ConfigError:
        raise r.fail("default", f"no model {file.default[0]!r} for target "
                     f"{file.default[1]!r} in models") from None
    return file


def load_model(path: Path, name: str | None = None, target: str | None = None) -> FittedModel:
    """One model of a ``vpbatch fit`` document (its default model and target when not named).

    Raises
    ------
    InputError
        A missing or malformed file (:func:`read_model_file`).
    ConfigError
        No model ``name`` for ``target`` in the file.
    """
    return read_model_file(path).get(name, target, source=str(path))


def model_names(models: Sequence[FittedModel]) -> list[str]:
    """Distinct model names in file order."""
    return list(dict.fromkeys(m.name for m in models))
