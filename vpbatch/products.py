"""Product table (tick, multiplier, bucket) and symbol -> root resolution."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any, Final

from vpbatch.book.dtypes import FIXED_PRICE_SCALE
from vpbatch.errors import ConfigError

FUTURE_MBO: Final = "future_mbo"
EQUITY_MBO: Final = "equity_mbo"

#: A futures contract is ROOT + CME month code + 1-2 digit year (``MNQH6``, ``ESM24``).
_CONTRACT_SUFFIX_RE: Final = re.compile(r"[FGHJKMNQUVXZ]\d{1,2}")


@dataclass(frozen=True)
class Product:
    """How one symbol is bucketed. Prices in fixed-point units (1e-9)."""

    symbol: str
    root: str
    product_type: str
    tick: int
    bucket: int
    multiplier: int
    dataset: str

    @property
    def tick_size(self) -> float:
        return self.tick / FIXED_PRICE_SCALE

    @property
    def bucket_size(self) -> float:
        return self.bucket / FIXED_PRICE_SCALE

    def with_tick(self, tick: int) -> Product:
        """Use a definition's ``min_price_increment`` as the tick (and the futures bucket)."""
        if tick <= 0:
            raise ConfigError(f"{self.symbol}: min_price_increment must be > 0, was {tick}")
        bucket = tick if self.product_type == FUTURE_MBO else max(self.bucket, tick)
        return Product(self.symbol, self.root, self.product_type, tick, bucket,
                       self.multiplier, self.dataset)


def _fixed(text: str) -> int:
    return int(Decimal(text) * FIXED_PRICE_SCALE)


def load_table() -> dict[str, Any]:
    """The packaged ``products.toml``."""
    with resources.files("vpbatch").joinpath("products.toml").open("rb") as fh:
        return tomllib.load(fh)


def futures_root(symbol: str, roots: set[str] | None = None) -> str | None:
    """``MNQH6`` -> ``MNQ`` for a known futures root; None when the symbol is not a future."""
    roots = roots if roots is not None else set(load_table()["futures"])
    sym = symbol.strip().upper()
    if sym in roots:
        return sym
    # Longest matching root wins: MNQH6 is MNQ, never a shorter root that is also a prefix.
    candidates = [r for r in roots
                  if sym.startswith(r) and _CONTRACT_SUFFIX_RE.fullmatch(sym[len(r):])]
    return max(candidates, key=len) if candidates else None


def resolve_product(symbol: str) -> Product:
    """The product of a contract (``MNQH6``), a root (``MNQ``) or an equity ticker (``QQQ``)."""
    if not symbol or not symbol.strip():
        raise ConfigError("symbol: must not be empty")
    table = load_table()
    sym = symbol.strip().upper()
    if "-" in sym or ":" in sym:
        raise ConfigError(
            f"symbol: '{symbol}' is a spread or combination; give one outright contract"
        )
    root = futures_root(sym, set(table["futures"]))
    if root is not None:
        row = table["futures"][root]
        tick = _fixed(row["tick_size"])
        return Product(sym, root, FUTURE_MBO, tick, tick, int(row["multiplier"]), row["dataset"])
    row = {**table["equity_default"], **table.get("equities", {}).get(sym, {})}
    return Product(sym, sym, EQUITY_MBO, _fixed(row["tick_size"]), _fixed(row["bucket_size"]),
                   int(row["multiplier"]), row["dataset"])


def list_products() -> list[Product]:
    """Every configured product (futures roots, then named equities)."""
    table = load_table()
    names = list(table["futures"]) + list(table.get("equities", {}))
    return [resolve_product(n) for n in names]
