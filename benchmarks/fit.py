"""``python -m benchmarks.fit``: features, fits and ``evaluate --models`` on the benchmark day.

Uses the day of ``benchmarks.evaluate`` (the ``BENCH_RECORDS``-record MNQH6 day built
09:30-16:00 ET into ``.bench/lake-eval``; synthesized and built there when absent), then times,
in a fresh process with a warm numba cache, what ``vpbatch evaluate --models l1,vp,vp+l1``
does: read ``vp_snapshot``, compute the features, fit the three models walk-forward for the
seven targets (first half trains), and evaluate every predictor with 1,000 bootstrap
resamples and the paired differences. Then, separately, what ``vpbatch fit`` does on the whole
day. Appends one entry to BENCHMARKS.md.

``python -m benchmarks.fit step LAKE`` runs only the timed step and prints JSON.

``python -m benchmarks.fit evidence [DIR] [--field-scales 0,0.25,0.5,1]`` produces the evidence
of docs/fit.md (sections 1-5): it runs the documented ``vpbatch synth``, ``build``, ``evaluate``
and ``fit`` commands (lakes under ``DIR/lakes``, default ``/tmp/fitwork``; a lake or a JSON
document already there is reused), the shuffled-future and detached-field checks through the
Python API, and writes every table and count to ``DIR/s=<scales>,clip=<clip>/evidence.md``.
With ``--field-scales 1`` the ``vp+l1`` fits use no group penalty (the fit before it existed), for
the before/after comparison (``--clip inf``: no clipping of the standardised features, the fit
before it); with ``--cv-score brier`` the cross-validation of every model
scores its folds by the Brier score instead of the log-loss (an alternative, not the
default: docs/fit.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.evaluate import DAY, RECORDS, ROOT, SYMBOL, _run, bench_lake


def step(lake: str) -> dict[str, Any]:
    """Timed in-process, in the order ``evaluate --models`` runs them."""
    from vpbatch.evaluate.evaluation import (
        compute_predictors,
        compute_targets,
        evaluate_states,
        load_states,
        walk_forward_splits,
    )
    from vpbatch.evaluate.stats import Bootstrap
    from vpbatch.fit import fit_models
    from vpbatch.fit.features import feature_matrix
    from vpbatch.fit.train import Design
    from vpbatch.fit.walkforward import DIFFERENCES, fitted_predictors

    load = os.getloadavg()[0]
    marks = [time.perf_counter()]
    cpu0 = time.process_time()
    states = load_states(Path(lake), SYMBOL, DAY, DAY)
    marks.append(time.perf_counter())
    design = Design.of(feature_matrix(Path(lake), SYMBOL, states), inplace=True)
    marks.append(time.perf_counter())
    targets = compute_targets(states)
    _, splits = walk_forward_splits(states)
    fitted, fits = fitted_predictors(states, design, targets, splits, ("l1", "vp", "vp+l1"))
    marks.append(time.perf_counter())
    base = compute_predictors(states)
    ev = evaluate_states(states, symbol=SYMBOL, settings=Bootstrap(), targets=targets,
                         predictors=base[:-1] + fitted + base[-1:],
                         differences=[DIFFERENCES[0]])
    marks.append(time.perf_counter())
    cpu = time.process_time() - cpu0
    fit_start = time.perf_counter()
    file = fit_models(Path(lake), SYMBOL, DAY, DAY)
    fit_seconds = time.perf_counter() - fit_start
    read, features, fitting, evaluating = (b - a for a, b in itertools.pairwise(marks))
    return {"states": states.total, "usable": len(states), "tested": ev.states["test"],
            "read_seconds": read, "features_seconds": features, "fit_seconds": fitting,
            "evaluate_seconds": evaluating, "total_seconds": marks[-1] - marks[0],
            "cpu_seconds": cpu, "fits": len(fits), "results": len(ev.results),
            "differences": len(ev.differences), "fit_command_seconds": fit_seconds,
            "fit_command_models": len(file.models), "load_avg": load,
            "load_avg_after": os.getloadavg()[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main() -> None:
    from benchmarks.run import _commit, _machine

    lake = bench_lake()
    cmd = [sys.executable, "-m", "benchmarks.fit", "step", str(lake)]
    _run(*cmd)  # warm the numba caches (band pass, bootstrap)
    r = json.loads(_run(*cmd).strip().splitlines()[-1])
    text = "\n".join([
        f"## {dt.date.today().isoformat()} — commit {_commit()} — fitted models "
        "(`python -m benchmarks.fit`)",
        "",
        f"Machine: {_machine()}. Numba cache warm.",
        f"Input: the {RECORDS:,}-record synthetic MNQH6 day built 09:30-16:00 ET "
        f"({r['states']:,} states, {r['usable']:,} usable; {r['tested']:,} in the test half).",
        "",
        "| what | figure | peak RSS | command |",
        "|---|---|---|---|",
        f"| `evaluate --models l1,vp,vp+l1` (features, 3 models x 7 targets fitted on the "
        f"first half, 14 predictors x 7 targets x 5 metrics and the paired differences, 1,000 "
        f"resamples) | {r['total_seconds']:.1f} s: read vp_snapshot {r['read_seconds']:.1f} s, "
        f"features {r['features_seconds']:.1f} s, {r['fits']} fits {r['fit_seconds']:.1f} s, "
        f"evaluate {r['evaluate_seconds']:.1f} s ({r['cpu_seconds']:.1f} s CPU) | "
        f"{r['peak_rss_mb']:,.0f} MB | `python -m benchmarks.fit step {lake}` |",
        f"| `vpbatch fit` of the whole day ({r['fit_command_models']} models) | "
        f"{r['fit_command_seconds']:.1f} s | | same step |",
        "",
        f"Load average (1 min) when the step started: {r['load_avg']:.1f}, when it ended: "
        f"{r['load_avg_after']:.1f}, on {os.cpu_count()} cores.",
        "",
    ])
    print(text)
    with (ROOT / "BENCHMARKS.md").open("a") as fh:
        fh.write(text + "\n")


# ------------------------------------------------------------------------------------------
# The evidence of docs/fit.md

#: Synthetic days of sections 1-2: ``synth`` arguments per kind of day.
KINDS: Final = {"plain": (), "placebo": ("--informed", "0.3", "--informed-jump", "random"),
                "activity": ("--informed", "0.3", "--informed-jump", "none"),
                "planted": ("--informed", "0.3")}
#: The order flow of ``synth``: ``depth`` is the default stream (no ``--flow``).
FLOWS: Final = ("depth", "touch")
SEEDS: Final = (11, 12, 13)
TARGETS: Final = ("event_1", "event_2", "event_5", "clock_1s", "clock_5s", "clock_30s",
                  "clock_60s")
PAIR: Final = ("fit_vp+l1", "fit_l1")
#: Section 5: (name, symbol, day, file, extra build arguments, event sampling).
REAL: Final = (
    ("goog", "GOOG", "2024-04-03", "dbeq-basic-goog-20240403.mbo.dbn.zst", ("--publisher", "39"),
     False),
    ("mesh5", "MESH5", "2025-01-21", "glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst", (),
     False),
    ("mesh5-event", "MESH5", "2025-01-21", "glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst",
     (), True),
)
FIELD_SCALES_ENV: Final = "BENCH_FIELD_SCALES"
CV_SCORE_ENV: Final = "BENCH_CV_SCORE"
#: The fits' clipping of standardised features (``inf``: none, the fit before clipping).
CLIP_ENV: Final = "BENCH_FIT_CLIP"


def _scales(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _brier(model: Any, z: Any, y: Any) -> float:
    """Mean Brier score of a fitted classifier on ``(z, y)`` (the alternative CV score)."""
    import numpy as np

    p = model.predict_proba(z)
    onehot = (model.classes_[None, :] == y[:, None]).astype(float)
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _apply_scales(scales: str | None = None, cv_score: str | None = None) -> None:
    """The ``vp+l1`` fits' field scales and the CV score (arguments, else the environment)."""
    import vpbatch.fit.train as train

    scales = os.environ.get(FIELD_SCALES_ENV) if scales is None else scales
    cv_score = os.environ.get(CV_SCORE_ENV) if cv_score is None else cv_score
    if scales:
        train.FIELD_SCALES = _scales(scales)  # type: ignore[misc]
    if cv_score == "brier":
        train._log_loss = _brier  # type: ignore[assignment]
    if os.environ.get(CLIP_ENV):
        train.CLIP = float(os.environ[CLIP_ENV])  # type: ignore[misc]


