"""One exception hierarchy; the CLI maps each class to an exit code in one place."""

from __future__ import annotations


class VpbatchError(Exception):
    """Base class of every error vpbatch raises on purpose (exit code 1)."""

    exit_code: int = 1


class InputError(VpbatchError):
    """A missing, empty, truncated, corrupt or non-MBO input file (exit code 3)."""

    exit_code = 3


class SymbolError(VpbatchError):
    """A symbol or publisher that cannot be resolved in the input (exit code 3)."""

    exit_code = 3


class ConfigError(VpbatchError):
    """An invalid parameter value (exit code 1)."""


class OutputError(VpbatchError):
    """The lake cannot be written (exit code 1)."""


class StoreError(InputError):
    """The lake's object store cannot be used: no such bucket, credentials refused, endpoint
    unreachable (exit code 3). The message names the lake's URL."""


class PartitionExists(OutputError):
    """The partition is already complete (built by another build meanwhile); not forced."""


class CacheError(VpbatchError):
    """A corrupt, stale or foreign book-state cache entry (exit code 1)."""


class VerifyError(VpbatchError):
    """`vpbatch verify` found invariant violations (exit code 4)."""

    exit_code = 4


class VpbatchWarning(UserWarning):
    """Non-fatal anomalies (unknown-order cancels, skipped records, …)."""


class DownloadError(VpbatchError):
    """Databento refused a request, or kept failing after the retries (exit code 1)."""


def one_line(what: object) -> str:
    """An error (or any text) on one line, for a one-line message; a bare exception's name."""
    text = " ".join(str(what).split())
    return text or (type(what).__name__ if isinstance(what, BaseException) else "")
