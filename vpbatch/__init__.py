"""vpbatch: dense vacuum/pressure order-flow grids from Databento MBO data."""

from __future__ import annotations

from vpbatch.config import EngineConfig, ForceCoefficients
from vpbatch.errors import (
    CacheError,
    ConfigError,
    InputError,
    OutputError,
    SymbolError,
    VerifyError,
    VpbatchError,
    VpbatchWarning,
)

__version__ = "0.1.0"

__all__ = [
    "CacheError",
    "ConfigError",
    "EngineConfig",
    "ForceCoefficients",
    "InputError",
    "OutputError",
    "SymbolError",
    "VerifyError",
    "VpbatchError",
    "VpbatchWarning",
    "__version__",
]
