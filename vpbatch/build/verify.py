"""``vpbatch verify``: SPEC §12 invariants and the manifest, checked in DuckDB on the Parquet.

Each selected partition (one build of one ``product_type/symbol/dt``) gets these checks; ``K``,
``band``, ``sample`` and the bucket come from its ``_MANIFEST.json``. A check reports the
number of violations and the first one (lowest ``event_id``) as an example.

=================  ==========================================================================
check              what is verified
=================  ==========================================================================
``manifest``       every table of the build has ``_MANIFEST.json`` and ``_SUCCESS``, the
                   ``_SUCCESS`` build digest equals the manifest's (without timings), and the
                   manifest has the parameters verify needs (``K``, ``band``, ``sample``,
                   bucket).
``files``          each ``part-0.parquet`` has the manifest's size and sha256.
``row_counts``     Parquet row counts equal the manifest's; ``vp_grid`` rows == (2K+1) x
                   ``vp_snapshot`` rows.
``event_order``    ``vp_snapshot``: ``event_id`` strictly increasing and ``ts_event``
                   non-decreasing in file order; ``vp_grid``: ``(event_id, k)`` strictly
                   increasing in file order; ``mbp``: ``event_id`` strictly increasing.
``cardinality``    (1) every snapshot ``event_id`` has exactly 2K+1 grid rows, and no grid row
                   belongs to an ``event_id`` without a snapshot.
``completeness``   (2) per ``event_id`` the ``k`` values are exactly ``-K..K``, once each.
``finite``         (3) every float of ``vp_grid`` is finite and non-null; ``spot_price``,
                   ``regime_score``, ``regime_intensity`` too; best prices and ``mid_price``
                   are null or finite.
``continuity``     (4) for consecutive states ``P -> S`` (by ``event_id``), a cell of ``S``
                   whose absolute bucket was in ``P``'s window and whose
                   ``last_event_id <= P.event_id`` has exactly ``P``'s stored values: every
                   float except ``pressure_now``/``vacuum_now``, plus ``last_event_id`` and
                   ``last_ts`` (depths are exempt). Band-reset exemption: the cell is in the
                   fresh state (``last_event_id == 0``, ``last_ts == 0``, every stored float 0)
                   and at least one record lies between ``P`` and ``S``
                   (``S.event_id - P.event_id > 1``; spot can only have left the band and come
                   back through an intermediate record, because a cell in both windows is within
                   ``K <= band`` of both spots).
``event_update``   (5) ``sample == 'event'`` only (otherwise reported as not applicable):
                   state ``event_id``s are consecutive (every record emits), and, when the
                   build has ``mbp`` (which names each A/C/M/R/T record's action and price):
                   a non-snapshot ``A``/``M`` with a defined price, side ``B``/``A`` and size
                   > 0 touches its bucket, so if that bucket is in the window its cell has
                   ``last_event_id == event_id``; an ``R``, ``T`` or ``F_SNAPSHOT`` record
                   touches nothing, so no cell has ``last_event_id == event_id``. (``C``, ``F``
                   and ``N`` records cannot be judged from the output alone.)
``depth``          (6) ``rest_depth == bid_depth + ask_depth`` (computed so in lean files,
                   stored in first-wave ones), both ``>= 0``.
``book``           (6, "equals the book", only with ``mbp``) each state agrees with the last
                   ``mbp`` row at or before its ``event_id``: best bid/ask price and size ==
                   level 0, and each listed level's size equals (tick buckets) or is at most
                   (multi-tick buckets) the grid's depth on that side in that bucket.
``prices``         ``price == spot_price + k * bucket`` (relative 1e-9).
``provenance``     ``0 <= last_event_id <= event_id``, ``last_ts <= ts_event`` and a never
                   touched cell (``last_event_id == 0``) has ``last_ts == 0``.
``snapshot``       each snapshot row is self-consistent: a best price is null exactly when its
                   size is 0, ``mid_price`` = (bid + ask) / 2 and null when a side is empty,
                   ``crossed`` == (bid >= ask), ``book_valid`` implies both sides,
                   ``|regime_score| <= 1``, ``regime_intensity >= 0``, volumes >= 0,
                   ``n_records >= 1`` and ``n_records == event_id - previous event_id``.
=================  ==========================================================================
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow.parquet as pq

from vpbatch.book.dtypes import F_SNAPSHOT, GRID_FLOAT_FIELDS
from vpbatch.errors import ConfigError, InputError, OutputError, VerifyError
from vpbatch.products import resolve_product
from vpbatch.sql import CREATE_VIEW_SQL, grid_parameters, grid_select, new_connection
from vpbatch.store.files import file_sha256
from vpbatch.store.lake import (
    GOLD_TABLES,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    PART_FILE,
    SUCCESS_FILE,
    gold_folder,
    parse_date,
)
from vpbatch.store.partitions import build_digest, list_partitions, read_manifest, read_success

#: Every check, in report order.
CHECKS: Final = ("manifest", "files", "row_counts", "event_order", "cardinality",
                 "completeness", "finite", "continuity", "event_update", "depth", "book",
                 "prices", "provenance", "snapshot")

#: Stored (frozen while untouched) float columns of a grid cell.
STORED_FLOATS: Final = tuple(f for f in GRID_FLOAT_FIELDS
                             if f not in ("pressure_now", "vacuum_now"))

# --- SQL --------------------------------------------------------------------------------------
# Views over one partition's files; the file lists are bound with SET VARIABLE.

SET_FILES_SQL: Final = "SET VARIABLE {var} = $files"
READ_SQL: Final = "SELECT * FROM read_parquet(getvariable('{var}'), file_row_number = true)"
VIEW_SQL: Final = "CREATE OR REPLACE TEMP VIEW {name} AS " + READ_SQL

_BUCKET_OF_PRICE: Final = "CAST(round({col} * 1e9 / $bucket) AS BIGINT)"
#: SPEC §5 ``b(p) = floor(p / B + 1/2)`` in fixed point: ``floor((2p + B) / 2B)``.
_BUCKET_OF_LEVEL: Final = ("CAST(floor(CAST(2 * CAST(round({col} * 1e9) AS BIGINT) + $bucket "
                           "AS DOUBLE) / (2 * $bucket)) AS BIGINT)")

ROWS_SQL: Final = "SELECT count(*) FROM {name}"

SNAPSHOT_ORDER_SQL: Final = """
SELECT count(*), arg_min(format('vp_snapshot row {}: event_id {} ts_event {} after event_id {} '
                                 'ts_event {}', file_row_number, event_id, epoch_ns(ts_event),
                                 prev_id, prev_ts), file_row_number)
