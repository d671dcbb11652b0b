"""Databento MBO days into the lake, with the cost known before anything is spent.

The flow is two steps so a caller can show the cost and ask before paying:
:func:`plan_download` (free metadata calls: symbology, record counts, cost) and
:func:`run_download` (the paid ``timeseries.get_range`` calls). Every file is streamed into a
temporary name beside its final place, checked (DBN header matches the request, record count
matches ``metadata.get_record_count``) and only then renamed, so a file under its final name
is always complete and a re-run skips it. Rate limits (429), server errors (5xx) and cut
connections are retried with exponential backoff. Decisions: ``docs/download.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import databento as db
import zstandard
from databento.common.error import BentoWarning
from databento_dbn import DBNDecoder, Metadata

from vpbatch.clock import NS_PER_SECOND, date_range
from vpbatch.errors import (
    ConfigError,
    DownloadError,
    InputError,
    OutputError,
    SymbolError,
    one_line,
)
from vpbatch.ingest.databento_calls import API_KEY_ENV, Retryable, call_with_retries
from vpbatch.products import FUTURE_MBO, Product, futures_root, resolve_product
from vpbatch.progress import Progress
from vpbatch.store.files import atomic_path
from vpbatch.store.lake import definition_file_name, raw_dir, raw_file_name

#: Symbology file written beside the day files (Databento's batch-download name).
SYMBOLOGY_JSON: Final = "symbology.json"
#: Schemas fetched per day: the order book, then the instrument definitions (the tick).
MBO: Final = "mbo"
DEFINITION: Final = "definition"
#: Suffix of a parent symbol: ``MNQ.FUT`` is every MNQ contract of the day.
PARENT_SUFFIX: Final = ".FUT"
#: Metadata calls (record counts, costs) in flight at once while planning.
PLAN_WORKERS: Final = 4
#: Symbols per ``symbology.resolve`` call (the service's limit).
RESOLVE_BATCH: Final = 2_000
_DATASET_RE: Final = re.compile(r"[A-Z0-9]+\.[A-Z0-9]+")
_READ_CHUNK: Final = 1 << 22
#: Suffix of the hidden temporary file a day file (or ``symbology.json``) is written through.
PART_SUFFIX: Final = ".part"


@dataclass(frozen=True)
class DownloadRequest:
    """What to download.

    Parameters
    ----------
    symbol : str
        A contract (``MNQH6``), a parent (``MNQ.FUT``: every contract of each day) or an
        equity ticker (``QQQ``).
    start, end : datetime.date
        First and last UTC day, inclusive.
    lake : Path
        Lake root; files go to ``raw/source=databento/product_type=…/symbol=ROOT/…``.
    dataset : str, optional
        Databento dataset; default the product's (``GLBX.MDP3`` futures, ``XNAS.ITCH`` equities).
    max_cost : float, optional
        Refuse a plan costing more than this many US dollars.
    definitions : bool, default True
        Also fetch each day's instrument definitions (``min_price_increment`` is the tick).
    force : bool, default False
        Download again days whose files are already complete.
    retries : int, default 5
        Attempts after the first on 429, 5xx and cut connections.
    backoff : float, default 1.0
        First wait in seconds (doubled per attempt) when the server sends no ``Retry-After``.
    progress : bool, default True
        Byte progress bar on stderr (only when stderr is a terminal).
    """

    symbol: str
    start: dt.date
    end: dt.date
    lake: Path
    dataset: str | None = None
    max_cost: float | None = None
    definitions: bool = True
    force: bool = False
    retries: int = 5
    backoff: float = 1.0
    progress: bool = True


@dataclass(frozen=True)
class DayFile:
    """One file to fetch: a schema for one UTC day, its place in the lake, records and cost."""

    day: dt.date
    schema: str
    path: Path
    records: int
    cost: float


@dataclass
class Plan:
    """What :func:`run_download` will do, and what it costs (nothing fetched yet)."""

    request: DownloadRequest
    product: Product
    dataset: str
    symbols: list[str]
    stype_in: str
    folder: Path
    targets: list[DayFile]
    present: list[Path] = field(default_factory=list)
    empty_days: list[dt.date] = field(default_factory=list)
    symbology: dict[str, Any] = field(default_factory=dict)

    @property
    def cost(self) -> float:
        """US dollars for every file still to fetch."""
        return sum(t.cost for t in self.targets)

    @property
    def records(self) -> int:
        return sum(t.records for t in self.targets)

    def summary(self) -> str:
        """One paragraph for a human: what, where, how much."""
        days = sorted({t.day for t in self.targets})
        lines = [f"{', '.join(self.symbols)} on {self.dataset}, "
                 f"{self.request.start} .. {self.request.end} (UTC days) -> {self.folder}"]
        for day in days:
            parts = [f"{t.schema} {t.records:,} records ${t.cost:,.2f}"
                     for t in self.targets if t.day == day]
            lines.append(f"  {day}: " + "; ".join(parts))
        if self.present:
            lines.append(f"  already complete, skipped: {len(self.present)} file(s)")
        if self.empty_days:
            lines.append("  no data (weekend, holiday or outside the dataset): "
                         + ", ".join(str(d) for d in self.empty_days))
        lines.append(f"Cost: ${self.cost:,.2f} for {len(self.targets)} file(s), "
                     f"{self.records:,} records")
        return "\n".join(lines)


@dataclass(frozen=True)
class Fetched:
    """One file written by :func:`run_download`."""

    day: dt.date
    schema: str
    path: Path
    records: int
    size: int
    attempts: int
    notices: tuple[str, ...] = ()


# -- client and request validation --------------------------------------------------------


def open_client(key: str | None = None, gateway: str | None = None) -> db.Historical:
    """``databento.Historical`` with the key from ``DATABENTO_API_KEY`` unless given.

    Raises
    ------
    ConfigError
        No key (or a blank one).
    """
    key = os.environ.get(API_KEY_ENV) if key is None else key
    if not key or not key.strip():
        raise ConfigError(f"{API_KEY_ENV} is not set: export your Databento API key "
                          f"(portal: Settings > API keys)")
    kwargs: dict[str, Any] = {} if gateway is None else {"gateway": gateway}
    try:
        return db.Historical(key.strip(), **kwargs)
    except ValueError as exc:
        raise ConfigError(f"{API_KEY_ENV} or gateway is not valid: {exc}") from None


def resolve_request_symbols(symbol: str) -> tuple[Product, list[str], str]:
    """``MNQH6`` -> (product, ['MNQH6'], 'raw_symbol'); ``MNQ.FUT`` -> (…, ['MNQ.FUT'], 'parent').

    Raises
    ------
    ConfigError
        Empty symbol, a spread, a parent that is not a known futures root, or ``.OPT``.
    """
    text = (symbol or "").strip().upper()
    if not text:
        raise ConfigError("--symbol: must not be empty")
    if "." in text:
        root, _, suffix = text.rpartition(".")
        if f".{suffix}" != PARENT_SUFFIX:
            raise ConfigError(f"--symbol: '{symbol}' is not supported; give a contract "
                              f"(MNQH6), a futures parent (MNQ{PARENT_SUFFIX}) or a ticker (QQQ)")
        if futures_root(root) != root:
            raise ConfigError(f"--symbol: '{root}' in '{symbol}' is not a known futures root "
                              f"(see `vpbatch products`)")
        return resolve_product(root), [text], "parent"
    return resolve_product(text), [text], "raw_symbol"


def _validate_dataset(dataset: str) -> str:
    text = dataset.strip().upper()
    if not _DATASET_RE.fullmatch(text):
        raise ConfigError(f"--dataset: '{dataset}' is not a Databento dataset code "
                          f"(e.g. GLBX.MDP3, XNAS.ITCH, DBEQ.BASIC)")
    return text


def _days(start: dt.date, end: dt.date, now: dt.datetime | None = None) -> list[dt.date]:
    days = date_range(start, end)
    today = (now or dt.datetime.now(dt.UTC)).date()
    if end >= today:
        # A day still in progress would be saved as complete and never fetched again.
        raise ConfigError(f"--end {end}: the UTC day is not over yet; download days up to "
                          f"{today - dt.timedelta(days=1)}")
    return days


# -- planning (free calls only) ------------------------------------------------------------


def plan_download(client: db.Historical, req: DownloadRequest) -> Plan:
    """Resolve the symbol, count the records and price every missing file; fetch nothing.

    Returns
    -------
    Plan
        Files to fetch with their record counts and cost; files already complete; days
        without data.

    Raises
    ------
    ConfigError
        Bad symbol, dataset or dates, or a rejected API key.
    SymbolError
        The symbol is unknown to the dataset over the whole range.
    InputError
        No day of the range has data.
    DownloadError
        Any other refusal by Databento, or a server that keeps failing.
    OutputError
        A day file in the lake holds other symbols (use ``force`` to replace it).
    """
    product, symbols, stype_in = resolve_request_symbols(req.symbol)
    dataset = _validate_dataset(req.dataset or product.dataset)
    days = _days(req.start, req.end)
    folder = raw_dir(Path(req.lake), product)
    end_excl = req.end + dt.timedelta(days=1)

    ids_doc = call_with_retries(lambda: client.symbology.resolve(
        dataset=dataset, symbols=symbols, stype_in=stype_in, stype_out="instrument_id",
        start_date=req.start, end_date=end_excl), "symbology.resolve", req)
    not_found = [s for s in ids_doc.get("not_found") or [] if str(s).upper() in symbols]
    intervals = [e for s in symbols for e in (ids_doc.get("result") or {}).get(s, [])]
    if not_found or not any(str(e.get("s") or "") for e in intervals):
        raise SymbolError(f"{', '.join(symbols)}: not found in {dataset} between "
                          f"{req.start} and {req.end}")
    symbology = (_by_instrument(ids_doc) if stype_in == "raw_symbol"
                 else _resolve_raw_symbols(client, req, dataset, intervals, end_excl))

    plan = Plan(req, product, dataset, symbols, stype_in, folder, [], symbology=symbology)
    schemas = (MBO, DEFINITION) if req.definitions else (MBO,)
    missing: list[tuple[dt.date, str, Path]] = []
    for day in days:
        for schema in schemas:
            path = folder / _file_name(dataset, day, schema)
            existing = _existing(path)
            if not req.force and existing is not None:
                _check_existing(existing, plan)
                plan.present.append(existing)
            else:
                missing.append((day, schema, path))
    # Free metadata calls, a few at a time: a month is ~120 of them.
    priced: list[tuple[int, float]] = []
    with ThreadPoolExecutor(PLAN_WORKERS) as pool, \
            Progress(total=len(missing), enabled=req.progress and len(missing) > PLAN_WORKERS,
                     phase="pricing", unit="file") as bar:
        for result in pool.map(lambda job: _price(client, plan, job[0], job[1]), missing):
            priced.append(result)
            bar.update(1)
    empty = {day for (day, schema, _), (records, _) in zip(missing, priced, strict=True)
             if schema == MBO and records == 0}
    plan.empty_days = sorted(empty)
    for (day, schema, path), (records, cost) in zip(missing, priced, strict=True):
        # No book that day: its definitions are not needed either.
        if records and day not in empty:
            plan.targets.append(DayFile(day, schema, path, records, cost))
    if len(plan.empty_days) == len(days):
        which = str(req.start) if len(days) == 1 else f"any day from {req.start} to {req.end}"
        raise InputError(f"{', '.join(symbols)} on {dataset}: no MBO data for {which} "
                         f"(weekend, holiday, or outside the dataset's range)")
    return plan


def _price(client: db.Historical, plan: Plan, day: dt.date, schema: str) -> tuple[int, float]:
    """Records and dollars of one day file (no cost call for a day without records)."""
    window: dict[str, Any] = {
        "dataset": plan.dataset, "start": day, "end": day + dt.timedelta(days=1),
        "symbols": plan.symbols, "schema": schema, "stype_in": plan.stype_in}
    records = int(call_with_retries(partial(client.metadata.get_record_count, **window),
                                    "metadata.get_record_count", plan.request))
    if records == 0:
        return 0, 0.0
    cost = float(call_with_retries(partial(client.metadata.get_cost, **window),
                                   "metadata.get_cost", plan.request))
    return records, cost


def _by_instrument(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``raw_symbol -> instrument_id`` resolution turned around (``id -> raw symbol``)."""
    result: dict[str, list[dict[str, str]]] = {}
    for symbol, entries in (doc.get("result") or {}).items():
        for e in entries:
            if str(e.get("s") or "").isdigit():
                result.setdefault(str(e["s"]), []).append(
                    {"d0": str(e["d0"]), "d1": str(e["d1"]), "s": str(symbol)})
    return {**doc, "result": result, "symbols": sorted(result, key=int),
            "stype_in": "instrument_id", "stype_out": "raw_symbol"}


