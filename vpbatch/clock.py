"""Session clock: the New York time zone and conversions between wall times and epoch ns.

Every product's session is read on America/New_York wall time (``--start-time``, ``--dt``
boundaries, plot axes, ``info``), DST-correct through :mod:`zoneinfo`. Timestamps inside the
engine and the tables are UTC nanoseconds since the epoch; the helpers here are the only place
the two meet.
"""

from __future__ import annotations

import datetime as dt
from typing import Final
from zoneinfo import ZoneInfo

from vpbatch.errors import ConfigError

#: Session clock of every product: --start-time, --dt boundaries, plots (DST-correct).
NEW_YORK: Final = ZoneInfo("America/New_York")
#: CME's own clock (Globex sessions are scheduled in Central time).
CHICAGO: Final = ZoneInfo("America/Chicago")
#: Nanoseconds per second.
NS_PER_SECOND: Final = 1_000_000_000
#: A CME Globex session opens at 18:00 ET and belongs to the next day: +6 h maps it onto it.
GLOBEX_SHIFT: Final = dt.timedelta(hours=6)


def et_ns(day: dt.date, value: dt.time | dt.datetime) -> int:
    """UTC epoch nanoseconds of an America/New_York wall time on ``day`` (or a datetime).

    A naive datetime is New York time too; an aware one keeps its own zone.
    """
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=NEW_YORK)
    else:
        stamp = dt.datetime.combine(day, value.replace(tzinfo=None), tzinfo=NEW_YORK)
    seconds = int(stamp.replace(microsecond=0).timestamp())
    return seconds * NS_PER_SECOND + stamp.microsecond * 1000


def format_et(ns: int, day: dt.date | None = None, *, millis: bool = False) -> str:
    """``HH:MM:SS[.mmm]`` in America/New_York, with the date when it is not ``day``."""
    stamp = (dt.datetime.fromtimestamp(ns // NS_PER_SECOND, tz=NEW_YORK)
             + dt.timedelta(microseconds=ns % NS_PER_SECOND // 1000))
    text = stamp.strftime("%H:%M:%S")
    if millis:
        text += f".{stamp.microsecond // 1000:03d}"
    return text if stamp.date() == day else f"{stamp.date().isoformat()} {text}"


def format_ns(ns: int, tz: dt.tzinfo = dt.UTC) -> str:
    """UTC nanoseconds -> ISO 8601 with nanoseconds, e.g. ``2024-05-08T00:00:00.000000001+00:00``.

    Parameters
    ----------
    ns : int
        Nanoseconds since the epoch (UTC).
    tz : datetime.tzinfo, default UTC
        Time zone of the rendered wall-clock time.

    Returns
    -------
    str
    """
    seconds, frac = divmod(int(ns), NS_PER_SECOND)
    text = dt.datetime.fromtimestamp(seconds, tz).isoformat()
    return f"{text[:19]}.{frac:09d}{text[19:]}"


def describe_ns(ns: int) -> str:
    """``2026-02-06 14:30:00 UTC (09:30 ET)``: an instant for error messages."""
    utc = dt.datetime.fromtimestamp(ns / NS_PER_SECOND, tz=dt.UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC ({utc.astimezone(NEW_YORK):%H:%M} ET)"


def session_day(start_ns: int, end_ns: int) -> dt.date | None:
    """The one session day that ``[start_ns, end_ns)`` lies in, or None when it spans more.

    Tried in order: one UTC day (Databento's day files and their names), one America/New_York
    calendar day, one CME Globex session (18:00 ET the day before to 18:00 ET, named by the day
    it ends on, as CME names its trading days).
    """
    last = max(start_ns, end_ns - 1)
    utc = [dt.datetime.fromtimestamp(t // NS_PER_SECOND, tz=dt.UTC) for t in (start_ns, last)]
    if utc[0].date() == utc[1].date():
        return utc[0].date()
    local = [t.astimezone(NEW_YORK) for t in utc]
    if local[0].date() == local[1].date():
        return local[0].date()
    globex = [(t.replace(tzinfo=None) + GLOBEX_SHIFT).date() for t in local]
    return globex[0] if globex[0] == globex[1] else None


def parse_clock(text: str, param: str = "--from") -> dt.time | dt.datetime:
    """``'10:00'``, ``'10:00:30.5'`` (America/New_York on the partition's day) or a full
    ``'2026-02-05T20:00'`` (a naive one is America/New_York too).

    Raises
    ------
    ConfigError
        When ``text`` is neither.
    """
    value = str(text).strip()
    try:
        return dt.time.fromisoformat(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{param}: '{text}' is not a time; use HH:MM[:SS] (America/New_York) "
                          f"or YYYY-MM-DDTHH:MM") from None


def parse_wall_time(text: str | None, param: str) -> dt.time | None:
    """``'09:30'`` -> time (America/New_York wall time); None passes through."""
    if text is None:
        return None
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{param}: '{text}' is not a time; use HH:MM (America/New_York)") \
            from None


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Calendar days from ``start`` to ``end`` inclusive (weekends included: files decide)."""
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
