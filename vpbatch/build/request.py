"""What one build is asked to do and what it did, and the checks that need no input file.

Light on purpose (no engine, no pyarrow): requests cross process boundaries in
:mod:`vpbatch.build.cluster` and the CLI checks them before anything heavy is imported.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vpbatch.clock import describe_ns, session_day
from vpbatch.config import DEFAULT_WARMUP, EngineConfig, parse_duration_ns
from vpbatch.errors import ConfigError, InputError
from vpbatch.store.fs import open_lake

if TYPE_CHECKING:
    from vpbatch.build.scoring import StateScorer

DEFAULT_WARMUP_NS: Final = parse_duration_ns(DEFAULT_WARMUP, "warmup")
_FILE_DATE_RE: Final = re.compile(r"(\d{4})(\d{2})(\d{2})")


@dataclass(frozen=True)
class BuildRequest:
    """Everything one build needs; validated by ``build``.

    Parameters
    ----------
    symbol : contract or ticker (``MNQH6``, ``QQQ``).
    day : session date; inferred from the file (:func:`infer_session_day`) when only ``path``
        is given.
    lake : lake root.
    path : explicit input file instead of the lake layout.
    start_time, end_time : America/New_York wall-clock times on ``day``.
    warmup_ns : warm-up before ``start_time``, default 30 min.
    config : engine parameters (``K``, sampling, ...).
    mbp_levels : also write the ``mbp`` table with this many levels (0 = no).
    publisher_id : required when the instrument comes from several publishers.
    definition : instrument-definition DBN whose ``min_price_increment`` is the tick.
    force : replace a complete partition.
    use_cache : load/save the fast-forwarded book in the book cache.
    cache : the book cache's folder or object-store URL; default ``lake/cache/book`` for a
        folder lake, a folder on each host's disk for one on an object store
        (:func:`vpbatch.store.cache.cache_location`).
    progress : show a progress bar on stderr.
    scorer : a fitted model that scores every written state (``build --model``;
        :mod:`vpbatch.build.scoring`): ``vp_snapshot`` gets its call and probability columns
        and the manifest names it. None (default): the build is what it always was.

    ``lake`` is a folder or an object-store URL (``s3://bucket/prefix``).
    """

    symbol: str
    day: dt.date | None
    lake: Path | str
    path: Path | None = None
    start_time: dt.time | None = None
    end_time: dt.time | None = None
    warmup_ns: int = DEFAULT_WARMUP_NS
    config: EngineConfig = field(default_factory=EngineConfig)
    mbp_levels: int = 0
    publisher_id: int | None = None
    force: bool = False
    use_cache: bool = True
    progress: bool = False
    chunk_records: int = 1_000_000
    definition: Path | None = None
    cache: str | None = None
    scorer: StateScorer | None = None


@dataclass
class BuildResult:
    """What a build did (also what ``vpbatch build`` prints)."""

    symbol: str
    day: dt.date
    status: str  # "built", "skipped" (already complete), "no-data", "failed" (ranges only)
    partitions: dict[str, Path | str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    records: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cache: str = "off"  # "hit", "miss", "off"
    message: str = ""
    host: str = ""  # where it ran (ranges)


def check_request(req: BuildRequest) -> None:
    """Checks that need no input file: a missing lake (an unusable object store: one request),
    --end-time not after --start-time."""
    lake = open_lake(req.lake)
    if not lake.local:
        lake.check()
    elif req.path is None and not Path(req.lake).is_dir():
        raise InputError(f"{req.lake}: lake folder does not exist (give --lake or set "
                         "VPBATCH_LAKE; raw files go under lake/raw/)")
    if req.start_time is None and req.end_time is not None:
        raise ConfigError("--end-time needs --start-time")
    if req.start_time is not None and req.end_time is not None \
            and req.end_time <= req.start_time:
        raise ConfigError(f"--end-time {req.end_time} is not after --start-time "
                          f"{req.start_time}")


def infer_session_day(path: Path) -> tuple[dt.date, str]:
    """The session date of a file that holds one session, and where it came from.

    From the DBN header's ``start``/``end`` (:func:`vpbatch.clock.session_day`); when the
    header has no end, from a date in the file name.

    Raises
    ------
    ConfigError
        When the file spans more than one session, or nothing names its date: pass ``--dt``.
    """
    from vpbatch.ingest.reader import open_mbo

    meta = open_mbo(path).metadata
    if meta.end is not None:
        day = session_day(meta.start, meta.end)
        span = f"{describe_ns(meta.start)} to {describe_ns(meta.end)}"
        if day is None:
            raise ConfigError(f"{path.name}: covers {span}, more than one session; "
                              "pass --dt YYYY-MM-DD")
        return day, f"from the file's header: {span}"
    match = _FILE_DATE_RE.search(path.name)
    if match is None:
        raise ConfigError(f"{path.name}: the file's header has no end time and its name no "
                          "date; pass --dt YYYY-MM-DD")
    return dt.date(*(int(g) for g in match.groups())), "from the file name"