def _resolve_raw_symbols(client: db.Historical, req: DownloadRequest, dataset: str,
                         intervals: list[dict[str, Any]], end: dt.date) -> dict[str, Any]:
    """``instrument_id -> raw_symbol`` for the ids of a parent (2,000 ids per call)."""
    ids = sorted({str(e["s"]) for e in intervals if str(e.get("s") or "").isdigit()}, key=int)
    merged: dict[str, Any] = {"result": {}}
    for i in range(0, len(ids), RESOLVE_BATCH):
        batch = ids[i:i + RESOLVE_BATCH]
        resolve = partial(client.symbology.resolve, dataset=dataset, symbols=batch,
                          stype_in="instrument_id", stype_out="raw_symbol",
                          start_date=req.start, end_date=end)
        doc = call_with_retries(resolve, "symbology.resolve", req)
        merged = {**doc, "result": {**merged["result"], **(doc.get("result") or {})}}
    return merged


def check_cost(plan: Plan) -> None:
    """Refuse a plan above ``max_cost``.

    Raises
    ------
    ConfigError
        The cost is above the limit (nothing is downloaded).
    """
    limit = plan.request.max_cost
    if limit is not None and plan.cost > limit:
        raise ConfigError(f"--max-cost: the download costs ${plan.cost:,.2f}, above the "
                          f"limit of ${limit:,.2f}; nothing downloaded")


