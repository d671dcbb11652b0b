"""Lake layout (SPEC §2, §11): where raw inputs live and where outputs go.

The ``Path`` functions serve a folder lake; :func:`raw_location`, :func:`find_raw_location`
and :func:`find_definition_location` serve any lake (folder or object store, through
:class:`~vpbatch.store.fs.Lake`) with the same rules and messages.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path
from typing import Final

from vpbatch.errors import ConfigError, InputError, VpbatchWarning
from vpbatch.products import Product
from vpbatch.store.fs import Lake, open_lake

RAW_TABLE: Final = "market_by_order_dbn"
GOLD_TABLES: Final = ("vp_snapshot", "vp_grid", "mbp")
#: Tables every build writes; ``mbp`` is optional.
CORE_TABLES: Final = ("vp_snapshot", "vp_grid")
#: What one gold partition folder holds (see :mod:`vpbatch.store.writer`).
PART_FILE: Final = "part-0.parquet"
MANIFEST_FILE: Final = "_MANIFEST.json"
SUCCESS_FILE: Final = "_SUCCESS"
#: Version of the ``_MANIFEST.json`` layout.
MANIFEST_VERSION: Final = 1
_DBN_SUFFIXES: Final = (".mbo.dbn.zst", ".mbo.dbn")
#: A live recording (SPEC §14): ``<dataset-stem>-YYYYMMDD.live-<SYMBOL>.mbo.dbn[.zst]``.
_LIVE_RE: Final = re.compile(r"-(\d{8})\.live-(.+)\.mbo\.dbn(?:\.zst)?$")


def parse_date(text: str, param: str = "--dt") -> dt.date:
    """``'2026-02-06'`` -> date; the error names the parameter."""
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise ConfigError(f"{param}: '{text}' is not a date; use YYYY-MM-DD") from None


def raw_dir(lake: Path, product: Product) -> Path:
    """``raw/source=databento/product_type=…/symbol={ROOT|TICKER}/table=market_by_order_dbn``."""
    return (Path(lake) / "raw" / "source=databento" / f"product_type={product.product_type}"
            / f"symbol={product.root}" / f"table={RAW_TABLE}")


def raw_file_name(dataset: str, day: dt.date, compressed: bool = True) -> str:
    """Databento's day-file name.

    ``GLBX.MDP3`` + 2026-02-06 -> ``glbx-mdp3-20260206.mbo.dbn.zst``.
    """
    stem = dataset.lower().replace(".", "-")
    return f"{stem}-{day:%Y%m%d}.mbo.dbn" + (".zst" if compressed else "")


def live_recording_name(dataset: str, day: dt.date, symbol: str) -> str:
    """The file a ``vpbatch live`` session records ``symbol``'s event list to, beside the day
    files (SPEC §14); it grows as ``<name>.part`` until the session ends.

    ``GLBX.MDP3`` + 2024-05-08 + ``ESM4`` -> ``glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst``.
    """
    if not symbol or "/" in symbol or "\0" in symbol or symbol.strip() != symbol:
        raise ConfigError(f"'{symbol}' cannot name a live recording file")
    stem = dataset.lower().replace(".", "-")
    return f"{stem}-{day:%Y%m%d}.live-{symbol}.mbo.dbn.zst"


def definition_file_name(dataset: str, day: dt.date) -> str:
    """The day's instrument-definition file, kept beside the MBO file.

    ``GLBX.MDP3`` + 2026-02-06 -> ``glbx-mdp3-20260206.definition.dbn.zst``.
    """
    return f"{dataset.lower().replace('.', '-')}-{day:%Y%m%d}.definition.dbn.zst"


def definition_name(mbo_name: str) -> str | None:
    """The name of the definition file beside an MBO day file (None: not an MBO file name).

    A live recording of the day (``glbx-mdp3-YYYYMMDD.live-ESM4.mbo.dbn.zst``) uses the
    day's definitions (``glbx-mdp3-YYYYMMDD.definition.dbn.zst``).
    """
    live = _LIVE_RE.search(mbo_name)
    if live is not None:
        return f"{mbo_name[: live.start()]}-{live.group(1)}.definition.dbn.zst"
    for suffix in (".mbo.dbn.zst", ".mbo.dbn"):
        if mbo_name.endswith(suffix):
            return mbo_name[: -len(suffix)] + ".definition.dbn.zst"
    return None


def find_definition_file(mbo_file: Path) -> Path | None:
    """The definition file ``vpbatch download`` wrote beside an MBO day file, if any."""
    mbo_file = Path(mbo_file)
    name = definition_name(mbo_file.name)
    candidate = None if name is None else mbo_file.with_name(name)
    return candidate if candidate is not None and candidate.is_file() else None


def find_definition_location(lake: Path | str | Lake, mbo_location: str) -> str | None:
    """:func:`find_definition_file` on any lake (``mbo_location`` from
    :func:`find_raw_location`)."""
    store = open_lake(lake)
    if store.local:
        found = find_definition_file(Path(mbo_location))
        return None if found is None else str(found)
    folder, _, mbo_name = mbo_location.rpartition("/")
    name = definition_name(mbo_name)
    if name is None:
        return None
    candidate = f"{folder}/{name}"
    return candidate if store.is_file(candidate) else None


def raw_location(lake: Path | str | Lake, product: Product) -> str:
    """:func:`raw_dir` on any lake, as a location string."""
    store = open_lake(lake)
    return store.loc("raw", "source=databento", f"product_type={product.product_type}",
                     f"symbol={product.root}", f"table={RAW_TABLE}")


def find_raw_file(lake: Path, product: Product, day: dt.date) -> Path:
    """The one raw MBO file of ``product`` for ``day``; errors say what is there instead.

    The day file (``glbx-mdp3-YYYYMMDD.mbo.dbn.zst``) wins; a live recording of the
    contract (``glbx-mdp3-YYYYMMDD.live-<SYMBOL>.mbo.dbn.zst``, SPEC §14) is used when there
    is no day file. When both exist a :class:`~vpbatch.errors.VpbatchWarning` says which one
    was used. Recordings of other symbols of the same root and ``.part`` files (recordings
    still being written) are never picked up.
    """
    return Path(find_raw_location(Path(lake), product, day))


def find_raw_location(lake: Path | str | Lake, product: Product, day: dt.date) -> str:
    """:func:`find_raw_file` on any lake: the file's location (path string or URL)."""
    store = open_lake(lake)
    folder = raw_location(store, product)
    listed = store.list_names(folder)
    if listed is None:
        parent = folder.rsplit("/", 2)[0] if not store.local else str(Path(folder).parent.parent)
        have = [n for n in store.list_names(parent) or [] if n.startswith("symbol=")]
        hint = f" (symbols there: {', '.join(have)})" if have else ""
        raise InputError(f"{folder}: no such folder for symbol {product.symbol}{hint}")
    chosen = _pick_raw(folder, [n for n in listed if n.endswith(_DBN_SUFFIXES)], product, day)
    return str(Path(folder) / chosen) if store.local else f"{folder}/{chosen}"


