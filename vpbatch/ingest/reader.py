"""Bronze reader: Databento ``.dbn`` / ``.dbn.zst`` MBO files -> bounded numpy record chunks.

``open_mbo`` validates a file once (exists, not empty, complete, DBN, schema ``mbo``) and
returns an :class:`MboSource`. The source resolves a symbol to one ``instrument_id`` and one
``publisher_id`` and streams the matching records as ``MBO_DTYPE`` arrays of bounded size
(decoded bytes read into a fresh buffer per chunk and viewed as records), so memory never
grows with the file. Records of other types between the MBO records (symbol mappings,
system and error messages: live recordings, SPEC §14) are stepped over by their length
(:func:`~vpbatch.ingest.dbn_file.split_records`); their symbol mappings name the
instruments when the metadata has no mappings table.

Every problem is a one-line :class:`~vpbatch.errors.InputError` or
:class:`~vpbatch.errors.SymbolError` naming the file and what is wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, TypeVar

import numpy as np

from vpbatch.book.dtypes import F_LAST, MBO_DTYPE
from vpbatch.clock import NS_PER_SECOND
from vpbatch.errors import ConfigError, InputError, SymbolError, one_line
from vpbatch.ingest.dbn_file import (
    DECODE_ERRORS,
    MBO_SIZE,
    DbnStream,
    FileMetadata,
    OtherRecords,
    RecordError,
    leading_records,
    listing,
    mbo_records,
    open_validated,
    read_full,
    skip_metadata,
    split_records,
)
from vpbatch.ingest.definitions import read_definition_symbols
from vpbatch.ingest.input_digest import HashingFileSource
from vpbatch.ingest.publishers import PUBLISHERS
from vpbatch.ingest.symbology import SymbolMap, json_symbol_map, metadata_symbol_map
from vpbatch.products import resolve_product
from vpbatch.store.lake import find_definition_file, find_raw_file

#: ``length`` field of an MBO record (the record size in 4-byte words).
MBO_LENGTH_WORDS: Final = MBO_DTYPE.itemsize // 4
#: Default number of records per chunk (56 MB of records).
DEFAULT_CHUNK_RECORDS: Final = 1_000_000
#: Name of Databento's batch-download symbology file, looked up beside the input.
SYMBOLOGY_JSON: Final = "symbology.json"

_T = TypeVar("_T")


@dataclass(frozen=True)
class Selection:
    """The one book the engine sees: an instrument from one publisher."""

    instrument_id: int
    publisher_id: int
    symbol: str


def select_records(records: np.ndarray, selection: Selection) -> np.ndarray:
    """The records of one book: ``selection``'s instrument *and* publisher (SPEC §2).

    Returns ``records`` itself when every record matches (no copy), else the matches.
    """
    keep = ((records["instrument_id"] == selection.instrument_id)
            & (records["publisher_id"] == selection.publisher_id))
    n = int(np.count_nonzero(keep))
    return records if n == len(records) else records[keep]


def publisher_name(publisher_id: int) -> str:
    """Databento's name of a publisher id (``39`` -> ``'DBEQ.BASIC.XCHI'``).

    Parameters
    ----------
    publisher_id : int
        The ``publisher_id`` field of a record.

    Returns
    -------
    str
        The publisher's ``DATASET.VENUE`` name, or ``'unknown'`` for an id this version of
        databento does not know.
    """
    return _PUBLISHER_NAMES.get(int(publisher_id), "unknown")


_PUBLISHER_NAMES: Final = dict(PUBLISHERS)


def dataset_publishers(dataset: str) -> list[int]:
    """Every publisher id Databento lists for ``dataset`` (empty for an unknown dataset)."""
    return sorted(pid for pid, name in PUBLISHERS if name.rsplit(".", 1)[0] == dataset)


#: Symbology types whose symbols name a group of instruments, not one contract.
PARENT_STYPES: Final = ("parent", "continuous")


def _in_days(symbol_map: SymbolMap, first_day: dt.date, last_day: dt.date | None
             ) -> dict[int, str]:
    """``instrument_id -> symbol`` for the mapping intervals that overlap the file's days."""
    result: dict[int, str] = {}
    for iid, intervals in symbol_map.items():
        for start, end, symbol in intervals:
            if end <= first_day or (last_day is not None and start > last_day):
                continue
            result[int(iid)] = symbol
    return result


