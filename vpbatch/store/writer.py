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
(:mod:`vpbatch.store.locks`: safe across hosts sharing the lake, where ``flock`` is not; the lock
of a dead build is broken); once it has the lock, any ``.tmp.…``/``.old.…`` directory of the
same partition is a leftover of a dead build and is removed, and it checks it still holds
the lock just before moving anything into place. Replacing a complete partition
(``force=True``) renames the old directories away, renames the new ones in, writes the
``_SUCCESS`` files, then deletes the old ones; if the commit fails with an error, the old
partition is put back. A forced rebuild also retires tables of the old build that the new
build does not write (e.g. an old ``mbp``), so tables of two builds never mix.

Column types are defined in :mod:`vpbatch.store.schema`, partitions are read back through
:mod:`vpbatch.store.partitions`.

Encoding: zstd level 2 (level 3 is 0.3% smaller and a third slower); dictionary encoding for
non-float columns of ``vp_snapshot`` and ``mbp`` only (float columns compress better and
faster without it); none in ``vp_grid``, whose lean layout
(:data:`~vpbatch.store.schema.GRID_LAYOUT`, docs/storage.md) is encoded fastest plain, and
whose float32 columns carry no statistics (min/max of every page of 15 columns: 10% of its
encoding time, for pruning nobody does).
Determinism: fixed row-group sizes (rows are buffered, so the
file does not depend on how the caller chunks its arrays), fixed key-value metadata, no times
or ids in the data files. ``vp_grid`` is declared sorted by ``(event_id, k)`` and
``vp_snapshot``/``mbp`` by ``event_id`` (``sorting_columns``), with column statistics.

Manifest (``manifest_version`` 1), keys sorted::

    manifest_version, engine {name, version}, product {…}, dt, inputs [{path, name, size,
    sha256}], config (EngineConfig.to_dict()), parameters {…}, tables {<table>: {file, rows,
    row_groups, bytes, sha256, row_group_rows, columns}}, writer {format, compression,
    compression_level, pyarrow}, anomalies {…}, timings {…}
    and, only for a build with a fitted model (``build --model``), model {path, sha256, name,
    target, format_version, …}: ``vp_snapshot`` then has the columns of
    :data:`~vpbatch.store.schema.MODEL_COLUMNS`.

Everything but ``timings`` is a function of the inputs, the code and the parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vpbatch.book.dtypes import GRID_DTYPE, SNAPSHOT_DTYPE
from vpbatch.book.mbp_layout import MAX_LEVELS, levels_of, mbp_dtype
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError, OutputError, PartitionExists
from vpbatch.products import Product
from vpbatch.store.files import (
    canonical_json,
    fsync_dir,
    os_reason,
    rmtree,
    write_file_atomic,
)
from vpbatch.store.fs import Lake, open_lake
from vpbatch.store.lake import (
    CORE_TABLES,
    GOLD_TABLES,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    PART_FILE,
    SUCCESS_FILE,
    gold_partition,
)
from vpbatch.store.locks import DirLock
from vpbatch.store.objects import ObjectCommit
from vpbatch.store.outputs import HashedFile, HashedUpload
from vpbatch.store.partitions import InputFile, build_digest, is_complete, partition_key
from vpbatch.store.schema import (
    GRID_LAYOUT,
    SCORED_SNAPSHOT_DTYPE,
    check_dtype,
    grid_schema,
    grid_to_arrow,
    mbp_schema,
    mbp_to_arrow,
    snapshot_schema,
    snapshots_to_arrow,
    state_times,
    stored_grid_table,
)
from vpbatch.version import engine_version

COMPRESSION: Final = "zstd"
COMPRESSION_LEVEL: Final = 2
#: Rows per Parquet row group (the write buffer holds at most this many rows, ~50 MB).
ROW_GROUP_ROWS: Final = {"vp_snapshot": 131_072, "vp_grid": 262_144, "mbp": 131_072}


