"""``vpbatch live --model``: a fitted model's call and probability per state, in the viewer's
frames and in the recorded partitions, exactly as ``vpbatch build --model`` of the recording
computes them (SPEC §14 parity, SPEC §15)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from websockets.sync.client import connect

from tests.live.conftest import REPO, SYNTH_DAY
from tests.live.gateway import TEST_KEY, StandInGateway
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError
from vpbatch.fit import fit_models, write_model_file
from vpbatch.fit.online import ModelScorer
from vpbatch.live.session import LiveRequest, run_live
from vpbatch.products import resolve_product
from vpbatch.store.lake import (
    MANIFEST_FILE,
    PART_FILE,
    gold_partition,
    live_recording_name,
    raw_dir,
)
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
PRODUCT = resolve_product(SYMBOL)
MODEL_COLUMNS = ["model_call", "model_probability"]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a synthetic day file of 40,000 records, a model fitted on a build of it)."""
    root = tmp_path_factory.mktemp("live-model")
    synth_to_lake(root, SYMBOL, SYNTH_DAY, records=40_000, seed=41, informed=0.3)
    build(BuildRequest(symbol=SYMBOL, day=SYNTH_DAY, lake=root, use_cache=False))
    model = write_model_file(fit_models(root, SYMBOL, SYNTH_DAY, models=["vp+l1"],
                                        targets=["event_1"]), root / "model.json")
    return next((root / "raw").rglob("*.mbo.dbn.zst")), model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_with_model_sends_and_records_what_build_with_model_of_the_recording_computes(
        day: tuple[Path, Path], tmp_path: Path) -> None:
    file, model = day
    port = free_port()
    lake = tmp_path / "lake"
    env = {**os.environ, "DATABENTO_API_KEY": TEST_KEY}
    updates: list[dict] = []
    with StandInGateway(file, rate=20_000, hold_at=0) as gw:  # the market waits for the viewer
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "live", "--symbol", SYMBOL, "--dt",
             SYNTH_DAY.isoformat(), "--gateway", f"127.0.0.1:{gw.port}", "--port", str(port),
             "--lake", str(lake), "--quiet", "--model", str(model)], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith(f"vpbatch live: http://127.0.0.1:{port}/"), line
            url = (f"ws://127.0.0.1:{port}/v1/vacuum-pressure/stream?symbol={SYMBOL}"
                   "&source=live")
            with connect(url, max_size=None, open_timeout=30) as ws:
                assert json.loads(ws.recv(timeout=30))["type"] == "runtime_config"
                gw.resume()
                while True:
                    message = ws.recv(timeout=60)
                    if isinstance(message, bytes):
                        continue
                    frame = json.loads(message)
                    if frame["type"] == "grid_update":
                        updates.append(frame)
                    elif frame["type"] == "end":
                        break
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"{SYMBOL}: built" in out

    live_snap = pq.read_table(gold_partition(lake, "vp_snapshot", PRODUCT, SYNTH_DAY) / PART_FILE)
    assert live_snap.schema.names[-2:] == MODEL_COLUMNS
    recorded = pl.from_arrow(live_snap)
    assert isinstance(recorded, pl.DataFrame)
    assert recorded["model_call"].null_count() < recorded.height // 10
    assert set(recorded["model_call"].drop_nulls().unique().to_list()) >= {-1, 1}
    manifest = json.loads((gold_partition(lake, "vp_snapshot", PRODUCT, SYNTH_DAY)
                           / MANIFEST_FILE).read_text())
    assert manifest["model"]["name"] == "vp+l1" and manifest["model"]["path"] == str(model)

    # Replay parity: build --model of the recording gives the same rows, model columns too.
    rec = raw_dir(lake, PRODUCT) / live_recording_name(PRODUCT.dataset, SYNTH_DAY, SYMBOL)
    rebuilt = build(BuildRequest(symbol=SYMBOL, day=None, lake=tmp_path / "rebuilt", path=rec,
                                 use_cache=False, scorer=ModelScorer.from_file(model)))
    for table in ("vp_snapshot", "vp_grid"):
        live_table = pq.read_table(gold_partition(lake, table, PRODUCT, SYNTH_DAY) / PART_FILE)
        assert live_table.equals(pq.read_table(Path(rebuilt.partitions[table]) / PART_FILE)), \
            table

    # The viewer's second band: each frame carries its state's recorded call and probability.
    want = {e: (c, p) for e, c, p in recorded.select(["event_id", *MODEL_COLUMNS]).iter_rows()}
    assert len(updates) >= 20
    for update in updates:
        assert (update["model_call"], update["model_probability"]) == want[update["event_id"]]
    assert len({u["model_call"] for u in updates}) >= 2


def test_live_with_a_model_of_other_parameters_refuses_before_connecting(
        day: tuple[Path, Path], tmp_path: Path) -> None:
    _, model = day
    req = LiveRequest(symbols=(SYMBOL,), day=SYNTH_DAY, lake=tmp_path, key=TEST_KEY,
                      gateway="127.0.0.1", port=1, config=EngineConfig(K=40),
                      scorer=ModelScorer.from_file(model))
    with pytest.raises(ConfigError, match=r"build_parameters.config.K: .* this build has 40"):
        run_live(req)  # port 1: connecting would fail otherwise
    result = subprocess.run(
        [sys.executable, "-m", "cli", "live", "--symbol", SYMBOL, "--dt", SYNTH_DAY.isoformat(),
         "--gateway", "127.0.0.1:1", "--lake", str(tmp_path), "--quiet", "--model", str(model),
         "--sample", "event"], cwd=REPO, env={**os.environ, "DATABENTO_API_KEY": TEST_KEY},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {model}: build_parameters.config.sample: ")
    assert not list(tmp_path.rglob("*.dbn*")) and not (tmp_path / "gold").exists()
