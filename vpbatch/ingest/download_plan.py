"""What ``vpbatch download`` will fetch and what it costs, from free calls only.

The dataset's available range comes first (``metadata.get_dataset_range``): Historical serves
only what the exchange's live-data restrictions allow, and a day it cannot serve whole would
look complete once saved. Then the symbol is resolved, every missing file is counted and
priced, and files kept from an earlier run are accounted for (a partial one is priced for the
rest only; one whose record count differed is not fetched again). Decisions:
``docs/download.md``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import databento as db

from vpbatch.clock import NS_PER_SECOND, date_range
from vpbatch.errors import ConfigError, InputError, OutputError, SymbolError
from vpbatch.ingest.databento_calls import API_KEY_ENV, call_with_retries
from vpbatch.ingest.download_files import (
    by_instrument,
    mismatch_path,
    open_dbn,
    partial_path,
    scan_file,
)
from vpbatch.products import FUTURE_MBO, Product, futures_root, resolve_product
from vpbatch.progress import Progress
from vpbatch.store.lake import definition_file_name, raw_dir, raw_file_name

#: Schemas fetched per day: the order book, then the instrument definitions (the tick).
MBO: Final = "mbo"
DEFINITION: Final = "definition"
#: Suffixes of Databento parent symbols: ``MNQ.FUT`` is every MNQ contract of the day.
PARENT_SUFFIX: Final = ".FUT"
OPTIONS_SUFFIX: Final = ".OPT"
#: Metadata calls (record counts, costs) in flight at once while planning.
PLAN_WORKERS: Final = 4
#: Symbols per ``symbology.resolve`` call (the service's limit).
RESOLVE_BATCH: Final = 2_000
_DATASET_RE: Final = re.compile(r"[A-Z0-9]+\.[A-Z0-9]+")
_PARENT_RE: Final = re.compile(r"([A-Z0-9]+)(\.FUT|\.OPT)")


@dataclass(frozen=True)
class DownloadRequest:
    """What to download.

    Parameters
    ----------
    symbol : str
        A contract (``MNQH6``), a parent (``MNQ.FUT``: every contract of each day) or an
        equity ticker (``QQQ``, ``BRK.B``).
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
        Download again days whose files are already complete (or were kept with a record
        count that differs).
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
    """One file to fetch: a schema for one UTC day, its place in the lake, records and cost.

    ``records`` is the whole day's count (what the file must hold); ``cost`` is what is
    left to pay: with ``kept`` records from an interrupted run, only the rest is fetched,
    from ``resume_ns`` (``ts_recv``, inclusive) on.
    """

    day: dt.date
    schema: str
    path: Path
    records: int
    cost: float
    kept: int = 0
    resume_ns: int | None = None


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
    #: Days Historical does not serve whole (yet), with the reason.
    unavailable: dict[dt.date, str] = field(default_factory=dict)
    #: Files kept earlier with a record count that differs: not fetched again.
    held: list[Path] = field(default_factory=list)

    @property
    def cost(self) -> float:
        """US dollars for every file still to fetch."""
        return sum(t.cost for t in self.targets)

    @property
    def records(self) -> int:
        return sum(t.records - t.kept for t in self.targets)

    def summary(self) -> str:
        """One paragraph for a human: what, where, how much."""
        days = sorted({t.day for t in self.targets})
        lines = [f"{', '.join(self.symbols)} on {self.dataset}, "
                 f"{self.request.start} .. {self.request.end} (UTC days) -> {self.folder}"]
        for day in days:
            parts = [f"{t.schema} {t.records:,} records {usd(t.cost)}"
                     + (f" (resumes after {t.kept:,} records kept by an earlier run)"
                        if t.kept else "")
                     for t in self.targets if t.day == day]
            lines.append(f"  {day} {day:%a}: " + "; ".join(parts))
        if self.present:
            lines.append(f"  already complete, skipped: {len(self.present)} file(s)")
        for path in self.held:
            lines.append(f"  kept earlier with a record count that differs, not fetched "
                         f"again (--force to fetch it again): {path.name}")
        if self.empty_days:
            lines.append("  no data (Saturday, holiday, or the symbol not listed): "
                         + ", ".join(f"{d} {d:%a}" for d in self.empty_days))
        for reason in sorted(set(self.unavailable.values())):
            which = [d for d, r in sorted(self.unavailable.items()) if r == reason]
            lines.append(f"  {reason}: " + ", ".join(f"{d} {d:%a}" for d in which))
        lines.append(f"Cost: {usd(self.cost)} for {len(self.targets)} file(s), "
                     f"{self.records:,} records")
        return "\n".join(lines)