class _StateTimes:
    """``event_id -> ts_event`` of the states whose grid rows may still arrive (bounded)."""

    def __init__(self) -> None:
        self._ids = np.zeros(0, dtype=np.int64)
        self._ts = np.zeros(0, dtype=np.int64)
        self._new: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, event_ids: np.ndarray, ts_event: np.ndarray) -> None:
        """Remember states (copies: the caller may reuse its arrays)."""
        self._new.append((event_ids.astype(np.int64), ts_event.astype(np.int64)))

    def times(self, event_ids: np.ndarray) -> np.ndarray:
        """State time of each grid row (``OutputError`` for a state never written)."""
        if self._new:
            self._ids = np.concatenate([self._ids, *(i for i, _ in self._new)])
            self._ts = np.concatenate([self._ts, *(t for _, t in self._new)])
            self._new = []
            if len(self._ids) > 1 and (np.diff(self._ids) < 0).any():  # keep for verify to see
                order = np.argsort(self._ids, kind="stable")
                self._ids, self._ts = self._ids[order], self._ts[order]
        return state_times(event_ids, self._ids, self._ts)

    def clear(self) -> None:
        """Forget every state (their grid rows arrive with their own times)."""
        self._ids, self._ts = self._ids[:0], self._ts[:0]
        self._new = []

    def forget_before(self, event_id: int) -> None:
        """Drop states before ``event_id`` (grid rows arrive in event order)."""
        keep = int(np.searchsorted(self._ids, event_id))
        self._ids, self._ts = self._ids[keep:], self._ts[keep:]


