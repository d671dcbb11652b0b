"""``vpbatch.store.lake``: live recordings beside the day files (SPEC §14)."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pytest

from vpbatch.errors import ConfigError, InputError, VpbatchWarning
from vpbatch.products import resolve_product
from vpbatch.store.lake import (
    find_definition_file,
    find_raw_file,
    live_recording_name,
    raw_dir,
    raw_file_name,
)

DAY = dt.date(2024, 5, 8)
ES = resolve_product("ESM4")


def _folder(lake: Path) -> Path:
    folder = raw_dir(lake, ES)
    folder.mkdir(parents=True)
    return folder


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_live_recording_name_given_dataset_day_symbol_names_the_file() -> None:
    assert live_recording_name("GLBX.MDP3", DAY, "ESM4") == \
        "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst"
    assert raw_file_name("GLBX.MDP3", DAY) == "glbx-mdp3-20240508.mbo.dbn.zst"


@pytest.mark.parametrize("symbol", ["", "ES/M4", " ESM4"])
def test_live_recording_name_given_a_symbol_that_cannot_name_a_file_is_a_config_error(
        symbol: str) -> None:
    with pytest.raises(ConfigError):
        live_recording_name("GLBX.MDP3", DAY, symbol)


def test_find_raw_file_given_only_the_recording_uses_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, live_recording_name("GLBX.MDP3", DAY, "ESM4"),
           "glbx-mdp3-20240507.mbo.dbn.zst")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = find_raw_file(tmp_path, ES, DAY)
    assert found == folder / "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst"


def test_find_raw_file_given_day_file_and_recording_uses_the_day_file_and_says_so(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.mbo.dbn.zst", "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst")
    with pytest.warns(VpbatchWarning) as caught:
        found = find_raw_file(tmp_path, ES, DAY)
    assert found == folder / "glbx-mdp3-20240508.mbo.dbn.zst"
    message = str(caught[0].message)
    assert "using the day file glbx-mdp3-20240508.mbo.dbn.zst" in message
    assert "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst" in message
    assert "--path" in message


def test_find_raw_file_given_day_file_and_another_symbols_recording_says_nothing(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.mbo.dbn.zst", "glbx-mdp3-20240508.live-ESU4.mbo.dbn.zst")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_raw_file(tmp_path, ES, DAY).name == "glbx-mdp3-20240508.mbo.dbn.zst"


def test_find_raw_file_given_recordings_of_several_symbols_uses_the_requested_one(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.live-ESU4.mbo.dbn.zst",
           "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst",
           "glbx-mdp3-20240509.live-ESM4.mbo.dbn.zst")
    assert find_raw_file(tmp_path, ES, DAY).name == "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst"
    esu4 = resolve_product("ESU4")
    assert find_raw_file(tmp_path, esu4, DAY).name == "glbx-mdp3-20240508.live-ESU4.mbo.dbn.zst"


def test_find_raw_file_given_only_another_symbols_recording_says_no_file(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.live-ESU4.mbo.dbn.zst", "glbx-mdp3-20240507.mbo.dbn.zst")
    with pytest.raises(InputError, match=r"no MBO file for 2024-05-08 \(dates there: 20240507, "
                                         r"20240508\); live recordings of other symbols that "
                                         r"day: glbx-mdp3-20240508\.live-ESU4\.mbo\.dbn\.zst$"):
        find_raw_file(tmp_path, ES, DAY)


def test_find_raw_file_never_picks_up_a_recording_being_written(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst.part")
    with pytest.raises(InputError, match=r"no MBO file for 2024-05-08 \(dates there: no "
                                         r"\.mbo\.dbn files\)$"):
        find_raw_file(tmp_path, ES, DAY)


def test_find_raw_file_given_several_matching_recordings_lists_them(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst",
           "glbx-mdp3-20240508.live-ESM4.mbo.dbn")
    with pytest.raises(InputError, match=r"several live recordings of ESM4 for 2024-05-08: "
                                         r"glbx-mdp3-20240508\.live-ESM4\.mbo\.dbn, "
                                         r"glbx-mdp3-20240508\.live-ESM4\.mbo\.dbn\.zst; "
                                         r"choose one with --path$"):
        find_raw_file(tmp_path, ES, DAY)


def test_find_raw_file_given_a_plain_and_a_compressed_day_file_prefers_the_compressed(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.mbo.dbn", "glbx-mdp3-20240508.mbo.dbn.zst")
    assert find_raw_file(tmp_path, ES, DAY).name == "glbx-mdp3-20240508.mbo.dbn.zst"


def test_find_definition_file_given_a_recording_finds_the_days_definitions(
        tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _touch(folder, "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst")
    recording = folder / "glbx-mdp3-20240508.live-ESM4.mbo.dbn.zst"
    assert find_definition_file(recording) is None
    _touch(folder, "glbx-mdp3-20240508.definition.dbn.zst")
    assert find_definition_file(recording) == folder / "glbx-mdp3-20240508.definition.dbn.zst"
    assert find_definition_file(folder / "glbx-mdp3-20240508.mbo.dbn.zst") == \
        folder / "glbx-mdp3-20240508.definition.dbn.zst"