FROM (SELECT file_row_number, event_id, ts_event,
             lag(event_id) OVER (ORDER BY file_row_number) AS prev_id,
             epoch_ns(lag(ts_event) OVER (ORDER BY file_row_number)) AS prev_ts
      FROM v_snap)
WHERE event_id <= prev_id OR epoch_ns(ts_event) < prev_ts
"""

GRID_ORDER_SQL: Final = """
SELECT count(*), arg_min(format('vp_grid row {}: (event_id {}, k {}) after ({}, {})',
                                 file_row_number, event_id, k, prev_id, prev_k), file_row_number)
FROM (SELECT file_row_number, event_id, k,
             lag(event_id) OVER (ORDER BY file_row_number) AS prev_id,
             lag(k) OVER (ORDER BY file_row_number) AS prev_k
      FROM v_grid)
WHERE event_id < prev_id OR (event_id = prev_id AND k <= prev_k)
"""

MBP_ORDER_SQL: Final = """
SELECT count(*), arg_min(format('mbp row {}: event_id {} after {}', file_row_number, event_id,
                                 prev_id), file_row_number)
FROM (SELECT file_row_number, event_id,
             lag(event_id) OVER (ORDER BY file_row_number) AS prev_id FROM v_mbp)
WHERE event_id <= prev_id
"""

CARDINALITY_SQL: Final = """
WITH counts AS (SELECT event_id, count(*) AS n FROM v_grid GROUP BY event_id),
bad AS (
    SELECT coalesce(s.event_id, c.event_id) AS event_id, coalesce(c.n, 0) AS n,
           s.event_id IS NULL AS orphan
    FROM v_snap s FULL OUTER JOIN counts c ON s.event_id = c.event_id
    WHERE s.event_id IS NULL OR coalesce(c.n, 0) <> $rows)
SELECT count(*), arg_min(CASE WHEN orphan
                              THEN format('event_id={}: {} grid rows but no snapshot row',
                                          event_id, n)
                              ELSE format('event_id={}: {} grid rows, expected {}',
                                          event_id, n, $rows) END, event_id)
