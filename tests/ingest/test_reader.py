"""vpbatch.ingest.reader on every Databento sample file and on every kind of bad input."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import databento as db
import numpy as np
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from vpbatch.book.dtypes import ACTION_CLEAR, F_SNAPSHOT, MBO_DTYPE
from vpbatch.errors import ConfigError, InputError, SymbolError
from vpbatch.ingest.definitions import read_definition_tick
from vpbatch.ingest.reader import (
    MboSource,
    Selection,
    dataset_publishers,
    find_input,
    open_mbo,
    publisher_name,
)

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
ESH4 = "glbx-mdp3-esh4-20231224.mbo.dbn.zst"
MESH5 = "glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst"
GOOG = "dbeq-basic-goog-20240403.mbo.dbn.zst"
DEFINITION = "glbx-mdp3-es-fut.definition.dbn.zst"

DbnPath = Callable[[str], Path]


@dataclass(frozen=True)
class Expected:
    name: str
    version: int
    dataset: str
    records: int
    instruments: dict[int, str]
    per_instrument: dict[int, int]
    publishers: dict[int, int]


FILES = [
    Expected(ESM4, 1, "GLBX.MDP3", 13_796, {5602: "ESM4"}, {5602: 13_796}, {1: 13_796}),
    Expected(ESH4, 1, "GLBX.MDP3", 8_725, {17077: "ESH4"}, {17077: 8_725}, {1: 8_725}),
    Expected(MESH5, 2, "GLBX.MDP3", 4_176, {42005347: "MESH5"}, {42005347: 4_176}, {1: 4_176}),
    Expected(GOOG, 3, "DBEQ.BASIC", 286_130, {7151: "GOOG", 7152: "GOOGL"},
             {7151: 128_943, 7152: 157_187}, {39: 36_992, 40: 3_179, 41: 245_959}),
    Expected("fixture-GLBX.MDP3.mbo.dbn.zst", 3, "GLBX.MDP3", 4, {5482: "ESH1"}, {5482: 4},
             {1: 4}),
    Expected("fixture-IFEU.IMPACT.mbo.dbn.zst", 3, "IFEU.IMPACT", 4, {5617221: "BRN FMJ0024!"},
             {5617221: 4}, {57: 4}),
    Expected("fixture-NDEX.IMPACT.mbo.dbn.zst", 3, "NDEX.IMPACT", 4, {5733529: "TFM FMH0024!"},
             {5733529: 4}, {58: 4}),
    Expected("fixture-XNAS.ITCH.mbo.dbn.zst", 3, "XNAS.ITCH", 4, {6155: "NVDA"}, {6155: 4},
             {2: 4}),
]
SINGLE = [f for f in FILES if len(f.instruments) == 1]


def _all_records(path: Path) -> np.ndarray:
    """The whole file through databento in one array (the reference for chunked reads)."""
    return db.DBNStore.from_file(path).to_ndarray().reshape(-1).view(MBO_DTYPE)


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.empty(0, MBO_DTYPE)


def _decompressed(path: Path) -> bytes:
    with path.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()


# -- every sample file ------------------------------------------------------------------------


@pytest.mark.parametrize("exp", FILES, ids=lambda e: e.name)
def test_open_mbo_given_sample_file_reports_metadata_instruments_and_counts(
    dbn_path: DbnPath, exp: Expected
) -> None:
    source = open_mbo(dbn_path(exp.name))
    assert isinstance(source, MboSource)
    assert source.metadata.version == exp.version
    assert source.metadata.dataset == exp.dataset
    assert source.metadata.schema == "mbo"
    assert source.metadata.compressed
    assert source.instruments() == exp.instruments
    assert source.instrument_counts() == exp.per_instrument
    assert source.publishers() == exp.publishers
    assert source.record_count() == exp.records


@pytest.mark.parametrize("exp", SINGLE, ids=lambda e: e.name)
def test_iter_chunks_given_single_instrument_file_yields_every_record(
    dbn_path: DbnPath, exp: Expected
) -> None:
    path = dbn_path(exp.name)
    source = open_mbo(path)
    (iid, symbol), = exp.instruments.items()
    (pid,) = exp.publishers
    assert source.resolve() == Selection(iid, pid, symbol)
    assert source.resolve(symbol) == Selection(iid, pid, symbol)
    chunks = list(source.iter_chunks())
    got = _concat(chunks)
    assert all(c.dtype == MBO_DTYPE and c.flags.writeable and len(c) for c in chunks)
    assert len(got) == exp.records
    assert np.array_equal(got, _all_records(path))


@pytest.mark.parametrize("chunk_records", [1, 7, 1000, 4096])
@pytest.mark.parametrize("name", [ESM4, MESH5])
def test_iter_chunks_given_small_chunks_concatenates_to_the_same_array(
    dbn_path: DbnPath, name: str, chunk_records: int
) -> None:
    source = open_mbo(dbn_path(name))
    whole = _concat(list(source.iter_chunks()))
    chunks = list(source.iter_chunks(chunk_records=chunk_records))
    assert max(len(c) for c in chunks) <= chunk_records
    assert np.array_equal(_concat(chunks), whole)


@given(chunk_records=st.integers(min_value=16, max_value=6000))
def test_iter_chunks_given_any_chunk_size_is_identical_to_one_array(
    dbn_path: DbnPath, chunk_records: int
) -> None:
    path = dbn_path(MESH5)
    got = _concat(list(open_mbo(path).iter_chunks(chunk_records=chunk_records)))
    assert np.array_equal(got, _all_records(path))


def test_esm4_given_snapshot_start_has_one_clear(dbn_path: DbnPath) -> None:
    records = _concat(list(open_mbo(dbn_path(ESM4)).iter_chunks(symbol="ESM4")))
    assert int(np.count_nonzero(records["action"] == ACTION_CLEAR)) == 1
    assert records[0]["action"] == ACTION_CLEAR


def test_esh4_given_snapshot_only_file_every_record_is_snapshot(dbn_path: DbnPath) -> None:
    records = _concat(list(open_mbo(dbn_path(ESH4)).iter_chunks()))
    assert len(records) == 8_725
    assert np.all(records["flags"] & F_SNAPSHOT)


def test_mesh5_given_instrument_id_stype_maps_the_single_symbol(dbn_path: DbnPath) -> None:
    source = open_mbo(dbn_path(MESH5))
    assert source.metadata.stype_in == "instrument_id"
    assert source.metadata.symbols == ("MESH5",)
    assert source.resolve("MESH5") == Selection(42005347, 1, "MESH5")
    assert source.resolve("mesh5").symbol == "MESH5"


# -- several instruments and publishers ----------------------------------------------------------


def test_resolve_given_goog_without_publisher_lists_publishers_with_counts(
    dbn_path: DbnPath,
) -> None:
    with pytest.raises(SymbolError) as err:
        open_mbo(dbn_path(GOOG)).resolve("GOOG")
    assert str(err.value) == (
        f"{GOOG}: GOOG has records from 3 publishers; choose one publisher id (have: "
        "39 DBEQ.BASIC.XCHI (17,953 records), 40 DBEQ.BASIC.XCIS (2,676 records), "
        "41 DBEQ.BASIC.IEXG (108,314 records))"
    )


@pytest.mark.parametrize(("symbol", "publisher", "count"), [
    ("GOOG", 39, 17_953), ("GOOG", 41, 108_314), ("GOOGL", 40, 503), ("GOOGL", 41, 137_645),
])
def test_iter_chunks_given_goog_and_publisher_keeps_one_book(
    dbn_path: DbnPath, symbol: str, publisher: int, count: int
) -> None:
    source = open_mbo(dbn_path(GOOG))
    chunks = list(source.iter_chunks(symbol=symbol, publisher_id=publisher,
                                     chunk_records=50_000))
    records = _concat(chunks)
    iid = {"GOOG": 7151, "GOOGL": 7152}[symbol]
    assert len(records) == count
    assert np.all(records["instrument_id"] == iid)
    assert np.all(records["publisher_id"] == publisher)
    assert all(len(c) <= 50_000 for c in chunks)


def test_resolve_given_goog_and_absent_publisher_lists_present_ones(dbn_path: DbnPath) -> None:
    with pytest.raises(SymbolError) as err:
        open_mbo(dbn_path(GOOG)).resolve("GOOGL", 2)
    assert str(err.value) == (
        f"{GOOG}: publisher 2 has no records for GOOGL (have: 39 DBEQ.BASIC.XCHI "
        "(19,039 records), 40 DBEQ.BASIC.XCIS (503 records), 41 DBEQ.BASIC.IEXG "
        "(137,645 records))"
    )


def test_resolve_given_two_instruments_and_no_symbol_lists_them(dbn_path: DbnPath) -> None:
    with pytest.raises(SymbolError, match=r"2 instruments in file; choose one symbol "
                                          r"\(have: GOOG, GOOGL\)$"):
        open_mbo(dbn_path(GOOG)).resolve()


def test_resolve_given_symbol_not_in_file_lists_the_symbols(dbn_path: DbnPath) -> None:
    with pytest.raises(SymbolError) as err:
        open_mbo(dbn_path(GOOG)).resolve("MSFT", 41)
    assert str(err.value) == f"{GOOG}: symbol 'MSFT' not in file (have: GOOG, GOOGL)"


def test_resolve_given_other_contract_names_file_and_symbol(dbn_path: DbnPath) -> None:
    with pytest.raises(SymbolError) as err:
        open_mbo(dbn_path(ESM4)).resolve("ESU4")
    assert str(err.value) == f"{ESM4}: symbol 'ESU4' not in file (have: ESM4)"


def test_resolve_given_glbx_publisher_other_than_one_is_an_error(dbn_path: DbnPath) -> None:
    with pytest.raises(SymbolError, match=r"publisher 2 has no records for ESM4 \(have: 1 "
                                          r"GLBX\.MDP3\.GLBX \(13,796 records\)\)"):
        open_mbo(dbn_path(ESM4)).resolve("ESM4", 2)


def test_publisher_name_given_known_and_unknown_ids() -> None:
    assert publisher_name(39) == "DBEQ.BASIC.XCHI"
    assert publisher_name(1) == "GLBX.MDP3.GLBX"
    assert publisher_name(65_000) == "unknown"
    assert dataset_publishers("GLBX.MDP3") == [1]
    assert {39, 40, 41} <= set(dataset_publishers("DBEQ.BASIC"))


# -- symbology.json beside the file ---------------------------------------------------------------


def _with_symbology(tmp_path: Path, src: Path, result: dict[str, list[dict[str, str]]]) -> Path:
    target = tmp_path / src.name
    shutil.copyfile(src, target)
    doc = {"result": result, "symbols": list(result), "stype_in": "raw_symbol",
           "stype_out": "instrument_id", "start_date": "2025-01-21", "end_date": "2025-01-22",
           "partial": [], "not_found": [], "message": "OK", "status": 0}
    (tmp_path / "symbology.json").write_text(json.dumps(doc))
    return target


def test_instruments_given_symbology_json_uses_its_mapping(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = _with_symbology(tmp_path, dbn_path(MESH5), {
        "MESH5": [{"d0": "2025-01-21", "d1": "2025-01-22", "s": "42005347"}],
        "MESM5": [{"d0": "2025-01-21", "d1": "2025-01-22", "s": "42140878"}],
        "MESZ4": [{"d0": "2024-12-01", "d1": "2024-12-20", "s": "1"}],  # outside the file's day
    })
    source = open_mbo(path)
    assert source.instruments() == {42005347: "MESH5", 42140878: "MESM5"}
    assert source.resolve("MESH5") == Selection(42005347, 1, "MESH5")


def test_instruments_given_symbology_json_and_metadata_mappings_json_wins(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    # E.g. a parent-symbology download (every id mapped to 'ES.FUT') named by a raw_symbol
    # symbology.json.
    path = _with_symbology(tmp_path, dbn_path(ESM4), {
        "ESM4 RAW": [{"d0": "2024-05-08", "d1": "2024-05-09", "s": "5602"}],
    })
    source = open_mbo(path)
    assert source.instruments() == {5602: "ESM4 RAW"}
    assert source.resolve("ESM4 RAW").instrument_id == 5602


def test_iter_chunks_given_mapped_symbol_without_records_is_an_error(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = _with_symbology(tmp_path, dbn_path(MESH5), {
        "MESH5": [{"d0": "2025-01-21", "d1": "2025-01-22", "s": "42005347"}],
        "MESM5": [{"d0": "2025-01-21", "d1": "2025-01-22", "s": "42140878"}],
    })
    with pytest.raises(SymbolError, match=r"no MBO records for MESM5 \(instrument_id 42140878"):
        list(open_mbo(path).iter_chunks(symbol="MESM5"))


def test_resolve_given_only_a_spread_never_matches_the_outright(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = _with_symbology(tmp_path, dbn_path(MESH5), {
        "MESH5-MESM5": [{"d0": "2025-01-21", "d1": "2025-01-22", "s": "42005347"}],
    })
    with pytest.raises(SymbolError) as err:
        open_mbo(path).resolve("MESH5")
    assert str(err.value) == f"{MESH5}: symbol 'MESH5' not in file (have: MESH5-MESM5)"


def test_instruments_given_broken_symbology_json_is_an_input_error(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = tmp_path / MESH5
    shutil.copyfile(dbn_path(MESH5), path)
    (tmp_path / "symbology.json").write_text("{not json")
    with pytest.raises(InputError, match=r"symbology\.json: not a Databento symbology\.json"):
        open_mbo(path).instruments()


# -- bad inputs ----------------------------------------------------------------------------------


def test_open_mbo_given_missing_file_lists_what_is_in_the_folder(tmp_path: Path) -> None:
    (tmp_path / "glbx-mdp3-20260205.mbo.dbn.zst").write_bytes(b"x")
    (tmp_path / "symbology.json").write_text("{}")
    missing = tmp_path / "glbx-mdp3-20260206.mbo.dbn.zst"
    with pytest.raises(InputError) as err:
        open_mbo(missing)
    assert str(err.value) == (f"{missing}: no such file (in {tmp_path}: "
                              "glbx-mdp3-20260205.mbo.dbn.zst, symbology.json)")
    assert err.value.__suppress_context__


def test_open_mbo_given_missing_file_in_empty_folder_says_it_is_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no such file \(in .*: it is empty\)$"):
        open_mbo(tmp_path / "x.mbo.dbn.zst")


def test_open_mbo_given_missing_folder_names_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "x.mbo.dbn.zst"
    with pytest.raises(InputError) as err:
        open_mbo(missing)
    assert str(err.value) == f"{missing}: no such file (folder {tmp_path / 'nope'} does not exist)"


def test_open_mbo_given_a_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is a folder, not a \.dbn or \.dbn\.zst file$"):
        open_mbo(tmp_path)


def test_open_mbo_given_empty_file_says_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.mbo.dbn.zst"
    path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        open_mbo(path)
    assert str(err.value) == "empty.mbo.dbn.zst: empty file (0 bytes)"


def test_open_mbo_given_garbage_bytes_says_not_dbn(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mbo.dbn.zst"
    path.write_bytes(b"this is not a databento file at all\n" * 20)
    with pytest.raises(InputError) as err:
        open_mbo(path)
    assert str(err.value) == ("garbage.mbo.dbn.zst: not a DBN file (neither zstd-compressed nor "
                              "starting with a DBN header)")


def test_open_mbo_given_definition_schema_says_expected_mbo(dbn_path: DbnPath) -> None:
    with pytest.raises(InputError) as err:
        open_mbo(dbn_path(DEFINITION))
    assert str(err.value) == f"{DEFINITION}: schema is definition, expected mbo"


@pytest.mark.parametrize("fraction", [0.02, 0.25, 0.5, 0.9, 0.999])
def test_open_mbo_given_truncated_zst_says_truncated(
    dbn_path: DbnPath, tmp_path: Path, fraction: float
) -> None:
    data = dbn_path(ESM4).read_bytes()
    path = tmp_path / "cut.mbo.dbn.zst"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match=r"^cut\.mbo\.dbn\.zst: truncated"):
        list(open_mbo(path).iter_chunks())


def test_open_mbo_given_zst_cut_by_one_byte_says_truncated(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    data = dbn_path(MESH5).read_bytes()
    path = tmp_path / "cut.mbo.dbn.zst"
    path.write_bytes(data[:-1])
    with pytest.raises(InputError, match="truncated"):
        open_mbo(path)


def test_iter_chunks_given_zst_cut_after_the_metadata_frame_is_an_error(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    # A cut exactly at a zstd frame boundary leaves a well-formed file; it must not look
    # like an empty success.
    data = dbn_path(ESM4).read_bytes()
    rest = zstandard.ZstdDecompressor().decompressobj()
    rest.decompress(data)
    path = tmp_path / "header-only.mbo.dbn.zst"
    path.write_bytes(data[: len(data) - len(rest.unused_data)])
    with pytest.raises(InputError, match=r"^header-only\.mbo\.dbn\.zst: no MBO records in"):
        list(open_mbo(path).iter_chunks())


def test_iter_chunks_given_corrupt_zst_payload_names_the_file(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    data = bytearray(dbn_path(ESM4).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path = tmp_path / "corrupt.mbo.dbn.zst"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"^corrupt\.mbo\.dbn\.zst: corrupt"):
        list(open_mbo(path).iter_chunks(chunk_records=1000))


def test_open_mbo_given_uncompressed_dbn_reads_the_same_records(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = tmp_path / "esm4.mbo.dbn"
    path.write_bytes(_decompressed(dbn_path(ESM4)))
    source = open_mbo(path)
    assert not source.metadata.compressed
    got = _concat(list(source.iter_chunks(symbol="ESM4", chunk_records=999)))
    assert np.array_equal(got, _all_records(dbn_path(ESM4)))


def test_open_mbo_given_uncompressed_dbn_cut_mid_record_says_truncated(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = tmp_path / "esm4.mbo.dbn"
    path.write_bytes(_decompressed(dbn_path(ESM4))[:-10])
    with pytest.raises(InputError, match=r"^esm4\.mbo\.dbn: truncated: 46 bytes of an incomplete"):
        open_mbo(path)


def test_iter_raw_given_zero_chunk_size_names_the_parameter(dbn_path: DbnPath) -> None:
    with pytest.raises(ConfigError, match="chunk_records: must be >= 1, was 0"):
        list(open_mbo(dbn_path(MESH5)).iter_chunks(chunk_records=0))


# -- lake lookup ---------------------------------------------------------------------------------


def _lake_with_esm4(tmp_path: Path, src: Path) -> Path:
    lake = tmp_path / "lake"
    folder = (lake / "raw" / "source=databento" / "product_type=future_mbo" / "symbol=ES"
              / "table=market_by_order_dbn")
    folder.mkdir(parents=True)
    shutil.copyfile(src, folder / "glbx-mdp3-20240508.mbo.dbn.zst")
    (folder / "glbx-mdp3-20240507.mbo.dbn.zst").write_bytes(src.read_bytes())
    return lake


def test_find_input_given_lake_and_day_finds_the_file(dbn_path: DbnPath, tmp_path: Path) -> None:
    lake = _lake_with_esm4(tmp_path, dbn_path(ESM4))
    path = find_input(lake, "ESM4", dt.date(2024, 5, 8))
    assert path.name == "glbx-mdp3-20240508.mbo.dbn.zst"
    assert path.parent.parent.name == "symbol=ES"
    assert open_mbo(path).resolve("ESM4").instrument_id == 5602


def test_find_input_given_day_without_file_lists_the_dates_there(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    lake = _lake_with_esm4(tmp_path, dbn_path(ESM4))
    with pytest.raises(InputError, match=r"no MBO file for 2024-05-09 "
                                         r"\(dates there: 20240507, 20240508\)$"):
        find_input(lake, "ESM4", dt.date(2024, 5, 9))


def test_find_input_given_unknown_symbol_folder_lists_the_symbols(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    lake = _lake_with_esm4(tmp_path, dbn_path(ESM4))
    with pytest.raises(InputError, match=r"no such folder for symbol MNQH6 "
                                         r"\(symbols there: symbol=ES\)$"):
        find_input(lake, "MNQH6", dt.date(2024, 5, 8))


def test_find_input_given_explicit_path_returns_it(tmp_path: Path) -> None:
    explicit = tmp_path / "anything.mbo.dbn.zst"
    assert find_input(tmp_path / "lake", "MNQH6", dt.date(2026, 2, 6), path=explicit) == explicit


# -- definition files ----------------------------------------------------------------------------


def test_read_definition_tick_given_es_definition_returns_quarter_point(
    dbn_path: DbnPath,
) -> None:
    path = dbn_path(DEFINITION)
    assert read_definition_tick(path, "ESM3") == 250_000_000
    assert read_definition_tick(path) == 250_000_000
    assert read_definition_tick(path, "ESU3") is None


def test_read_definition_tick_given_mbo_file_says_expected_definition(dbn_path: DbnPath) -> None:
    with pytest.raises(InputError) as err:
        read_definition_tick(dbn_path(ESM4), "ESM4")
    assert str(err.value) == f"{ESM4}: schema is mbo, expected definition"


# -- memory --------------------------------------------------------------------------------------


def _write_big_file(src: Path, target: Path, repeats: int) -> int:
    raw = _decompressed(src)
    header = 8 + int.from_bytes(raw[4:8], "little")
    with target.open("wb") as fh:
        writer = zstandard.ZstdCompressor(level=1, write_checksum=True).stream_writer(fh)
        writer.write(raw[:header])
        for _ in range(repeats):
            writer.write(raw[header:])
        writer.close()
    return (len(raw) - header) // MBO_DTYPE.itemsize * repeats


@pytest.mark.slow
def test_iter_chunks_given_big_file_keeps_peak_memory_bounded(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    path = tmp_path / "big.mbo.dbn.zst"
    n = _write_big_file(dbn_path(ESM4), path, repeats=500)  # 6.9 M records, 386 MB decoded
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from vpbatch.ingest.reader import open_mbo
        source = open_mbo(Path({str(path)!r}))
        source.resolve("ESM4")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = sum(len(c) for c in source.iter_chunks(symbol="ESM4", chunk_records=200_000))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(n, (after - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).parents[2]).stdout.split()
    assert int(out[0]) == n
    growth_mb = int(out[1])
    assert growth_mb < 120, f"peak RSS grew by {growth_mb} MB reading a 386 MB stream"


def _frame_cut(dbn_path: DbnPath, tmp_path: Path, want_last: bool) -> tuple[Path, int]:
    """ESM4 re-compressed as one zstd frame per 97 records, cut at the first frame boundary
    whose last record has (or lacks) F_LAST; returns the file and the records it keeps."""
    from vpbatch.book.dtypes import F_LAST

    records = _all_records(dbn_path(ESM4))
    dbn = _decompressed(dbn_path(ESM4))
    meta_len = 8 + int.from_bytes(dbn[4:8], "little")
    cctx = zstandard.ZstdCompressor()
    data = cctx.compress(dbn[:meta_len])
    size = MBO_DTYPE.itemsize
    for start in range(0, len(records), 97):
        end = min(start + 97, len(records))
        data += cctx.compress(dbn[meta_len + start * size: meta_len + end * size])
        if end < len(records) and bool(records[end - 1]["flags"] & F_LAST) == want_last:
            path = tmp_path / f"cut-{want_last}.mbo.dbn.zst"
            path.write_bytes(data)
            return path, end
    raise AssertionError("no such frame boundary")


def test_iter_chunks_given_zst_cut_at_frame_boundary_mid_event_says_truncated(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    # Issue 8: every frame is whole, so zstd and databento see a valid, shorter file; the
    # last record lacking F_LAST (Databento ends every event with it) gives the cut away.
    path, kept = _frame_cut(dbn_path, tmp_path, want_last=False)
    source = open_mbo(path)  # the frame walk finds nothing wrong
    with pytest.raises(InputError, match=rf"^{path.name}: truncated: the data ends inside an "
                                         rf"event \(record {kept:,} has no F_LAST\)"):
        list(source.iter_chunks(symbol="ESM4", chunk_records=500))


def test_iter_chunks_given_zst_cut_at_frame_boundary_after_f_last_cannot_tell(
    dbn_path: DbnPath, tmp_path: Path
) -> None:
    # The documented limit (docs/SEMANTICS.md): a cut right after a complete event leaves a
    # file that is indistinguishable from a shorter download of the same query.
    path, kept = _frame_cut(dbn_path, tmp_path, want_last=True)
    got = _concat(list(open_mbo(path).iter_chunks(symbol="ESM4")))
    assert len(got) == kept


def test_iter_chunks_given_limit_reached_accepts_a_last_record_without_f_last(
    dbn_path: DbnPath,
) -> None:
    # fixture-IFEU.IMPACT: a `limit=4` query whose 4th record ends no event.
    source = open_mbo(dbn_path("fixture-IFEU.IMPACT.mbo.dbn.zst"))
    assert source.metadata.limit == 4
    assert sum(len(c) for c in source.iter_raw()) == 4


def _parent_symbology_day(dbn_path: DbnPath, folder: Path) -> Path:
    """ESM4's records re-keyed to instrument 95414, named only by the parent ``ES.FUT``.

    A Databento ``stype_in=parent`` download: symbology.json maps ``ES.FUT`` to the ids, so
    the raw symbol (``ESM3`` for 95414 in the sample definition file) needs definitions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dbn = bytearray(_decompressed(dbn_path(ESM4)))
    meta_len = 8 + int.from_bytes(dbn[4:8], "little")
    records = np.frombuffer(dbn, MBO_DTYPE, offset=meta_len).copy()
    records["instrument_id"] = 95414
    path = folder / "glbx-mdp3-20240508.mbo.dbn"
    path.write_bytes(bytes(dbn[:meta_len]) + records.tobytes())
    (folder / "symbology.json").write_text(json.dumps({
        "result": {"ES.FUT": [{"d0": "2024-05-08", "d1": "2024-05-09", "s": "95414"}]},
        "symbols": ["ES.FUT"], "stype_in": "parent", "stype_out": "instrument_id",
        "start_date": "2024-05-08", "end_date": "2024-05-09", "partial": [], "not_found": [],
        "message": "OK", "status": 0}))
    return path


