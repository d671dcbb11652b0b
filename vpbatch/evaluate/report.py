"""Output of ``vpbatch evaluate``: the text table, the JSON document and the HTML page.

The HTML page (optional extra ``plot``) is self-contained: PNG figures embedded as ``data:``
URIs, no scripts. Figures: hit rate and information coefficient by horizon for each
predictor, with their bootstrap intervals, and the calibration of ``regime_score``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vpbatch.evaluate.evaluation import Evaluation
from vpbatch.evaluate.stats import METRICS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Column titles of the text table.
METRIC_TITLES: Final = {"coverage": "coverage", "hit_rate": "hit rate",
                        "balanced_accuracy": "bal. accuracy", "mcc": "MCC", "ic": "IC"}


def evaluation_to_dict(ev: Evaluation) -> dict[str, Any]:
    """The evaluation as plain JSON-able data (what ``--json`` prints)."""
    return dataclasses.asdict(ev)


def to_json(ev: Evaluation) -> str:
    """Pretty JSON (NaN never appears: missing values are null)."""
    return json.dumps(evaluation_to_dict(ev), indent=2, allow_nan=False)


def _cell(row: dict[str, Any] | None, fmt: str = ".3f") -> str:
    if row is None:
        return "-"
    lo, hi = row["ci_low"], row["ci_high"]
    ci = f"[{lo:{fmt}},{hi:{fmt}}]" if lo is not None and hi is not None else "[-]"
    return f"{row['estimate']:{fmt}} {ci}"


def _index(ev: Evaluation) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["predictor"], r["target"], r["metric"]): r for r in ev.results}


def format_table(ev: Evaluation) -> str:
    """Predictor x target x metric with intervals, preceded by the sample description."""
    pct = round(ev.bootstrap["confidence"] * 100)
    st = ev.states
    lines = [
        f"{ev.symbol} {', '.join(ev.days)}: {st['total']:,} states, "
        f"{st['excluded_invalid_book']:,} excluded (invalid book), "
        f"{st['excluded_crossed_book']:,} excluded (crossed book), {st['test']:,} tested",
        f"split: {ev.split}",
        f"intervals: {pct}% {ev.bootstrap['method']}, {ev.bootstrap['resamples']:,} resamples, "
        f"seed {ev.bootstrap['seed']}",
        "",
        f"{'target':<10} {'classes':>7} {'tested':>9} {'missing':>8} {'down':>8} {'flat':>8} "
        f"{'up':>8} {'block s':>8} {'blocks':>7}",
    ]
    for t in ev.targets:
        flag = "  SMALL SAMPLE" if t["small_sample"] else ""
        lines.append(f"{t['target']:<10} {t['classes']:>7} {t['test_states']:>9,} "
                     f"{t['missing']:>8,} {t['down']:>8,} {t['flat']:>8,} {t['up']:>8,} "
                     f"{t['block_s']:>8.2f} {t['blocks']:>7,}{flag}")
    lines.append("SMALL SAMPLE: fewer than 2,000 test states or 30 blocks; no interval below "
                 "10 blocks.")
    lines += ["", "chance: balanced accuracy 0.5 (event targets, over calls) or 1/3 (clock "
              "targets, no call = flat); MCC 0; IC 0", ""]
    idx = _index(ev)
    width = 21
    head = f"{'predictor':<16} {'target':<10} " + " ".join(
        f"{METRIC_TITLES[m]:<{width}}" for m in METRICS)
    lines += [head, "-" * len(head)]
    for t in ev.targets:
        for p in ev.predictors:
            cells = " ".join(f"{_cell(idx.get((p, t['target'], m))):<{width}}" for m in METRICS)
            lines.append(f"{p:<16} {t['target']:<10} {cells}".rstrip())
    lines += format_differences(ev)
    return "\n".join(lines)


def _signed(row: dict[str, Any] | None) -> str:
    return _cell(row, "+.3f")


def _difference_pairs(ev: Evaluation) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["a"], r["b"]) for r in ev.differences))


def format_differences(ev: Evaluation) -> list[str]:
    """The paired differences as text lines (none when there are none)."""
    if not ev.differences:
        return []
    pct = round(ev.bootstrap["confidence"] * 100)
    idx = {(r["a"], r["b"], r["target"], r["metric"]): r for r in ev.differences}
    lines = ["", f"differences a - b ({pct}% paired moving-block intervals: both resampled with "
             "the same blocks)"]
    for a, b in _difference_pairs(ev):
        lines += [f"{a} - {b}", f"{'target':<10} {'MCC':<24} {'IC':<24}"]
        for t in ev.targets:
            cells = [_signed(idx.get((a, b, t["target"], m))) for m in ("mcc", "ic")]
            lines.append(f"{t['target']:<10} {cells[0]:<24} {cells[1]:<24}".rstrip())
    return lines


# ------------------------------------------------------------------------------------------
# HTML


def _horizon_label(name: str) -> str:
    if name.startswith("event_"):
        return f"{name.split('_')[1]} chg"
    return name.split("_")[1]


def _metric_figure(ev: Evaluation, metric: str, title: str, chance: dict[str, float]) -> Figure:
    """One panel per predictor: ``metric`` by target horizon with its interval."""
    from matplotlib.figure import Figure

    idx = _index(ev)
    preds = [p for p in ev.predictors
             if any((p, t["target"], metric) in idx for t in ev.targets)]
    cols = 4
    rows = max(1, math.ceil(len(preds) / cols))
    fig = Figure(figsize=(14, 2.6 * rows + 0.6), dpi=100, layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    targets = [t["target"] for t in ev.targets]
    x = list(range(len(targets)))
    for i, ax in enumerate(axes.flat):
        if i >= len(preds):
            ax.set_visible(False)
            continue
        p = preds[i]
        for j, tname in enumerate(targets):
            r = idx.get((p, tname, metric))
            if r is None:
                continue
            colour = "#1f77b4" if tname.startswith("event") else "#d62728"
            lo, hi = r["ci_low"], r["ci_high"]
            if lo is not None and hi is not None:
                ax.plot([j, j], [lo, hi], color=colour, lw=2, alpha=0.6)
            ax.plot([j], [r["estimate"]], "o", color=colour, ms=5)
            if tname in chance:
                ax.plot([j - 0.35, j + 0.35], [chance[tname]] * 2, color="#555", lw=1, ls=":")
        ax.axhline(0.0 if metric == "ic" else math.nan, color="#555", lw=0.8, ls=":")
        ax.set_title(p, fontsize=10)
        ax.set_xticks(x, [_horizon_label(t) for t in targets], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return fig


def _calibration_figure(ev: Evaluation) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    colours = {"event_1": "#1f77b4", "event_2": "#2ca02c", "event_5": "#9467bd"}
    for k, (tname, colour) in enumerate(colours.items()):
        rows = [r for r in ev.calibration if r["target"] == tname]
        if not rows:
            continue
        mids = [(r["bin_low"] + r["bin_high"]) / 2 + (k - 1) * 0.02 for r in rows]
        ax.errorbar(mids, [r["up_share"] for r in rows],
                    yerr=[[r["up_share"] - r["ci_low"] for r in rows],
                          [r["ci_high"] - r["up_share"] for r in rows]],
                    fmt="o-", color=colour, ms=4, capsize=2, label=f"{tname} (mid after "
                    f"{tname.split('_')[1]} change{'s' if tname != 'event_1' else ''})")
    ax.axhline(0.5, color="#555", lw=0.8, ls=":")
    ax.plot([-1, 1], [0, 1], color="#aaa", lw=0.8, ls="--", label="score as probability")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("regime_score (bins of 0.2)")
    ax.set_ylabel("share of up moves (test part)")
    ax.set_title("Calibration of regime_score (Wilson 95% intervals)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


_STYLE: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d1f24; background: #fafafa; max-width: 1400px; }
h1 { font-size: 1.3rem; } h2 { font-size: 1.1rem; margin-top: 28px; }
table { border-collapse: collapse; font-size: 0.8rem; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
td.sig { background: #e3f1e3; } td.neg { background: #f6e1e1; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; background: white; }
p.note { max-width: 70rem; font-size: 0.9rem; color: #333; }
"""


