"""The simulator's random numbers: xoshiro256** with explicit state.

A generator is a ``uint64[4]`` array advanced in place, so a run is reproducible bit for bit
no matter how it is chunked or which thread calls the kernel. On top of the raw stream: the
uniform, integer, normal, geometric and table draws, and the two distance distributions of a
resting order (how far behind its own best it sits).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable


@njit(cache=True, inline="always")
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@register_jitable(no_cfunc_wrapper=True)
def next_u64(s: np.ndarray) -> np.uint64:
    """The next 64 random bits of generator ``s`` (xoshiro256**)."""
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    s[0], s[1], s[2], s[3] = s0, s1, s2, s3
    return result


@register_jitable(no_cfunc_wrapper=True)
def u01(s: np.ndarray) -> float:
    """Uniform in (0, 1), never 0 (safe for log)."""
    return (float(next_u64(s) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


# Compiled into its callers, not once per literal ``n`` (issue 22).
@register_jitable(no_cfunc_wrapper=True)
def randint(s: np.ndarray, n: int) -> int:
    """Uniform integer in [0, n)."""
    v = int(u01(s) * n)
    return v if v < n else n - 1


@register_jitable(no_cfunc_wrapper=True)
def randn(s: np.ndarray) -> float:
    """Standard normal (Box-Muller, one of the pair)."""
    return np.sqrt(-2.0 * np.log(u01(s))) * np.cos(2.0 * np.pi * u01(s))


@register_jitable(no_cfunc_wrapper=True)
def geom(s: np.ndarray, p: float) -> int:
    """Failures before the first success of a Bernoulli(p)."""
    return int(np.log(u01(s)) / np.log(1.0 - p))


@register_jitable(no_cfunc_wrapper=True)
def draw_table(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, cum: np.ndarray) -> int:
    """An integer from a bucket table: bucket ``i`` (cumulative probability ``cum[i]``), then
    uniform in ``[lo[i], hi[i]]``."""
    u = u01(s)
    i = 0
    while i < cum.shape[0] - 1 and u > cum[i]:
        i += 1
    return lo[i] + randint(s, hi[i] - lo[i] + 1)


@register_jitable(no_cfunc_wrapper=True)
def fast_dist(s: np.ndarray) -> int:
    """Ticks behind the own best of a liquidity-providing add near the touch."""
    if u01(s) < 0.4:
        return 0
    return min(1 + geom(s, 0.4), 60)


@register_jitable(no_cfunc_wrapper=True)
def slow_dist(s: np.ndarray) -> int:
    """Ticks behind the own best of a resting 'book' order: flat to 150, then a long tail."""
    if u01(s) < 0.75:
        return 1 + randint(s, 150)
    return min(150 + int(-np.log(u01(s)) * 300.0), 1500)