def _existing(path: Path) -> Path | None:
    """The complete file of ``path``: itself, or an uncompressed ``.dbn`` copy of it."""
    plain = path.with_name(path.name.removesuffix(".zst"))
    return next((p for p in (path, plain) if p.is_file()), None)


def _file_name(dataset: str, day: dt.date, schema: str) -> str:
    return raw_file_name(dataset, day) if schema == MBO else definition_file_name(dataset, day)


# -- files: header, completeness, atomic writes --------------------------------------------


@contextmanager
def open_dbn(path: Path) -> Iterator[tuple[Metadata, Iterator[bytes]]]:
    """DBN metadata of a DBN file (zstd or plain) and an iterator over its record bytes.

    Raises
    ------
    InputError
        Not a (zstd) DBN file, or its header is cut short.
    """
    with open(path, "rb") as fh:
        plain = fh.read(3) == b"DBN"
        fh.seek(0)
        reader: Any = fh if plain else zstandard.ZstdDecompressor().stream_reader(
            fh, read_across_frames=True)

        def read_exact(n: int) -> bytes:
            out = b""
            while len(out) < n:
                chunk = reader.read(n - len(out))
                if not chunk:
                    break
                out += chunk
            return out

        try:
            prefix = read_exact(8)
            if len(prefix) < 8 or prefix[:3] != b"DBN":
                raise InputError(f"{path.name}: not a DBN file")
            (length,) = struct.unpack("<I", prefix[4:8])
            raw = read_exact(length)
            if len(raw) < length:
                raise InputError(f"{path.name}: truncated DBN header")
            decoder = DBNDecoder()
            decoder.write(prefix + raw)
            metadata = decoder.decode()[0]
            if not isinstance(metadata, Metadata):
                raise ValueError("no metadata header")
        except (zstandard.ZstdError, ValueError, struct.error) as exc:
            raise InputError(f"{path.name}: not a readable DBN file ({one_line(exc)})") from None

        def body() -> Iterator[bytes]:
            while chunk := reader.read(_READ_CHUNK):
                yield chunk

        yield metadata, body()


