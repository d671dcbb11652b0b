"""Decoded lake states shared by every stream of one built day.

Fifty viewers of the same day must not decode it fifty times: each would hold its own decoded
``vp_grid`` pages (~20-30 MB in pyarrow's pool) and its own frames, and fifty decoding threads
would starve the event loop of the GIL. Here each built partition (one
``vp_snapshot``/``vp_grid`` build) is opened once per process, as a :class:`SharedLake`, and
decoded in **chunks** of :data:`CHUNK_STATES` consecutive states (chunk ``i`` holds states
``[i*256, (i+1)*256)``): Parquet rows through the view
(:class:`~vpbatch.serve.view_numpy.NumpyGridView`) into encoded grid frames
(:func:`~vpbatch.serve.rows.to_states`). Every stream of the partition reads the same chunks,
whatever its start time, seeks or speed, so streams at different positions share what they
overlap.

* **Decoded once, in the decode threads.** Chunks are decoded only by the cache's
  :data:`DECODERS` decode threads, never on the event loop nor in the streams' threads (so
  decoding memory stays in a few threads' allocator heaps, and concurrent decodes are
  bounded). A stream that needs a chunk queues it and waits in its own worker thread; streams
  that need a chunk already queued or being decoded wait for that decode. A chunk a stream
  waits for goes before read-ahead.
* **Read-ahead.** After a stream takes chunk ``i``, chunk ``i + 1`` is queued for decoding
  ahead, while the chunks no stream is on leave room for it in the budget.
* **Readers copy what they change.** A chunk's states are never modified: a reader yields
  fresh :class:`~vpbatch.serve.protocol.State` objects with their own snapshot dict (the
  throttle and a slow client's buffer add counters into it) around the shared frame bytes.
  So a stream's frames are byte-identical to what it got from a private decoder.
* **Bounded memory.** A chunk a stream is on is *pinned*. Chunks no stream is on are kept up
  to :data:`DEFAULT_BUDGET_BYTES` (frames plus an estimate of the snapshot dicts): first out
  the chunks streams have left (least recently left first), then read-ahead nobody came for.
  Sequential decoding goes through *cursors* (pyarrow readers left where the last chunk
  ended, ~20-30 MB of decoded pages each): :data:`IDLE_CURSORS` idle ones are kept (least
  recently used first out); a chunk with no cursor at it takes the idle cursor of its
  partition that is cheapest to move forward, or opens one at its row group (the rows before
  it in the group are decoded and skipped).
* **Released when the last reader leaves.** When the last source of a partition closes, its
  chunks and cursors are dropped; once no partition is open, the freed memory goes back to
  the system (:func:`release_memory`: pyarrow's pool, in the closing thread and in each decode
  thread, since mimalloc collects per thread; glibc's ``malloc_trim`` for the frames'
  ``bytes``).

The process keeps one :class:`LakeCache` per app (``create_app``); :meth:`LakeCache.stats`
feeds ``/health``.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vpbatch.errors import InputError
from vpbatch.serve.protocol import State
from vpbatch.serve.rows import LAKE_BATCH_STATES, RowTaker, row_group_start, to_states
from vpbatch.serve.view_numpy import NumpyGridView
from vpbatch.store.fs import Lake
from vpbatch.store.partitions import Partition, partition_manifest

#: States per shared chunk (also the batch a reader yields).
CHUNK_STATES: Final = LAKE_BATCH_STATES
#: Bytes of decoded chunks no reader is on that a cache keeps.
DEFAULT_BUDGET_BYTES: Final = 64 << 20
#: Idle cursors (pyarrow readers, ~20-30 MB each) a cache keeps, least recently used first out.
IDLE_CURSORS: Final = 2
#: Estimated bytes of one state's snapshot dict (counted with its frame in a chunk's size).
SNAPSHOT_BYTES: Final = 2048
#: Decode threads of a cache (chunks decoded at once): the machine's two cores.
DECODERS: Final = 2
#: Queue priorities: a chunk a stream waits for, then read-ahead.
DEMAND, AHEAD = 0, 1
#: Seconds an idle decode thread sleeps between checks for memory to hand back.
_IDLE_POLL_S: Final = 0.25


@dataclass(eq=False)
class Chunk:
    """States ``[index * CHUNK_STATES, ...)`` of a partition, decoded (never modified)."""

    lake: SharedLake
    index: int
    states: list[State]
    nbytes: int
    pins: int = 0


@dataclass(eq=False)
class _Pending:
    """A chunk queued for decoding (``demanded`` once a stream waits for it)."""

    demanded: bool = False
    started: bool = False
    #: Streams blocked in :meth:`SharedLake.pin`: each is given a pin on the decoded chunk.
    waiters: int = 0
    chunk: Chunk | None = None
    error: BaseException | None = None


class _Cursor:
    """pyarrow readers of both files, positioned at the start of chunk ``index``."""

    def __init__(self, lake: SharedLake, index: int) -> None:
        self.index = index
        row = index * CHUNK_STATES
        self._files = [lake.parquet(lake.snapshot_file), lake.parquet(lake.grid_file)]
        snap_file, grid_file = self._files
        snap_rg, snap_skip = row_group_start(snap_file.metadata, row)
        grid_rg, grid_skip = row_group_start(grid_file.metadata, row * lake.rows)
        self.snaps = RowTaker(snap_file.iter_batches(
            batch_size=CHUNK_STATES, row_groups=range(snap_rg, snap_file.num_row_groups),
            use_threads=False), snap_skip)
        self.grids = RowTaker(grid_file.iter_batches(
            batch_size=CHUNK_STATES * lake.rows,
            row_groups=range(grid_rg, grid_file.num_row_groups), use_threads=False), grid_skip)
        self._rows = lake.rows

    def take(self) -> tuple[pa.Table | None, pa.Table | None]:
        """The next chunk's snapshot and grid rows (None, None after the last)."""
        self.index += 1
        snap = self.snaps.take(CHUNK_STATES)
        if snap is None:
            return None, None
        return snap, self.grids.take(snap.num_rows * self._rows)

    def close(self) -> None:
        self.snaps.close()
        self.grids.close()
        for pf in self._files:
            close = getattr(pf, "close", None)
            if close is not None:
                close()
        self._files = []


