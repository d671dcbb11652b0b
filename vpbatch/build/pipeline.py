"""``vpbatch build``: reader -> engine (three phases, SPEC §10) -> Parquet partition.

``Phase.FAST_FORWARD`` replays the file from its start to ``start - warmup`` through the
book-only fast path (or loads that book from the cache), ``WARMUP`` runs the full engine
without writing, ``EMIT`` runs it and writes every emitted state, ``PAST_END`` stops at
``--end-time``. Without a start time the whole file is ``EMIT``. A build that would write no
state is an error, never an empty partition. The request types are in
:mod:`vpbatch.build.request`, the same run as a stream of states in :mod:`vpbatch.build.stream`.

With a fitted model (``build --model``, :mod:`vpbatch.build.scoring`), every engine batch of
emitted states is scored in the engine thread before it is queued for the writer, so the
model's columns are written with the rows they belong to, in the same partition attempt.

A lake on an object store: the day's raw file (and its definitions) is fetched into a local
temporary folder for the read (the reader decodes a local file, with its zstd frame walk and
read-ahead thread), removed when the build ends; the manifest names the object's URL. The
partition is written to the store through :class:`~vpbatch.store.writer.PartitionWriter`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

import numpy as np

from vpbatch.book.dtypes import F_SNAPSHOT, F_TOB, GRID_DTYPE, SNAPSHOT_DTYPE
from vpbatch.book.engine import Emitted, Engine, GridSink, load_kernels
from vpbatch.book.mbp_layout import records_from_raw
from vpbatch.book.state import BOOK_FORMAT_VERSION
from vpbatch.build.request import BuildRequest, BuildResult, check_request, infer_session_day
from vpbatch.clock import NS_PER_SECOND, describe_ns, et_ns
from vpbatch.errors import ConfigError, InputError, PartitionExists, VpbatchError, VpbatchWarning
from vpbatch.ingest.definitions import read_definition_tick
from vpbatch.ingest.read_ahead import read_ahead
from vpbatch.ingest.reader import MboSource, find_input, open_mbo, publisher_name
from vpbatch.memory import freeze_startup_objects, reuse_freed_memory
from vpbatch.products import Product, resolve_product
from vpbatch.progress import Progress
from vpbatch.store import cache
from vpbatch.store.files import file_sha256
from vpbatch.store.fs import Lake, ObjectInfo, open_lake
from vpbatch.store.grid_columns import StoredGridBuffer
from vpbatch.store.lake import find_definition_file, find_definition_location, find_raw_location
from vpbatch.store.partitions import InputFile, is_complete
from vpbatch.store.schema import scored_snapshots
from vpbatch.store.writer import PartitionWriter

#: Bytes queued for the writer thread before the engine waits (bounds memory: ~3 row groups).
MAX_PENDING_BYTES: Final = 96 << 20
#: States per engine batch in a build: the batch's grid rows (~1.4 MB at K = 50) are
#: converted to stored columns while still in cache.
BUILD_BATCH_STATES: Final = 64
#: Why a build was skipped.
SKIPPED: Final = "partition already built (use --force to rebuild)"
#: The same with ``--model``: a day built before is not scored unless it is built again.
SKIPPED_MODEL: Final = "partition already built (use --force to rebuild it with the model)"
#: An empty engine batch (yielded between fast-forward chunks so a stream can stop there).
_NO_STATES: Final = Emitted(np.zeros(0, SNAPSHOT_DTYPE), np.zeros(0, GRID_DTYPE),
                            np.zeros((0, 0), np.int64))


class Phase(IntEnum):
    """Where a build is in its record stream (SPEC §10); the order is the stream's order."""

    FAST_FORWARD = 1  # book only, up to start - warm-up (or a cached book)
    WARMUP = 2  # full engine, nothing written
    EMIT = 3  # full engine, every emitted state written
    PAST_END = 4  # records at or after --end-time: the stream stops


