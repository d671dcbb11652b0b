"""Writers of raw files through local names (synth, download) on a bucket lake: the stage."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.s3.conftest import keys
from vpbatch.store import open_lake
from vpbatch.store.cache import cache_location, host_cache_dir
from vpbatch.store.staging import Stage, dated_between

FOLDER = "raw/source=databento/product_type=future_mbo/symbol=MNQ/table=market_by_order_dbn"


def test_stage_copies_the_wanted_raw_files_and_syncs_changes_back(lake_url: str) -> None:
    lake = open_lake(lake_url)
    for name in ("glbx-mdp3-20260205.mbo.dbn.zst", "glbx-mdp3-20260206.mbo.dbn.zst",
                 "glbx-mdp3-20260209.mbo.dbn.zst", "symbology.json"):
        lake.put(lake.loc(FOLDER, name), name.encode())
    stage = Stage(lake_url, dated_between(dt.date(2026, 2, 6), dt.date(2026, 2, 9)))
    try:
        here = stage.root / FOLDER
        assert sorted(p.name for p in here.iterdir()) == [
            "glbx-mdp3-20260206.mbo.dbn.zst", "glbx-mdp3-20260209.mbo.dbn.zst",
            "symbology.json"]
        (here / "glbx-mdp3-20260209.mbo.dbn.zst").unlink()  # removed by the writer
        (here / "symbology.json").write_text('{"merged": true}')  # changed
        (here / "glbx-mdp3-20260210.mbo.dbn.zst").write_bytes(b"new day")  # new
        assert stage.location(here / "symbology.json") == f"{lake_url}/{FOLDER}/symbology.json"
        assert sorted(stage.sync()) == [f"{lake_url}/{FOLDER}/glbx-mdp3-20260210.mbo.dbn.zst",
                                        f"{lake_url}/{FOLDER}/symbology.json"]
        assert stage.sync() == []  # nothing changed since
    finally:
        stage.close()
    assert not stage.root.exists()
    assert keys(lake_url) == [f"{FOLDER}/glbx-mdp3-20260205.mbo.dbn.zst",
                              f"{FOLDER}/glbx-mdp3-20260206.mbo.dbn.zst",
                              f"{FOLDER}/glbx-mdp3-20260210.mbo.dbn.zst",
                              f"{FOLDER}/symbology.json"]
    assert lake.read_bytes(lake.loc(FOLDER, "symbology.json")) == b'{"merged": true}'


def test_stage_of_a_folder_lake_is_the_folder(tmp_path: Path) -> None:
    stage = Stage(tmp_path)
    assert stage.root == tmp_path and stage.sync() == []
    stage.close()
    assert tmp_path.is_dir()


def test_cache_location_defaults_per_lake_kind(tmp_path: Path, host_cache: Path) -> None:
    assert cache_location(tmp_path) == str(tmp_path / "cache" / "book")
    assert cache_location("s3://bucket/lake") == str(host_cache) == str(host_cache_dir())
    assert cache_location("s3://bucket/lake", "s3://bucket/cache") == "s3://bucket/cache"
    assert cache_location(tmp_path, tmp_path / "mine") == str(tmp_path / "mine")
