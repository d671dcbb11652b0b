"""Partitions on an object store: attempts, commit markers and the commit without rename.

An object store has no atomic folder rename (SPEC §16), so a lake there is laid out so that
nothing has to move. One build of ``(product_type, symbol, dt)`` writes::

    gold/<table>/product_type=…/symbol=…/dt=…/attempt-<seq>-<uuid>/part-0.parquet
    gold/<table>/product_type=…/symbol=…/dt=…/attempt-<seq>-<uuid>/_MANIFEST.json
    gold/_commits/product_type=…/symbol=…/dt=…/<seq>.json        the commit marker

The data files go under a fresh *attempt* prefix; the partition becomes visible only when its
commit marker is created, with ``If-None-Match: *``, under the number ``<seq>`` the build
chose when it took the partition's lease (one more than the latest commit). The marker names
the attempt, the tables and the build digest and holds the whole manifest. Readers list the
markers and take, per partition, the highest number: they see a complete build or nothing,
never a mix of two builds, and never a build in progress.

* **A killed writer** leaves an attempt without a marker (and maybe an unfinished multipart
  upload): invisible. Its lease is taken over by the next build (:mod:`vpbatch.store.lease`).
* **Two writers of one partition** (a lease judged stale too early, a stalled host): both
  want the same marker number, and the store lets exactly one create it; the other reports
  the partition as built by someone else and drops its attempt.
* **``--force``** writes a new attempt and commits it under the next number: readers see the
  old build until the new marker exists, then the new one; no moment without a partition.
* **Cleanup** (by the build that just committed number ``C``): attempts numbered ``<= C``
  other than its own, their unfinished uploads, and markers below ``C``. An attempt numbered
  ``<= C`` can never be committed any more (its number is taken), so this never removes the
  files of a build that could still become visible; later attempts are left alone.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vpbatch.errors import PartitionExists, VpbatchError, VpbatchWarning
from vpbatch.store.files import canonical_json
from vpbatch.store.fs import Lake
from vpbatch.store.lake import CORE_TABLES, GOLD_TABLES, MANIFEST_FILE, PART_FILE
from vpbatch.store.lease import Lease

COMMITS: Final = "_commits"
LOCKS: Final = ".locks"
ATTEMPT: Final = "attempt-"
#: Version of the commit marker's layout.
COMMIT_VERSION: Final = 1
_MARKER_RE: Final = re.compile(
    r"/product_type=([^/]+)/symbol=([^/]+)/dt=([^/]+)/(\d{8})\.json$")
_ATTEMPT_RE: Final = re.compile(r"attempt-(\d{8})-[0-9a-f]{32}")

Key = tuple[str, str, str]


def partition_prefix(lake: Lake, table: str, product_type: str, symbol: str, day: str) -> str:
    """``gold/<table>/product_type=…/symbol=…/dt=…`` (holds the attempts)."""
    return lake.loc("gold", table, f"product_type={product_type}", f"symbol={symbol}",
                    f"dt={day}")


def commit_dir(lake: Lake, product_type: str, symbol: str, day: str) -> str:
    """``gold/_commits/product_type=…/symbol=…/dt=…`` (holds the numbered markers)."""
    return lake.loc("gold", COMMITS, f"product_type={product_type}", f"symbol={symbol}",
                    f"dt={day}")


def lease_location(lake: Lake, key: str) -> str:
    """``gold/.locks/<product_type>.<symbol>.<dt>.lock``."""
    return lake.loc("gold", LOCKS, f"{key}.lock")


@dataclass(frozen=True)
class Commit:
    """The latest commit marker of one partition."""

    product_type: str
    symbol: str
    dt: str
    seq: int
    attempt: str
    build: str
    tables: tuple[str, ...]
    location: str
    manifest: dict[str, Any] = field(compare=False, repr=False)

    def folder(self, lake: Lake, table: str) -> str:
        """Where this build's files of ``table`` are (the attempt prefix)."""
        return partition_prefix(lake, table, self.product_type, self.symbol, self.dt) \
            + f"/{ATTEMPT}{self.attempt}"


def _parse_marker(location: str, data: bytes) -> Commit:
    match = _MARKER_RE.search(location)
    if match is None:
        raise ValueError("not a commit marker name")
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("commit_version") != COMMIT_VERSION:
        raise ValueError(f"commit_version {body.get('commit_version')!r}"
                         if isinstance(body, dict) else "not a JSON object")
    manifest = body["manifest"]
    if not isinstance(manifest, dict):
        raise ValueError("manifest is not a JSON object")
    return Commit(match[1], match[2], match[3], int(match[4]), str(body["attempt"]),
                  str(body["build"]), tuple(str(t) for t in body["tables"]), location, manifest)


def _read_latest(lake: Lake, latest: Mapping[Key, str]) -> dict[Key, Commit]:
    got = lake.read_many(list(latest.values()))
    found: dict[Key, Commit] = {}
    for key, location in latest.items():
        data = got.get(location)
        try:
            if isinstance(data, Exception) or data is None:
                raise ValueError(str(data))
            found[key] = _parse_marker(location, data)
        except (ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"{location}: unreadable commit marker ({exc}); the partition is "
                          "not shown until it is rebuilt", VpbatchWarning, stacklevel=3)
    return found


