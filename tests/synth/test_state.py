"""The simulator's typed state: the record's named fields say what the kernel did.

A day is started (book restated, silent burn-in, snapshot) and run for one live chunk; the
book pools, the state record and the records written are then checked against each other.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.synth.replay import FRIDAY
from vpbatch.synth import book, informed, kernel, timing
from vpbatch.synth.dbn import record_buffer
from vpbatch.synth.session import Day, start_day
from vpbatch.synth.state import (
    LV_COUNT,
    LV_DEPTH,
    LV_HEAD,
    LV_TAIL,
    MAX_GROUP,
    MAXO,
    NLEV,
    OD_ALIVE,
    OD_CLASS,
    OD_DENSE_POS,
    OD_LEVEL,
    OD_NEXT,
    OD_PREV,
    OD_SIDE,
    OD_SIZE,
    STATE_DTYPE,
    Simulation,
)

RECORDS = 20_000
CHUNK = 5_000


@pytest.fixture
def day() -> Day:
    return start_day("MNQH6", FRIDAY, RECORDS, 3, None, 42, 1)


def _check_book(sim: Simulation) -> None:
    """The pools agree with each other and with the record's book fields."""
    st = sim.state[0]
    lv, od = sim.levels, sim.orders
    alive = np.flatnonzero(od[OD_ALIVE] == 1)
    assert len(alive) + st["n_free"] == MAXO
    assert set(sim.free[:st["n_free"]].tolist()).isdisjoint(alive.tolist())
    group = od[OD_SIDE, alive] * 2 + od[OD_CLASS, alive]
    for d in range(4):
        packed = sim.dense[d, :sim.n_dense[d]]
        assert sorted(packed.tolist()) == sorted(alive[group == d].tolist())
        np.testing.assert_array_equal(od[OD_DENSE_POS, packed], np.arange(len(packed)))
    col = od[OD_SIDE, alive] * NLEV + od[OD_LEVEL, alive]
    np.testing.assert_array_equal(lv[LV_COUNT], np.bincount(col, minlength=2 * NLEV))
    depth = np.zeros(2 * NLEV, np.int64)
    np.add.at(depth, col, od[OD_SIZE, alive])
    np.testing.assert_array_equal(lv[LV_DEPTH], depth)
    for k in np.flatnonzero(lv[LV_COUNT]):  # each FIFO queue links head to tail
        prev, slot, seen = -1, lv[LV_HEAD, k], 0
        while slot >= 0:
            assert od[OD_PREV, slot] == prev
            prev, slot, seen = slot, od[OD_NEXT, slot], seen + 1
        assert prev == lv[LV_TAIL, k] and seen == lv[LV_COUNT, k]
    assert st["best_bid"] == np.flatnonzero(lv[LV_COUNT, :NLEV]).max()
    assert st["best_ask"] == np.flatnonzero(lv[LV_COUNT, NLEV:]).min()
    assert st["best_bid"] < st["best_ask"]


def test_snapshot_is_the_state_at_midnight(day: Day) -> None:
    sim, snap = day.sim, day.snapshot
    st = sim.state[0]
    _check_book(sim)
    body = snap[1:]
    assert len(body) == (sim.orders[OD_ALIVE] == 1).sum()
    tick, base = int(st["tick"]), int(st["base_tick"])
    assert body["price"][body["side"] == ord("B")].max() == (base + st["best_bid"]) * tick
    assert body["price"][body["side"] == ord("A")].min() == (base + st["best_ask"]) * tick
    assert body["sequence"].max() <= st["sequence"]
    assert body["ts_event"].max() < st["day0"] == st["last_ts"] == st["last_recv"]
    assert st["emit"] and st["budget"] == RECORDS - len(snap)
    assert st["written"] == st["groups"] == 0


def test_a_live_chunk_keeps_the_record_in_step(day: Day) -> None:
    sim = day.sim
    st = sim.state[0]
    buf = record_buffer(CHUNK + MAX_GROUP, 42, 1)
    n = kernel.run(sim, buf, day.h, day.hcum, CHUNK)
    assert CHUNK <= n < CHUNK + MAX_GROUP
    recs = buf[:n]
    _check_book(sim)
    assert st["written"] == n
    assert st["groups"] == len(np.unique(recs["ts_event"]))  # one ts per event group
    assert 0 < st["children"] < st["groups"]
    assert st["last_ts"] == recs["ts_event"][-1]
    assert st["last_recv"] == recs["ts_recv"][-1] == recs["ts_recv"].max()
    assert st["sequence"] == recs["sequence"][-1]
    new_ids = recs["order_id"][np.isin(recs["action"], [ord("A"), ord("T")])]
    assert st["order_id"] == new_ids.max()
    assert st["last_ts"] >= st["day0"] + int(st["t"] * 1e9) > st["day0"]  # clock: t seconds in
    assert st["episode_left"] == st["episode_dir"] == 0  # informed = 0: never touched


def test_kernels_use_exactly_the_record_fields() -> None:
    """Every field of STATE_DTYPE is read or written by a kernel, and nothing else is."""
    source = "".join(Path(m.__file__).read_text() for m in (book, timing, informed, kernel)
                     if m.__file__ is not None)
    used = set(re.findall(r"\bst\.(\w+)", source))
    assert used == set(STATE_DTYPE.names or ())
