"""Synthetic MBO generator: API, determinism, exact sizes, products, errors and the CLI."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from cli.synth import command
from tests.synth.replay import FRIDAY, read_dbn, replay
from vpbatch.errors import ConfigError, OutputError
from vpbatch.products import resolve_product
from vpbatch.store.lake import find_raw_file, raw_dir
from vpbatch.synth import synth_session, synth_to_lake


def test_deterministic(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"symbol": "MNQH6", "day": FRIDAY, "records": 8_000}
    a, b, c = tmp_path / "a.mbo.dbn.zst", tmp_path / "b.mbo.dbn.zst", tmp_path / "c.mbo.dbn.zst"
    synth_session(a, seed=3, **kw)
    synth_session(b, seed=3, **kw)
    synth_session(c, seed=4, **kw)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("records", [1_000, 2_345, 12_001])
def test_exact_record_count_small(tmp_path: Path, records: int) -> None:
    path = tmp_path / "x.mbo.dbn.zst"
    stats = synth_session(path, day=FRIDAY, records=records, seed=records)
    _, recs = read_dbn(path)
    assert len(recs) == records == stats.records
    assert sum(stats.action_counts.values()) == records
    assert stats.bytes == path.stat().st_size
    assert stats.action_counts == dict(Counter(recs["action"].tobytes().decode()))
    replay(recs)


def test_other_product_tick_and_start_price(tmp_path: Path) -> None:
    path = tmp_path / "gc.mbo.dbn.zst"
    synth_session(path, symbol="GCJ6", day=FRIDAY, records=5_000, start_price=2500.0,
                  instrument_id=7, publisher_id=2)
    store, recs = read_dbn(path)
    live = recs[1:]
    assert (live["price"] % 100_000_000 == 0).all()       # GC tick 0.10
    assert (recs["instrument_id"] == 7).all() and (recs["publisher_id"] == 2).all()
    assert abs(np.median(live["price"][live["action"] == b"T"]) / 1e9 - 2500.0) < 100
    assert store.metadata.mappings["GCJ6"][0]["symbol"] == "7"


def test_synth_to_lake(tmp_path: Path) -> None:
    path = synth_to_lake(tmp_path / "lake", "MNQH6", FRIDAY, records=3_000)
    product = resolve_product("MNQH6")
    expected = (tmp_path / "lake" / "raw" / "source=databento" / "product_type=future_mbo"
                / "symbol=MNQ" / "table=market_by_order_dbn" / "glbx-mdp3-20260206.mbo.dbn.zst")
    assert path == expected == raw_dir(tmp_path / "lake", product) / expected.name
    assert find_raw_file(tmp_path / "lake", product, FRIDAY) == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize(("kw", "match"), [
    ({"day": dt.date(2026, 2, 7)}, "Saturday"),
    ({"day": FRIDAY, "records": 999}, "records"),
    ({"day": FRIDAY, "symbol": "MNQH6-MNQM6"}, "spread"),
    ({"day": FRIDAY, "start_price": -1.0}, "start_price"),
])
def test_bad_arguments(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synth_session(tmp_path / "x.mbo.dbn.zst", **kw)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write"):
        synth_session(blocker / "x.mbo.dbn.zst", day=FRIDAY, records=2_000)


def test_cli_out(tmp_path: Path) -> None:
    out = tmp_path / "cli.mbo.dbn.zst"
    result = CliRunner().invoke(command, ["--symbol", "MESM6", "--dt", "2026-02-05",
                                          "--records", "4000", "--seed", "2", "--out", str(out),
                                          "--quiet"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "4,000" in result.output
    store, recs = read_dbn(out)
    assert len(recs) == 4_000 and store.metadata.symbols == ["MESM6"]


def test_cli_lake_and_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["--lake", str(tmp_path), "--records", "2000"])
    assert result.exit_code == 0, result.output
    assert "glbx-mdp3-20260206.mbo.dbn.zst" in result.output
    bad = CliRunner().invoke(command, ["--lake", str(tmp_path), "--dt", "2026-02-08"])
    assert isinstance(bad.exception, ConfigError)
    bad = CliRunner().invoke(command, ["--lake", str(tmp_path), "--dt", "tomorrow"])
    assert bad.exit_code == 2 and "tomorrow" in bad.output  # click usage error
    helptext = CliRunner().invoke(command, ["--help"]).output
    assert "Example:" in helptext and "vpbatch synth" in helptext


def test_chunking_does_not_change_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small chunks (buffer recycling, writer thread) give the same bytes as one."""
    import vpbatch.synth.output as output

    one, many = tmp_path / "one.mbo.dbn.zst", tmp_path / "many.mbo.dbn.zst"
    synth_session(one, day=FRIDAY, records=20_000, seed=5)
    monkeypatch.setattr(output, "CHUNK_RECORDS", 1_500)
    calls: list[int] = []
    stats = synth_session(many, day=FRIDAY, records=20_000, seed=5, progress=calls.append)
    assert len(calls) > 10 and sum(calls) == 20_000 == stats.records
    assert one.read_bytes() == many.read_bytes()
