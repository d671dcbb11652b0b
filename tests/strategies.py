"""Hypothesis strategies: random but *valid* MBO streams (plus deliberate anomalies).

A stream is drawn as a list of intents ("cancel the 3rd live order", "sweep 7 lots"),
then ``build_stream`` plays them against a simulated book so every generated record is
one a real venue could send: C/M/F act on live orders, trades are T + F + C/M in one event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from vpbatch.book.dtypes import F_LAST, F_SNAPSHOT, MBO_DTYPE, UNDEF_PRICE

FUTURE_TICK = 250_000_000  # 0.25
EQUITY_TICK = 10_000_000  # 0.01
EQUITY_BUCKET = 500_000_000  # 0.50

OPS = ("add", "add", "add", "cancel", "partial", "modify_price", "modify_size", "trade",
       "time", "jump", "clear", "unknown_cancel", "none")


@dataclass
class _Book:
    tick: int
    mid: int
    orders: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # id -> side, px, sz
    next_id: int = 1000
    ts: int = 1_700_000_000_000_000_000

    def live(self, side: int | None = None) -> list[int]:
        return sorted(i for i, o in self.orders.items() if side is None or o[0] == side)


def _rec(book: _Book, action: str, side: str, oid: int, price: int, size: int,
         flags: int = 0) -> tuple:
    return (14, 0xA0, 1, 1, book.ts, oid, price, size, flags, 0, ord(action), ord(side),
            book.ts + 1000, 0, 0)


def _price(book: _Book, side: int, offset: int) -> int:
    """A passive price ``offset`` ticks behind the touch, never crossing the mid."""
    if side == 0:
        return book.mid - (1 + offset) * book.tick
    return book.mid + (1 + offset) * book.tick


def _event(records: list[tuple]) -> list[tuple]:
    """Mark the last record of an event with F_LAST."""
    if records:
        last = list(records[-1])
        last[8] |= F_LAST
        records[-1] = tuple(last)
    return records


def build_stream(intents: list[tuple], tick: int = FUTURE_TICK, snapshot: bool = True,
                 start_mid_ticks: int = 20_000) -> np.ndarray:
    """Play intents against a simulated book and return MBO_DTYPE records."""
    book = _Book(tick=tick, mid=start_mid_ticks * tick)
    out: list[tuple] = []
    if snapshot:
        snap = [_rec(book, "R", "N", 0, UNDEF_PRICE, 0, F_SNAPSHOT)]
        for side in (0, 1):
            for lvl in range(3):
                oid = book.next_id
                book.next_id += 1
                px = _price(book, side, lvl)
                book.orders[oid] = (side, px, 5)
                snap.append(_rec(book, "A", "BA"[side], oid, px, 5, F_SNAPSHOT))
        last = list(snap[-1])
        last[8] |= F_LAST
        snap[-1] = tuple(last)
        out += snap
    for op, a, b, c, dt in intents:
        book.ts += dt
        out += _event(_play(book, op, a, b, c))
    return np.array(out, dtype=MBO_DTYPE) if out else np.zeros(0, MBO_DTYPE)


def _play(book: _Book, op: str, a: int, b: int, c: int) -> list[tuple]:
    side = a % 2
    if op == "add":
        oid = book.next_id
        book.next_id += 1
        px = _price(book, side, b % 12)
        size = 1 + c % 9
        book.orders[oid] = (side, px, size)
        return [_rec(book, "A", "BA"[side], oid, px, size)]
    live = book.live()
    if op in ("cancel", "partial") and live:
        oid = live[b % len(live)]
        s, px, sz = book.orders[oid]
        qty = sz if op == "cancel" or sz == 1 else 1 + c % (sz - 1)
        if qty == sz:
            del book.orders[oid]
        else:
            book.orders[oid] = (s, px, sz - qty)
        return [_rec(book, "C", "BA"[s], oid, px, qty)]
    if op == "modify_price" and live:
        oid = live[b % len(live)]
        s, _, sz = book.orders[oid]
        px = _price(book, s, c % 12)
        book.orders[oid] = (s, px, sz)
        return [_rec(book, "M", "BA"[s], oid, px, sz)]
    if op == "modify_size" and live:
        oid = live[b % len(live)]
        s, px, _ = book.orders[oid]
        size = 1 + c % 12
        book.orders[oid] = (s, px, size)
        return [_rec(book, "M", "BA"[s], oid, px, size)]
    if op == "trade":
        return _sweep(book, side, 1 + c % 15)
    if op == "jump":
        # Move the mid by up to +-60 ticks and re-centre (stale far orders stay, as in reality).
        book.mid += ((b % 121) - 60) * book.tick
        crossing = [i for i, (s, px, _) in book.orders.items()
                    if (s == 0 and px >= book.mid) or (s == 1 and px <= book.mid)]
        recs = []
        for oid in sorted(crossing):
            s, px, sz = book.orders.pop(oid)
            recs.append(_rec(book, "C", "BA"[s], oid, px, sz))
        return recs
    if op == "clear":
        recs = [_rec(book, "R", "N", 0, UNDEF_PRICE, 0, F_SNAPSHOT)]
        kept = sorted(book.orders.items())[: 1 + b % 6]
        book.orders = dict(kept)
        for oid, (s, px, sz) in kept:
            recs.append(_rec(book, "A", "BA"[s], oid, px, sz, F_SNAPSHOT))
        return recs
    if op == "unknown_cancel":
        return [_rec(book, "C", "B", 999_999_999, book.mid, 1)]
    if op == "none":
        return [_rec(book, "N", "N", 0, UNDEF_PRICE, 0)]
    return []  # "time": just let the clock run


def _sweep(book: _Book, aggressor: int, qty: int) -> list[tuple]:
    """T, then per resting order hit in price-time order F followed by its C or M."""
    resting = 1 - aggressor
    hit = sorted(book.live(resting), key=lambda i: (book.orders[i][1] * (1 if resting else -1), i))
    fills, tails, left = [], [], qty
    for oid in hit:
        if left == 0:
            break
        s, px, sz = book.orders[oid]
        f = min(sz, left)
        left -= f
        fills.append(_rec(book, "F", "BA"[s], oid, px, f))
        if f == sz:
            del book.orders[oid]
            tails.append(_rec(book, "C", "BA"[s], oid, px, f))
        else:
            book.orders[oid] = (s, px, sz - f)
            tails.append(_rec(book, "M", "BA"[s], oid, px, sz - f))
    traded = qty - left
    if traded == 0:
        return []
    first_px = fills[0][6]
    trade = _rec(book, "T", "BA"[aggressor], book.next_id, first_px, traded)
    book.next_id += 1
    return [trade, *fills, *tails]


_DT = st.sampled_from([0, 0, 0, 1_000, 400_000, 7_000_000, 30_000_000, 120_000_000,
                       900_000_000, 4_000_000_000, 90_000_000_000])
intent = st.tuples(st.sampled_from(OPS), st.integers(0, 10_000), st.integers(0, 10_000),
                   st.integers(0, 10_000), _DT)
intents = st.lists(intent, min_size=1, max_size=120)
