"""Hypothesis strategies: random MBO streams a real venue could send, quirks included.

A stream is drawn as a list of intents ("cancel the 3rd live order", "sweep 7 lots"),
then ``build_stream`` plays them against a simulated book so every generated record is
one a real venue could send: C/M/F act on live orders, trades are T + F + C/M in one event.

Mixed with that ordinary flow, the generator reaches every case issue 8 lists (each op
name says which; tests/book/mutations.py shows each one is caught by a broken kernel):

* ``readd_same`` / ``readd_other``: an ``A`` reusing a live id (snapshot orders included)
  in the same bucket or another one (another side too);
* ``trade_side_n``: a ``T`` with side ``N``; ``undefined_price``: ``A``/``M`` at
  ``INT64_MAX``; ``zero_size``: a size-0 ``A``; ``unknown_cancel`` / ``unknown_modify`` /
  ``unknown_fill``: ``C``/``M``/``F`` of an id that is not live;
* ``fill_only`` then ``settle``: an ``F`` in one event and its ``C`` (or ``M``, same or new
  price, i.e. an ``M`` after a partial ``F``) in a later one;
* ``off_tick``: prices between ticks; ``edge``: orders near the band's edges;
* ``clear*``: ``R`` mid-stream and a fresh snapshot in four shapes (``R`` + ``F_SNAPSHOT``
  at the current time or with historical ``ts_event``; Nasdaq's ``R`` without
  ``F_SNAPSHOT`` followed by plain adds; 2023 GLBX's snapshot without ``R`` or ``F_LAST``);
* ``backwards``: a record whose ``ts_event`` is earlier than the engine clock;
* ``burst``: several packets (each ending with ``F_LAST``) at one timestamp;
* ``foreign=True``: records of other instruments and publishers interleaved (the filter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from vpbatch.book.dtypes import F_LAST, F_SNAPSHOT, MBO_DTYPE, UNDEF_PRICE

FUTURE_TICK = 250_000_000  # 0.25
EQUITY_TICK = 10_000_000  # 0.01
EQUITY_BUCKET = 500_000_000  # 0.50
#: The instrument and publisher of the generated book; ``foreign`` records use others.
OWN_INSTRUMENT = 1
OWN_PUBLISHER = 1
FOREIGN = ((2, 1), (1, 2), (7, 9))  # (instrument_id, publisher_id)
#: Offsets (ticks behind the touch) around the band edges of the futures property's bands
#: (4, 6, 30, 1000 buckets of one tick).
FUTURE_EDGES = (2, 3, 4, 5, 6, 7, 28, 29, 30, 31, 998, 999, 1000, 1001)
HOUR = 3_600_000_000_000

OPS = ("add", "add", "add", "cancel", "partial", "modify_price", "modify_size", "trade",
       "time", "jump", "clear", "clear_historical", "clear_nasdaq", "clear_no_r",
       "unknown_cancel", "none",
       "readd_same", "readd_other", "trade_side_n", "undefined_price", "zero_size",
       "unknown_modify", "unknown_fill", "fill_only", "settle", "settle", "off_tick", "off_tick",
       "backwards", "burst", "edge")


@dataclass
class _Book:
    tick: int
    mid: int
    edges: tuple[int, ...]
    orders: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # id -> side, px, sz
    pending: dict[int, int] = field(default_factory=dict)  # id -> fills not yet settled
    next_id: int = 1000
    ts: int = 1_700_000_000_000_000_000

    def live(self, side: int | None = None) -> list[int]:
        return sorted(i for i, o in self.orders.items() if side is None or o[0] == side)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def remove(self, oid: int) -> None:
        del self.orders[oid]
        self.pending.pop(oid, None)


def _rec(book: _Book, action: str, side: str, oid: int, price: int, size: int,
         flags: int = 0, ts: int | None = None, iid: int = OWN_INSTRUMENT,
         pid: int = OWN_PUBLISHER) -> tuple:
    ts = book.ts if ts is None else ts
    return (14, 0xA0, pid, iid, ts, oid, price, size, flags, 0, ord(action), ord(side),
            ts + 1000, 0, 0)


def _price(book: _Book, side: int, offset: int) -> int:
    """A passive price ``offset`` ticks behind the touch, never crossing the mid."""
    if side == 0:
        return book.mid - (1 + offset) * book.tick
    return book.mid + (1 + offset) * book.tick


def _mark_last(records: list[tuple]) -> list[tuple]:
    """Mark the last record of an event with F_LAST."""
    if records:
        last = list(records[-1])
        last[8] |= F_LAST
        records[-1] = tuple(last)
    return records


def build_stream(intents: list[tuple], tick: int = FUTURE_TICK, snapshot: bool = True,
                 start_mid_ticks: int = 20_000, edges: tuple[int, ...] = FUTURE_EDGES,
                 foreign: bool = False) -> np.ndarray:
    """Play intents against a simulated book and return MBO_DTYPE records.

    With ``foreign`` records of other instruments/publishers are interleaved; keep the
    book's own with ``own_records``.
    """
    book = _Book(tick=tick, mid=start_mid_ticks * tick, edges=edges)
    out: list[tuple] = []
    if snapshot:
        snap = [_rec(book, "R", "N", 0, UNDEF_PRICE, 0, F_SNAPSHOT)]
        for side in (0, 1):
            for lvl in range(3):
                oid = book.new_id()
                px = _price(book, side, lvl)
                book.orders[oid] = (side, px, 5)
                snap.append(_rec(book, "A", "BA"[side], oid, px, 5, F_SNAPSHOT))
        out += _mark_last(snap)
    for op, a, b, c, dt in intents:
        book.ts += dt
        for records, last in _play(book, op, a, b, c):
            out += _mark_last(records) if last else records
        if foreign and c % 3 == 0:
            out += _mark_last(_foreign(book, a, b, c))
    return np.array(out, dtype=MBO_DTYPE) if out else np.zeros(0, MBO_DTYPE)


def own_records(records: np.ndarray) -> np.ndarray:
    """The generated book's own records (what the instrument/publisher filter must keep)."""
    keep = (records["instrument_id"] == OWN_INSTRUMENT) & (records["publisher_id"] == OWN_PUBLISHER)
    return records[keep]


