"""The partition lock on an object store: a lease object written with conditional requests.

The folder lock of :mod:`vpbatch.store.locks` is a directory renamed into place; an object
store has no rename, but it has conditional writes, which give the same guarantees:

* **acquire**: ``PUT <lake>/gold/.locks/<product_type>.<symbol>.<dt>.lock`` with
  ``If-None-Match: *`` holding the owner (host, boot id, pid, process start time, token, time)
  and the stale time in force. The store refuses the request (412) when the lease exists.
* **heartbeat**: while held, a daemon thread rewrites the object every
  :data:`~vpbatch.store.locks.HEARTBEAT_SECONDS` with ``If-Match: <its ETag>``; the object's
  ``Last-Modified`` (set by the store) is the heartbeat. A 412 means another host took the
  lease as stale: the owner has lost it, and :meth:`Lease.check` says so before committing.
* **stale owner**: the rules of the folder lock. On this machine (same host name *and* boot
  id) as soon as its process is gone; from another machine when ``Last-Modified`` is older
  than the stale time (``VPBATCH_LOCK_STALE_SECONDS``, default 60 s), which assumes clocks in
  sync to well under that.
* **take over**: ``PUT`` with ``If-Match: <the stale lease's ETag>``: of several hosts judging
  the same lease stale, exactly one wins; the others see 412 and look again.
* **release**: ``DELETE`` with ``If-Match: <own ETag>``, so a lease taken over is left alone.

A build that finds the lease held by a live owner waits for it (:meth:`Lease.acquire` with
``wait=True``): the partition is then built by the holder (and this build reports it skipped)
or, if the holder fails or dies, by this build. The commit does not depend on the lease for
its safety (:mod:`vpbatch.store.objects`: the commit marker is itself a conditional create);
the lease keeps two hosts from doing the same work.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
import warnings
from dataclasses import asdict
from types import TracebackType
from typing import Any, Final

from vpbatch.errors import OutputError, VpbatchWarning
from vpbatch.store import locks
from vpbatch.store.fs import Lake
from vpbatch.store.locks import Owner, heartbeat_reason, local_owner_state, stale_seconds

#: Seconds between two looks at a lease held by a live owner (``wait=True``).
WAIT_SECONDS: Final = 1.0
_ATTEMPTS: Final = 50


def _owner(data: bytes) -> Owner | None:
    try:
        body = json.loads(data)
        return Owner(**body["owner"])
    except (ValueError, TypeError, KeyError):
        return None


def lease_stale_reason(owner: Owner | None, modified_ns: int, *,
                       now: float | None = None) -> str | None:
    """Why a lease written last at ``modified_ns`` (store time) is dead, or None."""
    here = local_owner_state(owner)
    if here is not None:
        return here or None
    return heartbeat_reason((time.time() if now is None else now) - modified_ns / 1e9)


class Lease:
    """An exclusive lease named ``location`` on an object-store lake (module docstring).

    Parameters
    ----------
    lake : Lake
        An object-store lake.
    location : str
        The lease object.
    what : str
        What it protects, for messages (``future_mbo.MNQH6.2026-02-06``).
    """

    def __init__(self, lake: Lake, location: str, what: str) -> None:
        self.lake = lake
        self.location = location
        self.path = location  # the name messages show (as DirLock.path)
        self.what = what
        self.token = uuid.uuid4().hex
        #: Owners of stale leases taken over on the way in (for logs and tests).
        self.broken: list[str] = []
        self._etag = ""
        self._beats = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost = False
        self._beat: threading.Thread | None = None

    def _body(self) -> bytes:
        self._beats += 1
        return json.dumps({"owner": asdict(Owner.me(self.token)), "beat": self._beats,
                           "stale_after": stale_seconds()}, sort_keys=True).encode()

    def acquire(self, *, wait: bool = False) -> None:
        """Take the lease; with ``wait`` wait while a live owner holds it.

        Raises
        ------
        OutputError
            A live owner holds it and ``wait`` is false (the message names the owner), or
            the lease stays contended.
        """
        told = False
        attempts = 0
        while attempts < _ATTEMPTS:
            etag = self.lake.create(self.location, self._body())
            if etag is not None:
                self._etag = etag
                self._start_heartbeat()
                return
            held = self.lake.get(self.location)
            if held is None:  # released meanwhile: try again
                attempts += 1
                continue
            data, info = held
            owner = _owner(data)
            reason = lease_stale_reason(owner, info.mtime_ns)
            if reason is None:
                who = owner.describe() if owner else "an unreadable owner"
                if not wait:
                    raise OutputError(f"{self.location}: another build of {self.what} is "
                                      f"running ({who})")
                if not told:
                    warnings.warn(f"{self.location}: another build of {self.what} is running "
                                  f"({who}); waiting for it", VpbatchWarning, stacklevel=2)
                    told = True
                time.sleep(WAIT_SECONDS)
                continue
            etag = self.lake.replace(self.location, self._body(), info.etag)
            attempts += 1
            if etag is not None:
                self.broken.append(f"{owner.describe() if owner else 'unreadable owner'}: "
                                   f"{reason}")
                self._etag = etag
                self._start_heartbeat()
                return
        raise OutputError(f"{self.location}: cannot take the lease of {self.what} "
                          f"(contended {_ATTEMPTS} times)")

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._lost = False
        self._beat = threading.Thread(target=self._heartbeat, name="vpbatch-lease-heartbeat",
                                      daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(locks.HEARTBEAT_SECONDS):
            try:
                with self._lock:
                    etag = self.lake.replace(self.location, self._body(), self._etag)
                    if etag is None:
                        self._lost = True
                        return
                    self._etag = etag
            except Exception:
                continue

    def check(self) -> None:
        """Raise OutputError unless this lease is still held (call before committing)."""
        if self._beat is None:
            raise OutputError(f"{self.location}: lease of {self.what} is not held")
        if not self._lost:
            held = self.lake.get(self.location)
            owner = _owner(held[0]) if held is not None else None
            self._lost = owner is None or owner.token != self.token
        if self._lost:
            raise OutputError(f"{self.location}: lost the lease of {self.what} (another host "
                              "took it as stale); nothing committed")

    def release(self) -> None:
        """Give the lease up (idempotent; a lease taken over is left to its new owner)."""
        if self._beat is None:
            return
        self._stop.set()
        self._beat.join()
        self._beat = None
        if not self._lost:
            with contextlib.suppress(Exception):
                self.lake.delete_if(self.location, self._etag)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def read_lease(lake: Lake, location: str) -> dict[str, Any] | None:
    """The lease object's JSON (tests and diagnostics), None when there is none."""
    held = lake.get(location)
    return None if held is None else dict(json.loads(held[0]))