#: Timing name of the phase a run ended in.
_PHASE_TIMING: Final = {Phase.FAST_FORWARD: "fast_forward", Phase.WARMUP: "warmup",
                        Phase.EMIT: "emit", Phase.PAST_END: "emit"}


@dataclass
class _Phases:
    """Phase boundaries in engine time (ns); None = unbounded."""

    warm: int | None
    start: int | None
    end: int | None

    def split(self, records: np.ndarray, bound: int | None) -> int:
        """Index of the first non-snapshot record at or after ``bound`` (len if none)."""
        if bound is None or not len(records):
            return len(records)
        hit = (records["ts_event"] >= np.uint64(bound)) & ((records["flags"] & F_SNAPSHOT) == 0)
        idx = int(np.argmax(hit))
        return idx if hit[idx] else len(records)


class BuildJob:
    """One build's state: source, engine, writer, counters.

    ``trust_cache=False`` ignores the input's remembered sha256 (the book cache is still
    saved): the retry after a stale cache hint. ``origin`` is the input as stored in an
    object-store lake when ``source`` reads a local copy of it (the cache's sha256 hint is
    kept under the object's URL, size and time).
    """

    def __init__(self, req: BuildRequest, product: Product, day: dt.date, source: MboSource,
                 *, trust_cache: bool = True, origin: ObjectInfo | None = None) -> None:
        self.req = req
        self.origin = origin
        self.product = product
        self.day = day
        self.source = source
        self.selection = source.resolve(req.symbol, req.publisher_id)
        self.engine = Engine(req.config, bucket=product.bucket, tick=product.tick,
                             mbp_levels=req.mbp_levels)
        self.phases = self._phases()
        self.timings: dict[str, float] = {}
        self.cache_state = "off"
        self.trust_cache = trust_cache
        self.cached_sha256: str | None = None
        self._book_to_cache: dict[str, np.ndarray] | None = None
        self.emitted_states = 0
        # Parquet encoding releases the GIL and so does the kernel: write while computing.
        self._writes: deque[tuple[Future[None], int]] = deque()
        self._pending_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpbatch-writer")
        self.records_read = 0
        self.phase = Phase.FAST_FORWARD  # the phase the record stream ended in (``emitted``)
        self._phase_started = 0.0
        self._progress_ns = source.metadata.start
        self.tob_records = 0  # F_TOB: top-of-book restatements, not orders (DBEQ.BASIC XCIS/IEXG)
        # A fitted model's scores of each batch with states, in engine order (build --model).
        self.scorer = req.scorer.day(req.config, product.bucket) \
            if req.scorer is not None else None
        self._scores: deque[tuple[np.ndarray, np.ndarray]] = deque()
        #: The scores of the last engine batch (``vpbatch live`` hands them to viewers).
        self.last_scores: tuple[np.ndarray, np.ndarray] | None = None

    def _phases(self) -> _Phases:
        req = self.req
        if req.start_time is None:  # check_request: no --end-time without --start-time
            return _Phases(None, None, None)
        start = et_ns(self.day, req.start_time)
        end = et_ns(self.day, req.end_time) if req.end_time is not None else None
        meta = self.source.metadata
        span_end = meta.end
        if start < meta.start or (span_end is not None and start >= span_end):
            raise ConfigError(
                f"{self.source.name}: --start-time {req.start_time:%H:%M} ET on {self.day} is "
                f"outside the data ({describe_ns(meta.start)} to "
                f"{describe_ns(span_end) if span_end else 'end of file'})")
        return _Phases(max(start - req.warmup_ns, 0), start, end)

    # -- the record stream, cut into phases ----------------------------------------------

    def chunks(self) -> Iterator[np.ndarray]:
        reader = self.source.iter_selection(self.selection, chunk_records=self.req.chunk_records)
        for chunk in read_ahead(reader, name="vpbatch-reader", meanwhile=load_kernels):
            self.records_read += len(chunk)
            self.tob_records += int(np.count_nonzero(chunk["flags"] & F_TOB))
            yield chunk

    def emitted(self, bar: Progress) -> Iterator[Emitted]:
        """Feed every record to the engine, phase by phase; yield the engine's batches in order.

        Phase 3 batches carry the states ``build`` writes (warm-up ones carry none); the last
        batch is the trailing-edge state of the final time bin. ``build`` writes them and
        ``vpbatch serve --source raw`` streams them: one code path for both.
        """
        phase = Phase.FAST_FORWARD if self.phases.warm is not None else Phase.EMIT
        skip = self._load_cached_book() if phase == Phase.FAST_FORWARD else 0
        self._phase_started = time.perf_counter()
        if phase == Phase.EMIT:
            self.engine.set_emitting(True)
        for n, chunk in enumerate(self.chunks()):
            if n == 1:
                freeze_startup_objects()  # set up, and the first chunk loaded the kernels
            self._show_progress(bar, chunk)
            if skip:
                take = min(skip, len(chunk))
                skip -= take
                chunk = chunk[take:]
                if not len(chunk):
                    continue
            while len(chunk):
                if phase == Phase.FAST_FORWARD:
                    cut = self.phases.split(chunk, self.phases.warm)
                    self.engine.process_book_only(chunk[:cut])
                    yield _NO_STATES  # a point where a streaming consumer can stop
                    chunk = chunk[cut:]
                    if len(chunk):
                        self._save_cached_book()
                        self._phase_started = self._next_phase("fast_forward",
                                                               self._phase_started)
                        phase = Phase.WARMUP
                        self.engine.set_emitting(False)
                        bar.phase("warm-up")
                elif phase == Phase.WARMUP:
                    cut = self.phases.split(chunk, self.phases.start)
                    yield from self.engine.stream(chunk[:cut])
                    chunk = chunk[cut:]
                    if len(chunk):
                        self._phase_started = self._next_phase("warmup", self._phase_started)
                        phase = Phase.EMIT
                        self.engine.set_emitting(True)
                        self.engine.reset_counters()
                        bar.phase("emit")
                elif phase == Phase.EMIT:
                    cut = self.phases.split(chunk, self.phases.end)
                    yield from self.engine.stream(chunk[:cut])
                    if cut < len(chunk):
                        phase = Phase.PAST_END
                    chunk = chunk[:0]
            if phase == Phase.PAST_END:
                break
        if phase == Phase.FAST_FORWARD:
            self._save_cached_book()
        self.phase = phase
        yield self.engine.finish()

    def run(self, writer: PartitionWriter | None, bar: Progress, *,
            also: GridSink | None = None) -> None:
        """Write what phase 3 emits (see :meth:`emitted`).

        Grid rows go from the engine's buffer straight into stored columns, a row group at
        a time (``StoredGridBuffer``); the writer thread encodes while the engine computes.
        ``also`` sees every emitted batch too (``vpbatch live`` hands states to viewers), after
        the model scored it (:attr:`last_scores`).
        """
        sinks: list[GridSink] = []
        grid = None
        if writer is not None:
            write_group = writer.write_grid_group
            grid = StoredGridBuffer(writer.row_group_rows["vp_grid"], lambda columns: self._submit(
                _nbytes(columns), write_group, columns))
            sinks.append(grid.add)
        if self.scorer is not None:
            sinks.append(self._score)
        if also is not None:
            sinks.append(also)
        if len(sinks) == 1:
            self.engine.send_grid_to(sinks[0], BUILD_BATCH_STATES)
        elif sinks:
            def both(snapshots: np.ndarray, rows: np.ndarray) -> None:
                for sink in sinks:
                    sink(snapshots, rows)
            self.engine.send_grid_to(both, BUILD_BATCH_STATES)
        for emitted in self.emitted(bar):
            self._write(emitted, writer)
        if grid is not None:
            grid.flush()
        self._wait_writes(0)
        elapsed = time.perf_counter() - self._phase_started
        self.timings[_PHASE_TIMING[self.phase]] = round(elapsed, 6)
        if self.emitted_states == 0:
            raise InputError(self.nothing_emitted())

    def _score(self, snapshots: np.ndarray, rows: np.ndarray) -> None:
        """Score a drained batch (before it is yielded and written, see :meth:`_write`)."""
        if not len(snapshots):
            return
        assert self.scorer is not None
        scores = self.scorer.score(snapshots, rows)
        self._scores.append(scores)
        self.last_scores = scores

    def _show_progress(self, bar: Progress, chunk: np.ndarray) -> None:
        now = int(chunk["ts_event"][-1]) if len(chunk) else self._progress_ns
        if now > self._progress_ns:
            bar.update((now - self._progress_ns) / NS_PER_SECOND)
            self._progress_ns = now

    def nothing_emitted(self) -> str:
        """Why a run wrote no state (shared with StateStream)."""
        name = self.source.name
        if self.phase < Phase.EMIT:
            return (f"{name}: no records at or after --start-time {self.req.start_time:%H:%M} "
                    f"ET on {self.day}; nothing to write")
        if self.tob_records * 2 > self.records_read:
            return self._top_of_book_only()
        return (f"{name}: no state to write for {self.selection.symbol} (the book was never "
                "two-sided in the selected time range)")

    def _top_of_book_only(self) -> str:
        sel = self.selection
        full_depth = [p for p, (n, tob) in self._publisher_tob().items()
                      if p != sel.publisher_id and tob * 2 <= n]
        hint = (f"; use a full-depth publisher: --publisher "
                f"{' or '.join(f'{p} ({publisher_name(p)})' for p in full_depth)}" if full_depth
                else f"; this file has no full-depth publisher for {sel.symbol}")
        return (f"{self.source.name}: no state to write for {sel.symbol}: publisher "
                f"{sel.publisher_id} {publisher_name(sel.publisher_id)} is a top-of-book feed "
                f"({self.tob_records:,} of {self.records_read:,} records carry F_TOB: best bid/ask "
                f"restatements, not individual orders), so no order book can be rebuilt from "
                f"it{hint}")

    def _publisher_tob(self) -> dict[int, tuple[int, int]]:
        """``publisher_id -> (records, F_TOB records)`` of the instrument (a pass over the file)."""
        counts: dict[int, tuple[int, int]] = {}

        def tally(chunk: np.ndarray) -> None:
            mine = chunk[chunk["instrument_id"] == self.selection.instrument_id]
            for pid in np.unique(mine["publisher_id"]).tolist():
                flags = mine["flags"][mine["publisher_id"] == pid]
                n, tob = counts.get(pid, (0, 0))
                counts[pid] = (n + len(flags), tob + int(np.count_nonzero(flags & F_TOB)))

        self.source.scan(on_chunk=tally)
        return dict(sorted(counts.items()))

    def _next_phase(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - started, 6)
        return now

    def _write(self, emitted: Emitted, writer: PartitionWriter | None) -> None:
        """Queue a batch for the writer thread (in order); errors surface on the next wait."""
        self.emitted_states += len(emitted.snapshots)
        scores = self._scores.popleft() if self.scorer is not None and len(emitted.snapshots) \
            else None
        if writer is None or not (len(emitted.snapshots) or len(emitted.mbp)):
            return
        self._submit(_nbytes(emitted._asdict()), self._write_now, emitted, writer, scores)

    def _submit(self, nbytes: int, write: Callable[..., None], *args: Any) -> None:
        """Queue one write (in order); waits while the queue holds too many bytes."""
        self._writes.append((self._pool.submit(write, *args), nbytes))
        self._pending_bytes += nbytes
        self._wait_writes(MAX_PENDING_BYTES)

    def _write_now(self, emitted: Emitted, writer: PartitionWriter,
                   scores: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if len(emitted.snapshots):
            writer.write_snapshots(emitted.snapshots if scores is None
                                   else scored_snapshots(emitted.snapshots, *scores))
            if len(emitted.grid):
                writer.write_grid(emitted.grid)
        if self.req.mbp_levels and len(emitted.mbp):
            writer.write_mbp(records_from_raw(emitted.mbp, self.req.mbp_levels))

    def _wait_writes(self, keep_bytes: int) -> None:
        """Collect finished writes, then wait until at most ``keep_bytes`` are queued.

        Finished ones go at once: a live session queues a write per state for hours, and
        keeping their futures until 96 MB of states had queued held ~1 KB each.
        """
        while self._writes and (self._writes[0][0].done() or keep_bytes == 0
                                or self._pending_bytes > keep_bytes):
            call, nbytes = self._writes.popleft()
            self._pending_bytes -= nbytes
            call.result()

    def close(self) -> None:
        """Stop the writer thread (after an error, queued batches are dropped)."""
        for pending, _ in self._writes:
            pending.cancel()
        self._pool.shutdown(wait=True)

    # -- book cache --------------------------------------------------------------------------

    def _cache_key(self, sha256: str) -> cache.CacheKey:
        assert self.phases.warm is not None
        return cache.CacheKey(sha256, self.selection.instrument_id, self.selection.publisher_id,
                              self.phases.warm, BOOK_FORMAT_VERSION,
                              extra=f"bucket={self.product.bucket}", source=self.source.name)

    def _load_cached_book(self) -> int:
        """Records to skip (the fast-forward a cache hit replaces), 0 on a miss.

        The entry is found through the input's remembered sha256 (cache.known_sha256); the
        sha256 of the bytes actually read is checked against it in ``finish_input``.
        """
        if not self.req.use_cache:
            return 0
        self.cache_state = "miss"
        name, stat = self._input_identity()
        sha = cache.known_sha256(self.req.lake, name, cache=self.req.cache,
                                 stat=stat) if self.trust_cache else None
        hit = None if sha is None else cache.load(self.req.lake, self._cache_key(sha),
                                                  cache=self.req.cache)
        if hit is None:
            return 0
        arrays, _meta = hit
        try:
            self.engine.import_book(arrays)
        except VpbatchError:
            return 0
        self.cache_state = "hit"
        self.cached_sha256 = sha
        return self.engine.event_count

    def _input_identity(self) -> tuple[str, tuple[int, int] | None]:
        """The input as the cache's sha256 hints name it: a local path, or an object's URL
        with its size and time."""
        if self.origin is None:
            return str(self.source.path), None
        return self.origin.location, (self.origin.size, self.origin.mtime_ns)

    def _save_cached_book(self) -> None:
        """Keep the fast-forwarded book; it is saved once the input's sha256 is known."""
        if self.req.use_cache and self.cache_state == "miss":
            self._book_to_cache = self.engine.export_book()

    def finish_input(self) -> str:
        """After the read: the input's sha256 (no extra pass), cache check and save.

        Raises _StaleCacheHint when a cached book was loaded for other bytes (an edit that
        kept the file's size and mtime): the caller discards this build and runs it again.
        """
        sha = self.source.sha256()
        if self.cached_sha256 is not None and sha != self.cached_sha256:
            raise _StaleCacheHint(f"{self.source.name}: changed since its book was cached "
                                  f"(same size and mtime, other sha256); rebuilding")
        if not self.req.use_cache:
            return sha
        try:
            name, stat = self._input_identity()
            cache.remember_sha256(self.req.lake, name, sha, cache=self.req.cache, stat=stat)
            if self._book_to_cache is not None:
                cache.save(self.req.lake, self._cache_key(sha), self._book_to_cache,
                           {"symbol": self.selection.symbol, "day": self.day.isoformat()},
                           cache=self.req.cache)
        except (VpbatchError, OSError) as exc:
            warnings.warn(f"book cache not saved: {exc}", VpbatchWarning, stacklevel=2)
        return sha


def _nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in arrays.values())


