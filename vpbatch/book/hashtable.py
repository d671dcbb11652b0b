"""Open-addressing hash tables over numpy record arrays with an int64 ``key`` field.

Linear probing with backward-shift deletion (no tombstones, so probe chains never rot).
Capacity is a power of two; the caller keeps the load factor under ``MAX_LOAD``.

``find``, ``find_or_insert`` and ``delete_slot`` are compiled into the engine's kernels (LLVM
inlines the first two) and are not cached on their own: the kernels are, with them inside
(vpbatch/book/kernels.py). ``rehash`` is called from Python.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from vpbatch.book.state import EMPTY_KEY

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def home_slot(key: int, mask: int) -> int:
    """Fibonacci hashing: spreads sequential ids and prices over the table."""
    h = np.uint64(key) * _GOLDEN
    return int(h >> np.uint64(32)) & mask


@njit(forceinline=False)
def find(table: np.ndarray, key: int) -> int:
    """Slot holding ``key``, or -1."""
    mask = table.shape[0] - 1
    i = home_slot(key, mask)
    while True:
        k = table[i].key
        if k == key:
            return i
        if k == EMPTY_KEY:
            return -1
        i = (i + 1) & mask


@njit(forceinline=False)
def find_or_insert(table: np.ndarray, key: int) -> tuple[int, bool]:
    """Slot of ``key`` (claimed when absent) and whether it was inserted."""
    mask = table.shape[0] - 1
    i = home_slot(key, mask)
    while True:
        k = table[i].key
        if k == key:
            return i, False
        if k == EMPTY_KEY:
            table[i].key = key  # the caller initialises the payload
            return i, True
        i = (i + 1) & mask


@njit(forceinline=False)
def delete_slot(table: np.ndarray, i: int) -> None:
    """Free slot ``i`` and shift later members of its probe chain back."""
    mask = table.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[j].key
        if k == EMPTY_KEY:
            break
        home = home_slot(k, mask)
        # Move j into the hole at i unless j's home lies cyclically in (i, j].
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            table[i] = table[j]
            i = j
    table[i].key = EMPTY_KEY


@njit(cache=True, nogil=True, forceinline=False)
def rehash(old: np.ndarray, new: np.ndarray) -> None:
    """Copy every live entry of ``old`` into the (empty, larger) ``new``."""
    for i in range(old.shape[0]):
        if old[i].key != EMPTY_KEY:
            j, _ = find_or_insert(new, old[i].key)
            new[j] = old[i]