FROM bad
"""

COMPLETENESS_SQL: Final = """
SELECT count(*), arg_min(format('event_id={}: {} distinct k in [{}, {}] over {} rows, '
                                 'expected each of -{}..{} once', event_id, nk, lo, hi, n, $K,
                                 $K), event_id)
FROM (SELECT event_id, count(DISTINCT k) AS nk, min(k) AS lo, max(k) AS hi, count(*) AS n
      FROM v_grid GROUP BY event_id)
WHERE nk <> $rows OR lo <> -$K OR hi <> $K OR n <> nk
"""


def _not_finite(col: str) -> str:
    return f"NOT coalesce(isfinite({col}), false)"


_GRID_FLOATS: Final = ("price", *GRID_FLOAT_FIELDS)
FINITE_GRID_SQL: Final = (
    "SELECT count(*), arg_min(format('event_id={} k={}: {}', event_id, k, concat_ws(', ', "
    + ", ".join(f"CASE WHEN {_not_finite(c)} THEN '{c}=' || coalesce(CAST({c} AS VARCHAR), "
                f"'NULL') END" for c in _GRID_FLOATS)
    + ")), event_id) FROM v_grid WHERE "
    + " OR ".join(_not_finite(c) for c in _GRID_FLOATS)
)
_SNAP_REQUIRED: Final = ("spot_price", "regime_score", "regime_intensity")
_SNAP_OPTIONAL: Final = ("best_bid_price", "best_ask_price", "mid_price")
_SNAP_BAD: Final = tuple(_not_finite(c) for c in _SNAP_REQUIRED) + tuple(
    f"({c} IS NOT NULL AND NOT isfinite({c}))" for c in _SNAP_OPTIONAL)
FINITE_SNAPSHOT_SQL: Final = (
    "SELECT count(*), arg_min(format('vp_snapshot event_id={}: {}', event_id, concat_ws(', ', "
    + ", ".join(f"CASE WHEN {cond} THEN '{c}=' || coalesce(CAST({c} AS VARCHAR), 'NULL') END"
                for c, cond in zip(_SNAP_REQUIRED + _SNAP_OPTIONAL, _SNAP_BAD, strict=True))
    + ")), event_id) FROM v_snap WHERE " + " OR ".join(_SNAP_BAD)
)

_STORED: Final = (*STORED_FLOATS, "last_event_id", "last_ts")
CONTINUITY_SQL: Final = (
    "WITH s AS (SELECT event_id, lag(event_id) OVER (ORDER BY event_id) AS prev_id FROM v_snap),"
    " g AS (SELECT g.event_id, g.k, s.prev_id, "
    + _BUCKET_OF_PRICE.format(col="g.price") + " AS b, g.last_event_id, "
    "epoch_ns(g.last_ts) AS last_ts, " + ", ".join(f"g.{c}" for c in STORED_FLOATS)
    + " FROM v_grid g JOIN s ON g.event_id = s.event_id),"
    " w AS (SELECT *, lag(event_id) OVER win AS p_event_id, "
    + ", ".join(f"lag({c}) OVER win AS p_{c}" for c in _STORED)
    + " FROM g WINDOW win AS (PARTITION BY b ORDER BY event_id))"
    " SELECT count(*), arg_min(format('event_id={} k={}: {} changed since event_id={} although "
    "last_event_id={}', event_id, k, concat_ws(', ', "
    + ", ".join(f"CASE WHEN {c} IS DISTINCT FROM p_{c} THEN '{c} ' || CAST(p_{c} AS VARCHAR) "
                f"|| ' -> ' || CAST({c} AS VARCHAR) END" for c in _STORED)
    + "), prev_id, last_event_id), event_id) FROM w"
    " WHERE p_event_id = prev_id AND last_event_id <= prev_id AND ("
    + " OR ".join(f"{c} IS DISTINCT FROM p_{c}" for c in _STORED)
    + ") AND NOT (event_id - prev_id > 1 AND last_event_id = 0 AND last_ts = 0 AND "
    + " AND ".join(f"{c} = 0" for c in STORED_FLOATS) + ")"
)

CONSECUTIVE_SQL: Final = """
SELECT count(*), arg_min(format('event_id={} follows event_id={} (sample=event emits every '
                                 'record)', event_id, prev_id), event_id)