def usd(amount: float) -> str:
    """Dollars with the digits that matter: ``$1,234.50``, ``$0.0056``, ``$0.00``."""
    if amount <= 0 or amount >= 0.01:
        return f"${max(amount, 0.0):,.2f}"
    decimals = 1 - math.floor(math.log10(amount))
    return f"${amount:.{decimals}f}"


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

    A parent is ``ROOT.FUT`` (or ``ROOT.OPT``, refused); any other symbol, dotted tickers
    such as ``BRK.B`` included, is a raw symbol.

    Raises
    ------
    ConfigError
        Empty symbol, a spread, a parent that is not a known futures root, or ``.OPT``.
    """
    text = (symbol or "").strip().upper()
    if not text:
        raise ConfigError("--symbol: must not be empty")
    parent = _PARENT_RE.fullmatch(text)
    if parent is None:
        return resolve_product(text), [text], "raw_symbol"
    root, suffix = parent.groups()
    if suffix == OPTIONS_SUFFIX:
        raise ConfigError(f"--symbol: '{symbol}' is not supported; give a contract "
                          f"(MNQH6), a futures parent (MNQ{PARENT_SUFFIX}) or a ticker (QQQ)")
    if futures_root(root) != root:
        raise ConfigError(f"--symbol: '{root}' in '{symbol}' is not a known futures root "
                          f"(see `vpbatch products`)")
    return resolve_product(root), [text], "parent"


def _validate_dataset(dataset: str) -> str:
    text = dataset.strip().upper()
    if not _DATASET_RE.fullmatch(text):
        raise ConfigError(f"--dataset: '{dataset}' is not a Databento dataset code "
                          f"(e.g. GLBX.MDP3, XNAS.ITCH, DBEQ.BASIC)")
    return text


def _days(start: dt.date, end: dt.date, now: dt.datetime | None = None) -> list[dt.date]:
    days = date_range(start, end)
    today = (now or dt.datetime.now(dt.UTC)).date()
    if start >= today:
        # A day still in progress would be saved as complete and never fetched again.
        raise ConfigError(f"--end {end}: the UTC day is not over yet; download days up to "
                          f"{today - dt.timedelta(days=1)}")
    return days


def day_ns(day: dt.date) -> int:
    """``day`` 00:00 UTC in epoch nanoseconds."""
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * NS_PER_SECOND


def _parse_stamp(text: str) -> dt.datetime:
    """An ISO 8601 time of the service (nanosecond digits and ``Z`` allowed) in UTC."""
    clean = re.sub(r"(\.\d{6})\d+", r"\1", str(text).strip()).replace("Z", "+00:00")
    stamp = dt.datetime.fromisoformat(clean)
    return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)


def _available_range(client: db.Historical, req: DownloadRequest, dataset: str,
                     schemas: tuple[str, ...]) -> tuple[dt.datetime, dt.datetime, str]:
    """``[start, end)`` that Historical serves for every schema asked, and the schema that
    ends first (``metadata.get_dataset_range``)."""
    doc = call_with_retries(lambda: client.metadata.get_dataset_range(dataset=dataset),
                            "metadata.get_dataset_range", req)
    per_schema = doc.get("schema") if isinstance(doc, dict) else None
    spans = [(s, per_schema.get(s) if isinstance(per_schema, dict) else None) for s in schemas]
    try:
        ranges = [(s, _parse_stamp((span or doc)["start"]), _parse_stamp((span or doc)["end"]))
                  for s, span in spans]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"metadata.get_dataset_range: unexpected answer for {dataset} "
                         f"({exc!r})") from None
    first = max(start for _, start, _ in ranges)
    schema, _, last = min(ranges, key=lambda r: r[2])
    return first, last, schema


def _split_available(days: list[dt.date], first: dt.datetime, last: dt.datetime,
                     dataset: str, schema: str) -> tuple[list[dt.date], dict[dt.date, str]]:
    """Days served whole, and the others with the reason."""
    ok: list[dt.date] = []
    out: dict[dt.date, str] = {}
    for day in days:
        begins = dt.datetime.combine(day, dt.time(), dt.UTC)
        if begins < first:
            out[day] = f"before {dataset} starts ({first:%Y-%m-%d})"
        elif begins + dt.timedelta(days=1) > last:
            out[day] = (f"not available yet ({dataset} {schema} ends at "
                        f"{last:%Y-%m-%d %H:%M} UTC)")
        else:
            ok.append(day)
    return ok, out


# -- planning (free calls only) ------------------------------------------------------------


def plan_download(client: db.Historical, req: DownloadRequest) -> Plan:
    """Check the available range, resolve the symbol, count and price every missing file.

    Nothing is fetched and nothing is written.

    Returns
    -------
    Plan
        Files to fetch with their record counts and cost; files already complete; days
        without data; days not available (yet).

    Raises
    ------
    ConfigError
        Bad symbol, dataset or dates, or a rejected API key.
    SymbolError
        The symbol is unknown to the dataset over the whole range.
    InputError
        No day of the range is available, or none has data.
    DownloadError
        Any other refusal by Databento, or a server that keeps failing.
    OutputError
        A day file in the lake holds other symbols (use ``force`` to replace it).
    """
    product, symbols, stype_in = resolve_request_symbols(req.symbol)
    dataset = _validate_dataset(req.dataset or product.dataset)
    asked = _days(req.start, req.end)
    schemas = (MBO, DEFINITION) if req.definitions else (MBO,)
    first, last, schema = _available_range(client, req, dataset, schemas)
    days, unavailable = _split_available(asked, first, last, dataset, schema)
    if not days:
        which = str(req.start) if len(asked) == 1 else f"{req.start} .. {req.end}"
        raise InputError(f"{', '.join(symbols)} on {dataset}: {which} "
                         f"{unavailable[asked[-1]]}; nothing downloaded")
    folder = raw_dir(Path(req.lake), product)
    end_excl = days[-1] + dt.timedelta(days=1)

    ids_doc = call_with_retries(lambda: client.symbology.resolve(
        dataset=dataset, symbols=symbols, stype_in=stype_in, stype_out="instrument_id",
        start_date=days[0], end_date=end_excl), "symbology.resolve", req)
    not_found = [s for s in ids_doc.get("not_found") or [] if str(s).upper() in symbols]
    intervals = [e for s in symbols for e in (ids_doc.get("result") or {}).get(s, [])]
    if not_found or not any(str(e.get("s") or "") for e in intervals):
        raise SymbolError(f"{', '.join(symbols)}: not found in {dataset} between "
                          f"{days[0]} and {days[-1]}")
    symbology = (by_instrument(ids_doc) if stype_in == "raw_symbol"
                 else _resolve_raw_symbols(client, req, dataset, intervals, days[0], end_excl))

    plan = Plan(req, product, dataset, symbols, stype_in, folder, [], symbology=symbology,
                unavailable=unavailable)
    missing: list[tuple[dt.date, str, Path, tuple[int, int] | None]] = []
    for day in days:
        for name in schemas:
            path = folder / _file_name(dataset, day, name)
            existing = _existing(path)
            if not req.force and existing is not None:
                _check_existing(existing, plan)
                plan.present.append(existing)
            elif not req.force and mismatch_path(path).is_file():
                plan.held.append(mismatch_path(path))
            else:
                missing.append((day, name, path,
                                None if req.force else _kept(path, day, name, plan)))
    # Free metadata calls, a few at a time: a month is ~120 of them.
    priced: list[tuple[int, float]] = []
    with ThreadPoolExecutor(PLAN_WORKERS) as pool, \
            Progress(total=len(missing), enabled=req.progress and len(missing) > PLAN_WORKERS,
                     phase="pricing", unit="file") as bar:
        for result in pool.map(lambda job: _price(client, plan, *job), missing):
            priced.append(result)
            bar.update(1)
    empty = {day for (day, name, _, _), (records, _) in zip(missing, priced, strict=True)
             if name == MBO and records == 0}
    plan.empty_days = sorted(empty)
    for (day, name, path, kept), (records, cost) in zip(missing, priced, strict=True):
        # No book that day: its definitions are not needed either.
        if records and day not in empty:
            plan.targets.append(DayFile(day, name, path, records, cost,
                                        *(kept or (0, None))))
    if len(plan.empty_days) == len(asked):
        which = str(req.start) if len(asked) == 1 else f"any day from {req.start} to {req.end}"
        raise InputError(f"{', '.join(symbols)} on {dataset}: no MBO data for {which} "
                         f"(weekend, holiday, or outside the dataset's range)")
    return plan


def _kept(path: Path, day: dt.date, schema: str, plan: Plan) -> tuple[int, int] | None:
    """Records an interrupted run kept for ``path`` that a resume can build on, and from
    which ``ts_recv`` the rest is asked; None when there is nothing usable."""
    kept = partial_path(path)
    if not kept.is_file():
        return None
    scan = scan_file(kept, schema)
    if not scan.resumable or not scan.keep or scan.resume_ns is None \
            or header_mismatch(scan.metadata, plan, schema, day_ns(day)):
        return None
    return scan.keep, scan.resume_ns


def header_mismatch(metadata: Any, plan: Plan, schema: str, start_ns: int) -> list[str]:
    """The fields of a DBN header that differ from what ``plan`` asks (all, without one)."""
    if metadata is None:
        return ["header"]
    return [name for name, ok in (
        ("dataset", str(metadata.dataset) == plan.dataset),
        ("schema", str(metadata.schema) == schema),
        ("start", int(metadata.start) == start_ns),
        ("symbols", [str(s).upper() for s in metadata.symbols] == plan.symbols),
    ) if not ok]


def _price(client: db.Historical, plan: Plan, day: dt.date, schema: str, path: Path,
           kept: tuple[int, int] | None) -> tuple[int, float]:
    """Records of the day file and the dollars still to pay (the rest only, after a kept
    partial); no cost call for a day without records."""
    window: dict[str, Any] = {
        "dataset": plan.dataset, "start": day, "end": day + dt.timedelta(days=1),
        "symbols": plan.symbols, "schema": schema, "stype_in": plan.stype_in}
    records = int(call_with_retries(partial(client.metadata.get_record_count, **window),
                                    "metadata.get_record_count", plan.request))
    if records == 0:
        return 0, 0.0
    if kept is not None:
        window["start"] = kept[1]
    cost = float(call_with_retries(partial(client.metadata.get_cost, **window),
                                   "metadata.get_cost", plan.request))
    return records, cost


def _resolve_raw_symbols(client: db.Historical, req: DownloadRequest, dataset: str,
                         intervals: list[dict[str, Any]], start: dt.date,
                         end: dt.date) -> dict[str, Any]:
    """``instrument_id -> raw_symbol`` for the ids of a parent (2,000 ids per call)."""
    ids = sorted({str(e["s"]) for e in intervals if str(e.get("s") or "").isdigit()}, key=int)
    merged: dict[str, Any] = {"result": {}}
    for i in range(0, len(ids), RESOLVE_BATCH):
        batch = ids[i:i + RESOLVE_BATCH]
        resolve = partial(client.symbology.resolve, dataset=dataset, symbols=batch,
                          stype_in="instrument_id", stype_out="raw_symbol",
                          start_date=start, end_date=end)
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
        raise ConfigError(f"--max-cost: the download costs {usd(plan.cost)}, above the "
                          f"limit of {usd(limit)}; nothing downloaded")


def _existing(path: Path) -> Path | None:
    """The complete file of ``path``: itself, or an uncompressed ``.dbn`` copy of it."""
    plain = path.with_name(path.name.removesuffix(".zst"))
    return next((p for p in (path, plain) if p.is_file()), None)


def _file_name(dataset: str, day: dt.date, schema: str) -> str:
    return raw_file_name(dataset, day) if schema == MBO else definition_file_name(dataset, day)


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
