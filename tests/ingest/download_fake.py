"""A local HTTPS stand-in for the Databento Historical endpoints ``vpbatch download`` uses.

It answers ``symbology.resolve``, ``metadata.get_record_count``, ``metadata.get_cost`` and
``timeseries.get_range`` on 127.0.0.1 with TLS from a ``trustme`` test CA, and serves real
MBO records from the shared Databento files: the ESM4 records of 2024-05-08 verbatim, and
the same records moved by whole days (timestamps, header start/end and symbol mappings
shifted together) to stand in for other days. The header is written for each request
(its dataset, schema, symbols and stype_in), as the real service does. Definitions are the
real ES definition record of the shared file, renamed to the served contract. An equity
(GOOG on DBEQ.BASIC, its own records of the shared file, no definitions) is served too.

Faults are scripted per endpoint: statuses to answer before succeeding, streams cut after
half of the body (with or without a Content-Length), so tests can check retries and that no
partial file is ever left in the lake.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
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
from urllib.parse import parse_qs

import databento_dbn as dbn
import numpy as np
import trustme
import zstandard

KEY = "db-test-key-0000000000000000000"
DATASET = "GLBX.MDP3"
SYMBOL = "ESM4"
PARENT = "ES.FUT"
INSTRUMENT_ID = 5602
#: The equity served: GOOG's records of the shared DBEQ.BASIC file (no definitions).
EQUITY = "GOOG"
EQUITY_ID = 7151
#: The real day of the shared ESM4 file (Wednesday), and the days served (Wed..Fri).
REAL_DAY = dt.date(2024, 5, 8)
DAYS = (REAL_DAY, dt.date(2024, 5, 9), dt.date(2024, 5, 10))
#: The fake price list: dollars per record (the real service prices by bytes; any rule works).
PRICE_PER_RECORD = {"mbo": 0.0001, "definition": 0.01}
_NS_PER_DAY = 86_400 * 10**9
_MBO_SIZE = 56


def _decompress(path: Path) -> tuple[dbn.Metadata, bytes, int]:
    with open(path, "rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    (length,) = struct.unpack("<I", raw[4:8])
    decoder = dbn.DBNDecoder()
    decoder.write(raw[: 8 + length])
    metadata = decoder.decode()[0]
    assert isinstance(metadata, dbn.Metadata)
    return metadata, raw[8 + length:], raw[3]


def _shift_mbo(body: bytes, days: int) -> bytes:
    records = np.frombuffer(body, dtype=np.uint8).reshape(-1, _MBO_SIZE).copy()
    for offset in (8, 40):  # ts_event, ts_recv
        ts = records[:, offset:offset + 8].copy().view("<i8")
        ts += days * _NS_PER_DAY
        records[:, offset:offset + 8] = ts.view(np.uint8)
    return records.tobytes()


def _definition(body: bytes, day: dt.date) -> bytes:
    """The first real ES definition record, renamed to ESM4 and stamped on ``day``."""
    rec = bytearray(body[: body[0] * 4])
    at = rec.find(b"ESM3")
    rec[at:at + 4] = SYMBOL.encode()
    stamp = _day_ns(day) + 3_600 * 10**9
    struct.pack_into("<I", rec, 4, INSTRUMENT_ID)
    struct.pack_into("<Q", rec, 8, stamp)
    struct.pack_into("<Q", rec, 16, stamp)
    return bytes(rec)


def _day_ns(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 10**9


def _parse_day(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


@dataclass
class Listing:
    """One instrument the fake knows: its names, and record bytes per (schema, day)."""

    dataset: str
    symbol: str
    parent: str | None
    instrument_id: int
    version: int
    bodies: dict[tuple[str, dt.date], bytes]

    def names(self) -> set[str]:
        return {self.symbol, str(self.instrument_id)} | ({self.parent} if self.parent else set())

    def records(self, schema: str, day: dt.date) -> int:
        body = self.bodies.get((schema, day), b"")
        return len(body) // (body[0] * 4) if body else 0


@dataclass
class Catalog:
    """Every listing served."""

    listings: list[Listing]

    @classmethod
    def from_shared(cls, mbo_file: Path, definition_file: Path,
                    equity_file: Path | None = None) -> Catalog:
        """ESM4 (GLBX.MDP3, with definitions) on DAYS; GOOG (DBEQ.BASIC, none) on its day."""
        _, mbo, version = _decompress(mbo_file)
        _, definitions, _ = _decompress(definition_file)
        bodies: dict[tuple[str, dt.date], bytes] = {}
        for day in DAYS:
            shift = (day - REAL_DAY).days
            bodies["mbo", day] = mbo if shift == 0 else _shift_mbo(mbo, shift)
            bodies["definition", day] = _definition(definitions, day)
        listings = [Listing(DATASET, SYMBOL, PARENT, INSTRUMENT_ID, version, bodies)]
        if equity_file is not None:
            meta, body, version = _decompress(equity_file)
            records = np.frombuffer(body, dtype=np.uint8).reshape(-1, _MBO_SIZE)
            ids = records[:, 4:8].copy().view("<u4").ravel()
            day = dt.datetime.fromtimestamp(meta.start / 1e9, dt.UTC).date()
            listings.append(Listing(str(meta.dataset), EQUITY, None, EQUITY_ID, version, {
                ("mbo", day): records[ids == EQUITY_ID].tobytes()}))
        return cls(listings)

    def find(self, dataset: str, symbols: list[str]) -> Listing | None:
        for listing in self.listings:
            if listing.dataset == dataset and set(symbols) <= listing.names():
                return listing
        return None

    def datasets(self) -> set[str]:
        return {listing.dataset for listing in self.listings}

    def stream(self, form: dict[str, str]) -> bytes:
        """The zstd DBN answer of a one-day ``get_range``."""
        day = _parse_day(form["start"])
        schema = form["schema"]
        symbols = form["symbols"].split(",")
        listing = self.find(form["dataset"], symbols)
        start = _day_ns(day)
        interval = SimpleNamespace(start_date=day, end_date=day + dt.timedelta(days=1),
                                   symbol=str(listing.instrument_id if listing else 0))
        header = dbn.Metadata(
            dataset=form["dataset"], start=start, end=start + _NS_PER_DAY,
            stype_in=dbn.SType(form["stype_in"]), stype_out=dbn.SType("instrument_id"),
            schema=dbn.Schema(schema), symbols=symbols,
            mappings=[SimpleNamespace(raw_symbol=s, intervals=[interval]) for s in symbols],
            version=listing.version if listing else 3,
        ).encode()
        body = listing.bodies.get((schema, day), b"") if listing else b""
        return zstandard.ZstdCompressor().compress(header + body)


@dataclass
class Script:
    """Faults to inject: statuses before success per endpoint, cut streams, empty answers."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    cuts: int = 0
    empty: int = 0
    cut_with_length: bool = True
    notice: str | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def calls(self, endpoint: str) -> list[dict[str, str]]:
        return [form for name, form in self.requests if name == endpoint]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        endpoint = self.path.rsplit("/", 1)[-1]
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        script = self.server.script
        script.requests.append((endpoint, form))
        if not self._authorised():
            return self._json(401, {"detail": "Authentication failed."})
        pending = script.statuses.get(endpoint)
        if pending:
            status = pending.pop(0)
            extra = {"Retry-After": "0"} if status == 429 else {}
            return self._json(status, {"detail": f"scripted {status}"}, extra)
        if form.get("dataset") not in self.server.catalog.datasets():
            return self._json(422, {"detail": {
                "case": "dataset_invalid", "docs": "https://databento.com/docs",
                "message": f"Invalid dataset '{form.get('dataset')}'."}})
        if endpoint == "symbology.resolve":
            return self._json(200, self._resolve(form))
        if endpoint == "metadata.get_record_count":
            return self._json(200, self._count(form))
        if endpoint == "metadata.get_cost":
            return self._json(200, round(self._count(form) * PRICE_PER_RECORD[form["schema"]], 6))
        if endpoint == "timeseries.get_range":
            return self._stream(form)
        return self._json(404, {"detail": f"no endpoint {endpoint}"})

    def _authorised(self) -> bool:
        expected = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        return self.headers.get("Authorization") == expected

    def _count(self, form: dict[str, str]) -> int:
        listing = self.server.catalog.find(form["dataset"], form.get("symbols", "").split(","))
        return listing.records(form["schema"], _parse_day(form["start"])) if listing else 0

    def _resolve(self, form: dict[str, str]) -> dict[str, Any]:
        symbols = form["symbols"].split(",")
        first, end = _parse_day(form["start_date"]), _parse_day(form["end_date"])
        result: dict[str, list[dict[str, str]]] = {}
        not_found = []
        for s in symbols:  # listed on every day asked, with or without data
            listing = self.server.catalog.find(form["dataset"], [s])
            if listing is None:
                not_found.append(s)
                continue
            out = (listing.symbol if form["stype_out"] == "raw_symbol"
                   else str(listing.instrument_id))
            result[s] = [{"d0": str(first), "d1": str(end), "s": out}]
        return {"result": result, "symbols": symbols, "stype_in": form["stype_in"],
                "stype_out": form["stype_out"], "start_date": str(first), "end_date": str(end),
                "partial": [], "not_found": not_found, "message": "OK", "status": 0}

    def _stream(self, form: dict[str, str]) -> None:
        data = self.server.catalog.stream(form)
        script = self.server.script
        if script.empty > 0:
            script.empty -= 1
            data = b""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if script.cuts > 0:
            script.cuts -= 1
            if script.cut_with_length:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
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
