"""SPEC §12 invariants 1-6 on emitted arrays, plus a tiny shadow book to check depth against."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vpbatch.book.dtypes import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_CLEAR,
    ACTION_FILL,
    ACTION_MODIFY,
    F_SNAPSHOT,
    GRID_FLOAT_FIELDS,
    SIDE_ASK,
    SIDE_BID,
    UNDEF_PRICE,
)

#: Grid columns frozen while a cell is untouched (invariant 4): not ``_now``, not depth.
STORED_FIELDS = (
    *(name for name in GRID_FLOAT_FIELDS if name not in ("pressure_now", "vacuum_now")),
    "last_event_id",
    "last_ts",
)


def iter_states(
    snaps: np.ndarray, grid: np.ndarray, K: int
) -> Iterator[tuple[np.void, np.ndarray]]:
    """Pair each snapshot row with its ``2K+1`` grid rows (invariant 1 on the whole output)."""
    rows = 2 * K + 1
    assert len(grid) == rows * len(snaps), (len(grid), len(snaps), rows)
    for i in range(len(snaps)):
        yield snaps[i], grid[i * rows : (i + 1) * rows]


def check_invariants(
    prev_snap: np.void | None,
    prev_grid: np.ndarray | None,
    snap: np.void,
    grid: np.ndarray,
    K: int,
    *,
    touched_in_window: bool | None = None,
    book_depth: dict[int, tuple[int, int]] | None = None,
    bucket: int | None = None,
) -> None:
    """Assert SPEC §12 invariants 1-6 for one emitted state (and its predecessor, if any).

    Parameters
    ----------
    prev_snap, prev_grid : the previous emitted state, or None for the first one.
    snap, grid : this state (one snapshot row, its grid rows).
    K : grid half-width.
    touched_in_window : event mode only (invariant 5): whether the record that produced this
        state touched a bucket inside the window; None skips the check.
    book_depth : absolute bucket -> ``(bid, ask)`` of the true book (needs ``bucket``);
        None skips the "equals the book" part of invariant 6.
    bucket : bucket size in price units, used with ``book_depth``.
    """
    eid = int(snap["event_id"])
    # 1-2. cardinality and completeness
    assert len(grid) == 2 * K + 1, f"event {eid}: {len(grid)} grid rows"
    assert np.array_equal(grid["k"], np.arange(-K, K + 1)), f"event {eid}: k column"
    assert np.all(grid["event_id"] == eid), f"event {eid}: event_id column"
    assert np.all(np.diff(grid["price"]) > 0), f"event {eid}: prices not increasing"
    assert grid["price"][K] == snap["spot_price"], f"event {eid}: k=0 is not spot"
    # 3. finiteness
    for name in ("price", *GRID_FLOAT_FIELDS):
        assert np.all(np.isfinite(grid[name])), f"event {eid}: {name} not finite"
    for name in ("spot_price", "regime_score", "regime_intensity"):
        assert np.isfinite(snap[name]), f"event {eid}: {name} not finite"
    for side in ("bid", "ask"):
        has_side = snap[f"best_{side}_size"] > 0
        assert np.isfinite(snap[f"best_{side}_price"]) == has_side, f"event {eid}: best {side}"
    two_sided = snap["best_bid_size"] > 0 and snap["best_ask_size"] > 0
    assert np.isfinite(snap["mid_price"]) == two_sided, f"event {eid}: mid_price"
    assert np.all(grid["last_event_id"] <= eid), f"event {eid}: last_event_id from the future"
    assert np.all(grid["last_ts"] <= snap["ts_event"]), f"event {eid}: last_ts from the future"
    # 4. continuity by absolute bucket (price)
    if prev_snap is not None and prev_grid is not None:
        prev_eid = int(prev_snap["event_id"])
        assert eid > prev_eid and snap["ts_event"] >= prev_snap["ts_event"]
        by_price = {float(row["price"]): row for row in prev_grid}
        for row in grid:
            old = by_price.get(float(row["price"]))
            if old is None or row["last_event_id"] > prev_eid:
                continue
            if row["last_event_id"] == 0 and old["last_event_id"] != 0:
                continue  # reset by the band rule in between
            for name in STORED_FIELDS:
                assert row[name] == old[name], (
                    f"event {eid}: k={row['k']} {name} changed from {old[name]} to {row[name]} "
                    f"without a touch since event {prev_eid}"
                )
    # 5. event update
    if touched_in_window is not None:
        fresh = bool(np.any(grid["last_event_id"] == eid))
        assert fresh == touched_in_window, (
            f"event {eid}: touched_in_window={touched_in_window} but fresh cell={fresh}"
        )
    # 6. depth
    assert np.all(grid["bid_depth"] >= 0) and np.all(grid["ask_depth"] >= 0)
    assert np.array_equal(grid["rest_depth"], grid["bid_depth"] + grid["ask_depth"])
    if book_depth is not None:
        assert bucket is not None
        spot_b = round(float(snap["spot_price"]) * 1e9 / bucket)
        for row in grid:
            expect = book_depth.get(spot_b + int(row["k"]), (0, 0))
            got = (int(row["bid_depth"]), int(row["ask_depth"]))
            assert got == expect, f"event {eid}: k={row['k']} depth {got} != book {expect}"


class ShadowBook:
    """An independent minimal MBO book (SPEC §3) that also names the buckets a record touches.

    Deliberately separate from the reference engine: orders only, depth summed on request.
    """

    def __init__(self, bucket: int) -> None:
        self.B = bucket
        self.orders: dict[int, tuple[int, int, int]] = {}  # id -> (side, price, size)

    def bucket_of(self, price: int) -> int:
        return (2 * price + self.B) // (2 * self.B)

    def apply(self, rec: np.void) -> list[int]:
        """Apply one record; return the buckets it touches (SPEC §6, empty for snapshots)."""
        action, side, oid = int(rec["action"]), int(rec["side"]), int(rec["order_id"])
        price, size = int(rec["price"]), int(rec["size"])
        snap = bool(rec["flags"] & F_SNAPSHOT)
        touched: list[int] = []
        old = self.orders.get(oid)
        valid = price != UNDEF_PRICE and side in (SIDE_BID, SIDE_ASK)
        if action == ACTION_ADD and valid and size > 0:
            self.orders[oid] = (side, price, size)
            touched = [self.bucket_of(price)]
        elif action == ACTION_CANCEL and old is not None and size > 0:
            left = old[2] - min(size, old[2])
            self._set(oid, old[0], old[1], left)
            touched = [self.bucket_of(old[1])]
        elif action == ACTION_MODIFY and valid and old is not None:
            self._set(oid, old[0], price, size)
            touched = [self.bucket_of(old[1]), self.bucket_of(price)]
        elif action == ACTION_MODIFY and valid and size > 0:
            self.orders[oid] = (side, price, size)
            touched = [self.bucket_of(price)]
        elif action == ACTION_FILL and not snap:
            if old is not None:
                touched = [self.bucket_of(old[1])]
            elif price != UNDEF_PRICE:
                touched = [self.bucket_of(price)]
        elif action == ACTION_CLEAR:
            self.orders.clear()
        return [] if snap else touched

    def _set(self, oid: int, side: int, price: int, size: int) -> None:
        if size > 0:
            self.orders[oid] = (side, price, size)
        else:
            del self.orders[oid]

    def depth_by_bucket(self) -> dict[int, tuple[int, int]]:
        """Absolute bucket -> ``(bid, ask)`` resting size."""
        out: dict[int, list[int]] = {}
        for side, price, size in self.orders.values():
            depth = out.setdefault(self.bucket_of(price), [0, 0])
            depth[0 if side == SIDE_BID else 1] += size
        return {b: (d[0], d[1]) for b, d in out.items()}
