"""Import every module of vpbatch and its command line once, at install (``make install``).

Run without ``PYTHONDONTWRITEBYTECODE``, Python writes the bytecode of every module the
commands import: vpbatch's own and, through them, exactly the third-party modules they use.
That is what each command's start-up reads later, also on machines that set
``PYTHONDONTWRITEBYTECODE=1`` (where nothing would be cached otherwise). It replaces
compiling every installed package (``uv pip sync --compile-bytecode``: ~25 s on 2 cores,
most of it test tools and their dependencies, which ``make test`` compiles for itself).
It also fills numba's cache with every kernel outside the engine (the store's columns, the
viewer's forces, evaluate's bootstrap, fit's bands and scoring; the engine's kernels are
``vpbatch.book.precompile``'s job), so that no command's first run compiles one.

    python -m cli.warm
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from typing import Any


def module_names() -> list[str]:
    """Every module of the ``vpbatch`` and ``cli`` packages (``__main__`` modules left out)."""
    import cli
    import vpbatch

    names = []
    for package in (vpbatch, cli):
        for found in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not found.name.endswith(("__main__", ".warm")):
                names.append(found.name)
    return sorted(names)


def load_kernels() -> None:
    """Fill numba's cache with every kernel outside the engine (the engine's:
    ``vpbatch.book.precompile``), for the argument types the commands pass."""
    from vpbatch.book.dtypes import GRID_DTYPE

    def load(name: str) -> Any:  # (``vpbatch.fit.features`` is also a function of vpbatch.fit)
        return importlib.import_module(f"vpbatch.{name}").load_kernels

    load("store.grid_columns")()  # build, live
    load("serve.view_numpy")()  # serve
    load("evaluate.stats")()  # evaluate
    load("fit.features")(GRID_DTYPE)  # fit, evaluate --models, build/live --model
    load("fit.model")()


def main() -> int:
    started = time.perf_counter()
    names = module_names()
    for name in names:
        importlib.import_module(name)
    load_kernels()
    print(f"imported {len(names)} vpbatch modules ({len(sys.modules)} in all) in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
