"""Finding and reading built partitions: ``_SUCCESS``, ``_MANIFEST.json``, completeness.

A gold partition folder (``lake/gold/<table>/product_type=…/symbol=…/dt=…``, see
:mod:`vpbatch.store.lake`) is complete when it holds ``part-0.parquet``, ``_MANIFEST.json`` and a
``_SUCCESS`` naming the build; every table of one build names the same build digest. Readers
(:mod:`vpbatch.sql`, :mod:`vpbatch.build.verify`, the plots) go through this module and never see a
build in progress. Light on purpose: no pyarrow, no duckdb.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpbatch.errors import OutputError
from vpbatch.products import Product
from vpbatch.store.files import canonical_json, file_sha256, os_reason
from vpbatch.store.lake import CORE_TABLES, MANIFEST_FILE, PART_FILE, SUCCESS_FILE, gold_partition


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
    """One table partition directory of the lake."""

    table: str
    product_type: str
    symbol: str
    dt: str
    path: Path

    @property
    def complete(self) -> bool:
        return read_success(self.path) is not None

    @property
    def part_file(self) -> Path:
        return self.path / PART_FILE


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


def list_partitions(lake: Path, table: str, complete_only: bool = True) -> list[Partition]:
    """Partitions of ``table`` under ``lake/gold`` (sorted), by default only complete ones."""
    root = Path(lake) / "gold" / table
    found: list[Partition] = []
    for path in sorted(root.glob("product_type=*/symbol=*/dt=*")):
        if not path.is_dir():
            continue
        part = Partition(table, _value(path.parent.parent.name), _value(path.parent.name),
                         _value(path.name), path)
        if complete_only and not (part.complete and part.part_file.is_file()):
            continue
        found.append(part)
    return found


def is_complete(lake: Path, product: Product, day: dt.date,
                tables: Sequence[str] = CORE_TABLES) -> bool:
    """Whether every table in ``tables`` has a complete partition of the same build.

    Parameters
    ----------
    lake : Path
        Lake root.
    product : Product
        Resolved symbol.
    day : datetime.date
        Trading day (``dt`` partition).
    tables : sequence of str, default ``('vp_snapshot', 'vp_grid')``
        Tables that must be present.
    """
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

