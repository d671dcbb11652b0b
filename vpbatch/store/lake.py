"""Lake layout (SPEC §2, §11): where raw inputs live and where outputs go."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Final

from vpbatch.errors import ConfigError, InputError
from vpbatch.products import Product

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


def definition_file_name(dataset: str, day: dt.date) -> str:
    """The day's instrument-definition file, kept beside the MBO file.

    ``GLBX.MDP3`` + 2026-02-06 -> ``glbx-mdp3-20260206.definition.dbn.zst``.
    """
    return f"{dataset.lower().replace('.', '-')}-{day:%Y%m%d}.definition.dbn.zst"


def find_definition_file(mbo_file: Path) -> Path | None:
    """The definition file ``vpbatch download`` wrote beside an MBO day file, if any."""
    mbo_file = Path(mbo_file)
    for suffix in (".mbo.dbn.zst", ".mbo.dbn"):
        if mbo_file.name.endswith(suffix):
            candidate = mbo_file.with_name(mbo_file.name[: -len(suffix)] + ".definition.dbn.zst")
            return candidate if candidate.is_file() else None
    return None


def find_raw_file(lake: Path, product: Product, day: dt.date) -> Path:
    """The one raw MBO file of ``product`` for ``day``; errors say what is there instead."""
    folder = raw_dir(lake, product)
    if not folder.is_dir():
        parent = folder.parent.parent
        have = sorted(p.name for p in parent.glob("symbol=*")) if parent.is_dir() else []
        hint = f" (symbols there: {', '.join(have)})" if have else ""
        raise InputError(f"{folder}: no such folder for symbol {product.symbol}{hint}")
    stamp = f"-{day:%Y%m%d}"
    matches = sorted(p for p in folder.iterdir()
                     if p.name.endswith(_DBN_SUFFIXES) and stamp in p.name)
    if not matches:
        days = sorted({m.group(1) for p in folder.iterdir()
                       if (m := re.search(r"-(\d{8})\.mbo\.dbn", p.name))})
        shown = ", ".join(days[-10:]) if days else "no .mbo.dbn files"
        raise InputError(f"{folder}: no MBO file for {day.isoformat()} (dates there: {shown})")
    if len(matches) > 1:
        # A plain and a compressed copy of the same day: prefer the compressed one
        # (Databento's default).
        zst = [m for m in matches if m.name.endswith(".zst")]
        if len(zst) == 1:
            return zst[0]
        raise InputError(f"{folder}: several MBO files for {day.isoformat()}: "
                         f"{', '.join(m.name for m in matches)}")
    return matches[0]


def gold_partition(lake: Path, table: str, product: Product, day: dt.date) -> Path:
    """``gold/<table>/product_type=…/symbol=…/dt=YYYY-MM-DD``."""
    return gold_folder(lake, table, product.product_type, product.symbol, day.isoformat())


def gold_folder(lake: Path, table: str, product_type: str, symbol: str, day: str) -> Path:
    """:func:`gold_partition` from the partition's key values as the folder names hold them."""
    return (Path(lake) / "gold" / table / f"product_type={product_type}" / f"symbol={symbol}"
            / f"dt={day}")
