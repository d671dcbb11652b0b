"""One progress helper for long work: a tqdm bar on stderr, or nothing.

Disabled when asked (``--quiet``) or when stderr is not a terminal, so logs and CI output
stay clean; results go to stdout either way.
"""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class Progress:
    """Records processed, records/s and the current phase."""

    def __init__(self, *, total: int | None, enabled: bool, phase: str = "",
                 unit: str = "rec") -> None:
        self._bar: tqdm | None = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, unit=unit, unit_scale=True, dynamic_ncols=True,
                             file=sys.stderr, desc=phase, mininterval=0.5)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def phase(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_description(name)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