def test_resolve_given_parent_symbology_without_definitions_says_what_is_missing(
        dbn_path: DbnPath, tmp_path: Path) -> None:
    path = _parent_symbology_day(dbn_path, tmp_path)
    source = open_mbo(path)
    assert source.instruments()[95414] == "ES.FUT"  # databento's InstrumentMap
    with pytest.raises(SymbolError, match=r"^glbx-mdp3-20240508\.mbo\.dbn: symbol 'ESM3' not in "
                                          r"file \(have: ES\.FUT, ESM4\); the file uses parent "
                                          r"symbology: give the day's instrument definitions "
                                          r"\(--definition FILE, or glbx-mdp3-20240508"
                                          r"\.definition\.dbn\.zst beside it\)$"):
        source.resolve("ESM3")


def test_resolve_given_parent_symbology_and_definitions_beside_finds_the_raw_symbol(
        dbn_path: DbnPath, tmp_path: Path) -> None:
    path = _parent_symbology_day(dbn_path, tmp_path)
    shutil.copy(dbn_path("glbx-mdp3-es-fut.definition.dbn.zst"),
                tmp_path / "glbx-mdp3-20240508.definition.dbn.zst")
    source = open_mbo(path)
    assert source.resolve("ESM3").instrument_id == 95414
    got = _concat(list(source.iter_chunks(symbol="ESM3")))
    assert len(got) == len(_all_records(dbn_path(ESM4)))


def test_open_mbo_given_explicit_definition_file_resolves_parent_symbology(
        dbn_path: DbnPath, tmp_path: Path) -> None:
    path = _parent_symbology_day(dbn_path, tmp_path / "day")
    source = open_mbo(path, definition=dbn_path("glbx-mdp3-es-fut.definition.dbn.zst"))
    assert source.resolve_instrument("esm3") == (95414, "ESM3")


def test_read_definition_symbols_given_es_definitions_names_each_instrument(
        dbn_path: DbnPath) -> None:
    from vpbatch.ingest.definitions import read_definition_symbols

    assert read_definition_symbols(dbn_path("glbx-mdp3-es-fut.definition.dbn.zst")) == {
        95414: "ESM3"}