class SharedLake:
    """One built partition, opened once per process and read by all its streams."""

    def __init__(self, cache: LakeCache, key: Hashable, snapshot: Partition, grid: Partition,
                 rows: int, lake: Lake | None) -> None:
        self.cache = cache
        self.key = key
        self._lake = lake
        remote = lake is not None and not lake.local
        self.snapshot_file: Any = snapshot.part_url if remote else snapshot.part_file
        self.grid_file: Any = grid.part_url if remote else grid.part_file
        self.snapshot_url = snapshot.url
        self.view = NumpyGridView(partition_manifest(grid))
        self.rows = rows
        pf = self.parquet(self.snapshot_file)
        meta = pf.metadata
        if meta.num_rows == 0:
            raise InputError(f"{snapshot.url}: the build has no states")
        ts = pf.read(columns=["ts_event"]).column(0).cast(pa.int64())
        #: ``ts_event`` of every state (int64 ns): start times and seeks look rows up here.
        self.ts: np.ndarray = ts.to_numpy()
        #: First state of each ``vp_snapshot`` row group.
        self._group_starts = np.cumsum([0] + [meta.row_group(i).num_rows
                                              for i in range(meta.num_row_groups)])
        self.num_states = int(meta.num_rows)
        self.num_chunks = -(-self.num_states // CHUNK_STATES)
        self._grid_meta = self.parquet(self.grid_file).metadata
        #: Open sources of this partition (:meth:`LakeCache.acquire`/``release``).
        self.refs = 0
        self.closed = False
        self.chunks: dict[int, Chunk] = {}
        self._pending: dict[int, _Pending] = {}
        self._cursors: list[_Cursor] = []
        #: Largest chunk so far (the read-ahead's estimate).
        self.chunk_bytes = 0

    # -- files ---------------------------------------------------------------------------------

    def parquet(self, where: Any) -> pq.ParquetFile:
        """A Parquet file of the build: a path, or on an object store ranged reads."""
        if self._lake is None or self._lake.local:
            return pq.ParquetFile(where)
        return pq.ParquetFile(self._lake.open_input(where))

    def first_row_at(self, ns: int) -> int:
        """Index of the first state with ``ts_event >= ns`` (number of states if none): in the
        first row group whose last state is at or after ``ns``, the states before ``ns``."""
        for start, end in zip(self._group_starts[:-1], self._group_starts[1:], strict=True):
            ts = self.ts[start:end]
            if len(ts) and ts[-1] >= ns:
                return int(start) + int((ts < ns).sum())
        return self.num_states

    # -- readers -------------------------------------------------------------------------------

    def read(self, row: int) -> Iterator[list[State]]:
        """State batches from state ``row`` on, chunk by chunk (each a fresh copy)."""
        index, offset = divmod(row, CHUNK_STATES)
        chunk: Chunk | None = None
        try:
            while index < self.num_chunks:
                pinned = self.pin(index)
                if chunk is not None:
                    self.unpin(chunk)
                chunk = pinned
                self.read_ahead(index + 1)
                yield [State(s.ts_ns, s.event_id, dict(s.snapshot), s.grid)
                       for s in chunk.states[offset:]]
                offset = 0
                index += 1
        finally:
            if chunk is not None:
                self.unpin(chunk)

    def pin(self, index: int) -> Chunk:
        """Chunk ``index``, pinned: from the cache, or decoded in a decode thread while this
        thread waits (with the other streams waiting for it)."""
        cache = self.cache
        with cache.cond:
            chunk = self.chunks.get(index)
            if chunk is not None:
                cache.hit(chunk)
                return chunk
            pending = self._pending.get(index)
            if pending is None:
                pending = self._pending[index] = _Pending()
            if not pending.demanded:  # (read-ahead queued it behind demands: queue it again)
                pending.demanded = True
                cache.submit(DEMAND, self._decode, index, pending)
            pending.waiters += 1
            while pending.chunk is None and pending.error is None:
                cache.cond.wait()
            if pending.chunk is None:
                raise pending.error or InputError(f"chunk {index} was not decoded")
            return pending.chunk  # pinned for each waiter by the decode

    def unpin(self, chunk: Chunk) -> None:
        with self.cache.cond:
            self.cache.unpin(chunk)

    def read_ahead(self, index: int) -> None:
        """Queue chunk ``index`` behind the demanded ones, unless cached, queued, or the
        chunks nobody is on leave no room for it."""
        cache = self.cache
        if index >= self.num_chunks or not cache.prefetch:
            return
        with cache.cond:
            if self.closed or index in self.chunks or index in self._pending \
                    or not cache.room_ahead(self.chunk_bytes):
                return
            pending = self._pending[index] = _Pending()
            cache.ahead_queued += self.chunk_bytes
            cache.submit(AHEAD, self._decode, index, pending, self.chunk_bytes)

    # -- decoding (decode threads) -------------------------------------------------------------

    def _decode(self, index: int, pending: _Pending, ahead_bytes: int = 0) -> None:
        cache = self.cache
        with cache.cond:
            cache.ahead_queued -= ahead_bytes
            if pending.started or self._pending.get(index) is not pending:
                return  # decoded already (queued twice), or the partition was closed
            pending.started = True
        try:
            states = self._decode_states(index)
        except BaseException as exc:
            with cache.cond:
                pending.error = exc
                if self._pending.get(index) is pending:
                    del self._pending[index]
                cache.cond.notify_all()
            return
        nbytes = sum(len(s.grid) for s in states) + SNAPSHOT_BYTES * len(states)
        with cache.cond:
            chunk = Chunk(self, index, states, nbytes, pins=pending.waiters)
            pending.chunk = chunk
            if self._pending.get(index) is pending:
                del self._pending[index]
            self.chunk_bytes = max(self.chunk_bytes, nbytes)
            cache.add(chunk)
            cache.cond.notify_all()

    def _decode_states(self, index: int) -> list[State]:
        with self.cache.cond:
            cursor = self._take_cursor(index)
        try:
            if cursor is None:
                cursor = _Cursor(self, index)
            snap: pa.Table | None = None
            grid: pa.Table | None = None
            while cursor.index <= index:  # an idle cursor moves forward to the chunk
                snap, grid = cursor.take()
                if snap is None:
                    break
            if snap is None:
                raise InputError(f"{self.snapshot_url}: no state {index * CHUNK_STATES}")
            if grid is None:
                raise InputError(f"{self.grid_file}: ends before vp_snapshot")
            states = to_states(snap, self.view(grid), self.rows)
            self.cache.count_decode(len(states))
        except BaseException:
            if cursor is not None:
                cursor.close()
            raise
        with self.cache.cond:
            if not self.closed and cursor.index < self.num_chunks:
                self._cursors.append(cursor)
                surplus = self.cache.idle_cursor(cursor, self)
            else:
                surplus = [cursor]
        for old in surplus:
            old.close()
        return states

    def _take_cursor(self, index: int) -> _Cursor | None:
        """The idle cursor cheapest to move to chunk ``index`` (None: opening one is cheaper).

        Cost in grid rows decoded for nothing: a cursor at chunk ``c <= index`` skips
        ``(index - c)`` chunks; a new cursor skips the rows of its row group before the chunk.
        """
        fresh = row_group_start(self._grid_meta, index * CHUNK_STATES * self.rows)[1]
        best, cost = None, fresh
        for cursor in self._cursors:
            if cursor.index <= index:
                skip = (index - cursor.index) * CHUNK_STATES * self.rows
                if skip <= cost:
                    best, cost = cursor, skip
        if best is not None:
            self._cursors.remove(best)
            self.cache.busy_cursor(best)
        return best

    def _drop(self) -> list[_Cursor]:
        """Forget every chunk and cursor (the last reader left); the cursors to close."""
        self.closed = True
        for chunk in list(self.chunks.values()):
            self.cache.forget(chunk)
        self.chunks.clear()
        self._pending.clear()
        cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            self.cache.busy_cursor(cursor)
        return cursors


@dataclass
class _Counters:
    decodes: int = 0
    decoded_states: int = 0
    hits: int = 0
    evictions: int = 0
    opened: int = 0
    released: int = 0


class _DecodeThreads:
    """A few daemon threads running queued jobs by priority; each hands its allocator's free
    memory back to the system after :meth:`release` once the queue is empty."""

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[..., Any] | None, Any]] = \
            queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._generation = 0

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            while len(self._threads) < self._size:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"vpbatch-decode-{len(self._threads)}")
                thread.start()
                self._threads.append(thread)
        self._queue.put((priority, next(self._order), fn, args))

    def release(self) -> None:
        """Each thread collects its free memory once it has nothing queued."""
        with self._lock:
            self._generation += 1

    def close(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put((sys.maxsize, next(self._order), None, ()))

    def _run(self) -> None:
        released = self._generation
        while True:
            try:
                _, _, fn, args = self._queue.get(timeout=_IDLE_POLL_S)
            except queue.Empty:
                fn = args = None
            else:
                if fn is None:
                    return
                with contextlib.suppress(Exception):  # a job reports its own errors
                    fn(*args)
            if released != self._generation and self._queue.empty():
                released = self._generation
                release_memory()


class LakeCache:
    """The shared partitions of one server process, their chunks and their memory budget.

    Parameters
    ----------
    budget_bytes : int
        Decoded chunks no reader is on kept at most (pinned chunks are on top of it).
    prefetch : bool
        Decode the chunk after the one a reader takes ahead of time.
    release : bool
        Hand memory back to the system when no partition is open any more.
    decoders : int
        Decode threads (chunks decoded at once), :data:`DECODERS`.
    idle_cursors : int
        Idle pyarrow readers kept for the next chunk of their partition (:data:`IDLE_CURSORS`).
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, *, prefetch: bool = True,
                 release: bool = True, decoders: int = DECODERS,
                 idle_cursors: int = IDLE_CURSORS) -> None:
        self.budget_bytes = budget_bytes
        self.prefetch = prefetch
        self._release = release
        #: Guards every partition's chunks, pending decodes, cursors and the counters.
        self.cond = threading.Condition()
        self._lakes: dict[Hashable, SharedLake] = {}
        self._opening: dict[Hashable, threading.Lock] = {}
        #: Chunks no reader is on: left behind by readers, and read ahead but not yet read.
        self._behind: OrderedDict[Chunk, None] = OrderedDict()
        self._ahead: OrderedDict[Chunk, None] = OrderedDict()
        self.bytes = 0
        self.unpinned_bytes = 0
        #: Estimated bytes of read-ahead queued but not decoded yet.
        self.ahead_queued = 0
        self.idle_cursors = idle_cursors
        self._idle: OrderedDict[_Cursor, SharedLake] = OrderedDict()
        self.counters = _Counters()
        self._threads = _DecodeThreads(decoders)

    # -- partitions ----------------------------------------------------------------------------

    def acquire(self, key: Hashable, open_lake: Callable[[], SharedLake]) -> SharedLake:
        """The shared partition ``key`` (opened by ``open_lake`` if no stream has it open);
        every call needs one :meth:`release`."""
        with self.cond:
            shared = self._lakes.get(key)
            if shared is not None:
                shared.refs += 1
                return shared
            lock = self._opening.setdefault(key, threading.Lock())
        with lock:  # one opening per partition; other partitions open meanwhile
            try:
                with self.cond:
                    shared = self._lakes.get(key)  # opened while this call waited
                    if shared is not None:
                        shared.refs += 1
                        return shared
                shared = open_lake()
                with self.cond:
                    shared.refs += 1
                    self._lakes[key] = shared
                    self.counters.opened += 1
                    return shared
            finally:
                with self.cond:
                    if self._opening.get(key) is lock:
                        del self._opening[key]

    def release(self, shared: SharedLake) -> None:
        """One stream of ``shared`` is done; the last one drops its chunks and cursors."""
        with self.cond:
            shared.refs -= 1
            if shared.refs > 0:
                return
            if self._lakes.get(shared.key) is shared:
                del self._lakes[shared.key]
            cursors = shared._drop()
            self.counters.released += 1
            idle = not self._lakes
        for cursor in cursors:
            cursor.close()
        if self._release and idle:
            # mimalloc (pyarrow's default pool) collects a thread's own free pages: here and
            # in each decode thread, where the chunks were decoded.
            release_memory()
            self._threads.release()

    # -- chunks (called with ``cond`` held) ----------------------------------------------------

    def hit(self, chunk: Chunk) -> None:
        """A reader pins a cached chunk."""
        if chunk.pins == 0:  # a cached chunk no reader is on is behind or ahead
            if self._behind.pop(chunk, False) is False:
                del self._ahead[chunk]
            self.unpinned_bytes -= chunk.nbytes
        chunk.pins += 1
        self.counters.hits += 1

    def add(self, chunk: Chunk) -> None:
        """A decoded chunk, pinned by the readers that waited for it (or read ahead)."""
        if chunk.lake.closed:
            return
        chunk.lake.chunks[chunk.index] = chunk
        self.bytes += chunk.nbytes
        if chunk.pins == 0:
            self._ahead[chunk] = None
            self.unpinned_bytes += chunk.nbytes
            self._evict()

    def unpin(self, chunk: Chunk) -> None:
        chunk.pins -= 1
        if chunk.pins == 0 and chunk.lake.chunks.get(chunk.index) is chunk:
            self._behind[chunk] = None
            self.unpinned_bytes += chunk.nbytes
            self._evict()

    def forget(self, chunk: Chunk) -> None:
        """Drop a cached chunk of a closing partition."""
        if chunk.lake.chunks.get(chunk.index) is not chunk:
            return
        if chunk.pins == 0:
            if self._behind.pop(chunk, False) is False:
                del self._ahead[chunk]
            self.unpinned_bytes -= chunk.nbytes
        self.bytes -= chunk.nbytes

    def room_ahead(self, estimate: int) -> bool:
        """Whether a chunk of ``estimate`` bytes read ahead fits in the budget now."""
        return self.unpinned_bytes + self.ahead_queued + estimate <= self.budget_bytes

    def _evict(self) -> None:
        """Chunks left behind first (least recently left first), then unread read-ahead."""
        while self.unpinned_bytes > self.budget_bytes and (self._behind or self._ahead):
            chunk, _ = (self._behind or self._ahead).popitem(last=False)
            del chunk.lake.chunks[chunk.index]
            self.unpinned_bytes -= chunk.nbytes
            self.bytes -= chunk.nbytes
            self.counters.evictions += 1

    def idle_cursor(self, cursor: _Cursor, lake: SharedLake) -> list[_Cursor]:
        """``cursor`` of ``lake`` is idle; the least recently used idle cursors beyond
        :attr:`idle_cursors` (taken from their partitions) are returned to close."""
        self._idle[cursor] = lake
        surplus = []
        while len(self._idle) > self.idle_cursors:
            old, owner = self._idle.popitem(last=False)
            owner._cursors.remove(old)
            surplus.append(old)
        return surplus

    def busy_cursor(self, cursor: _Cursor) -> None:
        self._idle.pop(cursor, None)

    def count_decode(self, states: int) -> None:
        with self.cond:
            self.counters.decodes += 1
            self.counters.decoded_states += states

    # -- the decode threads --------------------------------------------------------------------

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a decode thread (lower ``priority`` first, then in order)."""
        self._threads.submit(priority, fn, *args)

    def warm(self) -> None:
        """Load the view's compiled kernel in a decode thread (numba's cache takes ~0.3-0.5 s
        the first time), so the first viewer does not wait for it."""
        self.submit(DEMAND, _quietly, warm_view)

    def close(self) -> None:
        """Stop the decode threads once they finish what is queued."""
        self._threads.close()

    # -- reporting -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What ``/health`` reports: open partitions, cached chunks and bytes, decodes."""
        with self.cond:
            c = self.counters
            return {"partitions": len(self._lakes),
                    "readers": sum(s.refs for s in self._lakes.values()),
                    "chunks": sum(len(s.chunks) for s in self._lakes.values()),
                    "bytes": self.bytes, "budget_bytes": self.budget_bytes,
                    "idle_cursors": len(self._idle),
                    "decodes": c.decodes, "decoded_states": c.decoded_states,
                    "hits": c.hits, "evictions": c.evictions}


def _quietly(fn: Callable[[], Any]) -> None:
    """``fn()``; an error only costs what ``fn`` would have saved (warming up)."""
    with contextlib.suppress(Exception):
        fn()


def warm_view(k: int = 50) -> None:
    """Turn one blank state of stored rows into its frame as a lake chunk does (pyarrow
    columns, read-only numpy views of them, the view's compiled kernel, the IPC writer): numba
    loads the kernel's specialisation from its cache now instead of at the first frame."""
    from vpbatch.config import EngineConfig
    from vpbatch.serve.protocol import grid_frames
    from vpbatch.store.schema import GRID_LAYOUT, grid_schema

    rows = 2 * k + 1
    columns = []
    for fld in grid_schema():
        if fld.name == "k":
            columns.append(pa.array(np.arange(rows, dtype=np.int32) - k))
        else:
            columns.append(pa.array(np.zeros(rows, np.int64)).cast(fld.type))
    stored = pa.table(columns, schema=grid_schema())
    view = NumpyGridView({"config": EngineConfig(K=k).to_dict(),
                          "writer": {"grid_layout": GRID_LAYOUT}})
    grid_frames(view(stored), rows)


def release_memory() -> None:
    """Hand freed memory back to the system: pyarrow's pool (mimalloc/jemalloc keep freed
    pages for reuse) and glibc's heaps (``malloc_trim``; frames are Python ``bytes``)."""
    pa.default_memory_pool().release_unused()
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return
