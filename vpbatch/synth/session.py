"""The synthetic day's API: :func:`synth_session` (one file) and :func:`synth_to_lake`.

Checks the arguments, seeds the simulation (the book restated at the weekly open, then a
silent burn-in up to midnight), takes the start-of-day snapshot and streams the live day to
the file (:mod:`vpbatch.synth.output`).
"""

from __future__ import annotations

import datetime as dt
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np

from vpbatch.book.dtypes import FIXED_PRICE_SCALE, SIDE_ASK, SIDE_BID
from vpbatch.clock import NS_PER_SECOND
from vpbatch.errors import ConfigError
from vpbatch.products import FUTURE_MBO, Product, resolve_product
from vpbatch.store.lake import raw_dir, raw_file_name
from vpbatch.synth.book import init_book
from vpbatch.synth.calendar import day_start_ns, session_intensity, weekly_open_ns
from vpbatch.synth.dbn import metadata, record_buffer, snapshot_records
from vpbatch.synth.informed import INFORMED_JUMPS
from vpbatch.synth.kernel import run
from vpbatch.synth.model import DAILY_VOL_FRACTION, FLOWS, SIGMA_EVENT_MAX, START_PRICES
from vpbatch.synth.output import write_day
from vpbatch.synth.state import EDGE, NLEV, Simulation, new_simulation

#: Fewest records a file may have.
MIN_RECORDS: Final = 1_000


@dataclass(frozen=True)
class SynthStats:
    """What one synthetic file holds (``first/last_ts_event`` of the live, non-snapshot part)."""

    path: Path
    symbol: str
    instrument_id: int
    records: int
    snapshot_records: int
    action_counts: dict[str, int]
    first_ts_event: int
    last_ts_event: int
    bytes: int
    seconds: float
    snapshot_levels: tuple[int, int] = field(default=(0, 0))

    def summary(self) -> str:
        """One human-readable block (the CLI prints it)."""
        acts = " ".join(f"{k}={v}" for k, v in sorted(self.action_counts.items()))
        t0 = dt.datetime.fromtimestamp(self.first_ts_event / NS_PER_SECOND, dt.UTC)
        t1 = dt.datetime.fromtimestamp(self.last_ts_event / NS_PER_SECOND, dt.UTC)
        rate = self.records / self.seconds if self.seconds > 0 else float("nan")
        return (f"records   {self.records:,} ({self.snapshot_records:,} snapshot; "
                f"{self.snapshot_levels[0]} bid / {self.snapshot_levels[1]} ask levels)\n"
                f"actions   {acts}\n"
                f"ts_event  {t0:%Y-%m-%d %H:%M:%S.%f} .. {t1:%Y-%m-%d %H:%M:%S.%f} UTC\n"
                f"size      {self.bytes:,} bytes\n"
                f"time      {self.seconds:.2f} s ({rate:,.0f} records/s)")


def default_start_price(symbol: str) -> float:
    """An indicative price for ``symbol`` (futures root table; equities 500)."""
    product = resolve_product(symbol)
    if product.product_type == FUTURE_MBO:
        return START_PRICES.get(product.root, 1000.0)
    return 500.0


def _seed_words(seed: int, symbol: str, day: dt.date) -> np.ndarray:
    """The flow generator's state, from the seed, the symbol and the day."""
    words = np.random.SeedSequence(
        [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, day.toordinal(),
         zlib.crc32(symbol.encode())]).generate_state(4, np.uint64)
    if not words.any():
        words[0] = 1
    return words


def _informed_words(words: np.ndarray) -> np.ndarray:
    """The planted signal's two generator states (episodes; placebo jump coins), 8 words
    derived from the file's seed words."""
    parts = []
    for tag in (0x1F0, 0x1F1):
        out = np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words] + [tag]
                                     ).generate_state(4, np.uint64)
        if not out.any():
            out[0] = 1
        parts.append(out)
    return np.concatenate(parts)


def _check_arguments(day: dt.date, records: int, seed: int, instrument_id: int,
                     publisher_id: int, informed: float, informed_jump: str,
                     flow: str = "depth") -> None:
    """Raise ConfigError for an invalid argument of :func:`synth_session`."""
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
        raise ConfigError(f"day: expected a datetime.date, got {day!r}")
    if isinstance(records, bool) or not isinstance(records, int) or records < MIN_RECORDS:
        raise ConfigError(f"records: must be an integer >= {MIN_RECORDS}, was {records!r}")
    if not 0 <= seed < 2**64:
        raise ConfigError(f"seed: must be in [0, 2**64), was {seed}")
    if not 0 < instrument_id < 2**32:
        raise ConfigError(f"instrument_id: must be in (0, 2**32), was {instrument_id}")
    if isinstance(informed, bool) or not isinstance(informed, (int, float)) \
            or not 0.0 <= informed <= 1.0:
        raise ConfigError(f"informed: must be a share in [0, 1], was {informed!r}")
    if informed_jump not in INFORMED_JUMPS:
        raise ConfigError(f"informed_jump: must be one of {', '.join(INFORMED_JUMPS)}, "
                          f"was {informed_jump!r}")
    if informed_jump != "aligned" and informed == 0:
        raise ConfigError(f"informed_jump: {informed_jump!r} needs informed episodes "
                          "(informed > 0); with informed = 0 there is nothing to control for")
    if flow not in FLOWS:
        raise ConfigError(f"flow: must be one of {', '.join(FLOWS)}, was {flow!r}")
    if not 0 < publisher_id < 2**16:
        raise ConfigError(f"publisher_id: must be in (0, 2**16), was {publisher_id}")
    if day.weekday() >= 5:
        raise ConfigError(f"day: {day.isoformat()} is a {day:%A}; CME Globex does not trade "
                          "a full session on weekends, pick a weekday")