Events = list[tuple[list[tuple], bool]]  # (records of one event, end it with F_LAST)


def _play(book: _Book, op: str, a: int, b: int, c: int) -> Events:
    side = a % 2
    live = book.live()
    if op == "add":
        oid = book.new_id()
        px = _price(book, side, b % 12)
        size = 1 + c % 9
        book.orders[oid] = (side, px, size)
        return [([_rec(book, "A", "BA"[side], oid, px, size)], True)]
    if op in ("cancel", "partial") and live:
        oid = live[b % len(live)]
        s, px, sz = book.orders[oid]
        qty = sz if op == "cancel" or sz == 1 else 1 + c % (sz - 1)
        if qty == sz:
            book.remove(oid)
        else:
            book.orders[oid] = (s, px, sz - qty)
        return [([_rec(book, "C", "BA"[s], oid, px, qty)], True)]
    if op == "modify_price" and live:
        oid = live[b % len(live)]
        s, _, sz = book.orders[oid]
        px = _price(book, s, c % 12)
        book.orders[oid] = (s, px, sz)
        return [([_rec(book, "M", "BA"[s], oid, px, sz)], True)]
    if op == "modify_size" and live:
        oid = live[b % len(live)]
        s, px, _ = book.orders[oid]
        size = 1 + c % 12
        book.orders[oid] = (s, px, size)
        return [([_rec(book, "M", "BA"[s], oid, px, size)], True)]
    if op == "trade":
        return [(_sweep(book, side, 1 + c % 15), True)]
    if op == "jump":
        # Move the mid by up to +-60 ticks and re-centre (stale far orders stay, as in reality).
        book.mid += ((b % 121) - 60) * book.tick
        crossing = [i for i, (s, px, _) in book.orders.items()
                    if (s == 0 and px >= book.mid) or (s == 1 and px <= book.mid)]
        recs = []
        for oid in sorted(crossing):
            s, px, sz = book.orders[oid]
            book.remove(oid)
            recs.append(_rec(book, "C", "BA"[s], oid, px, sz))
        return [(recs, True)]
    if op.startswith("clear"):
        return _clear(book, op, b, c)
    if op == "unknown_cancel":
        return [([_rec(book, "C", "B", 999_999_999, book.mid, 1)], True)]
    if op == "none":
        return [([_rec(book, "N", "N", 0, UNDEF_PRICE, 0)], True)]
    if op in ("readd_same", "readd_other") and live:
        oid = live[b % len(live)]
        s, px, _ = book.orders[oid]
        if op == "readd_other":
            s, px = side, _price(book, side, c % 12)
        size = 1 + c % 9
        book.remove(oid)
        book.orders[oid] = (s, px, size)
        return [([_rec(book, "A", "BA"[s], oid, px, size)], True)]
    if op == "trade_side_n":
        return [([_rec(book, "T", "N", book.new_id(), book.mid, 1 + c % 9)], True)]
    if op == "undefined_price":
        if b % 2 and live:
            oid = live[c % len(live)]
            s, _, sz = book.orders[oid]
            return [([_rec(book, "M", "BA"[s], oid, UNDEF_PRICE, sz)], True)]
        return [([_rec(book, "A", "BA"[side], book.new_id(), UNDEF_PRICE, 1 + c % 9)], True)]
    if op == "zero_size":
        return [([_rec(book, "A", "BA"[side], book.new_id(), _price(book, side, b % 12), 0)],
                 True)]
    if op == "unknown_modify":
        oid = book.new_id()
        px = _price(book, side, b % 12)
        size = 0 if c % 5 == 0 else 1 + c % 9
        if size:
            book.orders[oid] = (side, px, size)
        return [([_rec(book, "M", "BA"[side], oid, px, size)], True)]
    if op == "unknown_fill":
        px = UNDEF_PRICE if c % 4 == 0 else _price(book, side, b % 12)
        return [([_rec(book, "F", "BA"[side], 888_888_888, px, 1 + c % 5)], True)]
    if op == "fill_only":
        return _fill_only(book, b, c)
    if op == "settle":
        return _settle(book, b, c)
    if op == "off_tick":
        oid = book.new_id()
        off = 1 + c % (book.tick - 1)  # strictly between two ticks, towards the mid
        px = _price(book, side, b % 2) + (off if side == 0 else -off)
        book.orders[oid] = (side, px, 1 + c % 9)
        return [([_rec(book, "A", "BA"[side], oid, px, 1 + c % 9)], True)]
    if op == "backwards":
        oid = book.new_id()
        px = _price(book, side, b % 12)
        book.orders[oid] = (side, px, 1 + c % 9)
        back = book.ts - (1 + c % 40) * 25_000_000  # up to a second in the past
        return [([_rec(book, "A", "BA"[side], oid, px, 1 + c % 9, ts=back)], True)]
    if op == "burst":  # several packets, each with F_LAST, at one timestamp
        events: Events = []
        for k in range(2 + b % 3):
            sub = ("add", "cancel", "trade", "modify_size", "fill_only")[(c + k) % 5]
            events += _play(book, sub, a + k, b + 7 * k, c + 3 * k)
        return events
    if op == "edge":
        oid = book.new_id()
        px = _price(book, side, book.edges[b % len(book.edges)])
        book.orders[oid] = (side, px, 1 + c % 9)
        return [([_rec(book, "A", "BA"[side], oid, px, 1 + c % 9)], True)]
    return []  # "time": just let the clock run (or the op had no live order to act on)


