"""Versioned book-state cache: ``lake/cache/book/<digest>.npz`` (SPEC §1, §12.7).

Where it lives (:func:`cache_location`): ``lake/cache/book`` for a folder lake; for a lake on
an object store a folder on this host's disk (``$XDG_CACHE_HOME/vpbatch/book``, else
``~/.cache/vpbatch/book``), so workers never share one; or wherever ``--cache`` says: a
folder, or an object-store URL (the cache in the store, shared by every host).

The engine exports its book as ``dict[str, numpy.ndarray]`` plus a small JSON-able ``meta``
dict; this module stores and finds it again, and refuses anything it cannot trust.

Key and digest
--------------
:class:`CacheKey` identifies the input by the sha256 of the *whole* file (computed by the
reader from the bytes it reads anyway, vpbatch/ingest/input_digest.py), the ``instrument_id``, the
``publisher_id``, the boundary time (int ns; the book as of that time), the engine version
and an optional ``extra`` string (e.g. the bucket). Its :attr:`~CacheKey.digest` names the
*slot* and deliberately leaves out ``book_format`` and ``engine_version``: after an engine
upgrade the old entry is found, reported as stale and replaced, instead of lingering as an
orphan. ``source`` (the input's file name) is for display only.

A build needs the key before it has read the file, so ``inputs.json`` beside the entries
remembers, per input path, the sha256 last computed for a given size and ``mtime_ns``
(:func:`known_sha256`, :func:`remember_sha256`). That is only a hint: the build hashes the
file while reading it and, if the hint was wrong (an edit that kept size and mtime), throws
its output away and builds again without the cache (vpbatch/build/pipeline.py).

File format
-----------
A plain (uncompressed) ``.npz`` written with ``allow_pickle=False``: one member per array and a
``__header__`` member holding UTF-8 JSON: ``cache_format`` (this module's layout, 1),
``key`` (every :class:`CacheKey` field), ``meta``, ``arrays`` (dtype and shape of each),
``payload_sha256`` (over name, dtype, shape and bytes of every array, in name order),
``created`` (UTC ISO time) and ``vpbatch`` (the version that wrote it). Loading uses
``allow_pickle=False``, so a cache file can never run code.

Concurrency and failure
-----------------------
Writes go to a temp file in the same folder, are fsynced and renamed over the entry, all under
an exclusive ``flock`` on ``lake/cache/book/.lock``; reads hold a shared lock. So two builds
at once never see or leave a half-written entry, and a leftover temp file of a killed writer
is removed by a later writer once it is older than :data:`TEMP_STALE_SECONDS`. Correctness
does not rest on the ``flock`` (which network filesystems may keep per host or refuse, see
``docs/cluster.md``): the rename is atomic and every read checks the payload checksum, so
where the lock is refused (``ENOLCK``, ``EOPNOTSUPP``) the cache works without it.

In an object store an entry is one object, written whole by one ``PUT`` (it appears complete or
not at all), read with range requests; no lock is needed, and ``inputs.json`` is rewritten
whole (two hosts updating it at once may drop a hint: a re-hash, never a wrong book).

An entry that is corrupt (unreadable, truncated, checksum mismatch) or stale (other
``cache_format``/``book_format``, or key fields that differ) is reported with
``warnings.warn(..., VpbatchWarning)`` naming the reason, deleted, and :func:`load` returns None
so the caller rebuilds the book.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Final

import numpy as np

from vpbatch.errors import CacheError, OutputError, VpbatchError, VpbatchWarning
from vpbatch.store.files import atomic_path
from vpbatch.store.fs import Lake, open_lake

#: Version of the ``.npz`` layout written by this module.
CACHE_FORMAT: Final = 1
HEADER_MEMBER: Final = "__header__"
#: A temp file older than this is a leftover of a dead writer (one on any host may be writing).
TEMP_STALE_SECONDS: Final = 3600.0
#: Suffix of the hidden temp file an entry is written through (``.<entry>.<uuid>.tmp``).
TEMP_SUFFIX: Final = ".tmp"
_NO_LOCKS: Final = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
#: Per-input sha256 hints (path -> size, mtime_ns, sha256), beside the entries.
INDEX_NAME: Final = "inputs.json"
_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
#: Fields that name the slot; ``book_format`` and ``engine_version`` must also match to load.
_IDENTITY: Final = ("file_sha256", "instrument_id", "publisher_id", "boundary_ts", "extra")


def cache_dir(lake: Path) -> Path:
    """``lake/cache/book``."""
    return Path(lake) / "cache" / "book"


def host_cache_dir() -> Path:
    """This host's cache folder for lakes on an object store (``$XDG_CACHE_HOME/vpbatch/book``,
    else ``~/.cache/vpbatch/book``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vpbatch" / "book"


