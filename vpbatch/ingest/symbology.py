"""``instrument_id -> [(start, end, symbol)]`` from a DBN file's metadata or a ``symbology.json``.

The metadata's mappings are read here, as databento's ``InstrumentMap.insert_metadata`` and
``build_symbol_map`` read them (``tests/ingest/test_symbology.py`` compares the two on every
test file), because importing ``databento.common.symbology`` imports pandas and databento's
clients: about 0.6 s of every build's start. A ``symbology.json`` beside a file is rare and
its dates are free-form strings, so it goes through databento's own parser.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeAlias

from databento_dbn import SType

#: ``instrument_id -> [(start_date, end_date, symbol), ...]``, intervals ordered by start.
SymbolMap: TypeAlias = dict[int, list[tuple[dt.date, dt.date, str]]]


def _date(value: object, field: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    if isinstance(value, dt.date):
        return value
    raise ValueError(f"failed to parse date range: {field}={value!r}")


def _instrument_id(symbol_in: object, stype_in: object, symbol_out: object,
                   stype_out: object) -> tuple[str, int]:
    """``(symbol, instrument_id)`` of one mapping: one of its two sides is the instrument id."""
    if stype_in == SType.INSTRUMENT_ID:
        raw, other = symbol_in, symbol_out
    elif stype_out == SType.INSTRUMENT_ID:
        raw, other = symbol_out, symbol_in
    else:
        raise ValueError("either `stype_out` or `stype_in` must be `instrument_id` to insert")
    try:
        return str(other), int(str(raw))
    except ValueError:
        raise ValueError(f"failed to parse `{raw}` as an instrument_id") from None


def metadata_symbol_map(stype_in: object, stype_out: object,
                        mappings: Mapping[str, Any]) -> SymbolMap:
    """The symbol map of a DBN ``Metadata``'s ``stype_in``, ``stype_out`` and ``mappings``.

    Raises
    ------
    ValueError
        A mapping without an instrument id on either side, or an unreadable date.
    """
    rows: list[tuple[int, dt.date, dt.date, str]] = []
    for symbol_in, entries in mappings.items():
        for entry in entries:
            if not entry["symbol"]:
                continue  # an empty mapping: no instrument in that interval
            symbol, iid = _instrument_id(symbol_in, stype_in, entry["symbol"], stype_out)
            rows.append((iid, _date(entry["start_date"], "start_date"),
                         _date(entry["end_date"], "end_date"), symbol))
    rows.sort(key=lambda r: (r[0], r[1]))  # stable, like databento's lexsort
    result: SymbolMap = {}
    for iid, start, end, symbol in rows:
        result.setdefault(iid, []).append((start, end, symbol))
    return result


def json_symbol_map(doc: Any) -> SymbolMap:
    """The symbol map of a Databento ``symbology.json`` (``symbology.resolve``'s result).

    Raises
    ------
    ValueError, KeyError, TypeError, AttributeError
        Not such a document.
    """
    from databento.common.symbology import InstrumentMap

    imap = InstrumentMap()
    imap.insert_json(doc)
    return {int(iid): intervals for iid, intervals in imap.build_symbol_map().items()}