class Day(NamedTuple):
    """A day ready to stream: the simulation at midnight (about to emit), its start-of-day
    snapshot, and the session intensity its clock follows."""

    product: Product
    sim: Simulation
    snapshot: np.ndarray
    h: np.ndarray
    hcum: np.ndarray


def start_day(symbol: str, day: dt.date, records: int, seed: int, start_price: float | None,
              instrument_id: int, publisher_id: int, informed: float = 0.0,
              informed_jump: str = "aligned", flow: str = "depth") -> Day:
    """Seed the simulation for the day, build the book before it (the stationary profile
    restated at the weekly open, then a silent burn-in up to midnight, so snapshot orders
    have history) and take the snapshot. Arguments as :func:`synth_session` (checked)."""
    product = resolve_product(symbol)
    price = default_start_price(symbol) if start_price is None else float(start_price)
    if not np.isfinite(price) or price <= 0:
        raise ConfigError(f"start_price: must be a positive price, was {start_price}")
    start_tick = max(round(price * FIXED_PRICE_SCALE / product.tick), 2 * EDGE)
    base_tick = max(start_tick - NLEV // 2, 1)

    h = session_intensity(day, seed)
    hcum = np.concatenate(([0.0], np.cumsum(h)))
    day0 = day_start_ns(day)
    words = _seed_words(seed, product.symbol, day)
    sim = new_simulation(words, float(informed), _informed_words(words) if informed > 0 else None,
                         INFORMED_JUMPS.index(informed_jump), FLOWS.index(flow))
    st = sim.state[0]
    st["tick"] = product.tick
    st["day0"] = day0
    st["base_tick"] = base_tick
    st["slow_target"] = min(max(records // 100, 100), 1_500)
    st["fast_target"] = min(max(records // 10_000, 20), 60)
    st["order_id"] = 6_800_000_000_000 + int(sim.rng[0] % np.uint64(100_000_000_000))
    st["sequence"] = 10_000_000 + int(sim.rng[1] % np.uint64(50_000_000))
    groups = records / 1.1
    sigma = min(SIGMA_EVENT_MAX, DAILY_VOL_FRACTION * start_tick / np.sqrt(groups))
    st["sigma"] = sigma
    st["drift"] = 4.0 * sigma / np.sqrt(groups)
    st["p_trend_switch"] = 20.0 / groups
    st["h_target"] = hcum[-1] * (1.0 - 1e-3)
    st["h_min"] = hcum[-1] * 1e-5

    weekly = weekly_open_ns(day) + int(sim.rng[2] % np.uint64(NS_PER_SECOND))
    init_book(sim, start_tick - base_tick, weekly)
    burn = 8 * int(sim.n_dense.sum())
    burn_t0 = max(weekly + NS_PER_SECOND, day0 - 20 * 3600 * NS_PER_SECOND)
    st["burn_t0"] = burn_t0
    st["burn_dt"] = max((day0 - NS_PER_SECOND // 1000 - burn_t0) // burn, 1)
    scratch = record_buffer(1, instrument_id, publisher_id)
    run(sim, scratch, h, hcum, 0, burn)
    snap = snapshot_records(sim, day0, instrument_id, publisher_id)
    if len(snap) >= records:
        raise ConfigError(f"records: {records} is smaller than the opening snapshot "
                          f"({len(snap)} records); ask for more records")

    st["emit"] = True
    st["groups"] = 0
    st["children"] = 0
    st["written"] = 0
    st["excite"] = 0
    st["budget"] = records - len(snap)
    st["last_ts"] = day0
    st["last_recv"] = day0
    st["t"] = 0.0
    return Day(product, sim, snap, h, hcum)


def synth_session(path: Path, *, symbol: str = "MNQH6", day: dt.date,
                  records: int = 1_000_000, seed: int = 0, start_price: float | None = None,
                  instrument_id: int = 42_000_001, publisher_id: int = 1,
                  progress: Callable[[int], None] | None = None,
                  informed: float = 0.0, informed_jump: str = "aligned",
                  flow: str = "depth") -> SynthStats:
    """Write one synthetic CME MBO day for ``symbol`` to ``path`` (DBN; zstd if ``.zst``).

    Parameters
    ----------
    path : Path
        Output file. ``*.zst`` is zstd-compressed. Written to a temporary file beside it
        and renamed at the end, so a reader never sees a half-written day.
    symbol : str
        Outright contract (``MNQH6``) or ticker; its tick comes from the product table.
    day : datetime.date
        UTC trading date (Mon-Fri). The file covers ``day`` 00:00-24:00 UTC like
        Databento's GLBX day files; activity follows CME Globex hours.
    records : int
        Exact number of records in the file, snapshot included (>= 1000).
    seed : int
        Same seed and arguments give a byte-identical file.
    start_price : float, optional
        Price at the start of the day; defaults to :func:`default_start_price`.
    instrument_id, publisher_id : int
        Written on every record; ``instrument_id`` is also the metadata mapping target.
    progress : callable, optional
        Called with the number of records written after each chunk.
    informed : float
        Planted signal, default 0 (off: the unplanted stream, byte for byte). About this share
        of the event groups lies in an informed episode: for ``INFORMED_EPISODE`` groups an
        informed trader pulls orders 1-10 ticks beyond the touch on the side price is about
        to move into, or adds 1-10 ticks behind the touch on the other side, then the fair
        value jumps ``INFORMED_JUMP`` ticks that way and the ordinary flow follows. Nothing
        at the touch changes ahead of the jump. Deterministic with the seed. Used to check
        that ``vpbatch evaluate`` finds a signal that is there (see
        :mod:`vpbatch.synth.informed`).
    informed_jump : {"aligned", "random", "none"}
        ``aligned`` (default) is the planted signal above. ``random`` is its placebo control:
        the same episodes and informed activity (the same generator draws), but each jump's
        direction is an independent fair coin, so the activity says nothing about the move
        that follows. ``none`` keeps the activity and drops the jumps.
    flow : {"depth", "touch"}
        How the ordinary flow follows the latent fair value. ``depth`` (default, the stream
        as it always was): add and cancel weights lean towards it and the wrong side's touch
        is pulled or re-quoted behind, so the book beyond the touch carries some of the next
        move on every day. ``touch``: the ordinary adds, cancels and modifies are the same on
        both sides whatever the fair value; it acts only through joins at the touch on its
        side, pulls of the wrong side's touch and the aggressor's side, so an unplanted day
        carries nothing about the next move beyond the touch (the null for placebo tests);
        ``informed`` episodes plant their signal at depth as before.

    Returns
    -------
    SynthStats
        Counts, time span, size and elapsed time of the written file.

    Raises
    ------
    ConfigError
        Invalid argument, or a day on which CME does not trade (weekends).
    OutputError
        The file cannot be written.
    """
    started = time.perf_counter()
    path = Path(path)
    _check_arguments(day, records, seed, instrument_id, publisher_id, informed, informed_jump,
                     flow)
    d = start_day(symbol, day, records, seed, start_price, instrument_id, publisher_id,
                  informed, informed_jump, flow)
    snap = d.snapshot
    levels = tuple(len(np.unique(snap["price"][snap["side"] == s])) for s in (SIDE_BID, SIDE_ASK))
    header = metadata(d.product.symbol, d.product.dataset, day, instrument_id)
    out = write_day(path, header, snap, records,
                    lambda buf, limit: run(d.sim, buf, d.h, d.hcum, limit),
                    instrument_id, publisher_id, progress)
    if out.records != records:  # pragma: no cover - the kernel spends the exact budget
        raise RuntimeError(f"synth wrote {out.records} records, expected {records}")
    action_counts = {chr(c): int(out.counts[c]) for c in np.flatnonzero(out.counts)}
    return SynthStats(path=path, symbol=d.product.symbol, instrument_id=instrument_id,
                      records=out.records, snapshot_records=len(snap),
                      action_counts=action_counts, first_ts_event=out.first_ts_event,
                      last_ts_event=out.last_ts_event, bytes=path.stat().st_size,
                      seconds=time.perf_counter() - started,
                      snapshot_levels=(int(levels[0]), int(levels[1])))


def synth_to_lake(lake: Path, symbol: str, day: dt.date, **kw: Any) -> Path:
    """Write the synthetic day where ``vpbatch build`` looks for it; returns the file path.

    ``lake/raw/source=databento/product_type=…/symbol={ROOT}/table=market_by_order_dbn/``
    ``glbx-mdp3-YYYYMMDD.mbo.dbn.zst``; keyword arguments go to :func:`synth_session`.
    """
    product = resolve_product(symbol)
    path = raw_dir(Path(lake), product) / raw_file_name(product.dataset, day)
    synth_session(path, symbol=symbol, day=day, **kw)
    return path
