"""A ``vpbatch live`` session: connection, one recording and one engine per symbol, viewers.

The main thread runs the connection; each symbol's records go, in the client's thread, to
its recording and its engine thread's queue (:class:`SymbolRun`), never waiting on either;
each engine thread runs ``build``'s job (:mod:`vpbatch.live.job`) and hands every emitted
batch to the symbol's viewers' feed, which keeps only the newest state. At the end (the
gateway ends the session, ``--end-time``, Ctrl-C or SIGTERM) the recordings are finished and
renamed, then the partitions are committed where ``vpbatch build --path <recording>`` would
put them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from vpbatch.book.dtypes import MBO_DTYPE
from vpbatch.book.engine import load_kernels
from vpbatch.build.request import DEFAULT_WARMUP_NS, BuildRequest
from vpbatch.clock import NS_PER_SECOND
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError, OutputError, VpbatchError
from vpbatch.ingest.databento_calls import API_KEY_ENV
from vpbatch.ingest.dbn_file import FileMetadata
from vpbatch.ingest.reader import Selection
from vpbatch.live.connection import Connection, ConnectionStats, LiveError
from vpbatch.live.job import END, HEARTBEAT, Item, LiveJob, LiveSource
from vpbatch.live.recorder import PART_SUFFIX, Recorder, recording_metadata
from vpbatch.products import Product, resolve_product
from vpbatch.progress import Progress
from vpbatch.store.lake import live_recording_name, raw_dir
from vpbatch.store.partitions import InputFile
from vpbatch.store.writer import PartitionWriter

if TYPE_CHECKING:
    from vpbatch.build.scoring import StateScorer
    from vpbatch.serve.live import LiveFeed

#: ``--warm`` choices (SPEC §14).
WARM_CHOICES: Final = ("replay", "snapshot", "none")
#: Default ``live_grace``: a time bin is closed this long after its end by a heartbeat's clock.
DEFAULT_GRACE_NS: Final = 50_000_000
DEFAULT_GATEWAY_PORT: Final = 13000
#: Seconds between two status updates (viewers, /health, the terminal).
STATUS_SECONDS: Final = 0.25


class StopRequested(BaseException):
    """SIGTERM: end the session cleanly (as Ctrl-C does)."""


@dataclass(frozen=True)
class LiveRequest:
    """Everything a live session needs (the CLI's options, checked)."""

    symbols: tuple[str, ...]
    day: dt.date
    lake: Path  # the recording's lake folder (a local stage of an object-store lake)
    dataset: str | None = None
    warm: str = "replay"
    start_time: dt.time | None = None
    end_time: dt.time | None = None
    warmup_ns: int = DEFAULT_WARMUP_NS
    config: EngineConfig = field(default_factory=EngineConfig)
    record: bool = True
    key: str | None = None
    gateway: str | None = None
    port: int = DEFAULT_GATEWAY_PORT
    heartbeat_s: int = 30
    grace_ns: int = DEFAULT_GRACE_NS
    publisher_id: int | None = None
    #: Where the partitions are committed when not ``lake`` (an object-store lake's URL).
    gold_lake: str | None = None
    #: A fitted model scoring every state (``--model``): in the viewers' frames and in the
    #: partitions' ``vp_snapshot``, as ``build --model`` of the recording would.
    scorer: StateScorer | None = None

    def api_key(self) -> str:
        key = self.key or os.environ.get(API_KEY_ENV)
        if not key:
            raise LiveError(f"{API_KEY_ENV} is not set (the live gateway needs your API key)")
        return key


@dataclass
class SymbolResult:
    """What one symbol's run did."""

    symbol: str
    status: str
    recording: Path | None = None
    partitions: dict[str, str] = field(default_factory=dict)  # table -> folder or URL
    rows: dict[str, int] = field(default_factory=dict)
    records: int = 0
    states: int = 0
    late: int = 0
    #: Records of the instrument from other publishers than the engine's (DBEQ, several
    #: venues): recorded, not in the engine; ``build --publisher`` selects the same one.
    other_publishers: int = 0
    publisher_id: int | None = None
    error: str | None = None


@dataclass
class LiveResult:
    """A finished session: per symbol, and the connection's account."""

    symbols: list[SymbolResult]
    stats: ConnectionStats
    latency: dict[str, dict[str, Any]]


def session_start_ns(day: dt.date) -> int:
    """Start of ``day``'s day file (00:00 UTC): where ``--warm replay`` replays from."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) \
        * NS_PER_SECOND


def check_live_request(req: LiveRequest) -> dict[str, Product]:
    """The products of the request; one dataset for all (one connection)."""
    if not req.symbols:
        raise ConfigError("--symbol: give at least one symbol")
    if req.warm not in WARM_CHOICES:
        raise ConfigError(f"--warm: must be one of {', '.join(WARM_CHOICES)}; was '{req.warm}'")
    if req.end_time is not None and req.start_time is None:
        raise ConfigError("--end-time needs --start-time")
    if not 5 <= req.heartbeat_s <= 1800:
        raise ConfigError(f"--heartbeat: must be 5 to 1800 seconds, was {req.heartbeat_s}")
    products = {s: resolve_product(s) for s in req.symbols}
    if req.scorer is not None:  # before connecting: a model that cannot score these states
        for product in products.values():
            req.scorer.check(req.config, product.bucket)
    datasets = {p.dataset for p in products.values()}
    if req.dataset is None and len(datasets) > 1:
        raise ConfigError(f"--symbol: the symbols are in several datasets "
                          f"({', '.join(sorted(datasets))}); one session is one dataset")
    return products


class SymbolRun:
    """One symbol: its recording, its engine thread, its viewers' feed."""

    def __init__(self, req: LiveRequest, symbol: str, product: Product, dataset: str,
                 start_ns: int, feed: LiveFeed | None, on_past_end: Callable[[], None],
                 on_failure: Callable[[], None]) -> None:
        self.req = req
        self.symbol = symbol
        self.product = product
        self.dataset = dataset
        self.start_ns = start_ns
        self.feed = feed
        self.items: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.path = raw_dir(req.lake, product) / live_recording_name(dataset, req.day, symbol)
        self.recorder = Recorder(self.path, recording_metadata(dataset, symbol, start_ns)) \
            if req.record else None
        self.recording: Future[InputFile | None] = Future()
        self.result = SymbolResult(symbol, "running",
                                   recording=self.path if req.record else None)
        self.job: LiveJob | None = None
        self.produced_bytes = 0
        self.closed = False
        self._on_past_end = on_past_end
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._main, name=f"vpbatch-live-{symbol}",
                                        daemon=True)
        self._thread.start()

    # -- Subscriber (the client's thread) -------------------------------------------------

    def event(self, data: bytes, received_ns: int) -> None:
        if self.recorder is not None:
            self.recorder.append(data)
        if not self.closed:
            self.produced_bytes += len(data)
            self.items.put((data, received_ns))

    def backlog(self) -> int:
        """Bytes of records queued for the engine (the connection pauses reading past a
        limit: the socket, not memory, absorbs a burst the engine cannot follow)."""
        if self.closed:
            return 0
        job = self.job
        return self.produced_bytes - (job.consumed_bytes if job is not None else 0)

    def other(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.append(data)

    def heartbeat(self, ts_ns: int) -> None:
        if not self.closed:
            self.items.put((HEARTBEAT, ts_ns))

    # -- the engine thread ----------------------------------------------------------------

    def _first_event(self) -> tuple[bytes, int] | None:
        while True:
            item = self.items.get()
            if item is END:
                return None
            if item[0] != HEARTBEAT:
                return item  # type: ignore[return-value]

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by finish()
            self.result.status = "failed"
            self.result.error = str(exc) if isinstance(exc, VpbatchError) else repr(exc)
            self.closed = True
            self._on_failure()  # no engine, no session: end it now, not at the gateway's end
        finally:
            self.closed = True
            if self.job is not None:
                self.job.close()

    def _run(self) -> None:
        first = self._first_event()
        if first is None:
            self.result.status = "no-data"
            self.result.error = f"live {self.symbol}: the session delivered no record"
            return
        head = np.frombuffer(first[0][:MBO_DTYPE.itemsize], MBO_DTYPE)[0]
        # The engine sees one publisher (SPEC §2): --publisher, else the first record's.
        publisher = self.req.publisher_id
        selection = Selection(int(head["instrument_id"]),
                              int(head["publisher_id"]) if publisher is None else publisher,
                              self.symbol)
        req = self.req
        meta = FileMetadata(self.dataset, "mbo", 3, self.start_ns, None, (self.symbol,),
                            "raw_symbol", "instrument_id", None, True, 0)
        source = LiveSource(f"live {self.symbol}", self.path, meta, selection)
        build_req = BuildRequest(symbol=self.symbol, day=req.day, lake=req.lake,
                                 path=self.path, start_time=req.start_time,
                                 end_time=req.end_time, warmup_ns=req.warmup_ns,
                                 config=req.config, force=True, use_cache=False,
                                 scorer=req.scorer)
        self.result.publisher_id = selection.publisher_id
        job = self.job = LiveJob(build_req, self.product, req.day, source, self.items,
                                 req.grace_ns, first=first)
        params: dict[str, Any] = {
            "symbol": self.symbol, "instrument_id": selection.instrument_id,
            "publisher_id": selection.publisher_id,
            "start_time": req.start_time.isoformat() if req.start_time else None,
            "end_time": req.end_time.isoformat() if req.end_time else None,
            "warmup_ns": req.warmup_ns if req.start_time else None,
            "timezone": "America/New_York", "mbp_levels": 0,
            "bucket": self.product.bucket, "tick": self.product.tick,
        }
        feed = self.feed
        if feed is not None:
            def also(snaps: np.ndarray, grid: np.ndarray) -> None:
                feed.publish(snaps, grid, job.received_ns,
                             model=job.last_scores if job.scorer is not None else None)
        elif not req.record:
            def also(snaps: np.ndarray, grid: np.ndarray) -> None:
                """Nobody takes the states: spare the engine copying its grid rows out."""
        else:
            also = None  # type: ignore[assignment]
        writer = PartitionWriter(req.gold_lake or req.lake, self.product, req.day,
                                 config=req.config, params=params, force=True,
                                 model=None if req.scorer is None else req.scorer.manifest()) \
            if req.record else None
        with writer if writer is not None else contextlib.nullcontext():
            job.run(writer, Progress(total=None, enabled=False), also=also)
            if not job.ended:
                self.closed = True
                self._on_past_end()
            recording = self.recording.result()
            self.result.records = job.records_read
            self.result.states = job.emitted_states
            self.result.late = job.late
            self.result.other_publishers = job.other_publisher_records
            if writer is not None and recording is not None:
                writer.commit(inputs=[recording], params={
                    "records": job.engine.event_count,
                    "live": {"late": job.late, "closed_by_heartbeat": job.flushed_bins}},
                    anomalies=job.engine.anomalies, timings=job.timings)
                self.result.partitions = dict(writer.locations)
                self.result.rows = dict(writer.rows)
        self.result.status = "built" if writer is not None else "watched"

    def finish(self, timeout: float | None = None) -> SymbolResult:
        """End of input: close the recording, let the engine commit; the symbol's result."""
        self.items.put(END)
        recording = None
        if self.recorder is not None:
            try:
                recording = self.recorder.close()
            except BaseException:
                self.recording.set_result(None)
                raise
        self.recording.set_result(recording)
        self._thread.join(timeout)
        return self.result


def _refuse_existing_recording(path: Path, symbol: str, day: dt.date) -> None:
    """Never write over an earlier session's recording (or the ``.part`` a crash left)."""
    for existing in (path, path.with_name(path.name + PART_SUFFIX)):
        if existing.exists():
            raise OutputError(
                f"{existing}: a recording of {symbol} on {day} exists from an earlier session; "
                f"build it with `vpbatch build --symbol {symbol} --path {existing}`, then move "
                f"it out of the lake's raw folder to record again")


def _install_sigterm(streaming: threading.Event) -> Callable[[], None]:
    """SIGTERM ends the session like Ctrl-C (while it streams; once the session is ending,
    the end goes on); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: FrameType | None) -> None:
        if streaming.is_set():
            streaming.clear()
            raise StopRequested

    previous = signal.signal(signal.SIGTERM, stop)

    def undo() -> None:
        signal.signal(signal.SIGTERM, previous)
    return undo


@contextlib.contextmanager
def _status_loop(runs: list[SymbolRun], connection: Connection,
                 report: Callable[[dict[str, Any]], None] | None) -> Iterator[None]:
    """Push the session's status to the feeds (and ``report``) every :data:`STATUS_SECONDS`."""
    done = threading.Event()
    started = time.monotonic()

    def loop() -> None:
        last_records, last_t = 0, time.monotonic()
        while not done.wait(STATUS_SECONDS):
            now = time.monotonic()
            stats = connection.stats
            rate = (stats.records - last_records) / max(now - last_t, 1e-9)
            last_records, last_t = stats.records, now
            fields = {"state": stats.state, "records": stats.records,
                      "records_per_s": round(rate), "reconnects": len(stats.reconnects),
                      "duplicates_dropped": stats.duplicates,
                      "gaps": [list(g) for g in stats.gaps], "heartbeats": stats.heartbeats,
                      "uptime_s": round(now - started, 1)}
            for run in runs:
                if run.feed is not None:
                    job = run.job
                    run.feed.session(**fields, late=job.late if job else 0,
                                     clock_ns=job.engine.clock if job else None)
            if report is not None:
                report(fields)

    thread = threading.Thread(target=loop, name="vpbatch-live-status", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def run_live(req: LiveRequest, *, feeds: dict[str, LiveFeed] | None = None,
             report: Callable[[dict[str, Any]], None] | None = None) -> LiveResult:
    """Run a live session until the gateway ends it, ``--end-time``, Ctrl-C or SIGTERM.

    Raises
    ------
    LiveError
        Authentication, entitlement or symbol errors (exit 3), raised after whatever was
        received has been recorded.
    ConfigError, OutputError
        Bad options; an unwritable lake.
    """
    products = check_live_request(req)
    key = req.api_key()
    dataset = req.dataset or next(iter(products.values())).dataset
    start_ns = session_start_ns(req.day) if req.warm == "replay" else time.time_ns()
    connection: Connection | None = None

    def past_end() -> None:
        if all(run.closed for run in runs) and connection is not None:
            connection.stop()

    def stop_on_failure() -> None:
        if connection is not None:
            connection.stop()

    if req.record:  # before any file is created
        for symbol, product in products.items():
            _refuse_existing_recording(
                raw_dir(req.lake, product) / live_recording_name(dataset, req.day, symbol),
                symbol, req.day)
    load_kernels()  # not when the first record arrives
    runs = [SymbolRun(req, s, products[s], dataset, start_ns, (feeds or {}).get(s), past_end,
                      stop_on_failure) for s in req.symbols]
    connection = Connection(key=key, dataset=dataset, symbols=list(req.symbols),
                            subscribers={run.symbol: run for run in runs},
                            start_ns=start_ns if req.warm == "replay" else None,
                            snapshot=req.warm == "snapshot", gateway=req.gateway,
                            port=req.port, heartbeat_s=req.heartbeat_s)
    failure: BaseException | None = None
    streaming = threading.Event()
    undo = _install_sigterm(streaming)
    try:
        with _status_loop(runs, connection, report):
            try:
                streaming.set()
                connection.run()
            except (KeyboardInterrupt, StopRequested):
                connection.stop()
            except LiveError as exc:
                failure = exc
            finally:
                streaming.clear()
                connection.close()
                results = [run.finish() for run in runs]
    finally:
        undo()
    for run in runs:  # end() waits for the last frames: the latency counts them
        if run.feed is not None:
            run.feed.end(None if failure is None else str(failure))
    latency = {run.symbol: run.feed.latency() for run in runs if run.feed is not None}
    if req.record:
        _write_session_manifest(runs, req, dataset, connection.stats, latency)
    if failure is not None:
        raise failure
    failed = [r for r in results if r.status in ("failed", "no-data")]
    if failed:
        raise VpbatchError("; ".join(r.error or r.symbol for r in failed))
    return LiveResult(results, connection.stats, latency)


def _write_session_manifest(runs: list[SymbolRun], req: LiveRequest, dataset: str,
                            stats: ConnectionStats, latency: dict[str, Any]) -> None:
    """``<recording>.json`` beside each recording: the subscription, reconnects and gaps."""
    for run in runs:
        if not run.path.exists():
            continue
        doc = {
            "dataset": dataset, "symbol": run.symbol, "day": req.day.isoformat(),
            "subscription": {"schema": "mbo", "stype_in": "raw_symbol",
                             "symbols": list(req.symbols), "warm": req.warm,
                             "gateway": req.gateway or "databento",
                             "heartbeat_s": req.heartbeat_s},
            "records": stats.records, "duplicates_dropped": stats.duplicates,
            # records of instruments no subscribed symbol maps to; reconnects whose replay
            # may reach past the 262k records kept for dedup
            "unrouted": stats.unrouted, "dedup_window_short": stats.dedup_window_short,
            "reconnects": [r.to_dict() for r in stats.reconnects],
            "gaps": [list(g) for g in stats.gaps],
            "late": run.result.late, "latency": latency.get(run.symbol),
            "errors": stats.errors,
        }
        target = run.path.with_name(run.path.name + ".json")
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, target)
