"""Engine parameters (SPEC §5-§10) with the spec defaults, validated once at the boundary.

Every default lives here: the dataclasses below, ``DEFAULT_SAMPLE`` and ``DEFAULT_WARMUP``
(which the CLI shows), and ``load_config_file`` reads a ``vp.toml`` over them
(docs/config.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from vpbatch.book.dtypes import SAMPLE_EVENT, SAMPLE_PACKET, SAMPLE_TIME
from vpbatch.clock import NS_PER_SECOND
from vpbatch.errors import ConfigError

#: ``--sample`` default: one state per 25 ms of event time (SPEC §10).
DEFAULT_SAMPLE: Final = "25ms"
#: ``--warmup`` default: full engine for 30 min before ``--start-time`` (SPEC §10).
DEFAULT_WARMUP: Final = "30m"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|min|h)\s*$")
_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": NS_PER_SECOND,
            "m": 60 * NS_PER_SECOND, "min": 60 * NS_PER_SECOND, "h": 3600 * NS_PER_SECOND}


def parse_duration_ns(text: str, param: str) -> int:
    """``'25ms'`` -> 25_000_000; the error names the parameter."""
    match = _DURATION_RE.match(str(text))
    if match is None:
        raise ConfigError(
            f"{param}: '{text}' is not a duration; use a number with a unit such as 25ms, 2s, 30m"
        ) from None
    value = float(match.group(1)) * _UNIT_NS[match.group(2)]
    if value <= 0:
        raise ConfigError(f"{param}: duration must be positive, was '{text}'")
    return round(value)


@dataclass(frozen=True)
class ForceCoefficients:
    """SPEC §8 force weights."""

    pressure_v_add: float = 1.0
    pressure_v_rest_pos: float = 0.5
    pressure_a_add: float = 0.3
    vacuum_v_pull: float = 1.0
    vacuum_v_fill: float = 1.5
    vacuum_v_rest_neg: float = 0.5
    vacuum_a_pull: float = 0.3

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"forces.{f.name}: must be a finite number >= 0 (forces are "
                                  f"non-negative), was {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Every formula parameter of the engine; recorded verbatim in each build's manifest.

    Parameters
    ----------
    K : half-width of the emitted grid (rows = 2K+1), default 50.
    band : buckets of state kept around spot, default 1000 (must be >= K).
    tau_v, tau_a, tau_j, tau_rest : time constants in seconds (2, 5, 10, 30).
    regime_lambda : proximity decay in buckets, default 10.
    theta_on, theta_off : hysteresis thresholds, default 0.3 / 0.15.
    intensity_floor : below it the regime is CHOP, default 0.
    regime_step_ns : regime clock step, default 100 ms.
    sample : ``'time'`` (with ``sample_ns``), ``'packet'`` or ``'event'``.
    sample_ns : emission bin for ``sample='time'``, default 25 ms.
    epoch_ns : origin of the regime steps and time bins (ns since the Unix epoch), default 0:
        boundaries are ``epoch_ns + n * step``.
    """

    K: int = 50
    band: int = 1000
    tau_v: float = 2.0
    tau_a: float = 5.0
    tau_j: float = 10.0
    tau_rest: float = 30.0
    forces: ForceCoefficients = field(default_factory=ForceCoefficients)
    regime_lambda: float = 10.0
    theta_on: float = 0.3
    theta_off: float = 0.15
    intensity_floor: float = 0.0
    eps: float = 1e-12
    regime_step_ns: int = 100_000_000
    sample: str = "time"
    sample_ns: int = 25_000_000
    epoch_ns: int = 0

    def __post_init__(self) -> None:
        for name in ("K", "band", "regime_step_ns", "sample_ns", "epoch_ns"):
            if not _is_int(getattr(self, name)):
                raise ConfigError(f"{name}: must be an integer, was {getattr(self, name)!r}")
        for name in ("tau_v", "tau_a", "tau_j", "tau_rest", "regime_lambda", "theta_on",
                     "theta_off", "intensity_floor", "eps"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value)):
                raise ConfigError(f"{name}: must be a finite number, was {value!r}")
        if not isinstance(self.forces, ForceCoefficients):
            raise ConfigError(f"forces: expected ForceCoefficients, was {self.forces!r}")
        if not 1 <= self.K <= 10_000:
            raise ConfigError(f"K: must be between 1 and 10000, was {self.K}")
        if not self.K <= self.band <= 1_000_000:
            raise ConfigError(f"band: must be between K ({self.K}) and 1000000, was {self.band}")
        for name in ("tau_v", "tau_a", "tau_j", "tau_rest", "regime_lambda", "eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, was {getattr(self, name)}")
        if self.intensity_floor < 0:
            raise ConfigError(f"intensity_floor: must be >= 0, was {self.intensity_floor}")
        if not 0 <= self.theta_off <= self.theta_on <= 1:
            raise ConfigError(
                f"theta_on/theta_off: need 0 <= theta_off <= theta_on <= 1, "
                f"were {self.theta_on}/{self.theta_off}"
            )
        if self.sample not in ("time", "packet", "event"):
            raise ConfigError(f"sample: must be one of time, packet, event; was '{self.sample}'")
        for name in ("regime_step_ns", "sample_ns"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, was {getattr(self, name)}")
        if abs(self.epoch_ns) > 2**62:
            raise ConfigError(f"epoch_ns: out of range, was {self.epoch_ns}")

    @classmethod
    def from_sample(cls, sample: str, **kwargs: Any) -> EngineConfig:
        """Build from a CLI-style ``--sample`` value: ``25ms``, ``packet`` or ``event``."""
        if sample in ("packet", "event"):
            return cls(sample=sample, **kwargs)
        return cls(sample="time", sample_ns=parse_duration_ns(sample, "--sample"), **kwargs)

    @property
    def sample_code(self) -> int:
        return {"time": SAMPLE_TIME, "packet": SAMPLE_PACKET, "event": SAMPLE_EVENT}[self.sample]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class BuildSettings:
    """What a ``vp.toml`` sets: the engine's parameters and the warm-up."""

    config: EngineConfig
    warmup_ns: int


#: ``vp.toml`` keys (top level) and what they set; see docs/config.md.
_FLOAT_KEYS: Final = ("tau_v", "tau_a", "tau_j", "tau_rest", "regime_lambda", "theta_on",
                      "theta_off", "intensity_floor", "eps")
_INT_KEYS: Final = ("K", "band")
_DURATION_KEYS: Final = ("regime_step", "warmup")
CONFIG_KEYS: Final = (*_INT_KEYS, *_FLOAT_KEYS, *_DURATION_KEYS, "sample", "epoch", "forces")


def load_config_file(path: str | Path, *, sample: str | None = None,
                     overrides: dict[str, Any] | None = None) -> BuildSettings:
    """Read a ``vp.toml`` over the defaults; ``sample``/``overrides`` (CLI options) win.

    Parameters
    ----------
    path : the TOML file.
    sample : a ``--sample`` value given on the command line, default None (the file's).
    overrides : EngineConfig fields given on the command line (``K``, ``band``, ``warmup_ns``).

    Raises
    ------
    ConfigError
        One line naming the file, the key and what is wrong: a missing or unreadable file,
        invalid TOML (with line and column), an unknown key, a value of the wrong type or
        out of range.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None
    try:
        return _settings(data, sample, dict(overrides or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None


def _settings(data: dict[str, Any], sample: str | None, overrides: dict[str, Any]
              ) -> BuildSettings:
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (valid keys: {', '.join(CONFIG_KEYS)})")
    kwargs: dict[str, Any] = {}
    for key in _INT_KEYS:
        if key in data:
            if not _is_int(data[key]):
                raise ConfigError(f"{key}: expected an integer, was {data[key]!r}")
            kwargs[key] = data[key]
    for key in _FLOAT_KEYS:
        if key in data:
            if not _is_number(data[key]):
                raise ConfigError(f"{key}: expected a number, was {data[key]!r}")
            kwargs[key] = float(data[key])
    if "regime_step" in data:
        kwargs["regime_step_ns"] = _duration(data["regime_step"], "regime_step")
    if "epoch" in data:
        kwargs["epoch_ns"] = _epoch(data["epoch"])
    if "forces" in data:
        kwargs["forces"] = _forces(data["forces"])
    warmup_ns = _duration(data.get("warmup", DEFAULT_WARMUP), "warmup")
    kwargs.update(overrides)
    warmup_ns = kwargs.pop("warmup_ns", warmup_ns)
    text = sample if sample is not None else data.get("sample", DEFAULT_SAMPLE)
    if not isinstance(text, str):
        raise ConfigError(f"sample: expected a string such as \"25ms\", \"packet\" or "
                          f"\"event\", was {text!r}")
    return BuildSettings(EngineConfig.from_sample(text, **kwargs), warmup_ns)


def _duration(value: object, key: str) -> int:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a duration string such as \"100ms\", was {value!r}")
    return parse_duration_ns(value, key)


def _epoch(value: object) -> int:
    """An integer (ns since the Unix epoch) or a TOML offset date-time."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ConfigError(f"epoch: a date-time needs a UTC offset (e.g. "
                              f"{value.isoformat()}Z), was {value.isoformat()}")
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000
    raise ConfigError(f"epoch: expected ns since the Unix epoch or a date-time such as "
                      f"2026-02-06T14:30:00Z, was {value!r}")


def _forces(value: object) -> ForceCoefficients:
    if not isinstance(value, dict):
        raise ConfigError(f"forces: expected a table [forces], was {value!r}")
    names = [f.name for f in dataclasses.fields(ForceCoefficients)]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ConfigError(f"forces: unknown key {unknown[0]!r} (valid keys: {', '.join(names)})")
    for key, item in value.items():
        if not _is_number(item):
            raise ConfigError(f"forces.{key}: expected a number, was {item!r}")
    return ForceCoefficients(**{k: float(v) for k, v in value.items()})
