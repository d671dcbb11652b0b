"""Fill numba's cache with the engine's kernels ahead of the first run (``make install``).

    python -m vpbatch.book.precompile            # process_chunk and the rest in 2 processes
    python -m vpbatch.book.precompile --jobs 1   # all in this process

A cold first run compiles the kernels it calls (most of it ``process_chunk``: the whole engine
inlined into one loop) before its first record. This compiles each kernel for exactly the
argument types the facade passes, without running anything, and numba caches it where the
first run will look (``vpbatch/book/__pycache__``, or ``$NUMBA_CACHE_DIR`` when set: set it the
same way for the install and the runs). A kernel already cached is only loaded.

With ``--jobs 2`` (the default) ``process_chunk`` compiles as a cold ``build`` compiles it
(``coldstart``: its stages in two processes at once), then the other kernels. ``make install``
runs ``--jobs 1`` because a ``vpbatch synth`` compiles the generator's kernels on the other core
meanwhile. ``--only NAME...`` compiles only those kernels or stages (what ``coldstart`` runs in
its second process).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

#: Every kernel and stage, in compile order: ``process_chunk``'s stages and itself, then the rest.
GROUPS: Final = (("apply_record", "step_regime", "write_state", "write_mbp", "touch_bucket",
                  "catch_up", "process_chunk"),
                 ("flush_pending", "current_state", "rebuild_book", "level_size", "rehash"))


def kernel_calls() -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """Each kernel with arguments of the types ``Engine`` passes it (nothing is run)."""
    from vpbatch.book import kernels
    from vpbatch.book.coldstart import stage_calls
    from vpbatch.book.dtypes import MBO_DTYPE
    from vpbatch.book.engine import Engine, kernel_records
    from vpbatch.book.state import BUCKET_DTYPE, LEVEL_DTYPE, ORDER_DTYPE, empty_table
    from vpbatch.config import EngineConfig

    engine = Engine(EngineConfig(), bucket=1, mbp_levels=1)
    st, prm = engine.kernel_state, engine.params
    out = engine._allocate_output(1)  # the facade's own output buffers
    book = engine.export_book()
    columns = tuple(np.ascontiguousarray(book[k], dtype=np.int64)
                    for k in ("order_id", "side", "price", "size", "pending"))
    calls: dict[str, tuple[Any, tuple[Any, ...]]] = {
        **stage_calls(st, prm, out),
        "process_chunk": (kernels.process_chunk,
                          (st, prm, kernel_records(np.zeros(0, MBO_DTYPE)), 0, out)),
        "flush_pending": (kernels.flush_pending, (st, prm, out)),
        "current_state": (kernels.current_state, (st, prm, out)),
        "rebuild_book": (kernels.rebuild_book, (st, prm, *columns)),
        "level_size": (kernels.level_size, (st, 0, 0)),
    }
    for table, dtype in (("orders", ORDER_DTYPE), ("levels", LEVEL_DTYPE),
                         ("buckets", BUCKET_DTYPE)):
        calls[f"rehash/{table}"] = (kernels.rehash, (empty_table(dtype, 2), empty_table(dtype, 4)))
    return calls


def compile_kernels(names: Sequence[str],
                    calls: dict[str, tuple[Any, tuple[Any, ...]]] | None = None
                    ) -> dict[str, float]:
    """Compile (or load from the cache) the named kernels and stages (of ``calls``, default
    :func:`kernel_calls`), in order; seconds each."""
    from vpbatch.book.coldstart import compile_calls

    calls = kernel_calls() if calls is None else calls
    return compile_calls(calls, [key for key in calls if key.split("/")[0] in names])


def precompile(jobs: int = 2, report: Callable[[str], None] | None = None) -> dict[str, float]:
    """Every kernel of :data:`GROUPS`; with ``jobs`` > 1 ``process_chunk``'s stages compile in
    two processes (``coldstart``). Seconds per kernel."""
    seconds: dict[str, float] = {}
    calls = kernel_calls()
    if jobs > 1:
        from vpbatch.book.coldstart import compile_engine

        stages = {name: calls[name] for name in GROUPS[0] if name != "process_chunk"}
        seconds.update(compile_engine(calls["process_chunk"], stages))
    for group in GROUPS:
        seconds.update({k: s for k, s in compile_kernels(group, calls).items()
                        if k not in seconds})
    if report is not None:
        for key, s in seconds.items():
            report(f"{key}: {s:.1f} s")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpbatch.book.precompile",
        description="Fill numba's cache with the engine's kernels (make install runs it).")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="seconds per kernel")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        choices=[n for group in GROUPS for n in group],
                        help="compile only these kernels or stages, in order, printing each "
                             "name once compiled (coldstart's second process)")
    args = parser.parse_args(argv)
    if args.only:
        calls = kernel_calls()
        for name in args.only:
            compile_kernels([name], calls)
            print(name, flush=True)
        return 0
    started = time.perf_counter()
    precompile(args.jobs, report=(lambda line: print(line, file=sys.stderr))
               if args.verbose else None)
    if args.verbose:
        print(f"engine kernels ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