def _vpbatch(*args: str, out: Path | None = None, scales: str | None = None,
             cv_score: str = "log_loss") -> str:
    """Run a ``vpbatch`` command (through :func:`_apply_scales` when ``scales`` is given)."""
    if scales is None:
        cmd = [sys.executable, "-m", "cli", *args]
    else:
        cmd = [sys.executable, "-m", "benchmarks.fit", "vpbatch", *args]
    env = {**os.environ, FIELD_SCALES_ENV: scales or "", CV_SCORE_ENV: cv_score}
    print("$", "vpbatch", " ".join(args), file=sys.stderr, flush=True)
    text = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                          env=env).stdout
    if out is not None:
        part = out.with_suffix(".part")
        part.write_text(text)
        part.rename(out)
    return text


def _built(lake: Path, days: int = 1) -> bool:
    """Whether ``lake`` holds complete builds of ``days`` days (a killed run is redone)."""
    return len(list((lake / "gold" / "vp_snapshot").rglob("_SUCCESS"))) >= days


def _evidence_days(lakes: Path, out: Path, scales: str, cv_score: str) -> None:
    day = DAY.isoformat()
    for flow in FLOWS:
        for kind, extra in KINDS.items():
            for seed in SEEDS:
                name = f"{flow}-{kind}-{seed}"
                lake = lakes / name
                if not _built(lake):
                    flow_args = ("--flow", "touch") if flow == "touch" else ()
                    _vpbatch("synth", "--symbol", SYMBOL, "--dt", day, "--records", "200000",
                             "--seed", str(seed), *extra, *flow_args, "--lake", str(lake),
                             "--quiet")
                    _vpbatch("build", "--symbol", SYMBOL, "--dt", day, "--lake", str(lake),
                             "--quiet")
                if not (out / f"{name}.json").exists():
                    _vpbatch("evaluate", "--symbol", SYMBOL, "--dt", day, "--lake", str(lake),
                             "--models", "l1,vp,vp+l1", "--json", "-q",
                             out=out / f"{name}.json", scales=scales, cv_score=cv_score)
    for kind, first_seed, extra in (("planted", 31, KINDS["planted"]), ("plain", 41, ())):
        lake = lakes / f"5days-{kind}"
        if not _built(lake, 5):
            for i in range(5):
                d = (dt.date(2026, 2, 2) + dt.timedelta(days=i)).isoformat()
                _vpbatch("synth", "--symbol", SYMBOL, "--dt", d, "--records", "200000",
                         "--seed", str(first_seed + i), *extra, "--lake", str(lake), "--quiet")
                _vpbatch("build", "--symbol", SYMBOL, "--dt", d, "--lake", str(lake), "--quiet")
        name = f"5days-{kind}"
        if not (out / f"{name}.json").exists():
            _vpbatch("evaluate", "--symbol", SYMBOL, "--start", "2026-02-02", "--end",
                     "2026-02-06", "--lake", str(lake), "--models", "l1,vp,vp+l1", "--json",
                     "-q", out=out / f"{name}.json", scales=scales, cv_score=cv_score)
        if not (out / f"{name}-saved.json").exists():
            model = out / f"{name}-model.json"
            _vpbatch("fit", "--symbol", SYMBOL, "--start", "2026-02-02", "--end", "2026-02-05",
                     "--lake", str(lake), "-o", str(model), "-q", out=out / f"{name}-fit.txt",
                     scales=scales, cv_score=cv_score)
            _vpbatch("evaluate", "--symbol", SYMBOL, "--dt", day, "--lake", str(lake),
                     "--model", str(model), "--json", "-q", out=out / f"{name}-saved.json",
                     scales=scales, cv_score=cv_score)
    for name, symbol, d, file, extra, event in REAL:
        lake = lakes / f"real-{name}"
        if not _built(lake):
            sample = ("--sample", "event") if event else ()
            _vpbatch("build", "--symbol", symbol, "--path", str(ROOT / "tests" / "data" / file),
                     *extra, *sample, "--lake", str(lake), "--quiet")
        if not (out / f"real-{name}.json").exists():
            _vpbatch("evaluate", "--symbol", symbol, "--dt", d, "--lake", str(lake), "--models",
                     "l1,vp,vp+l1", "--json", "-q", out=out / f"real-{name}.json", scales=scales,
                     cv_score=cv_score)


