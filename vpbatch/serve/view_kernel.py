"""The ``vp_grid`` view's four forces for one state, compiled (numba, ``nogil``).

The same formulas as :mod:`vpbatch.serve.view_numpy` (the SQL's ``GRID_LEAN_SQL`` and
``GRID_MACROS_SQL``), operation for operation, one row at a time: float64 after widening the
stored float32 chains exactly, ``+ - * /`` in the SQL's order (no fused multiply-add: numba
compiles without fast-math), ``math.exp`` is the C library's ``exp`` as DuckDB's, and
``x > c`` is true for a NaN ``x`` as in DuckDB. The results are bit for bit the numpy path's
(``tests/serve/test_view_numpy.py``).

Why compiled: the live feed converts a state while the engine, the socket reader and the
writer share two cores; numpy's two dozen small calls each wait for the GIL there (0.8 ms a
state measured in a live session, 0.1 ms alone), one ``nogil`` call does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np
from numba import njit

from vpbatch.book.numba_math import import_numba_math

#: The parameters in the kernel's order (:func:`vpbatch.sql.grid_parameters`'s names).
PARAM_ORDER: Final = ("tau_v", "tau_a", "pressure_v_add", "pressure_v_rest_pos",
                      "pressure_a_add", "vacuum_v_pull", "vacuum_v_fill", "vacuum_v_rest_neg",
                      "vacuum_a_pull")
#: Rows of the kernel's output.
PRESSURE, VACUUM, PRESSURE_NOW, VACUUM_NOW = 0, 1, 2, 3
#: ``dt / tau`` above which the SQL's ``vp_alpha`` is exactly 1.
ALPHA_SATURATION: Final = 50.0
NS_PER_SECOND_F: Final = 1e9

import_numba_math()  # before any kernel loads (vpbatch.book.numba_math)


def param_vector(params: Mapping[str, float]) -> np.ndarray:
    """``params`` as the kernel's float64 vector (:data:`PARAM_ORDER`)."""
    return np.array([float(params[name]) for name in PARAM_ORDER], dtype=np.float64)


@njit(cache=True, inline="always")
def _pos(x: float) -> float:
    """``vp_pos(x)``: x where ``x > 0.0`` (NaN included), else 0.0."""
    return x if (x > 0.0 or x != x) else 0.0


@njit(cache=True, inline="always")
def _alpha(age: float, tau: float) -> float:
    """``vp_alpha(age, tau)``."""
    ratio = age / tau
    if ratio > ALPHA_SATURATION or ratio != ratio:
        return 1.0
    return 1.0 - math.exp(-ratio)


@njit(cache=True, inline="always")
def _idle_v(av: float, v0: float) -> float:
    """``vp_idle_v(av, v0)``: ``av * 0.0 + (1.0 - av) * v0``."""
    return av * 0.0 + (1.0 - av) * v0


@njit(cache=True, inline="always")
def _idle_a(aa: float, av: float, v0: float, a0: float, age: float) -> float:
    """``vp_idle_a``: ``aa * (vp_idle_v(av, v0) - v0) / age + (1.0 - aa) * a0``."""
    return aa * (_idle_v(av, v0) - v0) / age + (1.0 - aa) * a0


@njit(cache=True, inline="always")
def _pressure(c: np.ndarray, v_add: float, a_add: float, v_rest: float) -> float:
    """``vp_pressure``, left to right as the SQL adds."""
    return c[2] * v_add + c[3] * _pos(v_rest) + c[4] * _pos(a_add)


@njit(cache=True, inline="always")
def _vacuum(c: np.ndarray, v_pull: float, a_pull: float, v_fill: float,
            v_rest: float) -> float:
    """``vp_vacuum``, left to right as the SQL adds."""
    return c[5] * v_pull + c[6] * v_fill + c[7] * _pos(-v_rest) + c[8] * _pos(a_pull)


@njit(cache=True, nogil=True)
def grid_forces(chains: np.ndarray, last_ts: np.ndarray, ts_event: np.ndarray, c: np.ndarray,
                out: np.ndarray) -> int:
    """The forces of grid rows into ``out`` (4 x n: pressure, vacuum, pressure_now,
    vacuum_now).

    ``chains``: 6 x n rows ``v_add, v_pull, v_fill, v_rest_depth, a_add, a_pull`` (float32 as
    stored, or float64); ``last_ts``: each row's last activity (UTC ns); ``ts_event``: each
    row's state time (UTC ns), or one value for all (one state). Returns the first row whose
    ``ts_event - last_ts`` overflows int64 (-1: none).
    """
    n = last_ts.shape[0]
    tau_v, tau_a = c[0], c[1]
    one_state = ts_event.shape[0] == 1
    for i in range(n):
        ts = ts_event[0] if one_state else ts_event[i]
        diff = ts - last_ts[i]
        if ((ts ^ last_ts[i]) & (ts ^ diff)) < 0:
            return i
        v_add = np.float64(chains[0, i])
        v_pull = np.float64(chains[1, i])
        v_fill = np.float64(chains[2, i])
        v_rest = np.float64(chains[3, i])
        a_add = np.float64(chains[4, i])
        a_pull = np.float64(chains[5, i])
        pressure = _pressure(c, v_add, a_add, v_rest)
        vacuum = _vacuum(c, v_pull, a_pull, v_fill, v_rest)
        out[PRESSURE, i] = pressure
        out[VACUUM, i] = vacuum
        age = np.float64(diff) / NS_PER_SECOND_F
        if age > 0.0:
            av = _alpha(age, tau_v)
            aa = _alpha(age, tau_a)
            out[PRESSURE_NOW, i] = _pressure(c, _idle_v(av, v_add),
                                             _idle_a(aa, av, v_add, a_add, age),
                                             _idle_v(av, v_rest))
            out[VACUUM_NOW, i] = _vacuum(c, _idle_v(av, v_pull),
                                         _idle_a(aa, av, v_pull, a_pull, age),
                                         _idle_v(av, v_fill), _idle_v(av, v_rest))
        else:
            out[PRESSURE_NOW, i] = pressure
            out[VACUUM_NOW, i] = vacuum
    return -1
