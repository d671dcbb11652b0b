"""Built synthetic days shared by the evaluate tests (built once per session): unplanted,
planted (``synth --informed 0.3``), placebo (``--informed-jump random``) and activity only
(``--informed-jump none``), 200,000 records each, seed 11."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.evaluate.evaluation import Evaluation, Target, evaluate
from vpbatch.evaluate.stats import Bootstrap
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
DAY = dt.date(2026, 2, 6)
RECORDS = 200_000
#: Share of event groups with an informed action in the planted day.
INFORMED = 0.3
RESAMPLES = 200


def _build(root: Path, informed: float, informed_jump: str = "aligned") -> Path:
    synth_to_lake(root, SYMBOL, DAY, records=RECORDS, seed=11, informed=informed,
                  informed_jump=informed_jump)
    build(BuildRequest(symbol=SYMBOL, day=DAY, lake=root, use_cache=False))
    return root


@pytest.fixture(scope="session")
def plain_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("plain"), 0.0)


@pytest.fixture(scope="session")
def planted_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("planted"), INFORMED)


@pytest.fixture(scope="session")
def placebo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted day's episodes and activity, each jump's direction an independent coin."""
    return _build(tmp_path_factory.mktemp("placebo"), INFORMED, "random")


@pytest.fixture(scope="session")
def activity_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted day's episodes and activity, and no jump after them."""
    return _build(tmp_path_factory.mktemp("activity"), INFORMED, "none")


@pytest.fixture(scope="session")
def placebo_eval(placebo_lake: Path) -> Evaluation:
    return evaluate(placebo_lake, SYMBOL, DAY, settings=Bootstrap(resamples=RESAMPLES))


@pytest.fixture(scope="session")
def activity_only_eval(activity_lake: Path) -> Evaluation:
    return evaluate(activity_lake, SYMBOL, DAY, settings=Bootstrap(resamples=RESAMPLES))


@pytest.fixture(scope="session")
def plain_eval(plain_lake: Path) -> Evaluation:
    return evaluate(plain_lake, SYMBOL, DAY, settings=Bootstrap(resamples=RESAMPLES))


@pytest.fixture(scope="session")
def planted_eval(planted_lake: Path) -> Evaluation:
    return evaluate(planted_lake, SYMBOL, DAY, settings=Bootstrap(resamples=RESAMPLES))




def shuffled(targets: list[Target], seed: int) -> list[Target]:
    """The same targets with their future outcomes permuted across states (nothing left to
    predict)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in targets:
        perm = rng.permutation(t.y.size)
        out.append(Target(t.name, t.three_class, t.horizon_ns, t.y[perm], t.change[perm],
                          t.end_ts))
    return out


def away_from_chance(rows: list[dict[str, Any]], chance: dict[str, float]) -> list[tuple]:
    """Rows whose estimate is off chance (balanced accuracy) or 0 (MCC, IC, differences) by
    more than a Bonferroni-corrected normal interval (from the row's own bootstrap width)."""
    z = float(NormalDist().inv_cdf(1 - 0.05 / len(rows) / 2))
    misses = []
    for r in rows:
        ref = chance[r["target"]] if r["metric"] == "balanced_accuracy" else 0.0
        se = (r["ci_high"] - r["ci_low"]) / (2 * 1.96)
        if abs(r["estimate"] - ref) > z * se + 1e-9:
            misses.append((r["predictor"], r["target"], r["metric"], r["estimate"], se))
    return misses