def cache_location(lake: Path | str | Lake | None,
                   cache: str | os.PathLike[str] | None = None) -> str:
    """Where the book cache of ``lake`` is: ``cache`` when given (a folder, or an
    object-store URL), else ``lake/cache/book`` for a folder lake, else :func:`host_cache_dir`.
    """
    if cache is not None:
        return os.fspath(cache)
    if lake is not None:
        store = open_lake(lake)
        if store.local:
            return str(cache_dir(Path(store.url)))
    return str(host_cache_dir())


def _where(lake: Path | str | Lake | None,
           cache: str | os.PathLike[str] | None) -> tuple[Lake | None, str]:
    """(None, folder) for a cache on this host's disk, (the store, URL) for one in a store."""
    location = cache_location(lake, cache)
    store = open_lake(location)
    return (None, location) if store.local else (store, store.url)


def _engine_version() -> str:
    from vpbatch.version import engine_version

    return engine_version()


@dataclass(frozen=True)
class CacheKey:
    """What a cached book depends on.

    Parameters
    ----------
    file_sha256 : str
        Hex sha256 of the whole input file.
    instrument_id, publisher_id : int
        The one book the engine kept.
    boundary_ts : int
        The book is as of this engine time (ns since the epoch).
    book_format : int
        Version of the engine's book-state layout; checked on load, not part of the digest.
    engine_version : str, default the running vpbatch's
        Checked on load, not part of the digest (an upgrade replaces the entry).
    extra : str, default ''
        Anything else the state depends on (part of the digest).
    source : str, default ''
        Input file name, for ``vpbatch cache ls`` only.
    """

    file_sha256: str
    instrument_id: int
    publisher_id: int
    boundary_ts: int
    book_format: int
    engine_version: str = field(default_factory=_engine_version)
    extra: str = ""
    source: str = field(default="", compare=False)

    @property
    def digest(self) -> str:
        """Stable hex sha256 of the slot fields (not book_format, engine_version, source)."""
        ident = {name: getattr(self, name) for name in _IDENTITY}
        text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheKey:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CacheEntry:
    """One cache file as listed by :func:`list_entries` (header only, payload not checked)."""

    digest: str
    path: Path | str
    size: int
    created: str
    key: dict[str, Any]
    meta: dict[str, Any]
    error: str = ""


@contextlib.contextmanager
def _locked(folder: Path, mode: int) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except OSError as exc:  # a mount without locks: rename + checksum still hold
            if exc.errno not in _NO_LOCKS:
                raise
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"meta: {type(value).__name__} is not JSON-serialisable")


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _payload_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = _contiguous(arrays[name])
        descr = np.lib.format.dtype_to_descr(arr.dtype)
        digest.update(json.dumps([name, str(descr), list(arr.shape)]).encode())
        digest.update(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
    return digest.hexdigest()


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"arrays: name {name!r} must match {_NAME_RE.pattern}")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"arrays[{name!r}]: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype.hasobject:
            raise TypeError(f"arrays[{name!r}]: object arrays cannot be cached (no pickle)")
        out[name] = _contiguous(arr)
    return out


