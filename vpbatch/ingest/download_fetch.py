"""Fetching one day file without paying twice for the same bytes.

Streaming is billed per byte. A stream cut short keeps its whole records and the next attempt
asks only for the rest, from the last complete ``ts_recv`` on; a run that gives up keeps what
arrived (``.<name>.partial``) for the next run to resume. A stream that ends cleanly with
fewer records than ``metadata.get_record_count`` said is asked once more for the rest; a
count that still differs keeps the file under a marked name
(``….count-mismatch.dbn.zst``), never as the day file. Decisions: ``docs/download.md``.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import databento as db
from databento.common.error import BentoWarning

from vpbatch.errors import DownloadError, one_line
from vpbatch.ingest.databento_calls import Retryable, call_with_retries
from vpbatch.ingest.download_files import (
    PART_SUFFIX,
    Scan,
    fsync_file,
    mismatch_path,
    partial_path,
    scan_file,
    splice,
)
from vpbatch.ingest.download_plan import DayFile, Plan, day_ns, header_mismatch, usd
from vpbatch.progress import Progress
from vpbatch.store.files import fsync_dir


@dataclass(frozen=True)
class Fetched:
    """One file written by :func:`fetch_day`.

    ``expected`` is set when the record count differed: the file was then kept under a
    marked name (``path``), not as the day file. ``billed`` estimates the dollars of every
    record received, cut streams and resumed parts included.
    """

    day: dt.date
    schema: str
    path: Path
    records: int
    size: int
    attempts: int
    notices: tuple[str, ...] = ()
    billed: float = 0.0
    resumes: int = 0
    expected: int | None = None

    @property
    def complete(self) -> bool:
        return self.expected is None


class _Download:
    """One day file being fetched: the working file, the records received, the resumes."""

    def __init__(self, client: db.Historical, plan: Plan, target: DayFile, label: str) -> None:
        self.client, self.plan, self.target, self.label = client, plan, target, label
        self.work = self._temp("")
        #: An answer not yet taken in: its file, the records kept before it, its start.
        self.pending: tuple[Path, int, int | None] | None = None
        self.received = 0
        self.resumes = 0
        self.asked_rest = False
        self.failed = False
        self.notices: list[str] = []
        self.start_ns = day_ns(target.day)

    def _temp(self, what: str) -> Path:
        name = self.target.path.name
        return self.target.path.with_name(f".{name}.{uuid.uuid4().hex}{what}{PART_SUFFIX}")

    @property
    def billed(self) -> float:
        """Dollars of the records received, at the plan's price per record."""
        left = max(self.target.records - self.target.kept, 1)
        return self.received * self.target.cost / left

    def attempt(self) -> Scan:
        """One attempt: the whole day, or the rest after what is already here."""
        self._take_in()
        base = self._resume_point()
        if base is None:
            self.pending = (self.work, 0, None)
            self._get_range(self.start_ns, self.work)
            self.pending = None
            final = scan_file(self.work, self.target.schema)
            self.received += final.records
        else:
            final = self._resume(base)
        self._check(final)
        if final.records < self.target.records and not self.asked_rest:
            # A clean end with records missing: the rest is asked once (it costs only the
            # records from the last timestamp on), then the count is what it is.
            self.asked_rest = True
            if final.resumable and final.keep and final.resume_ns is not None:
                final = self._resume(final)
                self._check(final)
        return final

    def _resume(self, base: Scan) -> Scan:
        assert base.resume_ns is not None
        tail = self._temp(".rest")
        self.pending = (tail, base.keep, base.resume_ns)
        self.resumes += 1
        self._get_range(base.resume_ns, tail)
        self._take_in()
        return scan_file(self.work, self.target.schema)

    def _resume_point(self) -> Scan | None:
        """What is already here, when the rest can be asked for; else None (start over)."""
        if not self.work.is_file():
            return None
        scan = scan_file(self.work, self.target.schema)
        if (not scan.resumable or not scan.keep or scan.resume_ns is None
                or header_mismatch(scan.metadata, self.plan, self.target.schema, self.start_ns)):
            self.work.unlink()
            return None
        return scan

    def _take_in(self) -> None:
        """Account for the last answer and splice a resumed one onto the working file."""
        if self.failed:
            # The client leaves the file of a failed stream open (held by the exception's
            # traceback cycle); collecting it flushes and closes it.
            gc.collect()
            self.failed = False
        if self.pending is None:
            return
        path, keep, start = self.pending
        self.pending = None
        if start is None:
            if path.is_file():
                self.received += scan_file(path, self.target.schema).records
            return
        out = self._temp(".spliced")
        try:
            if not path.is_file():
                return
            tail = splice(self.work, keep, path, out)
            self.received += tail.records
            if tail.metadata is None:
                return  # nothing arrived: the working file stays as it was
            wrong = header_mismatch(tail.metadata, self.plan, self.target.schema, start)
            if wrong:
                raise DownloadError(f"{self.target.path.name}: the server sent data for "
                                    f"another request (differs in: {', '.join(wrong)})")
            os.replace(out, self.work)
        finally:
            for leftover in (path, out):
                with suppress(FileNotFoundError):
                    leftover.unlink()

    def _get_range(self, start_ns: int, dest: Path) -> None:
        """One paid ``timeseries.get_range`` call into ``dest``; client errors propagate."""
        target, plan = self.target, self.plan
        self.failed = True
        with _byte_progress(dest, plan.request.progress, self.label), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.client.timeseries.get_range(
                    dataset=plan.dataset, start=start_ns if start_ns != self.start_ns
                    else target.day, end=target.day + dt.timedelta(days=1),
                    symbols=plan.symbols, schema=target.schema, stype_in=plan.stype_in,
                    stype_out="instrument_id", path=dest)
            except ValueError as exc:
                # The client reads back the file it wrote: an empty or cut-short header.
                raise Retryable(f"unreadable response ({one_line(exc)})") from None
        self.failed = False
        # Databento's notices about the data (X-Warning header), e.g. degraded quality; the
        # client's own unclosed-file ResourceWarnings are not the user's business.
        for w in caught:
            if issubclass(w.category, BentoWarning):
                if one_line(w.message) not in self.notices:
                    self.notices.append(one_line(w.message))
            elif not issubclass(w.category, ResourceWarning):
                warnings.warn(w.message, w.category, stacklevel=2)

    def _check(self, final: Scan) -> None:
        """A whole answer to this request, else a retry (cut) or an error (another request)."""
        if final.metadata is None:
            raise Retryable("unreadable response (no DBN header)")
        wrong = header_mismatch(final.metadata, self.plan, self.target.schema, self.start_ns)
        if wrong:
            raise DownloadError(f"{self.target.path.name}: the server sent data for another "
                                f"request (differs in: {', '.join(wrong)})")
        if not final.complete:
            raise Retryable(f"stream cut after {final.records:,} of "
                            f"{self.target.records:,} records")

    def keep_partial(self, interrupted: bool) -> str:
        """Keep what arrived for the next run (``.<name>.partial``); what to tell the user."""
        kept = partial_path(self.target.path)
        if interrupted:
            # Ctrl-C: no splicing now; the part kept before the resumed stream stays.
            if self.pending is not None and self.pending[2] is not None:
                with suppress(FileNotFoundError):
                    self.pending[0].unlink()
            if self.work.is_file() and self.work.stat().st_size:
                os.replace(self.work, kept)
            return ""
        with suppress(DownloadError, OSError, ValueError):
            self._take_in()
        billed = f"about {usd(self.billed)} billed"
        if self.work.is_file():
            scan = scan_file(self.work, self.target.schema)
            if scan.records and not header_mismatch(scan.metadata, self.plan,
                                                    self.target.schema, self.start_ns):
                os.replace(self.work, kept)
                return (f"; kept {scan.records:,} of {self.target.records:,} records in "
                        f"{kept.name} ({billed}); run again to resume from there")
            self.work.unlink()
        return f" ({billed})" if self.received else ""

    def discard(self) -> None:
        for path in (self.work, *(() if self.pending is None else (self.pending[0],))):
            with suppress(FileNotFoundError):
                path.unlink()