class _StaleCacheHint(VpbatchError):
    """A loaded cache entry did not match the input's bytes (see ``BuildJob.finish_input``)."""


def product_and_day(req: BuildRequest) -> tuple[Product, dt.date]:
    """The product (tick from ``--definition`` if given) and session day of a request."""
    product = resolve_product(req.symbol)
    if req.definition is not None:
        tick = read_definition_tick(Path(req.definition), req.symbol)
        if tick is None:
            raise InputError(f"{Path(req.definition).name}: no min_price_increment for "
                             f"{req.symbol}")
        product = product.with_tick(tick)
    check_request(req)
    day = req.day
    if day is None:
        if req.path is None:
            raise ConfigError("--dt is required unless --path is given")
        day, _ = infer_session_day(Path(req.path))
    return product, day


def input_for(req: BuildRequest, product: Product,
              day: dt.date) -> tuple[Path, Product, Path | None]:
    """The MBO file, and the product with the tick of a downloaded definition beside it
    (a folder lake, or an explicit ``--path``; see :func:`fetched_input` for any lake)."""
    path = find_input(Path(req.lake), req.symbol, day, path=req.path)
    definition = Path(req.definition) if req.definition is not None else None
    if definition is None and req.path is None:
        # `vpbatch download` keeps the day's definitions beside the MBO file (docs/download.md).
        definition = find_definition_file(path)
        product, definition = _definition_tick(req, product, definition)
    return path, product, definition


