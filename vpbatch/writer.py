"""Hive-partitioned Parquet output of one build, written atomically (SPEC §11).

One build writes one ``(product_type, symbol, dt)`` partition of each table::

    lake/gold/<table>/product_type=…/symbol=…/dt=YYYY-MM-DD/
        part-0.parquet   the rows
        _MANIFEST.json   inputs, engine version, every parameter, row counts, anomalies, timings
        _SUCCESS         written last: {"build": <digest of the manifest without timings>}

Atomicity
---------
Everything is written under ``lake/gold/.tmp.<product_type>.<symbol>.<dt>.<uuid>/<table>/`` (same
filesystem), fsynced, and only at :meth:`PartitionWriter.commit` renamed into place; ``_SUCCESS``
files come last, after every table is in place. A partition is complete only when every table
of the build has a ``_SUCCESS`` naming the same build (:func:`is_complete`), so a crash or
``kill -9`` at any moment leaves nothing that looks complete. A build holds the partition's
lock ``lake/gold/.locks/<product_type>.<symbol>.<dt>.lock/``, a directory renamed into place
(:mod:`vpbatch.locks`: safe across hosts sharing the lake, where ``flock`` is not; the lock
of a dead build is broken); once it has the lock, any ``.tmp.…``/``.old.…`` directory of the
same partition is a leftover of a dead build and is removed, and it checks it still holds
the lock just before moving anything into place. Replacing a complete partition
(``force=True``) renames the old directories away, renames the new ones in, writes the
``_SUCCESS`` files, then deletes the old ones; if the commit fails with an error, the old
partition is put back. A forced rebuild also retires tables of the old build that the new
build does not write (e.g. an old ``mbp``), so tables of two builds never mix.

Column types
------------
* ``event_id``, ``last_event_id``, depths, sizes and counters: ``int64``; ``k``: ``int32``.
* ``ts_event``, ``ts_recv`` and ``last_ts``: ``timestamp[ns, tz=UTC]``. ``last_ts`` of a
  never-touched cell is the epoch ``1970-01-01T00:00:00Z`` (SPEC's 0); ``last_event_id == 0``
  is the marker to test for "never touched".
* Prices: ``float64`` in currency units. ``best_bid_price``, ``best_ask_price`` and
  ``mid_price`` are null when that side of the book is empty (NaN in the arrays); every
  other float is written as is (``vpbatch verify`` rejects NaN/inf).
* ``regime``: dictionary-encoded string, dictionary always ``['CHOP', 'UP', 'DOWN']``.
* ``mbp``: Databento MBP-10 ``to_df()`` column order and types (see :mod:`vpbatch.mbp_layout`):
  times ``timestamp[ns, UTC]`` (``UINT64_MAX`` -> null), prices ``float64`` = fixed * 1e-9
  (undefined price or empty level -> null), sizes/counts/sequence ``uint32``, flags ``uint8``,
  action/side one-character strings.
* Columns that can never be null are declared non-nullable (Parquet ``REQUIRED``).

Encoding: zstd level 3; dictionary encoding for non-float columns only (float columns compress
better and faster without it). Determinism: fixed row-group sizes (rows are buffered, so the
file does not depend on how the caller chunks its arrays), fixed key-value metadata, no times
or ids in the data files. ``vp_grid`` is declared sorted by ``(event_id, k)`` and
``vp_snapshot``/``mbp`` by ``event_id`` (``sorting_columns``), with column statistics.

Manifest (``manifest_version`` 1), keys sorted::

    manifest_version, engine {name, version}, product {…}, dt, inputs [{path, name, size,
    sha256}], config (EngineConfig.to_dict()), parameters {…}, tables {<table>: {file, rows,
    row_groups, bytes, sha256, row_group_rows, columns}}, writer {format, compression,
    compression_level, pyarrow}, anomalies {…}, timings {…}

Everything but ``timings`` is a function of the inputs, the code and the parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vpbatch.book.dtypes import (
    GRID_DTYPE,
    GRID_FLOAT_FIELDS,
    PRICE_SCALE,
    REGIME_NAMES,
    SNAPSHOT_DTYPE,
    UNDEF_PRICE,
)
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError, OutputError
from vpbatch.lake import GOLD_TABLES, gold_partition
from vpbatch.locks import DirLock
from vpbatch.mbp_layout import (
    DEFAULT_LEVELS,
    LEVEL_COLUMN_PREFIXES,
    MAX_LEVELS,
    level_name,
    levels_of,
    mbp_columns,
    mbp_dtype,
)
from vpbatch.products import Product

#: Version of the ``_MANIFEST.json`` layout.
MANIFEST_VERSION: Final = 1
PART_FILE: Final = "part-0.parquet"
MANIFEST_FILE: Final = "_MANIFEST.json"
SUCCESS_FILE: Final = "_SUCCESS"
COMPRESSION: Final = "zstd"
COMPRESSION_LEVEL: Final = 3
#: Rows per Parquet row group (the write buffer holds at most this many rows, ~50 MB).
ROW_GROUP_ROWS: Final = {"vp_snapshot": 131_072, "vp_grid": 262_144, "mbp": 131_072}
#: Tables every build writes; ``mbp`` is optional.
CORE_TABLES: Final = ("vp_snapshot", "vp_grid")

_UTC_NS: Final = pa.timestamp("ns", tz="UTC")
_UINT64_MAX: Final = np.iinfo(np.uint64).max
_REGIME_TYPE: Final = pa.dictionary(pa.int8(), pa.string())
_NULLABLE_SNAPSHOT: Final = ("best_bid_price", "best_ask_price", "mid_price")
_HASH_CHUNK: Final = 1 << 20


# --------------------------------------------------------------------------------------------
# Schemas and numpy -> Arrow conversion


def _field(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def _metadata(table: str) -> dict[bytes, bytes]:
    return {b"vpbatch.table": table.encode(), b"vpbatch.manifest_version": b"%d" % MANIFEST_VERSION}


def snapshot_schema() -> pa.Schema:
    """Arrow schema of ``vp_snapshot`` (column order of ``SNAPSHOT_DTYPE``)."""
    fields = []
    for name in SNAPSHOT_DTYPE.names or ():
        kind = SNAPSHOT_DTYPE.fields[name][0]  # type: ignore[index]
        if name in ("ts_event", "ts_recv"):
            fields.append(_field(name, _UTC_NS))
        elif name == "regime":
            fields.append(_field(name, _REGIME_TYPE))
        elif kind.kind == "f":
            fields.append(_field(name, pa.float64(), nullable=name in _NULLABLE_SNAPSHOT))
        elif kind.kind == "b":
            fields.append(_field(name, pa.bool_()))
        else:
            fields.append(_field(name, pa.int64()))
    return pa.schema(fields, metadata=_metadata("vp_snapshot"))


def grid_schema() -> pa.Schema:
    """Arrow schema of ``vp_grid`` (column order of ``GRID_DTYPE``)."""
    fields = [_field("event_id", pa.int64()), _field("k", pa.int32()),
              _field("price", pa.float64())]
    fields += [_field(name, pa.int64()) for name in ("bid_depth", "ask_depth", "rest_depth")]
    fields += [_field(name, pa.float64()) for name in GRID_FLOAT_FIELDS]
    fields += [_field("last_event_id", pa.int64()), _field("last_ts", _UTC_NS)]
    assert [f.name for f in fields] == list(GRID_DTYPE.names or ())
    return pa.schema(fields, metadata=_metadata("vp_grid"))


def mbp_schema(levels: int = DEFAULT_LEVELS) -> pa.Schema:
    """Arrow schema of ``mbp`` with ``levels`` levels per side (Databento ``to_df()`` order)."""
    types = {"ts_recv": _UTC_NS, "ts_event": _UTC_NS, "action": pa.string(),
             "side": pa.string(), "price": pa.float64(), "size": pa.uint32(),
             "flags": pa.uint8(), "sequence": pa.uint32(), "event_id": pa.int64()}
    prefix_types = {"px": pa.float64(), "sz": pa.uint32(), "ct": pa.uint32()}
    fields = []
    for name in mbp_columns(levels):
        if name in types:
            nullable = name in ("ts_recv", "ts_event", "price")
            fields.append(_field(name, types[name], nullable=nullable))
        else:
            kind = name.split("_")[1]
            fields.append(_field(name, prefix_types[kind], nullable=kind == "px"))
    return pa.schema(fields, metadata=_metadata("mbp"))


def _check_dtype(arr: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
        got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise TypeError(f"{what}: expected an array of the {what} dtype, got {got}")
    return arr.reshape(-1)


def _col(arr: np.ndarray, name: str) -> np.ndarray:
    return np.ascontiguousarray(arr[name])


def _timestamps(values: np.ndarray, nullable: bool = False) -> pa.Array:
    ints = np.ascontiguousarray(values).view(np.int64)
    mask = (np.ascontiguousarray(values) == _UINT64_MAX) if nullable else None
    return pa.array(ints, type=pa.int64(), mask=mask).cast(_UTC_NS)


def snapshots_to_arrow(arr: np.ndarray) -> pa.Table:
    """``SNAPSHOT_DTYPE`` rows -> Arrow table with :func:`snapshot_schema`."""
    arr = _check_dtype(arr, SNAPSHOT_DTYPE, "vp_snapshot")
    schema = snapshot_schema()
    columns = []
    for field in schema:
        name = field.name
        if name in ("ts_event", "ts_recv"):
            columns.append(_timestamps(arr[name]))
        elif name == "regime":
            codes = _col(arr, name)
            if codes.size and (codes.min() < 0 or codes.max() >= len(REGIME_NAMES)):
                bad = codes[(codes < 0) | (codes >= len(REGIME_NAMES))][0]
                raise OutputError(f"vp_snapshot.regime: code {bad} is not one of "
                                  f"0..{len(REGIME_NAMES) - 1} ({', '.join(REGIME_NAMES)})")
            columns.append(pa.DictionaryArray.from_arrays(
                pa.array(codes, type=pa.int8()), pa.array(REGIME_NAMES, type=pa.string())))
        elif name in _NULLABLE_SNAPSHOT:
            col = _col(arr, name)
            columns.append(pa.array(col, type=pa.float64(), mask=np.isnan(col)))
        else:
            columns.append(pa.array(_col(arr, name), type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def grid_to_arrow(arr: np.ndarray) -> pa.Table:
    """``GRID_DTYPE`` rows -> Arrow table with :func:`grid_schema`."""
    arr = _check_dtype(arr, GRID_DTYPE, "vp_grid")
    schema = grid_schema()
    columns = [
        _timestamps(arr[f.name]) if f.name == "last_ts"
        else pa.array(_col(arr, f.name), type=f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _chars(values: np.ndarray) -> pa.Array:
    return pa.array(np.ascontiguousarray(values).view("S1"), type=pa.binary()).cast(pa.string())


def _prices(values: np.ndarray, empty: np.ndarray | None = None) -> pa.Array:
    values = np.ascontiguousarray(values)
    mask = values == UNDEF_PRICE
    if empty is not None:
        mask |= empty
    # Same expression as the engine's prices (fixed * 1e-9), so mbp and vp_* join exactly.
    return pa.array(values * PRICE_SCALE, type=pa.float64(), mask=mask)


def mbp_to_arrow(arr: np.ndarray) -> pa.Table:
    """MBP rows (:func:`~vpbatch.mbp_layout.mbp_dtype` or its kernel view) -> Arrow table."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"mbp: expected an MBP record array, got {type(arr).__name__}")
    levels = levels_of(arr.dtype)
    flat = arr.reshape(-1).view(mbp_dtype(levels))
    schema = mbp_schema(levels)
    data: dict[str, pa.Array] = {
        "ts_recv": _timestamps(flat["ts_recv"], nullable=True),
        "ts_event": _timestamps(flat["ts_event"], nullable=True),
        "action": _chars(flat["action"]),
        "side": _chars(flat["side"]),
        "price": _prices(flat["price"]),
    }
    for name in ("size", "flags", "sequence", "event_id"):
        data[name] = pa.array(_col(flat, name), type=schema.field(name).type)
    for i in range(levels):
        for side in ("bid", "ask"):
            size = _col(flat, level_name(f"{side}_sz", i))
            px = level_name(f"{side}_px", i)
            data[px] = _prices(flat[px], empty=size == 0)
            for prefix in (f"{side}_sz", f"{side}_ct"):
                name = level_name(prefix, i)
                data[name] = pa.array(_col(flat, name), type=pa.uint32())
    assert all(level_name(p, 0) in data for p in LEVEL_COLUMN_PREFIXES)
    return pa.Table.from_arrays([data[f.name] for f in schema], schema=schema)