def fetch_day(client: db.Historical, plan: Plan, target: DayFile, label: str) -> Fetched:
    """Fetch one day file into place, resuming cut streams; see the module docstring.

    Raises
    ------
    DownloadError
        A file that keeps failing after the retries (what arrived is kept for the next run).
    """
    job = _Download(client, plan, target, label)
    kept = partial_path(target.path)
    if target.kept:
        with suppress(FileNotFoundError):
            os.replace(kept, job.work)  # gone meanwhile: the whole day is fetched
    attempts = [0]
    try:
        final = call_with_retries(job.attempt, target.path.name, plan.request, attempts)
        dest = target.path if final.records == target.records else mismatch_path(target.path)
        fsync_file(job.work)
        os.replace(job.work, dest)
        fsync_dir(dest.parent)
    except DownloadError as exc:
        raise DownloadError(f"{exc}{job.keep_partial(interrupted=False)}") from None
    except BaseException:
        job.keep_partial(interrupted=True)
        raise
    finally:
        job.discard()  # kept parts were renamed away: no temporary file stays behind
    with suppress(FileNotFoundError):
        kept.unlink()  # an older partial, superseded by this file
    return Fetched(target.day, target.schema, dest, final.records, dest.stat().st_size,
                   attempts[0], tuple(job.notices), job.billed, job.resumes,
                   None if dest == target.path else target.records)


@contextmanager
def _byte_progress(path: Path, enabled: bool, label: str) -> Iterator[None]:
    """A bytes bar fed by watching the temporary file grow (the client owns the stream)."""
    with Progress(total=None, enabled=enabled, phase=label, unit="B") as bar:
        stop = threading.Event()
        seen = [0]

        def catch_up() -> None:
            with suppress(OSError):
                size = path.stat().st_size
                if size > seen[0]:
                    bar.update(size - seen[0])
                    seen[0] = size

        def watch() -> None:
            while not stop.wait(0.25):
                catch_up()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            catch_up()
