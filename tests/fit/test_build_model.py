"""``vpbatch build --model`` as users run it, and ``vpbatch serve`` of what it built.

The model is fitted on the first day of the shared lake (``vpbatch fit``); the second day's
raw file is built again, with the model, into a lake of its own. The model's columns must equal
what ``vpbatch evaluate --model`` and ``FittedModel.predict`` compute from the built lake.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from playwright.sync_api import Browser

from cli.main import cli
from tests.fit.conftest import DAYS, SYMBOL
from tests.serve.conftest import ServerThread, stream_all
from tests.serve.conftest import browser as browser  # the module's Chromium (fixture)
from vpbatch.build.verify import verify
from vpbatch.evaluate.evaluation import load_states
from vpbatch.fit import day_features, load_model
from vpbatch.fit.features import feature_matrix
from vpbatch.fit.model import read_model_file
from vpbatch.fit.walkforward import saved_predictors
from vpbatch.products import resolve_product
from vpbatch.serve import create_app
from vpbatch.store.lake import MANIFEST_FILE, PART_FILE, gold_partition

PRODUCT = resolve_product(SYMBOL)
DAY1, DAY2 = DAYS
MODEL_COLUMNS = ["model_call", "model_probability"]


def run(*args: str | Path, ok: bool = False) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def raw_copy(lake: Path, where: Path) -> Path:
    """A lake holding the shared lake's raw files only (nothing built)."""
    shutil.copytree(lake / "raw", where / "raw")
    return where


def part(lake: Path, table: str, day: Any = DAY2) -> Path:
    return gold_partition(lake, table, PRODUCT, day) / PART_FILE


def manifest(lake: Path, day: Any = DAY2) -> dict[str, Any]:
    return dict(json.loads((gold_partition(lake, "vp_snapshot", PRODUCT, day)
                            / MANIFEST_FILE).read_text()))


