"""A small built lake shared by the fit tests: two planted synthetic days of one symbol."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
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
