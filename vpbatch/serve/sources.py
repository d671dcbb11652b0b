"""Where streamed states come from: the lake's built partitions, or the raw file through the
pipeline of ``vpbatch build``.

Both sources produce the same thing (:class:`~vpbatch.serve.protocol.State` batches in event
order) through the same steps: snapshot rows as Arrow tables with
:func:`vpbatch.store.schema.snapshot_schema`; grid rows in the *stored* layout (the lake's Parquet
files hold exactly what :func:`vpbatch.store.schema.grid_to_arrow` made, and the raw source calls it
on the engine's arrays); then :class:`~vpbatch.serve.view_numpy.NumpyGridView` turns them
into ``vp_grid`` as users see it (``rest_depth``, ``pressure``, ``vacuum``, ``pressure_now``,
``vacuum_now``: the DuckDB view's SELECT of :func:`vpbatch.sql.grid_select`, operation for
operation in numpy, bit for bit the same as :class:`GridView`, which runs that SQL and is the
reference the tests compare with); then one frame encoder and one throttle. So a raw stream
and a lake stream of the same build send identical frames, equal to the rows of the
``vp_grid`` view.

Partitions are found with :func:`vpbatch.store.partitions.list_partitions` and read with pyarrow in
bounded batches (one Parquet row group at most), so memory is flat however long the day. Every
lake stream of one build reads it through one
:class:`~vpbatch.serve.lake_cache.SharedLake`: decoded once, shared by all its streams.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import pyarrow as pa

from vpbatch import sql
from vpbatch.build.request import DEFAULT_WARMUP_NS, BuildRequest
from vpbatch.build.stream import StateStream
from vpbatch.clock import NEW_YORK, NS_PER_SECOND, et_ns
from vpbatch.config import EngineConfig, ForceCoefficients
from vpbatch.errors import ConfigError, InputError
from vpbatch.products import Product, resolve_product
from vpbatch.serve.lake_cache import LakeCache, SharedLake
from vpbatch.serve.protocol import ADDITIVE_FIELDS, State
from vpbatch.serve.request import StreamRequest
from vpbatch.serve.rows import to_states
from vpbatch.serve.view_numpy import NumpyGridView
from vpbatch.store.fs import Lake, open_lake
from vpbatch.store.lake import CORE_TABLES, find_raw_file
from vpbatch.store.partitions import (
    Partition,
    build_digest,
    is_complete,
    list_partitions,
    partition_manifest,
)
from vpbatch.store.schema import (
    GRID_LAYOUT,
    grid_to_arrow,
    grid_view_schema,
    snapshots_to_arrow,
    state_times,
)

__all__ = ["GridView", "LakeSource", "RawSource", "Source", "SourceInfo", "built_days",
           "default_cache", "open_source", "throttle"]

#: Raw records per reader chunk: small, so a disconnect stops the engine quickly.
RAW_CHUNK_RECORDS: Final = 100_000


# --------------------------------------------------------------------------------------------
# Rows -> states (shared by both sources)


class GridView:
    """Stored ``vp_grid`` rows -> the view's columns, through :func:`vpbatch.sql.grid_select`.

    One in-memory DuckDB connection per stream (one thread, so row order is kept); the build's
    layout and parameters come from its manifest (or, for a raw run, the engine's config).
    ~15-30 ms a call whatever the row count: the sources use
    :class:`~vpbatch.serve.view_numpy.NumpyGridView` (the same tables, tested); this is its
    reference.
    """

    _TABLE: Final = "vpbatch_stream_grid"

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.layout, self.params = sql.grid_parameters(manifest)
        self.schema = grid_view_schema().remove_metadata()
        self._con = sql.new_connection()
        self._con.execute("SET threads = 1")
        self._select: str | None = None

    def __call__(self, stored: pa.Table) -> pa.Table:
        self._con.register(self._TABLE, stored)
        try:
            if self._select is None:
                self._select = sql.grid_select(self._con, "vpbatch_stream_params", self.layout,
                                               self.params, f"SELECT * FROM {self._TABLE}")
            out = self._con.sql(self._select).to_arrow_table()
        finally:
            self._con.unregister(self._TABLE)
        return out.select(self.schema.names).cast(self.schema)

    def close(self) -> None:
        self._con.close()


def throttle(batches: Iterator[list[State]], throttle_ns: int) -> Iterator[list[State]]:
    """Keep the last state of each ``throttle_ns`` bin of event time (trailing edge).

    Counters of a skipped state (records, aggressor volume) are added to the state kept, so
    totals do not depend on the throttle. Bins of the build's sampling or finer pass through.
    """
    pending: State | None = None
    for batch in batches:
        out = []
        for state in batch:
            if pending is not None:
                if state.ts_ns // throttle_ns == pending.ts_ns // throttle_ns:
                    for name in ADDITIVE_FIELDS:
                        state.snapshot[name] += pending.snapshot[name]
                else:
                    out.append(pending)
            pending = state
        yield out  # possibly empty: the consumer regains control after every batch
    if pending is not None:
        yield [pending]


# --------------------------------------------------------------------------------------------
# Sources


@dataclass
class SourceInfo:
    """What ``runtime_config`` says about a source."""

    source: str
    product: Product
    day: dt.date
    config: EngineConfig
    first_ns: int
    last_ns: int | None
    extra: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """A built day read from the lake (:class:`LakeSource`) or computed from the raw file by
    the build's own engine (:class:`RawSource`): what a stream needs of either."""

    info: SourceInfo

    def states(self, from_ns: int | None) -> Iterator[list[State]]:
        """Unthrottled state batches in event order from the first state at or after
        ``from_ns`` (None: the beginning)."""
        ...

    def close(self) -> None:
        ...


def _config(data: dict[str, Any]) -> EngineConfig:
    data = dict(data)
    forces = ForceCoefficients(**data.pop("forces", {}))
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    return EngineConfig(forces=forces, **{k: v for k, v in data.items() if k in names})


class LakeSource:
    """A complete ``vp_snapshot``/``vp_grid`` build, replayed in event order.

    The build is read through a :class:`~vpbatch.serve.lake_cache.LakeCache`: every source of
    the same partition shares one :class:`~vpbatch.serve.lake_cache.SharedLake` (its decoded
    chunks, its timestamps, its pyarrow readers); :meth:`close` releases it.
    """

    def __init__(self, snapshot: Partition, grid: Partition, manifest: dict[str, Any],
                 lake: Lake | None = None, cache: LakeCache | None = None) -> None:
        config = _config(manifest.get("config", {}))
        product = Product(**manifest["product"])
        self.rows = 2 * config.K + 1
        self._cache = cache if cache is not None else default_cache()
        key = _lake_key(snapshot, grid, manifest)
        self._shared: SharedLake | None = self._cache.acquire(
            key, lambda: SharedLake(self._cache, key, snapshot, grid, self.rows, lake))
        shared = self._shared
        self.view = shared.view
        params = manifest.get("parameters", {})
        self.info = SourceInfo("lake", product, dt.date.fromisoformat(snapshot.dt), config,
                               int(shared.ts[0]), int(shared.ts[-1]),
                               {"states": shared.num_states,
                                "build_start_time": params.get("start_time"),
                                "build_end_time": params.get("end_time")})

    def first_row_at(self, ns: int) -> int:
        """Index of the first state with ``ts_event >= ns`` (number of states if none)."""
        return self._open().first_row_at(ns)

    def states(self, from_ns: int | None) -> Iterator[list[State]]:
        shared = self._open()
        return shared.read(0 if from_ns is None else shared.first_row_at(from_ns))

    def _open(self) -> SharedLake:
        if self._shared is None:
            raise InputError("the lake source is closed")
        return self._shared

    def close(self) -> None:
        """Release the shared partition (once; the last source of it frees its chunks)."""
        shared, self._shared = self._shared, None
        if shared is not None:
            self._cache.release(shared)


def _lake_key(snapshot: Partition, grid: Partition, manifest: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two sources the same build: the files, the build's digest and, on a folder
    lake, the files' identity (a rebuild in place is another build)."""
    stats = []
    for part in (snapshot, grid):
        if part.local:
            try:
                st = part.part_file.stat()
            except OSError as exc:
                raise InputError(f"{part.part_file}: {exc.strerror or exc}") from None
            stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return (snapshot.part_url, grid.part_url, build_digest(manifest), tuple(stats))


_DEFAULT_CACHE: LakeCache | None = None


def default_cache() -> LakeCache:
    """The process's cache for sources opened without one (``create_app`` makes its own)."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = LakeCache()
    return _DEFAULT_CACHE


class RawSource:
    """The raw file through ``build``'s reader, engine and phases (book cache included)."""

    def __init__(self, lake: Path, product: Product, day: dt.date, config: EngineConfig,
                 start_time: dt.time | None, end_time: dt.time | None, warmup_ns: int,
                 extra: dict[str, Any] | None = None) -> None:
        self._req = BuildRequest(symbol=product.symbol, day=day, lake=lake,
                                 start_time=start_time, end_time=end_time, warmup_ns=warmup_ns,
                                 config=config, chunk_records=RAW_CHUNK_RECORDS)
        self.rows = 2 * config.K + 1
        self.view = NumpyGridView({"config": config.to_dict(),
                                   "writer": {"grid_layout": GRID_LAYOUT}})
        # Opening validates everything (file, symbol, times) before any engine work.
        self._stream: StateStream | None = StateStream(self._req)
        first, last = self._stream.data_span_ns
        self.info = SourceInfo("raw", self._stream.product, day, config, first, last,
                               {"file": self._stream.path.name, **(extra or {})})

    def states(self, from_ns: int | None) -> Iterator[list[State]]:
        req = self._req
        if from_ns is not None and req.start_time is not None \
                and from_ns < et_ns(self.info.day, req.start_time):
            # Before the first emitted state: run the phases again from the new start.
            start = dt.datetime.fromtimestamp(from_ns / NS_PER_SECOND, tz=NEW_YORK).time()
            req = dataclasses.replace(req, start_time=start)
            self._close_stream()
        stream = self._stream if self._stream is not None and req is self._req \
            else StateStream(req)
        self._stream = None
        try:
            for emitted in stream:
                if not len(emitted.snapshots):
                    yield []  # fast-forward and warm-up: the stream may stop here
                    continue
                snaps = emitted.snapshots
                times = state_times(emitted.grid["event_id"], snaps["event_id"],
                                    snaps["ts_event"])
                states = to_states(snapshots_to_arrow(snaps),
                                   self.view(grid_to_arrow(emitted.grid, times)), self.rows)
                if from_ns is not None:
                    states = [s for s in states if s.ts_ns >= from_ns]
                yield states
        finally:
            stream.close()

    def close(self) -> None:
        """Close the open run (a new ``states`` call opens another) and the view."""
        self._close_stream()
        self.view.close()

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


# --------------------------------------------------------------------------------------------
# Resolution against the lake


def _partition(lake: Lake, table: str, product_type: str, symbol: str,
               day: dt.date) -> Partition | None:
    for part in list_partitions(lake, table):
        if (part.product_type, part.symbol, part.dt) == (product_type, symbol, day.isoformat()):
            return part
    return None


def built_days(lake: Path | str | Lake) -> list[Partition]:
    """``vp_snapshot`` partitions whose build is complete (``vp_grid`` of the same build)."""
    grids = {(p.product_type, p.symbol, p.dt) for p in list_partitions(lake, "vp_grid")}
    return [part for part in list_partitions(lake, "vp_snapshot")
            if (part.product_type, part.symbol, part.dt) in grids]


def _missing(lake: Lake, req: StreamRequest) -> str:
    days = sorted({p.dt for p in built_days(lake) if p.symbol == req.symbol})
    hint = (f"built days of {req.symbol}: {', '.join(days[-10:])}" if days else
            f"no builds of {req.symbol} in the lake")
    return (f"no complete build of {req.symbol} for {req.day.isoformat()} ({hint}) and no raw "
            f"file for it")


def open_source(lake: Path | str | Lake, req: StreamRequest,
                cache: LakeCache | None = None) -> Source:
    """The source of a validated request, checked against the lake's partitions and files.

    ``source=None`` means the lake when the day is built, else the raw file (a lake folder
    only: on an object store a day streams once it is built).

    Raises
    ------
    ConfigError, InputError, SymbolError
        Unknown symbol/day, a product type that does not match, times outside the data.
    """
    lake = lake if isinstance(lake, Lake) else open_lake(lake)
    product = resolve_product(req.symbol)
    if req.product_type is not None and req.product_type != product.product_type:
        raise ConfigError(f"product_type: {req.symbol} is {product.product_type}, "
                          f"not {req.product_type}")
    built = is_complete(lake, product, req.day, CORE_TABLES)
    snap = _partition(lake, "vp_snapshot", product.product_type, product.symbol, req.day) \
        if built else None
    grid = _partition(lake, "vp_grid", product.product_type, product.symbol, req.day) \
        if built else None
    manifest = partition_manifest(snap) if snap is not None else None
    source = req.source or ("lake" if snap is not None else "raw")
    if source == "lake":
        if snap is None or grid is None or manifest is None:
            raise InputError(_missing(lake, req).replace(" and no raw file for it", "")
                             + "; build it, or use source=raw")
        lake_source = LakeSource(snap, grid, manifest, lake, cache)
        try:
            _check_times(lake_source.info, req)
        except BaseException:
            lake_source.close()
            raise
        return lake_source
    if not lake.local:
        raise InputError(_missing(lake, req).replace(" and no raw file for it", "")
                         + f"; source=raw reads a lake folder, not {lake.url}: build the day "
                         "into the store")
    try:
        find_raw_file(lake.folder, product, req.day)
    except InputError:
        if manifest is not None:
            raise InputError(f"no raw file of {req.symbol} for {req.day.isoformat()} in the "
                             "lake; the built day streams with source=lake") from None
        raise InputError(_missing(lake, req)) from None
    config = _config(manifest["config"]) if manifest else EngineConfig(
        sample_ns=min(req.throttle_ns, EngineConfig().sample_ns))
    params = manifest.get("parameters", {}) if manifest else {}
    start, end = req.start_time, req.end_time
    built_start = params.get("start_time")
    if built_start is not None:
        # Start where the build started, so the states equal the lake's (then skip ahead).
        if start is None or start >= dt.time.fromisoformat(built_start):
            start = dt.time.fromisoformat(built_start)
        if end is None and params.get("end_time"):
            end = dt.time.fromisoformat(params["end_time"])
    warmup = int(params.get("warmup_ns") or DEFAULT_WARMUP_NS)
    raw = RawSource(lake.folder, product, req.day, config, start, end, warmup,
                    {"built": manifest is not None})
    return raw


def _check_times(info: SourceInfo, req: StreamRequest) -> None:
    if req.start_time is None or info.last_ns is None:
        return
    start = et_ns(req.day, req.start_time)
    if start > info.last_ns:
        last = dt.datetime.fromtimestamp(info.last_ns / NS_PER_SECOND, tz=NEW_YORK)
        raise ConfigError(f"start_time: {req.start_time:%H:%M:%S} ET is after the last state "
                          f"of {req.symbol} {req.day} ({last:%H:%M:%S} ET)")
