"""Scoring a build's states as they are emitted: the hook behind ``build --model`` and
``live --model`` (SPEC §15).

``build`` comes before ``fit`` in the data flow and never imports it: the caller (the CLI)
makes a :class:`StateScorer` from a fitted model (``vpbatch.fit.online.ModelScorer``) and hands
it in with the request (:attr:`BuildRequest.scorer <vpbatch.build.request.BuildRequest>`).
The build then

* checks, before anything is written, that the scorer can score states built with its
  parameters (:meth:`StateScorer.check`: a model fitted on days built with another ``K`` or
  bucket would read features that mean something else);
* scores every engine batch of emitted states in order, in the engine thread, from the
  batch's snapshot rows and grid rows (:meth:`DayScorer.score`), before the batch is written:
  ``vp_snapshot`` gets the two columns of :data:`~vpbatch.store.schema.MODEL_COLUMNS`, in the
  same partition attempt as every other byte of the build (committed together or not at all);
* names the model in the manifest (:meth:`StateScorer.manifest`).

A scorer crosses process boundaries with its request (``--jobs``, Dask): it must pickle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from vpbatch.config import EngineConfig


class DayScorer(Protocol):
    """One partition's states, scored batch by batch in event order (the scorer may keep what
    it needs of earlier states, e.g. trailing windows)."""

    def score(self, snapshots: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(call, probability)`` of each state of a batch: ``SNAPSHOT_DTYPE`` rows and their
        2K+1 ``GRID_DTYPE`` rows each (the engine's buffers, valid during the call only).
        ``call`` int8 in {-1, 0, +1}, ``probability`` float64; NaN probability = no score
        (both columns null)."""
        ...


class StateScorer(Protocol):
    """What a build needs of a fitted model (see the module docstring)."""

    def check(self, config: EngineConfig, bucket: int | None) -> None:
        """Raise :class:`~vpbatch.errors.ConfigError` (naming the model file and the field)
        when states built with ``config`` and ``bucket`` (fixed-point; None: not known yet,
        not checked) cannot be scored."""
        ...

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``model`` entry (file, digest, model name, target, ...)."""
        ...

    def day(self, config: EngineConfig, bucket: int) -> DayScorer:
        """A fresh scorer for one partition (one symbol, one day) built with ``config`` and
        ``bucket`` (fixed-point)."""
        ...
