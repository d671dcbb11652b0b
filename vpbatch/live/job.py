"""One symbol of a live session: ``build``'s job (engine, phases, sampling, writer) fed from
the connection's queue instead of a file.

The only live-specific steps are where the records come from and when a ``25ms`` time bin is
closed: a file closes the last bin at its end, a live feed when a heartbeat's clock has passed
the bin's end by ``live_grace`` (SPEC §14). A record that arrives for a bin already closed
that way is applied and counted in :attr:`LiveJob.late`.
"""

from __future__ import annotations

import datetime as dt
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, cast

import numpy as np

from vpbatch.book.dtypes import F_SNAPSHOT, MBO_DTYPE
from vpbatch.build.pipeline import BuildJob
from vpbatch.build.request import BuildRequest
from vpbatch.ingest.dbn_file import FileMetadata
from vpbatch.ingest.reader import MboSource, Selection, select_records
from vpbatch.products import Product

#: Items of a symbol's queue: an event's records (bytes, receipt time), a heartbeat clock
#: (``HEARTBEAT``, ts), or ``END``.
HEARTBEAT: Final = "heartbeat"
END: Final = None
#: Records per engine batch at most (the queue is drained in one go up to this).
MAX_BATCH_RECORDS: Final = 65_536
Item = tuple[bytes, int] | tuple[str, int] | None


class LiveSource:
    """What :class:`BuildJob` asks of its source, for a live subscription."""

    def __init__(self, name: str, path: Path, metadata: FileMetadata, selection: Selection
                 ) -> None:
        self.name = name
        self.path = path
        self.metadata = metadata
        self.selection = selection
        self.sha = ""

    def resolve(self, symbol: str | None = None, publisher_id: int | None = None) -> Selection:
        return self.selection

    def sha256(self) -> str:
        return self.sha

    def scan(self, on_chunk: Callable[[np.ndarray], None] | None = None) -> None:
        """Nothing to rescan: the error message that asks for it names the live counts."""


class LiveJob(BuildJob):
    """``BuildJob`` over a queue of live events (see the module docstring)."""

    def __init__(self, req: BuildRequest, product: Product, day: dt.date, source: LiveSource,
                 items: queue.SimpleQueue[Item], grace_ns: int,
                 first: tuple[bytes, int] | None = None) -> None:
        super().__init__(req, product, day, cast(MboSource, source), trust_cache=False)
        self._items = items
        self._grace_ns = grace_ns
        self.received_ns = 0  # receipt time of the oldest event in the batch being processed
        self.late = 0
        self.other_publisher_records = 0
        self.flushed_bins = 0
        self.heartbeat_ns = 0
        self._closed_end: int | None = None
        self._ended = False
        self._first = first
        #: Bytes of records taken from the queue (the producer compares it with what it put).
        self.consumed_bytes = 0 if first is None else len(first[0])

    @property
    def ended(self) -> bool:
        """The queue's ``END`` was reached (else the run stopped at ``--end-time``)."""
        return self._ended

    def chunks(self) -> Iterator[np.ndarray]:
        selection = self.selection
        pending: list[bytes] = []
        received = 0
        while True:
            if self._first is not None:
                item: Item = self._first
                self._first = None
            else:
                item = self._items.get()
            batch = [item]
            count = 0
            while count < MAX_BATCH_RECORDS:
                try:
                    batch.append(self._items.get_nowait())
                except queue.Empty:
                    break
                count += 1
            for entry in batch:
                if entry is END or entry[0] == HEARTBEAT:
                    if pending:
                        yield self._records(pending, received, selection)
                        pending = []
                    if entry is END:
                        self._ended = True
                        return
                    yield from self._heartbeat(int(entry[1]))
                    continue
                data, at = cast(tuple[bytes, int], entry)
                if not pending:
                    received = at
                pending.append(data)
                self.consumed_bytes += len(data)
            if pending:
                yield self._records(pending, received, selection)
                pending = []

    def _records(self, pending: list[bytes], received: int, selection: Selection) -> np.ndarray:
        raw = np.frombuffer(b"".join(pending), MBO_DTYPE)
        records = select_records(raw, selection)
        self.received_ns = received
        self.records_read += len(raw)
        self.other_publisher_records += len(raw) - len(records)
        if self._closed_end is not None and len(records):
            live = records[(records["flags"] & F_SNAPSHOT) == 0]
            early = int(np.count_nonzero(live["ts_event"] < np.uint64(self._closed_end)))
            self.late += early
            if early < len(live):
                self._closed_end = None
        return records

    def _heartbeat(self, ts_ns: int) -> Iterator[np.ndarray]:
        """A heartbeat's clock may close the pending time bin (yield nothing to drain it)."""
        self.heartbeat_ns = max(self.heartbeat_ns, ts_ns)
        if self.engine.flush_due(ts_ns, self._grace_ns):
            self.flushed_bins += 1
            self._closed_end = self.engine.pending_bin_end()
            self.received_ns = time.perf_counter_ns()
            yield np.zeros(0, MBO_DTYPE)
