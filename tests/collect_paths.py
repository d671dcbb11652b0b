"""A pytest plugin for ``test_every_test_file_is_collected``: pytest's own choice of test files,
without importing them (``-p tests.collect_paths``). Each file pytest would import is printed as
``collected: PATH`` and collected as a module with no tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


class _Unimported(pytest.Module):
    def collect(self) -> list[Any]:
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module:
    print(f"collected: {module_path}")
    return _Unimported.from_parent(parent, path=module_path)