def count_records(chunks: Iterator[bytes]) -> int:
    """Records in a body of equal-length records (MBO, definitions); -1 when ragged."""
    total = 0
    size = 0
    for chunk in chunks:
        if not size and chunk:
            size = chunk[0] * 4
        total += len(chunk)
    if total == 0:
        return 0
    return total // size if size and total % size == 0 else -1


def _check_existing(path: Path, plan: Plan) -> None:
    """A complete day file must hold what is asked for, else refuse to mix days up."""
    with open_dbn(path) as (metadata, _):
        pass
    held = [str(s).upper() for s in metadata.symbols]
    parent_of_root = f"{plan.product.root}{PARENT_SUFFIX}"
    covered = (str(metadata.dataset) == plan.dataset
               and (set(plan.symbols) <= set(held)
                    or (str(metadata.stype_in) == "parent" and parent_of_root in held
                        and plan.product.product_type == FUTURE_MBO)))
    if not covered:
        raise OutputError(f"{path}: already holds {', '.join(held) or 'no symbols'} "
                          f"({metadata.dataset}), not {', '.join(plan.symbols)}; download the "
                          f"parent {parent_of_root}, or use --force to replace the file")


def verify_file(path: Path, target: DayFile, plan: Plan) -> None:
    """The header matches the request and the body holds exactly the expected records.

    Raises
    ------
    Retryable
        Fewer (or more) records than ``metadata.get_record_count`` said: a cut stream.
    """
    try:
        with open_dbn(path) as (metadata, body):
            _check_header(metadata, target, plan)
            got = count_records(body)
    except InputError as exc:
        raise Retryable(f"incomplete file ({exc})") from None
    except zstandard.ZstdError as exc:
        raise Retryable(f"incomplete file ({one_line(exc)})") from None
    if got != target.records:
        raise Retryable(f"size check failed: {got:,} records received, "
                        f"{target.records:,} expected")