def _evidence_controls(lakes: Path, out: Path, scales: str, cv_score: str) -> None:
    """Shuffled future and detached field features on the planted days (default flow)."""
    path = out / "controls.json"
    if path.exists():
        return
    from statistics import NormalDist

    import numpy as np

    import vpbatch.fit.train as train
    from vpbatch.evaluate.evaluation import (
        Target,
        compute_targets,
        evaluate_states,
        load_states,
        walk_forward_splits,
    )
    from vpbatch.evaluate.stats import Bootstrap
    from vpbatch.fit import FEATURES
    from vpbatch.fit.features import VP_FEATURES, feature_matrix
    from vpbatch.fit.walkforward import fitted_predictors

    _apply_scales(scales, cv_score)
    doc: dict[str, Any] = {}
    for seed in SEEDS:
        lake = lakes / f"depth-planted-{seed}"
        states = load_states(lake, SYMBOL, DAY, DAY)
        x = feature_matrix(lake, SYMBOL, states)
        _, splits = walk_forward_splits(states)
        rng = np.random.default_rng(3)
        targets = [Target(t.name, t.three_class, t.horizon_ns, t.y[perm], t.change[perm],
                          t.end_ts)
                   for t in compute_targets(states)
                   for perm in [rng.permutation(t.y.size)]]
        fitted, _ = fitted_predictors(states, train.Design.of(x), targets, splits,
                                      ("l1", "vp", "vp+l1"))
        ev = evaluate_states(states, targets=targets, predictors=fitted, differences=[PAIR],
                             settings=Bootstrap())
        chance = {t["target"]: t["chance_balanced_accuracy"] for t in ev.targets}
        rows = [r for r in ev.results if r["metric"] in ("balanced_accuracy", "mcc", "ic")]
        rows += [{**d, "predictor": "difference"} for d in ev.differences]
        z = NormalDist().inv_cdf(1 - 0.05 / len(rows) / 2)
        for r in rows:
            r["reference"] = chance[r["target"]] if r["metric"] == "balanced_accuracy" else 0.0
            r["z"] = abs(r["estimate"] - r["reference"]) / max(
                (r["ci_high"] - r["ci_low"]) / 3.92, 1e-12)
        shuffled = {"estimates": len(rows), "z_bonferroni": z,
                    "inside": sum(r["ci_low"] <= r["reference"] <= r["ci_high"] for r in rows),
                    "outside_bonferroni": sum(r["z"] > z for r in rows),
                    "worst": max(rows, key=lambda r: r["z"])}
        xr = x.copy()
        cols = [FEATURES.index(f) for f in VP_FEATURES]
        xr[:, cols] = np.roll(xr[:, cols], len(states) // 2, axis=0)
        targets = compute_targets(states)
        fitted, _ = fitted_predictors(states, train.Design.of(xr), targets, splits,
                                      ("l1", "vp+l1"))
        ev = evaluate_states(states, targets=targets, predictors=fitted, differences=[PAIR],
                             settings=Bootstrap())
        doc[str(seed)] = {"shuffled": shuffled, "detached": ev.differences}
    path.write_text(json.dumps(doc, indent=1, default=float))


def _ci(r: dict[str, Any] | None) -> str:
    if r is None or r.get("estimate") is None:
        return "–"
    if r["ci_low"] is None:
        return f"{r['estimate']:+.3f}"
    text = f"{r['estimate']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
    return f"**{text}**" if r["ci_low"] > 0 or r["ci_high"] < 0 else text


def _above(r: dict[str, Any]) -> bool:
    return r["ci_low"] is not None and r["ci_low"] > 0


def _below(r: dict[str, Any]) -> bool:
    return r["ci_high"] is not None and r["ci_high"] < 0


class _Docs:
    """The evaluate documents of one run, by name."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.cache: dict[str, dict[str, Any]] = {}

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self.cache:
            self.cache[name] = json.loads((self.out / f"{name}.json").read_text())
        return self.cache[name]

    def diff(self, name: str, target: str, metric: str, pair: Sequence[str] = PAIR
             ) -> dict[str, Any] | None:
        for d in self[name]["differences"]:
            if (d["a"], d["b"], d["target"], d["metric"]) == (*pair, target, metric):
                return d
        return None

    def result(self, name: str, predictor: str, target: str, metric: str
               ) -> dict[str, Any] | None:
        for r in self[name]["results"]:
            if (r["predictor"], r["target"], r["metric"]) == (predictor, target, metric):
                return r
        return None


def _seeds_table(docs: _Docs, flow: str, kinds: Sequence[str]) -> list[str]:
    lines = ["| day | seed | states | event_2 MCC | event_2 IC | event_5 MCC | event_5 IC |",
             "|---|---|---|---|---|---|---|"]
    for kind in kinds:
        for seed in SEEDS:
            name = f"{flow}-{kind}-{seed}"
            cells = [_ci(docs.diff(name, t, m)) for t in ("event_2", "event_5")
                     for m in ("mcc", "ic")]
            lines.append(f"| {kind} | {seed} | {docs[name]['states']['evaluated']:,} | "
                         + " | ".join(cells) + " |")
    return lines


def _targets_table(docs: _Docs, name: str, predictors: Sequence[str],
                   pair: Sequence[str] = PAIR) -> list[str]:
    info = {t["target"]: t for t in docs[name]["targets"]}
    lines = ["| target | tested (blocks) | " + " | ".join(f"{p} MCC" for p in predictors)
             + " | vp+l1 − l1 MCC | vp+l1 − l1 IC |",
             "|---|---|" + "---|" * (len(predictors) + 2)]
    for t in TARGETS:
        i = info[t]
        small = " (small)" if i.get("small_sample") else ""
        lines.append(f"| {t} | {i['test_states']:,} ({i['blocks']}){small} | "
                     + " | ".join(_ci(docs.result(name, p, t, "mcc")) for p in predictors)
                     + f" | {_ci(docs.diff(name, t, 'mcc', pair))} | "
                     f"{_ci(docs.diff(name, t, 'ic', pair))} |")
    return lines


def _field_scales(docs: _Docs, name: str) -> dict[float, int]:
    """How often each field scale was chosen by the ``vp+l1`` fits of one document."""
    counts: dict[float, int] = {}
    for row in docs[name].get("fits", []):
        if row["predictor"] == "fit_vp+l1" and "field_scale" in row:
            counts[row["field_scale"]] = counts.get(row["field_scale"], 0) + 1
    return dict(sorted(counts.items()))


def _evidence_report(out: Path, scales: str) -> str:
    docs = _Docs(out)
    lines = [f"# Evidence of docs/fit.md, vp+l1 field scales {scales}", ""]
    add = lines.append
    # Counts per kind of day and flow, and the field scales the fits chose.
    add("| day | flow | above 0 | below 0 | above 0: direction (of 30) | above 0: whether "
        "(of 12) | below 0: direction | below 0: whether | vp+l1 fits by field scale |")
    add("|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        for flow in FLOWS:
            rows = [d for seed in SEEDS for d in docs[f"{flow}-{kind}-{seed}"]["differences"]
                    if (d["a"], d["b"]) == PAIR]
            whether = [d for d in rows if d["target"].startswith("clock") and d["metric"] == "mcc"]
            direction = [d for d in rows if d not in whether]
            chosen: dict[float, int] = {}
            for seed in SEEDS:
                for k, v in _field_scales(docs, f"{flow}-{kind}-{seed}").items():
                    chosen[k] = chosen.get(k, 0) + v
            add(f"| {kind} | {flow} | {sum(map(_above, rows))} | {sum(map(_below, rows))} | "
                f"{sum(map(_above, direction))} | {sum(map(_above, whether))} | "
                f"{sum(map(_below, direction))} | {sum(map(_below, whether))} | "
                + ", ".join(f"s={k:g}: {v}" for k, v in chosen.items()) + " |")
    add("")
    for flow in FLOWS:
        planted = [docs.diff(f"{flow}-planted-{s}", t, m) for s in SEEDS
                   for t in ("event_2", "event_5") for m in ("mcc", "ic")]
        controls = [docs.diff(f"{flow}-{k}-{s}", t, m) for k in ("plain", "placebo", "activity")
                    for s in SEEDS for t in ("event_2", "event_5") for m in ("mcc", "ic")]
        assert all(d is not None for d in planted + controls)
        est = [d["estimate"] for d in planted if d]
        cest = [d["estimate"] for d in controls if d]
        add(f"{flow} flow, event_2/event_5: planted estimates {min(est):+.3f} to "
            f"{max(est):+.3f}, lowest interval end "
            f"{min(d['ci_low'] for d in planted if d):+.3f}, "
            f"{sum(_above(d) for d in planted if d)} of {len(planted)} above 0; controls "
            f"{min(cest):+.3f} to {max(cest):+.3f}, highest interval end "
            f"{max(d['ci_high'] for d in controls if d):+.3f}, "
            f"{sum(_above(d) for d in controls if d)} above 0 and "
            f"{sum(_below(d) for d in controls if d)} below 0 of {len(controls)}.")
        add("")
        add(f"### {flow} flow: vp+l1 − l1 per seed")
        add("")
        lines += _seeds_table(docs, flow, tuple(KINDS))
        add("")
        for kind in ("plain", "activity", "placebo"):
            rows = [(s, d) for s in SEEDS for d in docs[f"{flow}-{kind}-{s}"]["differences"]
                    if (d["a"], d["b"]) == PAIR and (_above(d) or _below(d))]
            add(f"{flow} {kind}, intervals excluding 0: " + "; ".join(
                f"seed {s} {d['target']} {d['metric']} {_ci(d)}" for s, d in rows))
            add("")
    add("### Planted (default flow), seed 11, every target")
    add("")
    lines += _targets_table(docs, "depth-planted-11", ("fit_l1", "fit_vp", "fit_vp+l1"))
    add("")
    add("fit_vp against regime_score, IC at event_2 (planted, default flow): " + "; ".join(
        f"seed {s}: {_ci(docs.result(f'depth-planted-{s}', 'fit_vp', 'event_2', 'ic'))} against "
        f"{_ci(docs.result(f'depth-planted-{s}', 'regime_score', 'event_2', 'ic'))}"
        for s in SEEDS))
    add("")
    add("Plain, default flow, seed 13, clock_1s: MCC "
        f"{_ci(docs.diff('depth-plain-13', 'clock_1s', 'mcc'))}, IC "
        f"{_ci(docs.diff('depth-plain-13', 'clock_1s', 'ic'))}")
    add("")
    controls = json.loads((out / "controls.json").read_text())
    det = [d for seed in SEEDS for d in controls[str(seed)]["detached"]]
    add(f"Detached field (planted, default flow): {sum(map(_above, det))} of {len(det)} above 0, "
        f"{sum(map(_below, det))} below; lowest MCC "
        + " ".join(f"{d['target']} {_ci(d)}" for d in [min(
            (d for d in det if d["metric"] == m), key=lambda d: d["estimate"])
            for m in ("mcc", "ic")]))
    add("")
    sh = [controls[str(seed)]["shuffled"] for seed in SEEDS]
    n = sum(s["estimates"] for s in sh)
    add(f"Shuffled future: {n} estimates, {sum(s['outside_bonferroni'] for s in sh)} outside the "
        f"Bonferroni band (z = {sh[0]['z_bonferroni']:.2f}), {sum(s['inside'] for s in sh)} "
        f"intervals contain chance (about {round(n * 0.95)} expected); largest deviation per "
        "seed: " + "; ".join(
            f"{w['predictor']} {w['target']} {w['metric']} {w['estimate']:+.3f} "
            f"[{w['ci_low']:+.3f}, {w['ci_high']:+.3f}]" for w in (s["worst"] for s in sh)))
    add("")
    for kind in ("planted", "plain"):
        name = f"5days-{kind}"
        add(f"### Five days, {kind} ({docs[name]['states']['test']:,} test states; field "
            f"scales chosen: {_field_scales(docs, name)})")
        add("")
        lines += _targets_table(docs, name, ("fit_l1", "fit_vp", "fit_vp+l1"))
        add("")
        add(f"regime_score IC at event_2 {_ci(docs.result(name, 'regime_score', 'event_2', 'ic'))}"
            f", fit_vp {_ci(docs.result(name, 'fit_vp', 'event_2', 'ic'))}")
        add("")
        fit = (out / f"{name}-fit.txt").read_text().splitlines()
        add(f"Saved model ({fit[0] if fit else ''}), scored on 2026-02-06:")
        add("")
        lines += _targets_table(docs, f"{name}-saved", ("model_l1", "model_vp", "model_vp+l1"),
                                ("model_vp+l1", "model_l1"))
        add("")
    for name, symbol, d, *_ in REAL:
        doc = docs[f"real-{name}"]
        add(f"### {symbol} {d} ({name}: {doc['states']['evaluated']:,} states, "
            f"{doc['states']['test']:,} tested; field scales chosen: "
            f"{_field_scales(docs, f'real-{name}')})")
        add("")
        lines += _targets_table(docs, f"real-{name}", ("fit_l1", "fit_vp", "fit_vp+l1"))
        add("")
    return "\n".join(lines) + "\n"


def evidence(directory: Path, scales: str, cv_score: str = "log_loss") -> Path:
    """Run every command of docs/fit.md's evidence (reusing what ``directory`` holds) and
    write the tables to ``directory/s=<scales>[,cv=<score>],clip=<clip>/evidence.md``."""
    lakes = directory / "lakes"
    from vpbatch.fit.train import CLIP

    # The clip is always in the name: documents of a fit with another clip are never reused.
    clip = os.environ.get(CLIP_ENV) or f"{CLIP:g}"
    out = directory / ("s=" + scales + ("" if cv_score == "log_loss" else f",cv={cv_score}")
                       + f",clip={clip}")
    lakes.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _evidence_days(lakes, out, scales, cv_score)
    _evidence_controls(lakes, out, scales, cv_score)
    report = out / "evidence.md"
    report.write_text(_evidence_report(out, scales + ("" if cv_score == "log_loss"
                                                      else f", CV score {cv_score}")))
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["step"]:
        print(json.dumps(step(sys.argv[2])))
    elif sys.argv[1:2] == ["vpbatch"]:  # the CLI with the field scales of the environment
        _apply_scales()
        from cli.main import main as cli_main

        sys.argv = ["vpbatch", *sys.argv[2:]]
        cli_main()
    elif sys.argv[1:2] == ["evidence"]:
        from vpbatch.fit.train import FIELD_SCALES

        parser = argparse.ArgumentParser(prog="python -m benchmarks.fit evidence")
        parser.add_argument("directory", nargs="?", type=Path, default=Path("/tmp/fitwork"))
        parser.add_argument("--field-scales", default=",".join(f"{v:g}" for v in FIELD_SCALES))
        parser.add_argument("--cv-score", choices=("log_loss", "brier"), default="log_loss")
        parser.add_argument("--clip", type=float, help="clip standardised features at this "
                            "(default: vpbatch's; inf: no clipping, the fit before it)")
        ns = parser.parse_args(sys.argv[2:])
        if ns.clip is not None:
            os.environ[CLIP_ENV] = f"{ns.clip:g}"
        print(evidence(ns.directory, ns.field_scales, ns.cv_score).read_text())
    else:
        main()
