"""``--dt`` inferred from the file: vpbatch.clock.session_day and ``build --path`` without --dt."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from cli.main import cli
from vpbatch.build.request import infer_session_day
from vpbatch.clock import NEW_YORK, et_ns, session_day
from vpbatch.errors import ConfigError

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
#: Offset of the header's ``end`` (u64 ns) in a DBN v1-v3 file: magic+version 4, length 4,
#: dataset 16, schema 2, start 8.
_END_OFFSET = 34
_HOUR = 3600 * 1_000_000_000


def _utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def test_session_day_given_one_utc_day_names_it() -> None:
    assert session_day(_utc(2026, 2, 6), _utc(2026, 2, 7)) == dt.date(2026, 2, 6)
    assert session_day(_utc(2024, 4, 3, 8), _utc(2024, 4, 3, 14)) == dt.date(2024, 4, 3)


def test_session_day_given_new_york_day_across_utc_midnight_names_the_new_york_day() -> None:
    start = et_ns(dt.date(2026, 2, 6), dt.time(9, 30))
    end = et_ns(dt.date(2026, 2, 6), dt.time(21, 0))  # 02:00 UTC the next day
    assert session_day(start, end) == dt.date(2026, 2, 6)


def test_session_day_given_globex_session_names_the_day_it_ends_on() -> None:
    start = int(dt.datetime(2026, 2, 5, 18, 0, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000
    end = int(dt.datetime(2026, 2, 6, 17, 0, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000
    assert session_day(start, end) == dt.date(2026, 2, 6)


def test_session_day_given_several_days_is_none() -> None:
    assert session_day(_utc(2026, 2, 5), _utc(2026, 2, 7)) is None
    assert session_day(_utc(2026, 2, 5, 12), _utc(2026, 2, 6, 12)) is None


def _with_end(src: Path, out: Path, end_ns: int | None) -> Path:
    """An uncompressed copy of ``src`` whose header says ``end`` (None: undefined)."""
    data = bytearray(zstandard.ZstdDecompressor().stream_reader(src.read_bytes()).read())
    assert data[:3] == b"DBN"
    value = 2**64 - 1 if end_ns is None else end_ns
    data[_END_OFFSET:_END_OFFSET + 8] = struct.pack("<Q", value)
    out.write_bytes(bytes(data))
    return out


def test_infer_session_day_given_header_of_one_day_ignores_the_name(
        dbn_path: Callable[[str], Path], tmp_path: Path) -> None:
    path = tmp_path / "no-date-here.mbo.dbn.zst"
    shutil.copy(dbn_path(ESM4), path)
    day, how = infer_session_day(path)
    assert day == dt.date(2024, 5, 8)
    assert how.startswith("from the file's header: 2024-05-08 00:00:00 UTC")


def test_infer_session_day_given_header_over_three_days_says_pass_dt(
        dbn_path: Callable[[str], Path], tmp_path: Path) -> None:
    path = _with_end(dbn_path(ESM4), tmp_path / "long.mbo.dbn", _utc(2024, 5, 11))
    with pytest.raises(ConfigError, match=r"^long\.mbo\.dbn: covers 2024-05-08 00:00:00 UTC "
                                          r"\(20:00 ET\) to 2024-05-11 .* more than one session; "
                                          r"pass --dt YYYY-MM-DD$"):
        infer_session_day(path)


def test_build_given_path_without_dt_prints_the_inferred_date_and_builds(
        dbn_path: Callable[[str], Path], tmp_path: Path) -> None:
    path = tmp_path / "es.mbo.dbn.zst"
    shutil.copy(dbn_path(ESM4), path)
    result = CliRunner().invoke(cli, ["build", "--symbol", "ESM4", "--path", str(path),
                                      "--lake", str(tmp_path / "lake"), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("--dt 2024-05-08 (from the file's header: ")
    assert "ESM4 2024-05-08: built" in result.stdout
    assert (tmp_path / "lake" / "gold" / "vp_grid" / "product_type=future_mbo" / "symbol=ESM4"
            / "dt=2024-05-08" / "_SUCCESS").is_file()


def test_build_given_path_over_several_sessions_without_dt_exits_1(
        dbn_path: Callable[[str], Path], tmp_path: Path) -> None:
    path = _with_end(dbn_path(ESM4), tmp_path / "long.mbo.dbn", _utc(2024, 5, 11))
    result = CliRunner().invoke(cli, ["build", "--symbol", "ESM4", "--path", str(path),
                                      "--lake", str(tmp_path / "lake"), "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: long.mbo.dbn: covers 2024-05-08")
    assert result.stderr.endswith("more than one session; pass --dt YYYY-MM-DD\n")
    assert not (tmp_path / "lake" / "gold").exists() or not any(
        (tmp_path / "lake" / "gold").rglob("_SUCCESS"))