def _definition_tick(req: BuildRequest, product: Product,
                     definition: Path | None) -> tuple[Product, Path | None]:
    tick = read_definition_tick(definition, req.symbol) if definition else None
    if tick is not None:
        return product.with_tick(tick), definition
    if definition is not None:
        warnings.warn(f"{definition.name}: {req.symbol} not defined; using the product "
                      f"table's tick", VpbatchWarning, stacklevel=4)
    return product, None


@dataclass
class Input:
    """The files one build reads, and what the manifest says about them."""

    path: Path  # the MBO file the reader reads (a local copy for an object-store lake)
    product: Product  # with the definition's tick
    definition: Path | None
    #: The MBO file and definition as stored in an object-store lake (None: local files).
    origin: ObjectInfo | None = None
    definition_origin: ObjectInfo | None = None

    def recorded(self, sha256: str) -> list[InputFile | Path]:
        """The manifest's ``inputs``: the MBO file with the sha256 computed while reading."""
        if self.origin is None:
            read = InputFile(str(self.path.resolve()), self.path.stat().st_size, sha256)
            return [read, *([self.definition] if self.definition else [])]
        out: list[InputFile | Path] = [InputFile(self.origin.location, self.origin.size, sha256)]
        if self.definition is not None and self.definition_origin is not None:
            out.append(InputFile(self.definition_origin.location, self.definition_origin.size,
                                 file_sha256(self.definition)))
        return out


