"""s3fs with a memory for objects that never change (imported only for an object-store lake).

A committed attempt's files (``.../attempt-<seq>-<uuid>/part-0.parquet``) are never rewritten:
their sizes, known from the commit marker's manifest, are remembered here, so opening one for
range reads (DuckDB, pyarrow, polars) costs no ``HEAD`` request, and neither does DuckDB's
existence check. Everything else (``refresh=True``, leases, markers, raw files) asks the
store every time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import s3fs

#: The modification time reported for a remembered object (it never changes; DuckDB asks).
_NEVER: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class S3Store(s3fs.S3FileSystem):  # type: ignore[misc]
    """``s3fs.S3FileSystem`` plus :meth:`remember` (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.immutable: dict[str, dict[str, Any]] = {}

    def remember(self, path: str, size: int) -> None:
        """``path`` (bucket/key) is an object of ``size`` bytes that will never change."""
        path = self._strip_protocol(path)
        self.immutable[path] = {"name": path, "size": int(size), "type": "file",
                                "StorageClass": "STANDARD", "LastModified": _NEVER}

    async def _info(self, path: str, bucket: str | None = None, key: str | None = None,
                    refresh: bool = False, version_id: str | None = None) -> dict[str, Any]:
        if not refresh and version_id is None:
            known = self.immutable.get(self._strip_protocol(path))
            if known is not None:
                return dict(known)
        return dict(await super()._info(path, bucket, key, refresh=refresh,
                                        version_id=version_id))
