"""The engine facade: allocation, output buffers, table growth, book export/import.

The math lives in ``kernels.py``; this class only feeds it. The same object serves a batch
build (``stream`` over reader chunks), a notebook (``process`` then ``grid()``) and a live
adapter (``process`` one record at a time): one math path whatever the chunking.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from vpbatch.book import kernels
from vpbatch.book.borrow import kernel_array
from vpbatch.book.coldstart import compile_engine, stage_calls
from vpbatch.book.dtypes import (
    GRID_DTYPE,
    MBO_DTYPE,
    SNAPSHOT_DTYPE,
    as_kernel_records,
    copy_rows,
    read_only,
)
from vpbatch.book.hashtable import rehash
from vpbatch.book.mbp_layout import raw_columns
from vpbatch.book.state import (
    ANOMALY_NAMES,
    BOOK_FORMAT_VERSION,
    EMPTY_KEY,
    STATUS_DONE,
    STATUS_GROW,
    EngineState,
    Params,
    allocate_state,
    empty_table,
    make_params,
)
from vpbatch.config import EngineConfig
from vpbatch.errors import CacheError

#: States per output buffer before it is handed to the caller.
DEFAULT_BATCH_STATES = 512
#: ``GridSink``: called with (snapshot rows, their grid rows) of every drained batch; the
#: arrays are the engine's own buffers, valid only during the call.
GridSink = Callable[[np.ndarray, np.ndarray], None]
#: ``process_chunk`` compiled or loaded in this process (``coldstart.compile_engine`` ran).
_COMPILED = False
_COMPILING = threading.Lock()
#: Scalars carried by an exported book (everything else is rebuilt from the orders).
_BOOK_SCALARS = ("n", "t", "t0", "started", "consistent", "in_snapshot", "spot_defined", "spot",
                 "mid2", "last_ts_recv")


class Emitted(NamedTuple):
    """States written by one call: snapshot rows, their 2K+1 grid rows each, raw MBP rows."""

    snapshots: np.ndarray
    grid: np.ndarray
    mbp: np.ndarray


class Engine:
    """Order book + dense vacuum/pressure grid, driven by MBO record arrays.

    Parameters
    ----------
    config : formula and emission parameters, default ``EngineConfig()``.
    bucket : bucket size in fixed-point price units (1e-9), e.g. 250_000_000 for a 0.25 tick.
    tick : price increment in fixed-point units, default ``bucket``; used to walk levels.
    mbp_levels : book levels per side in MBP rows (0 = no MBP output).
    batch_states : states buffered before ``stream`` yields.
    """

    def __init__(self, config: EngineConfig | None = None, *, bucket: int,
                 tick: int | None = None, mbp_levels: int = 0,
                 batch_states: int = DEFAULT_BATCH_STATES, capacity: int = 1 << 16) -> None:
        self.config = config or EngineConfig()
        if bucket <= 0:
            raise ValueError(f"bucket must be > 0, was {bucket}")
        tick = bucket if tick is None else tick
        self.params: Params = make_params(self.config, bucket, min(tick, bucket), mbp_levels)
        self._st: EngineState = allocate_state(self.config, capacity)
        self._out = self._allocate_output(batch_states)
        self._grid_sink: GridSink | None = None

    # ------------------------------------------------------------------ feeding

    def stream(self, records: np.ndarray) -> Iterator[Emitted]:
        """Full engine over ``records``; yields emitted states in bounded batches."""
        self._set_mode(full=True)
        yield from self._run(as_kernel_records(records))

    def process(self, records: np.ndarray) -> Emitted:
        """Full engine over ``records``; every state emitted during the call."""
        return _concat(list(self.stream(records)), self.params.mbp_levels)

    def process_book_only(self, records: np.ndarray) -> None:
        """Fast path: book, clock and event counter only (fast-forward before warm-up)."""
        self._set_mode(full=False)
        for _ in self._run(as_kernel_records(records)):
            pass
        self._st.sc[0]["resync_due"] = True

    def finish(self) -> Emitted:
        """End of input: emit the pending trailing-edge state of the last time bin."""
        kernels.flush_pending(self._st, self.params, self._out)
        return self._drain()

    def flush_due(self, now_ns: int, grace_ns: int) -> bool:
        """Live: emit the pending time bin once ``now_ns`` is ``grace_ns`` past its end.

        A live feed has no end of file to close the last bin, so it closes a bin when the
        clock of a heartbeat has passed it (SPEC §14). The state is the one the next
        record of a later bin would have emitted; the caller drains it with ``stream`` of
        no records. Returns whether a state was emitted.
        """
        sc = self._st.sc[0]
        if not (sc["pending"] and sc["full"] and sc["emit"]):
            return False
        if now_ns < self.pending_bin_end() + grace_ns:
            return False
        kernels.flush_pending(self._st, self.params, self._out)
        return True

    def pending_bin_end(self) -> int:
        """End (ns, exclusive) of the time bin whose state is pending, or of the clock's bin."""
        sc = self._st.sc[0]
        prm = self.params
        last = int(sc["pending_bin"]) if sc["pending"] else (int(sc["t"]) - prm.epoch) \
            // prm.sample_ns
        return prm.epoch + (last + 1) * prm.sample_ns

    def _run(self, records: np.ndarray) -> Iterator[Emitted]:
        global _COMPILED
        records = kernel_records(records)
        if not _COMPILED:  # once per process: a cold cache compiles in two processes
            with _COMPILING:  # engines of several threads (live symbols) start one compile
                if not _COMPILED:
                    compile_engine((kernels.process_chunk,
                                    (self._st, self.params, records, 0, self._out)),
                                   stage_calls(self._st, self.params, self._out))
                    _COMPILED = True
        start = 0
        while True:
            start, status = kernels.process_chunk(self._st, self.params, records, start,
                                                  self._out)
            if status == STATUS_DONE:
                break
            if status == STATUS_GROW:
                self._grow()
            else:  # output buffer full
                yield self._drain()
        if self._out.counts[0] or self._out.counts[1]:
            yield self._drain()

    def send_grid_to(self, sink: GridSink | None, batch_states: int = 128) -> None:
        """Hand grid rows to ``sink`` instead of returning them (``Emitted.grid`` is empty).

        The sink reads the rows where the kernel wrote them: no copy of the 212-byte rows,
        and with ``batch_states`` small enough to stay in cache, no trip through memory
        either (a build converts them straight into its stored columns).
        """
        if self._out.counts[0] or self._out.counts[1]:
            raise RuntimeError("send_grid_to: states are waiting to be drained")
        self._grid_sink = sink
        self._out = self._allocate_output(batch_states)

    def _set_mode(self, *, full: bool) -> None:
        self._st.sc[0]["full"] = full

    # ------------------------------------------------------------------ phases and counters

    def set_emitting(self, emit: bool) -> None:
        """Warm-up runs the full engine without writing states (SPEC §10 phase 2)."""
        self._st.sc[0]["emit"] = emit
        if not emit:
            self._st.sc[0]["pending"] = False

    def reset_counters(self) -> None:
        """Start ``n_records``/``buy_volume``/``sell_volume`` afresh (at the emission start)."""
        for name in ("since_records", "since_buy", "since_sell"):
            self._st.sc[0][name] = 0

    # ------------------------------------------------------------------ inspection

    @property
    def event_count(self) -> int:
        """Records fed so far (the last ``event_id``)."""
        return int(self._st.sc[0]["n"])

    @property
    def clock(self) -> int:
        """Engine time, ns since the epoch (0 before the first non-snapshot record)."""
        return int(self._st.sc[0]["t"])

    @property
    def anomalies(self) -> dict[str, int]:
        return {name: int(v) for name, v in zip(ANOMALY_NAMES, self._st.anomalies, strict=True)}

    @property
    def kernel_state(self) -> EngineState:
        """The compiled kernels' state container, for diagnostics and for calling a kernel
        helper (``kernels.regime_score``, from a jitted function) on this engine's state.
        Reading it is safe; writing it bypasses every invariant the engine keeps."""
        return self._st

    @property
    def order_capacity(self) -> int:
        """Slots of the order table (it doubles before its load factor passes 0.7)."""
        return len(self._st.orders)

    @property
    def live_orders(self) -> int:
        return int(self._st.sc[0]["n_orders"])

    @property
    def off_tick_levels(self) -> int:
        """Live price levels off the tick grid (while any remain, level walks scan the table)."""
        return int(self._st.sc[0]["off_tick_levels"])

    def depth(self, side: str | int, price: int) -> int:
        """Resting size at ``price`` (fixed point) on side ``'B'``/``'A'`` (or their codes)."""
        code = ord(side) if isinstance(side, str) else int(side)
        index = kernels.book_side(code)
        if index < 0:
            raise ValueError(f"side must be 'B' or 'A', was {side!r}")
        return int(kernels.level_size(self._st, index, int(price)))

    def best_bid(self) -> int | None:
        """Best bid (fixed point), None when the bid side is empty."""
        sc = self._st.sc[0]
        return int(sc["best_bid"]) if sc["bid_levels"] else None

    def best_ask(self) -> int | None:
        """Best ask (fixed point), None when the ask side is empty."""
        sc = self._st.sc[0]
        return int(sc["best_ask"]) if sc["ask_levels"] else None

    def state(self) -> Emitted:
        """The current state evaluated now (1 snapshot row, 2K+1 grid rows); no side effects.

        Raises ValueError while spot is undefined (the book has never been two-sided).
        """
        if not self._st.sc[0]["spot_defined"]:
            raise ValueError("no state yet: the book has never been two-sided")
        out = self._allocate_output(1)
        saved = self._st.sc.copy()
        kernels.current_state(self._st, self.params, out)
        self._st.sc[:] = saved
        return Emitted(out.snap[:1].copy(), out.grid[: 2 * self.params.K + 1].copy(),
                       out.mbp[:0].copy())

    def grid(self) -> np.ndarray:
        """The dense window now: 2K+1 rows of ``GRID_DTYPE``, k ascending."""
        return self.state().grid

    # ------------------------------------------------------------------ book export/import

    def export_book(self) -> dict[str, np.ndarray]:
        """Resting orders + book scalars + anomaly counters as plain arrays (no pickle)."""
        orders = self._st.orders[self._st.orders["key"] != EMPTY_KEY]
        orders = orders[np.argsort(orders["key"], kind="stable")]
        sc = self._st.sc[0]
        return {
            "format_version": np.array([BOOK_FORMAT_VERSION], dtype=np.int64),
            "bucket": np.array([self.params.bucket], dtype=np.int64),
            "order_id": orders["key"].copy(),
            "side": orders["side"].copy(),
            "price": orders["price"].copy(),
            "size": orders["size"].copy(),
            "pending": orders["pending"].copy(),
            "scalars": np.array([int(sc[name]) for name in _BOOK_SCALARS], dtype=np.int64),
            "anomalies": self._st.anomalies.copy(),
        }

    def import_book(self, book: dict[str, np.ndarray]) -> None:
        """Replace this engine's book with an exported one; derivatives start fresh.

        Raises CacheError when the arrays are not a compatible exported book.
        """
        try:
            version = int(book["format_version"][0])
            bucket = int(book["bucket"][0])
            columns = [np.ascontiguousarray(book[k], dtype=np.int64)
                       for k in ("order_id", "side", "price", "size", "pending")]
            scalars = np.asarray(book["scalars"], dtype=np.int64)
            anomalies = np.asarray(book["anomalies"], dtype=np.int64)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise CacheError(f"book state is incomplete or malformed: {exc}") from None
        if version != BOOK_FORMAT_VERSION:
            raise CacheError(f"book format version {version}, expected {BOOK_FORMAT_VERSION}")
        if bucket != self.params.bucket:
            raise CacheError(f"book was built with bucket {bucket}, engine uses "
                             f"{self.params.bucket}")
        if len(scalars) != len(_BOOK_SCALARS) or len(anomalies) != len(ANOMALY_NAMES) \
                or len({len(c) for c in columns}) != 1:
            raise CacheError("book state arrays have inconsistent lengths")
        capacity = 1 << 16
        while capacity * 0.5 < len(columns[0]):
            capacity <<= 1
        self._st = allocate_state(self.config, capacity)
        kernels.rebuild_book(self._st, self.params, *columns)
        sc = self._st.sc
        for name, value in zip(_BOOK_SCALARS, scalars, strict=True):
            sc[0][name] = value
        self._st.anomalies[:] = anomalies
        sc[0]["resync_due"] = True

    # ------------------------------------------------------------------ internals

    def _allocate_output(self, states: int) -> kernels.Output:
        rows = 2 * self.params.K + 1
        mbp_cols = raw_columns(self.params.mbp_levels)
        mbp_rows = states * 8 if self.params.mbp_levels else 0
        return kernels.Output(
            snap=kernel_array(np.zeros(states, dtype=SNAPSHOT_DTYPE)),
            grid=kernel_array(np.zeros(states * rows, dtype=GRID_DTYPE)),
            mbp=np.zeros((mbp_rows, mbp_cols), dtype=np.int64),
            counts=np.zeros(2, dtype=np.int64),
        )

    def _drain(self) -> Emitted:
        n_snap, n_mbp = int(self._out.counts[0]), int(self._out.counts[1])
        rows = 2 * self.params.K + 1
        grid = self._out.grid[: n_snap * rows]
        if self._grid_sink is not None:
            self._grid_sink(self._out.snap[:n_snap], grid)
            grid = grid[:0]
        emitted = Emitted(copy_rows(self._out.snap[:n_snap]), copy_rows(grid),
                          copy_rows(self._out.mbp[:n_mbp]))
        self._out.counts[:] = 0
        return emitted

    def _grow(self) -> None:
        """Double every table that is getting full (the kernel paused before overfilling)."""
        st = self._st
        sc = st.sc[0]
        tables = {}
        for name, count in (("orders", sc["n_orders"]), ("levels", sc["n_levels"]),
                            ("buckets", sc["n_buckets"])):
            old = getattr(st, name)
            if count + 2 > 0.5 * len(old):
                new = empty_table(old.dtype, 2 * len(old))
                rehash(old, new)
                tables[name] = new
        self._st = st._replace(**tables)


