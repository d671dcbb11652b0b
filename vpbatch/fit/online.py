"""A fitted model scoring states as a build or a live session emits them (``--model``,
SPEC §15).

:class:`ModelScorer` is the :class:`~vpbatch.build.scoring.StateScorer` that ``vpbatch build
--model`` and ``vpbatch live --model`` hand to the build: one model of a ``vpbatch fit``
document, its file's sha256 and the build parameters it was fitted under. Per partition,
:class:`DayModel` scores each engine batch of states with exactly the values the batch code
path computes from the built lake (``vpbatch evaluate --model``, :meth:`FittedModel.predict`
on :func:`~vpbatch.fit.features.day_features`), bit for bit, whatever the batches:

* **usable states** as evaluate selects them (a valid book, both sides priced and sized,
  ``bid < ask``); the others get no score (null call and probability), as evaluate leaves
  them out;
* **level-1 signals** from :class:`Level1Window`: evaluate's elementwise formulas
  (:func:`~vpbatch.evaluate.evaluation.touch_signals`,
  :func:`~vpbatch.evaluate.evaluation.ofi_terms`), the OFI windows from a running sum over
  the day and a ring of the last 10 s of states;
* **band sums** from the same compiled row loop as the day's pass
  (:func:`~vpbatch.fit.features.add_band_sums_of_rows`), over the batch's grid rows with the
  chains narrowed to ``float32`` as the writer stores them;
* **the model** through :func:`~vpbatch.fit.model.model_probabilities`, one state at a time.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from vpbatch.clock import NS_PER_SECOND
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError, VpbatchWarning
from vpbatch.evaluate.evaluation import TRAILING_WINDOWS, ofi_terms, touch_signals
from vpbatch.evaluate.stats import apply_thresholds
from vpbatch.fit.features import BAND_FEATURES, FEATURES, add_band_sums_of_rows
from vpbatch.fit.model import (
    FORMAT,
    FORMAT_VERSION,
    FittedModel,
    model_probabilities,
    read_model_bytes,
    read_model_file,
)
from vpbatch.sql import FEATURE_PARAM_NAMES, feature_parameters
from vpbatch.store.schema import MODEL_COLUMNS

#: The longest trailing window (ns): how far back the ring of states reaches.
MAX_WINDOW_NS: Final = max(TRAILING_WINDOWS) * NS_PER_SECOND
#: Where the band sums and the regime's two outputs go in the feature row.
_BAND_AT: Final = FEATURES.index(BAND_FEATURES[0])
_REGIME_AT: Final = FEATURES.index("regime_score")
assert FEATURES[_REGIME_AT + 1] == "regime_intensity"


def usable_books(snapshots: np.ndarray) -> np.ndarray:
    """States evaluate scores (:func:`~vpbatch.evaluate.evaluation.states_from_frame`): a valid
    book with both best prices (not NaN: null in the lake) and positive sizes, not crossed
    (neither flagged nor ``bid >= ask``)."""
    bid, ask = snapshots["best_bid_price"], snapshots["best_ask_price"]
    valid = (snapshots["book_valid"] & ~np.isnan(bid) & ~np.isnan(ask)
             & (snapshots["best_bid_size"] > 0) & (snapshots["best_ask_size"] > 0))
    crossed = snapshots["crossed"] | (bid >= ask)
    return np.asarray(valid & ~crossed)


class Level1Window:
    """:func:`~vpbatch.evaluate.evaluation.level1_signals` of one day's usable states, fed a
    batch at a time (tested equal to the day's arrays, bit for bit).

    Queue imbalance and micro-price are elementwise. ``e_n`` of each state needs the previous
    usable state's touch (kept). An OFI window sum is ``C(n) - C(m)``: ``C`` the running sum
    of ``e`` from the day's first state (the same sequential additions as the day's
    ``cumsum``) and ``m`` the last state at or before ``t - w``. The ring keeps the states of
    the last :data:`MAX_WINDOW_NS` plus the newest older one, so ``m`` is always in it (or,
    early in the day, before the first state: ``C = 0``).
    """

    def __init__(self) -> None:
        self._ts = np.empty(0, np.int64)
        self._cum = np.empty(0)
        self._total = 0.0
        self._last: np.ndarray | None = None  # bid, ask, bid size, ask size of the last state

    def push(self, ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, bid_size: np.ndarray,
             ask_size: np.ndarray) -> dict[str, np.ndarray]:
        """The signals of the next usable states (in order; float64 prices and sizes)."""
        out = touch_signals(bid, ask, bid_size, ask_size)
        n = ts.size
        if n == 0:
            out.update({f"ofi_{w}s": np.empty(0) for w in TRAILING_WINDOWS})
            return out
        touch = np.stack((bid, ask, bid_size, ask_size))
        before = np.empty((4, n))
        before[:, 0] = touch[:, 0] if self._last is None else self._last
        before[:, 1:] = touch[:, :-1]
        e = ofi_terms(before[0], before[1], before[2], before[3], bid, ask, bid_size, ask_size)
        if self._last is None:
            e[0] = 0.0  # the day's first state
        cum = np.cumsum(np.concatenate(((self._total,), e)))[1:]
        all_ts = np.concatenate((self._ts, ts))
        all_cum = np.concatenate((self._cum, cum))
        at = np.searchsorted(all_ts, (ts - _WINDOWS_NS).ravel(), side="right") - 1
        base = np.where(at >= 0, all_cum[np.maximum(at, 0)], 0.0).reshape(_WINDOWS_NS.shape[0],
                                                                          n)
        for i, w in enumerate(TRAILING_WINDOWS):
            out[f"ofi_{w}s"] = cum - base[i]
        keep = max(int(np.searchsorted(all_ts, ts[-1] - MAX_WINDOW_NS, side="right")) - 1, 0)
        self._ts, self._cum = all_ts[keep:], all_cum[keep:]
        self._total = float(cum[-1])
        self._last = touch[:, -1].copy()
        return out


#: The trailing windows (ns), a column for broadcasting against state times.
_WINDOWS_NS: Final = np.array(TRAILING_WINDOWS, np.int64)[:, None] * NS_PER_SECOND


class DayModel:
    """One partition's states scored batch by batch
    (a :class:`~vpbatch.build.scoring.DayScorer`)."""

    def __init__(self, model: FittedModel, prm: np.ndarray) -> None:
        self.model = model
        self.prm = prm
        self.columns = np.array([FEATURES.index(f) for f in model.features], np.int64)
        self.needs_bands = any(f in BAND_FEATURES for f in model.features)
        self.level1 = Level1Window()
        self._asinh = np.array([t == "asinh" for t in model.transforms])
        self._coef = np.ascontiguousarray(model.coef, dtype=np.float64)
        self._up = model.classes.index(1)
        self._down = model.classes.index(-1)

    def features(self, snaps: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Every feature of a batch's usable states (``snaps``), ``(states, len(FEATURES))``;
        ``grid``: the batch's grid rows (rows of other states are skipped)."""
        x = np.zeros((snaps.shape[0], len(FEATURES)))
        bid = snaps["best_bid_price"].astype(np.float64)
        ask = snaps["best_ask_price"].astype(np.float64)
        ts = snaps["ts_event"].astype(np.int64)
        signals = self.level1.push(ts, bid, ask, snaps["best_bid_size"].astype(np.float64),
                                   snaps["best_ask_size"].astype(np.float64))
        for name, values in signals.items():
            x[:, FEATURES.index(name)] = values
        x[:, _REGIME_AT] = snaps["regime_score"]
        x[:, _REGIME_AT + 1] = snaps["regime_intensity"]
        if self.needs_bands and len(grid):
            sums = np.zeros((snaps.shape[0], len(BAND_FEATURES)))
            add_band_sums_of_rows(sums, snaps["event_id"].astype(np.int64), ts,
                                  (bid + ask) / 2.0, grid, self.prm)
            x[:, _BAND_AT:] = sums
        return x

    def score(self, snapshots: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(call, probability)`` of each state: see :class:`ModelScorer`."""
        n = snapshots.shape[0]
        usable = usable_books(snapshots)
        if usable.all():
            snaps = snapshots
        elif usable.any():
            snaps = snapshots[usable]
        else:
            return np.zeros(n, np.int8), np.full(n, np.nan)
        # C order, as :meth:`FittedModel.probabilities` passes it (one compiled version).
        x = np.ascontiguousarray(self.features(snaps, grid)[:, self.columns])
        m = self.model
        p = model_probabilities(x, self._asinh, m.mean, m.scale, float(m.clip), self._coef,
                                m.intercept)
        up = p[:, self._up]
        call = apply_thresholds(up - p[:, self._down] if m.three_class else up, m.lo, m.hi)
        if snaps is snapshots:
            return call, up
        calls = np.zeros(n, np.int8)
        probability = np.full(n, np.nan)
        calls[usable] = call
        probability[usable] = up
        return calls, probability


@dataclass(frozen=True, eq=False)  # hashable by identity: a BuildRequest holding it hashes
class ModelScorer:
    """One model of a ``vpbatch fit`` document as a build's scorer (``build --model``).

    Per state: ``model_call`` in {-1, 0, +1} (the model's score against its band, as
    ``evaluate --model`` calls it: 0 inside the band) and ``model_probability`` = ``P(up)``
    (:meth:`FittedModel.predict`); both null where the model gives no score (an unusable book,
    or a missing feature such as a NaN regime score), where evaluate has no call either.
    Picklable (the request crosses to ``--jobs`` processes and Dask workers with it).
    """

    model: FittedModel
    path: str
    sha256: str
    symbol: str
    training_days: tuple[str, ...]
    build_parameters: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_file(cls, path: Path | str, name: str | None = None,
                  target: str | None = None) -> ModelScorer:
        """The model ``name`` for ``target`` of a document (its default when not named).

        Raises
        ------
        InputError
            A missing or malformed file (the message names the file and the field).
        ConfigError
            No such model or target in the file.
        """
        path = Path(path)
        data = read_model_bytes(path)
        file = read_model_file(path, data)
        model = file.get(name, target, source=str(path))
        version = int(json.loads(data)["format_version"])  # checked by read_model_file
        return cls(model, str(path.absolute()), hashlib.sha256(data).hexdigest(), file.symbol,
                   file.training_days, file.build_parameters, version)

    def check(self, config: EngineConfig, bucket: int | None) -> None:
        """States built with ``config`` and ``bucket`` carry the features the model was fitted
        on: every engine parameter and the bucket (None: not checked) equal the training days'
        (ConfigError naming the file and the first differing field otherwise). A document
        without recorded parameters cannot be checked: a warning says so."""
        if self.build_parameters is None:
            warnings.warn(f"{self.path}: the model file does not record the build parameters "
                          "of its training days; cannot check that this build's match",
                          VpbatchWarning, stacklevel=2)
            return
        want = self.build_parameters
        if bucket is not None and int(want["bucket"]) != int(bucket):
            raise ConfigError(
                f"{self.path}: build_parameters.bucket: the model was fitted on days built with "
                f"a bucket of {int(want['bucket']) / 1e9:g}, this build's is {bucket / 1e9:g}; "
                "score states built like its training days")
        have = _flat(config.to_dict())
        for key, value in _flat(want["config"]).items():
            if key not in have or have[key] != value:
                now = have.get(key, "(unknown to this vpbatch)")
                option = {"K": " (--K)", "band": " (--band)", "sample": " (--sample)",
                          "sample_ns": " (--sample)"}.get(key, "")
                raise ConfigError(
                    f"{self.path}: build_parameters.config.{key}: the model was fitted on days "
                    f"built with {key} = {value!r}, this build has {now!r}{option}; build with "
                    "the model's parameters, or fit a model on days built like this one")

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``model`` entry."""
        return {"path": self.path, "sha256": self.sha256, "format": FORMAT,
                "format_version": self.format_version, "name": self.model.name,
                "target": self.model.target, "symbol": self.symbol,
                "training_days": list(self.training_days), "columns": list(MODEL_COLUMNS),
                "probability": "P(up)"}

    def day(self, config: EngineConfig, bucket: int) -> DayModel:
        """A scorer of one partition built with ``config`` and ``bucket`` (fixed-point)."""
        found = feature_parameters({"config": config.to_dict(), "product": {"bucket": bucket}})
        assert found is not None  # a build always has a bucket
        # The band pass's parameters as the ``vp_features`` table takes them from the manifest.
        return DayModel(self.model, np.array([found[name] for name in FEATURE_PARAM_NAMES],
                                             np.float64))


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"forces": {"a": 1}}`` -> ``{"forces.a": 1}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