def _pick_raw(folder: str, listed: list[str], product: Product, day: dt.date) -> str:
    """The name :func:`find_raw_location` picks among the MBO file ``listed`` in ``folder``."""
    stamp = f"-{day:%Y%m%d}"
    names = sorted(listed)
    recordings: list[str] = []
    others: list[str] = []
    matches: list[str] = []
    for p in names:
        live = _LIVE_RE.search(p)
        if live is None:
            if stamp in p:
                matches.append(p)
        elif live.group(1) == f"{day:%Y%m%d}":
            mine = live.group(2).upper() == product.symbol.upper()
            (recordings if mine else others).append(p)
    if len(matches) > 1:
        # A plain and a compressed copy of the same day: prefer the compressed one
        # (Databento's default).
        zst = [m for m in matches if m.endswith(".zst")]
        if len(zst) != 1:
            raise InputError(f"{folder}: several MBO files for {day.isoformat()}: "
                             f"{', '.join(matches)}")
        matches = zst
    if matches:
        if recordings:
            warnings.warn(f"{folder}: using the day file {matches[0]}, not the live "
                          f"recording {', '.join(recordings)} of the same day "
                          f"(--path builds the recording)", VpbatchWarning, stacklevel=2)
        return matches[0]
    if len(recordings) > 1:
        raise InputError(f"{folder}: several live recordings of {product.symbol} for "
                         f"{day.isoformat()}: {', '.join(recordings)}; "
                         f"choose one with --path")
    if recordings:
        return recordings[0]
    days = sorted({m.group(1) for p in names
                   if (m := re.search(r"-(\d{8})\.(?:live-.+\.)?mbo\.dbn", p))})
    shown = ", ".join(days[-10:]) if days else "no .mbo.dbn files"
    hint = (f"; live recordings of other symbols that day: {', '.join(others)}"
            if others else "")
    raise InputError(f"{folder}: no MBO file for {day.isoformat()} (dates there: {shown}){hint}")


def gold_partition(lake: Path, table: str, product: Product, day: dt.date) -> Path:
    """``gold/<table>/product_type=…/symbol=…/dt=YYYY-MM-DD``."""
    return gold_folder(lake, table, product.product_type, product.symbol, day.isoformat())


def gold_folder(lake: Path, table: str, product_type: str, symbol: str, day: str) -> Path:
    """:func:`gold_partition` from the partition's key values as the folder names hold them."""
    return (Path(lake) / "gold" / table / f"product_type={product_type}" / f"symbol={symbol}"
            / f"dt={day}")