def load_kernels() -> None:
    """Load the engine's compiled kernels now (numba's cache: ~0.35 s, once per process).

    A build calls it while its reader decodes the first chunk (``read_ahead``'s
    ``meanwhile``); a live session calls it before it connects, else it would pay it when its
    first record arrives, and every record queued meanwhile would wait (the first frames
    came 150-185 ms late). Once loaded, a call costs ~3 ms.
    """
    engine = Engine(EngineConfig(), bucket=1)
    engine.process_book_only(np.zeros(0, MBO_DTYPE))
    engine.finish()


def kernel_records(records: np.ndarray) -> np.ndarray:
    """MBO records as ``process_chunk`` takes them: C-contiguous and read-only.

    numba compiles a kernel once per argument type, and a read-only array is another type: a
    build's decoded chunks are writable, a live feed's bytes are not. One type means one
    compilation (and one cache entry) whatever the records come from.
    """
    return kernel_array(read_only(records))


def _concat(parts: list[Emitted], mbp_levels: int) -> Emitted:
    if not parts:
        cols = raw_columns(mbp_levels)
        return Emitted(np.zeros(0, SNAPSHOT_DTYPE), np.zeros(0, GRID_DTYPE),
                       np.zeros((0, cols), np.int64))
    return Emitted(*(np.concatenate([getattr(p, f) for p in parts]) for f in Emitted._fields))
