"""A small built lake shared by the fit tests: two planted synthetic days of one symbol."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.fit import fit_models, write_model_file
from vpbatch.synth import synth_to_lake

SYMBOL = "MNQH6"
DAYS = (dt.date(2026, 2, 5), dt.date(2026, 2, 6))
RECORDS = 30_000


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of 30,000 records with informed episodes (``synth --informed 0.3``)."""
    root = tmp_path_factory.mktemp("fit-lake")
    for seed, day in enumerate(DAYS, start=2):
        synth_to_lake(root, SYMBOL, day, records=RECORDS, seed=seed, informed=0.3)
        build(BuildRequest(symbol=SYMBOL, day=day, lake=root, use_cache=False))
    return root


@pytest.fixture(scope="session")
def day1_model(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vp+l1`` and ``l1`` for ``event_1`` and ``clock_5s``, fitted on the first day (one
    fit for the build and online-scoring tests, which only read the file)."""
    file = fit_models(lake, SYMBOL, DAYS[0], models=["vp+l1", "l1"],
                      targets=["event_1", "clock_5s"])
    return write_model_file(file, tmp_path_factory.mktemp("day1-model") / "model.json")