def _clear(book: _Book, op: str, b: int, c: int) -> Events:
    """``R`` mid-stream and a fresh snapshot: kept orders (new sizes) and new ones.

    ``clear``: R + F_SNAPSHOT records now; ``clear_historical``: the same with an old
    ``ts_event``; ``clear_nasdaq``: R without F_SNAPSHOT, then plain adds; ``clear_no_r``:
    snapshot adds over the live book with neither R nor F_LAST.
    """
    shape = ("clear", "clear_historical", "clear_nasdaq", "clear_no_r").index(op)
    kept = sorted(book.orders.items())[: b % 6]
    fresh = []
    for k in range(2 + c % 3):  # both sides
        side = (b + k) % 2
        fresh.append((book.new_id(), (side, _price(book, side, (c + k) % 8), 1 + (b + k) % 7)))
    if shape != 3:  # an R empties the book; shape 3 re-adds over the live book
        book.orders.clear()
        book.pending.clear()
    entries = [(oid, (s, px, 1 + (sz + c) % 8)) for oid, (s, px, sz) in kept] + fresh
    for oid, order in entries:
        book.orders[oid] = order
    if shape == 2:  # Nasdaq: an R without F_SNAPSHOT, then plain adds, one event
        recs = [_rec(book, "R", "N", 0, UNDEF_PRICE, 0)]
        recs += [_rec(book, "A", "BA"[s], oid, px, sz) for oid, (s, px, sz) in entries]
        return [(recs, True)]
    ts = book.ts - (1 + b % 5) * HOUR if shape == 1 else book.ts  # historical ts_event
    recs = [] if shape == 3 else [_rec(book, "R", "N", 0, UNDEF_PRICE, 0, F_SNAPSHOT, ts=ts)]
    recs += [_rec(book, "A", "BA"[s], oid, px, sz, F_SNAPSHOT, ts=ts)
             for oid, (s, px, sz) in entries]
    if shape != 3:
        return [(recs, True)]
    # 2023 GLBX: a snapshot with neither R nor F_LAST; the next live record ends it. Here
    # that is a two-record event adding at the first re-sent order's price.
    s, px, _ = entries[0][1]
    live = []
    for _ in range(2):
        oid = book.new_id()
        book.orders[oid] = (s, px, 1 + c % 5)
        live.append(_rec(book, "A", "BA"[s], oid, px, 1 + c % 5))
    return [(recs, False), (live, True)]


