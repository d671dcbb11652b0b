"""Instrument-definition DBN files: the tick (``min_price_increment``) and raw symbols.

``vpbatch download`` keeps each day's definitions beside its MBO file; ``build`` takes the tick
from there (or ``--definition``) over the product table's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

from vpbatch.book.dtypes import UNDEF_PRICE
from vpbatch.errors import InputError, SymbolError, one_line
from vpbatch.ingest.dbn_file import DECODE_ERRORS, listing, open_validated


def _definitions(path: Path) -> Iterator[tuple[int, int, str, int]]:
    """``(instrument_id, ts_recv, raw_symbol, min_price_increment)`` of each definition record.

    The one decode loop of the definition readers; any decoding problem is an InputError
    naming the file.
    """
    _, _, data = open_validated(path, "definition")
    import databento as db  # its decoder for definition records; only days that have them
    from databento.common.error import BentoError, BentoWarning

    try:
        store = db.DBNStore(data)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("error", BentoWarning)
            schema = "definition" if store.metadata.schema is None else None
            for chunk in store.to_ndarray(schema, count=100_000):
                chunk = chunk.reshape(-1)
                names = [bytes(raw).rstrip(b"\0").decode("ascii", "replace")
                         for raw in chunk["raw_symbol"]]
                yield from zip(chunk["instrument_id"].tolist(), chunk["ts_recv"].tolist(),
                               names, chunk["min_price_increment"].tolist(), strict=True)
    except (*DECODE_ERRORS, BentoError, BentoWarning) as exc:
        raise InputError(f"{path.name}: corrupt or truncated data ({one_line(exc)})") from None


def read_definition_symbols(path: Path) -> dict[int, str]:
    """``instrument_id -> raw_symbol`` from a definition DBN file (the latest definition wins).

    Raises
    ------
    InputError
        Missing, empty, truncated or corrupt file, or a schema other than ``definition``.
    """
    latest: dict[int, tuple[int, str]] = {}
    for iid, ts, name, _ in _definitions(Path(path)):
        if name and (iid not in latest or ts >= latest[iid][0]):
            latest[iid] = (ts, name)
    return {iid: name for iid, (_, name) in sorted(latest.items())}


def read_definition_tick(path: Path, symbol: str | None = None) -> int | None:
    """``min_price_increment`` (fixed-point, 1e-9) of ``symbol`` from a definition DBN file.

    Use it with :meth:`vpbatch.products.Product.with_tick`.

    Parameters
    ----------
    path : Path
        A Databento ``definition`` schema file (``.dbn`` / ``.dbn.zst``).
    symbol : str, optional
        Raw symbol; may be omitted when the file defines one instrument.

    Returns
    -------
    int or None
        The tick of the latest definition of the symbol, or None when the symbol is not
        defined in the file (or its increment is undefined).

    Raises
    ------
    InputError
        Missing, empty, truncated or corrupt file, or a schema other than ``definition``.
    """
    path = Path(path)
    wanted = None if symbol is None else symbol.strip().upper()
    best: tuple[int, int] | None = None
    seen: set[str] = set()
    for _, ts, raw_name, tick in _definitions(path):
        name = raw_name.upper()
        seen.add(name)
        if (wanted is None or name == wanted) and (best is None or ts >= best[0]):
            best = (ts, tick)
    if wanted is None and len(seen) > 1:
        raise SymbolError(f"{path.name}: {len(seen)} instruments defined; choose one symbol "
                          f"(have: {listing(sorted(seen))})")
    if best is None or best[1] in (UNDEF_PRICE, 0) or best[1] < 0:
        return None
    return int(best[1])
