"""The streaming scorer of ``build --model`` / ``live --model`` against the batch code path:
the same bits whatever the batches (``vpbatch.fit.online``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.fit.conftest import DAYS, SYMBOL
from vpbatch.book.dtypes import GRID_DTYPE, SNAPSHOT_DTYPE
from vpbatch.book.engine import Engine
from vpbatch.clock import NS_PER_SECOND
from vpbatch.config import EngineConfig
from vpbatch.errors import ConfigError, InputError, VpbatchWarning
from vpbatch.evaluate.evaluation import States, level1_signals, states_from_frame
from vpbatch.fit.model import read_model_file
from vpbatch.fit.online import Level1Window, ModelScorer, usable_books
from vpbatch.ingest.reader import find_input, open_mbo
from vpbatch.products import resolve_product

PRODUCT = resolve_product(SYMBOL)


def _states(n: int, seed: int) -> States:
    """Random usable touches with repeated timestamps and gaps across the 1/5/10 s windows."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([0, 1, 25_000_000, 250_000_000, 1_000_000_000, 4_000_000_000], n,
                       p=[0.15, 0.05, 0.5, 0.2, 0.05, 0.05])
    ts = 1_770_000_000 * NS_PER_SECOND + np.cumsum(steps).astype(np.int64)
    bid = 20_000 + np.cumsum(rng.choice([-0.25, 0.0, 0.25], n, p=[0.1, 0.8, 0.1]))
    ask = bid + rng.choice([0.25, 0.5], n, p=[0.9, 0.1])
    return States(day=np.zeros(n, np.int32), days=(dt.date(2026, 2, 6),), ts=ts, bid=bid,
                  ask=ask, bid_size=rng.integers(1, 60, n).astype(float),
                  ask_size=rng.integers(1, 60, n).astype(float), regime=np.zeros(n, np.int8),
                  regime_score=np.zeros(n))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_level1_window_given_any_batches_equals_the_days_level1_signals_bit_for_bit(
        seed: int) -> None:
    s = _states(3_000, seed)
    for i, w in ((99, 1), (600, 10), (1500, 5)):  # window edges hit exactly: t - w is a state
        k = int(np.searchsorted(s.ts, s.ts[i] + w * NS_PER_SECOND))
        s.ts[k:] -= s.ts[k] - (s.ts[i] + w * NS_PER_SECOND)
    assert (np.diff(s.ts) >= 0).all()
    want = level1_signals(s)
    rng = np.random.default_rng(seed)
    cuts = np.unique(np.concatenate(([0, s.ts.size], rng.integers(0, s.ts.size, 900))))
    window = Level1Window()
    got: dict[str, list[np.ndarray]] = {name: [] for name in want}
    for a, b in itertools.pairwise(cuts):
        part = window.push(s.ts[a:b], s.bid[a:b], s.ask[a:b], s.bid_size[a:b], s.ask_size[a:b])
        for name, values in part.items():
            got[name].append(values)
    for name, values in want.items():
        assert np.array_equal(np.concatenate(got[name]), values, equal_nan=True), name
    assert window._ts.size < 1_000  # the ring holds ~10 s, not the day


def test_usable_books_given_each_kind_of_unusable_state_keeps_what_evaluate_keeps() -> None:
    snaps = np.zeros(8, SNAPSHOT_DTYPE)
    snaps["event_id"] = np.arange(8)
    snaps["book_valid"] = True
    snaps["best_bid_price"], snaps["best_ask_price"] = 100.0, 100.25
    snaps["best_bid_size"], snaps["best_ask_size"] = 3, 4
    snaps["book_valid"][1] = False
    snaps["best_bid_price"][2] = np.nan  # an empty side: null in the lake
    snaps["best_ask_size"][3] = 0
    snaps["crossed"][4] = True
    snaps["best_ask_price"][5] = 100.0  # locked: bid >= ask
    snaps["best_ask_price"][6] = np.nan
    frame = pl.DataFrame({
        "dt": [dt.date(2026, 2, 6)] * 8, "event_id": snaps["event_id"], "ts": snaps["event_id"],
        "bid": pl.Series(snaps["best_bid_price"]).fill_nan(None),
        "ask": pl.Series(snaps["best_ask_price"]).fill_nan(None),
        "bid_size": snaps["best_bid_size"], "ask_size": snaps["best_ask_size"],
        "book_valid": snaps["book_valid"], "crossed": snaps["crossed"],
        "regime": ["CHOP"] * 8, "regime_score": [0.0] * 8, "regime_intensity": [0.0] * 8})
    kept = states_from_frame(frame).event_id
    assert kept.tolist() == [0, 7]
    assert np.flatnonzero(usable_books(snaps)).tolist() == kept.tolist()


