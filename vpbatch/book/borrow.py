"""Non-owning views of the engine's arrays for the hot loop.

Numba increfs and decrefs (atomically) every array argument at the entry and exit of each
non-inlined jitted call: with the 7-array state container that was ~16 atomic operations per
helper call and more than half of the engine's time. ``borrow`` re-creates an array from its
data pointer without a meminfo, so those reference counts become no-ops. It is only safe
while the owning arrays are alive: ``process_chunk`` borrows on entry and the caller holds
the owners for the whole call.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic


@intrinsic
def _address_as_pointer(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(cache=True, inline="always")
def borrow(arr: np.ndarray) -> np.ndarray:
    """A view of ``arr`` that numba does not reference-count (see module docstring)."""
    return carray(_address_as_pointer(arr.ctypes.data), arr.shape,  # type: ignore[call-arg]
                  arr.dtype)



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
