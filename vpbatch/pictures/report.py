"""One-page, self-contained HTML summary of one built day (optional extra ``plot``).

Sections (each an HTML ``<section id=...>``):

``summary``
    Build parameters, input files, records, states, volumes, mid open/high/low/close
    (``_MANIFEST.json`` and ``vp_snapshot``).
``anomalies``
    The manifest's anomaly counts (cancels/fills of unknown orders, skipped records, ...).
``book``
    Share of states, and of time, with a valid book (``book_valid``) and with a crossed book.
``regimes``
    UP/DOWN/CHOP shares of states and of time and their episodes (runs of consecutive states
    with one regime): count, mean, median and longest duration. Time-weighted: a state's
    regime lasts until the next state's ``ts_event`` (the last state of the build counts 0).
``activity``
    Records per 5 minutes (America/New_York) with the mid price; the busiest half hour shaded.
``profiles``
    Mean ``pressure_now`` / ``vacuum_now`` and mean resting depth by distance from spot ``k``.
``heatmap``
    :mod:`vpbatch.pictures.plot`'s heatmap of the busiest half hour: the half-hour window
    (aligned on :00/:30) with the largest ``sum(n_records)``.

Every number is computed by DuckDB over the lake's views (SQL text in the ``*_SQL`` constants,
symbol and day bound as parameters); images are PNGs embedded as ``data:`` URIs, so the file
needs nothing else (no scripts, fonts or links).
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb
import numpy as np
import polars as pl

from vpbatch.clock import NEW_YORK, NS_PER_SECOND, format_et
from vpbatch.errors import ConfigError
from vpbatch.pictures.palette import NET_COLORS, REGIME_COLORS
from vpbatch.pictures.plot import (
    HOW_TO_READ,
    data_uri,
    figure_bytes,
    render_heatmap,
    require_matplotlib,
    time_formatter,
    time_label,
)
from vpbatch.pictures.plot_data import Session, load_heatmap, open_session
from vpbatch.sql import connect, execute
from vpbatch.store.files import save_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Length of the "most active" window shown as a heatmap.
BUSY_WINDOW_NS: Final = 30 * 60 * NS_PER_SECOND
#: Bars of the activity chart.
ACTIVITY_BIN_NS: Final = 5 * 60 * NS_PER_SECOND
#: Regimes in display order.
REGIMES: Final = ("UP", "DOWN", "CHOP")
#: Picture sizes (pixels) inside the report.
HEATMAP_SIZE: Final = (1400, 800)
CHART_SIZE: Final = (1200, 380)


#: Per-day totals from ``vp_snapshot``; durations run to the next state (last state: 0).
SUMMARY_SQL: Final = """
WITH s AS (
    SELECT event_id, ts_event, book_valid, crossed, n_records, buy_volume, sell_volume,
           mid_price,
           coalesce(epoch_ns(lead(ts_event) OVER (ORDER BY event_id)) - epoch_ns(ts_event), 0)
               AS dur_ns
    FROM vp_snapshot
    WHERE symbol = $symbol AND dt = $dt
)
SELECT count(*) AS states,
       epoch_ns(min(ts_event)) AS first_ns,
       epoch_ns(max(ts_event)) AS last_ns,
       sum(n_records)::BIGINT AS records,
       sum(buy_volume)::BIGINT AS buy_volume,
       sum(sell_volume)::BIGINT AS sell_volume,
       avg(book_valid::INTEGER) AS valid_states,
       coalesce(sum(dur_ns) FILTER (WHERE book_valid), 0) / nullif(sum(dur_ns), 0)
           AS valid_time,
       avg(crossed::INTEGER) AS crossed_states,
       coalesce(sum(dur_ns) FILTER (WHERE crossed), 0) / nullif(sum(dur_ns), 0)
           AS crossed_time,
       first(mid_price ORDER BY event_id) FILTER (WHERE mid_price IS NOT NULL) AS mid_open,
       max(mid_price) AS mid_high,
       min(mid_price) AS mid_low,
       last(mid_price ORDER BY event_id) FILTER (WHERE mid_price IS NOT NULL) AS mid_close