@contextmanager
def fetched_input(req: BuildRequest, product: Product, day: dt.date) -> Iterator[Input]:
    """:func:`input_for` on any lake. On an object store the day's raw file (and its
    definition) are fetched into a temporary folder, removed when the block ends."""
    store = open_lake(req.lake)
    if store.local or req.path is not None:
        yield Input(*input_for(req, product, day))
        return
    location = find_raw_location(store, product, day)
    folder = Path(tempfile.mkdtemp(prefix="vpbatch-input-"))
    try:
        origin = store.info(location)
        path = folder / location.rsplit("/", 1)[-1]
        store.download(location, path)
        definition, definition_origin = None, None
        if req.definition is not None:
            definition = Path(req.definition)
        elif (found := find_definition_location(store, location)) is not None:
            definition_origin = store.info(found)
            definition = folder / found.rsplit("/", 1)[-1]
            store.download(found, definition)
            product, definition = _definition_tick(req, product, definition)
        yield Input(path, product, definition, origin, definition_origin)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build(req: BuildRequest) -> BuildResult:
    """Run one build (one symbol, one day) into the lake.

    Returns
    -------
    BuildResult
        ``status`` is ``"skipped"`` when the partition is already complete and not forced.

    Raises
    ------
    InputError, SymbolError, ConfigError, OutputError
        Bad input, unresolvable symbol, bad parameters, unwritable lake; nothing is left
        half-written.
    """
    try:
        return _build(req, trust_cache=True)
    except _StaleCacheHint as exc:
        warnings.warn(str(exc), VpbatchWarning, stacklevel=2)
        return _build(req, trust_cache=False)