def _fill_only(book: _Book, b: int, c: int) -> Events:
    """Nasdaq style: an ``F`` now, its ``C``/``M`` in a later event (``settle``)."""
    candidates = [i for i in book.live() if book.orders[i][2] > book.pending.get(i, 0)]
    if not candidates:
        return []
    oid = candidates[b % len(candidates)]
    s, px, sz = book.orders[oid]
    room = sz - book.pending.get(oid, 0)
    f = 1 + c % room
    book.pending[oid] = book.pending.get(oid, 0) + f
    return [([_rec(book, "F", "BA"[s], oid, px, f)], True)]


def _settle(book: _Book, b: int, c: int) -> Events:
    """The C or M that follows an earlier F: cancel, shrink in place, or move (new price)."""
    open_fills = sorted(i for i in book.pending if i in book.orders)
    if not open_fills:
        return []
    oid = open_fills[b % len(open_fills)]
    s, px, sz = book.orders[oid]
    filled = book.pending.pop(oid)
    left = sz - filled
    how = c % 3
    if how == 0 or left <= 0:
        qty = min(sz, filled + (c % 2) * (c % 3))  # sometimes more than the fill: a pull too
        if qty >= sz:
            book.remove(oid)
        else:
            book.orders[oid] = (s, px, sz - qty)
        return [([_rec(book, "C", "BA"[s], oid, px, qty)], True)]
    if how == 1:
        book.orders[oid] = (s, px, left)
        return [([_rec(book, "M", "BA"[s], oid, px, left)], True)]
    new_px = _price(book, s, c % 12)
    book.orders[oid] = (s, new_px, left)
    return [([_rec(book, "M", "BA"[s], oid, new_px, left)], True)]


def _foreign(book: _Book, a: int, b: int, c: int) -> list[tuple]:
    """A record of another instrument or publisher: would wreck the book if not filtered."""
    iid, pid = FOREIGN[a % len(FOREIGN)]
    kind = b % 4
    live = book.live()
    if kind == 0:
        return [_rec(book, "R", "N", 0, UNDEF_PRICE, 0, F_SNAPSHOT, iid=iid, pid=pid)]
    if kind == 1 and live:  # the same order id at another publisher
        oid = live[c % len(live)]
        s, px, sz = book.orders[oid]
        return [_rec(book, "C", "BA"[s], oid, px, sz, iid=iid, pid=pid)]
    if kind == 2:
        return [_rec(book, "T", "BA"[a % 2], book.new_id(), book.mid, 1 + c % 9, iid=iid,
                     pid=pid)]
    # an add that would cross the book
    px = book.mid + (1 + c % 5) * book.tick * (1 if a % 2 == 0 else -1)
    return [_rec(book, "A", "BA"[a % 2], book.new_id(), px, 1 + c % 9, iid=iid, pid=pid)]


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
            book.remove(oid)
            tails.append(_rec(book, "C", "BA"[s], oid, px, f))
        else:
            book.orders[oid] = (s, px, sz - f)
            tails.append(_rec(book, "M", "BA"[s], oid, px, sz - f))
    traded = qty - left
    if traded == 0:
        return []
    first_px = fills[0][6]
    trade = _rec(book, "T", "BA"[aggressor], book.new_id(), first_px, traded)
    return [trade, *fills, *tails]


_DT = st.sampled_from([0, 0, 0, 1_000, 400_000, 7_000_000, 30_000_000, 120_000_000,
                       900_000_000, 4_000_000_000, 90_000_000_000])
intent = st.tuples(st.sampled_from(OPS), st.integers(0, 10_000), st.integers(0, 10_000),
                   st.integers(0, 10_000), _DT)
intents = st.lists(intent, min_size=1, max_size=120)


def equity_edges(band_buckets: int, ticks_per_bucket: int) -> tuple[int, ...]:
    """Tick offsets that land around the band edge of an equity book (buckets of many ticks)."""
    edge = band_buckets * ticks_per_bucket
    half = ticks_per_bucket // 2
    return tuple(edge + d for d in (-ticks_per_bucket, -half - 1, -half, 0, half, half + 1,
                                    ticks_per_bucket))