def latest_commits(lake: Lake) -> dict[Key, Commit]:
    """The latest commit of every partition of the lake (one listing, concurrent reads)."""
    latest: dict[Key, tuple[int, str]] = {}
    for obj in lake.find(lake.loc("gold", COMMITS)):
        match = _MARKER_RE.search(obj.location)
        if match is None:
            continue
        key, seq = (match[1], match[2], match[3]), int(match[4])
        if key not in latest or seq > latest[key][0]:
            latest[key] = (seq, obj.location)
    return _read_latest(lake, {k: loc for k, (_, loc) in sorted(latest.items())})


def latest_commit(lake: Lake, product_type: str, symbol: str, day: str) -> Commit | None:
    """The latest commit of one partition, None when it was never committed."""
    folder = commit_dir(lake, product_type, symbol, day)
    names = [n for n in lake.list_names(folder) or [] if re.fullmatch(r"\d{8}\.json", n)]
    if not names:
        return None
    key = (product_type, symbol, day)
    return _read_latest(lake, {key: f"{folder}/{max(names)}"}).get(key)


class ObjectCommit:
    """One build's attempt on an object store, from lease to commit (module docstring).

    Used by :class:`~vpbatch.store.writer.PartitionWriter`, which writes the files at
    :meth:`part_location` and hands the manifest to :meth:`commit`.
    """

    def __init__(self, lake: Lake, product_type: str, symbol: str, day: str,
                 tables: Sequence[str], *, force: bool) -> None:
        self.lake = lake
        self.keys = (product_type, symbol, day)
        self.key = f"{product_type}.{symbol}.{day}"
        self.tables = tuple(tables)
        self.force = force
        self.seq = 0
        self.attempt = ""
        self.committed = False
        self.lease = Lease(lake, lease_location(lake, self.key), self.key)

    def where(self) -> str:
        """The partition's ``vp_snapshot`` prefix, for messages."""
        return partition_prefix(self.lake, "vp_snapshot", *self.keys)

    def open(self) -> None:
        """Take the lease (waiting for a live holder), refuse a complete partition unless
        forced, and choose the attempt's number.

        Raises
        ------
        PartitionExists
            The partition is complete and ``force`` is false.
        """
        self.lease.acquire(wait=True)
        try:
            latest = latest_commit(self.lake, *self.keys)
            if latest is not None and not self.force \
                    and set(CORE_TABLES) <= set(latest.tables):
                raise PartitionExists(f"{self.where()}: partition already built; use --force "
                                      "to replace it")
            self.seq = (latest.seq if latest is not None else 0) + 1
            self.attempt = f"{self.seq:08d}-{uuid.uuid4().hex}"
        except BaseException:
            self.lease.release()
            raise

    def folder(self, table: str) -> str:
        return partition_prefix(self.lake, table, *self.keys) + f"/{ATTEMPT}{self.attempt}"

    def part_location(self, table: str) -> str:
        return f"{self.folder(table)}/{PART_FILE}"

    def commit(self, build: str, manifest: Mapping[str, Any], text: str) -> dict[str, str]:
        """Write the manifests, create the marker, clean up; the attempt's folders.

        Raises
        ------
        PartitionExists
            Another build committed this number first (this attempt is dropped).
        OutputError
            The lease was lost, or the store failed (the attempt is dropped).
        """
        self.lease.check()
        for table in self.tables:
            self.lake.put(f"{self.folder(table)}/{MANIFEST_FILE}", text.encode())
        marker = {"commit_version": COMMIT_VERSION, "attempt": self.attempt, "build": build,
                  "tables": list(self.tables), "manifest": dict(manifest)}
        location = f"{commit_dir(self.lake, *self.keys)}/{self.seq:08d}.json"
        if self.lake.create(location, (canonical_json(marker) + "\n").encode()) is None:
            raise PartitionExists(f"{self.where()}: another build of {self.key} committed "
                                  "first; this build's files were dropped")
        self.committed = True  # visible from here on: nothing may remove these files
        try:
            self.cleanup()
        except (VpbatchError, OSError) as exc:  # leftovers wait for the next commit
            warnings.warn(f"{self.where()}: committed; cleaning up older attempts failed "
                          f"({exc})", VpbatchWarning, stacklevel=2)
        self.lease.release()
        return {table: self.folder(table) for table in self.tables}

    def cleanup(self) -> None:
        """Drop attempts numbered up to this commit but its own, and older markers."""
        mine = f"{ATTEMPT}{self.attempt}"
        for table in GOLD_TABLES:
            prefix = partition_prefix(self.lake, table, *self.keys)
            for name in self.lake.list_names(prefix) or []:
                match = _ATTEMPT_RE.fullmatch(name)
                if match and name != mine and int(match[1]) <= self.seq:
                    self.lake.remove_tree(f"{prefix}/{name}")
            for location, upload in self.lake.uploads(prefix + "/"):
                match = _ATTEMPT_RE.search(location)
                if match and match[0] != mine and int(match[1]) <= self.seq:
                    self.lake.abort_upload(location, upload)
        folder = commit_dir(self.lake, *self.keys)
        for name in self.lake.list_names(folder) or []:
            if re.fullmatch(r"\d{8}\.json", name) and int(name[:8]) < self.seq:
                self.lake.remove(f"{folder}/{name}")

    def abort(self) -> None:
        """Drop this attempt's files (unless committed) and give the lease up (best effort,
        never raises)."""
        try:
            if self.attempt and not self.committed:
                for table in self.tables:
                    self.lake.remove_tree(self.folder(table))
        except (VpbatchError, OSError):
            pass
        finally:
            self.lease.release()
