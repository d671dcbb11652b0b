"""The exchange calendar of a synthetic day: CME Globex hours and the session's intensity.

Plain Python/numpy, computed once per file: the kernel's clock (:mod:`vpbatch.synth.timing`)
draws event times from :func:`session_intensity`.
"""

from __future__ import annotations

import datetime as dt
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from vpbatch.clock import CHICAGO, NEW_YORK, NS_PER_SECOND

DAY_SECONDS: Final = 86_400

#: Relative activity by New York wall-clock minute. Duplicate knots are jumps (08:30 data,
#: 09:30 cash open, 16:00 cash close). Regular trading hours (09:30-16:00) average ~9x the
#: overnight level, as in CME equity-index futures.
_ET_KNOTS: Final = (
    (0, 0.10), (120, 0.10), (180, 0.28), (240, 0.22), (420, 0.22), (480, 0.35), (510, 0.40),
    (510, 1.20), (525, 0.60), (565, 0.55), (570, 0.60), (570, 3.20), (600, 2.00), (630, 1.50),
    (690, 1.15), (720, 0.95), (810, 0.85), (840, 1.00), (900, 1.20), (950, 1.70), (960, 2.40),
    (960, 0.50), (975, 0.30), (1020, 0.25), (1080, 0.60), (1090, 0.20), (1140, 0.13),
    (1260, 0.11), (1440, 0.10),
)


def day_start_ns(day: dt.date) -> int:
    """00:00 UTC of ``day`` in epoch nanoseconds."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) \
        * NS_PER_SECOND


def _local_minutes(day: dt.date, tz: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """Per UTC minute of ``day``: local minute of day and local weekday (Mon = 0)."""
    day0 = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    minute = np.empty(1440, np.float64)
    weekday = np.empty(1440, np.int64)
    for m in range(1440):
        local = (day0 + dt.timedelta(minutes=m)).astimezone(tz)
        minute[m] = local.hour * 60 + local.minute
        weekday[m] = local.weekday()
    return minute, weekday


def _cme_open(ct_minute: np.ndarray, ct_weekday: np.ndarray) -> np.ndarray:
    """CME Globex equity-index hours: Sun 17:00 CT to Fri 16:00 CT, daily halt 16:00-17:00 CT."""
    in_halt = (ct_minute >= 16 * 60) & (ct_minute < 17 * 60)
    after_close = ct_minute >= 16 * 60
    return np.where(ct_weekday <= 3, ~in_halt,
                    np.where(ct_weekday == 4, ~after_close,
                             (ct_weekday == 6) & (ct_minute >= 17 * 60)))


def session_intensity(day: dt.date, seed: int = 0) -> np.ndarray:
    """Relative event intensity per second of the UTC day ``day`` (0 while CME is closed).

    The New York time-of-day profile times a seeded log-OU activity multiplier (minutes)
    with a few news bursts: activity clusters in time like real flow, and is deterministic.
    """
    et_min, _ = _local_minutes(day, NEW_YORK)
    ct_min, ct_wd = _local_minutes(day, CHICAGO)
    open_min = _cme_open(ct_min, ct_wd)
    xs = np.array([k[0] for k in _ET_KNOTS], np.float64)
    ys = np.array([k[1] for k in _ET_KNOTS], np.float64)
    sec = np.arange(DAY_SECONDS)
    et_sec = np.repeat(et_min, 60) + (sec % 60) / 60.0
    profile = np.interp(et_sec, xs, ys)
    rng = np.random.default_rng(np.random.SeedSequence([seed, day.toordinal(), 0x5E55]))
    phi = np.exp(-1.0 / 30.0)
    eps = rng.standard_normal(1440) * 0.35 * np.sqrt(1.0 - phi * phi)
    logv = np.empty(1440)
    logv[0] = rng.standard_normal() * 0.35
    for m in range(1, 1440):
        logv[m] = phi * logv[m - 1] + eps[m]
    mult = np.exp(logv)
    minutes = np.arange(1440)
    for m0 in rng.choice(np.flatnonzero(open_min), size=min(3, int(open_min.sum())),
                         replace=False):
        mult *= 1.0 + rng.uniform(1.0, 3.0) * np.where(minutes >= m0,
                                                         np.exp(-(minutes - m0) / 5.0), 0.0)
    h = profile * np.repeat(mult * open_min, 60)
    total = h.sum()
    return h / total * DAY_SECONDS if total > 0 else h


def weekly_open_ns(day: dt.date) -> int:
    """The last Sunday 12:00 UTC before ``day``, when resting GTC orders were restated.

    2,517 orders of the real ESM4 snapshot carry that timestamp (2024-05-05 12:00:04 UTC).
    """
    sunday = day - dt.timedelta(days=(day.weekday() + 1) % 7 or 7)
    return int(dt.datetime(sunday.year, sunday.month, sunday.day, 12, tzinfo=dt.UTC)
               .timestamp()) * NS_PER_SECOND
