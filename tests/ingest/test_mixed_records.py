"""DBN streams with records of other types between the MBO records (SPEC §14 "Reading
recordings"): live recordings and files written by ``databento.Live.add_stream``.

Every file here is built from the real ESM4 sample with databento_dbn's own classes: DBN v3
metadata without a mappings table, ``SymbolMappingMsg`` records, heartbeats and other
``SystemMsg`` records and an ``ErrorMsg`` put between the MBO records (at the start, across
chunk boundaries, back to back, at the end), in several zstd frames cut anywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpbatch.book.dtypes import F_LAST, MBO_DTYPE
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.config import EngineConfig
from vpbatch.errors import InputError, SymbolError, VpbatchError
from vpbatch.ingest.info import file_info, format_info
from vpbatch.ingest.reader import open_mbo
from vpbatch.store.lake import PART_FILE

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
ESM4_ID = 5602
#: A second subscribed symbol (no records in the file): the mapping records hold it.
ESU4_ID = 4916
UNDEF = 2**64 - 1
#: Records before which other records are put (chunk boundaries of chunk_records=100).
INSERT_AT = (0, 1, 99, 100, 101, 199, 200, 5_000, 13_795, 13_796)

DbnPath = Callable[[str], Path]


@dataclass(frozen=True)
class Mixed:
    """A mixed stream: metadata bytes, record bytes, the MBO records it holds, what else."""

    metadata: bytes
    body: bytes
    records: np.ndarray
    heartbeats: int
    system: int
    errors: int
    mappings: int


def _decompressed(path: Path) -> bytes:
    with path.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()


def _split(path: Path) -> tuple[bytes, np.ndarray]:
    """The metadata and the MBO records of a real file."""
    raw = _decompressed(path)
    meta_len = 8 + int.from_bytes(raw[4:8], "little")
    return raw[:meta_len], np.frombuffer(raw, MBO_DTYPE, offset=meta_len)


def live_metadata(start: int, schema: dbn.Schema | None = dbn.Schema.MBO,
                  symbols: list[str] | None = None) -> bytes:
    """DBN v3 metadata as the live gateway sends it: no mappings table, no end."""
    meta = dbn.Metadata(dataset="GLBX.MDP3", start=start, stype_in=dbn.SType.RAW_SYMBOL,
                        stype_out=dbn.SType.INSTRUMENT_ID, schema=schema,
                        symbols=symbols or [], partial=[], not_found=[], mappings=[],
                        end=None, version=3)
    return bytes(meta.encode())


def mapping(instrument_id: int, symbol: str, ts: int, out: str | None = None) -> bytes:
    return bytes(dbn.SymbolMappingMsg(1, instrument_id, ts, dbn.SType.RAW_SYMBOL, symbol,
                                      dbn.SType.INSTRUMENT_ID, out or str(instrument_id),
                                      ts, UNDEF))


def heartbeat(ts: int) -> bytes:
    return bytes(dbn.SystemMsg(ts, "Heartbeat", dbn.SystemCode.HEARTBEAT))


def mixed_stream(dbn_path: DbnPath, schema: dbn.Schema | None = dbn.Schema.MBO) -> Mixed:
    """ESM4's records with two mappings ahead and other records put at INSERT_AT."""
    _, records = _split(dbn_path(ESM4))
    ts = int(records["ts_recv"][0])
    # The live gateway's two forms of the output symbol: the id, or the raw symbol again.
    parts = [mapping(ESM4_ID, "ESM4", ts), mapping(ESU4_ID, "ESU4", ts, out="ESU4")]
    heartbeats = system = errors = 0
    previous = 0
    for i in INSERT_AT:
        parts.append(records[previous:i].tobytes())
        previous = i
        parts.append(heartbeat(ts + i))
        heartbeats += 1
        if i == 200:  # back to back, and a message that is not a heartbeat
            parts.append(bytes(dbn.SystemMsg(ts + i, "Finished mbo replay",
                                             dbn.SystemCode.REPLAY_COMPLETED)))
            system += 1
        if i == 5_000:
            parts.append(bytes(dbn.ErrorMsg(ts + i, "slow reader", is_last=True)))
            errors += 1
    parts.append(records[previous:].tobytes())
    return Mixed(live_metadata(int(records["ts_recv"][0]) - 1, schema), b"".join(parts),
                 records, heartbeats, system + heartbeats, errors, 2)