def _build(req: BuildRequest, trust_cache: bool) -> BuildResult:
    """``build``; ``trust_cache=False`` ignores the remembered input sha256 (still saves)."""
    reuse_freed_memory()
    product, day = product_and_day(req)
    store = open_lake(req.lake)
    tables = ("vp_snapshot", "vp_grid") + (("mbp",) if req.mbp_levels else ())
    skipped = SKIPPED if req.scorer is None else SKIPPED_MODEL
    if not req.force and is_complete(store, product, day, tables):
        return BuildResult(req.symbol, day, "skipped", message=skipped)
    try:
        with fetched_input(req, product, day) as found:
            return _run(req, store, day, found, trust_cache)
    except PartitionExists:
        if not is_complete(store, product, day, tables):
            raise  # complete, but without a table asked for now (mbp): --force
        # built meanwhile by another build (which held the partition's lock)
        return BuildResult(req.symbol, day, "skipped", message=skipped)


def _run(req: BuildRequest, store: Lake, day: dt.date, found: Input,
         trust_cache: bool) -> BuildResult:
    path, product, definition = found.path, found.product, found.definition
    if req.scorer is not None:  # before anything is written (the bucket may be the definition's)
        req.scorer.check(req.config, product.bucket)
    started = time.perf_counter()
    source = open_mbo(path, definition=definition)
    job = BuildJob(req, product, day, source, trust_cache=trust_cache, origin=found.origin)
    params: dict[str, Any] = {
        "symbol": job.selection.symbol, "instrument_id": job.selection.instrument_id,
        "publisher_id": job.selection.publisher_id,
        "start_time": req.start_time.isoformat() if req.start_time else None,
        "end_time": req.end_time.isoformat() if req.end_time else None,
        "warmup_ns": req.warmup_ns if req.start_time else None,
        "timezone": "America/New_York", "mbp_levels": req.mbp_levels,
        "bucket": product.bucket, "tick": product.tick,
    }
    # The bar counts seconds of market time: its total costs no pass over the file.
    end = job.phases.end if job.phases.end is not None else source.metadata.end
    total = None if end is None else max(end - source.metadata.start, 0) / NS_PER_SECOND
    with Progress(total=total, enabled=req.progress, phase="fast-forward"
                  if job.phases.warm is not None else "emit", unit="s market") as bar, \
            PartitionWriter(store, product, day, config=req.config,
                            params=params, mbp_levels=req.mbp_levels or None,
                            force=req.force, model=None if req.scorer is None
                            else req.scorer.manifest()) as writer:
        try:
            job.run(writer, bar)
            # The manifest's input checksum is the one computed while reading.
            inputs = found.recorded(job.finish_input())
        finally:
            job.close()
        job.timings["total"] = round(time.perf_counter() - started, 6)
        writer.commit(inputs=inputs, params={"records": job.engine.event_count},
                      anomalies=job.engine.anomalies,
                      # the cache outcome is no parameter: a hit and a miss give equal data
                      timings={**job.timings, "cache": job.cache_state})
        rows = dict(writer.rows)
    partitions: dict[str, Path | str] = ({**writer.partitions} if store.local
                                         else {**writer.locations})
    return BuildResult(req.symbol, day, "built", partitions=partitions, rows=rows,
                       records=job.engine.event_count, anomalies=job.engine.anomalies,
                       timings=job.timings, cache=job.cache_state)


