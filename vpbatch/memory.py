"""glibc malloc settings for a build process (Linux glibc only; a no-op elsewhere).

A build streams large arrays through malloc: engine batches, stored columns, Arrow buffers
(tens of MB each, thousands of times a day). glibc serves blocks above its mmap threshold
(128 KiB, adapting up to 32 MiB only after a free) with fresh ``mmap`` pages and unmaps
them on free, so each batch page-faults its memory in again: on the bench day 2.2M page
faults and 10 s of system time in a 40 s build. Fixed, larger thresholds keep freed blocks
in the heap for the next batch (0.4M faults, 3.7 s) and still return memory beyond
``TRIM_THRESHOLD`` to the system. Setting them also undoes a tiny ``MALLOC_TRIM_THRESHOLD_``
that Dask's nanny exports to its workers (7x the page faults there).
"""

from __future__ import annotations

import sys
from typing import Final

#: glibc ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
#: Blocks below this come from the heap and are reused after a free.
MMAP_THRESHOLD: Final = 64 << 20
#: Free memory at the top of the heap beyond this goes back to the system.
TRIM_THRESHOLD: Final = 512 << 20

_applied = False


def reuse_freed_memory() -> None:
    """Apply the build's malloc thresholds to this process (once; later calls do nothing)."""
    global _applied
    if _applied or not sys.platform.startswith("linux"):
        return
    _applied = True
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        return