def _engine_batches(lake: Path, batch_states: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The second day's states as the engine drains them, ``batch_states`` at most each."""
    source = open_mbo(find_input(lake, SYMBOL, DAYS[1]))
    records = np.concatenate(list(source.iter_selection(source.resolve(SYMBOL))))
    engine = Engine(EngineConfig(), bucket=PRODUCT.bucket, tick=PRODUCT.tick)
    out: list[tuple[np.ndarray, np.ndarray]] = []

    def sink(snapshots: np.ndarray, grid: np.ndarray) -> None:
        if len(snapshots):
            out.append((snapshots.copy(), grid.copy()))

    engine.send_grid_to(sink, batch_states=batch_states)
    for at in range(0, len(records), 5_000):
        for _ in engine.stream(records[at:at + 5_000]):
            pass
    engine.finish()
    return out


@pytest.mark.parametrize(("name", "target"), [("vp+l1", "event_1"), ("vp+l1", "clock_5s")])
def test_day_model_given_batches_of_one_or_many_scores_every_state_the_same(
        lake: Path, day1_model: Path, name: str, target: str) -> None:
    """A live session drains other batches than a build of its recording: same bits."""
    scorer = ModelScorer.from_file(day1_model, name, target)
    many = _engine_batches(lake, 64)
    snaps = np.concatenate([s for s, _ in many])
    grid = np.concatenate([g for _, g in many])
    # Make some states unusable: no score for them, nothing changed for the others.
    bad = np.arange(5, snaps.size, 97)
    snaps["book_valid"][bad] = False
    rows = 2 * EngineConfig().K + 1
    results = []
    for size in (1, 7, 64, snaps.size):
        day = scorer.day(EngineConfig(), PRODUCT.bucket)
        parts = [day.score(snaps[a:a + size], grid[a * rows:(a + size) * rows])
                 for a in range(0, snaps.size, size)]
        results.append((np.concatenate([c for c, _ in parts]),
                        np.concatenate([p for _, p in parts])))
    call, prob = results[0]
    assert call.dtype == np.int8 and prob.dtype == np.float64
    for other_call, other_prob in results[1:]:
        assert np.array_equal(other_call, call)
        assert np.array_equal(other_prob, prob, equal_nan=True)
    assert np.isnan(prob[bad]).all() and (call[bad] == 0).all()
    good = np.setdiff1d(np.arange(snaps.size), bad)
    assert np.isfinite(prob[good]).all() and set(np.unique(call[good])) <= {-1, 0, 1}
    assert len(np.unique(call[good])) >= 2  # the model calls both ways on this day
    # The unusable states leave the others' trailing windows alone: scoring only the usable
    # ones gives the same values.
    day = scorer.day(EngineConfig(), PRODUCT.bucket)
    keep_grid = grid.reshape(snaps.size, rows)[good].reshape(-1)
    alone = day.score(snaps[good], keep_grid)
    assert np.array_equal(alone[1], prob[good]) and np.array_equal(alone[0], call[good])


def test_model_file_records_the_build_parameters_and_the_scorer_checks_them(
        day1_model: Path, tmp_path: Path) -> None:
    doc = json.loads(day1_model.read_text())
    assert doc["build_parameters"] == {"bucket": PRODUCT.bucket,
                                       "config": EngineConfig().to_dict()}
    scorer = ModelScorer.from_file(day1_model)
    assert (scorer.model.name, scorer.model.target) == ("vp+l1", "event_1")
    scorer.check(EngineConfig(), PRODUCT.bucket)  # as trained: fine
    with pytest.raises(ConfigError, match=rf"^{day1_model.absolute()}: "
                       r"build_parameters.config.K: .*K = 50, this build has 40 \(--K\)"):
        scorer.check(EngineConfig(K=40), PRODUCT.bucket)
    with pytest.raises(ConfigError, match=r"build_parameters.config.forces.vacuum_a_pull"):
        scorer.check(dataclasses.replace(EngineConfig(), forces=dataclasses.replace(
            EngineConfig().forces, vacuum_a_pull=0.4)), PRODUCT.bucket)
    with pytest.raises(ConfigError, match=r"build_parameters.bucket: .* 0.25, this build's "
                                          r"is 0.5"):
        scorer.check(EngineConfig(), 2 * PRODUCT.bucket)
    # A document of before the parameters were recorded: scored, with a warning.
    old = tmp_path / "old.json"
    del doc["build_parameters"]
    old.write_text(json.dumps(doc))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ModelScorer.from_file(old).check(EngineConfig(K=40), PRODUCT.bucket)
    assert [w.category for w in caught] == [VpbatchWarning]
    assert "does not record the build parameters" in str(caught[0].message)
    doc["build_parameters"] = {"bucket": "x", "config": {}}
    old.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"old.json: build_parameters.bucket: expected int"):
        read_model_file(old)


def test_day_model_given_a_batch_without_usable_state_gives_no_score(day1_model: Path) -> None:
    day = ModelScorer.from_file(day1_model).day(EngineConfig(), PRODUCT.bucket)
    snaps = np.zeros(2, SNAPSHOT_DTYPE)
    call, prob = day.score(snaps, np.zeros(2 * 101, GRID_DTYPE))
    assert call.tolist() == [0, 0] and np.isnan(prob).all()
