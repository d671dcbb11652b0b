"""A local HTTPS stand-in for the Databento Historical endpoints ``vpbatch download`` uses.

It answers on 127.0.0.1 (TLS from a ``trustme`` test CA) under the paths the official client
builds (``/v0/…``) and checks each request the way the service would: the method, every
parameter the client sends (``end``, ``stype_in``, ``stype_out``, ``encoding``,
``compression``, …), the 2,000-symbol limit and the dataset's available range. A request it
does not understand is a 422 (an unknown path a 404), never an answer.

Data is real: the ESM4 records of 2024-05-08 verbatim, moved by whole days for 05-09 and
05-10; the parent ``ES.FUT`` also holds ESU4 (the first 13,700 ESM4 records, 50 points up),
the ESM4-ESU4 spread (500 records), ESH5 (listed from 05-09) and 2,300 user-defined spreads,
so a parent resolves to 2,304 instruments with several intervals, as on the service. ESH4's
real Sunday file (2023-12-24: 8,725 snapshot records at 13:00 UTC) stands for weekends;
GOOG (DBEQ.BASIC) and BRK.B (GOOG's records of one venue, on XNAS.ITCH) for equities.
Definitions are the real ES definition record, renamed and stamped per instrument and day.

Costs follow the service's shape: bytes of records in the window times a unit price in US
dollars per GB (the shape of ``metadata.list_unit_prices``; the figures are plausible, not
Databento's price list). Faults are scripted: statuses before success, streams cut after a
number of records (with or without a Content-Length), answers that end early, counts that
differ, a moving end of the available range.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import databento as db
import databento_dbn as dbn
import numpy as np
import pytest
import trustme
import zstandard

from tests.conftest import data_file

KEY = "db-test-key-0000000000000000000"
DATASET = "GLBX.MDP3"
SYMBOL = "ESM4"
PARENT = "ES.FUT"
INSTRUMENT_ID = 5602
#: The other outright, the calendar spread and the contract listed from the second day.
NEXT_SYMBOL, NEXT_ID, NEXT_RECORDS = "ESU4", 4916, 13_700
SPREAD_SYMBOL, SPREAD_ID, SPREAD_RECORDS = "ESM4-ESU4", 8007, 500
NEW_SYMBOL, NEW_ID = "ESH5", 183748
#: User-defined spreads of the parent (definitions only, no book records that week).
UDS_COUNT, UDS_FIRST_ID = 2_300, 300_000
#: The equity served: GOOG's records of the shared DBEQ.BASIC file (no definitions).
EQUITY = "GOOG"
EQUITY_ID = 7151
#: A dotted ticker on XNAS.ITCH: GOOG's records of one DBEQ venue, relabelled.
DOTTED, DOTTED_ID, DOTTED_VENUE = "BRK.B", 1130, 39
#: The real day of the shared ESM4 file (Wednesday), and the days served (Wed..Fri).
REAL_DAY = dt.date(2024, 5, 8)
DAYS = (REAL_DAY, dt.date(2024, 5, 9), dt.date(2024, 5, 10))
#: Days the contracts are listed (symbology resolves), the weekend without records included.
LISTED = (*DAYS, dt.date(2024, 5, 11), dt.date(2024, 5, 12))
ESM4_RECORDS = 13_796
#: ESH4's real Sunday file; Saturday before it has nothing.
SUNDAY, SUNDAY_SYMBOL, SUNDAY_ID, SUNDAY_RECORDS = dt.date(2023, 12, 24), "ESH4", 17077, 8_725
#: US dollars per GB of records, per dataset and schema (``list_unit_prices``' shape).
UNIT_PRICES = {"GLBX.MDP3": {"mbo": 2.40, "definition": 5.00},
               "DBEQ.BASIC": {"mbo": 0.50, "definition": 5.00},
               "XNAS.ITCH": {"mbo": 1.20, "definition": 5.00}}
#: Available range per dataset (``end`` exclusive: intraday, as the live-data rules leave it).
RANGES = {"GLBX.MDP3": ("2010-06-06T00:00:00.000000000Z", "2024-05-13T14:30:00.000000000Z"),
          "DBEQ.BASIC": ("2023-03-28T00:00:00.000000000Z", "2024-05-13T14:30:00.000000000Z"),
          "XNAS.ITCH": ("2018-05-01T00:00:00.000000000Z", "2024-05-13T14:30:00.000000000Z")}
SCHEMAS = ("mbo", "definition")
STYPES = ("raw_symbol", "parent", "instrument_id")
MAX_SYMBOLS = 2_000
_NS_PER_DAY = 86_400 * 10**9
_MBO_SIZE = 56
_TS_RECV = {"mbo": 40, "definition": 16}
_UNDEF_PRICE = 2**63 - 1
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?|\d{1,19}")
#: Parameters of each route, as the installed client sends them: (required, optional).
_ROUTES: dict[tuple[str, str], tuple[set[str], set[str]]] = {
    ("POST", "/v0/symbology.resolve"): (
        {"dataset", "symbols", "stype_in", "stype_out", "start_date", "end_date"}, set()),
    ("POST", "/v0/metadata.get_record_count"): (
        {"dataset", "symbols", "schema", "start", "end", "stype_in"}, {"limit"}),
    ("POST", "/v0/metadata.get_cost"): (
        {"dataset", "symbols", "schema", "start", "end", "stype_in", "stype_out"}, {"limit"}),
    ("POST", "/v0/timeseries.get_range"): (
        {"dataset", "symbols", "schema", "start", "end", "stype_in", "stype_out", "encoding",
         "compression"}, {"limit"}),
    ("GET", "/v0/metadata.get_dataset_range"): ({"dataset"}, set()),
}


def _decompress(path: Path) -> tuple[dbn.Metadata, bytes, int]:
    with open(path, "rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    (length,) = struct.unpack("<I", raw[4:8])
    decoder = dbn.DBNDecoder()
    decoder.write(raw[: 8 + length])
    metadata = decoder.decode()[0]
    assert isinstance(metadata, dbn.Metadata)
    return metadata, raw[8 + length:], raw[3]


def _rows(body: bytes, size: int) -> np.ndarray:
    return np.frombuffer(body, dtype=np.uint8).reshape(-1, size).copy()


def _field(rows: np.ndarray, offset: int, kind: str = "<i8") -> np.ndarray:
    """A view of one little-endian field of every record (writes go to ``rows``)."""
    width = np.dtype(kind).itemsize
    return rows[:, offset:offset + width].view(kind).reshape(-1)


def _relabel(rows: np.ndarray, instrument_id: int, price_shift: int = 0,
             publisher_id: int | None = None) -> np.ndarray:
    out = rows.copy()
    _field(out, 4, "<u4")[:] = instrument_id
    if publisher_id is not None:
        _field(out, 2, "<u2")[:] = publisher_id
    prices = _field(out, 24)
    prices[prices != _UNDEF_PRICE] += price_shift
    return out


def _shift_days(rows: np.ndarray, days: int) -> np.ndarray:
    out = rows.copy()
    for offset in (8, 40):  # ts_event, ts_recv
        _field(out, offset)[:] += days * _NS_PER_DAY
    return out


def day_ns(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 10**9


def _parse_time(text: str) -> int:
    """``start``/``end`` as the service takes them: a date, an ISO 8601 time, or UNIX ns."""
    if not _TIME_RE.fullmatch(text):
        raise ValueError(text)
    if text.isdigit():
        return int(text)
    if "T" not in text:
        return day_ns(dt.date.fromisoformat(text))
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000


def _stamp_ns(text: str) -> int:
    return _parse_time(re.sub(r"(\.\d{6})\d+", r"\1", text))


class _Definitions:
    """Definition records made from the real ES one: renamed, re-numbered, stamped."""

    def __init__(self, path: Path) -> None:
        store = db.DBNStore.from_file(path)
        self.version = int(store.metadata.version)
        self.template = store.to_ndarray()[:1].copy()

    def make(self, symbol: str, instrument_id: int, day: dt.date, order: int,
             spread: bool) -> np.ndarray:
        rec = self.template.copy()
        stamp = day_ns(day) + 3_600 * 10**9 + order
        rec["instrument_id"] = instrument_id
        rec["ts_event"] = rec["ts_recv"] = stamp
        rec["raw_symbol"] = symbol.encode()
        rec["instrument_class"] = b"S" if spread else b"F"
        return np.frombuffer(rec.tobytes(), np.uint8).reshape(1, -1).copy()


@dataclass
class Listing:
    """One instrument: its names, the days it is listed and its records per (schema, day)."""

    dataset: str
    symbol: str
    instrument_id: int
    parent: str | None
    days: tuple[dt.date, ...]
    version: int
    bodies: dict[tuple[str, dt.date], np.ndarray] = field(default_factory=dict)

    def matches(self, stype_in: str, symbols: set[str]) -> bool:
        name = {"raw_symbol": self.symbol, "parent": self.parent,
                "instrument_id": str(self.instrument_id)}[stype_in]
        return name in symbols

    def interval(self, first: dt.date, end: dt.date) -> tuple[dt.date, dt.date] | None:
        """The listed days within ``[first, end)`` as one ``[d0, d1)`` interval."""
        inside = [d for d in self.days if first <= d < end]
        return (min(inside), max(inside) + dt.timedelta(days=1)) if inside else None


@dataclass
class Catalog:
    """Every listing served."""

    listings: list[Listing]

    @classmethod
    def from_shared(cls, mbo_file: Path, definition_file: Path, equity_file: Path,
                    sunday_file: Path) -> Catalog:
        """The listings of the module docstring, from the shared Databento files."""
        defs = _Definitions(definition_file)
        _, mbo, version = _decompress(mbo_file)
        esm4 = _rows(mbo, _MBO_SIZE)
        uds = [(f"UD:1V: VT {n:010d}", UDS_FIRST_ID + n) for n in range(UDS_COUNT)]
        parent = [
            Listing(DATASET, SYMBOL, INSTRUMENT_ID, PARENT, LISTED, version),
            Listing(DATASET, NEXT_SYMBOL, NEXT_ID, PARENT, LISTED, version),
            Listing(DATASET, SPREAD_SYMBOL, SPREAD_ID, PARENT, LISTED, version),
            Listing(DATASET, NEW_SYMBOL, NEW_ID, PARENT, LISTED[1:], version),
            *(Listing(DATASET, name, iid, PARENT, LISTED, version) for name, iid in uds)]
        for day in DAYS:
            real = _shift_days(esm4, (day - REAL_DAY).days)
            parent[0].bodies["mbo", day] = real
            parent[1].bodies["mbo", day] = _relabel(real[:NEXT_RECORDS], NEXT_ID, 50 * 10**9)
            parent[2].bodies["mbo", day] = _relabel(real[:SPREAD_RECORDS], SPREAD_ID,
                                                    -5_190 * 10**9)
        for order, listing in enumerate(parent):
            for day in (d for d in listing.days if d in DAYS):  # no definitions at weekends
                listing.bodies["definition", day] = defs.make(
                    listing.symbol, listing.instrument_id, day, order, order >= 2)
        meta, body, sunday_version = _decompress(sunday_file)
        sunday = Listing(DATASET, SUNDAY_SYMBOL, SUNDAY_ID, PARENT,
                         (SUNDAY - dt.timedelta(days=1), SUNDAY), sunday_version)
        sunday.bodies["mbo", SUNDAY] = _rows(body, _MBO_SIZE)
        sunday.bodies["definition", SUNDAY] = defs.make(SUNDAY_SYMBOL, SUNDAY_ID, SUNDAY, 0,
                                                        False)
        meta, body, eq_version = _decompress(equity_file)
        records = _rows(body, _MBO_SIZE)
        ids = _field(records, 4, "<u4")
        venues = _field(records, 2, "<u2")
        eq_day = dt.datetime.fromtimestamp(meta.start / 1e9, dt.UTC).date()
        goog = Listing(str(meta.dataset), EQUITY, EQUITY_ID, None, (eq_day,), eq_version,
                       {("mbo", eq_day): records[ids == EQUITY_ID]})
        xnas = next(p.to_int() for p in db.Publisher if str(p.dataset) == "XNAS.ITCH")
        dotted = Listing("XNAS.ITCH", DOTTED, DOTTED_ID, None, (eq_day,), eq_version, {
            ("mbo", eq_day): _relabel(records[(ids == EQUITY_ID) & (venues == DOTTED_VENUE)],
                                      DOTTED_ID, publisher_id=xnas)})
        return cls([*parent, sunday, goog, dotted])

    def datasets(self) -> set[str]:
        return {listing.dataset for listing in self.listings}

    def select(self, dataset: str, stype_in: str, symbols: list[str]) -> list[Listing]:
        wanted = set(symbols)
        return [x for x in self.listings
                if x.dataset == dataset and x.matches(stype_in, wanted)]

    def records(self, listings: list[Listing], schema: str, start: int, end: int) -> np.ndarray:
        """The records of ``listings`` with ``start <= ts_recv < end``, merged by ``ts_recv``."""
        parts = [body for x in listings for (s, day), body in sorted(x.bodies.items())
                 if s == schema and day_ns(day) < end and day_ns(day) + _NS_PER_DAY > start]
        if not parts:
            return np.zeros((0, _MBO_SIZE if schema == "mbo" else 1), np.uint8)
        rows = np.concatenate(parts)
        ts = _field(rows, _TS_RECV[schema], "<u8")
        rows = rows[np.argsort(ts, kind="stable")]
        ts = _field(rows, _TS_RECV[schema], "<u8")
        return rows[(ts >= start) & (ts < end)]

    def header(self, form: dict[str, str], listings: list[Listing], start: int,
               end: int) -> bytes:
        """The DBN metadata the service writes for a ``get_range`` request."""
        first = dt.datetime.fromtimestamp(start // 10**9, dt.UTC).date()
        last = dt.datetime.fromtimestamp((end - 1) // 10**9, dt.UTC).date()
        symbols = form["symbols"].split(",")
        mappings = []
        for symbol in symbols:
            intervals = []
            for x in self.select(form["dataset"], form["stype_in"], [symbol]):
                span = x.interval(first, last + dt.timedelta(days=1))
                if span is not None:
                    intervals.append(SimpleNamespace(start_date=span[0], end_date=span[1],
                                                     symbol=str(x.instrument_id)))
            mappings.append(SimpleNamespace(raw_symbol=symbol, intervals=intervals))
        return dbn.Metadata(
            dataset=form["dataset"], start=start, end=end,
            stype_in=dbn.SType(form["stype_in"]), stype_out=dbn.SType("instrument_id"),
            schema=dbn.Schema(form["schema"]), symbols=symbols, mappings=mappings,
            not_found=[s for s, m in zip(symbols, mappings, strict=True) if not m.intervals],
            version=listings[0].version if listings else 3,
        ).encode()


@dataclass
class Script:
    """Faults to inject and what was asked.

    ``cuts`` streams are cut (after ``cut_after`` records when set, else halfway through
    the compressed bytes); ``short`` answers end cleanly ``short_by`` records early;
    ``count_extra`` is added to every record count (a count the data never matches).
    """

    statuses: dict[str, list[int]] = field(default_factory=dict)
    cuts: int = 0
    cut_after: int | None = None
    cut_with_length: bool = True
    empty: int = 0
    short: int = 0
    short_by: int = 0
    count_extra: int = 0
    notice: str | None = None
    available_end: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: Per ``get_range`` answer: its ``start`` and the records it holds (before any cut).
    served: list[tuple[str, int]] = field(default_factory=list)

    def calls(self, endpoint: str) -> list[dict[str, str]]:
        return [form for name, form in self.requests if name == endpoint]


class _Refused(Exception):
    def __init__(self, status: int, case: str, message: str) -> None:
        super().__init__(message)
        self.status, self.case, self.message = status, case, message


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._serve("GET", url.path, url.query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._serve("POST", urlsplit(self.path).path, self.rfile.read(length).decode())

    def _serve(self, method: str, path: str, query: str) -> None:
        pairs = parse_qs(query, keep_blank_values=True)
        form = {k: v[0] for k, v in pairs.items()}
        endpoint = path.rsplit("/", 1)[-1]
        script = self.server.script
        script.requests.append((endpoint, form))
        if not self._authorised():
            return self._json(401, {"detail": "Authentication failed."})
        route = _ROUTES.get((method, path))
        if route is None:
            known = any(p == path for _, p in _ROUTES)
            return self._json(405 if known else 404,
                              {"detail": "Method Not Allowed" if known else "Not Found"})
        pending = script.statuses.get(endpoint)
        if pending:
            status = pending.pop(0)
            extra = {"Retry-After": "0"} if status == 429 else {}
            return self._json(status, {"detail": f"scripted {status}"}, extra)
        try:
            self._check_params(form, *route, pairs)
            if endpoint == "metadata.get_dataset_range":
                return self._json(200, self._range_doc(form["dataset"]))
            if endpoint == "symbology.resolve":
                return self._json(200, self._resolve(form))
            listings, schema, start, end = self._window(form)
            records = self.server.catalog.records(listings, schema, start, end)
            if endpoint == "metadata.get_record_count":
                return self._json(200, len(records) + script.count_extra if len(records)
                                  else 0)
            if endpoint == "metadata.get_cost":
                price = UNIT_PRICES[form["dataset"]][schema]
                return self._json(200, records.size / 1e9 * price)
            return self._stream(form, listings, records, start, end)
        except _Refused as exc:
            return self._json(exc.status, {"detail": {
                "case": exc.case, "message": exc.message, "status_code": exc.status,
                "docs": "https://databento.com/docs/api-reference-historical", "payload": form}})

    def _authorised(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        return self.headers.get("Authorization") == expected

    # -- request checks ----------------------------------------------------------------------

    def _check_params(self, form: dict[str, str], required: set[str], optional: set[str],
                      pairs: dict[str, list[str]]) -> None:
        missing = sorted(required - set(form))
        if missing:
            raise _Refused(422, "param_missing", f"Missing required parameter `{missing[0]}`.")
        unknown = sorted(set(form) - required - optional)
        if unknown:
            raise _Refused(422, "param_unknown", f"Unknown parameter `{unknown[0]}`.")
        if any(len(v) > 1 for v in pairs.values()):
            raise _Refused(422, "param_repeated", "A parameter was given more than once.")
        if form["dataset"] not in self.server.catalog.datasets():
            raise _Refused(422, "dataset_invalid", f"Invalid dataset '{form['dataset']}'.")
        for name, allowed in (("encoding", ("dbn",)), ("compression", ("zstd",)),
                              ("schema", SCHEMAS), ("stype_in", STYPES)):
            if name in form and form[name] not in allowed:
                raise _Refused(422, f"{name}_invalid", f"The stand-in serves {name} "
                               f"{' or '.join(allowed)} only, was '{form[name]}'.")
        if "symbols" in form:
            self._check_symbols(form)

    @staticmethod
    def _check_symbols(form: dict[str, str]) -> None:
        symbols = form["symbols"].split(",")
        if len(symbols) > MAX_SYMBOLS:
            raise _Refused(422, "symbols_too_many", f"Too many symbols ({len(symbols):,}); "
                           f"at most {MAX_SYMBOLS:,} per request.")
        stype_in, stype_out = form["stype_in"], form.get("stype_out", "instrument_id")
        pattern = {"raw_symbol": r"[^,\s]+", "parent": r"[A-Z0-9]+\.(FUT|OPT)",
                   "instrument_id": r"\d+"}[stype_in]
        bad = [s for s in symbols if not re.fullmatch(pattern, s)]
        if bad:
            raise _Refused(422, "symbology_invalid_symbol",
                           f"'{bad[0]}' is not a valid {stype_in} symbol.")
        valid_out = "raw_symbol" if stype_in == "instrument_id" else "instrument_id"
        if stype_out != valid_out:
            raise _Refused(422, "symbology_invalid_combination",
                           f"stype_in '{stype_in}' cannot map to stype_out '{stype_out}'.")

    def _range(self, dataset: str) -> tuple[int, int, str, str]:
        first, last = RANGES[dataset]
        last = self.server.script.available_end.get(dataset, last)
        return _stamp_ns(first), _stamp_ns(last), first, last

    def _range_doc(self, dataset: str) -> dict[str, Any]:
        _, _, first, last = self._range(dataset)
        return {"start": first, "end": last,
                "schema": {s: {"start": first, "end": last} for s in (*SCHEMAS, "trades")}}

    def _window(self, form: dict[str, str]) -> tuple[list[Listing], str, int, int]:
        try:
            start, end = _parse_time(form["start"]), _parse_time(form["end"])
        except ValueError as exc:
            raise _Refused(422, "datetime_invalid", f"Invalid datetime '{exc}'.") from None
        if start >= end:
            raise _Refused(422, "datetime_invalid_range", "`start` must be before `end`.")
        first, last, first_text, last_text = self._range(form["dataset"])
        if start < first:
            raise _Refused(422, "data_start_before_available_start",
                           f"The dataset {form['dataset']} has data available from "
                           f"'{first_text}'; `start` is before it.")
        if end > last:
            raise _Refused(422, "data_end_after_available_end",
                           f"The dataset {form['dataset']} has data available up to "
                           f"'{last_text}'. The `end` in the query ('{form['end']}') is after "
                           f"the available range. Try requesting with an earlier `end`.")
        listings = self.server.catalog.select(form["dataset"], form["stype_in"],
                                              form["symbols"].split(","))
        return listings, form["schema"], start, end

    # -- answers ----------------------------------------------------------------------------

    def _resolve(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            first = dt.date.fromisoformat(form["start_date"])
            end = dt.date.fromisoformat(form["end_date"])
        except ValueError:
            raise _Refused(422, "date_invalid", "Invalid `start_date` or `end_date`.") from None
        if first >= end:
            raise _Refused(422, "date_invalid_range", "`start_date` must be before `end_date`.")
        symbols = form["symbols"].split(",")
        result: dict[str, list[dict[str, str]]] = {}
        partial, not_found = [], []
        for s in symbols:
            entries = []
            for x in self.server.catalog.select(form["dataset"], form["stype_in"], [s]):
                span = x.interval(first, end)
                if span is None:
                    continue
                out = x.symbol if form["stype_out"] == "raw_symbol" else str(x.instrument_id)
                entries.append({"d0": str(span[0]), "d1": str(span[1]), "s": out})
            if not entries:
                not_found.append(s)
                continue
            result[s] = entries
            if min(e["d0"] for e in entries) > str(first) or max(
                    e["d1"] for e in entries) < str(end):
                partial.append(s)
        return {"result": result, "symbols": symbols, "stype_in": form["stype_in"],
                "stype_out": form["stype_out"], "start_date": str(first), "end_date": str(end),
                "partial": partial, "not_found": not_found, "message": "OK", "status": 0}

    def _stream(self, form: dict[str, str], listings: list[Listing], records: np.ndarray,
                start: int, end: int) -> None:
        script = self.server.script
        header = self.server.catalog.header(form, listings, start, end)
        body = records
        if script.short > 0 and len(records):
            script.short -= 1
            body = records[:max(len(records) - script.short_by, 0)]
        script.served.append((form["start"], len(body)))
        cut = script.cuts > 0
        if cut:
            script.cuts -= 1
        data, cut_at = _compress(header, body, script.cut_after if cut else None)
        if script.empty > 0:
            script.empty -= 1
            data, cut_at = b"", 0
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if cut:
            if script.cut_with_length:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:cut_at])
            self.wfile.flush()
            self.close_connection = True
            return
        if script.notice:
            self.send_header("X-Warning", json.dumps([f"Warning: {script.notice}"]))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _compress(header: bytes, body: np.ndarray, cut_after: int | None) -> tuple[bytes, int]:
    """The zstd stream of an answer, and where a cut falls: just after the block holding the
    first ``cut_after`` records (flushed as a streaming compressor does), else halfway."""
    if cut_after is None:
        data = zstandard.ZstdCompressor().compress(header + body.tobytes())
        return data, len(data) // 2
    cobj = zstandard.ZstdCompressor().compressobj()
    head = cobj.compress(header + body[:cut_after].tobytes())
    head += cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    rest = cobj.compress(body[cut_after:].tobytes()) + cobj.flush()
    return head + rest, len(head) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, catalog: Catalog, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.catalog = catalog
        self.script = script


@contextmanager
def serve(catalog: Catalog, ca_file: Path) -> Iterator[tuple[str, Script]]:
    """Run the fake on 127.0.0.1; yields its gateway URL and its fault script.

    ``ca_file`` receives the test CA (point ``REQUESTS_CA_BUNDLE`` at it).
    """
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    script = Script()
    server = _Server(catalog, script)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@functools.cache
def shared_catalog() -> Catalog:
    """The catalog of the module docstring, built once per test process."""
    return Catalog.from_shared(data_file("glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"),
                               data_file("glbx-mdp3-es-fut.definition.dbn.zst"),
                               data_file("dbeq-basic-goog-20240403.mbo.dbn.zst"),
                               data_file("glbx-mdp3-esh4-20231224.mbo.dbn.zst"))


def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    """The body of a ``fake`` fixture: the stand-in running, the client pointed at it."""
    ca_file = tmp_path / "test-ca.pem"
    with serve(shared_catalog(), ca_file) as (gateway, script):
        monkeypatch.setenv("DATABENTO_API_KEY", KEY)
        monkeypatch.setenv("VPBATCH_DATABENTO_GATEWAY", gateway)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        yield script
