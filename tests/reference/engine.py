"""Reference engine: SPEC.md §3-§10 and docs/SEMANTICS.md in plain Python, written to be read.

This is the oracle the compiled engine is tested against. Every formula is written in the
order of the spec, and the compiled engine copies these float expressions so that the two
agree bit for bit (Python floats and numba float64 round the same way):

* ``dt = (t - t_b) / 1e9``  (integer nanoseconds, then a true division by ``1e9``)
* ``alpha(dt, tau)``: ``x = dt / tau``; ``1.0`` if ``x > 50.0`` else ``1.0 - math.exp(-x)``
* mass, ``dt > 0``: ``m_base * math.exp(-dt / tau_rest) + D``; ``dt == 0``: ``m_base + D``
* rate: delta-based ``D / dt``; value-change ``(rest_now - rest_base) / dt`` (int difference)
* chain from ``(v0, a0, j0)``, alphas computed once per update:
  ``v = av * r + (1.0 - av) * v0``, ``a = aa * (v - v0) / dt + (1.0 - aa) * a0``,
  ``j = aj * (a - a0) / dt + (1.0 - aj) * j0``  (left to right: ``(aa * (v - v0)) / dt``)
* ``_now`` (idle advance, ``dt' = (t_state - t_b) / 1e9``): ``v = (1.0 - av) * v0``, then
  ``a`` and ``j`` as above; when ``t_state == t_b`` the stored forces are returned as they are
* ``pos(x) = x if x > 0.0 else 0.0`` (never ``-0.0``)
* ``pressure = cp_v_add * v_add + cp_v_rest_pos * pos(v_rest) + cp_a_add * pos(a_add)``
* ``vacuum = cv_v_pull * v_pull + cv_v_fill * v_fill + cv_v_rest_neg * pos(-v_rest)
  + cv_a_pull * pos(a_pull)``  (summed left to right)
* ``w_k = math.exp(-(abs(k) - 1) / regime_lambda)``; ``bull`` and ``bear`` start at ``0.0``
  and accumulate in one loop over ``k = -K..K`` ascending (cells without state are skipped,
  which is the same as adding ``0.0``): above: ``bull += w * vacuum_now``,
  ``bear += w * pressure_now``; below: ``bull += w * pressure_now``, ``bear += w * vacuum_now``
* ``score = (bull - bear) / (bull + bear + eps)``, ``intensity = bull + bear``

Output prices (integers first, one float conversion, one multiplication):

* ``price = (b * B) * 1e-9``, ``spot_price = (spot * B) * 1e-9``
* ``best_bid_price = bid * 1e-9``, ``best_ask_price = ask * 1e-9``
* ``mid_price = (bid + ask) * 0.5e-9``  (NaN with sizes 0 when a side is empty)

Integer rules: ``b(p) = (2 * p + B) // (2 * B)`` (floor of ``p / B + 1/2``),
``spot = (bid + ask + B) // (2 * B)``; both floor divisions (negative prices round down).

Decisions beyond docs/SEMANTICS.md:

* Touches made while spot is undefined (the book has never been two-sided) are dropped:
  there is no band yet, so no cell state is kept.
* Anomaly checks in order ``undefined_price``, ``side_none``, then (``A``) ``zero_size_add``;
  an unknown-id ``M`` counts ``modify_unknown_order`` and, at size 0, also ``zero_size_add``.
  A fill of an unknown order counts ``fill_unknown_order`` even when its price is undefined
  (and then does not touch). Snapshot ``C``/``M`` consume pending fill like live ones.
* The snapshot resync sets ``rest_mem`` of every cell with state; an open time group's base
  rest depth is left alone.
* ``state()`` raises ValueError while spot is undefined.
"""

from __future__ import annotations

import heapq
import math
from typing import Final, NamedTuple

import numpy as np

