"""The engine version recorded in manifests and cache keys."""

from __future__ import annotations


def engine_version() -> str:
    """``vpbatch.__version__``, else the installed distribution's version, else ``0+unknown``."""
    import vpbatch

    version = getattr(vpbatch, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vpbatch")
    except PackageNotFoundError:
        return "0+unknown"

