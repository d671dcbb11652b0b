"""Numba's record semantics in plain Python, for ``NUMBA_DISABLE_JIT=1`` runs only.

Compiled kernels read and write ``table[i].field`` on structured arrays. Plain numpy cannot:
``table[i]`` is a ``np.void`` without attribute access, and ``np.record`` resolves ``.size``
to the scalar's own attribute instead of the field. ``RecordArray`` wraps an array so that
``table[i]`` is a live row view with field attributes and ``table.field`` is the field's
column; everything else goes to the array. The mutation tests (tests/book/test_mutations.py)
run the kernels this way so that one helper can be swapped for a broken one.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RecordRow:
    """One row of a structured array; attribute reads and writes go to its fields."""

    __slots__ = ("_arr", "_i")

    def __init__(self, arr: np.ndarray, i: int) -> None:
        object.__setattr__(self, "_arr", arr)
        object.__setattr__(self, "_i", i)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._arr[name][self._i]
        except ValueError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._arr[name][self._i] = value

    def __getitem__(self, name: str) -> Any:
        return self._arr[name][self._i]

    def __setitem__(self, name: str, value: Any) -> None:
        self._arr[name][self._i] = value


class RecordArray:
    """A structured array whose integer indexing yields ``RecordRow`` views."""

    __slots__ = ("_arr",)

    def __init__(self, arr: np.ndarray) -> None:
        object.__setattr__(self, "_arr", arr)

    @classmethod
    def wrap(cls, arr: Any) -> Any:
        if isinstance(arr, RecordArray) or not isinstance(arr, np.ndarray) \
                or arr.dtype.names is None:
            return arr
        return cls(arr)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return RecordRow(self._arr, int(key))
        return self._arr[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, RecordRow):
            value = value._arr[value._i]
        self._arr[key] = value

    def __getattr__(self, name: str) -> Any:
        if name in self._arr.dtype.names:
            return self._arr[name]
        return getattr(self._arr, name)

    def __len__(self) -> int:
        return len(self._arr)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._arr if dtype is None else self._arr.astype(dtype)