FROM (SELECT event_id, lag(event_id) OVER (ORDER BY event_id) AS prev_id FROM v_snap)
WHERE event_id - prev_id <> 1
"""

TOUCH_EXPECTED_SQL: Final = (
    "WITH rec AS (SELECT event_id, action, price, "
    + _BUCKET_OF_LEVEL.format(col="price") + " AS rb FROM v_mbp"
    f" WHERE action IN ('A', 'M') AND (flags & {F_SNAPSHOT}) = 0 AND price IS NOT NULL"
    " AND size > 0 AND side IN ('B', 'A')),"
    " g AS (SELECT event_id, k, last_event_id, " + _BUCKET_OF_PRICE.format(col="price")
    + " AS b FROM v_grid)"
    " SELECT count(*), arg_min(format('event_id={}: record {} at {} touches k={} but that cell "
    "has last_event_id={}', rec.event_id, rec.action, rec.price, g.k, g.last_event_id), "
    "rec.event_id)"
    " FROM rec JOIN g ON g.event_id = rec.event_id AND g.b = rec.rb"
    " WHERE g.last_event_id <> rec.event_id"
)

NO_TOUCH_SQL: Final = (
    "WITH rec AS (SELECT event_id, action, flags FROM v_mbp"
    f" WHERE action IN ('R', 'T') OR (flags & {F_SNAPSHOT}) <> 0),"
    " fresh AS (SELECT event_id, count(*) AS n, min(k) AS k FROM v_grid"
    " WHERE last_event_id = event_id GROUP BY event_id)"
    " SELECT count(*), arg_min(format('event_id={}: record {} (flags {}) touches nothing but {} "
    "cell(s) have last_event_id={} (first k={})', event_id, action, flags, n, event_id, k), "
    "event_id)"
    " FROM rec JOIN fresh USING (event_id)"
)

DEPTH_SQL: Final = """
SELECT count(*), arg_min(format('event_id={} k={}: bid_depth {} + ask_depth {} vs rest_depth {}',
                                 event_id, k, bid_depth, ask_depth, rest_depth), event_id)
FROM v_grid
WHERE NOT coalesce(bid_depth >= 0 AND ask_depth >= 0 AND rest_depth = bid_depth + ask_depth,
                   false)
"""


def _px_eq(a: str, b: str) -> str:
    return (f"(({a} IS NULL AND {b} IS NULL) OR "
            f"coalesce(abs({a} - {b}) <= 1e-9 * greatest(1.0, abs({a})), false))")


TOP_VS_MBP_SQL: Final = (
    "WITH st AS (SELECT event_id, best_bid_price, best_ask_price, best_bid_size, best_ask_size"
    " FROM v_snap),"
    " m AS (SELECT event_id AS m_event_id, bid_px_00, ask_px_00, bid_sz_00, ask_sz_00"
    " FROM v_mbp)"
    " SELECT count(*), arg_min(format('event_id={}: best bid {} x {} / ask {} x {} but mbp "
    "event_id={} level 0 is {} x {} / {} x {}', event_id, best_bid_price, best_bid_size, "
    "best_ask_price, best_ask_size, m_event_id, bid_px_00, bid_sz_00, ask_px_00, ask_sz_00), "
    "event_id)"
    " FROM st ASOF JOIN m ON st.event_id >= m.m_event_id"
    " WHERE NOT (" + _px_eq("best_bid_price", "bid_px_00") + " AND "
    + _px_eq("best_ask_price", "ask_px_00")
    + " AND best_bid_size = bid_sz_00 AND best_ask_size = ask_sz_00)"
)


def levels_vs_grid_sql(levels: int) -> str:
    """SQL comparing ``levels`` mbp levels per side with the grid's depth (check ``book``)."""
    def cols(prefix: str) -> str:
        return ", ".join(f"{prefix}_{i:02d}" for i in range(levels))

    return (
        "WITH m AS (SELECT event_id AS m_event_id, "
        f"[{cols('bid_px')}] AS bpx, [{cols('bid_sz')}] AS bsz, "
        f"[{cols('ask_px')}] AS apx, [{cols('ask_sz')}] AS asz FROM v_mbp),"
        " lv AS (SELECT st.event_id, m_event_id, unnest(bpx) AS bp, unnest(bsz) AS bs,"
        " unnest(apx) AS ap, unnest(asz) AS az"
        " FROM (SELECT event_id FROM v_snap) st ASOF JOIN m ON st.event_id >= m.m_event_id),"
        " levels AS (SELECT event_id, m_event_id, 'bid' AS side, bp AS px, bs AS sz FROM lv"
        " WHERE bp IS NOT NULL UNION ALL SELECT event_id, m_event_id, 'ask', ap, az FROM lv"
        " WHERE ap IS NOT NULL),"
        " lb AS (SELECT *, " + _BUCKET_OF_LEVEL.format(col="px") + " AS b FROM levels),"
        " g AS (SELECT event_id, k, bid_depth, ask_depth, "
        + _BUCKET_OF_PRICE.format(col="price") + " AS b FROM v_grid),"
        " j AS (SELECT lb.*, g.k, CASE lb.side WHEN 'bid' THEN g.bid_depth ELSE g.ask_depth END"
        " AS depth FROM lb JOIN g ON g.event_id = lb.event_id AND g.b = lb.b)"
        " SELECT count(*), arg_min(format('event_id={} k={}: {} depth {} but mbp event_id={} has "
        "{} at {}', event_id, k, side, depth, m_event_id, sz, px), event_id) FROM j"
        " WHERE CASE WHEN $exact THEN depth <> sz ELSE depth < sz END"
    )


