"""Synthetic CME-style MBO day files, written as real (zstd) DBN.

Why: tests, benchmarks and demos need full-size MBO days (an MNQ day is ~50M records)
without shipping licensed data. The generator reproduces the *structure* of Databento's
GLBX.MDP3 MBO stream (measured on the real files in ``shared/data/databento``, see
``docs/synth.md``): a start-of-day snapshot (``R`` + ``F_SNAPSHOT`` adds), single-record
add/cancel/modify events, and trade events written as ``T`` + FIFO ``F`` fills followed in
the same event by the ``C``/``M`` of every filled order. The book behind the stream is
simulated exactly, so the file is internally consistent: nothing is cancelled, modified or
filled unless it is live, sizes never go negative, resting orders never cross.

The simulation runs in a numba kernel over an explicit book (FIFO queues per price level)
and streams 1M-record chunks into the (zstd) writer, so memory stays bounded whatever the
record count. One explicitly seeded generator drives everything: same arguments, same bytes.

Modules: ``session`` (the API below), ``calendar`` (CME hours, session intensity),
``state`` (the simulator's arrays and typed state record), ``rng`` (xoshiro256** draws),
``model`` (flow parameters), ``book`` / ``timing`` / ``informed`` / ``kernel`` (the numba
simulator), ``dbn`` (record and metadata encoding), ``output`` (the chunked file writer).
"""

from __future__ import annotations

from vpbatch.synth.calendar import session_intensity
from vpbatch.synth.session import SynthStats, default_start_price, synth_session, synth_to_lake

__all__ = ["SynthStats", "default_start_price", "session_intensity", "synth_session",
           "synth_to_lake"]
