"""The reader's own metadata symbology and publisher table agree with databento's.

The build path reads both without importing ``databento`` (0.6 s of every start); these tests
hold them to databento's ``InstrumentMap`` and ``Publisher``, so a databento upgrade that
changes either fails here instead of mapping symbols differently.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import databento as db
import pytest
from databento.common.publishers import Publisher
from databento.common.symbology import InstrumentMap
from databento_dbn import SType
from hypothesis import given, settings
from hypothesis import strategies as st

from vpbatch.ingest.publishers import PUBLISHERS
from vpbatch.ingest.reader import dataset_publishers, publisher_name
from vpbatch.ingest.symbology import SymbolMap, metadata_symbol_map

DATA = Path(__file__).resolve().parents[1] / "data"


def _databento_map(meta: object) -> SymbolMap:
    imap = InstrumentMap()
    imap.insert_metadata(meta)  # type: ignore[arg-type]
    return {int(iid): v for iid, v in imap.build_symbol_map().items()}


@pytest.mark.parametrize("path", sorted(DATA.glob("*.mbo.dbn.zst")), ids=lambda p: p.name)
def test_metadata_symbol_map_given_each_real_file_equals_databento(path: Path) -> None:
    meta = db.DBNStore.from_file(path).metadata
    ours = metadata_symbol_map(meta.stype_in, meta.stype_out, meta.mappings)
    assert ours == _databento_map(meta)


_DAY = st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 1, 1))


@st.composite
def _mappings(draw: st.DrawFn) -> SimpleNamespace:
    ids_in = draw(st.booleans())  # instrument ids on the input side (live files) or the output
    mappings: dict[str, list[dict[str, object]]] = {}
    for _ in range(draw(st.integers(1, 4))):
        name = str(draw(st.integers(1, 30))) if ids_in else draw(st.sampled_from(
            ["ESH6", "ESM6", "NQH6", "MNQH6"]))
        entries = mappings.setdefault(name, [])
        for _ in range(draw(st.integers(1, 4))):
            start = draw(_DAY)
            out = draw(st.sampled_from(["", "ESH6", "NQH6"])) if ids_in else \
                draw(st.sampled_from(["", "1", "2", "17077", "5602"]))
            entries.append({"start_date": start, "end_date": start + dt.timedelta(
                days=draw(st.integers(1, 3))), "symbol": out})
    return SimpleNamespace(
        stype_in=SType.INSTRUMENT_ID if ids_in else SType.RAW_SYMBOL,
        stype_out=SType.RAW_SYMBOL if ids_in else SType.INSTRUMENT_ID, mappings=mappings)


@settings(max_examples=200, deadline=None)
@given(_mappings())
def test_metadata_symbol_map_given_any_mappings_equals_databento(meta: SimpleNamespace) -> None:
    """Several symbols per id, overlapping and out-of-order intervals, empty mappings."""
    assert metadata_symbol_map(meta.stype_in, meta.stype_out, meta.mappings) == \
        _databento_map(meta)


@pytest.mark.parametrize(("stype_in", "stype_out", "symbol_in", "symbol_out"), [
    (SType.RAW_SYMBOL, SType.PARENT, "ES.FUT", "ESH6"),
    (SType.RAW_SYMBOL, SType.INSTRUMENT_ID, "ESH6", "not-a-number"),
])
def test_metadata_symbol_map_given_unusable_mapping_raises_like_databento(
        stype_in: SType, stype_out: SType, symbol_in: str, symbol_out: str) -> None:
    meta = SimpleNamespace(stype_in=stype_in, stype_out=stype_out, mappings={symbol_in: [
        {"start_date": dt.date(2026, 2, 6), "end_date": dt.date(2026, 2, 7),
         "symbol": symbol_out}]})
    with pytest.raises(ValueError) as theirs:
        _databento_map(meta)
    with pytest.raises(ValueError) as ours:
        metadata_symbol_map(meta.stype_in, meta.stype_out, meta.mappings)
    assert str(ours.value) == str(theirs.value)


def test_publishers_table_is_databentos() -> None:
    """Regenerate on failure: ``[(p.to_int(), str(p.value)) for p in Publisher]``."""
    assert list(PUBLISHERS) == [(p.to_int(), str(p.value)) for p in Publisher]
    for p in Publisher:
        assert publisher_name(p.to_int()) == str(p.value)
        assert p.to_int() in dataset_publishers(str(p.dataset))
    datasets = {str(p.dataset) for p in Publisher}
    for name in datasets:
        assert dataset_publishers(name) == sorted(
            p.to_int() for p in Publisher if str(p.dataset) == name)


def test_building_a_day_imports_neither_databento_nor_pandas(tmp_path: Path) -> None:
    """0.6 s (databento), 0.4 s (pandas, which ``pa.array`` imports) and 0.05 s
    (``pyarrow.compute``, which any ``Array.cast`` imports) stay out of a build: reading,
    resolving, the engine and writing every table."""
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from vpbatch.build.pipeline import build\n"
        "from vpbatch.build.request import BuildRequest\n"
        "r = build(BuildRequest(symbol='ESM4', day=None, lake=Path(sys.argv[1]),\n"
        "                       path=Path(sys.argv[2]), mbp_levels=10))\n"
        "print(r.rows['mbp'], sorted(m for m in ('databento', 'pandas', 'pyarrow.compute')\n"
        "                            if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path),
                          str(DATA / "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst")],
                         check=True, capture_output=True, text=True).stdout.split()
    assert int(out[0]) > 100
    assert out[1:] == ["[]"]
