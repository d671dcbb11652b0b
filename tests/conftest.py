"""Shared fixtures: the shared Databento files, ``--slow``, hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

#: Folder of the shared Databento sample files (``../shared/data/databento`` beside the repo).
SHARED_DATA = Path(
    os.environ.get("VPBATCH_SHARED_DATA")
    or Path(__file__).parents[1].parent / "shared" / "data" / "databento"
)

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


def shared_file(name: str) -> Path:
    """Path of a shared Databento file, skipping the calling test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"shared data file {name} not found in {SHARED_DATA} "
                    f"(set VPBATCH_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def dbn_path() -> Callable[[str], Path]:
    """Factory: ``dbn_path("glbx-mdp3-esh4-20231224.mbo.dbn.zst")`` -> Path, or skip."""
    return shared_file
