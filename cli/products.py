"""``vpbatch products``: the product table (tick, bucket, multiplier)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import click

from cli.options import json_option
from vpbatch.book.dtypes import FIXED_PRICE_SCALE
from vpbatch.errors import SymbolError
from vpbatch.products import Product, list_products, resolve_product


def _price(fixed: int) -> str:
    return f"{(Decimal(fixed) / FIXED_PRICE_SCALE).normalize():f}"


def _row(p: Product) -> dict[str, object]:
    return {"symbol": p.symbol, "root": p.root, "product_type": p.product_type,
            "tick": _price(p.tick), "bucket": _price(p.bucket), "multiplier": p.multiplier,
            "dataset": p.dataset}


@click.command("products")
@click.option("--symbol", metavar="SYMBOL",
              help="Show how one contract or ticker resolves (e.g. MNQH6, QQQ).")
@click.option("--definition", type=click.Path(path_type=Path), metavar="FILE",
              help="Instrument-definition DBN whose min_price_increment overrides the tick "
                   "(needs --symbol).")
@json_option
def command(symbol: str | None, definition: Path | None, as_json: bool) -> None:
    """List the product table: root, type, tick, bucket and contract multiplier.

    Futures contracts (MNQH6) resolve to their root (MNQ); any other ticker is an
    equity with tick 0.01 and a $0.50 bucket. Prices are in the instrument's currency.

    \b
    Example:
        vpbatch products
        vpbatch products --symbol MNQH6 --json
        vpbatch products --symbol ESM3 --definition glbx-mdp3-es-fut.definition.dbn.zst
    """
    if definition is not None and symbol is None:
        raise click.UsageError("--definition needs --symbol")
    if symbol is None:
        rows = [_row(p) for p in list_products()]
    else:
        product = resolve_product(symbol)
        if definition is not None:
            from vpbatch.ingest.definitions import read_definition_tick

            tick = read_definition_tick(definition, product.symbol)
            if tick is None:
                raise SymbolError(f"{definition.name}: symbol '{product.symbol}' not defined")
            product = product.with_tick(tick)
        rows = [_row(product)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header: dict[str, object] = {
        "symbol": "symbol", "root": "root", "product_type": "type", "tick": "tick",
        "bucket": "bucket", "multiplier": "multiplier", "dataset": "dataset",
    }
    keys = list(header) if symbol is not None else [k for k in header if k != "symbol"]
    table: list[dict[str, object]] = [header, *rows]
    widths = {k: max(len(str(r[k])) for r in table) for k in keys}
    for r in table:
        click.echo("  ".join(str(r[k]).ljust(widths[k]) for k in keys).rstrip())