def save(lake: Path | str | Lake | None, key: CacheKey, arrays: Mapping[str, np.ndarray],
         meta: Mapping[str, Any] | None = None, *,
         cache: str | os.PathLike[str] | None = None) -> Path | str:
    """Store a book state under ``key``, replacing any previous entry atomically.

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root (its cache is :func:`cache_location`).
    key : CacheKey
        What the state depends on.
    arrays : mapping of str to numpy.ndarray
        The book state; names match ``[A-Za-z][A-Za-z0-9_.-]*``; no object dtypes.
    meta : mapping, default None
        Small JSON-serialisable scalars (numpy scalars allowed).
    cache : path or URL, default None
        The cache folder, instead of the lake's default.

    Returns
    -------
    Path or str
        The entry file (an ``s3://`` URL for a cache in an object store).

    Raises
    ------
    OutputError
        When the cache folder cannot be written (the temp file is removed).
    """
    arrays = _check_arrays(arrays)
    header = {
        "cache_format": CACHE_FORMAT,
        "key": key.to_dict(),
        "meta": dict(meta or {}),
        "arrays": {n: {"dtype": str(np.lib.format.dtype_to_descr(a.dtype)),
                       "shape": list(a.shape)} for n, a in sorted(arrays.items())},
        "payload_sha256": _payload_sha256(arrays),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "vpbatch": _version(),
    }
    header_bytes = json.dumps(header, sort_keys=True, default=_json_default,
                              allow_nan=False).encode()
    store, where = _where(lake, cache)
    members = {HEADER_MEMBER: np.frombuffer(header_bytes, dtype=np.uint8)}
    if store is not None:
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **members, **arrays)
        location = f"{where}/{key.digest}.npz"
        try:
            store.put(location, buffer.getvalue())  # one PUT: the entry appears whole
        except (OSError, VpbatchError) as exc:
            raise OutputError(f"{location}: cannot write book cache: {exc}") from None
        return location
    folder = Path(where)
    path = folder / f"{key.digest}.npz"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder, fcntl.LOCK_EX):
            _remove_temp_files(folder)
            # A file object, not the name: np.savez would append ".npz" to the temp name.
            with atomic_path(path, suffix=TEMP_SUFFIX) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, allow_pickle=False, **members, **arrays)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write book cache: {exc.strerror or exc}") from None
    return path


def _version() -> str:
    return _engine_version()


def _remove_temp_files(folder: Path) -> None:
    """Temp files of writers that died (old ones only: the lock may not reach other hosts)."""
    cutoff = time.time() - TEMP_STALE_SECONDS
    for tmp in folder.glob(f".*.npz.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


_READ_ERRORS: Final = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile,
                       zlib.error, UnicodeDecodeError)


def _read_header(npz: Any) -> dict[str, Any]:
    header = json.loads(bytes(npz[HEADER_MEMBER]).decode())
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def _stale_reason(header: Mapping[str, Any], key: CacheKey) -> str | None:
    fmt = header.get("cache_format")
    if fmt != CACHE_FORMAT:
        return f"cache format {fmt}, expected {CACHE_FORMAT}"
    stored = header.get("key")
    if not isinstance(stored, dict):
        return "header has no key"
    want = key.to_dict()
    diffs = [f"{name} {stored.get(name)!r} != {want[name]!r}"
             for name in (*_IDENTITY, "book_format", "engine_version")
             if stored.get(name) != want[name]]
    return "key differs: " + ", ".join(diffs) if diffs else None


def _read_entry(path: Path | IO[bytes],
                key: CacheKey) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and validate one entry; raises CacheError with the reason."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = _read_header(npz)
            stale = _stale_reason(header, key)
            if stale is not None:
                raise CacheError(f"stale ({stale})")
            names = sorted(header["arrays"])
            members = sorted(n for n in npz.files if n != HEADER_MEMBER)
            if names != members:
                raise CacheError(f"corrupt (arrays {members} do not match header {names})")
            arrays = {name: npz[name] for name in names}
    except CacheError:
        raise
    except _READ_ERRORS as exc:
        raise CacheError(f"corrupt ({type(exc).__name__}: {exc})") from None
    if _payload_sha256(arrays) != header.get("payload_sha256"):
        raise CacheError("corrupt (payload checksum mismatch)")
    meta = header.get("meta")
    return arrays, meta if isinstance(meta, dict) else {}


