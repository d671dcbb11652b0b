"""Features per state (SPEC §15): the fast path against the ``vp_features`` view, both against
direct computations written out here (loops over the grid cells and the snapshots), the
banding rules on hand-made cells, and no look-ahead."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.fit.conftest import DAYS, SYMBOL
from vpbatch.errors import InputError
from vpbatch.evaluate.evaluation import States, load_states
from vpbatch.fit import FEATURES, day_features, features
from vpbatch.fit.features import Cells, StateRefs, add_band_sums, feature_matrix
from vpbatch.sql import BAND_FEATURES, FEATURE_PARAM_NAMES, connect

BUCKET = 0.25  # MNQ: one tick
TAU_V = 2.0  # engine default (SPEC §7)
BANDS = {"1_2": (1, 2), "3_5": (3, 5), "6_10": (6, 10), "11_25": (11, 25), "26_k": (26, 10**9)}
USABLE = ("book_valid AND best_bid_size > 0 AND best_ask_size > 0 AND NOT crossed "
          "AND best_bid_price < best_ask_price")


@pytest.fixture(scope="module")
def table(lake: Path) -> pl.DataFrame:
    return features(lake, SYMBOL, DAYS[0], DAYS[1])


def _view(lake: Path) -> pl.DataFrame:
    con = connect(lake)
    try:
        return con.sql("SELECT * FROM vp_features ORDER BY dt, event_id").pl()
    finally:
        con.close()


def test_features_given_built_days_equal_the_vp_features_view(lake: Path,
                                                              table: pl.DataFrame) -> None:
    view = _view(lake)
    assert table.columns == ["dt", "event_id", "ts_event", *FEATURES]
    assert view.columns == ["product_type", "symbol", "dt", "event_id", "ts_event", *FEATURES]
    assert table["event_id"].to_list() == view["event_id"].to_list()
    assert table["dt"].to_list() == view["dt"].to_list()
    assert table["ts_event"].to_list() == view["ts_event"].to_list()
    assert set(table["dt"].to_list()) == set(DAYS)
    for name in FEATURES:
        np.testing.assert_allclose(table[name].to_numpy(), view[name].to_numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=name)


def test_band_sums_given_sample_states_equal_a_direct_sum_over_their_cells(
        lake: Path, table: pl.DataFrame) -> None:
    """SPEC §15 written out: each cell's distance from the mid in buckets, its side, its band,
    ``pressure_now``/``vacuum_now`` as the view has them and ``v * (1 - alpha(age, tau_v))``."""
    picked = table.filter(pl.col("dt") == DAYS[1]).gather_every(97)["event_id"].to_list()
    con = connect(lake)
    cells = con.sql(
        "SELECT event_id, best_bid_price AS b, best_ask_price AS a, epoch_ns(ts_event) AS ts, "
        "price, pressure_now, vacuum_now, v_add, v_pull, v_fill, v_rest_depth, "
        "epoch_ns(last_ts) AS last_ns FROM vp WHERE dt = $day AND list_contains($ids, event_id)",
        params={"day": DAYS[1], "ids": picked}).pl()
    con.close()
    expected: dict[int, dict[str, float]] = {e: dict.fromkeys(BAND_FEATURES, 0.0)
                                             for e in picked}
    for r in cells.iter_rows(named=True):
        mid = (r["b"] + r["a"]) / 2
        x = abs(r["price"] - mid) / BUCKET
        if x < 1e-6:
            continue  # at the mid: neither side
        dist = math.ceil(x - 1e-6)
        side = "above" if r["price"] > mid else "below"
        band = next(n for n, (lo, hi) in BANDS.items() if lo <= dist <= hi)
        age = (r["ts"] - r["last_ns"]) / 1e9
        keep = 0.0 if age / TAU_V > 50 else math.exp(-age / TAU_V)
        row = expected[r["event_id"]]
        row[f"pressure_{side}_{band}"] += r["pressure_now"]
        row[f"vacuum_{side}_{band}"] += r["vacuum_now"]
        for q in ("v_add", "v_pull", "v_fill", "v_rest_depth"):
            row[f"{q}_{side}_{band}"] += keep * r[q]
    got = table.filter((pl.col("dt") == DAYS[1]) & pl.col("event_id").is_in(picked))
    assert got.height == len(picked) > 30
    for r in got.iter_rows(named=True):
        for name in BAND_FEATURES:
            assert r[name] == pytest.approx(expected[r["event_id"]][name], rel=1e-9, abs=1e-9), \
                (r["event_id"], name)
    # The planted flow acts 1-10 ticks beyond the touch: the bands there are not empty.
    assert got["vacuum_above_3_5"].sum() > 0 and got["pressure_below_6_10"].sum() > 0


def test_level1_features_given_snapshots_follow_the_spec_formulas(lake: Path,
                                                                  table: pl.DataFrame) -> None:
    """Queue imbalance, micro-price minus mid and OFI over (t - w, t] (SPEC §13), by loops over
    the usable states of each day."""
    snaps = connect(lake).sql(
        f"SELECT dt, event_id, epoch_ns(ts_event) AS ts, best_bid_price AS b, "
        f"best_ask_price AS a, best_bid_size AS qb, best_ask_size AS qa FROM vp_snapshot "
        f"WHERE {USABLE} ORDER BY dt, event_id").pl()
    assert snaps.height == table.height
    for day in DAYS:
        rows = snaps.filter(pl.col("dt") == day).rows(named=True)
        got = table.filter(pl.col("dt") == day)
        e = [0.0]
        for p, c in itertools.pairwise(rows):
            e.append((c["qb"] if c["b"] >= p["b"] else 0) - (p["qb"] if c["b"] <= p["b"] else 0)
                     - (c["qa"] if c["a"] <= p["a"] else 0) + (p["qa"] if c["a"] >= p["a"] else 0))
        for i in range(0, len(rows), 53):
            r = rows[i]
            depth = r["qb"] + r["qa"]
            assert got["queue_imbalance"][i] == pytest.approx((r["qb"] - r["qa"]) / depth)
            micro = (r["a"] * r["qb"] + r["b"] * r["qa"]) / depth - (r["a"] + r["b"]) / 2
            assert got["microprice"][i] == pytest.approx(micro, abs=1e-12)
            for w in (1, 5, 10):
                j, total = i, 0.0
                while j >= 0 and rows[j]["ts"] > r["ts"] - w * 10**9:
                    total += e[j]
                    j -= 1
                assert got[f"ofi_{w}s"][i] == pytest.approx(total), (day, i, w)


def test_add_band_sums_given_hand_made_cells_places_each_in_its_side_and_band() -> None:
    """Mid 100.125 (one-tick spread): the bid and the ask are distance 1; a cell 2.5 buckets
    away is distance 3; 25.5 buckets is 26 (the last band). A state whose mid sits on a bucket
    centre leaves that cell out. An idle cell's velocity decays with exp(-age / tau_v)."""
    prm = dict(zip(FEATURE_PARAM_NAMES, np.zeros(len(FEATURE_PARAM_NAMES)), strict=True))
    prm.update(bucket=0.25, tau_v=2.0, tau_a=5.0, pressure_v_add=1.0, pressure_v_rest_pos=0.5,
               pressure_a_add=0.3, vacuum_v_pull=1.0, vacuum_v_fill=1.5,
               vacuum_v_rest_neg=0.5, vacuum_a_pull=0.3)
    ts = 10 * 10**9
    states = StateRefs(np.array([7, 9]), np.array([ts, ts]), np.array([100.125, 100.25]))
    #        eid  price   v_add v_pull v_fill v_rest last_ns
    rows = [(7, 100.0, 1.0, 0.0, 0.0, 0.0, ts),       # bid, below 1
            (7, 100.25, 0.0, 2.0, 0.0, 0.0, ts),      # ask, above 1
            (7, 100.75, 0.0, 0.0, 1.0, 0.0, ts),      # above 3
            (7, 106.5, 0.0, 0.0, 0.0, -2.0, ts),      # above 26
            (7, 99.0, 1.0, 0.0, 0.0, 0.0, ts - 2 * 10**9),  # below 5, idle 2 s
            (8, 100.0, 5.0, 5.0, 5.0, 5.0, ts),       # a state not asked for: ignored
            (9, 100.25, 3.0, 0.0, 0.0, 0.0, ts),      # at the mid of state 9: ignored
            (9, 100.5, 0.0, 1.0, 0.0, 0.0, ts)]       # above 1 of state 9
    cols = list(zip(*rows, strict=True))
    zeros = np.zeros(len(rows))
    cells = Cells(np.array(cols[0], np.int64), np.array(cols[1]), np.array(cols[2]), zeros,
                  np.array(cols[3]), zeros, np.array(cols[4]), np.array(cols[5]),
                  np.array(cols[6], np.int64))
    for column in cells:  # as the Arrow batches are (one compiled signature)
        column.setflags(write=False)
    out = np.zeros((2, len(BAND_FEATURES)))
    add_band_sums(out, states, cells, np.array([prm[n] for n in FEATURE_PARAM_NAMES]),
                  np.array([0, len(rows)], np.int64))
    got = [{n: v for n, v in zip(BAND_FEATURES, row, strict=True) if v != 0} for row in out]
    decay = math.exp(-1.0)
    assert got[0] == pytest.approx({
        "pressure_below_1_2": 1.0, "v_add_below_1_2": 1.0,
        "vacuum_above_1_2": 2.0, "v_pull_above_1_2": 2.0,
        "vacuum_above_3_5": 1.5, "v_fill_above_3_5": 1.0,
        "vacuum_above_26_k": 1.0, "v_rest_depth_above_26_k": -2.0,
        "pressure_below_3_5": decay, "v_add_below_3_5": decay})
    assert got[1] == {"vacuum_above_1_2": 1.0, "v_pull_above_1_2": 1.0}


