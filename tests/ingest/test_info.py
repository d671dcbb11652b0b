"""vpbatch.ingest.info: file statistics in one streaming pass."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from vpbatch.clock import NEW_YORK, format_ns
from vpbatch.errors import InputError, SymbolError
from vpbatch.ingest.info import file_info, format_info

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
ESH4 = "glbx-mdp3-esh4-20231224.mbo.dbn.zst"
MESH5 = "glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst"
GOOG = "dbeq-basic-goog-20240403.mbo.dbn.zst"

DbnPath = Callable[[str], Path]


def test_format_ns_given_nanoseconds_keeps_all_nine_digits() -> None:
    assert format_ns(1_715_126_400_000_000_001) == "2024-05-08T00:00:00.000000001+00:00"
    assert format_ns(1_715_126_400_000_000_001, NEW_YORK) == "2024-05-07T20:00:00.000000001-04:00"
    assert format_ns(1_703_422_805_243_925_307, NEW_YORK) == "2023-12-24T08:00:05.243925307-05:00"
    assert format_ns(0, dt.UTC) == "1970-01-01T00:00:00.000000000+00:00"


def test_file_info_given_esm4_counts_actions_flags_and_the_one_clear(dbn_path: DbnPath) -> None:
    info = file_info(dbn_path(ESM4))
    assert info["record_count"] == info["records"] == 13_796
    assert info["dbn_version"] == 1
    assert info["dataset"] == "GLBX.MDP3"
    assert info["schema"] == "mbo"
    assert info["instruments"] == [{"instrument_id": 5602, "symbol": "ESM4", "records": 13_796,
                                    "publishers": [{"publisher_id": 1, "records": 13_796}]}]
    assert info["publishers"] == [{"publisher_id": 1, "name": "GLBX.MDP3.GLBX",
                                   "records": 13_796}]
    assert info["actions"] == {"A": 13_678, "C": 80, "M": 27, "R": 1, "T": 5, "F": 5}
    assert sum(info["actions"].values()) == 13_796
    assert info["flags"]["F_SNAPSHOT"] == 13_601
    assert info["flags"]["F_LAST"] == 185
    assert info["snapshot"] == {"present": True, "records": 13_601, "clears": 1,
                                "snapshot_clears": 1}
    assert info["ts_recv"]["first_utc"] == "2024-05-08T00:00:00.000000000+00:00"
    assert info["ts_event"]["first_new_york"].startswith("2024-05-07T20:00:00.")


def test_file_info_given_snapshot_only_file_reports_snapshot_without_clear(
    dbn_path: DbnPath,
) -> None:
    info = file_info(dbn_path(ESH4))
    assert info["records"] == 8_725
    assert info["actions"] == {"A": 8_725}
    assert info["flags"]["F_SNAPSHOT"] == 8_725
    assert info["snapshot"]["present"] is True
    assert info["snapshot"]["clears"] == 0
    # Every record is a snapshot record, so the ts_event span falls back to them.
    assert info["ts_event"]["first_utc"] == "2023-12-24T13:00:05.243925307+00:00"


def test_file_info_given_mesh5_spans_one_minute_in_utc_and_new_york(dbn_path: DbnPath) -> None:
    info = file_info(dbn_path(MESH5))
    assert info["instruments"][0]["symbol"] == "MESH5"
    span = info["ts_event"]
    assert span["first_utc"] == "2025-01-21T13:30:00.009235897+00:00"
    assert span["last_utc"] == "2025-01-21T13:30:59.980055413+00:00"
    assert span["first_new_york"] == "2025-01-21T08:30:00.009235897-05:00"
    assert span["seconds"] == pytest.approx(59.970819516)
    assert info["snapshot"]["present"] is False


def test_file_info_given_goog_lists_publishers_and_instruments(dbn_path: DbnPath) -> None:
    info = file_info(dbn_path(GOOG))
    assert info["record_count"] == 286_130
    assert [(p["publisher_id"], p["name"], p["records"]) for p in info["publishers"]] == [
        (39, "DBEQ.BASIC.XCHI", 36_992),
        (40, "DBEQ.BASIC.XCIS", 3_179),
        (41, "DBEQ.BASIC.IEXG", 245_959),
    ]
    assert [(i["instrument_id"], i["symbol"], i["records"]) for i in info["instruments"]] == [
        (7151, "GOOG", 128_943),
        (7152, "GOOGL", 157_187),
    ]
    assert info["selection"] is None


def test_file_info_given_symbol_restricts_record_statistics(dbn_path: DbnPath) -> None:
    info = file_info(dbn_path(GOOG), symbol="GOOGL")
    assert info["selection"] == {"symbol": "GOOGL", "instrument_id": 7152}
    assert info["records"] == 157_187
    assert sum(info["actions"].values()) == 157_187
    assert info["record_count"] == 286_130  # the tables still cover the whole file


def test_file_info_given_small_chunks_gives_the_same_result(dbn_path: DbnPath) -> None:
    calls: list[int] = []
    chunked = file_info(dbn_path(ESM4), chunk_records=1_000, progress=calls.append)
    assert chunked == file_info(dbn_path(ESM4))
    assert sum(calls) == 13_796
    assert max(calls) == 1_000


def test_file_info_given_any_file_is_json_serialisable(dbn_path: DbnPath) -> None:
    info = file_info(dbn_path(GOOG), symbol="GOOG")
    assert json.loads(json.dumps(info)) == info


def test_file_info_given_symbol_not_in_file_names_the_file(dbn_path: DbnPath) -> None:
    with pytest.raises(SymbolError, match=rf"^{ESM4}: symbol 'MNQH6' not in file \(have: ESM4\)$"):
        file_info(dbn_path(ESM4), symbol="MNQH6")


def test_file_info_given_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        file_info(tmp_path / "x.mbo.dbn.zst")


def test_format_info_given_esm4_shows_the_main_lines(dbn_path: DbnPath) -> None:
    text = format_info(file_info(dbn_path(ESM4)))
    lines = text.splitlines()
    assert lines[0].endswith(ESM4)
    assert "records     13,796" in lines
    assert any(line.split() == ["5602", "ESM4", "13,796"] for line in lines)
    assert any(line.split() == ["1", "GLBX.MDP3.GLBX", "13,796"] for line in lines)
    assert any(line.split()[:2] == ["R", "1"] for line in lines)
    assert "snapshot    yes" in text
    assert "(New York)" in text
    assert not text.endswith("\n")
