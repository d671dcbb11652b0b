"""Shared fixtures: the Databento sample files in tests/data, ``--slow``, hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

#: Folder of the real Databento sample files the tests read (committed, a few MB).
DATA = Path(__file__).parent / "data"

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# A long local soak of the property tests: HYPOTHESIS_PROFILE=long make test (~20-30 min).
settings.register_profile("long", max_examples=5_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in ("true", "1", "yes") else "dev")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running tests, run with --slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def data_file(name: str) -> Path:
    """Path of a Databento sample file in tests/data; a missing file fails the test loudly."""
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"data file {name} not found in {DATA} (it is committed with the tests: "
                    f"restore it with git)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def dbn_path() -> Callable[[str], Path]:
    """Factory: ``dbn_path("glbx-mdp3-esh4-20231224.mbo.dbn.zst")`` -> Path in tests/data."""
    return data_file