from vpbatch.book.dtypes import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_CLEAR,
    ACTION_FILL,
    ACTION_MODIFY,
    ACTION_NONE,
    ACTION_TRADE,
    F_LAST,
    F_SNAPSHOT,
    GRID_DTYPE,
    REGIME_CHOP,
    REGIME_DOWN,
    REGIME_UP,
    SAMPLE_EVENT,
    SAMPLE_PACKET,
    SAMPLE_TIME,
    SIDE_ASK,
    SIDE_BID,
    SNAPSHOT_DTYPE,
    UNDEF_PRICE,
    as_kernel_records,
)
from vpbatch.config import EngineConfig, ForceCoefficients

#: Anomaly counters (docs/SEMANTICS.md "Book details"). A record counts once, except an
#: unknown-id ``M`` of size 0: ``modify_unknown_order`` and ``zero_size_add``.
ANOMALY_NAMES: Final = (
    "undefined_price",
    "side_none",
    "zero_size_add",
    "cancel_unknown_order",
    "fill_unknown_order",
    "modify_unknown_order",
    "duplicate_order_id",
    "unknown_action",
)

#: Chain indices: three delta-based chains, then the value-change chain.
ADD, PULL, FILL, REST = 0, 1, 2, 3

Chain = tuple[float, float, float]  # (v, a, j)
WindowRow = tuple[int, int, "Cell | None", float, float]  # (k, b, cell, pressure_now, vacuum_now)
_ZERO_CHAIN: Final[Chain] = (0.0, 0.0, 0.0)


class Order:
    """A live order: side code, fixed-point price, size, and its pending fill."""

    __slots__ = ("pending", "price", "side", "size")

    def __init__(self, side: int, price: int, size: int) -> None:
        self.side = side
        self.price = price
        self.size = size
        self.pending = 0

    def __repr__(self) -> str:
        return f"Order({chr(self.side)}, {self.price}, {self.size}, pending={self.pending})"


class Touch(NamedTuple):
    """One touch of a bucket by a record (SPEC §6) with the bucket's depth before the record."""

    bucket: int
    d_add: int
    d_pull: int
    d_fill: int
    depth_before: int


class Cell:
    """Per-bucket state (docs/SEMANTICS.md "Cells")."""

    __slots__ = (
        "D",
        "base_chain",
        "base_mass",
        "base_rest",
        "chain",
        "dt_ns",
        "last_event_id",
        "last_ts",
        "mass",
        "pressure",
        "rest_mem",
        "t_b",
        "vacuum",
    )

    def __init__(self, t0: int, depth_before: int) -> None:
        """A fresh cell: zeros, ``t_b = T0``, ``rest_mem`` = depth just before the touch."""
        self.t_b = t0
        self.dt_ns = 0
        self.base_mass = [0.0, 0.0, 0.0]
        self.base_chain: list[Chain] = [_ZERO_CHAIN] * 4
        self.base_rest = depth_before
        self.D = [0, 0, 0]
        self.mass = [0.0, 0.0, 0.0]
        self.chain: list[Chain] = [_ZERO_CHAIN] * 4
        self.rest_mem = depth_before
        self.pressure = 0.0
        self.vacuum = 0.0
        self.last_event_id = 0
        self.last_ts = 0


# ----------------------------------------------------------------------------- formulas


def alpha(dt: float, tau: float) -> float:
    """``1 - exp(-dt/tau)``, exactly 1 when ``dt/tau > 50``."""
    x = dt / tau
    if x > 50.0:
        return 1.0
    return 1.0 - math.exp(-x)


def _finite(chain: Chain) -> bool:
    return math.isfinite(chain[0]) and math.isfinite(chain[1]) and math.isfinite(chain[2])


def advance_chain(base: Chain, r: float, dt: float, av: float, aa: float, aj: float) -> Chain:
    """SPEC §7 chain update from ``base`` with rate ``r``; non-finite -> the base."""
    v0, a0, j0 = base
    v = av * r + (1.0 - av) * v0
    a = aa * (v - v0) / dt + (1.0 - aa) * a0
    j = aj * (a - a0) / dt + (1.0 - aj) * j0
    result = (v, a, j)
    return result if _finite(result) else base


