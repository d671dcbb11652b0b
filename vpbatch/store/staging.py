"""A local stand-in for a lake's raw files, for writers that need local files.

``vpbatch synth`` and ``vpbatch download`` write raw DBN files through local file names (a
DBN encoder, Databento's client writing a stream to a path, the download's resume and
completeness checks reading them back). For a folder lake they write into the lake itself.
For a lake on an object store a :class:`Stage` gives them a temporary folder laid out like
the lake: the raw files they need to see first are copied in, and :meth:`Stage.sync` puts
every file they created or changed under ``raw/`` back into the store (each object appears
whole, or not at all) and deletes the ones they removed. :meth:`Stage.close` syncs and
removes the folder.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vpbatch.store.fs import Lake, open_lake


class Stage:
    """A local folder standing for ``lake``'s root (the lake's own folder if it is local).

    Parameters
    ----------
    lake : path, URL or Lake
        The lake.
    include : callable, default none
        Which raw files to copy in first, by their path below the root
        (``raw/source=databento/.../glbx-mdp3-20260206.mbo.dbn.zst``).
    """

    def __init__(self, lake: Path | str | Lake,
                 include: Callable[[str], bool] | None = None) -> None:
        self.lake = open_lake(lake)
        self._seen: dict[str, tuple[int, int]] = {}
        #: Locations uploaded by :meth:`sync` so far.
        self.uploaded: list[str] = []
        if self.lake.local:
            self.root = self.lake.folder
            return
        self.lake.check()
        self.root = Path(tempfile.mkdtemp(prefix="vpbatch-stage-"))
        if include is None:
            return
        for obj in self.lake.find(self.lake.loc("raw")):
            relative = obj.location[len(self.lake.url) + 1:]
            if include(relative):
                local = self.root / relative
                local.parent.mkdir(parents=True, exist_ok=True)
                self.lake.download(obj.location, local)
                self._seen[relative] = _stat(local)

    def location(self, path: Path) -> str:
        """Where a file of the stage is (or will be, once synced) in the lake."""
        if self.lake.local:
            return str(path)
        return self.lake.loc(*Path(path).relative_to(self.root).parts)

    def sync(self) -> list[str]:
        """Upload files new or changed under ``raw/``, delete those removed; their locations."""
        if self.lake.local:
            return []
        raw = self.root / "raw"
        now: dict[str, tuple[int, int]] = {}
        for dirpath, _, names in os.walk(raw):
            for name in names:
                path = Path(dirpath) / name
                now[path.relative_to(self.root).as_posix()] = _stat(path)
        done = []
        for relative, stat in sorted(now.items()):
            if self._seen.get(relative) != stat:
                location = self.lake.loc(relative)
                self.lake.upload(self.root / relative, location)
                done.append(location)
        for relative in sorted(set(self._seen) - set(now)):
            self.lake.remove(self.lake.loc(relative))
        self._seen = now
        self.uploaded += done
        return done

    def close(self) -> None:
        """Sync, then remove the temporary folder (nothing to do for a folder lake)."""
        if self.lake.local:
            return
        try:
            self.sync()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def dated_between(start: dt.date, end: dt.date) -> Callable[[str], bool]:
    """A :class:`Stage` filter: raw files of the days ``start..end`` (by the ``YYYYMMDD`` in
    their names, part files included) and every ``symbology.json``."""
    first, last = f"{start:%Y%m%d}", f"{end:%Y%m%d}"

    def wanted(relative: str) -> bool:
        name = relative.rsplit("/", 1)[-1]
        if name == "symbology.json":
            return True
        stamp = re.search(r"-(\d{8})\.", name)
        return stamp is not None and first <= stamp.group(1) <= last

    return wanted
