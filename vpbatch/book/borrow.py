"""Non-owning views of the engine's arrays for the hot loop.

Numba increfs and decrefs (atomically) every array argument at the entry and exit of each
non-inlined jitted call: with the 7-array state container that was ~16 atomic operations per
helper call and more than half of the engine's time. ``borrow`` rebuilds an array's struct
without its meminfo, so those reference counts become no-ops. It is only safe while the
owning arrays are alive: ``process_chunk`` borrows on entry and the caller holds the owners
for the whole call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array


@intrinsic
def _borrow(typingctx, arr):  # type: ignore[no-untyped-def]
    """A view of ``arr`` that numba does not reference-count (see module docstring).

    The same type, data and shape with constant C strides (what ``numba.carray`` of the data
    pointer gave), no meminfo, no parent. Generated in place: ``carray`` compiled one
    implementation per dtype (10 of them, ~0.5 s of a cold start).
    """
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        src = context.make_array(arr)(context, builder, value=args[0])
        view = context.make_array(arr)(context, builder)
        itemsize = context.get_constant(
            types.intp, context.get_abi_sizeof(context.get_data_type(arr.dtype)))
        shape = cgutils.unpack_tuple(builder, src.shape)
        strides = []
        stride = itemsize
        for extent in reversed(shape):
            strides.insert(0, stride)
            stride = builder.mul(stride, extent)
        populate_array(view, data=src.data, shape=shape, strides=strides, itemsize=itemsize,
                       meminfo=None)
        return view._getvalue()

    return arr(arr), codegen


#: ``borrow(arr)`` in jitted code (the intrinsic, typed here as what it does).
borrow: Callable[[np.ndarray], np.ndarray] = _borrow  # type: ignore[assignment]


def kernel_array(arr: np.ndarray) -> np.ndarray:
    """``arr`` as the kernels take it: itself when compiled (the default)."""
    return arr


if numba_config.DISABLE_JIT:  # type: ignore[attr-defined]  # NUMBA_DISABLE_JIT=1 (mutations)
    from vpbatch.book.pure_python import RecordArray

    def borrow(arr: np.ndarray) -> np.ndarray:  # type: ignore[misc]
        """No reference counts to avoid in pure Python; rows get field attributes."""
        return RecordArray.wrap(arr)  # type: ignore[no-any-return]

    def kernel_array(arr: np.ndarray) -> np.ndarray:
        """Structured arrays get numba's ``row.field`` access (see ``pure_python``)."""
        return RecordArray.wrap(arr)  # type: ignore[no-any-return]
