"""Query parameters of the viewer page and the stream, validated into a typed request.

Nothing from the URL reaches the filesystem from here: the symbol is checked against a strict
pattern, the date and times are parsed as ``vpbatch build`` parses them, and
:mod:`vpbatch.serve.sources` then looks the triple up among the lake's partitions.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from vpbatch.clock import parse_wall_time
from vpbatch.errors import ConfigError
from vpbatch.products import EQUITY_MBO, FUTURE_MBO
from vpbatch.store.lake import parse_date

#: A contract or ticker: letters, digits, ``.`` and ``-`` (no path separators, no ``..``).
SYMBOL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}$")
PRODUCT_TYPES: Final = (FUTURE_MBO, EQUITY_MBO)
SOURCES: Final = ("lake", "raw", "live")
#: Parameters of a replay that a live stream refuses (the feed sets its own pace).
REPLAY_ONLY: Final = ("speed", "start_time", "end_time", "throttle_ms")
DEFAULT_SPEED: Final = 1.0
MAX_SPEED: Final = 10_000.0
DEFAULT_THROTTLE_MS: Final = 25.0
MAX_THROTTLE_MS: Final = 60_000.0
#: Parameters the stream understands (anything else is refused, so typos are not ignored).
KNOWN_PARAMS: Final = frozenset({"product_type", "symbol", "dt", "speed", "start_time",
                                 "end_time", "throttle_ms", "source", "token"})


@dataclass(frozen=True)
class StreamRequest:
    """One validated stream request (see docs/stream.md for each parameter)."""

    symbol: str
    day: dt.date
    product_type: str | None = None
    speed: float = DEFAULT_SPEED
    start_time: dt.time | None = None
    end_time: dt.time | None = None
    throttle_ns: int = int(DEFAULT_THROTTLE_MS * 1_000_000)
    source: str | None = None

    @property
    def throttle_ms(self) -> float:
        return self.throttle_ns / 1_000_000


@dataclass(frozen=True)
class LiveRequest:
    """A ``source=live`` stream request: which live feed (``day`` None: the feed's)."""

    symbol: str
    day: dt.date | None = None
    product_type: str | None = None


def parse_symbol(text: str | None) -> str:
    """A symbol safe to use in a path component, upper-cased."""
    if not text:
        raise ConfigError("symbol: required (e.g. symbol=MNQH6)")
    if not SYMBOL_RE.fullmatch(text) or ".." in text:
        raise ConfigError(f"symbol: '{text[:40]}' is not a contract or ticker "
                          "(letters, digits, '.' and '-')")
    return text.upper()


def parse_speed(text: str | float | None, param: str = "speed") -> float:
    """Replay speed: 0 = as fast as possible, else a multiple of real time."""
    if text is None or text == "":
        return DEFAULT_SPEED
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{param}: '{text}' is not a number (0 = as fast as possible)") \
            from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SPEED:
        raise ConfigError(f"{param}: {text} is out of range; use 0 (as fast as possible) "
                          f"to {MAX_SPEED:g}")
    return value


def parse_throttle_ns(text: str | None) -> int:
    """Minimum event time between streamed states, from milliseconds."""
    if text is None or text == "":
        return int(DEFAULT_THROTTLE_MS * 1_000_000)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"throttle_ms: '{text}' is not a number of milliseconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_THROTTLE_MS:
        raise ConfigError(f"throttle_ms: {text} is out of range; use > 0 to "
                          f"{MAX_THROTTLE_MS:g}")
    return max(1, round(value * 1_000_000))


def _check_common(params: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Unknown parameters, ``product_type`` and ``source``: ``(product_type, source)``."""
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise ConfigError(f"{unknown[0][:40]}: unknown parameter; use "
                          f"{', '.join(sorted(KNOWN_PARAMS - {'token'}))}")
    product_type = params.get("product_type") or None
    if product_type is not None and product_type not in PRODUCT_TYPES:
        raise ConfigError(f"product_type: '{product_type[:40]}' is not one of "
                          f"{', '.join(PRODUCT_TYPES)}")
    source = params.get("source") or None
    if source is not None and source not in SOURCES:
        raise ConfigError(f"source: '{source[:40]}' is not one of {', '.join(SOURCES)}")
    return product_type, source


def is_live(params: Mapping[str, str]) -> bool:
    """Whether the query asks for a live feed (``source=live``)."""
    return params.get("source") == "live"


def parse_query(params: Mapping[str, str]) -> StreamRequest:
    """Validate the stream's query parameters (a replay: ``source`` lake or raw).

    Raises
    ------
    ConfigError
        Naming the first bad parameter and what would be valid.
    """
    product_type, source = _check_common(params)
    if source == "live":
        raise ConfigError("source: live streams are parsed by parse_live_query")
    if not params.get("dt"):
        raise ConfigError("dt: required (e.g. dt=2026-02-06)")
    day = parse_date(params["dt"][:40], "dt")
    start = parse_wall_time(params.get("start_time") or None, "start_time")
    end = parse_wall_time(params.get("end_time") or None, "end_time")
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"end_time: {end} is not after start_time {start}")
    return StreamRequest(symbol=parse_symbol(params.get("symbol")), day=day,
                         product_type=product_type, speed=parse_speed(params.get("speed")),
                         start_time=start, end_time=end,
                         throttle_ns=parse_throttle_ns(params.get("throttle_ms")),
                         source=source)


def parse_live_query(params: Mapping[str, str]) -> LiveRequest:
    """Validate a ``source=live`` query: symbol, optional ``dt`` and ``product_type``.

    Replay parameters (``speed``, ``start_time``, ``end_time``, ``throttle_ms``) are refused:
    a live stream sends the feed's newest states as they come.

    Raises
    ------
    ConfigError
        Naming the first bad parameter and what would be valid.
    """
    product_type, source = _check_common(params)
    if source != "live":
        raise ConfigError(f"source: '{source}' is not live")
    for name in REPLAY_ONLY:
        if params.get(name):
            raise ConfigError(f"{name}: does not apply to a live stream (it sends the newest "
                              "states as they come); leave it out")
    day = parse_date(params["dt"][:40], "dt") if params.get("dt") else None
    return LiveRequest(symbol=parse_symbol(params.get("symbol")), day=day,
                       product_type=product_type)
