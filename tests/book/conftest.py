from __future__ import annotations

from collections.abc import Callable

import databento as db
import numpy as np
import pytest


@pytest.fixture
def dbn_records(dbn_path: Callable[[str], object]) -> Callable[[str], np.ndarray]:
    """All records of a DBN file in tests/data as one array (small files only)."""

    def load(name: str) -> np.ndarray:
        return db.DBNStore.from_file(dbn_path(name)).to_ndarray()

    return load