def write_zst(path: Path, metadata: bytes, body: bytes,
              cuts: tuple[int, ...] = (1_000, 5_003, 40_000, 400_000)) -> Path:
    """Metadata in its own zstd frame, then the body in frames cut at byte offsets."""
    cctx = zstandard.ZstdCompressor(level=1)
    data = cctx.compress(metadata)
    bounds = [0, *(c for c in cuts if c < len(body)), len(body)]
    for start, stop in itertools.pairwise(bounds):
        data += cctx.compress(body[start:stop])
    path.write_bytes(data)
    return path


@pytest.fixture
def mixed(dbn_path: DbnPath) -> Mixed:
    return mixed_stream(dbn_path)


@pytest.fixture
def mixed_zst(mixed: Mixed, tmp_path: Path) -> Path:
    return write_zst(tmp_path / "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst", mixed.metadata,
                     mixed.body)


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.empty(0, MBO_DTYPE)


# -- records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_records", [1, 7, 100, 101, 1_000, 1_000_000])
@pytest.mark.parametrize("compressed", [True, False])
def test_iter_raw_given_other_records_between_mbo_reads_exactly_the_mbo_records(
        mixed: Mixed, tmp_path: Path, chunk_records: int, compressed: bool) -> None:
    path = tmp_path / ("live.mbo.dbn.zst" if compressed else "live.mbo.dbn")
    if compressed:
        write_zst(path, mixed.metadata, mixed.body)
    else:
        path.write_bytes(mixed.metadata + mixed.body)
    source = open_mbo(path)
    chunks = list(source.iter_raw(chunk_records))
    assert all(0 < len(c) <= chunk_records for c in chunks)
    assert all(c.dtype == MBO_DTYPE and c.flags.writeable for c in chunks)
    got = _concat(chunks)
    assert got.tobytes() == mixed.records.tobytes()
    other = source.other_records()
    assert other is not None
    assert (other.symbol_mappings, other.system, other.heartbeats, other.errors) == (
        mixed.mappings, mixed.system, mixed.heartbeats, mixed.errors)
    assert other.messages == ["system: Finished mbo replay", "error: slow reader"]
    # The input's sha256, from the bytes the reader read, is the file's.
    assert source.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_iter_raw_given_the_original_file_counts_no_other_records(dbn_path: DbnPath) -> None:
    source = open_mbo(dbn_path(ESM4))
    assert sum(len(c) for c in source.iter_raw(500)) == 13_796
    other = source.other_records()
    assert other is not None and other.total == 0


def test_iter_raw_given_mixed_metadata_schema_reads_the_mbo_records(
        dbn_path: DbnPath, tmp_path: Path) -> None:
    stream = mixed_stream(dbn_path, schema=None)
    path = write_zst(tmp_path / "mixed.mbo.dbn.zst", stream.metadata, stream.body)
    source = open_mbo(path)
    assert source.metadata.schema == "mixed"
    assert _concat(list(source.iter_raw(333))).tobytes() == stream.records.tobytes()


def test_iter_chunks_given_frequent_heartbeats_keeps_every_record(
        dbn_path: DbnPath, tmp_path: Path) -> None:
    # A heartbeat after every 3rd record: the walk steps over 4,599 records of another type.
    _, records = _split(dbn_path(ESM4))
    ts = int(records["ts_recv"][0])
    body = mapping(ESM4_ID, "ESM4", ts) + b"".join(records[i: i + 3].tobytes() + heartbeat(ts)
                                                  for i in range(0, len(records), 3))
    path = write_zst(tmp_path / "beats.mbo.dbn.zst", live_metadata(ts), body)
    source = open_mbo(path)
    got = _concat(list(source.iter_chunks(symbol="ESM4", chunk_records=10_000)))
    assert got.tobytes() == records.tobytes()
    other = source.other_records()
    assert other is not None and other.heartbeats == (len(records) + 2) // 3


# -- symbols -----------------------------------------------------------------------------------


def test_resolve_given_live_metadata_without_mappings_uses_the_mapping_records(
        mixed_zst: Path) -> None:
    source = open_mbo(mixed_zst)
    assert source.metadata.symbols == ()
    selection = source.resolve("ESM4")
    assert (selection.instrument_id, selection.publisher_id, selection.symbol) == (
        ESM4_ID, 1, "ESM4")
    # Found in the records ahead of the first MBO record: no full pass was needed.
    assert source.other_records() is None
    assert source.instruments() == {ESU4_ID: "ESU4", ESM4_ID: "ESM4"}
    assert source.resolve_instrument("esu4") == (ESU4_ID, "ESU4")