def idle_chain(base: Chain, dt: float, av: float, aa: float, aj: float) -> Chain:
    """The ``_now`` advance: no activity for ``dt`` seconds (rate 0); non-finite -> base."""
    v0, a0, j0 = base
    v = (1.0 - av) * v0
    a = aa * (v - v0) / dt + (1.0 - aa) * a0
    j = aj * (a - a0) / dt + (1.0 - aj) * j0
    result = (v, a, j)
    return result if _finite(result) else base


def pos(x: float) -> float:
    """``max(x, 0)`` that never returns ``-0.0``."""
    return x if x > 0.0 else 0.0


def forces(c: ForceCoefficients, chain: list[Chain]) -> tuple[float, float]:
    """SPEC §8: ``(pressure, vacuum)`` from the four chains."""
    v_add, a_add = chain[ADD][0], chain[ADD][1]
    v_pull, a_pull = chain[PULL][0], chain[PULL][1]
    v_fill = chain[FILL][0]
    v_rest = chain[REST][0]
    pressure = (
        c.pressure_v_add * v_add
        + c.pressure_v_rest_pos * pos(v_rest)
        + c.pressure_a_add * pos(a_add)
    )
    vacuum = (
        c.vacuum_v_pull * v_pull
        + c.vacuum_v_fill * v_fill
        + c.vacuum_v_rest_neg * pos(-v_rest)
        + c.vacuum_a_pull * pos(a_pull)
    )
    return pressure, vacuum


def regime_step(regime: int, score: float, intensity: float, cfg: EngineConfig) -> int:
    """One step of the hysteresis machine (docs/SEMANTICS.md "Regime")."""
    if intensity < cfg.intensity_floor:
        return REGIME_CHOP
    if regime == REGIME_UP and score >= cfg.theta_off:
        return REGIME_UP
    if regime == REGIME_DOWN and score <= -cfg.theta_off:
        return REGIME_DOWN
    if score >= cfg.theta_on:
        return REGIME_UP
    if score <= -cfg.theta_on:
        return REGIME_DOWN
    return REGIME_CHOP


def _side_code(side: int | str) -> int:
    return ord(side) if isinstance(side, str) else int(side)


# ----------------------------------------------------------------------------- engine


