"""Fixtures of the live tests: the stand-in gateway on a shared sample file, stopped after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import data_file
from tests.live.gateway import StandInGateway

#: The ESM4 sample (DBN v1): 13,796 records of 2024-05-08 00:00-00:02 UTC, the first 13,601
#: being Databento's start-of-day snapshot (an R, then A records flagged 40, the last 168).
ESM4_FILE = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
#: Two instruments (GOOG 7151, GOOGL 7152) on DBEQ.BASIC, 286,130 records.
GOOG_FILE = "dbeq-basic-goog-20240403.mbo.dbn.zst"


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