FROM s
"""

#: Regime shares and episodes, time-weighted (a state's regime lasts until the next state).
REGIME_SQL: Final = """
WITH s AS (
    SELECT event_id, CAST(regime AS VARCHAR) AS regime,
           coalesce(epoch_ns(lead(ts_event) OVER w) - epoch_ns(ts_event), 0) AS dur_ns,
           CASE WHEN CAST(regime AS VARCHAR) IS DISTINCT FROM CAST(lag(regime) OVER w AS VARCHAR)
                THEN 1 ELSE 0 END AS starts
    FROM vp_snapshot
    WHERE symbol = $symbol AND dt = $dt
    WINDOW w AS (ORDER BY event_id)
),
runs AS (
    SELECT regime, dur_ns, sum(starts) OVER (ORDER BY event_id) AS run FROM s
),
episodes AS (
    SELECT run, any_value(regime) AS regime, count(*) AS states, sum(dur_ns) AS dur_ns
    FROM runs
    GROUP BY run
)
SELECT regime,
       sum(states)::BIGINT AS states,
       sum(states) / sum(sum(states)) OVER () AS state_share,
       sum(dur_ns)::BIGINT AS time_ns,
       sum(dur_ns) / nullif(sum(sum(dur_ns)) OVER (), 0) AS time_share,
       count(*) AS episodes,
       avg(dur_ns) AS mean_ns,
       median(dur_ns) AS median_ns,
       max(dur_ns) AS max_ns
FROM episodes
GROUP BY regime
"""

#: Mean forces and depth by distance from spot.
PROFILE_SQL: Final = """
SELECT k,
       avg(pressure_now) AS pressure,
       avg(vacuum_now) AS vacuum,
       avg(bid_depth) AS bid_depth,
       avg(ask_depth) AS ask_depth
