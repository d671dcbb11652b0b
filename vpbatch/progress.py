"""One progress helper for long work: a tqdm bar on stderr, or nothing.

Disabled when asked (``--quiet``) or when stderr is not a terminal, so logs and CI output
stay clean; results go to stdout either way.
"""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm

#: A bar over market time: ``emit  42%|████      | 9828/23400 s market [00:12<00:16]``.
_TIME_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]"


class Progress:
    """Work done (records, or seconds of market time), its rate and the current phase."""

    def __init__(self, *, total: float | None, enabled: bool, phase: str = "",
                 unit: str = "rec") -> None:
        self._bar: tqdm | None = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, unit=unit, unit_scale=unit in ("rec", "B"),
                             dynamic_ncols=True, file=sys.stderr, desc=phase, mininterval=0.5,
                             bar_format=None if unit == "rec" or total is None else _TIME_BAR)

    def update(self, n: float) -> None:
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