def _chance(ev: Evaluation, metric: str) -> dict[str, float]:
    if metric == "balanced_accuracy":
        return {t["target"]: t["chance_balanced_accuracy"] for t in ev.targets}
    if metric in ("mcc", "ic"):
        return {t["target"]: 0.0 for t in ev.targets}
    return {}


def _results_table(ev: Evaluation) -> str:
    idx = _index(ev)
    head = "".join(f"<th>{html.escape(METRIC_TITLES[m])}</th>" for m in METRICS)
    out = [f"<table><tr><th class=l>predictor</th><th class=l>target</th>{head}</tr>"]
    for t in ev.targets:
        chance = _chance(ev, "balanced_accuracy")[t["target"]]
        for p in ev.predictors:
            cells = []
            for m in METRICS:
                r = idx.get((p, t["target"], m))
                cls = ""
                if r is not None and r["ci_low"] is not None and r["ci_high"] is not None:
                    ref = {"balanced_accuracy": chance, "mcc": 0.0, "ic": 0.0}.get(m)
                    if ref is not None and r["ci_low"] > ref:
                        cls = " class=sig"
                    elif ref is not None and r["ci_high"] < ref:
                        cls = " class=neg"
                cells.append(f"<td{cls}>{html.escape(_cell(r))}</td>")
            out.append(f"<tr><td class=l>{html.escape(p)}</td>"
                       f"<td class=l>{html.escape(t['target'])}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


def _targets_table(ev: Evaluation) -> str:
    keys = ("target", "classes", "test_states", "missing", "down", "flat", "up", "block_s",
            "blocks")
    rows = ["<table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "<th>sample</th></tr>"]
    for t in ev.targets:
        cells = "".join(f"<td>{html.escape(str(t[k]))}</td>" for k in keys)
        flag = "small" if t["small_sample"] else ""
        rows.append(f"<tr>{cells}<td>{flag}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _differences_html(ev: Evaluation) -> str:
    if not ev.differences:
        return ""
    pct = round(ev.bootstrap["confidence"] * 100)
    idx = {(r["a"], r["b"], r["target"], r["metric"]): r for r in ev.differences}
    out = [f"""<section id="differences"><h2>Differences</h2>
<p class=note>Does the vacuum/pressure field add to the level-1 book? Each row: a minus b per
target, with a {pct}% paired moving-block interval (both predictors resampled with the same
blocks). Green: the interval lies above 0 (a is better); red: below 0.</p>"""]
    for a, b in _difference_pairs(ev):
        out.append(f"<table><tr><th class=l>{html.escape(a)} - {html.escape(b)}</th>"
                   "<th>MCC</th><th>IC</th></tr>")
        for t in ev.targets:
            cells = []
            for m in ("mcc", "ic"):
                r = idx.get((a, b, t["target"], m))
                cls = ""
                if r is not None and r["ci_low"] is not None and r["ci_high"] is not None:
                    cls = " class=sig" if r["ci_low"] > 0 else (
                        " class=neg" if r["ci_high"] < 0 else "")
                cells.append(f"<td{cls}>{html.escape(_signed(r))}</td>")
            out.append(f"<tr><td class=l>{html.escape(t['target'])}</td>{''.join(cells)}</tr>")
        out.append("</table>")
    if ev.fits:
        keys = ("predictor", "target", "test_day", "train_states", "fit_states", "C",
                "field_scale", "lo", "hi")
        out.append("<p class=note>The fitted models (regularisation C, and for fit_vp+l1 the "
                   "field's scale s, chosen by time-ordered cross-validation inside each "
                   "training part; s = 0: the level-1 model; lo/hi: the call band).</p>"
                   "<table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>")
        for row in ev.fits:
            fit_cells = "".join(f"<td>{html.escape(_short(row.get(k)))}</td>" for k in keys)
            out.append(f"<tr>{fit_cells}</tr>")
        out.append("</table>")
    out.append("</section>")
    return "\n".join(out)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def build_html(ev: Evaluation) -> str:
    """The whole page as a string."""
    from vpbatch.pictures.plot import data_uri, figure_bytes, require_matplotlib

    require_matplotlib()
    pct = round(ev.bootstrap["confidence"] * 100)
    hit = _metric_figure(ev, "hit_rate", f"Hit rate of calls by horizon ({pct}% intervals; "
                         "blue = event time, red = clock time)", {})
    ic = _metric_figure(ev, "ic", f"Spearman information coefficient by horizon ({pct}% "
                        "intervals; dotted = 0)", _chance(ev, "ic"))
    ba = _metric_figure(ev, "balanced_accuracy", f"Balanced accuracy by horizon ({pct}% "
                        "intervals; dotted = chance)", _chance(ev, "balanced_accuracy"))
    cal = _calibration_figure(ev)
    st = ev.states
    title = f"vpbatch evaluate: {ev.symbol} {', '.join(ev.days)}"
    imgs = {name: data_uri(figure_bytes(fig, "png")) for name, fig in
            (("hit", hit), ("ic", ic), ("ba", ba), ("cal", cal))}
    small = [t["target"] for t in ev.targets if t["small_sample"]]
    warn = (f"<p class=note><b>Small sample</b> (fewer than 2,000 test states or 30 "
            f"bootstrap blocks; no interval below 10 blocks): "
            f"{html.escape(', '.join(small))}. Read those intervals as rough.</p>"
            if small else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<section id="sample"><h2>Sample</h2>
<p class=note>{st['total']:,} states; excluded: {st['excluded_invalid_book']:,} with an invalid
book, {st['excluded_crossed_book']:,} with a crossed book; {st['test']:,} states tested.
Split: {html.escape(ev.split)}. Intervals: {pct}% {html.escape(ev.bootstrap['method'])},
{ev.bootstrap['resamples']:,} resamples (seed {ev.bootstrap['seed']}).</p>
{warn}{_targets_table(ev)}</section>
<section id="hit-rate"><h2>Hit rate by horizon</h2><img alt="hit rate by horizon"
src="{imgs['hit']}"></section>
<section id="ic"><h2>Information coefficient by horizon</h2><img alt="IC by horizon"
src="{imgs['ic']}"></section>
<section id="balanced-accuracy"><h2>Balanced accuracy by horizon</h2>
<img alt="balanced accuracy by horizon" src="{imgs['ba']}"></section>
<section id="calibration"><h2>Calibration of regime_score</h2>
<p class=note>Share of up moves among test states in each regime_score bin, for the event-time
targets. A score that carries information rises from left to right.</p>
<img alt="calibration of regime_score" src="{imgs['cal']}"></section>
{_differences_html(ev)}
<section id="results"><h2>All results</h2>
<p class=note>Green: the interval lies above chance; red: below chance.</p>
{_results_table(ev)}</section>
</body></html>
"""


def write_html(ev: Evaluation, out: Path) -> Path:
    """Write the page atomically; returns the path."""
    from vpbatch.store.files import save_output

    save_output(Path(out), build_html(ev).encode("utf-8"))
    return Path(out)