# --------------------------------------------------------------------------------------------
# Small filesystem helpers


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a sibling temp file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys; the form hashed into a build digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)


def build_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest without ``timings``: what ``_SUCCESS`` names as the build."""
    body = {key: value for key, value in manifest.items() if key != "timings"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def engine_version() -> str:
    """``vpbatch.__version__``, else the installed distribution's version, else ``0+unknown``."""
    import vpbatch

    version = getattr(vpbatch, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vpbatch")
    except PackageNotFoundError:
        return "0+unknown"


# --------------------------------------------------------------------------------------------
# Partitions on disk


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
            raise OutputError(f"{p}: cannot read input for the manifest: {_reason(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
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
        raise OutputError(f"{path}: cannot read manifest: {_reason(exc)}") from None
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


def _partition_key(product: Product, day: dt.date) -> str:
    return f"{product.product_type}.{product.symbol}.{day.isoformat()}"


# --------------------------------------------------------------------------------------------
# The writer


class _TableSink:
    """One table's temp Parquet file with a bounded row buffer."""

    def __init__(self, table: str, folder: Path, schema: pa.Schema,
                 convert: Callable[[np.ndarray], pa.Table], row_group_rows: int,
                 sorting: Sequence[str]) -> None:
        self.table = table
        self.folder = folder
        self.schema = schema
        self.convert = convert
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.row_groups = 0
        self._buffer: np.ndarray | None = None
        self._buffered = 0
        names = schema.names
        self._writer = pq.ParquetWriter(
            folder / PART_FILE, schema, compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL, write_statistics=True, store_schema=True,
            use_dictionary=[f.name for f in schema if not pa.types.is_floating(f.type)],
            sorting_columns=[pq.SortingColumn(names.index(c)) for c in sorting],
        )

    def append(self, arr: np.ndarray) -> None:
        """Buffer ``arr`` and write every full row group; memory stays below one group.

        Rows are copied into one preallocated buffer (the caller may reuse ``arr``); a full
        group that arrives in one piece is converted without the intermediate copy.
        """
        pos, n, size = 0, arr.size, self.row_group_rows
        while pos < n:
            take = min(size - self._buffered, n - pos)
            piece = arr[pos:pos + take]
            pos += take
            if self._buffered == 0 and take == size:
                self._write(piece)
                continue
            if self._buffer is None or self._buffer.dtype != arr.dtype:
                self._buffer = np.empty(size, dtype=arr.dtype)
            self._buffer[self._buffered:self._buffered + take] = piece
            self._buffered += take
            if self._buffered == size:
                self._flush()

    def _flush(self) -> None:
        if self._buffer is not None and self._buffered:
            rows, self._buffered = self._buffered, 0
            self._write(self._buffer[:rows])

    def _write(self, arr: np.ndarray) -> None:
        table = self.convert(arr)  # copies every column out of ``arr``
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows += len(table)
        self.row_groups += 1

    def close(self) -> None:
        self._flush()
        self._buffer = None
        self._writer.close()

    def abort(self) -> None:
        self._buffer, self._buffered = None, 0
        with contextlib.suppress(Exception):
            self._writer.close()


class PartitionWriter:
    """Write one build's ``(product_type, symbol, dt)`` partition of each table, atomically.

    Use as a context manager: leaving the block normally commits, leaving it with an exception
    aborts (the temp directory is removed and nothing appears in the lake).

    Parameters
    ----------
    lake : Path
        Lake root (``lake/gold/...`` is created).
    product : Product
        Resolved symbol (partition ``product_type`` and ``symbol``).
    day : datetime.date
        Trading day (partition ``dt``).
    config : EngineConfig
        Engine parameters, recorded in the manifest (``K`` and ``band`` are read by verify).
    inputs : sequence of path or InputFile, default ()
        Input files; paths are stat'ed and hashed (sha256) at commit.
    params : mapping, default None
        Build parameters (sample, start/end time, warm-up, instrument_id, ...) for the manifest.
    mbp_levels : int or None, default None
        Also write the ``mbp`` table with this many levels per side.
    force : bool, default False
        Replace a complete partition instead of refusing.
    row_group_rows : mapping, default None
        Override :data:`ROW_GROUP_ROWS` per table (tests use small groups).

    Raises
    ------
    ConfigError
        ``mbp_levels`` outside 1-99.
    OutputError
        The lake cannot be written, the partition exists and ``force`` is false, another build
        of the same partition is running, or a write fails (e.g. disk full).

    Examples
    --------
    >>> with PartitionWriter(lake, product, day, config=cfg, inputs=[f]) as out:  # doctest: +SKIP
    ...     for snaps, grid in engine.run():
    ...         out.write_snapshots(snaps)
    ...         out.write_grid(grid)
    ...     out.anomalies.update(engine.anomalies)
    """

    def __init__(self, lake: Path, product: Product, day: dt.date, *,
                 config: EngineConfig, inputs: Sequence[str | os.PathLike[str] | InputFile] = (),
                 params: Mapping[str, Any] | None = None, mbp_levels: int | None = None,
                 force: bool = False, row_group_rows: Mapping[str, int] | None = None) -> None:
        self.lake = Path(lake)
        self.product = product
        self.day = day
        self.config = config
        self.inputs = list(inputs)
        self.params: dict[str, Any] = dict(params or {})
        self.mbp_levels = mbp_levels
        self.force = force
        self.row_group_rows = {**ROW_GROUP_ROWS, **(row_group_rows or {})}
        for table, rows in self.row_group_rows.items():
            if int(rows) < 1:
                raise OutputError(f"row_group_rows[{table}]: must be >= 1, was {rows}")
        if mbp_levels and not 1 <= int(mbp_levels) <= MAX_LEVELS:
            raise ConfigError(f"mbp_levels: must be between 1 and {MAX_LEVELS}, was {mbp_levels}")
        self.tables: tuple[str, ...] = CORE_TABLES + (("mbp",) if mbp_levels else ())
        #: Anomaly counts for the manifest (update before commit).
        self.anomalies: dict[str, Any] = {}
        #: Phase timings in seconds for the manifest (update before commit).
        self.timings: dict[str, Any] = {}
        self._finals: dict[str, Path] = {
            t: gold_partition(self.lake, t, product, day) for t in GOLD_TABLES}
        #: Final partition folder of each table of this build.
        self.partitions: dict[str, Path] = {t: self._finals[t] for t in self.tables}
        self._gold = self.lake / "gold"
        self._key = _partition_key(product, day)
        self._tmp_root: Path | None = None
        self._lock_dir: DirLock | None = None
        self._sinks: dict[str, _TableSink] = {}
        self._state = "new"
        self._write_seconds = 0.0
        self._rows_final: dict[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PartitionWriter:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.commit()

    def open(self) -> None:
        """Lock the partition, clean leftovers of dead builds, start the temp files."""
        if self._state != "new":
            raise OutputError(f"{self._gold}: writer for {self._key} already {self._state}")
        try:
            self._gold.mkdir(parents=True, exist_ok=True)
            (self._gold / ".locks").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self._gold}: cannot create lake folder: {_reason(exc)}") from None
        self._lock()
        try:
            self._clean_leftovers()
            if not self.force and is_complete(self.lake, self.product, self.day):
                raise OutputError(f"{self._finals['vp_snapshot']}: partition already built; "
                                  "use --force to replace it")
            self._tmp_root = self._gold / f".tmp.{self._key}.{uuid.uuid4().hex}"
            self._tmp_root.mkdir()
            for table in self.tables:
                folder = self._tmp_root / table
                folder.mkdir()
                self._sinks[table] = self._make_sink(table, folder)
        except OSError as exc:
            self._state = "failed"
            self._cleanup()
            raise OutputError(f"{self._tmp_root or self._gold}: cannot start output: "
                              f"{_reason(exc)}") from None
        except BaseException:
            self._state = "failed"
            self._cleanup()
            raise
        self._state = "open"

    def _make_sink(self, table: str, folder: Path) -> _TableSink:
        rows = int(self.row_group_rows[table])
        if table == "vp_snapshot":
            return _TableSink(table, folder, snapshot_schema(), snapshots_to_arrow, rows,
                              ["event_id"])
        if table == "vp_grid":
            return _TableSink(table, folder, grid_schema(), grid_to_arrow, rows,
                              ["event_id", "k"])
        assert self.mbp_levels
        return _TableSink(table, folder, mbp_schema(self.mbp_levels), mbp_to_arrow, rows,
                          ["event_id"])

    def _lock(self) -> None:
        lock = DirLock(self._gold / ".locks" / f"{self._key}.lock", self._key)
        lock.acquire()
        self._lock_dir = lock

    def _unlock(self) -> None:
        if self._lock_dir is not None:
            self._lock_dir.release()
            self._lock_dir = None

    def _clean_leftovers(self) -> None:
        """Remove temp/old directories of dead builds of this partition (we hold the lock)."""
        for prefix in (".tmp.", ".old."):
            for path in self._gold.glob(f"{prefix}{self._key}.*"):
                rest = path.name[len(prefix) + len(self._key) + 1:]
                if len(rest) == 32 and all(c in "0123456789abcdef" for c in rest):
                    _rmtree(path)

    def _cleanup(self) -> None:
        for sink in self._sinks.values():
            sink.abort()
        self._sinks = {}
        if self._tmp_root is not None:
            _rmtree(self._tmp_root)
        self._unlock()

    def abort(self) -> None:
        """Drop everything written so far; the lake is left as it was."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._cleanup()

    # -- streaming ---------------------------------------------------------------------------

    def _append(self, table: str, arr: np.ndarray) -> None:
        if self._state != "open":
            raise OutputError(f"{self._key}: cannot write {table}: writer is {self._state}")
        sink = self._sinks.get(table)
        if sink is None:
            raise OutputError(f"{self._key}: table {table} is not part of this build "
                              f"(tables: {', '.join(self.tables)})")
        started = time.perf_counter()
        try:
            sink.append(arr)
        except OSError as exc:
            self._fail(table, exc)
        except BaseException:
            self.abort()
            raise
        finally:
            self._write_seconds += time.perf_counter() - started

    def _fail(self, table: str, exc: BaseException) -> None:
        where = self._sinks[table].folder / PART_FILE if table in self._sinks else self._tmp_root
        self.abort()
        raise OutputError(f"{where}: writing {table} failed: {_reason(exc)}") from None

    def write_snapshots(self, arr: np.ndarray) -> None:
        """Append ``SNAPSHOT_DTYPE`` rows to ``vp_snapshot`` (in event order)."""
        self._append("vp_snapshot", _check_dtype(arr, SNAPSHOT_DTYPE, "vp_snapshot"))

    def write_grid(self, arr: np.ndarray) -> None:
        """Append ``GRID_DTYPE`` rows to ``vp_grid`` (sorted by ``(event_id, k)``)."""
        self._append("vp_grid", _check_dtype(arr, GRID_DTYPE, "vp_grid"))

    def write_mbp(self, arr: np.ndarray) -> None:
        """Append MBP rows (:func:`~vpbatch.mbp_layout.mbp_dtype` or its kernel view)."""
        if self.mbp_levels and levels_of(arr.dtype) != self.mbp_levels:
            raise TypeError(f"mbp: writer has {self.mbp_levels} levels, array has "
                            f"{levels_of(arr.dtype)}")
        self._append("mbp", arr.reshape(-1).view(mbp_dtype(levels_of(arr.dtype))))

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table: accepted so far while open, written after commit."""
        if self._rows_final is not None:
            return dict(self._rows_final)
        return {t: s.rows + s._buffered for t, s in self._sinks.items()}

    # -- commit ------------------------------------------------------------------------------

    def manifest(self, tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The manifest dict for the given per-table file facts (see module docstring)."""
        inputs = [(i if isinstance(i, InputFile) else InputFile.from_path(i)).to_dict()
                  for i in self.inputs]
        return {
            "manifest_version": MANIFEST_VERSION,
            "engine": {"name": "vpbatch", "version": engine_version()},
            "product": dataclasses.asdict(self.product),
            "dt": self.day.isoformat(),
            "inputs": inputs,
            "config": self.config.to_dict(),
            "parameters": self.params,
            "tables": {t: dict(v) for t, v in tables.items()},
            "writer": {"format": "parquet", "compression": COMPRESSION,
                       "compression_level": COMPRESSION_LEVEL, "dictionary": "non-float columns",
                       "pyarrow": pa.__version__},
            "anomalies": dict(self.anomalies),
            "timings": dict(self.timings),
        }

    def commit(self, *, anomalies: Mapping[str, Any] | None = None,
               timings: Mapping[str, float] | None = None) -> dict[str, Path]:
        """Close the files, write manifests, move the partitions into place, then ``_SUCCESS``.

        Parameters
        ----------
        anomalies : mapping, default None
            Merged into :attr:`anomalies`.
        timings : mapping, default None
            Merged into :attr:`timings` (seconds per phase).

        Returns
        -------
        dict of str to Path
            Final partition directory per table written.

        Raises
        ------
        OutputError
            When anything fails; the temp files are removed and a replaced partition is restored.
        """
        if self._state != "open":
            raise OutputError(f"{self._key}: cannot commit: writer is {self._state}")
        self.anomalies.update(anomalies or {})
        self.timings.update(timings or {})
        assert self._tmp_root is not None
        started = time.perf_counter()
        table = "?"
        try:
            facts: dict[str, dict[str, Any]] = {}
            for table, sink in self._sinks.items():
                sink.close()
                path = sink.folder / PART_FILE
                _fsync_file(path)
                facts[table] = {"file": PART_FILE, "rows": sink.rows, "row_groups": sink.row_groups,
                                "bytes": path.stat().st_size, "sha256": file_sha256(path),
                                "row_group_rows": sink.row_group_rows,
                                "columns": sink.schema.names}
            table = "?"
            self.timings.setdefault("write", round(self._write_seconds, 6))
            self.timings.setdefault("commit", round(time.perf_counter() - started, 6))
            manifest = self.manifest(facts)
            build = build_digest(manifest)
            text = json.dumps(manifest, sort_keys=True, indent=2, default=str,
                              allow_nan=False) + "\n"
            for table in self.tables:
                write_file_atomic(self._tmp_root / table / MANIFEST_FILE, text.encode())
            table = "?"
        except OSError as exc:
            self._fail(table, exc)
        except BaseException:
            self.abort()
            raise
        self._rows_final = {t: int(f["rows"]) for t, f in facts.items()}
        self._sinks = {}
        try:
            assert self._lock_dir is not None
            self._lock_dir.check()  # another host may have judged us dead and taken over
        except OutputError:
            self.abort()
            raise
        self._swap_in(build)
        self._state = "committed"
        return dict(self.partitions)

    def _swap_in(self, build: str) -> None:
        assert self._tmp_root is not None
        old_root = self._gold / f".old.{self._key}.{uuid.uuid4().hex}"
        moved_old: list[str] = []
        moved_new: list[str] = []
        try:
            for table in GOLD_TABLES:
                final = self._finals[table]
                if final.exists():
                    old_root.mkdir(exist_ok=True)
                    os.rename(final, old_root / table)
                    moved_old.append(table)
                    _fsync_dir(final.parent)
            for table in self.tables:
                final = self._finals[table]
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self._tmp_root / table, final)
                moved_new.append(table)
                _fsync_dir(final.parent)
            success = (canonical_json({"build": build}) + "\n").encode()
            for table in self.tables:
                write_file_atomic(self._finals[table] / SUCCESS_FILE, success)
        except OSError as exc:
            for table in moved_new:
                _rmtree(self._finals[table])
            for table in moved_old:
                with contextlib.suppress(OSError):
                    os.rename(old_root / table, self._finals[table])
            _rmtree(old_root)
            self._state = "failed"
            self._cleanup()
            raise OutputError(f"{self._finals['vp_snapshot']}: commit failed: "
                              f"{_reason(exc)}") from None
        _rmtree(old_root)
        _rmtree(self._tmp_root)
        self._unlock()

