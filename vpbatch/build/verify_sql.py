"""The SQL of ``vpbatch verify`` (:mod:`vpbatch.build.verify`): one query per check.

Each query reads the views ``v_snap``, ``v_grid`` and ``v_mbp`` of one partition and returns the
number of violations and the first one (lowest ``event_id``) as text. Parameters (``$K``,
``$rows``, ``$bucket``, ...) are bound by the caller.
"""

from __future__ import annotations

from typing import Final

from vpbatch.book.dtypes import F_SNAPSHOT, GRID_FLOAT_FIELDS

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

#: Check (2) once ``GRID_ORDER_SQL`` found ``(event_id, k)`` strictly increasing: no ``k`` can
#: repeat within a state, so count, min and max decide it without ``count(DISTINCT k)`` (the
#: 5M-record day: 0.06 s against 0.9-1.3 s). A count above 0 hands over to
#: :data:`COMPLETENESS_SQL`, which names the first state.
COMPLETENESS_ORDERED_SQL: Final = """
SELECT count(*)
FROM (SELECT event_id, min(k) AS lo, max(k) AS hi, count(*) AS n FROM v_grid GROUP BY event_id)
WHERE n <> $rows OR lo <> -$K OR hi <> $K
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
#: Continuity's shared part: each state's previous ``event_id`` (``s``), and each grid cell with
#: its absolute bucket ``b`` and stored values (``g``).
_CELLS_AFTER_PREVIOUS: Final = (
    "WITH s AS (SELECT event_id, lag(event_id) OVER (ORDER BY event_id) AS prev_id FROM v_snap),"
    " g AS (SELECT g.event_id, g.k, s.prev_id, "
    + _BUCKET_OF_PRICE.format(col="g.price") + " AS b, g.last_event_id, "
    "epoch_ns(g.last_ts) AS last_ts, " + ", ".join(f"g.{c}" for c in STORED_FLOATS)
    + " FROM v_grid g JOIN s ON g.event_id = s.event_id),"
)
#: Lags over each bucket's cells in state order.
_BY_BUCKET: Final = " WINDOW win AS (PARTITION BY b ORDER BY event_id)"
#: The cell was in the previous state's window and nothing touched it since.
_CARRIED: Final = "p_event_id = prev_id AND last_event_id <= prev_id"
#: The band-reset exemption (see :mod:`vpbatch.build.verify`), on the current cell.
_NOT_RESET: Final = ("NOT (event_id - prev_id > 1 AND last_event_id = 0 AND last_ts = 0 AND "
                     + " AND ".join(f"{c} = 0" for c in STORED_FLOATS) + ")")

CONTINUITY_SQL: Final = (
    _CELLS_AFTER_PREVIOUS
    + " w AS (SELECT *, lag(event_id) OVER win AS p_event_id, "
    + ", ".join(f"lag({c}) OVER win AS p_{c}" for c in _STORED) + " FROM g" + _BY_BUCKET + ")"
    " SELECT count(*), arg_min(format('event_id={} k={}: {} changed since event_id={} although "
    "last_event_id={}', event_id, k, concat_ws(', ', "
    + ", ".join(f"CASE WHEN {c} IS DISTINCT FROM p_{c} THEN '{c} ' || CAST(p_{c} AS VARCHAR) "
                f"|| ' -> ' || CAST({c} AS VARCHAR) END" for c in _STORED)
    + "), prev_id, last_event_id), event_id) FROM w"
    " WHERE " + _CARRIED + " AND (" + " OR ".join(f"{c} IS DISTINCT FROM p_{c}" for c in _STORED)
    + ") AND " + _NOT_RESET
)

#: The continuity check's first pass (a passing build runs only this one): per cell, one hash of
#: its stored values instead of each value, so the window's sort carries a few columns, not 25
#: (the 5M-record day: 1.5 s and 0.6 GB against 3.5-4 s and 1.8 GB). It counts the cells whose
#: hash changed where :data:`CONTINUITY_SQL` compares the values (DuckDB hashes -0.0 as 0.0 and
#: every NaN alike, as that comparison treats them); a count above 0 hands the partition to
#: :data:`CONTINUITY_SQL`, which counts and names the violations exactly.
CONTINUITY_HASH_SQL: Final = (
    _CELLS_AFTER_PREVIOUS
    + " hashed AS (SELECT event_id, prev_id, b, last_event_id, hash(" + ", ".join(_STORED)
    + ") AS h, " + _NOT_RESET + " AS kept FROM g),"
    " w AS (SELECT *, lag(event_id) OVER win AS p_event_id, lag(h) OVER win AS p_h FROM hashed"
    + _BY_BUCKET + ")"
    " SELECT count(*) FROM w WHERE " + _CARRIED + " AND h <> p_h AND kept"
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
