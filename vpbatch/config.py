"""Engine parameters (SPEC §5-§10) with the spec defaults, validated once at the boundary."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from vpbatch.book.dtypes import SAMPLE_EVENT, SAMPLE_PACKET, SAMPLE_TIME
from vpbatch.errors import ConfigError

NS_PER_SECOND = 1_000_000_000
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|min|h)\s*$")
_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
            "min": 60_000_000_000, "h": 3_600_000_000_000}


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

    def __post_init__(self) -> None:
        if not 1 <= self.K <= 10_000:
            raise ConfigError(f"K: must be between 1 and 10000, was {self.K}")
        if self.band < self.K:
            raise ConfigError(f"band: must be >= K ({self.K}), was {self.band}")
        for name in ("tau_v", "tau_a", "tau_j", "tau_rest", "regime_lambda"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, was {getattr(self, name)}")
        if not 0 <= self.theta_off <= self.theta_on <= 1:
            raise ConfigError(
                f"theta_on/theta_off: need 0 <= theta_off <= theta_on <= 1, "
                f"were {self.theta_on}/{self.theta_off}"
            )
        if self.sample not in ("time", "packet", "event"):
            raise ConfigError(f"sample: must be one of time, packet, event; was '{self.sample}'")
        if self.regime_step_ns <= 0 or self.sample_ns <= 0:
            raise ConfigError("regime_step_ns and sample_ns must be positive")

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