def test_resolve_given_a_mapping_after_the_first_mbo_records_finds_it_with_a_full_pass(
        mixed: Mixed, tmp_path: Path) -> None:
    ts = int(mixed.records["ts_recv"][0])
    late = mapping(42, "NQM4", ts)
    at = mixed.body.index(heartbeat(ts + 5_000))
    body = mixed.body[:at] + late + mixed.body[at:]
    path = write_zst(tmp_path / "late.mbo.dbn.zst", mixed.metadata, body)
    source = open_mbo(path)
    assert source.resolve_instrument("NQM4") == (42, "NQM4")
    with pytest.raises(SymbolError, match=r"symbol 'ESZ4' not in file \(have: ESM4, ESU4, "
                                          r"NQM4\)"):
        source.resolve_instrument("ESZ4")


def test_instruments_given_no_mapping_records_lists_the_ids(
        dbn_path: DbnPath, tmp_path: Path) -> None:
    _, records = _split(dbn_path(ESM4))
    path = tmp_path / "bare.mbo.dbn"
    path.write_bytes(live_metadata(int(records["ts_recv"][0])) + heartbeat(1)
                     + records.tobytes())
    assert open_mbo(path).instruments() == {ESM4_ID: f"#{ESM4_ID}"}


# -- completeness ------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [7, 1_000, 30_000])
def test_open_mbo_given_mixed_zst_cut_inside_a_frame_says_truncated(
        mixed_zst: Path, tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.mbo.dbn.zst"
    path.write_bytes(mixed_zst.read_bytes()[:-cut])
    with pytest.raises(InputError, match=r"^cut\.mbo\.dbn\.zst: truncated"):
        list(open_mbo(path).iter_raw(100))


def test_iter_raw_given_mixed_zst_cut_at_a_frame_boundary_inside_a_record_says_truncated(
        mixed: Mixed, tmp_path: Path) -> None:
    ts = int(mixed.records["ts_recv"][0])
    inside = mixed.body.index(heartbeat(ts + 5_000)) + 100  # 100 bytes into a heartbeat
    path = write_zst(tmp_path / "cut.mbo.dbn.zst", mixed.metadata, mixed.body[:inside],
                     cuts=(inside - 500,))
    source = open_mbo(path)  # every frame is whole
    with pytest.raises(InputError, match=r"^cut\.mbo\.dbn\.zst: truncated: the data ends "
                                         r"inside a record \(100 bytes of it after 5,000 MBO"):
        list(source.iter_raw(100))


def test_open_mbo_given_uncompressed_mixed_file_cut_inside_a_record_says_truncated(
        mixed: Mixed, tmp_path: Path) -> None:
    path = tmp_path / "cut.mbo.dbn"
    path.write_bytes(mixed.metadata + mixed.body[:-10])
    assert len(mixed.body[:-10]) % 56  # not a whole number of MBO records
    # The body ends with a heartbeat (320 bytes): 310 of them are left.
    with pytest.raises(InputError, match=r"^cut\.mbo\.dbn: truncated: 310 bytes of an "
                                         r"incomplete record at the end"):
        open_mbo(path)


def test_iter_raw_given_uncompressed_mixed_file_cut_at_a_multiple_of_56_says_truncated(
        mixed: Mixed, tmp_path: Path) -> None:
    # The size alone looks like whole MBO records: the walk over the records finds the cut.
    ts = int(mixed.records["ts_recv"][0])
    at = mixed.body.index(heartbeat(ts + 13_796))  # the last record: a heartbeat
    cut = at + 56 * 2 + (-at) % 56
    assert cut % 56 == 0 and at < cut < len(mixed.body)
    path = tmp_path / "cut.mbo.dbn"
    path.write_bytes(mixed.metadata + mixed.body[:cut])
    assert (path.stat().st_size - len(mixed.metadata)) % 56 == 0
    with pytest.raises(InputError, match=r"^cut\.mbo\.dbn: truncated: the data ends inside a "
                                         r"record"):
        list(open_mbo(path).iter_raw())


def test_iter_raw_given_an_unknown_record_type_is_a_corrupt_record(
        mixed: Mixed, tmp_path: Path) -> None:
    body = bytearray(mixed.body)
    ts = int(mixed.records["ts_recv"][0])
    at = mixed.body.index(heartbeat(ts + 100))
    body[at + 1] = 0x7E  # no DBN record type
    path = write_zst(tmp_path / "bad.mbo.dbn.zst", mixed.metadata, bytes(body))
    with pytest.raises(InputError, match=r"^bad\.mbo\.dbn\.zst: corrupt record after 100 MBO "
                                         r"records \(unknown record type 0x7e"):
        list(open_mbo(path).iter_raw())


def test_iter_raw_given_the_last_mbo_record_without_f_last_says_truncated(
        mixed: Mixed, tmp_path: Path) -> None:
    records = mixed.records.copy()
    assert records["flags"][-1] & F_LAST
    records["flags"][-1] &= ~F_LAST & 0xFF
    ts = int(records["ts_recv"][0])
    path = write_zst(tmp_path / "open.mbo.dbn.zst", mixed.metadata,
                     mapping(ESM4_ID, "ESM4", ts) + records.tobytes() + heartbeat(ts))
    with pytest.raises(InputError, match=r"truncated: the data ends inside an event \(record "
                                         r"13,796 has no F_LAST\)"):
        list(open_mbo(path).iter_raw())


# -- databento.Live.add_stream -----------------------------------------------------------------


@pytest.mark.parametrize("schema", [dbn.Schema.MBO, None])
def test_open_mbo_given_a_live_add_stream_file_reads_it(
        dbn_path: DbnPath, tmp_path: Path, schema: dbn.Schema | None) -> None:
    # What databento.Live.add_stream writes: the Metadata's encode(), then bytes(record) of
    # every record the client decoded (DBN v3), uncompressed.
    raw = _decompressed(dbn_path(ESM4))
    decoder = dbn.DBNDecoder(upgrade_policy=dbn.VersionUpgradePolicy.UPGRADE_TO_V3)
    decoded = decoder.write_and_decode(raw)
    mbo = [r for r in decoded if isinstance(r, dbn.MBOMsg)]
    assert len(mbo) == 13_796
    start = mbo[0].ts_recv
    records: list[object] = [
        dbn.SymbolMappingMsg(1, ESM4_ID, start, dbn.SType.RAW_SYMBOL, "ESM4",
                             dbn.SType.INSTRUMENT_ID, "ESM4", start, UNDEF),
        dbn.SystemMsg(start, "Subscription request 0 for mbo data succeeded",
                      dbn.SystemCode.SUBSCRIPTION_ACK),
        *mbo[:7_000],
        dbn.SystemMsg(start, "Heartbeat", dbn.SystemCode.HEARTBEAT),
        *mbo[7_000:],
        dbn.SystemMsg(start, "Finished mbo replay", dbn.SystemCode.REPLAY_COMPLETED),
    ]
    path = tmp_path / "live-stream.dbn"
    with path.open("wb") as fh:
        fh.write(dbn.Metadata(dataset="GLBX.MDP3", start=start - 1,
                              stype_in=dbn.SType.RAW_SYMBOL, stype_out=dbn.SType.INSTRUMENT_ID,
                              schema=schema, version=3).encode())
        for record in records:
            fh.write(bytes(record))  # type: ignore[call-overload]
    source = open_mbo(path)
    assert source.resolve("ESM4").instrument_id == ESM4_ID
    got = _concat(list(source.iter_chunks(symbol="ESM4", chunk_records=4_096)))
    assert got.tobytes() == _split(dbn_path(ESM4))[1].tobytes()
    other = source.other_records()
    assert other is not None
    assert (other.symbol_mappings, other.system, other.heartbeats) == (1, 3, 1)


# -- info and build ----------------------------------------------------------------------------


def test_file_info_given_mixed_file_counts_the_other_records_and_shows_the_symbols(
        mixed: Mixed, mixed_zst: Path) -> None:
    info = file_info(mixed_zst, chunk_records=100)
    assert info["record_count"] == 13_796
    assert info["symbols"] == ["ESM4", "ESU4"]
    assert [(i["instrument_id"], i["symbol"], i["records"]) for i in info["instruments"]] == [
        (ESU4_ID, "ESU4", 0), (ESM4_ID, "ESM4", 13_796)]
    other = info["other_records"]
    assert (other["symbol_mappings"], other["system"], other["heartbeats"], other["errors"]) \
        == (2, mixed.system, mixed.heartbeats, 1)
    text = format_info(info)
    assert (f"other records: 2 symbol mappings, {mixed.system} system ({mixed.heartbeats} "
            f"heartbeats), 1 error (skipped)") in text
    assert "  system: Finished mbo replay" in text
    assert "ESM4" in text.split("instruments")[1]


def test_file_info_given_a_day_file_shows_no_other_records_line(dbn_path: DbnPath) -> None:
    info = file_info(dbn_path(ESM4))
    assert info["other_records"]["total"] == 0
    assert "other records" not in format_info(info)


def _rows(folder: Path) -> pa.Table:
    return pq.read_table(folder / PART_FILE).replace_schema_metadata(None)


def test_build_given_the_live_recording_writes_the_same_rows_as_the_day_file(
        dbn_path: DbnPath, mixed_zst: Path, tmp_path: Path) -> None:
    config = EngineConfig.from_sample("event", K=10)
    day_file = build(BuildRequest(symbol="ESM4", day=None, lake=tmp_path / "a",
                                  path=dbn_path(ESM4), config=config, mbp_levels=10,
                                  chunk_records=1_000))
    recording = build(BuildRequest(symbol="ESM4", day=day_file.day, lake=tmp_path / "b",
                                   path=mixed_zst, config=config, mbp_levels=10,
                                   chunk_records=1_000))
    assert day_file.day == recording.day == dt.date(2024, 5, 8)
    assert recording.status == "built"
    for table in ("vp_snapshot", "vp_grid", "mbp"):
        a, b = _rows(day_file.partitions[table]), _rows(recording.partitions[table])
        assert a.num_rows > 0, table
        assert a.equals(b), table


def test_vpbatch_info_given_the_recording_in_the_lake_finds_it_and_prints_the_counts(
        mixed: Mixed, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.main import cli
    from vpbatch.products import resolve_product
    from vpbatch.store.lake import live_recording_name, raw_dir

    folder = raw_dir(tmp_path, resolve_product("ESM4"))
    folder.mkdir(parents=True)
    write_zst(folder / live_recording_name("GLBX.MDP3", dt.date(2024, 5, 8), "ESM4"),
              mixed.metadata, mixed.body)
    result = CliRunner().invoke(cli, ["info", "--symbol", "ESM4", "--dt", "2024-05-08",
                                      "--lake", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst" in result.output
    assert (f"other records: 2 symbol mappings, {mixed.system} system ({mixed.heartbeats} "
            f"heartbeats), 1 error (skipped)") in result.output
    assert "selection   ESM4 (instrument_id 5602): 13,796 records" in result.output


# -- damaged mixed streams ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_mixed() -> tuple[bytes, bytes]:
    """The first 400 ESM4 records with mappings, heartbeats, a system and an error message."""
    from tests.conftest import DATA

    _, records = _split(DATA / ESM4)
    ts = int(records["ts_recv"][0])
    parts = [mapping(ESM4_ID, "ESM4", ts), mapping(ESU4_ID, "ESU4", ts, out="ESU4")]
    for i in range(0, 400, 50):
        parts += [records[i: i + 50].tobytes(), heartbeat(ts + i)]
    parts += [bytes(dbn.SystemMsg(ts, "Finished mbo replay", dbn.SystemCode.REPLAY_COMPLETED)),
              bytes(dbn.ErrorMsg(ts, "an error", is_last=True))]
    return live_metadata(ts - 1), b"".join(parts)


@given(data=st.data())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reader_given_a_damaged_mixed_stream_reads_it_or_refuses_in_one_line(
        small_mixed: tuple[bytes, bytes], tmp_path: Path, data: st.DataObject) -> None:
    metadata, body = small_mixed
    damaged = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "length", "rtype"]))
        if not damaged:
            break
        at = data.draw(st.integers(0, len(damaged) - 1))
        if kind == "truncate":
            del damaged[at:]
        elif kind == "flip":
            damaged[at] ^= data.draw(st.integers(1, 255))
        else:  # a record header's length or rtype byte (records start at 4-byte offsets)
            at -= at % 4
            damaged[at + (kind == "rtype")] = data.draw(st.integers(0, 255))
    compressed = data.draw(st.booleans())
    path = tmp_path / ("d.mbo.dbn.zst" if compressed else "d.mbo.dbn")
    if compressed:
        write_zst(path, metadata, bytes(damaged), cuts=(data.draw(st.integers(1, 20_000)),))
    else:
        path.write_bytes(metadata + bytes(damaged))
    try:
        source = open_mbo(path)
        source.instruments()
        for _ in source.iter_raw(chunk_records=data.draw(st.integers(1, 120))):
            pass
        source.sha256()
    except VpbatchError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(path.name), str(exc)
