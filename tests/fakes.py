"""Fake but *valid* emitted arrays for the output-side tests, and ways to break them.

:func:`fake_build` plays a tiny model of the engine's output: spot walks around, a few cells
in the window are touched per state (new stored values, ``last_event_id``, ``last_ts``),
untouched cells keep their stored values, cells further than ``band`` from spot lose their
state, depths come from a small fake book (bid levels below spot, ask levels at and above it),
and an ``mbp`` row per state shows that book's top levels. Everything ``vpbatch verify``
checks holds; :func:`corrupt` breaks exactly one thing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpbatch.book.dtypes import (
    F_LAST,
    GRID_DTYPE,
    GRID_FLOAT_FIELDS,
    SNAPSHOT_DTYPE,
    UNDEF_PRICE,
)
from vpbatch.book.mbp_layout import mbp_kernel_dtype
from vpbatch.config import EngineConfig
from vpbatch.products import Product, resolve_product

STORED = tuple(f for f in GRID_FLOAT_FIELDS if f not in ("pressure_now", "vacuum_now"))
T0 = 1_770_388_200_000_000_000  # 2026-02-06 14:30 UTC
DAY = dt.date(2026, 2, 6)

CORRUPTIONS = (
    "missing_row", "duplicate_k", "nan", "inf", "continuity", "negative_depth",
    "snapshot_order", "future_touch", "price", "event_update", "book", "top_of_book",
    "crossed", "band_reset",
)


@dataclass
class FakeBuild:
    """Arrays of one fake build plus what a writer needs to know about them."""

    snapshots: np.ndarray
    grid: np.ndarray
    mbp: np.ndarray
    config: EngineConfig
    product: Product
    day: dt.date = DAY
    levels: int = 3

    def copy(self) -> FakeBuild:
        return dataclasses.replace(self, snapshots=self.snapshots.copy(), grid=self.grid.copy(),
                                   mbp=self.mbp.copy())

    @property
    def rows(self) -> int:
        return 2 * self.config.K + 1

    def state(self, i: int) -> np.ndarray:
        """Grid rows of the ``i``-th state (a view)."""
        return self.grid[i * self.rows:(i + 1) * self.rows]


def fake_build(n_states: int = 40, *, K: int = 5, band: int = 12, sample: str = "event",
               symbol: str = "MNQH6", seed: int = 0, levels: int = 3,
               excursion_at: int | None = None, jump_every: int = 0) -> FakeBuild:
    """A valid build of ``n_states`` states with ``2K+1`` grid rows each.

    Parameters
    ----------
    n_states : number of emitted states.
    K, band : grid half-width and state band (buckets).
    sample : ``'event'`` (consecutive event ids) or ``'time'``/``'packet'`` (gaps).
    symbol : resolved with :func:`vpbatch.products.resolve_product`.
    seed : RNG seed; the same arguments always give the same arrays.
    levels : MBP levels per side.
    excursion_at : with a non-event sample, before state ``i`` spot made an excursion of more
        than ``band`` and came back, so every cell lost its state (band reset).
    jump_every : every that many states spot jumps by ``K`` buckets (cells enter/leave).
    """
    rng = np.random.default_rng(seed)
    product = resolve_product(symbol)
    bucket = product.bucket
    config = EngineConfig.from_sample("25ms" if sample == "time" else sample, K=K, band=band)
    rows = 2 * K + 1
    snaps = np.zeros(n_states, SNAPSHOT_DTYPE)
    grid = np.zeros(n_states * rows, GRID_DTYPE)
    mbp = np.zeros(n_states, mbp_kernel_dtype(levels))
    cells: dict[int, dict[str, Any]] = {}
    spot = round(21_000 * 1e9 / bucket)
    eid, ts = 10, T0
    for i in range(n_states):
        prev_eid = eid
        eid += 1 if sample == "event" else int(rng.integers(2, 20))
        ts += int(rng.integers(1, 30_000_000))
        step = int(rng.choice([-1, 0, 0, 1]))
        if jump_every and i and i % jump_every == 0:
            step = K
        spot += step
        for b in [b for b in cells if abs(b - spot) > band]:
            del cells[b]
        if excursion_at is not None and i == excursion_at and sample != "event":
            cells.clear()
        # touches: a few buckets in the window get new stored values
        touched = rng.choice(np.arange(-K, K + 1), size=int(rng.integers(0, 3)), replace=False)
        for k in touched:
            last = eid if sample == "event" else int(rng.integers(prev_eid + 1, eid + 1))
            values = {f: float(np.round(rng.normal(), 6)) for f in STORED}
            values["pressure"] = abs(values["pressure"])
            values["vacuum"] = abs(values["vacuum"])
            cells[spot + int(k)] = {**values, "last_event_id": last, "last_ts": ts - (eid - last)}
        # fake book: one-tick spread, bid levels below spot, ask levels at/above spot
        bid_sizes = rng.integers(1, 50, size=K + levels)
        ask_sizes = rng.integers(1, 50, size=K + levels)
        state = grid[i * rows:(i + 1) * rows]
        state["event_id"] = eid
        state["k"] = np.arange(-K, K + 1)
        state["price"] = (spot + state["k"].astype(np.int64)) * bucket / 1e9
        for j, k in enumerate(range(-K, K + 1)):
            b = spot + k
            state["bid_depth"][j] = bid_sizes[-k - 1] if k < 0 else 0
            state["ask_depth"][j] = ask_sizes[k] if k >= 0 else 0
            cell = cells.get(b)
            if cell is not None:
                for name, value in cell.items():
                    state[name][j] = value
                state["pressure_now"][j] = cell["pressure"] * 0.5
                state["vacuum_now"][j] = cell["vacuum"] * 0.5
        state["rest_depth"] = state["bid_depth"] + state["ask_depth"]
        bid_px, ask_px = (spot - 1) * bucket, spot * bucket
        snap = snaps[i]
        snap["event_id"], snap["ts_event"], snap["ts_recv"] = eid, ts, ts + 1_000
        snap["spot_price"] = spot * bucket / 1e9
        snap["best_bid_price"], snap["best_ask_price"] = bid_px / 1e9, ask_px / 1e9
        snap["best_bid_size"], snap["best_ask_size"] = bid_sizes[0], ask_sizes[0]
        snap["mid_price"] = (bid_px + ask_px) / 2e9
        snap["book_valid"], snap["crossed"] = True, False
        snap["n_records"] = eid - prev_eid
        snap["buy_volume"], snap["sell_volume"] = rng.integers(0, 9, size=2)
        snap["regime"] = int(rng.integers(0, 3))
        snap["regime_score"] = float(np.round(rng.uniform(-1, 1), 6))
        snap["regime_intensity"] = float(np.round(rng.uniform(0, 5), 6))
        # the record that produced the state: an add at a bucket it touched, else a trade
        row = mbp[i]
        row["ts_recv"], row["ts_event"], row["event_id"] = ts + 1_000, ts, eid
        row["sequence"], row["flags"] = 1000 + i, F_LAST
        fresh = [int(k) for k in touched if cells[spot + int(k)]["last_event_id"] == eid]
        if fresh:
            k = fresh[0]
            row["action"], row["side"] = ord("A"), ord("B") if k < 0 else ord("A")
            row["price"], row["size"] = (spot + k) * bucket, 1
        else:
            row["action"], row["side"] = ord("T"), ord("N")
            row["price"], row["size"] = ask_px, 1
        row["bid_px"] = [(spot - 1 - j) * bucket for j in range(levels)]
        row["ask_px"] = [(spot + j) * bucket for j in range(levels)]
        row["bid_sz"], row["ask_sz"] = bid_sizes[:levels], ask_sizes[:levels]
        row["bid_ct"], row["ask_ct"] = 1, 1
    return FakeBuild(snaps, grid, mbp, config, product, levels=levels)


def untouched_cell(build: FakeBuild, after: int = 0) -> tuple[int, int]:
    """``(state index, row in state)`` of a cell present in the previous window, untouched
    (in the first such state after state ``after``)."""
    for i in range(after + 1, len(build.snapshots)):
        prev_eid = int(build.snapshots["event_id"][i - 1])
        prev_prices = set(np.round(build.state(i - 1)["price"], 9))
        state = build.state(i)
        for j in range(build.rows):
            if (state["last_event_id"][j] <= prev_eid
                    and round(float(state["price"][j]), 9) in prev_prices
                    and state["last_event_id"][j] > 0):
                return i, j
    raise AssertionError("fake build has no untouched carried-over cell")


def corrupt(build: FakeBuild, kind: str) -> FakeBuild:
    """A copy of ``build`` with one kind of damage (see :data:`CORRUPTIONS`)."""
    out = build.copy()
    g, s, m = out.grid, out.snapshots, out.mbp
    mid = len(s) // 2
    row = mid * out.rows + 3
    if kind == "missing_row":
        out.grid = np.delete(g, row)
    elif kind == "duplicate_k":
        g["k"][row] = g["k"][row + 1]
    elif kind == "nan":
        g["v_add"][row] = np.nan
    elif kind == "inf":
        g["j_add"][row] = np.inf
    elif kind == "continuity":
        i, j = untouched_cell(out)
        g["add_mass"][i * out.rows + j] += 1.0
    elif kind == "negative_depth":
        g["bid_depth"][row] = -2
        g["rest_depth"][row] = g["ask_depth"][row] - 2
    elif kind == "snapshot_order":
        s[[mid, mid + 1]] = s[[mid + 1, mid]]
    elif kind == "future_touch":
        g["last_event_id"][row] = s["event_id"][mid] + 5
    elif kind == "price":
        g["price"][row] += 0.1
    elif kind == "event_update":
        # the producing record claims an add at a bucket the state does not show as touched
        i = next(i for i in range(1, len(s)) if m["action"][i] == ord("A"))
        state = out.state(i)
        j = int(np.argmin(state["last_event_id"]))
        m["price"][i] = round(float(state["price"][j]) * 1e9)
    elif kind == "book":
        m["bid_sz"][mid, 1] += 7
    elif kind == "top_of_book":
        s["best_ask_size"][mid] += 3
    elif kind == "crossed":
        s["crossed"][mid] = True
    elif kind == "band_reset":
        # a carried-over cell comes back fresh although no record lies between the states
        i, j = untouched_cell(out)
        cell = i * out.rows + j
        for name in (*GRID_FLOAT_FIELDS, "last_event_id", "last_ts"):
            g[name][cell] = 0
    else:
        raise ValueError(f"unknown corruption {kind!r}; use one of {CORRUPTIONS}")
    return out


def empty_levels(mbp: np.ndarray) -> np.ndarray:
    """A copy whose deepest ask level is empty (Databento: undefined price, size 0, count 0)."""
    out = mbp.copy()
    out["ask_px"][:, -1] = UNDEF_PRICE
    out["ask_sz"][:, -1] = 0
    out["ask_ct"][:, -1] = 0
    return out


__all__ = ["CORRUPTIONS", "DAY", "FakeBuild", "corrupt", "empty_levels", "fake_build"]