def _check_header(metadata: Metadata, target: DayFile, plan: Plan) -> None:
    start_ns = (int(dt.datetime.combine(target.day, dt.time(), dt.UTC).timestamp())
                * NS_PER_SECOND)
    mismatch = [name for name, ok in (
        ("dataset", str(metadata.dataset) == plan.dataset),
        ("schema", str(metadata.schema) == target.schema),
        ("start", int(metadata.start) == start_ns),
        ("symbols", [str(s).upper() for s in metadata.symbols] == plan.symbols),
    ) if not ok]
    if mismatch:
        raise DownloadError(f"{target.path.name}: the server sent data for another request "
                            f"(differs in: {', '.join(mismatch)})")


def merge_symbology(folder: Path, doc: dict[str, Any]) -> Path:
    """Merge an ``instrument_id -> raw_symbol`` resolution into the folder's ``symbology.json``.

    The file keeps Databento's ``symbology.resolve`` shape (``result``: id -> list of
    ``{d0, d1, s}``), so days downloaded at different times share one file. An existing
    ``raw_symbol`` file (a Databento batch download) is turned around and kept.

    Raises
    ------
    OutputError
        The existing file is unreadable or maps another symbology (e.g. ``parent``).
    """
    path = folder / SYMBOLOGY_JSON
    merged: dict[str, Any] = {}
    if path.is_file():
        try:
            merged = json.loads(path.read_text())
            if merged.get("stype_in") == "raw_symbol":  # e.g. from a Databento batch job
                merged = _by_instrument(merged)
            if merged.get("stype_in") != "instrument_id":
                raise ValueError(f"stype_in is {merged.get('stype_in')!r}")
        except (OSError, ValueError, AttributeError) as exc:
            raise OutputError(f"{path}: not a symbology.json vpbatch can extend "
                              f"({one_line(exc)}); move it away and re-run") from None
    result: dict[str, list[dict[str, str]]] = merged.get("result", {})
    for key, entries in (doc.get("result") or {}).items():
        have = result.setdefault(str(key), [])
        for entry in entries:
            item = {"d0": str(entry["d0"]), "d1": str(entry["d1"]), "s": str(entry["s"])}
            if item not in have:
                have.append(item)
        have.sort(key=lambda e: (e["d0"], e["d1"], e["s"]))
    starts = [d for d in (merged.get("start_date"), doc.get("start_date")) if d]
    ends = [d for d in (merged.get("end_date"), doc.get("end_date")) if d]
    out = {
        "result": dict(sorted(result.items(), key=lambda kv: int(kv[0])
                              if kv[0].isdigit() else 0)),
        "symbols": sorted(result, key=lambda k: int(k) if k.isdigit() else 0),
        "stype_in": "instrument_id",
        "stype_out": "raw_symbol",
        "start_date": min(starts) if starts else None,
        "end_date": max(ends) if ends else None,
        "partial": [],
        "not_found": [],
        "message": "OK",
        "status": 0,
    }
    with atomic_path(path, suffix=PART_SUFFIX) as tmp:
        tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return path


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


