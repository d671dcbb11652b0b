"""Independent checks of a synthetic MBO file: read back with the official ``databento``
reader and replayed through a small dict book written here (nothing from ``vpbatch.synth``)."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import databento as db
import numpy as np

FRIDAY = dt.date(2026, 2, 6)       # EST: CT = UTC-6, NY = UTC-5; CME closes 22:00 UTC
WEDNESDAY = dt.date(2026, 2, 4)    # halt 22:00-23:00 UTC, reopens 23:00 UTC
DAY_NS = 86_400 * 10**9
UNDEF = 2**63 - 1
LAST, SNAP = 0x80, 0x20


def day0_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 10**9


def read_dbn(path: Path) -> tuple[db.DBNStore, np.ndarray]:
    store = db.DBNStore.from_file(path)
    return store, store.to_ndarray()


class DictBook:
    """Minimal MBO book: fails loudly on anything a consistent feed never does."""

    def __init__(self) -> None:
        self.orders: dict[int, list] = {}
        self.depth: dict[bytes, defaultdict[int, int]] = {b"B": defaultdict(int),
                                                          b"A": defaultdict(int)}
        self.heaps: dict[bytes, list[int]] = {b"B": [], b"A": []}

    def best(self, side: bytes) -> int | None:
        heap, depth = self.heaps[side], self.depth[side]
        sign = -1 if side == b"B" else 1
        while heap and depth[sign * heap[0]] == 0:
            heapq.heappop(heap)
        return sign * heap[0] if heap else None

    def _place(self, side: bytes, price: int, size: int) -> None:
        if self.depth[side][price] == 0:
            heapq.heappush(self.heaps[side], -price if side == b"B" else price)
        self.depth[side][price] += size

    def add(self, oid: int, side: bytes, price: int, size: int) -> None:
        assert oid not in self.orders, f"add of live order {oid}"
        assert side in (b"B", b"A") and price != UNDEF and size > 0
        self.orders[oid] = [side, price, size]
        self._place(side, price, size)

    def cancel(self, oid: int, size: int) -> None:
        assert oid in self.orders, f"cancel of unknown order {oid}"
        side, price, live = self.orders[oid]
        assert 0 < size <= live, f"cancel {size} of {live}"
        self.depth[side][price] -= size
        if size == live:
            del self.orders[oid]
        else:
            self.orders[oid][2] = live - size

    def modify(self, oid: int, side: bytes, price: int, size: int) -> None:
        assert oid in self.orders, f"modify of unknown order {oid}"
        old_side, old_price, old_size = self.orders[oid]
        assert side == old_side and size > 0 and price != UNDEF
        self.depth[old_side][old_price] -= old_size
        self.orders[oid] = [side, price, size]
        self._place(side, price, size)

    def check_uncrossed(self) -> None:
        bid, ask = self.best(b"B"), self.best(b"A")
        assert bid is not None and ask is not None, "one side of the book is empty"
        assert bid < ask, f"crossed book {bid} >= {ask}"


def replay(recs: np.ndarray) -> Counter:
    """Replay the stream; assert MBO validity; return counts of trade-event shapes."""
    book = DictBook()
    shapes: Counter = Counter()
    live_start = int(np.argmin((recs["flags"] & SNAP) != 0))
    for r in recs[1:live_start]:
        book.add(int(r["order_id"]), r["side"], int(r["price"]), int(r["size"]))
    book.check_uncrossed()
    live = recs[live_start:]
    ts = live["ts_event"].astype(np.int64)
    bounds = np.r_[0, np.flatnonzero(np.diff(ts) != 0) + 1, len(live)]
    for g0, g1 in itertools.pairwise(bounds):
        group = live[g0:g1]
        acts = group["action"].tobytes()
        shapes["T" if b"T" in acts else acts.decode()] += 1
        pending: dict[int, int] = {}       # order -> filled in this event, awaiting its C/M
        i = 0
        while i < len(group):
            r = group[i]
            a, oid, size = r["action"], int(r["order_id"]), int(r["size"])
            if a == b"T":
                assert r["side"] in (b"B", b"A") and size > 0
                j = i + 1
                filled = 0
                while j < len(group) and group[j]["action"] == b"F":
                    f = group[j]
                    foid = int(f["order_id"])
                    assert foid in book.orders, f"fill of unknown order {foid}"
                    fside, fprice, fsize = book.orders[foid]
                    assert f["price"] == r["price"] == fprice
                    assert fside == f["side"] != r["side"]  # resting side opposes aggressor
                    pending[foid] = pending.get(foid, 0) + int(f["size"])
                    assert 0 < pending[foid] <= fsize
                    filled += int(f["size"])
                    j += 1
                assert j > i + 1, "trade without fills"
                assert filled == size, f"T size {size} != fills {filled}"
                i = j
                continue
            if a == b"F":
                raise AssertionError("F not directly after its T")
            if a == b"C":
                book.cancel(oid, size)
                pending.pop(oid, None)
            elif a == b"M":
                if oid in pending:
                    left = book.orders[oid][2] - pending.pop(oid)
                    assert size == left and r["price"] == book.orders[oid][1]
                book.modify(oid, r["side"], int(r["price"]), size)
            elif a == b"A":
                book.add(oid, r["side"], int(r["price"]), size)
            else:
                raise AssertionError(f"unexpected live action {a!r}")
            i += 1
        assert not pending, f"fills without a C/M in the same event: {pending}"
        book.check_uncrossed()
    return shapes