PRICES_SQL: Final = """
SELECT count(*), arg_min(format('event_id={} k={}: price {} but spot_price {} + k * {} = {}',
                                 g.event_id, g.k, g.price, s.spot_price, $bucket_size,
                                 s.spot_price + g.k * $bucket_size), g.event_id)
FROM v_grid g JOIN v_snap s ON g.event_id = s.event_id
WHERE NOT coalesce(abs(g.price - (s.spot_price + g.k * $bucket_size))
                   <= 1e-9 * greatest(1.0, abs(g.price)), false)
"""

PROVENANCE_SQL: Final = """
SELECT count(*), arg_min(format('event_id={} k={}: last_event_id {} last_ts {} (state ts_event {})',
                                 g.event_id, g.k, g.last_event_id, epoch_ns(g.last_ts),
                                 epoch_ns(s.ts_event)), g.event_id)
FROM v_grid g JOIN v_snap s ON g.event_id = s.event_id
WHERE g.last_event_id < 0 OR g.last_event_id > g.event_id OR g.last_ts > s.ts_event
   OR (g.last_event_id = 0 AND epoch_ns(g.last_ts) <> 0)
"""

SNAPSHOT_SQL: Final = """
SELECT count(*), arg_min(format('event_id={}: {}', event_id, reason), event_id)
FROM (SELECT event_id, concat_ws(', ',
    CASE WHEN (best_bid_price IS NULL) <> (best_bid_size = 0) OR best_bid_size < 0
         THEN format('best bid {} x {}', best_bid_price, best_bid_size) END,
    CASE WHEN (best_ask_price IS NULL) <> (best_ask_size = 0) OR best_ask_size < 0
         THEN format('best ask {} x {}', best_ask_price, best_ask_size) END,
    CASE WHEN (mid_price IS NULL) <> (best_bid_price IS NULL OR best_ask_price IS NULL)
           OR NOT coalesce(abs(mid_price - (best_bid_price + best_ask_price) / 2)
                           <= 1e-9 * greatest(1.0, abs(mid_price)), true)
         THEN format('mid_price {} for bid {} ask {}', mid_price, best_bid_price,
                     best_ask_price) END,
    CASE WHEN crossed <> coalesce(best_bid_price >= best_ask_price, false)
         THEN format('crossed={} for bid {} ask {}', crossed, best_bid_price, best_ask_price) END,
    CASE WHEN book_valid AND (best_bid_price IS NULL OR best_ask_price IS NULL)
         THEN 'book_valid with an empty side' END,
    CASE WHEN NOT coalesce(abs(regime_score) <= 1 + 1e-9, false)
         THEN format('regime_score {}', regime_score) END,
    CASE WHEN NOT coalesce(regime_intensity >= 0, false)
         THEN format('regime_intensity {}', regime_intensity) END,
    CASE WHEN buy_volume < 0 OR sell_volume < 0
         THEN format('volumes {} / {}', buy_volume, sell_volume) END,
    CASE WHEN n_records < 1 OR (prev_id IS NOT NULL AND n_records <> event_id - prev_id)
         THEN format('n_records {} since event_id {}', n_records, prev_id) END
    ) AS reason
    FROM (SELECT *, lag(event_id) OVER (ORDER BY event_id) AS prev_id FROM v_snap))
WHERE reason <> ''
"""


# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One check of one partition."""

    partition: str
    name: str
    passed: bool
    violations: int
    example: str = ""


@dataclass
class VerifyReport:
    """Every check of every verified partition."""

    partitions: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def failed_checks(self) -> set[str]:
        """Names of the checks that failed (any partition)."""
        return {r.name for r in self.failures}

    def to_rows(self) -> list[dict[str, Any]]:
        return [{"partition": r.partition, "check": r.name,
                 "status": "ok" if r.passed else "FAIL", "violations": r.violations,
                 "example": r.example} for r in self.results]

    def format(self) -> str:
        """A plain-text table, one line per check."""
        rows = [("partition", "check", "status", "violations", "example")]
        rows += [(r.partition, r.name, "ok" if r.passed else "FAIL", str(r.violations),
                  r.example) for r in self.results]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]]).rstrip()
                 for row in rows]
        total = len(self.results)
        bad = len(self.failures)
        lines.append(f"{total - bad} of {total} checks passed in {len(self.partitions)} "
                     f"partition(s)")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`~vpbatch.errors.VerifyError` naming the failed checks, if any."""
        if self.failures:
            names = sorted({f"{r.partition}:{r.name}" for r in self.failures})
            raise VerifyError(f"{len(self.failures)} of {len(self.results)} checks failed: "
                              f"{', '.join(names)}")


# --- selection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    product_type: str
    symbol: str
    dt: str

    @property
    def label(self) -> str:
        return f"{self.product_type}/{self.symbol}/{self.dt}"

    def folder(self, lake: Path, table: str) -> Path:
        return gold_folder(lake, table, self.product_type, self.symbol, self.dt)


def _all_keys(lake: Path) -> list[_Key]:
    """Every partition of any table, complete or not (completeness is one of the checks)."""
    keys = {_Key(p.product_type, p.symbol, p.dt) for table in GOLD_TABLES
            for p in list_partitions(lake, table, complete_only=False)}
    return sorted(keys, key=lambda k: (k.product_type, k.symbol, k.dt))


def select_partitions(lake: Path, symbol: str | None = None,
                      day: dt.date | str | None = None, all: bool = False) -> list[str]:
    """Labels (``product_type/symbol/dt``) of the partitions :func:`verify` would check."""
    return [k.label for k in _select(lake, symbol, day, all)]


def _select(lake: Path, symbol: str | None, day: dt.date | str | None, all: bool) -> list[_Key]:
    if not all and symbol is None and day is None:
        raise ConfigError("verify: give --symbol and/or --dt, or --all")
    keys = _all_keys(lake)
    wanted = keys
    what = []
    if symbol is not None:
        product = resolve_product(symbol)
        wanted = [k for k in wanted
                  if k.product_type == product.product_type and k.symbol == product.symbol]
        what.append(f"symbol={product.symbol}")
    if day is not None:
        iso = day.isoformat() if isinstance(day, dt.date) else parse_date(day).isoformat()
        wanted = [k for k in wanted if k.dt == iso]
        what.append(f"dt={iso}")
    if not wanted:
        have = ", ".join(f"{k.symbol}/{k.dt}" for k in keys[:10]) or "none"
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        wanted_text = f"for {' '.join(what)}" if what else "in the lake"
        raise InputError(f"{Path(lake) / 'gold'}: no partition {wanted_text} "
                         f"(have: {have}{more})")
    return wanted


# --- checks -----------------------------------------------------------------------------------


class _Partition:
    """The facts of one partition that the checks share."""

    def __init__(self, lake: Path, key: _Key) -> None:
        self.lake = lake
        self.key = key
        self.label = key.label
        self.results: list[CheckResult] = []
        self.manifest: dict[str, Any] = {}
        self.tables: list[str] = []
        self.K = 0
        self.band = 0
        self.sample = ""
        self.bucket = 0
        self.tick = 0

    def add(self, name: str, violations: int, example: str = "") -> None:
        self.results.append(CheckResult(self.label, name, violations == 0, int(violations),
                                        example if violations else ""))

    def part(self, table: str) -> Path:
        return self.key.folder(self.lake, table) / PART_FILE

    # -- manifest, files and counts (Python) ----------------------------------------------------

    def check_manifest(self) -> bool:
        problems: list[str] = []
        try:
            self.manifest = read_manifest(self.key.folder(self.lake, "vp_snapshot"))
        except OutputError as exc:
            self.add("manifest", 1, str(exc))
            return False
        m = self.manifest
        if m.get("manifest_version") != MANIFEST_VERSION:
            problems.append(f"manifest_version {m.get('manifest_version')!r}, "
                            f"expected {MANIFEST_VERSION}")
        tables = m.get("tables")
        self.tables = [t for t in GOLD_TABLES if isinstance(tables, dict) and t in tables]
        for needed in ("vp_snapshot", "vp_grid"):
            if needed not in self.tables:
                problems.append(f"manifest lists no {needed} table")
        try:
            self.K = int(m["config"]["K"])
            self.band = int(m["config"]["band"])
            self.sample = str(m["config"]["sample"])
            self.bucket = int(m["product"]["bucket"])
            self.tick = int(m["product"].get("tick", self.bucket))
            if self.K < 1 or self.bucket < 1:
                raise ValueError(f"K={self.K}, bucket={self.bucket}")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"manifest lacks config.K/band/sample or product.bucket ({exc})")
        digest = build_digest(m)
        for table in self.tables:
            folder = self.key.folder(self.lake, table)
            build = read_success(folder)
            if build is None:
                problems.append(f"{folder}: no {SUCCESS_FILE} (incomplete build)")
                continue
            if build != digest:
                problems.append(f"{folder / SUCCESS_FILE}: build {build[:12]} does not match "
                                f"the manifest ({digest[:12]})")
            if table != "vp_snapshot":
                try:
                    other = read_manifest(folder)
                except OutputError as exc:
                    problems.append(str(exc))
                    continue
                if build_digest(other) != digest:
                    problems.append(f"{folder / MANIFEST_FILE}: differs from the vp_snapshot "
                                    "manifest")
        for table in GOLD_TABLES:
            folder = self.key.folder(self.lake, table)
            if table not in self.tables and folder.exists():
                problems.append(f"{folder}: table not part of the build in the manifest")
        self.add("manifest", len(problems), problems[0] if problems else "")
        return not any("manifest lacks" in p or "lists no" in p for p in problems)

    def check_files(self) -> bool:
        problems: list[str] = []
        for table in self.tables:
            facts = self.manifest["tables"][table]
            path = self.part(table)
            if not path.is_file():
                problems.append(f"{path}: missing")
                continue
            size = path.stat().st_size
            if size != facts.get("bytes"):
                problems.append(f"{path}: {size} bytes, manifest says {facts.get('bytes')}")
            elif file_sha256(path) != facts.get("sha256"):
                problems.append(f"{path}: sha256 differs from the manifest")
        self.add("files", len(problems), problems[0] if problems else "")
        return all(self.part(t).is_file() for t in ("vp_snapshot", "vp_grid"))

    def check_row_counts(self) -> None:
        problems: list[str] = []
        rows: dict[str, int] = {}
        for table in self.tables:
            path = self.part(table)
            if not path.is_file():
                continue
            try:
                rows[table] = pq.read_metadata(path).num_rows
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: unreadable Parquet ({exc})")
                continue
            want = self.manifest["tables"][table].get("rows")
            if rows[table] != want:
                problems.append(f"{table}: {rows[table]} rows in Parquet, manifest says {want}")
        if "vp_snapshot" in rows and "vp_grid" in rows:
            expect = (2 * self.K + 1) * rows["vp_snapshot"]
            if rows["vp_grid"] != expect:
                problems.append(f"vp_grid: {rows['vp_grid']} rows, expected (2K+1) x "
                                f"{rows['vp_snapshot']} snapshots = {expect}")
        self.add("row_counts", len(problems), problems[0] if problems else "")

    # -- SQL checks ---------------------------------------------------------------------------

    def open(self) -> duckdb.DuckDBPyConnection:
        con = new_connection()
        for table, name in (("vp_snapshot", "v_snap"), ("vp_grid", "v_grid"), ("mbp", "v_mbp")):
            if table in self.tables and self.part(table).is_file():
                var = f"verify_{name}"
                con.execute(SET_FILES_SQL.format(var=var), {"files": [str(self.part(table))]})
                if table == "vp_grid":  # the view's columns, whatever the file layout
                    layout, params = grid_parameters(self.manifest)
                    select = grid_select(con, "verify_grid_params", layout, params,
                                         READ_SQL.format(var=var), extra=("file_row_number",))
                    con.execute(CREATE_VIEW_SQL.format(temp="TEMP ", name=name, select=select))
                else:
                    con.execute(VIEW_SQL.format(name=name, var=var))
        return con

    def params(self, sql: str) -> dict[str, Any]:
        values = {"K": self.K, "rows": 2 * self.K + 1, "bucket": self.bucket,
                  "bucket_size": self.bucket / 1e9,
                  "exact": self.tick == self.bucket}
        used = set(re.findall(r"\$([A-Za-z_]\w*)", sql))
        return {name: value for name, value in values.items() if name in used}

    def query(self, con: duckdb.DuckDBPyConnection, sqls: Sequence[str]) -> tuple[int, str]:
        total, example = 0, ""
        for sql in sqls:
            row = con.execute(sql, self.params(sql)).fetchone()
            n = int(row[0]) if row and row[0] is not None else 0
            if n and not example:
                example = str(row[1]) if row and row[1] is not None else ""
            total += n
        return total, example

    def run_sql_checks(self) -> None:
        con = self.open()
        has_mbp = "mbp" in self.tables and self.part("mbp").is_file()
        try:
            order = [SNAPSHOT_ORDER_SQL, GRID_ORDER_SQL] + ([MBP_ORDER_SQL] if has_mbp else [])
            self.add("event_order", *self.query(con, order))
            self.add("cardinality", *self.query(con, [CARDINALITY_SQL]))
            self.add("completeness", *self.query(con, [COMPLETENESS_SQL]))
            self.add("finite", *self.query(con, [FINITE_GRID_SQL, FINITE_SNAPSHOT_SQL]))
            self.add("continuity", *self.query(con, [CONTINUITY_SQL]))
            if self.sample == "event":
                update = [CONSECUTIVE_SQL] + ([TOUCH_EXPECTED_SQL, NO_TOUCH_SQL] if has_mbp
                                              else [])
                self.add("event_update", *self.query(con, update))
            else:
                self.results.append(CheckResult(self.label, "event_update", True, 0,
                                                f"not applicable (sample={self.sample})"))
            self.add("depth", *self.query(con, [DEPTH_SQL]))
            if has_mbp:
                levels = self._mbp_levels()
                book = [TOP_VS_MBP_SQL] + ([levels_vs_grid_sql(levels)] if levels else [])
                self.add("book", *self.query(con, book))
            else:
                self.results.append(CheckResult(self.label, "book", True, 0,
                                                "not applicable (no mbp table)"))
            self.add("prices", *self.query(con, [PRICES_SQL]))
            self.add("provenance", *self.query(con, [PROVENANCE_SQL]))
            self.add("snapshot", *self.query(con, [SNAPSHOT_SQL]))
        finally:
            con.close()

    def _mbp_levels(self) -> int:
        names = pq.read_schema(self.part("mbp")).names
        return sum(1 for name in names if name.startswith("bid_px_"))


def verify_partition(lake: Path, product_type: str, symbol: str, day: str) -> list[CheckResult]:
    """Run every check on one partition (see the module docstring)."""
    part = _Partition(Path(lake), _Key(product_type, symbol, day))
    if part.check_manifest():
        files_ok = part.check_files()
        part.check_row_counts()
        if files_ok:
            try:
                part.run_sql_checks()
            except duckdb.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                part.add("event_order", 1, f"DuckDB could not read the partition: {message}")
    return part.results


def verify(lake: Path, symbol: str | None = None, day: dt.date | str | None = None,
           all: bool = False) -> VerifyReport:
    """Check SPEC §12 invariants 1-6 and the manifests of the selected partitions.

    Parameters
    ----------
    lake : Path
        Lake root.
    symbol : str, optional
        Contract or ticker (``MNQH6``); with ``day`` one partition, alone every day.
    day : datetime.date or str, optional
        Trading day; alone, every symbol of that day.
    all : bool, default False
        Every partition in the lake.

    Returns
    -------
    VerifyReport
        One :class:`CheckResult` per check and partition; see :attr:`VerifyReport.passed`.

    Raises
    ------
    ConfigError
        When neither ``symbol``, ``day`` nor ``all`` is given.
    InputError
        When no partition matches.
    """
    keys = _select(Path(lake), symbol, day, all)
    report = VerifyReport(partitions=[k.label for k in keys])
    for key in keys:
        report.results.extend(verify_partition(Path(lake), key.product_type, key.symbol, key.dt))
    return report