def test_features_given_future_states_removed_are_unchanged(lake: Path) -> None:
    """No feature at state n uses a state after n: the matrix of the first states alone equals
    the same rows of the whole day's."""
    states = load_states(lake, SYMBOL, DAYS[1], DAYS[1])
    full = feature_matrix(lake, SYMBOL, states)
    cut = len(states) * 3 // 5
    arrays = {f.name: getattr(states, f.name)[:cut] for f in dataclasses.fields(States)
              if isinstance(getattr(states, f.name), np.ndarray)}
    head = dataclasses.replace(states, **arrays)
    np.testing.assert_array_equal(feature_matrix(lake, SYMBOL, head), full[:cut])


def test_day_features_given_unbuilt_day_raises_input_error_naming_built_days(lake: Path) -> None:
    with pytest.raises(InputError, match=r"no complete build of MNQH6 for 2026-02-09 .*2026-02-05"):
        day_features(lake, SYMBOL, dt.date(2026, 2, 9))


def test_vp_features_view_given_empty_lake_has_every_feature_column(tmp_path: Path) -> None:
    con = connect(tmp_path)
    columns = [row[0] for row in con.sql("DESCRIBE vp_features").fetchall()]
    assert columns == ["product_type", "symbol", "dt", "event_id", "ts_event", *FEATURES]
    assert con.sql("SELECT count(*) FROM vp_features").fetchall() == [(0,)]
