"""vpbatch.products: symbol -> product (tick, bucket, multiplier), definition ticks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpbatch.errors import ConfigError
from vpbatch.ingest.definitions import read_definition_tick
from vpbatch.products import (
    EQUITY_MBO,
    FUTURE_MBO,
    futures_root,
    list_products,
    resolve_product,
)

DbnPath = Callable[[str], Path]


@pytest.mark.parametrize(("symbol", "root", "tick", "multiplier"), [
    ("MNQH6", "MNQ", 250_000_000, 2),
    ("ESM24", "ES", 250_000_000, 50),
    ("ESM4", "ES", 250_000_000, 50),
    ("MESH5", "MES", 250_000_000, 5),
    ("NQZ5", "NQ", 250_000_000, 20),
    ("GCZ5", "GC", 100_000_000, 100),
    ("SIH6", "SI", 5_000_000, 5000),
    ("CLF6", "CL", 10_000_000, 1000),
    ("6EH6", "6E", 50_000, 125_000),
    ("mnqh6", "MNQ", 250_000_000, 2),
])
def test_resolve_product_given_futures_contract_uses_its_root(
    symbol: str, root: str, tick: int, multiplier: int
) -> None:
    product = resolve_product(symbol)
    assert product.symbol == symbol.upper()
    assert product.root == root
    assert product.product_type == FUTURE_MBO
    assert product.tick == product.bucket == tick
    assert product.multiplier == multiplier
    assert product.dataset == "GLBX.MDP3"


def test_resolve_product_given_6e_has_exact_tick_size() -> None:
    assert resolve_product("6EH6").tick_size == pytest.approx(0.00005)


@pytest.mark.parametrize("ticker", ["QQQ", "SPY", "AAPL", "CLF"])
def test_resolve_product_given_equity_has_cent_tick_and_half_dollar_bucket(ticker: str) -> None:
    product = resolve_product(ticker)
    assert product.root == ticker
    assert product.product_type == EQUITY_MBO
    assert product.tick == 10_000_000
    assert product.bucket == 500_000_000
    assert product.bucket_size == 0.5
    assert product.multiplier == 1


@pytest.mark.parametrize("symbol", ["MNQH6-MNQM6", "ESM4:ESU4", "UD:1V: VT 0123"])
def test_resolve_product_given_spread_is_a_config_error(symbol: str) -> None:
    with pytest.raises(ConfigError, match=r"is a spread or combination; give one outright"):
        resolve_product(symbol)


@pytest.mark.parametrize("symbol", ["", "   "])
def test_resolve_product_given_empty_symbol_names_the_parameter(symbol: str) -> None:
    with pytest.raises(ConfigError, match=r"^symbol: must not be empty$"):
        resolve_product(symbol)


def test_futures_root_given_prefix_roots_picks_the_longest() -> None:
    assert futures_root("MNQH6") == "MNQ"
    assert futures_root("MESM5") == "MES"
    assert futures_root("ES") == "ES"
    assert futures_root("QQQ") is None
    assert futures_root("ESPR") is None


def test_list_products_given_table_lists_futures_then_equities() -> None:
    roots = [p.root for p in list_products()]
    assert roots[:8] == ["ES", "MES", "NQ", "MNQ", "GC", "SI", "CL", "6E"]
    assert {"QQQ", "SPY"} <= set(roots[8:])


def test_with_tick_given_definition_file_overrides_the_tick(dbn_path: DbnPath) -> None:
    tick = read_definition_tick(dbn_path("glbx-mdp3-es-fut.definition.dbn.zst"), "ESM3")
    assert tick == 250_000_000
    product = resolve_product("ESM3").with_tick(tick)
    assert (product.tick, product.bucket) == (tick, tick)
    finer = resolve_product("ESM3").with_tick(tick // 2)
    assert (finer.tick, finer.bucket) == (125_000_000, 125_000_000)


def test_with_tick_given_equity_keeps_the_half_dollar_bucket() -> None:
    product = resolve_product("QQQ").with_tick(5_000_000)
    assert product.tick == 5_000_000
    assert product.bucket == 500_000_000


def test_with_tick_given_non_positive_tick_names_the_symbol() -> None:
    with pytest.raises(ConfigError, match=r"^MNQH6: min_price_increment must be > 0, was 0$"):
        resolve_product("MNQH6").with_tick(0)