class ReferenceEngine:
    """The whole engine for one book: order book, clock, cells, regime, emission.

    Parameters
    ----------
    config : the engine parameters.
    bucket : bucket size ``B`` in fixed-point price units (``250_000_000`` = 0.25).
    """

    def __init__(self, config: EngineConfig, bucket: int) -> None:
        if bucket <= 0:
            raise ValueError(f"bucket: must be a positive number of price units, was {bucket}")
        self.config = config
        self.B = int(bucket)
        self.K = config.K
        self.band = config.band
        self.sample = config.sample_code
        self.weights = [
            math.exp(-(abs(k) - 1) / config.regime_lambda) for k in range(-self.K, self.K + 1)
        ]
        self.anomalies: dict[str, int] = dict.fromkeys(ANOMALY_NAMES, 0)
        # book
        self.orders: dict[int, Order] = {}
        self._levels: dict[int, dict[int, int]] = {SIDE_BID: {}, SIDE_ASK: {}}
        self._heaps: dict[int, list[int]] = {SIDE_BID: [], SIDE_ASK: []}  # bid prices negated
        self._bucket_depth: dict[int, list[int]] = {}  # bucket -> [bid, ask]
        self.consistent = False
        self.snapshot_open = False
        # clock and spot
        self.event_id = 0
        self.t = 0
        self.T0 = 0
        self.started = False
        self.last_ts_recv = 0
        self.spot: int | None = None
        self.spot_bid = 0
        self.spot_ask = 0
        # cells, regime, emission
        self.cells: dict[int, Cell] = {}
        self.regime = REGIME_CHOP
        self.n_records = 0
        self.buy_volume = 0
        self.sell_volume = 0
        self.pending = False
        self.pending_bin = 0

    # ------------------------------------------------------------------ public API

    def process(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed MBO records; return ``(snapshots, grid)`` emitted during this call."""
        recs = as_kernel_records(np.asarray(records))
        snaps: list[tuple] = []
        grid: list[tuple] = []
        columns = [
            recs[name].tolist()
            for name in ("ts_event", "ts_recv", "order_id", "price", "size", "flags", "action",
                         "side")
        ]
        for ts_event, ts_recv, oid, price, size, flags, action, side in zip(*columns, strict=True):
            self._record(ts_event, ts_recv, oid, price, size, flags, action, side, snaps, grid)
        return _arrays(snaps, grid)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Emit a pending time-bin state, if any."""
        snaps: list[tuple] = []
        grid: list[tuple] = []
        if self.pending:
            self._emit(snaps, grid)
        return _arrays(snaps, grid)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The state now (1 snapshot row, 2K+1 grid rows), without emitting or resetting.

        Raises ValueError while spot is undefined (the book has never been two-sided).
        """
        if self.spot is None:
            raise ValueError("no state yet: the book has never been two-sided")
        snaps: list[tuple] = []
        grid: list[tuple] = []
        self._build_state(self.event_id, snaps, grid)
        return _arrays(snaps, grid)

    def reset_counters(self) -> None:
        """Restart ``n_records`` / ``buy_volume`` / ``sell_volume`` from zero."""
        self.n_records = 0
        self.buy_volume = 0
        self.sell_volume = 0

    def best_bid(self) -> int | None:
        """Best bid price (fixed point) or None."""
        return self._best(SIDE_BID)

    def best_ask(self) -> int | None:
        """Best ask price (fixed point) or None."""
        return self._best(SIDE_ASK)

    def depth(self, side: int | str, price: int) -> int:
        """Resting size at one price level of one side (``'B'``/``'A'`` or the code)."""
        return self._levels[_side_code(side)].get(price, 0)

    def bucket_depth(self, bucket: int) -> tuple[int, int]:
        """``(bid_depth, ask_depth)`` of an absolute bucket."""
        depth = self._bucket_depth.get(bucket)
        return (0, 0) if depth is None else (depth[0], depth[1])

    def bucket_of(self, price: int) -> int:
        """``b(p) = floor(p / B + 1/2)`` in integers."""
        return (2 * price + self.B) // (2 * self.B)

    # ------------------------------------------------------------------ per record

    def _record(
        self,
        ts_event: int,
        ts_recv: int,
        order_id: int,
        price: int,
        size: int,
        flags: int,
        action: int,
        side: int,
        snaps: list[tuple],
        grid: list[tuple],
    ) -> None:
        """docs/SEMANTICS.md "Per-record order of operations", steps 1-9."""
        cfg = self.config
        snap = bool(flags & F_SNAPSHOT)
        t_new = max(self.t, ts_event)
        # 1. pending time-bin emission (state after record n-1)
        if (
            self.sample == SAMPLE_TIME
            and not snap
            and self.pending
            and (t_new - cfg.epoch_ns) // cfg.sample_ns != self.pending_bin
        ):
            self._emit(snaps, grid)
        # 2. regime step at the last boundary crossed
        if not snap and self.started:
            last = cfg.epoch_ns + ((t_new - cfg.epoch_ns) // cfg.regime_step_ns) \
                * cfg.regime_step_ns
            if last > self.t:
                window = [] if self.spot is None else self._window(last)
                score, intensity = self._regime_sums(window)
                self.regime = regime_step(self.regime, score, intensity, cfg)
        self.event_id += 1
        self.n_records += 1
        self.last_ts_recv = ts_recv
        # 3. clock
        if not snap:
            self.t = t_new
            if not self.started:
                self.started = True
                self.T0 = t_new
        # 4. snapshot bookkeeping, before
        if self.snapshot_open and not snap:
            self.snapshot_open = False
            self.consistent = True
            self._resync()
        if action == ACTION_CLEAR:
            self.consistent = False
        if snap:
            self.snapshot_open = True
            self.consistent = False
        # 5. book change and touches
        touches = self._apply(action, side, price, size, order_id, snap)
        # 6. spot (and the band reset)
        self._update_spot()
        # 7. touches inside the band of the new spot
        if not snap and self.spot is not None:
            for touch in touches:
                if abs(touch.bucket - self.spot) <= self.band:
                    self.touch_bucket(touch)
        # 8. snapshot bookkeeping, after
        if flags & F_LAST and not self.consistent:
            self.consistent = True
            if self.snapshot_open:
                self.snapshot_open = False
                self._resync()
        # 9. emission
        if self.started and self.spot is not None:
            if self.sample == SAMPLE_EVENT or (self.sample == SAMPLE_PACKET and flags & F_LAST):
                self._emit(snaps, grid)
            elif self.sample == SAMPLE_TIME:
                self.pending = True
                self.pending_bin = (self.t - cfg.epoch_ns) // cfg.sample_ns

    def _apply(
        self, action: int, side: int, price: int, size: int, order_id: int, snap: bool
    ) -> list[Touch]:
        if action == ACTION_ADD:
            return self.apply_add(order_id, side, price, size, snap)
        if action == ACTION_CANCEL:
            return self.apply_cancel(order_id, size, snap)
        if action == ACTION_MODIFY:
            return self.apply_modify(order_id, side, price, size, snap)
        if action == ACTION_FILL:
            return [] if snap else self.apply_fill(order_id, price, size)
        if action == ACTION_CLEAR:
            self.apply_clear()
            return []
        if action == ACTION_TRADE:
            if not snap:
                self.apply_trade(side, size)
            return []
        if action == ACTION_NONE:
            return []
        self.anomalies["unknown_action"] += 1
        return []

    # ------------------------------------------------------------------ book (SPEC §3, §6)

    def apply_add(self, order_id: int, side: int, price: int, size: int, snap: bool) -> list[Touch]:
        """``A``: insert (a live id is replaced without a touch); touch ``add += size``."""
        if not self._valid_new_order(side, price, size):
            return []
        b = self.bucket_of(price)
        before = self._bucket_total(b)
        old = self.orders.pop(order_id, None)
        if old is not None:
            self.anomalies["duplicate_order_id"] += 1
            self._level_change(old.side, old.price, -old.size)
        self.orders[order_id] = Order(side, price, size)
        self._level_change(side, price, size)
        return [] if snap else [Touch(b, size, 0, 0, before)]

    def apply_cancel(self, order_id: int, size: int, snap: bool) -> list[Touch]:
        """``C``: remove ``min(size, order.size)``; pending fill is consumed before pull."""
        order = self.orders.get(order_id)
        if order is None:
            self.anomalies["cancel_unknown_order"] += 1
            return []
        removed = min(size, order.size)
        if removed == 0:
            return []
        b = self.bucket_of(order.price)
        before = self._bucket_total(b)
        pull = self._remove_size(order_id, order, removed)
        return [] if snap else [Touch(b, 0, pull, 0, before)]

    def apply_fill(self, order_id: int, price: int, size: int) -> list[Touch]:
        """``F`` (non-snapshot): no book change; touch ``fill += size``, pending on the order."""
        order = self.orders.get(order_id)
        if order is not None:
            b = self.bucket_of(order.price)
            order.pending += size
            return [Touch(b, 0, 0, size, self._bucket_total(b))]
        self.anomalies["fill_unknown_order"] += 1
        if price == UNDEF_PRICE:
            return []
        b = self.bucket_of(price)
        return [Touch(b, 0, 0, size, self._bucket_total(b))]

    def apply_modify(
        self, order_id: int, side: int, price: int, size: int, snap: bool
    ) -> list[Touch]:
        """``M``: move the stored order to ``(price, size)``; unknown id -> an add."""
        if price == UNDEF_PRICE:
            self.anomalies["undefined_price"] += 1
            return []
        if side not in (SIDE_BID, SIDE_ASK):
            self.anomalies["side_none"] += 1
            return []
        order = self.orders.get(order_id)
        if order is None:
            self.anomalies["modify_unknown_order"] += 1
            if size == 0:  # counted under both names, then skipped
                self.anomalies["zero_size_add"] += 1
                return []
            b = self.bucket_of(price)
            before = self._bucket_total(b)
            self.orders[order_id] = Order(side, price, size)
            self._level_change(side, price, size)
            return [] if snap else [Touch(b, size, 0, 0, before)]
        p0, q0 = order.price, order.size
        b0 = self.bucket_of(p0)
        b1 = self.bucket_of(price)
        before0 = self._bucket_total(b0)
        before1 = self._bucket_total(b1)
        if price == p0:
            if size > q0:
                order.size = size
                self._level_change(order.side, p0, size - q0)
                touches = [Touch(b0, size - q0, 0, 0, before0)]
            elif size < q0:
                pull = self._remove_size(order_id, order, q0 - size)
                touches = [Touch(b0, 0, pull, 0, before0)]
            else:
                touches = [Touch(b0, 0, 0, 0, before0)]
        else:
            pull = self._remove_size(order_id, order, q0)
            if size > 0:
                order.price = price
                order.size = size
                self.orders[order_id] = order
                self._level_change(order.side, price, size)
            touches = [Touch(b0, 0, pull, 0, before0), Touch(b1, size, 0, 0, before1)]
        return [] if snap else touches

    def apply_clear(self) -> None:
        """``R``: remove every order (no touches)."""
        self.orders.clear()
        self._levels = {SIDE_BID: {}, SIDE_ASK: {}}
        self._heaps = {SIDE_BID: [], SIDE_ASK: []}
        self._bucket_depth.clear()

    def apply_trade(self, side: int, size: int) -> None:
        """``T``: aggressor volume only."""
        if side == SIDE_BID:
            self.buy_volume += size
        elif side == SIDE_ASK:
            self.sell_volume += size

    def _valid_new_order(self, side: int, price: int, size: int) -> bool:
        if price == UNDEF_PRICE:
            self.anomalies["undefined_price"] += 1
            return False
        if side not in (SIDE_BID, SIDE_ASK):
            self.anomalies["side_none"] += 1
            return False
        if size == 0:
            self.anomalies["zero_size_add"] += 1
            return False
        return True

    def _remove_size(self, order_id: int, order: Order, removed: int) -> int:
        """Take ``removed`` lots off an order; returns the pull (removal net of pending fill)."""
        consumed = min(removed, order.pending)
        order.pending -= consumed
        order.size -= removed
        self._level_change(order.side, order.price, -removed)
        if order.size == 0:
            del self.orders[order_id]
        return removed - consumed

    def _level_change(self, side: int, price: int, delta: int) -> None:
        levels = self._levels[side]
        size = levels.get(price, 0) + delta
        if size > 0:
            if price not in levels:
                heapq.heappush(self._heaps[side], -price if side == SIDE_BID else price)
            levels[price] = size
        else:
            del levels[price]
        b = self.bucket_of(price)
        depth = self._bucket_depth.setdefault(b, [0, 0])
        depth[0 if side == SIDE_BID else 1] += delta
        if depth[0] == 0 and depth[1] == 0:
            del self._bucket_depth[b]

    def _best(self, side: int) -> int | None:
        heap, levels = self._heaps[side], self._levels[side]
        sign = -1 if side == SIDE_BID else 1
        while heap and sign * heap[0] not in levels:
            heapq.heappop(heap)
        return sign * heap[0] if heap else None

    def _bucket_total(self, b: int) -> int:
        depth = self._bucket_depth.get(b)
        return 0 if depth is None else depth[0] + depth[1]

    # ------------------------------------------------------------------ spot and cells

    def _update_spot(self) -> None:
        """SEMANTICS step 6: recompute spot when two-sided; reset cells leaving the band."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return
        new = (bid + ask + self.B) // (2 * self.B)
        old = self.spot
        self.spot, self.spot_bid, self.spot_ask = new, bid, ask
        if old is None or new == old:
            return
        band = self.band
        if new > old:
            leaving = range(old - band, min(old + band, new - band - 1) + 1)
        else:
            leaving = range(max(old - band, new + band + 1), old + band + 1)
        for b in leaving:
            self.cells.pop(b, None)

    def _resync(self) -> None:
        """Snapshot completed: every cell's remembered rest depth := the book's depth."""
        for b, cell in self.cells.items():
            cell.rest_mem = self._bucket_total(b)

    def touch_bucket(self, touch: Touch) -> None:
        """SPEC §7 / SEMANTICS "Cells": apply one touch at the engine clock."""
        b = touch.bucket
        cell = self.cells.get(b)
        if cell is None:
            cell = self.cells[b] = Cell(self.T0, touch.depth_before)
        t = self.t
        if t > cell.t_b:  # a new time group
            cell.base_mass = list(cell.mass)
            cell.base_chain = list(cell.chain)
            cell.base_rest = cell.rest_mem
            cell.dt_ns = t - cell.t_b
            cell.D = [0, 0, 0]
        cell.D[ADD] += touch.d_add
        cell.D[PULL] += touch.d_pull
        cell.D[FILL] += touch.d_fill
        rest_now = self._bucket_total(b)
        self._recompute(cell, rest_now)
        cell.t_b = t
        cell.rest_mem = rest_now
        cell.last_event_id = self.event_id
        cell.last_ts = t

    def _recompute(self, cell: Cell, rest_now: int) -> None:
        """Masses and chains of a cell from its group base, deltas and ``dt``."""
        cfg = self.config
        if cell.dt_ns == 0:  # the engine's first instant: only masses move
            cell.mass = [cell.base_mass[i] + cell.D[i] for i in (ADD, PULL, FILL)]
            cell.chain = list(cell.base_chain)
        else:
            dt = cell.dt_ns / 1e9
            decay = math.exp(-dt / cfg.tau_rest)
            cell.mass = [cell.base_mass[i] * decay + cell.D[i] for i in (ADD, PULL, FILL)]
            av, aa, aj = alpha(dt, cfg.tau_v), alpha(dt, cfg.tau_a), alpha(dt, cfg.tau_j)
            chain = [
                advance_chain(cell.base_chain[i], cell.D[i] / dt, dt, av, aa, aj)
                for i in (ADD, PULL, FILL)
            ]
            r_rest = (rest_now - cell.base_rest) / dt
            chain.append(advance_chain(cell.base_chain[REST], r_rest, dt, av, aa, aj))
            cell.chain = chain
        cell.pressure, cell.vacuum = forces(cfg.forces, cell.chain)

    def forces_now(self, cell: Cell, t_state: int) -> tuple[float, float]:
        """``(pressure_now, vacuum_now)``: the cell's chains advanced idle to ``t_state``."""
        if t_state == cell.t_b:
            return cell.pressure, cell.vacuum
        cfg = self.config
        dt = (t_state - cell.t_b) / 1e9
        av, aa, aj = alpha(dt, cfg.tau_v), alpha(dt, cfg.tau_a), alpha(dt, cfg.tau_j)
        return forces(cfg.forces, [idle_chain(c, dt, av, aa, aj) for c in cell.chain])

    # ------------------------------------------------------------------ regime and states

    def _window(self, t_state: int) -> list[WindowRow]:
        """``(k, b, cell, pressure_now, vacuum_now)`` for ``k = -K..K`` around spot."""
        assert self.spot is not None
        rows: list[WindowRow] = []
        for k in range(-self.K, self.K + 1):
            b = self.spot + k
            cell = self.cells.get(b)
            if cell is None:
                rows.append((k, b, None, 0.0, 0.0))
            else:
                rows.append((k, b, cell, *self.forces_now(cell, t_state)))
        return rows

    def _regime_sums(self, window: list[WindowRow]) -> tuple[float, float]:
        """SPEC §9 ``(score, intensity)`` of a window (0, 0 before spot is defined)."""
        if self.spot is None:
            return 0.0, 0.0
        bull = 0.0
        bear = 0.0
        two_mid = self.spot_bid + self.spot_ask
        for k, b, cell, p_now, v_now in window:
            if cell is None:
                continue
            w = self.weights[k + self.K]
            if 2 * b * self.B > two_mid:  # above
                bull += w * v_now
                bear += w * p_now
            elif 2 * b * self.B < two_mid:  # below
                bull += w * p_now
                bear += w * v_now
        score = (bull - bear) / (bull + bear + self.config.eps)
        return score, bull + bear

    def _emit(self, snaps: list[tuple], grid: list[tuple]) -> None:
        self._build_state(self.event_id, snaps, grid)
        self.reset_counters()
        self.pending = False

    def _build_state(self, event_id: int, snaps: list[tuple], grid: list[tuple]) -> None:
        """Append one snapshot row and its ``2K+1`` grid rows, evaluated at the clock now."""
        t = self.t
        nan = math.nan
        bid, ask = self.best_bid(), self.best_ask()
        bid_px = nan if bid is None else bid * 1e-9
        ask_px = nan if ask is None else ask * 1e-9
        bid_sz = 0 if bid is None else self._levels[SIDE_BID][bid]
        ask_sz = 0 if ask is None else self._levels[SIDE_ASK][ask]
        two_sided = bid is not None and ask is not None
        mid_px = (bid + ask) * 0.5e-9 if bid is not None and ask is not None else nan
        crossed = bid is not None and ask is not None and bid >= ask
        assert self.spot is not None
        window = self._window(t)
        score, intensity = self._regime_sums(window)
        spot_px = (self.spot * self.B) * 1e-9
        snaps.append((
            event_id, t, self.last_ts_recv, spot_px, bid_px, ask_px, bid_sz, ask_sz, mid_px,
            self.consistent and two_sided, crossed, self.n_records, self.buy_volume,
            self.sell_volume, self.regime, score, intensity,
        ))
        for k, b, cell, p_now, v_now in window:
            bid_d, ask_d = self.bucket_depth(b)
            price = (b * self.B) * 1e-9
            if cell is None:
                grid.append((event_id, k, price, bid_d, ask_d, bid_d + ask_d,
                             *((0.0,) * 19), 0, 0))
                continue
            ch = cell.chain
            grid.append((
                event_id, k, price, bid_d, ask_d, bid_d + ask_d,
                cell.mass[ADD], cell.mass[PULL], cell.mass[FILL],
                ch[ADD][0], ch[PULL][0], ch[FILL][0], ch[REST][0],
                ch[ADD][1], ch[PULL][1], ch[FILL][1], ch[REST][1],
                ch[ADD][2], ch[PULL][2], ch[FILL][2], ch[REST][2],
                cell.pressure, cell.vacuum, p_now, v_now,
                cell.last_event_id, cell.last_ts,
            ))


def _arrays(snaps: list[tuple], grid: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(snaps, dtype=SNAPSHOT_DTYPE), np.array(grid, dtype=GRID_DTYPE)