@dataclass(frozen=True)
class _Counts:
    """Records per ``(instrument_id, publisher_id)`` over the whole file (one streaming pass)."""

    by_key: dict[tuple[int, int], int]

    def instruments(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (iid, _), n in self.by_key.items():
            out[iid] = out.get(iid, 0) + n
        return out

    def publishers(self, instrument_id: int | None = None) -> dict[int, int]:
        out: dict[int, int] = {}
        for (iid, pid), n in self.by_key.items():
            if instrument_id is None or iid == instrument_id:
                out[pid] = out.get(pid, 0) + n
        return out


class MboSource:
    """A validated MBO file. Build it with :func:`open_mbo`.

    Attributes
    ----------
    path : Path
        The file.
    metadata : FileMetadata
        Dataset, schema, DBN version, time range, symbols and symbology types.
    """

    def __init__(self, path: Path, store: DbnStream, metadata: FileMetadata,
                 data: HashingFileSource | None = None, definition: Path | None = None) -> None:
        self.path = path
        self.metadata = metadata
        self._store = store
        self._data = data
        self._definition = definition
        self._json_parent = False
        self._counts: _Counts | None = None
        self._instruments: dict[int, str] | None = None
        #: Records of other types of the last complete pass; those before the first MBO record.
        self._other: OtherRecords | None = None
        self._leading: OtherRecords | None = None

    def __repr__(self) -> str:
        return f"MboSource({str(self.path)!r}, dataset={self.metadata.dataset})"

    @property
    def name(self) -> str:
        """The file name, as used in error messages."""
        return self.path.name

    def sha256(self) -> str:
        """Hex sha256 of the whole file, from the bytes the reader read (no second pass).

        Call it after streaming: only what the decoder never reached is read again.
        """
        if self._data is None:
            from vpbatch.store.files import file_sha256

            return file_sha256(self.path)
        try:
            return self._data.sha256()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror or exc}") from None

    # -- streaming -------------------------------------------------------------------------

    def _guarded(self, step: Callable[[], _T], done: int) -> _T:
        """Run one decoding step; any decoding problem becomes an InputError naming the file."""
        try:
            return step()
        except StopIteration:
            raise
        except DECODE_ERRORS as exc:
            raise InputError(f"{self.name}: corrupt or truncated data after {done:,} records "
                             f"({one_line(exc)})") from None
        except OSError as exc:
            raise InputError(f"{self.name}: read error after {done:,} records "
                             f"({one_line(exc)})") from None

    def iter_raw(self, chunk_records: int = DEFAULT_CHUNK_RECORDS) -> Iterator[np.ndarray]:
        """Every MBO record of the file (all instruments and publishers), in bounded chunks.

        Parameters
        ----------
        chunk_records : int, default 1_000_000
            Records read per chunk; a yielded chunk never holds more.

        Yields
        ------
        np.ndarray
            Non-empty, writable ``MBO_DTYPE`` arrays. Records of other types (symbol
            mappings, system and error messages) are stepped over by their length and
            counted (:meth:`other_records` after the last chunk).

        Raises
        ------
        InputError
            When the data cannot be decoded (corrupt or truncated file).
        """
        if chunk_records < 1:
            raise ConfigError(f"chunk_records: must be >= 1, was {chunk_records}")
        other = OtherRecords(version=self.metadata.version)
        done = 0
        last_flags = F_LAST
        reader = self._guarded(self._records_reader, done)
        step = chunk_records * MBO_SIZE
        carry = np.empty(0, np.uint8)
        while True:
            # A fresh buffer per chunk: the yielded records are views of it (no copy). It
            # holds chunk_records MBO records, or one whole record of another type.
            need = max(step, len(carry) + MBO_SIZE, 4 * int(carry[0]) if len(carry) else 0)
            buf = np.empty(need, np.uint8)
            buf[: len(carry)] = carry
            stop = len(carry) + self._guarded(
                functools.partial(read_full, reader, buf[len(carry):].data), done)
            try:
                runs, end = split_records(buf, stop, other)
            except RecordError as exc:
                raise InputError(f"{self.name}: corrupt record after "
                                 f"{done + exc.mbo_before:,} MBO records ({exc})") from None
            if runs:
                records = mbo_records(buf, runs)
                for at in range(0, len(records), chunk_records):
                    chunk = records[at: at + chunk_records]
                    done += len(chunk)
                    last_flags = int(chunk["flags"][-1])
                    yield chunk
            carry = buf[end:stop].copy()
            if stop < need:  # the stream ended
                break
        if len(carry):
            raise InputError(f"{self.name}: truncated: the data ends inside a record "
                             f"({len(carry)} bytes of it after {done:,} MBO records)")
        self._check_ends_whole(done, last_flags)
        self._other = other
        if other.mappings and self._instruments is not None:
            self._instruments = None  # name them again with every mapping record seen

    def _records_reader(self) -> IO[bytes]:
        """The decoded stream, after its metadata (read through the hashing file source)."""
        reader = self._store.reader
        skip_metadata(reader)
        return reader

    def other_records(self) -> OtherRecords | None:
        """Records of types other than MBO met by the last complete pass (None before one).

        Symbol mappings, system messages (heartbeats) and error messages, counted by type;
        a live recording holds them between its MBO records.
        """
        return self._other

    def _check_ends_whole(self, done: int, last_flags: int) -> None:
        """A file cut at a zstd frame boundary decodes cleanly: catch what the data shows.

        Databento ends every event with ``F_LAST``, so a complete file's last record has it;
        a query cut by its ``limit`` may end anywhere. A cut right after an ``F_LAST`` record
        cannot be seen in the data (docs/SEMANTICS.md).
        """
        limit = self.metadata.limit
        if done and not last_flags & F_LAST and not (limit is not None and done >= limit):
            raise InputError(f"{self.name}: truncated: the data ends inside an event (record "
                             f"{done:,} has no F_LAST); the file was probably cut at a zstd "
                             f"frame boundary")

    def iter_chunks(self, *, symbol: str | None = None, publisher_id: int | None = None,
                    chunk_records: int = DEFAULT_CHUNK_RECORDS) -> Iterator[np.ndarray]:
        """The records of one instrument from one publisher, in bounded chunks.

        Parameters
        ----------
        symbol : str, optional
            Raw symbol (``'MNQH6'``); may be omitted when the file holds one instrument.
        publisher_id : int, optional
            Required when the instrument has records from several publishers.
        chunk_records : int, default 1_000_000
            Records read per chunk; a yielded chunk never holds more.

        Yields
        ------
        np.ndarray
            Non-empty, writable ``MBO_DTYPE`` arrays in file order.

        Raises
        ------
        SymbolError
            When the symbol or publisher cannot be resolved (see :meth:`resolve`), or no
            record matched the selection (raised after the last chunk).
        InputError
            When the data cannot be decoded, or the file holds no MBO record at all.
        """
        selection = self.resolve(symbol, publisher_id)
        return self.iter_selection(selection, chunk_records=chunk_records)

    def iter_selection(self, selection: Selection, *,
                       chunk_records: int = DEFAULT_CHUNK_RECORDS) -> Iterator[np.ndarray]:
        """Like :meth:`iter_chunks` for an already resolved :class:`Selection`."""
        matched = seen = 0
        for records in self.iter_raw(chunk_records):
            mine = select_records(records, selection)
            if len(mine):
                yield mine
            matched += len(mine)
            seen += len(records)
        if seen == 0:
            raise InputError(f"{self.name}: no MBO records in the file (only a header: an empty "
                             f"download, or a file cut short at a zstd frame boundary)")
        if matched == 0:
            raise SymbolError(
                f"{self.name}: no MBO records for {selection.symbol} (instrument_id "
                f"{selection.instrument_id}, publisher {selection.publisher_id} "
                f"{publisher_name(selection.publisher_id)})"
            )

    # -- what is in the file ---------------------------------------------------------------

    def counts(self) -> dict[tuple[int, int], int]:
        """MBO records per ``(instrument_id, publisher_id)``: one streaming pass, then cached."""
        return dict(self._scan().by_key)

    def scan(self, on_chunk: Callable[[np.ndarray], None] | None = None,
             chunk_records: int = DEFAULT_CHUNK_RECORDS) -> dict[tuple[int, int], int]:
        """Stream the whole file once, counting records per instrument and publisher.

        Parameters
        ----------
        on_chunk : callable, optional
            Called with every chunk of MBO records (all instruments and publishers), so a
            caller can compute more statistics in the same pass.
        chunk_records : int, default 1_000_000
            Records per chunk.

        Returns
        -------
        dict[tuple[int, int], int]
            Records per ``(instrument_id, publisher_id)`` (also cached for :meth:`counts`).
        """
        totals: dict[tuple[int, int], int] = {}
        for records in self.iter_raw(chunk_records):
            keys = ((records["instrument_id"].astype(np.uint64) << np.uint64(16))
                    | records["publisher_id"].astype(np.uint64))
            uniq, n = np.unique(keys, return_counts=True)
            for key, count in zip(uniq.tolist(), n.tolist(), strict=True):
                pair = (key >> 16, key & 0xFFFF)
                totals[pair] = totals.get(pair, 0) + count
            if on_chunk is not None:
                on_chunk(records)
        self._counts = _Counts(totals)
        return dict(totals)

    def _scan(self) -> _Counts:
        if self._counts is None:
            self.scan()
        assert self._counts is not None
        return self._counts

    def record_count(self) -> int:
        """Number of MBO records in the file (all instruments and publishers)."""
        return sum(self._scan().by_key.values())

    def publishers(self, instrument_id: int | None = None) -> dict[int, int]:
        """``publisher_id -> record count``, for the whole file or one instrument."""
        return dict(sorted(self._scan().publishers(instrument_id).items()))

    def instrument_counts(self) -> dict[int, int]:
        """``instrument_id -> record count``."""
        return dict(sorted(self._scan().instruments().items()))

    def instruments(self) -> dict[int, str]:
        """``instrument_id -> raw symbol`` for the instruments of this file.

        The mapping comes from the file's metadata mappings, or, when the metadata has none
        (a live recording, SPEC §14), from the symbol mapping records in the stream (those
        before the first MBO record; every one once a full pass has read them), updated by
        a Databento ``symbology.json`` beside the file (its entries win, so a ``raw_symbol``
        symbology file can name the instruments of a ``parent``-symbology download). Without
        any of these,
        a file whose metadata names exactly one symbol and whose records carry one
        ``instrument_id`` (``stype_in=instrument_id`` downloads such as the MESH5 sample)
        maps that symbol to that id; otherwise every id found is listed as ``'#<id>'``.

        Returns
        -------
        dict[int, str]
            Sorted by instrument id.

        Raises
        ------
        InputError
            When ``symbology.json`` is unreadable, or the data cannot be decoded.
        """
        if self._instruments is None:
            mapped = self._metadata_mappings() or self._record_mappings()
            mapped.update(self._symbology_json())
            if self._parent_symbology:
                mapped.update(self._definition_symbols())
            if not mapped:
                present = sorted(self._scan().instruments())
                if len(self.metadata.symbols) == 1 and len(present) == 1:
                    mapped = {present[0]: self.metadata.symbols[0]}
                else:
                    mapped = {iid: f"#{iid}" for iid in present}
            self._instruments = dict(sorted(mapped.items()))
        return dict(self._instruments)

    def _day_range(self) -> tuple[dt.date, dt.date | None]:
        first = dt.datetime.fromtimestamp(self.metadata.start // NS_PER_SECOND, dt.UTC).date()
        end = self.metadata.end
        last = None if end is None else dt.datetime.fromtimestamp(
            (end - 1) // NS_PER_SECOND, dt.UTC).date()
        return first, last

    def _metadata_mappings(self) -> dict[int, str]:
        """The file's own mappings (read as databento's ``InstrumentMap`` reads them)."""
        meta = self._store.metadata
        try:
            symbol_map = metadata_symbol_map(meta.stype_in, meta.stype_out, meta.mappings)
        except ValueError as exc:
            raise InputError(f"{self.name}: unusable symbol mappings in the metadata "
                             f"({one_line(exc)})") from None
        return _in_days(symbol_map, *self._day_range())

    def _record_mappings(self) -> dict[int, str]:
        """``instrument_id -> symbol`` from the symbol mapping records in the stream.

        Every mapping record once a full pass has read them; before that, those ahead of
        the first MBO record (where a live recording keeps them), read from the file's start.
        """
        if self._other is not None:
            return dict(self._other.mappings)
        if self._leading is None:
            meta = self.metadata
            self._leading = self._guarded(
                lambda: leading_records(self.path, meta.compressed, meta.version), 0)
        return dict(self._leading.mappings)

    @property
    def _mappings_may_grow(self) -> bool:
        """Symbols come from mapping records and a full pass may find more of them."""
        return self._other is None and not self._store.metadata.mappings

    def _symbology_json(self) -> dict[int, str]:
        """A Databento ``symbology.json`` beside the file (``InstrumentMap.insert_json``)."""
        path = self.path.parent / SYMBOLOGY_JSON
        if not path.is_file():
            return {}
        try:
            doc = json.loads(path.read_text())
            symbol_map = json_symbol_map(doc)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: not a Databento symbology.json ({one_line(exc)})") from None
        if isinstance(doc, dict) and doc.get("stype_in") in PARENT_STYPES:
            self._json_parent = True
        return _in_days(symbol_map, *self._day_range())

    @property
    def _parent_symbology(self) -> bool:
        """The mappings name parents (``MNQ.FUT``): raw symbols come from definitions."""
        return self.metadata.stype_in in PARENT_STYPES or self._json_parent

    def definition_file(self) -> Path | None:
        """The definition file used for raw symbols: the given one, else the day's beside it."""
        return self._definition or find_definition_file(self.path)

    def _definition_symbols(self) -> dict[int, str]:
        path = self.definition_file()
        return {} if path is None else read_definition_symbols(path)

    # -- selection -------------------------------------------------------------------------

    def resolve(self, symbol: str | None = None, publisher_id: int | None = None) -> Selection:
        """Resolve a symbol (and publisher) to the one book the engine will see.

        Matching is exact (case-insensitive), so an outright never picks up a spread
        (``MNQH6`` never matches ``MNQH6-MNQM6``). When the dataset has a single
        publisher (GLBX.MDP3, XNAS.ITCH, …) no scan of the records is needed; otherwise the
        records are counted once per publisher.

        Parameters
        ----------
        symbol : str, optional
            Raw symbol. When omitted the file must hold exactly one instrument.
        publisher_id : int, optional
            Publisher to keep. When omitted the instrument must have records from exactly
            one publisher.

        Returns
        -------
        Selection

        Raises
        ------
        SymbolError
            Symbol not in the file, several instruments and no symbol, several publishers and
            none chosen, or a chosen publisher without records for the instrument.
        """
        iid, name = self.resolve_instrument(symbol)
        pid = self._resolve_publisher(iid, name, publisher_id)
        return Selection(instrument_id=iid, publisher_id=pid, symbol=name)

    def resolve_instrument(self, symbol: str | None = None) -> tuple[int, str]:
        """``(instrument_id, symbol)`` of a raw symbol, without choosing a publisher.

        Parameters
        ----------
        symbol : str, optional
            Raw symbol; when omitted the file must hold exactly one instrument.

        Returns
        -------
        tuple[int, str]

        Raises
        ------
        SymbolError
            Symbol not in the file, or several instruments and no symbol.
        """
        instruments = self.instruments()
        have = sorted(set(instruments.values()))
        if symbol is None or not str(symbol).strip():
            if len(instruments) != 1:
                raise SymbolError(f"{self.name}: {len(instruments)} instruments in file; choose "
                                  f"one symbol (have: {listing(have) or 'none'})")
            ids = list(instruments)
        else:
            wanted = str(symbol).strip()
            ids = [i for i, s in instruments.items() if s == wanted]
            if not ids:
                ids = [i for i, s in instruments.items() if s.upper() == wanted.upper()]
            if not ids and self._mappings_may_grow:
                # A symbol subscribed later in a live recording is mapped further on.
                self._scan()
                return self.resolve_instrument(symbol)
            if not ids:
                hint = ""
                if self._parent_symbology and self.definition_file() is None:
                    stype = self.metadata.stype_in if self.metadata.stype_in in PARENT_STYPES \
                        else "parent"
                    hint = (f"; the file uses {stype} symbology: "
                            f"give the day's instrument definitions (--definition FILE, or "
                            f"{self.path.name.split('.mbo.')[0]}.definition.dbn.zst beside it)")
                raise SymbolError(f"{self.name}: symbol '{wanted}' not in file "
                                  f"(have: {listing(have) or 'none'}){hint}")
        if len(ids) > 1:
            present = self._scan().instruments()
            ids = [i for i in ids if i in present] or ids[:1]
            if len(ids) > 1:
                raise SymbolError(f"{self.name}: symbol '{instruments[ids[0]]}' maps to several "
                                  f"instrument ids in this file ({', '.join(map(str, ids))})")
        return ids[0], instruments[ids[0]]

    def _resolve_publisher(self, iid: int, symbol: str, publisher_id: int | None) -> int:
        known = dataset_publishers(self.metadata.dataset)
        if self._counts is None and len(known) == 1 and publisher_id in (None, known[0]):
            return known[0]
        counts = self.publishers(iid)

        def described() -> str:
            return ", ".join(f"{p} {publisher_name(p)} ({n:,} records)"
                             for p, n in counts.items())

        if publisher_id is not None:
            if int(publisher_id) not in counts:
                have = described() or "none"
                raise SymbolError(f"{self.name}: publisher {publisher_id} has no records for "
                                  f"{symbol} (have: {have})")
            return int(publisher_id)
        if not counts:
            raise SymbolError(f"{self.name}: no MBO records for {symbol} (instrument_id {iid})")
        if len(counts) > 1:
            raise SymbolError(f"{self.name}: {symbol} has records from {len(counts)} publishers; "
                              f"choose one publisher id (have: {described()})")
        return next(iter(counts))


def open_mbo(path: Path, definition: Path | None = None) -> MboSource:
    """Open and validate a Databento MBO file (``.dbn`` or ``.dbn.zst``, DBN v1-v3).

    Parameters
    ----------
    path : Path
        The file.
    definition : Path, optional
        Instrument definitions naming the raw symbols of a parent-symbology file (default:
        the day's ``*.definition.dbn.zst`` beside the file, if any).

    Returns
    -------
    MboSource

    Raises
    ------
    InputError
        Missing file (the message lists what is in its folder), a folder, an empty file, a
        truncated or corrupt file, bytes that are not DBN, or a schema other than ``mbo``.
    """
    path = Path(path)
    store, metadata, data = open_validated(path, "mbo")
    return MboSource(path, store, metadata, data, None if definition is None else Path(definition))


def find_input(lake: Path, symbol: str, day: dt.date, *, path: Path | None = None) -> Path:
    """The raw MBO file for ``symbol`` on ``day``: ``path`` when given, else from the lake.

    Parameters
    ----------
    lake : Path
        Lake root (``raw/source=databento/...`` lives under it).
    symbol : str
        Contract (``MNQH6``) or ticker (``QQQ``); futures live under their root's folder.
    day : datetime.date
        Trading day of the file name (``glbx-mdp3-YYYYMMDD.mbo.dbn.zst``).
    path : Path, optional
        An explicit file; returned as is (validated by :func:`open_mbo`).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        No folder for the symbol, or no file for the day (the message lists the dates there).
    ConfigError
        An empty or spread symbol.
    """
    if path is not None:
        return Path(path)
    return find_raw_file(Path(lake), resolve_product(symbol), day)
