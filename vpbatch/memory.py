"""Process memory settings: glibc malloc for a build and the server, and Python's cyclic GC.

Build. A build streams large arrays through malloc: engine batches, stored columns, Arrow buffers
(tens of MB each, thousands of times a day). glibc serves blocks above its mmap threshold
(128 KiB, adapting up to 32 MiB only after a free) with fresh ``mmap`` pages and unmaps
them on free, so each batch page-faults its memory in again: on the bench day 2.2M page
faults and 10 s of system time in a 40 s build. Fixed, larger thresholds keep freed blocks
in the heap for the next batch (0.4M faults, 3.7 s) and still return memory beyond
``TRIM_THRESHOLD`` to the system. Setting them also undoes a tiny ``MALLOC_TRIM_THRESHOLD_``
that Dask's nanny exports to its workers (7x the page faults there).

Server. Each ``vpbatch serve`` connection runs its source in a thread of its own, and glibc
gives new threads new arenas (up to 8 per core), each holding freed decode buffers: RSS grew
~50 MB in steps over connections; with :data:`SERVER_ARENAS` arenas it stays flat (measured).

Cyclic GC. Start-up leaves ~260,000 objects that live as long as the process (modules, numba's
types and dispatchers, pyarrow, uvicorn). Python's full collections walk all of them, about
every 14 s of a live session, 110-220 ms each with the GIL held: every thread stopped, so a
live viewer's frame waited that long (the rare ~150 ms latency of issue 17, measured with a
``gc.callbacks`` probe). :func:`freeze_startup_objects` takes them out of the GC's walk.
"""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Final

#: glibc ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
M_ARENA_MAX: Final = -8
#: Blocks below this come from the heap and are reused after a free.
MMAP_THRESHOLD: Final = 64 << 20
#: Free memory at the top of the heap beyond this goes back to the system.
TRIM_THRESHOLD: Final = 512 << 20
#: Most malloc arenas in the server process.
SERVER_ARENAS: Final = 4

_applied = False
_frozen = False


def _mallopt(*settings: tuple[int, int]) -> None:
    """Apply glibc ``mallopt`` settings to this process; nothing where malloc is not glibc's."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        for param, value in settings:
            libc.mallopt(param, value)
    except (OSError, AttributeError):  # not glibc
        return


def reuse_freed_memory() -> None:
    """Apply the build's malloc thresholds to this process (once; later calls do nothing)."""
    global _applied
    if not _applied:
        _applied = True
        _mallopt((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def cap_malloc_arenas(arenas: int = SERVER_ARENAS) -> None:
    """Bound glibc's malloc arenas in this process; arenas made later obey it."""
    _mallopt((M_ARENA_MAX, arenas))


def freeze_startup_objects() -> None:
    """Leave every object alive now out of later cyclic-GC passes (``gc.freeze``); once.

    Call it once the process is set up and streaming (a build's or live session's first
    chunk is through the engine: modules imported, kernels loaded; ``serve`` before it
    listens). Only the first call
    freezes: a Dask worker runs build after build, and a later freeze would also keep
    whatever garbage cycles the earlier builds left. What the stream allocates is collected
    as before. At exit the frozen objects go back to the GC, so that the interpreter's last
    collection still finalises them (nanobind-based modules such as duckdb report every
    instance left alive as a leak).
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
        atexit.register(gc.unfreeze)
