"""Finding and reading built partitions: ``_SUCCESS``, ``_MANIFEST.json``, completeness.

On a folder lake a gold partition folder (``lake/gold/<table>/product_type=…/symbol=…/dt=…``,
see :mod:`vpbatch.store.lake`) is complete when it holds ``part-0.parquet``, ``_MANIFEST.json``
and a ``_SUCCESS`` naming the build; every table of one build names the same build digest. On an
object store a partition is the attempt its latest commit marker names
(:mod:`vpbatch.store.objects`). Readers (:mod:`vpbatch.sql`, :mod:`vpbatch.build.verify`, the
plots) go through this module and never see a build in progress: :func:`list_partitions`
(one table), :func:`committed_partitions` (every table in one listing), :func:`find_partition`,
:func:`partition_manifest`, :func:`is_complete`. Each accepts a folder, a URL or a
:class:`~vpbatch.store.fs.Lake`. Light on purpose: no pyarrow, no duckdb.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpbatch.errors import ConfigError, OutputError
from vpbatch.products import Product
from vpbatch.store.files import canonical_json, file_sha256, os_reason
from vpbatch.store.fs import Lake, open_lake
from vpbatch.store.lake import (
    CORE_TABLES,
    GOLD_TABLES,
    MANIFEST_FILE,
    PART_FILE,
    SUCCESS_FILE,
    gold_partition,
)
from vpbatch.store.objects import Commit, latest_commit, latest_commits


def build_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest without ``timings``: what ``_SUCCESS`` names as the build."""
    body = {key: value for key, value in manifest.items() if key != "timings"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass(frozen=True)
class InputFile:
    """One input of a build as recorded in the manifest."""

    path: str
    size: int
    sha256: str

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> InputFile:
        """Stat and hash ``path`` (the whole file)."""
        p = Path(path)
        try:
            return cls(str(p.resolve()), p.stat().st_size, file_sha256(p))
        except OSError as exc:
            raise OutputError(f"{p}: cannot read input for the manifest: "
                              f"{os_reason(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``inputs`` entry."""
        return {"path": self.path, "name": Path(self.path).name, "size": self.size,
                "sha256": self.sha256}


@dataclass(frozen=True)
class Partition:
    """One table partition of the lake.

    ``url`` is where its files are, on any lake: the partition folder (as a string) of a folder
    lake, the committed attempt's prefix (``s3://...``) on an object store; ``part_url`` is its
    Parquet file. Read them through the lake (:meth:`~vpbatch.store.fs.Lake.open_input`,
    :meth:`~vpbatch.store.fs.Lake.arrow_filesystem`, :meth:`~vpbatch.store.fs.Lake.attach`).
    ``path`` and ``part_file`` are the local paths of a folder lake.
    """

    table: str
    product_type: str
    symbol: str
    dt: str
    url: str
    #: The build's manifest, from the commit marker (object store; None on a folder lake).
    manifest: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def local(self) -> bool:
        return "://" not in self.url

    @property
    def path(self) -> Path:
        """The partition folder of a folder lake (ConfigError on an object store)."""
        if not self.local:
            raise ConfigError(f"{self.url}: on an object store; use Partition.url with the "
                              "lake (vpbatch.store.open_lake)")
        return Path(self.url)

    @property
    def complete(self) -> bool:
        return self.manifest is not None or read_success(self.path) is not None

    @property
    def part_file(self) -> Path:
        return self.path / PART_FILE

    @property
    def part_url(self) -> str:
        """The Parquet file's location (a path string, or an ``s3://`` URL)."""
        return str(self.part_file) if self.local else f"{self.url}/{PART_FILE}"


def read_success(partition_dir: Path) -> str | None:
    """The build digest in ``partition_dir/_SUCCESS``; None when absent or unreadable."""
    try:
        data = json.loads((Path(partition_dir) / SUCCESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    build = data.get("build") if isinstance(data, dict) else None
    return build if isinstance(build, str) else None


def read_manifest(partition_dir: Path) -> dict[str, Any]:
    """The parsed ``_MANIFEST.json`` of a partition directory.

    Raises
    ------
    OutputError
        When it is missing or not a JSON object.
    """
    path = Path(partition_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise OutputError(f"{path}: cannot read manifest: {os_reason(exc)}") from None
    except ValueError as exc:
        raise OutputError(f"{path}: manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path}: manifest is not a JSON object")
    return data


def _value(name: str) -> str:
    return name.split("=", 1)[1] if "=" in name else name


def _from_commit(lake: Lake, table: str, commit: Commit) -> Partition:
    part = Partition(table, commit.product_type, commit.symbol, commit.dt,
                     commit.folder(lake, table), manifest=commit.manifest)
    size = (commit.manifest.get("tables") or {}).get(table, {}).get("bytes")
    if isinstance(size, int):  # an attempt's files never change: no HEAD to open them
        lake.remember(part.part_url, size)
    return part


def list_partitions(lake: Path | str | Lake, table: str,
                    complete_only: bool = True) -> list[Partition]:
    """Partitions of ``table`` under ``lake/gold`` (sorted), by default only complete ones.

    On an object store only committed builds exist for readers (``complete_only`` changes
    nothing there).
    """
    store = open_lake(lake)
    if not store.local:
        return committed_partitions(store, (table,))[table]
    root = Path(store.url) / "gold" / table
    found: list[Partition] = []
    for path in sorted(root.glob("product_type=*/symbol=*/dt=*")):
        if not path.is_dir():
            continue
        part = Partition(table, _value(path.parent.parent.name), _value(path.parent.name),
                         _value(path.name), str(path))
        if complete_only and not (part.complete and part.part_file.is_file()):
            continue
        found.append(part)
    return found


def committed_partitions(lake: Path | str | Lake,
                         tables: Sequence[str] = GOLD_TABLES) -> dict[str, list[Partition]]:
    """Complete partitions of each table (sorted); on an object store from one listing."""
    store = open_lake(lake)
    if store.local:
        return {table: list_partitions(store, table) for table in tables}
    commits = latest_commits(store)
    return {table: [_from_commit(store, table, c) for c in commits.values() if table in c.tables]
            for table in tables}


def find_partition(lake: Path | str | Lake, table: str, product_type: str, symbol: str,
                   day: str) -> Partition | None:
    """The complete partition of one table and key, None when there is none."""
    store = open_lake(lake)
    if not store.local:
        commit = latest_commit(store, product_type, symbol, day)
        return (_from_commit(store, table, commit)
                if commit is not None and table in commit.tables else None)
    folder = Path(store.url) / "gold" / table / f"product_type={product_type}" \
        / f"symbol={symbol}" / f"dt={day}"
    part = Partition(table, product_type, symbol, day, str(folder))
    return part if part.complete and part.part_file.is_file() else None


def partition_manifest(part: Partition) -> dict[str, Any]:
    """The manifest of the build a partition belongs to (OutputError when unreadable)."""
    return dict(part.manifest) if part.manifest is not None else read_manifest(part.path)


def is_complete(lake: Path | str | Lake, product: Product, day: dt.date,
                tables: Sequence[str] = CORE_TABLES) -> bool:
    """Whether every table in ``tables`` has a complete partition of the same build.

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root (a folder or an object-store URL).
    product : Product
        Resolved symbol.
    day : datetime.date
        Trading day (``dt`` partition).
    tables : sequence of str, default ``('vp_snapshot', 'vp_grid')``
        Tables that must be present.
    """
    store = open_lake(lake)
    if not store.local:
        commit = latest_commit(store, product.product_type, product.symbol, day.isoformat())
        return commit is not None and set(tables) <= set(commit.tables)
    lake = Path(store.url)
    builds = set()
    for table in tables:
        folder = gold_partition(lake, table, product, day)
        build = read_success(folder)
        if build is None or not (folder / PART_FILE).is_file():
            return False
        if not (folder / MANIFEST_FILE).is_file():
            return False
        builds.add(build)
    return len(builds) <= 1


def partition_key(product: Product, day: dt.date) -> str:
    """``future_mbo.MNQH6.2026-02-06``: names temp folders and locks of one partition."""
    return f"{product.product_type}.{product.symbol}.{day.isoformat()}"