FROM vp_grid
WHERE symbol = $symbol AND dt = $dt
GROUP BY k
ORDER BY k
"""

#: Records, states and the last mid per ``$bin_ns`` of event time (epoch-aligned).
ACTIVITY_SQL: Final = """
SELECT (epoch_ns(ts_event) // $bin_ns) * $bin_ns AS bin_ns,
       count(*) AS states,
       sum(n_records)::BIGINT AS records,
       last(mid_price ORDER BY event_id) FILTER (WHERE mid_price IS NOT NULL) AS mid
FROM vp_snapshot
WHERE symbol = $symbol AND dt = $dt
GROUP BY 1
ORDER BY 1
"""

#: The ``$window_ns`` window (epoch-aligned, so :00/:30 for half hours) with the most records.
BUSIEST_SQL: Final = """
SELECT (epoch_ns(ts_event) // $window_ns) * $window_ns AS start_ns,
       sum(n_records)::BIGINT AS records,
       count(*) AS states
FROM vp_snapshot
WHERE symbol = $symbol AND dt = $dt
GROUP BY 1
ORDER BY records DESC, start_ns
LIMIT 1
"""


# --------------------------------------------------------------------------------------------
# Formatting


def format_duration(ns: float | None) -> str:
    """``3 h 05 min``, ``12 min 04 s``, ``4.25 s``, ``310 ms``; ``–`` for None."""
    if ns is None or not math.isfinite(ns):
        return "–"
    seconds = ns / NS_PER_SECOND
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1000:.3g} ms"


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _price(value: float | None, tick: float) -> str:
    """A price with the decimals of half a tick (mids can sit between ticks)."""
    if value is None or not math.isfinite(value):
        return "–"
    digits = next((d for d in range(10) if abs(round(tick / 2 * 10**d) - tick / 2 * 10**d)
                   < 1e-6), 9)
    return f"{value:,.{digits}f}"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw``."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="{data_uri(png)}">'


def _bar(share: float | None, color: str) -> str:
    width = 0.0 if share is None or not math.isfinite(share) else max(0.0, min(1.0, share)) * 100
    return (f'<span class="bar"><span style="width:{width:.1f}%;background:{color}"></span>'
            f"</span> {_pct(share)}")


# --------------------------------------------------------------------------------------------
# Queries


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    return execute(con, sql, params).row(0, named=True)


def regime_table(con: duckdb.DuckDBPyConnection, session: Session) -> pl.DataFrame:
    """:data:`REGIME_SQL` for the session, one row per regime in :data:`REGIMES` order."""
    df = execute(con, REGIME_SQL, session.params)
    present = set(df["regime"].to_list())
    missing = [r for r in REGIMES if r not in present]
    if missing:
        df = pl.concat([df, pl.DataFrame({"regime": missing})], how="diagonal_relaxed")
    order = {r: i for i, r in enumerate(REGIMES)}
    return df.sort(pl.col("regime").replace_strict(order, default=len(order)))


def busiest_window(con: duckdb.DuckDBPyConnection, session: Session) -> tuple[int, int, int]:
    """``(start_ns, end_ns, records)`` of the busiest half hour, cut to the build's span."""
    row = _one(con, BUSIEST_SQL, {**session.params, "window_ns": BUSY_WINDOW_NS})
    start = int(row["start_ns"])
    return (max(start, session.first_ns), min(start + BUSY_WINDOW_NS, session.last_ns + 1),
            int(row["records"]))


# --------------------------------------------------------------------------------------------
# Charts


def _chart(width: int, height: int, dpi: int = 100) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")


def profile_chart(profile: pl.DataFrame, session: Session) -> bytes:
    """Mean ``pressure_now``/``vacuum_now`` and mean depth by ``k`` (PNG)."""
    fig = _chart(*CHART_SIZE)
    ax, ax_depth = fig.subplots(1, 2, width_ratios=[1.6, 1])
    k = profile["k"].to_numpy()
    ax.plot(k, profile["pressure"].to_numpy(), color=NET_COLORS[3], lw=1.8,
            label="mean pressure_now")
    ax.plot(k, profile["vacuum"].to_numpy(), color=NET_COLORS[1], lw=1.8,
            label="mean vacuum_now")
    for a in (ax, ax_depth):
        a.axvline(0, color="#555555", lw=0.8, ls=":")
        a.set_xlabel(f"k (buckets from spot; bucket = {session.bucket:g})")
        a.grid(alpha=0.25)
    ax.set_ylabel("force (mean over states)")
    ax.set_title("Forces by distance from spot", loc="left", fontsize=10)
    ax.text(0.02, 0.97, "below spot: pressure = support,\nvacuum = path down",
            transform=ax.transAxes, va="top", fontsize=8, color="#555555")
    ax.text(0.98, 0.97, "above spot: pressure = resistance,\nvacuum = path up",
            transform=ax.transAxes, va="top", ha="right", fontsize=8, color="#555555")
    ax.legend(loc="center right", fontsize=8, frameon=False)
    ax_depth.bar(k, profile["bid_depth"].to_numpy(), width=1.0, color="#4a9f5c",
                 label="bid depth")
    ax_depth.bar(k, profile["ask_depth"].to_numpy(), width=1.0, color="#c9544d",
                 bottom=profile["bid_depth"].to_numpy(), label="ask depth")
    ax_depth.set_ylabel("mean resting size")
    ax_depth.set_title("Resting depth by distance from spot", loc="left", fontsize=10)
    ax_depth.legend(fontsize=8, frameon=False)
    return figure_bytes(fig, "png")


def activity_chart(activity: pl.DataFrame, session: Session, busy: tuple[int, int]) -> bytes:
    """Records per 5 minutes (bars, ET) and the mid price, busiest half hour shaded (PNG)."""
    from matplotlib import dates as mdates

    fig = _chart(*CHART_SIZE)
    ax = fig.subplots()
    starts = activity["bin_ns"].to_numpy().astype(np.int64)
    x = np.asarray(mdates.date2num(starts.astype("datetime64[ns]")))
    width = ACTIVITY_BIN_NS / NS_PER_SECOND / 86400
    ax.bar(x, activity["records"].to_numpy(), width=width * 0.9, align="edge",
           color="#8796ab", label="records per 5 min", zorder=2)
    lo, hi = (float(v) for v in mdates.date2num(np.array(busy, dtype="datetime64[ns]")))
    ax.axvspan(lo, hi, color="#f2c14e", alpha=0.35, lw=0, label="busiest half hour", zorder=1)
    ax.set_ylabel("records")
    twin = ax.twinx()
    twin.plot(x + width / 2, activity["mid"].cast(float).to_numpy(), color="#1d1f24", lw=1.2,
              label="mid (last per 5 min)")
    twin.set_ylabel("mid price")
    locator = mdates.AutoDateLocator(tz=NEW_YORK, minticks=4, maxticks=14)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(time_formatter(locator))
    ax.set_xlabel(time_label(int(starts.min()), int(starts.max()) + ACTIVITY_BIN_NS))
    ax.set_title(f"{session.product.symbol} {session.day.isoformat()}: activity",
                 loc="left", fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, ncols=3)
    return figure_bytes(fig, "png")


# --------------------------------------------------------------------------------------------
# The page

_CSS: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d1f24; background: #f6f7f9; }
main { max-width: 1440px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 1.5rem; margin: 0 0 2px 0; }
h2 { font-size: 1.1rem; margin: 0 0 10px 0; }
p.sub { color: #555; margin: 0 0 18px 0; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 14px 18px;
          margin: 0 0 16px 0; }
.cols { display: flex; gap: 16px; flex-wrap: wrap; }
.cols > section { flex: 1 1 420px; }
table { border-collapse: collapse; font-size: 0.88rem; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #eef0f2;
         font-variant-numeric: tabular-nums; }
thead th { border-bottom: 1px solid #c9ced6; }
table.kv th { font-weight: 500; color: #555; }
.bar { display: inline-block; width: 120px; height: 10px; background: #eef0f2;
       vertical-align: middle; }
.bar > span { display: block; height: 100%; }
.bad { color: #b3261e; font-weight: 600; }
.ok { color: #2e7d32; }
img { max-width: 100%; height: auto; }
p.note { font-size: 0.85rem; color: #444; max-width: 75rem; }
"""


def _summary(session: Session, summary: dict[str, Any]) -> str:
    m = session.manifest
    params, config = m.get("parameters", {}), m.get("config", {})
    inputs = ", ".join(f"{i.get('name')} ({int(i.get('size', 0)):,} B)"
                       for i in m.get("inputs", []))
    window = (f"{params.get('start_time')} – {params.get('end_time') or 'end of file'} "
              f"{params.get('timezone', '')}" if params.get("start_time") else "whole file")
    sample = (f"{config.get('sample_ns', 0) / 1e6:g} ms" if config.get("sample") == "time"
              else config.get("sample"))
    rows = session.manifest.get("tables", {})
    total_volume = (summary["buy_volume"] or 0) + (summary["sell_volume"] or 0)
    left = [
        ("product", f"{session.product.product_type} · root {session.product.root}"),
        ("input", inputs or "–"),
        ("instrument / publisher", f"{params.get('instrument_id')} / "
                                   f"{params.get('publisher_id')}"),
        ("emitted window", window),
        ("states cover", session.span_text()),
        ("engine", f"{m.get('engine', {}).get('name')} {m.get('engine', {}).get('version')}"),
        ("sample · K · band · bucket", f"{sample} · {config.get('K')} · {config.get('band')} · "
                                       f"{session.bucket:g}"),
        ("build time", format_duration(m.get("timings", {}).get("total", 0) * NS_PER_SECOND)),
    ]
    right = [
        ("records fed to the engine", _num(params.get("records"))),
        ("records in emitted states", _num(summary["records"])),
        ("states (vp_snapshot rows)", _num(summary["states"])),
        ("vp_grid rows", _num(rows.get("vp_grid", {}).get("rows"))),
        ("mbp rows", _num(rows["mbp"]["rows"]) if "mbp" in rows else "not built"),
        ("aggressor volume buy / sell",
         f"{_num(summary['buy_volume'])} / {_num(summary['sell_volume'])} "
         f"(total {_num(total_volume)})"),
        ("mid open / high / low / close", " / ".join(
            _price(summary[c], session.tick)
            for c in ("mid_open", "mid_high", "mid_low", "mid_close"))),
    ]
    return (f'<section id="summary"><h2>Summary</h2><div class="cols">'
            f"<div>{_pairs(left)}</div><div>{_pairs(right)}</div></div></section>")


def _anomalies(session: Session) -> str:
    counts = session.manifest.get("anomalies", {})
    total = sum(int(v) for v in counts.values() if isinstance(v, int | float))
    verdict = ('<p class="ok">No anomalies.</p>' if total == 0 else
               f'<p class="bad">{total:,} anomalous records (counted, skipped where they would '
               f"corrupt the book; see SPEC §3).</p>")
    rows = [(name.replace("_", " "), _num(value)) for name, value in sorted(counts.items())]
    return (f'<section id="anomalies"><h2>Anomalies</h2>{verdict}'
            f"{_table(['anomaly', 'records'], rows)}</section>")


def _book(summary: dict[str, Any]) -> str:
    rows = [
        ("book valid (consistent, both sides)", _bar(summary["valid_states"], "#2e9e44"),
         _bar(summary["valid_time"], "#2e9e44")),
        ("book crossed (bid >= ask)", _bar(summary["crossed_states"], "#d1332e"),
         _bar(summary["crossed_time"], "#d1332e")),
    ]
    return (f'<section id="book"><h2>Book validity</h2>'
            f"{_table(['', 'share of states', 'share of time'], rows, raw=True)}"
            f'<p class="note">Time-weighted: a state counts until the next state.</p>'
            f"</section>")


def _regimes(regimes: pl.DataFrame) -> str:
    rows = []
    for r in regimes.iter_rows(named=True):
        color = REGIME_COLORS.get(r["regime"], "#999999")
        rows.append((
            f'<span style="color:{color};font-weight:600">{_e(r["regime"])}</span>',
            _e(_num(r.get("states") or 0)), _bar(r.get("state_share") or 0.0, color),
            _e(format_duration(r.get("time_ns") or 0)), _bar(r.get("time_share") or 0.0, color),
            _e(_num(r.get("episodes") or 0)), _e(format_duration(r.get("mean_ns"))),
            _e(format_duration(r.get("median_ns"))), _e(format_duration(r.get("max_ns"))),
        ))
    header = ["regime", "states", "share of states", "time", "share of time", "episodes",
              "mean episode", "median episode", "longest episode"]
    return (f'<section id="regimes"><h2>Regimes</h2>{_table(header, rows, raw=True)}'
            f'<p class="note">A state\'s regime lasts until the next state\'s ts_event; an '
            f"episode is a run of consecutive states with the same regime.</p></section>")


def build_report(lake: Path | str, symbol: str, day: dt.date) -> str:
    """The report page of one built day as an HTML string (see module docstring)."""
    require_matplotlib()
    con = connect(lake)
    try:
        session = open_session(con, lake, symbol, day)
        summary = _one(con, SUMMARY_SQL, session.params)
        regimes = regime_table(con, session)
        profile = execute(con, PROFILE_SQL, session.params)
        activity = execute(con, ACTIVITY_SQL, {**session.params, "bin_ns": ACTIVITY_BIN_NS})
        busy_lo, busy_hi, busy_records = busiest_window(con, session)
        width, height = HEATMAP_SIZE
        data = load_heatmap(con, session, busy_lo, busy_hi, int(width * 0.8))
    finally:
        con.close()
    heat = render_heatmap(data, ".png", width=width, height=height)
    busy_text = (f"{format_et(busy_lo, day)} – {format_et(busy_hi, day)} ET, "
                 f"{busy_records:,} records")
    title = f"vpbatch report · {session.product.symbol} · {day.isoformat()}"
    parts = [
        f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(session.product.product_type)} · states cover '
        f"{_e(session.span_text())} · {session.states:,} states</p>",
        _summary(session, summary),
        f'<div class="cols">{_anomalies(session)}{_book(summary)}</div>',
        _regimes(regimes),
        f'<section id="activity"><h2>Activity</h2>'
        f"{_img(activity_chart(activity, session, (busy_lo, busy_hi)), 'activity chart')}"
        f"</section>",
        f'<section id="profiles"><h2>Pressure and vacuum by distance from spot</h2>'
        f"{_img(profile_chart(profile, session), 'pressure/vacuum profiles')}"
        f'<p class="note">Means over all {session.states:,} states of the _now values, '
        f"k &lt; 0 below spot, k &gt; 0 above it.</p></section>",
        f'<section id="heatmap"><h2>Busiest half hour: {_e(busy_text)}</h2>'
        f"{_img(heat, 'vacuum/pressure heatmap of the busiest half hour')}"
        f'<p class="note">{_e(HOW_TO_READ)}</p></section>',
        "</main>\n</body>\n</html>\n",
    ]
    return "\n".join(parts)


def write_report(lake: Path | str, symbol: str, day: dt.date, out: Path) -> Path:
    """Write the one-page HTML report of one built day.

    Parameters
    ----------
    lake : Path or str
        Lake root holding a complete build of ``symbol``/``day``.
    symbol : str
        Contract or ticker as built.
    day : datetime.date
        The build's ``dt``.
    out : Path
        Output ``.html`` file (parents are created; written atomically).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        No complete build of ``symbol``/``day``.
    ConfigError
        ``out`` is not ``.html``/``.htm``, or matplotlib is not installed.
    OutputError
        ``out`` cannot be written.
    """
    if Path(out).suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"-o: '{out}' must end in .html")
    page = build_report(lake, symbol, day)
    save_output(Path(out), page.encode())
    return Path(out)