def load(lake: Path | str | Lake | None, key: CacheKey, *,
         cache: str | os.PathLike[str] | None = None,
         ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached book state for ``key``, or None (missing, corrupt or stale).

    A corrupt or stale entry is reported with a :class:`~vpbatch.errors.VpbatchWarning` that
    names the file and the reason, and is deleted, so the caller rebuilds and re-saves.

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root (its cache is :func:`cache_location`).
    key : CacheKey
        What the state must depend on (including ``book_format``).
    cache : path or URL, default None
        The cache folder, instead of the lake's default.

    Returns
    -------
    tuple of (dict of str to numpy.ndarray, dict) or None
        ``(arrays, meta)`` when a valid entry exists.
    """
    store, where = _where(lake, cache)
    if store is not None:
        return _load_object(store, f"{where}/{key.digest}.npz", key)
    path = Path(where) / f"{key.digest}.npz"
    folder = path.parent
    if not path.is_file():
        return None
    try:
        with _locked(folder, fcntl.LOCK_SH):
            try:
                before = path.stat()
            except FileNotFoundError:
                return None
            try:
                return _read_entry(path, key)
            except CacheError as exc:
                reason = str(exc)
    except OSError as exc:
        warnings.warn(f"{path}: cannot read book cache ({exc.strerror or exc}); rebuilding",
                      VpbatchWarning, stacklevel=2)
        return None
    warnings.warn(f"{path}: book cache entry is {reason}; removed, rebuilding", VpbatchWarning,
                  stacklevel=2)
    with _locked(folder, fcntl.LOCK_EX), contextlib.suppress(OSError):
        now = path.stat()
        # Only remove the file we judged; a writer may have replaced it meanwhile.
        if (now.st_ino, now.st_mtime_ns, now.st_size) == (
                before.st_ino, before.st_mtime_ns, before.st_size):
            path.unlink()
    return None


def _load_object(store: Lake, location: str,
                 key: CacheKey) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """:func:`load` of an entry in an object store (one GET; a bad entry is deleted only if
    it is still the object that was judged)."""
    try:
        got = store.get(location)
    except (OSError, VpbatchError) as exc:
        warnings.warn(f"{location}: cannot read book cache ({exc}); rebuilding",
                      VpbatchWarning, stacklevel=3)
        return None
    if got is None:
        return None
    data, info = got
    try:
        return _read_entry(io.BytesIO(data), key)
    except CacheError as exc:
        warnings.warn(f"{location}: book cache entry is {exc}; removed, rebuilding",
                      VpbatchWarning, stacklevel=3)
    with contextlib.suppress(OSError, VpbatchError):
        store.delete_if(location, info.etag)
    return None


def _entry_of(path: Path | str, size: int, source: Path | IO[bytes]) -> CacheEntry:
    digest = (path.stem if isinstance(path, Path)
              else path.rsplit("/", 1)[-1].removesuffix(".npz"))
    try:
        with np.load(source, allow_pickle=False) as npz:
            header = _read_header(npz)
        key = header.get("key")
        meta = header.get("meta")
        return CacheEntry(digest, path, size, str(header.get("created", "")),
                          key if isinstance(key, dict) else {},
                          meta if isinstance(meta, dict) else {})
    except _READ_ERRORS as exc:
        return CacheEntry(digest, path, size, "", {}, {}, error=f"{type(exc).__name__}: {exc}")


def list_entries(lake: Path | str | Lake | None, *,
                 cache: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """Every cache entry (header only; an unreadable header is listed with ``error``)."""
    store, where = _where(lake, cache)
    if store is not None:
        found = []
        for obj in store.find(where):
            if obj.location.endswith(".npz") and "/" not in obj.location[len(where) + 1:]:
                with store.open_input(obj.location) as fh:  # the header member only
                    found.append(_entry_of(obj.location, obj.size, fh))
        return found
    folder = Path(where)
    if not folder.is_dir():
        return []
    entries = []
    with _locked(folder, fcntl.LOCK_SH):
        for path in sorted(folder.glob("*.npz")):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            entries.append(_entry_of(path, size, path))
    return entries


def clear(lake: Path | str | Lake | None, *,
          cache: str | os.PathLike[str] | None = None) -> int:
    """Delete every cache entry (and leftover temp files); returns the number of entries."""
    store, where = _where(lake, cache)
    if store is not None:
        entries = [o.location for o in store.find(where) if o.location.endswith(".npz")]
        for location in entries:
            store.remove(location)
        store.remove(f"{where}/{INDEX_NAME}")
        return len(entries)
    folder = Path(where)
    if not folder.is_dir():
        return 0
    removed = 0
    try:
        with _locked(folder, fcntl.LOCK_EX):
            _remove_temp_files(folder)
            for path in folder.glob("*.npz"):
                path.unlink()
                removed += 1
            with contextlib.suppress(FileNotFoundError):
                (folder / INDEX_NAME).unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot clear book cache: {exc.strerror or exc}") from None
    return removed


def _index_entry(path: str | os.PathLike[str],
                 stat: tuple[int, int] | None) -> tuple[str, int, int]:
    """(name, size, mtime_ns) of an input: a local file, or ``stat`` for one elsewhere (an
    object's size and time, named by its URL)."""
    if stat is not None:
        return os.fspath(path), int(stat[0]), int(stat[1])
    resolved = Path(path).resolve()
    st = resolved.stat()
    return str(resolved), st.st_size, st.st_mtime_ns


def _read_index(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_object_index(store: Lake, location: str) -> dict[str, Any]:
    try:
        data = json.loads(store.read_bytes(location))
    except (OSError, ValueError, VpbatchError):
        return {}
    return data if isinstance(data, dict) else {}


def known_sha256(lake: Path | str | Lake | None, path: str | os.PathLike[str], *,
                 cache: str | os.PathLike[str] | None = None,
                 stat: tuple[int, int] | None = None) -> str | None:
    """The sha256 a previous build computed for ``path``, if its size and mtime still match.

    A hint for finding the cache entry before the file is read; the caller verifies it
    against the sha256 of the bytes it then reads. ``stat`` is ``(size, mtime_ns)`` of an
    input that is not a local file (an object, ``path`` its URL).
    """
    store, where = _where(lake, cache)
    try:
        name, size, mtime_ns = _index_entry(path, stat)
        if store is not None:
            hint = _read_object_index(store, f"{where}/{INDEX_NAME}").get(name)
        else:
            folder = Path(where)
            if not (folder / INDEX_NAME).is_file():
                return None
            with _locked(folder, fcntl.LOCK_SH):
                hint = _read_index(folder).get(name)
    except OSError:
        return None
    if not isinstance(hint, dict) or hint.get("size") != size \
            or hint.get("mtime_ns") != mtime_ns:
        return None
    sha = hint.get("sha256")
    return sha if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) else None


def remember_sha256(lake: Path | str | Lake | None, path: str | os.PathLike[str], sha256: str,
                    *, cache: str | os.PathLike[str] | None = None,
                    stat: tuple[int, int] | None = None) -> None:
    """Record ``path``'s sha256 for its current size and mtime (atomic replace).

    Raises
    ------
    OutputError
        When the cache folder cannot be written.
    """
    store, where = _where(lake, cache)
    if store is not None:
        name, size, mtime_ns = _index_entry(path, stat)
        location = f"{where}/{INDEX_NAME}"
        index = _read_object_index(store, location)
        index[name] = {"size": size, "mtime_ns": mtime_ns, "sha256": sha256}
        try:
            store.put(location, json.dumps(index, sort_keys=True, indent=1).encode())
        except (OSError, VpbatchError) as exc:
            raise OutputError(f"{location}: cannot write: {exc}") from None
        return
    folder = Path(where)
    try:
        name, size, mtime_ns = _index_entry(path, stat)
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder, fcntl.LOCK_EX):
            index = _read_index(folder)
            index[name] = {"size": size, "mtime_ns": mtime_ns, "sha256": sha256}
            with atomic_path(folder / INDEX_NAME, suffix=TEMP_SUFFIX) as tmp:
                tmp.write_text(json.dumps(index, sort_keys=True, indent=1))
    except OSError as exc:
        raise OutputError(f"{folder / INDEX_NAME}: cannot write: {exc.strerror or exc}") from None
