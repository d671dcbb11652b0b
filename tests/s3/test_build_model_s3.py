"""``vpbatch build --model`` into a lake on S3 (moto's server): the model's columns are in the
committed attempt with the rest of the build, the same bytes as in a folder; a model that does
not fit the build leaves nothing in the bucket."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from tests.s3.conftest import keys
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.fit import fit_models, write_model_file
from vpbatch.products import resolve_product
from vpbatch.store import find_partition, open_lake, partition_manifest
from vpbatch.store.lake import PART_FILE, gold_partition
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
PRODUCT = resolve_product(SYMBOL)
TRAIN, DAY = dt.date(2026, 2, 5), dt.date(2026, 2, 6)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw folder of ``DAY``, a model fitted on ``TRAIN``) from small synthetic days."""
    root = tmp_path_factory.mktemp("s3_model")
    synth_to_lake(root, SYMBOL, TRAIN, records=30_000, seed=31, informed=0.3)
    synth_to_lake(root, SYMBOL, DAY, records=30_000, seed=32, informed=0.3)
    build(BuildRequest(symbol=SYMBOL, day=TRAIN, lake=root, use_cache=False))
    model = write_model_file(fit_models(root, SYMBOL, TRAIN, models=["vp+l1"],
                                        targets=["event_1"]), root / "model.json")
    raw = tmp_path_factory.mktemp("s3_model_raw")
    for path in (root / "raw").rglob(f"*{DAY:%Y%m%d}*"):
        target = raw / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return raw, model


def upload_raw(raw: Path, lake_url: str) -> None:
    lake = open_lake(lake_url)
    for path in sorted((raw / "raw").rglob("*")):
        if path.is_file():
            lake.upload(path, lake.loc(*path.relative_to(raw).parts))


def test_build_with_model_into_bucket_commits_the_columns_with_the_build(
        fitted: tuple[Path, Path], lake_url: str, tmp_path: Path) -> None:
    raw, model = fitted
    folder = tmp_path / "lake"
    shutil.copytree(raw / "raw", folder / "raw")
    upload_raw(raw, lake_url)
    for lake in (folder, lake_url):
        result = invoke("build", "-q", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--lake",
                        lake, "--model", model)
        assert result.exit_code == 0, result.output
    store = open_lake(lake_url)
    for table in ("vp_snapshot", "vp_grid"):
        found = find_partition(lake_url, table, "future_mbo", SYMBOL, DAY.isoformat())
        assert found is not None and "/attempt-" in found.part_url
        local = gold_partition(folder, table, PRODUCT, DAY) / PART_FILE
        assert store.read_bytes(found.part_url) == local.read_bytes()
    snap = find_partition(lake_url, "vp_snapshot", "future_mbo", SYMBOL, DAY.isoformat())
    assert snap is not None
    committed = partition_manifest(snap)  # the commit marker's manifest
    assert committed["model"]["sha256"] == json.loads(
        (gold_partition(folder, "vp_snapshot", PRODUCT, DAY) / "_MANIFEST.json").read_text()
    )["model"]["sha256"]
    assert committed["tables"]["vp_snapshot"]["columns"][-2:] == ["model_call",
                                                                  "model_probability"]
    columns = pq.read_schema(store.open_input(snap.part_url)).names
    assert columns[-2:] == ["model_call", "model_probability"]
    query = "SELECT count(*), count(model_call), sum(model_call) FROM vp_snapshot"
    from_bucket = invoke("sql", "--format", "csv", "--lake", lake_url, query)
    from_folder = invoke("sql", "--format", "csv", "--lake", folder, query)
    assert from_bucket.exit_code == 0, from_bucket.output
    assert from_bucket.stdout == from_folder.stdout


def test_build_with_a_model_of_other_parameters_leaves_the_bucket_without_a_partition(
        fitted: tuple[Path, Path], lake_url: str) -> None:
    raw, model = fitted
    upload_raw(raw, lake_url)
    before = keys(lake_url)
    doc = json.loads(model.read_text())
    doc["build_parameters"]["bucket"] *= 2  # checked by the build with the day's bucket
    bad = raw / "bad-bucket.json"
    bad.write_text(json.dumps(doc))
    result = invoke("build", "-q", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--lake",
                    lake_url, "--model", bad)
    assert result.exit_code == 1
    assert "build_parameters.bucket" in result.stderr
    assert keys(lake_url) == before
