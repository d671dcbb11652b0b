"""numba's NumPy implementations, imported without the BLAS probe that costs a build 0.12-0.3 s.

numba imports ``numba.np.arraymath`` when a process compiles or loads its first kernel, and that
module calls ``ensure_blas()`` once, only to learn whether BLAS exists: an import of
``scipy.linalg``, on the engine's thread before a build's first record. vpbatch compiles no BLAS
call, and scipy is installed with it (scikit-learn needs it), so the answer is yes either way.
:func:`import_numba_math` skips the probe for that one import; a kernel that calls ``np.dot``
still runs numba's own check when it compiles. The compiled modules call it before any kernel
loads.
"""

from __future__ import annotations

import importlib.util
import sys


def import_numba_math() -> None:
    """Import ``numba.np.arraymath`` with BLAS taken as present (once per process; nothing
    when numba imported it already or scipy is not installed; a plain import on a numba
    without ``numba.np.linalg.ensure_blas``)."""
    if "numba.np.arraymath" in sys.modules or importlib.util.find_spec("scipy") is None:
        return
    from numba.np import linalg

    probe = getattr(linalg, "ensure_blas", None)
    if probe is None:
        return
    linalg.ensure_blas = _blas_is_there
    try:
        import numba.np.arraymath  # noqa: F401  (binds the stand-in, for its probe alone)
    finally:
        linalg.ensure_blas = probe


def _blas_is_there() -> None:
    """``numba.np.linalg.ensure_blas`` while ``numba.np.arraymath`` is imported."""