@pytest.fixture(scope="module")
def scored_lake(lake: Path, day1_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second day built with ``--model`` (the file's default model, vp+l1/event_1)."""
    root = raw_copy(lake, tmp_path_factory.mktemp("scored"))
    run("build", "-q", "--symbol", SYMBOL, "--dt", DAY2.isoformat(), "--lake", root,
        "--model", day1_model, ok=True)
    return root


def assert_scored_like_fit(built: pl.DataFrame, lake: Path, day1_model: Path, day: Any,
                           name: str, target: str) -> None:
    """The build's columns against ``FittedModel.predict`` of ``day_features`` and against
    ``evaluate --model``'s scoring (``saved_predictors`` over ``feature_matrix``)."""
    features = day_features(lake, SYMBOL, day)
    call, probability = load_model(day1_model, name, target).predict(features)
    usable = built.join(features.select("event_id"), on="event_id", how="semi")
    assert usable.height == features.height > 1_000
    assert np.array_equal(usable["model_call"].fill_null(0).to_numpy(), call)
    assert np.array_equal(usable["model_probability"].fill_null(np.nan).to_numpy(),
                          probability, equal_nan=True)
    # Null exactly where the model has no score: unusable books, missing features.
    assert np.array_equal(usable["model_call"].is_null().to_numpy(), np.isnan(probability))
    others = built.join(features.select("event_id"), on="event_id", how="anti")
    assert others["model_call"].null_count() == others.height
    assert others["model_probability"].null_count() == others.height
    states = load_states(lake, SYMBOL, day, day)
    (predictor,), _ = saved_predictors(states, feature_matrix(lake, SYMBOL, states),
                                       _only(day1_model, name, target), str(day1_model),
                                       test_days=[])
    ev_call, ev_score = predictor.per_target[target]
    assert np.array_equal(usable["model_call"].fill_null(0).to_numpy(), ev_call)
    assert len(np.unique(ev_call)) >= 2  # the model makes calls both ways on this day
    if not target.startswith("clock"):  # two classes: evaluate's score is P(up)
        assert np.array_equal(usable["model_probability"].to_numpy(), ev_score, equal_nan=True)


def _only(day1_model: Path, name: str, target: str) -> Any:
    import dataclasses

    file = read_model_file(day1_model)
    return dataclasses.replace(file, models=(file.get(name, target),))


@pytest.mark.parametrize(("name", "target"), [(None, None), ("vp+l1", "clock_5s")])
def test_build_given_a_model_adds_its_call_and_probability_equal_to_fits_scoring(
        lake: Path, day1_model: Path, scored_lake: Path, tmp_path: Path, name: str | None,
        target: str | None) -> None:
    if name is None:
        built_lake, name, target = scored_lake, "vp+l1", "event_1"  # the file's default
    else:
        built_lake = raw_copy(lake, tmp_path / "lake")
        run("build", "-q", "--symbol", SYMBOL, "--dt", DAY2.isoformat(), "--lake", built_lake,
            "--model", day1_model, "--model-name", name, "--model-target", target, ok=True)
    assert target is not None
    table = pq.read_table(part(built_lake, "vp_snapshot"))
    plain = pq.read_table(part(lake, "vp_snapshot"))
    # Exactly two new columns; everything else (the seed's regime included) as before.
    assert table.schema.names == plain.schema.names + MODEL_COLUMNS
    assert table.schema.field("model_call").type == pa.int8()
    assert table.schema.field("model_probability").type == pa.float64()
    assert table.drop_columns(MODEL_COLUMNS).equals(plain)
    assert part(built_lake, "vp_grid").read_bytes() == part(lake, "vp_grid").read_bytes()
    assert_scored_like_fit(pl.from_arrow(table), built_lake, day1_model, DAY2, name, target)

    entry = manifest(built_lake)["model"]
    assert entry == {
        "path": str(day1_model.absolute()),
        "sha256": hashlib.sha256(day1_model.read_bytes()).hexdigest(),
        "format": "vpbatch-model", "format_version": 2, "name": name, "target": target,
        "symbol": SYMBOL, "training_days": [DAY1.isoformat()], "columns": MODEL_COLUMNS,
        "probability": "P(up)"}
    assert manifest(built_lake)["tables"]["vp_snapshot"]["columns"] == table.schema.names
    assert verify(built_lake, SYMBOL, DAY2).passed


def test_build_given_a_model_again_writes_the_same_bytes_and_without_it_the_plain_ones(
        lake: Path, day1_model: Path, scored_lake: Path, tmp_path: Path) -> None:
    again = raw_copy(lake, tmp_path / "again")
    args = ("build", "-q", "--symbol", SYMBOL, "--dt", DAY2.isoformat(), "--lake", again)
    run(*args, "--model", day1_model, ok=True)
    for table in ("vp_snapshot", "vp_grid"):
        assert part(again, table).read_bytes() == part(scored_lake, table).read_bytes()
    run(*args, "--force", ok=True)  # the same day without the model: as it always was
    for table in ("vp_snapshot", "vp_grid"):
        assert part(again, table).read_bytes() == part(lake, table).read_bytes()
    assert "model" not in manifest(again)


def _bad_bucket(day1_model: Path, where: Path) -> Path:
    doc = json.loads(day1_model.read_text())
    doc["build_parameters"]["bucket"] *= 2
    where.write_text(json.dumps(doc))
    return where


def _bad_coef(day1_model: Path, where: Path) -> Path:
    doc = json.loads(day1_model.read_text())
    doc["models"][0]["coef"][0] = doc["models"][0]["coef"][0][:-1]
    where.write_text(json.dumps(doc))
    return where


@pytest.mark.parametrize(("case", "code", "message"), [
    ("K", 1, r"{model}: build_parameters.config.K: the model was fitted on days built with "
             r"K = 50, this build has 40 \(--K\); build with the model's parameters"),
    ("sample", 1, r"{model}: build_parameters.config.sample: .* with sample = 'time', this "
                  r"build has 'event' \(--sample\)"),
    ("bucket", 1, r"{bad}: build_parameters.bucket: the model was fitted on days built with "
                  r"a bucket of 0.5, this build's is 0.25"),
    ("coef", 3, r"{bad}: models\[0\].coef\[0\].row: expected 67 finite numbers"),
    ("missing", 3, r"{bad}: cannot read model file"),
    ("name", 1, r"{model}: no model 'vp' for target 'event_1' \(have: vp\+l1/event_1, "
                r"vp\+l1/clock_5s, l1/event_1, l1/clock_5s\)"),
    ("range", 1, r"{model}: build_parameters.config.K: "),
])
def test_build_given_a_model_that_does_not_fit_exits_with_one_line_and_writes_nothing(
        lake: Path, day1_model: Path, tmp_path: Path, case: str, code: int,
        message: str) -> None:
    root = raw_copy(lake, tmp_path / "lake")
    bad = tmp_path / "bad.json"
    model: Path = day1_model
    extra: tuple[str, ...] = ()
    days: tuple[str, ...] = ("--dt", DAY2.isoformat())
    if case in ("K", "range"):
        extra = ("--K", "40")
    elif case == "sample":
        extra = ("--sample", "event")
    elif case == "bucket":  # checked by the build itself, with the day's own bucket
        model = _bad_bucket(day1_model, bad)
    elif case == "coef":
        model = _bad_coef(day1_model, bad)
    elif case == "missing":
        model = bad
    elif case == "name":
        extra = ("--model-name", "vp")
    if case == "range":
        days = ("--start", DAY1.isoformat(), "--end", DAY2.isoformat(), "--jobs", "2")
    result = run("build", "-q", "--symbol", SYMBOL, *days, "--lake", root, "--model", model,
                 *extra)
    assert result.exit_code == code, result.output
    pattern = message.format(model=day1_model.absolute() if case != "name" else day1_model,
                             bad=bad.absolute() if case == "bucket" else bad)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert pl.Series([lines[0][len("Error: "):]]).str.contains(pattern).item(), lines[0]
    assert not (root / "gold").exists() or not any((root / "gold").rglob(PART_FILE))


def test_build_given_a_model_skips_a_day_built_before_and_says_force_scores_it(
        lake: Path, day1_model: Path) -> None:
    before = part(lake, "vp_snapshot").read_bytes()
    result = run("build", "--symbol", SYMBOL, "--dt", DAY2.isoformat(), "--lake", lake,
                 "--model", day1_model, ok=True)
    assert result.stdout == (f"{SYMBOL} {DAY2.isoformat()}: skipped — partition already built "
                             "(use --force to rebuild it with the model)\n")
    assert part(lake, "vp_snapshot").read_bytes() == before  # untouched: no model columns

def test_build_given_model_options_without_a_model_is_a_usage_error(tmp_path: Path) -> None:
    result = run("build", "--symbol", SYMBOL, "--dt", DAY2.isoformat(), "--lake", tmp_path,
                 "--model-target", "clock_5s")
    assert result.exit_code == 2
    assert "--model-name and --model-target choose a model of --model FILE" in result.stderr


def test_build_given_a_range_with_jobs_2_scores_each_day_as_a_one_day_build(
        lake: Path, day1_model: Path, scored_lake: Path, tmp_path: Path) -> None:
    root = raw_copy(lake, tmp_path / "range")
    result = run("build", "-q", "--symbol", SYMBOL, "--start", DAY1.isoformat(), "--end",
                 DAY2.isoformat(), "--jobs", "2", "--lake", root, "--model", day1_model,
                 "--json", ok=True)
    assert [(r["dt"], r["status"]) for r in json.loads(result.stdout)] == [
        (DAY1.isoformat(), "built"), (DAY2.isoformat(), "built")]
    for table in ("vp_snapshot", "vp_grid"):
        assert part(root, table).read_bytes() == part(scored_lake, table).read_bytes()
    built = pl.read_parquet(part(root, "vp_snapshot", DAY1))
    assert_scored_like_fit(built, root, day1_model, DAY1, "vp+l1", "event_1")
    assert manifest(root, DAY1)["model"]["sha256"] == manifest(scored_lake)["model"]["sha256"]


def test_serve_given_a_day_built_with_a_model_sends_its_call_and_probability_per_state(
        lake: Path, scored_lake: Path) -> None:
    table = pl.read_parquet(part(scored_lake, "vp_snapshot"))
    want = {e: (c, p) for e, c, p in table.select(["event_id", *MODEL_COLUMNS]).iter_rows()}
    with ServerThread(create_app(scored_lake)) as server:
        got = stream_all(server, symbol=SYMBOL, dt=DAY2.isoformat(), speed=0, source="lake")
    assert got.last is not None and got.last["type"] == "end"
    assert len(got.updates) > 1_000
    for update in got.updates:
        assert (update["model_call"], update["model_probability"]) == want[update["event_id"]]
    assert {u["model_call"] for u in got.updates} >= {-1, 1}
    with ServerThread(create_app(lake)) as server:  # built without a model: no such fields
        plain = stream_all(server, symbol=SYMBOL, dt=DAY2.isoformat(), speed=0,
                           source="lake", end_time="09:00")
    assert plain.updates and all("model_call" not in u for u in plain.updates)


def test_page_of_a_day_built_with_a_model_draws_its_calls_as_a_second_band(
        scored_lake: Path, browser: Browser) -> None:
    """Real Chromium: the second band holds the stored calls; the legend and status name it."""
    table = pl.read_parquet(part(scored_lake, "vp_snapshot")).with_columns(
        pl.col("ts_event").dt.epoch("ns").cast(pl.Utf8).alias("ts"))
    stored: dict[str, set[Any]] = {}
    for ts, call in table.select(["ts", "model_call"]).iter_rows():
        stored.setdefault(ts, set()).add(call)
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        with ServerThread(create_app(scored_lake)) as server:
            page.goto(f"{server.base}/vacuum-pressure.html?product_type=future_mbo&symbol="
                      f"{SYMBOL}&dt={DAY2.isoformat()}&speed=0&start_time=10:00")
            page.wait_for_function("window.vp && window.vp.stats.drawn >= 200", timeout=30_000)
            drawn = page.evaluate("""() => { const h = window.vp.heatmap; const out = [];
                for (let c = 0; c < h.count; c++) out.push([h.ts[h.slotOf(c)],
                                                            h.model[h.slotOf(c)]]);
                return {has: h.hasModel, cells: out}; }""")
            assert page.is_visible("#legend-model")
            assert "model: " in (page.text_content("#status") or "")
        assert drawn["has"] and len(drawn["cells"]) >= 200
        assert all(call in stored[ts] for ts, call in drawn["cells"])
        assert {call for _, call in drawn["cells"]} >= {-1, 1}
        assert errors == []
    finally:
        page.close()
