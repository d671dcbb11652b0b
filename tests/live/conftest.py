"""Fixtures of the live tests: the stand-in gateway on a shared sample file, stopped after."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import data_file
from tests.live.gateway import StandInGateway

#: The ESM4 sample (DBN v1): 13,796 records of 2024-05-08 00:00-00:02 UTC, the first 13,601
#: being Databento's start-of-day snapshot (an R, then A records flagged 40, the last 168).
ESM4_FILE = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
#: Two instruments (GOOG 7151, GOOGL 7152) on DBEQ.BASIC, 286,130 records.
GOOG_FILE = "dbeq-basic-goog-20240403.mbo.dbn.zst"
REPO = Path(__file__).resolve().parents[2]
SYNTH_DAY = dt.date(2026, 2, 6)


@pytest.fixture
def standin() -> Iterator[Callable[..., StandInGateway]]:
    """Factory: ``standin(file=ESM4_FILE, **options)`` -> a running :class:`StandInGateway`.

    Every gateway made is stopped at the end of the test, which then fails if the stand-in
    recorded an internal error.
    """
    made: list[StandInGateway] = []

    def make(file: str = ESM4_FILE, **options: Any) -> StandInGateway:
        gw = StandInGateway(data_file(file), **options)
        gw.start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()
    errors = [e for gw in made for e in gw.errors]
    assert not errors, f"stand-in gateway internal error:\n{errors[0]}"


@pytest.fixture(scope="session")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MNQH6 day of 150,000 records (two hours of a quiet session)."""
    lake = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "cli", "synth", "--symbol", "MNQH6", "--dt",
                    SYNTH_DAY.isoformat(), "--records", "150000", "--lake", str(lake),
                    "--quiet"], cwd=REPO, check=True)
    return next(lake.rglob("*.mbo.dbn.zst"))
