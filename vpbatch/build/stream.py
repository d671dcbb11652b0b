"""The states ``build`` would write, yielded instead of written (``vpbatch serve``'s raw source)."""

from __future__ import annotations

from collections.abc import Iterator

from vpbatch.book.engine import Emitted
from vpbatch.build.pipeline import BuildJob, input_for, product_and_day
from vpbatch.build.request import BuildRequest
from vpbatch.errors import InputError
from vpbatch.ingest.reader import open_mbo
from vpbatch.progress import Progress


class StateStream:
    """The states ``build`` would write for ``req``, yielded instead of written.

    Same reader, engine, three phases and book cache as :func:`build` (the raw source of
    ``vpbatch serve``). Iterate once; ``close`` when done (also on early exit).

    Raises
    ------
    InputError, SymbolError, ConfigError
        As :func:`build`, when opened (missing file, unknown symbol, bad times).
    """

    def __init__(self, req: BuildRequest) -> None:
        product, self.day = product_and_day(req)
        self.path, self.product, definition = input_for(req, product, self.day)
        self._job = BuildJob(req, self.product, self.day,
                             open_mbo(self.path, definition=definition))
        self.config = req.config

    @property
    def data_span_ns(self) -> tuple[int, int | None]:
        """First and last (None: unknown) record time of the input file, epoch ns."""
        meta = self._job.source.metadata
        return int(meta.start), (int(meta.end) if meta.end is not None else None)

    @property
    def cache(self) -> str:
        """Book cache outcome so far: ``hit``, ``miss`` or ``off``."""
        return self._job.cache_state

    def __iter__(self) -> Iterator[Emitted]:
        bar = Progress(total=None, enabled=False)
        states = 0
        for emitted in self._job.emitted(bar):
            states += len(emitted.snapshots)
            yield emitted  # also the empty ones: a consumer may stop between any two
        if states == 0:
            raise InputError(self._job.nothing_emitted())

    def close(self) -> None:
        self._job.close()
