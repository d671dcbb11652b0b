"""A cold start compiles the engine in two processes at once (issue 22).

numba compiles a kernel in the process that calls it, one function after another under its
global lock: a fresh install's first ``build`` spent ~11 s of its ~16 s compiling
``process_chunk``, on one core of two. The kernel's parts (``kernels.STAGES``) are cached
dispatchers of their own, so here, when ``process_chunk`` is not in numba's cache yet:

* a second Python process compiles the emission and regime stages into the cache;
* this process compiles the book stage (``apply_record``, the larger part) meanwhile;
* then ``process_chunk`` loads the other process's stages from the cache and links them in,
  while the other process goes on with ``flush_pending`` (a build's last call).

The machine code differs from a one-process compile only in where LLVM inlined; the outputs
are the same bytes (tests/book/test_coldstart.py). When the second process cannot be started
or fails, numba compiles its stages here, as it always did: slower, never different.
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from numba import typeof

from vpbatch.book import kernels
from vpbatch.book.dtypes import MBO_DTYPE

#: The stages the other process compiles; this one compiles the rest (book stage first).
OTHER_PROCESS: Final = ("step_regime", "write_state", "write_mbp", "touch_bucket", "catch_up")
#: Kernels the other process compiles next, once this one has its stages: a build calls
#: ``flush_pending`` at its end, by when it is in the cache.
OTHER_AFTER: Final = ("flush_pending",)
#: Longest wait for the other process (it takes ~5 s); then this one compiles what is missing.
WAIT_SECONDS: Final = 300.0

#: A kernel and arguments of the types the engine passes it.
Call = tuple[Any, tuple[Any, ...]]


def stage_calls(st: Any, prm: Any, out: Any) -> dict[str, Call]:
    """Each stage of ``process_chunk`` with arguments of the types the kernel passes it."""
    record = np.zeros(1, MBO_DTYPE)[0]
    touches = np.zeros(2, dtype=kernels.TOUCH_DTYPE)
    return {
        "apply_record": (kernels.apply_record, (st, prm, record, touches)),
        "step_regime": (kernels.step_regime, (st, prm, np.int64(0))),
        "write_state": (kernels.write_state, (st, prm, out)),
        "write_mbp": (kernels.write_mbp, (st, prm, record, out)),
        "touch_bucket": (kernels.touch_bucket, (st, prm, 0, 0, 0.0, 0.0, 0.0)),
        "catch_up": (kernels.catch_up, (st, prm)),
    }


def compile_calls(calls: Mapping[str, Call], names: Sequence[str]) -> dict[str, float]:
    """Compile (or load from the cache) the named calls, in order; seconds each."""
    seconds = {}
    for name in names:
        kernel, args = calls[name]
        started = time.perf_counter()
        if hasattr(kernel, "compile"):  # not under NUMBA_DISABLE_JIT=1
            kernel.compile(tuple(typeof(a) for a in args))
        seconds[name] = time.perf_counter() - started
    return seconds


def is_cached(kernel: Any, args: tuple[Any, ...]) -> bool:
    """True when ``kernel`` is compiled or in numba's cache for ``args``' types.

    Reads numba's cache index (private API, numba pinned in requirements.lock); anything
    unexpected answers True, which leaves the compile to numba as before.
    """
    if not hasattr(kernel, "compile"):
        return True
    sig = tuple(typeof(a) for a in args)
    if sig in kernel.overloads:
        return True
    try:
        cache = kernel._cache
        if not cache._enabled:
            return True
        key = cache._index_key(sig, kernel.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # another numba: its own way
        return True


def compile_engine(chunk_call: Call, stages: Mapping[str, Call],
                   spawn: Callable[[], subprocess.Popen[bytes] | None] | None = None
                   ) -> dict[str, float]:
    """Compile ``process_chunk`` for ``chunk_call``'s types, in two processes when it is cold.

    Returns seconds per compiled part (empty when the kernel was already cached: loading is
    left to its first call).
    """
    kernel, args = chunk_call
    if is_cached(kernel, args):
        return {}
    other = (spawn or _spawn_other)()
    seconds = compile_calls(stages, [n for n in stages if n not in OTHER_PROCESS or other is None])
    if other is not None:
        started = time.perf_counter()
        _await_stages(other)
        seconds["waited"] = time.perf_counter() - started
        seconds.update(compile_calls(stages, OTHER_PROCESS))  # loaded, or compiled here
    seconds.update(compile_calls({"process_chunk": chunk_call}, ["process_chunk"]))
    return seconds


def _await_stages(other: subprocess.Popen[bytes]) -> None:
    """Wait until the other process has printed every name of OTHER_PROCESS (compiled), or
    ended, or WAIT_SECONDS passed (then it is stopped); it is reaped in the background. A
    process without a stdout pipe says nothing: its stages are compiled here."""
    deadline = time.monotonic() + WAIT_SECONDS
    pending = set(OTHER_PROCESS)
    while pending and other.stdout is not None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([other.stdout], [], [], left)[0]:
            other.kill()
            break
        line = other.stdout.readline()
        if not line:  # ended (or failed): what it did not compile is compiled here
            break
        pending.discard(line.decode(errors="replace").strip())
    threading.Thread(target=other.communicate, name="vpbatch-coldstart-reap",
                     daemon=True).start()


def _spawn_other() -> subprocess.Popen[bytes] | None:
    """``python -m vpbatch.book.precompile --only …`` (same interpreter and NUMBA_CACHE_DIR):
    prints each name once compiled."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "vpbatch.book.precompile", "--only", *OTHER_PROCESS,
             *OTHER_AFTER], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
    except OSError:
        return None