def _fetch(client: db.Historical, plan: Plan, target: DayFile, label: str) -> Fetched:
    req = plan.request
    attempts = [0]
    notices: list[str] = []

    def attempt(tmp: Path) -> None:
        with suppress(FileNotFoundError):
            tmp.unlink()
        with _byte_progress(tmp, req.progress, label), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                client.timeseries.get_range(
                    dataset=plan.dataset, start=target.day,
                    end=target.day + dt.timedelta(days=1), symbols=plan.symbols,
                    schema=target.schema, stype_in=plan.stype_in, stype_out="instrument_id",
                    path=tmp)
            except ValueError as exc:
                # The client reads back the file it wrote: an empty or cut-short header.
                raise Retryable(f"unreadable response ({one_line(exc)})") from None
        # Databento's notices about the data (X-Warning header), e.g. degraded quality; the
        # client's own unclosed-file ResourceWarnings are not the user's business.
        notices[:] = [one_line(w.message) for w in caught
                      if issubclass(w.category, BentoWarning)]
        for w in caught:
            if not issubclass(w.category, (BentoWarning, ResourceWarning)):
                warnings.warn(w.message, w.category, stacklevel=2)
        verify_file(tmp, target, plan)

    with atomic_path(target.path, suffix=PART_SUFFIX) as tmp:
        call_with_retries(partial(attempt, tmp), target.path.name, req, attempts)
        size = tmp.stat().st_size
    return Fetched(target.day, target.schema, target.path, target.records, size, attempts[0],
                   tuple(notices))


def run_download(client: db.Historical, plan: Plan,
                 on_file: Callable[[Fetched], None] | None = None) -> list[Fetched]:
    """Fetch every file of ``plan`` (after :func:`check_cost` and any confirmation).

    Writes ``symbology.json`` first, then each file through a temporary name; a failure
    leaves the files already renamed (complete) and nothing else.

    Raises
    ------
    DownloadError
        A file that keeps failing after the retries; earlier files stay complete.
    OutputError
        The lake cannot be written.
    """
    check_cost(plan)
    if not plan.targets:
        return []
    try:
        plan.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{plan.folder}: cannot create ({exc.strerror or exc})") from None
    merge_symbology(plan.folder, plan.symbology)
    done: list[Fetched] = []
    for i, target in enumerate(plan.targets, 1):
        label = f"[{i}/{len(plan.targets)}] {target.day} {target.schema}"
        fetched = _fetch(client, plan, target, label)
        done.append(fetched)
        if on_file is not None:
            on_file(fetched)
    return done