class _TableSink:
    """One table's temp Parquet file with a bounded row buffer."""

    def __init__(self, table: str, output: HashedFile | HashedUpload, schema: pa.Schema,
                 convert: Callable[[np.ndarray], pa.Table], row_group_rows: int,
                 sorting: Sequence[str], dictionary: bool = True,
                 float_statistics: bool = True) -> None:
        self.table = table
        self.where = str(output.path if isinstance(output, HashedFile) else output.location)
        self.schema = schema
        self.convert = convert
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.row_groups = 0
        self._buffer: np.ndarray | None = None
        self._buffered = 0
        names = schema.names
        self._output = output
        self._writer = pq.ParquetWriter(
            self._output.file, schema, compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL, store_schema=True,
            write_statistics=True if float_statistics
            else [f.name for f in schema if not pa.types.is_floating(f.type)],
            use_dictionary=[f.name for f in schema if not pa.types.is_floating(f.type)]
            if dictionary else False,
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
            # Raw bytes: numpy copies a structured array field by field (~10x slower).
            into = self._buffer[self._buffered:self._buffered + take]
            into.view(np.uint8)[:] = np.ascontiguousarray(piece).view(np.uint8)
            self._buffered += take
            if self._buffered == size:
                self._flush()

    def write_group(self, table: pa.Table) -> None:
        """One whole row group, bypassing the row buffer (which must be empty)."""
        if self._buffered:
            raise OutputError(f"{self.table}: a row group arrived while rows were buffered")
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows += len(table)
        self.row_groups += 1
        self._output.catch_up()

    def _flush(self) -> None:
        if self._buffer is not None and self._buffered:
            rows, self._buffered = self._buffered, 0
            self._write(self._buffer[:rows])

    def _write(self, arr: np.ndarray) -> None:
        table = self.convert(arr)  # copies every column out of ``arr``
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows += len(table)
        self.row_groups += 1
        self._output.catch_up()

    def close(self) -> tuple[str, int]:
        """Finish the file (durable on disk, or uploaded); returns its sha256 and size."""
        self._flush()
        self._buffer = None
        self._writer.close()
        digest = self._output.close()
        return digest, self._output.size

    def abort(self) -> None:
        self._buffer, self._buffered = None, 0
        with contextlib.suppress(Exception):
            self._writer.close()
        self._output.abort()


class PartitionWriter:
    """Write one build's ``(product_type, symbol, dt)`` partition of each table, atomically.

    Use as a context manager: leaving the block normally commits, leaving it with an exception
    aborts (the temp directory is removed and nothing appears in the lake).

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root: a folder (``lake/gold/...`` is created) or an object-store URL
        (``s3://bucket/prefix``: the commit without rename of :mod:`vpbatch.store.objects`).
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
    model : mapping, default None
        The fitted model that scores the states (``build --model``): the manifest's ``model``
        entry. ``vp_snapshot`` then has the model's columns and takes
        ``SCORED_SNAPSHOT_DTYPE`` rows (:func:`~vpbatch.store.schema.scored_snapshots`).

    Raises
    ------
    ConfigError
        ``mbp_levels`` outside 1-99.
    OutputError
        The lake cannot be written, the partition exists and ``force`` is false
        (:class:`~vpbatch.errors.PartitionExists`), another build of the same partition is
        running (on an object store the writer waits for it instead), or a write fails (e.g.
        disk full).

    Examples
    --------
    >>> with PartitionWriter(lake, product, day, config=cfg, inputs=[f]) as out:  # doctest: +SKIP
    ...     for snaps, grid in engine.run():
    ...         out.write_snapshots(snaps)
    ...         out.write_grid(grid)
    ...     out.commit(anomalies=engine.anomalies)
    """

    def __init__(self, lake: Path | str | Lake, product: Product, day: dt.date, *,
                 config: EngineConfig, inputs: Sequence[str | os.PathLike[str] | InputFile] = (),
                 params: Mapping[str, Any] | None = None, mbp_levels: int | None = None,
                 force: bool = False, row_group_rows: Mapping[str, int] | None = None,
                 model: Mapping[str, Any] | None = None) -> None:
        self.store = open_lake(lake)
        self.model = dict(model) if model is not None else None
        #: The lake folder (Path), or the object store's URL.
        self.lake: Path | str = self.store.folder if self.store.local else self.store.url
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
        folder = self.store.folder if self.store.local else Path()
        self._finals: dict[str, Path] = {
            t: gold_partition(folder, t, product, day) for t in GOLD_TABLES}
        #: Final partition folder of each table of this build (a folder lake only).
        self.partitions: dict[str, Path] = ({t: self._finals[t] for t in self.tables}
                                            if self.store.local else {})
        #: Where each table's files are, on any lake: the folder as a string, or on an object
        #: store the committed attempt's prefix (known once committed).
        self.locations: dict[str, str] = {t: str(p) for t, p in self.partitions.items()}
        self._gold = folder / "gold"
        self._key = partition_key(product, day)
        self._objects = None if self.store.local else ObjectCommit(
            self.store, product.product_type, product.symbol, day.isoformat(), self.tables,
            force=force)
        self._tmp_root: Path | None = None
        self._lock_dir: DirLock | None = None
        self._sinks: dict[str, _TableSink] = {}
        self._states = _StateTimes()
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
            where = self._gold if self.store.local else self.lake
            raise OutputError(f"{where}: writer for {self._key} already {self._state}")
        if self._objects is not None:
            self._open_attempt(self._objects)
            return
        try:
            self._gold.mkdir(parents=True, exist_ok=True)
            (self._gold / ".locks").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self._gold}: cannot create lake folder: "
                              f"{os_reason(exc)}") from None
        self._lock()
        try:
            self._clean_leftovers()
            if not self.force and is_complete(self._gold.parent, self.product, self.day):
                raise PartitionExists(f"{self._finals['vp_snapshot']}: partition already "
                                      "built; use --force to replace it")
            self._tmp_root = self._gold / f".tmp.{self._key}.{uuid.uuid4().hex}"
            self._tmp_root.mkdir()
            for table in self.tables:
                folder = self._tmp_root / table
                folder.mkdir()
                self._sinks[table] = self._make_sink(table, HashedFile(folder / PART_FILE))
        except OSError as exc:
            self._state = "failed"
            self._cleanup()
            raise OutputError(f"{self._tmp_root or self._gold}: cannot start output: "
                              f"{os_reason(exc)}") from None
        except BaseException:
            self._state = "failed"
            self._cleanup()
            raise
        self._state = "open"

    def _open_attempt(self, objects: ObjectCommit) -> None:
        """An object store: the lease (waiting for a live holder), then the attempt's files."""
        objects.open()
        try:
            for table in self.tables:
                output = HashedUpload(self.store, objects.part_location(table))
                self._sinks[table] = self._make_sink(table, output)
        except BaseException:
            self._state = "failed"
            self._cleanup()
            raise
        self._state = "open"

    def _make_sink(self, table: str, output: HashedFile | HashedUpload) -> _TableSink:
        rows = int(self.row_group_rows[table])
        if table == "vp_snapshot":
            return _TableSink(table, output, snapshot_schema(model=self.model is not None),
                              snapshots_to_arrow, rows, ["event_id"])
        if table == "vp_grid":
            return _TableSink(table, output, grid_schema(), self._grid_to_arrow, rows,
                              ["event_id", "k"], dictionary=False, float_statistics=False)
        assert self.mbp_levels
        return _TableSink(table, output, mbp_schema(self.mbp_levels), mbp_to_arrow, rows,
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
                    rmtree(path)

    def _cleanup(self) -> None:
        for sink in self._sinks.values():
            sink.abort()
        self._sinks = {}
        if self._objects is not None:
            self._objects.abort()
        if self._tmp_root is not None:
            rmtree(self._tmp_root)
        self._unlock()

    def abort(self) -> None:
        """Drop everything written so far; the lake is left as it was."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._cleanup()

    # -- streaming ---------------------------------------------------------------------------

    def _append(self, table: str, arr: np.ndarray) -> None:
        self._to_sink(table, lambda sink: sink.append(arr))

    def _to_sink(self, table: str, write: Callable[[_TableSink], None]) -> None:
        """Run ``write`` on ``table``'s sink: timed, and any failure aborts the whole build."""
        if self._state != "open":
            raise OutputError(f"{self._key}: cannot write {table}: writer is {self._state}")
        sink = self._sinks.get(table)
        if sink is None:
            raise OutputError(f"{self._key}: table {table} is not part of this build "
                              f"(tables: {', '.join(self.tables)})")
        started = time.perf_counter()
        try:
            with self._failing(table):
                write(sink)
        finally:
            self._write_seconds += time.perf_counter() - started

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Any failure inside aborts the whole build; an OSError becomes an OutputError that
        names the file (``what``: a table, or the manifest)."""
        try:
            yield
        except OSError as exc:
            where = (self._sinks[what].where if what in self._sinks
                     else self._tmp_root or self.lake)
            self.abort()
            raise OutputError(f"{where}: writing {what} failed: {os_reason(exc)}") from None
        except BaseException:
            self.abort()
            raise

    def write_snapshots(self, arr: np.ndarray) -> None:
        """Append ``SNAPSHOT_DTYPE`` rows to ``vp_snapshot`` (in event order);
        ``SCORED_SNAPSHOT_DTYPE`` rows when the writer was given a ``model``."""
        arr = check_dtype(arr, SNAPSHOT_DTYPE if self.model is None else SCORED_SNAPSHOT_DTYPE,
                          "vp_snapshot")
        self._states.add(arr["event_id"], arr["ts_event"])
        self._append("vp_snapshot", arr)

    def write_grid(self, arr: np.ndarray) -> None:
        """Append ``GRID_DTYPE`` rows to ``vp_grid`` (sorted by ``(event_id, k)``).

        The snapshots of these states must have been written first (their ``ts_event`` is
        stored beside the grid rows).
        """
        self._append("vp_grid", check_dtype(arr, GRID_DTYPE, "vp_grid"))

    def write_grid_group(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append one row group of stored ``vp_grid`` columns (``ts_event`` included).

        From :class:`~vpbatch.store.grid_columns.StoredGridBuffer`, which cuts groups of
        ``row_group_rows["vp_grid"]`` rows, so the file equals one written with
        :meth:`write_grid`. Don't mix the two in one build.
        """
        self._states.clear()  # the group carries its rows' state times
        self._to_sink("vp_grid", lambda sink: sink.write_group(stored_grid_table(columns)))

    def _grid_to_arrow(self, rows: np.ndarray) -> pa.Table:
        table = grid_to_arrow(rows, self._states.times(rows["event_id"]))
        if len(rows):
            self._states.forget_before(int(rows["event_id"][-1]))
        return table

    def write_mbp(self, arr: np.ndarray) -> None:
        """Append MBP rows (:func:`~vpbatch.book.mbp_layout.mbp_dtype` or its kernel view)."""
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
                       "compression_level": COMPRESSION_LEVEL,
                       "dictionary": "non-float columns of vp_snapshot and mbp",
                       "grid_layout": GRID_LAYOUT, "pyarrow": pa.__version__},
            "anomalies": dict(self.anomalies),
            "timings": dict(self.timings),
            **({"model": dict(self.model)} if self.model is not None else {}),
        }

    def commit(self, *, inputs: Sequence[str | os.PathLike[str] | InputFile] | None = None,
               params: Mapping[str, Any] | None = None,
               anomalies: Mapping[str, Any] | None = None,
               timings: Mapping[str, Any] | None = None) -> dict[str, Path | str]:
        """Close the files, write manifests, move the partitions into place, then ``_SUCCESS``.

        What is only known once the data is written comes in here: the inputs as read (with
        the sha256 computed while reading), the record count, anomalies, timings.

        Parameters
        ----------
        inputs : sequence of path or InputFile, default None
            Replaces the constructor's ``inputs``.
        params : mapping, default None
            Merged into the manifest's parameters.
        anomalies : mapping, default None
            Merged into :attr:`anomalies`.
        timings : mapping, default None
            Merged into :attr:`timings` (seconds per phase).

        Returns
        -------
        dict of str to Path or str
            Final partition directory per table written (on an object store: the URL of the
            committed attempt's prefix).

        Raises
        ------
        OutputError
            When anything fails; the temp files are removed and a replaced partition is restored.
        PartitionExists
            On an object store, when another build committed the partition first.
        """
        if self._state != "open":
            raise OutputError(f"{self._key}: cannot commit: writer is {self._state}")
        if inputs is not None:
            self.inputs = list(inputs)
        self.params.update(params or {})
        self.anomalies.update(anomalies or {})
        self.timings.update(timings or {})
        started = time.perf_counter()
        facts: dict[str, dict[str, Any]] = {}
        for table, sink in self._sinks.items():
            with self._failing(table):
                digest, size = sink.close()  # on disk (or uploaded), hashed while written
                facts[table] = {"file": PART_FILE, "rows": sink.rows,
                                "row_groups": sink.row_groups, "bytes": size,
                                "sha256": digest, "row_group_rows": sink.row_group_rows,
                                "columns": sink.schema.names}
        with self._failing(MANIFEST_FILE):
            self.timings.setdefault("write", round(self._write_seconds, 6))
            self.timings.setdefault("commit", round(time.perf_counter() - started, 6))
            manifest = self.manifest(facts)
            build = build_digest(manifest)
            text = json.dumps(manifest, sort_keys=True, indent=2, default=str,
                              allow_nan=False) + "\n"
            if self._objects is not None:
                self._commit_attempt(self._objects, facts, build, manifest, text)
                return dict(self.locations)
            assert self._tmp_root is not None
            for table in self.tables:
                write_file_atomic(self._tmp_root / table / MANIFEST_FILE, text.encode())
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
        return {**self.partitions}

    def _commit_attempt(self, objects: ObjectCommit, facts: Mapping[str, Mapping[str, Any]],
                        build: str, manifest: Mapping[str, Any], text: str) -> None:
        """An object store: manifests beside the files, then the conditional commit marker."""
        self._rows_final = {t: int(f["rows"]) for t, f in facts.items()}
        self._sinks = {}
        self.locations = dict(objects.commit(build, manifest, text))
        self._state = "committed"

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
                    fsync_dir(final.parent)
            for table in self.tables:
                final = self._finals[table]
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self._tmp_root / table, final)
                moved_new.append(table)
                fsync_dir(final.parent)
            success = (canonical_json({"build": build}) + "\n").encode()
            for table in self.tables:
                write_file_atomic(self._finals[table] / SUCCESS_FILE, success)
        except OSError as exc:
            for table in moved_new:
                rmtree(self._finals[table])
            for table in moved_old:
                with contextlib.suppress(OSError):
                    os.rename(old_root / table, self._finals[table])
            rmtree(old_root)
            self._state = "failed"
            self._cleanup()
            raise OutputError(f"{self._finals['vp_snapshot']}: commit failed: "
                              f"{os_reason(exc)}") from None
        rmtree(old_root)
        rmtree(self._tmp_root)
        self._unlock()

