"""Numba's cache, kept honest: cached functions are keyed by every source file they compile in.

numba checks a cached function only against its own file (modification time and size) and its
own bytecode. Helpers and constants from other modules are compiled into it without being
checked, so after an edit to ``hashtable.py`` or ``dtypes.py`` alone, ``kernels.py``'s cache
entries would go on serving the old code (and a cached helper in one file would be linked, stale,
into a kernel recompiled in another). :func:`guard` hashes the source of a group of modules and
keeps that digest in a stamp file beside their cache entries; when the stamp is missing or
differs, it flushes the entries of every cached function defined in those modules (numba's own
``Cache.flush``) before anything loads them, so they compile afresh under the new stamp.

It runs when the group's last module is imported (about a millisecond: hashing the source).
With ``NUMBA_DISABLE_JIT=1``, or a numba without the cache attributes it uses, it does nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

#: Stamp file: ``vpbatch-<group>.source-digest`` in the folder of the group's cache entries.
STAMP_SUFFIX: Final = ".source-digest"


def source_digest(modules: Iterable[ModuleType]) -> str:
    """sha256 over the source files of ``modules`` (by module name, so order does not matter)."""
    h = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        h.update(module.__name__.encode() + b"\0")
        h.update(Path(module.__file__ or "").read_bytes())
    return h.hexdigest()


def cached_functions(modules: Iterable[ModuleType]) -> list[Any]:
    """The numba dispatchers with an on-disk cache defined in ``modules``."""
    found = []
    for module in modules:
        for obj in vars(module).values():
            func = getattr(obj, "py_func", None)
            cache = getattr(obj, "_cache", None)
            if getattr(func, "__module__", None) == module.__name__ \
                    and hasattr(cache, "flush") and getattr(cache, "cache_path", None):
                found.append(obj)
    return found


def guard(group: str, modules: Sequence[ModuleType]) -> None:
    """Flush the cache entries of ``modules``' cached functions unless written from this source.

    Parameters
    ----------
    group : name of the stamp (one per set of modules compiled together).
    modules : every module whose functions or constants the group's cached functions compile
        in; the cached functions defined in them are the ones flushed.
    """
    caches = [f._cache for f in cached_functions(modules)]
    if not caches:  # NUMBA_DISABLE_JIT=1: nothing is cached
        return
    digest = source_digest(modules)
    for folder in sorted({c.cache_path for c in caches}):
        stamp = Path(folder) / f"vpbatch-{group}{STAMP_SUFFIX}"
        try:
            if stamp.read_text() == digest:
                continue
        except OSError:
            pass
        try:
            for cache in caches:
                if cache.cache_path == folder:
                    cache.flush()
        except OSError:  # numba could not write there either: nothing of ours is cached
            continue
        _write_atomic(stamp, digest)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file; a folder we cannot write is left as is."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
