"""A lock that holds across hosts sharing the lake: a directory renamed into place.

Why not ``flock``: on network filesystems file locks are only as good as the mount. NFS
mounted with ``nolock`` or ``local_lock=all``, sshfs and other FUSE mounts, and Lustre
without ``-o flock`` keep the lock on the local machine only (two hosts both "hold" it) or
refuse it (``ENOLCK``). Renaming a directory onto a name that exists is refused atomically
on every POSIX filesystem, NFS included, so the lock is the existence of a directory.

Protocol (``lake/gold/.locks/<product_type>.<symbol>.<dt>.lock/``):

* **acquire**: write ``<token>.owner`` (JSON: host, boot id, pid, process start time, time)
  into a private temp directory (``.<lock>.<token>.<machine>-<pid>.new``: a process killed
  before its owner file is written is still known by name), then ``rename`` it onto the lock
  name. The rename fails with
  ``EEXIST``/``ENOTEMPTY`` when someone holds the lock; a held lock is never empty.
* **heartbeat**: while held, a daemon thread touches the owner file every
  :data:`HEARTBEAT_SECONDS`.
* **stale owner**: on this machine (same host name *and* boot id) the owner is stale as soon
  as its process is gone (or its pid was reused); from another machine only when its
  heartbeat is older than the stale time (:data:`STALE_SECONDS`, env
  ``VPBATCH_LOCK_STALE_SECONDS``), which assumes clocks in sync to well under that.
* **breaking** a stale lock unlinks *that owner's* file (one breaker wins, the others get
  ``ENOENT``), removes the now empty directory, and acquires again.
* **release** unlinks the owner file and removes the directory. An owner whose file was
  broken away (it looked dead) finds out from :meth:`DirLock.check` before committing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from vpbatch.errors import OutputError

#: Seconds between two touches of a held lock's owner file.
HEARTBEAT_SECONDS: Final = 5.0
#: An owner on another machine is dead after this many seconds without a heartbeat.
STALE_SECONDS: Final = 60.0
STALE_ENV: Final = "VPBATCH_LOCK_STALE_SECONDS"
OWNER_SUFFIX: Final = ".owner"
#: Rounds of break-and-retry before giving up (only reached under heavy contention).
_ATTEMPTS: Final = 50
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str]:
    """Fields 3.. of ``/proc/<pid>/stat`` (Linux; [] when unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may contain spaces, so split after its ')'.
    return stat[stat.rfind(")") + 2:].split()


def _process_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (field 22), '' when unknown."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a killed process not yet reaped (zombie) holds nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    fields = _proc_stat(pid)
    return not fields or fields[0] not in ("Z", "X")


@dataclass(frozen=True)
class Owner:
    """Who holds a lock (the owner file's JSON)."""

    host: str
    boot_id: str
    pid: int
    process_start: str
    token: str
    since: str

    @classmethod
    def me(cls, token: str) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _process_start(pid), token,
                   dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def same_machine(self, other: Owner) -> bool:
        return bool(self.boot_id) and (self.host, self.boot_id) == (other.host, other.boot_id)

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid} since {self.since}"


def stale_seconds() -> float:
    """The stale time in force (env ``VPBATCH_LOCK_STALE_SECONDS`` or :data:`STALE_SECONDS`)."""
    text = os.environ.get(STALE_ENV)
    if not text:
        return STALE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise OutputError(f"{STALE_ENV}: '{text}' is not a positive number of seconds")
    return value


def _machine_tag() -> str:
    """8 hex digits naming this machine (host and boot id) in attempt folder names."""
    return hashlib.sha256(f"{socket.gethostname()}\0{_boot_id()}".encode()).hexdigest()[:8]


def _attempt_process_gone(name: str) -> bool:
    """True when the attempt folder ``name`` (``.<lock>.<token>.<machine>-<pid>.new``) is of
    a process of this machine that is gone; False when it may live, is elsewhere or unnamed."""
    tag = name.removesuffix(".new").rsplit(".", 1)[-1]
    machine, _, pid = tag.partition("-")
    if not _boot_id() or machine != _machine_tag() or not pid.isdigit():
        return False
    return not _pid_alive(int(pid))


def _read_owner(path: Path) -> tuple[Path, Owner | None] | None:
    """(owner file, parsed owner or None if unreadable) of the lock at ``path``, None if free."""
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(OWNER_SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not names:
        return None
    file = path / names[0]
    try:
        data = json.loads(file.read_text())
        return file, Owner(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return file, None


def local_owner_state(owner: Owner | None) -> str | None:
    """For an owner on this machine (same host name and boot id): why it is dead, or '' while
    its process runs; None for an owner elsewhere (judged by its heartbeat)."""
    if owner is None or not owner.same_machine(Owner.me("")):
        return None
    if not _pid_alive(owner.pid):
        return f"process {owner.pid} on {owner.host} is gone"
    if owner.process_start and _process_start(owner.pid) not in ("", owner.process_start):
        return f"process {owner.pid} on {owner.host} is gone (pid reused)"
    return ""


def heartbeat_reason(age: float) -> str | None:
    """Why an owner elsewhere whose heartbeat is ``age`` seconds old is dead, or None."""
    limit = stale_seconds()
    if age > limit:
        return f"no heartbeat for {age:.0f} s (stale after {limit:g} s)"
    return None


def stale_reason(file: Path, owner: Owner | None, *, now: float | None = None) -> str | None:
    """Why the lock owned through ``file`` is dead, or None when it may be alive."""
    here = local_owner_state(owner)
    if here is not None:
        return here or None
    try:
        age = (time.time() if now is None else now) - file.stat().st_mtime
    except FileNotFoundError:
        return "released"
    return heartbeat_reason(age)


class DirLock:
    """An exclusive, non-blocking lock named ``path`` (see the module docstring).

    Parameters
    ----------
    path : Path
        The lock directory; its parent must exist.
    what : str
        What the lock protects, for messages (``future_mbo.MNQH6.2026-02-06``).

    Raises
    ------
    OutputError
        From :meth:`acquire` when another live owner holds it (the message names the owner)
        or the folder cannot be written; from :meth:`check` when the lock was lost.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.token = uuid.uuid4().hex
        #: Owners of stale locks this lock broke on the way in (for logs and tests).
        self.broken: list[str] = []
        self._file = self.path / f"{self.token}{OWNER_SUFFIX}"
        self._attempt_name = f".{self.path.name}.{self.token}.{_machine_tag()}-{os.getpid()}.new"
        self._stop = threading.Event()
        self._lost = False
        self._beat: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def acquire(self) -> None:
        for _ in range(_ATTEMPTS):
            if self._try_rename():
                self._start_heartbeat()
                self._sweep_dead_attempts()
                return
            held = _read_owner(self.path)
            if held is None:  # free, or between a break and its rmdir: take it next round
                with contextlib.suppress(OSError):
                    self.path.rmdir()
                continue
            file, owner = held
            reason = stale_reason(file, owner)
            if reason is None:
                who = owner.describe() if owner else f"owner file {file.name}"
                raise OutputError(f"{self.path}: another build of {self.what} is running "
                                  f"({who})")
            try:
                file.unlink()  # only one breaker of this owner succeeds
            except FileNotFoundError:
                continue
            self.broken.append(f"{owner.describe() if owner else file.name}: {reason}")
            with contextlib.suppress(OSError):
                self.path.rmdir()
        raise OutputError(f"{self.path}: cannot take the lock of {self.what} "
                          f"(contended {_ATTEMPTS} times)")

    def _try_rename(self) -> bool:
        parent = self.path.parent
        tmp = parent / self._attempt_name
        try:
            tmp.mkdir()
            owner = Owner.me(self.token)
            with open(tmp / self._file.name, "w") as fh:
                fh.write(json.dumps(asdict(owner), sort_keys=True))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputError(f"{self.path}: cannot create lock: "
                              f"{exc.strerror or exc}") from None
        try:
            os.rename(tmp, self.path)
            return True
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno == errno.ENOTDIR and self.path.is_file():
                # A lock *file* of an older vpbatch (flock era); a dead name now.
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                return False
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                return False
            raise OutputError(f"{self.path}: cannot create lock: "
                              f"{exc.strerror or exc}") from None

    def _sweep_dead_attempts(self) -> None:
        """Remove temp folders that died before their rename (a process killed mid-acquire).

        A temp folder is dead when its owner is stale by the same rule as a held lock; one
        without a readable owner file (killed before or while writing it) when its name's
        process is gone from this machine, or else when it is older than the stale time. A live
        contender's is kept.
        """
        for tmp in self.path.parent.glob(f".{self.path.name}.*.new"):
            if tmp.name == self._attempt_name:
                continue
            held = _read_owner(tmp)
            if held is not None and held[1] is not None:
                dead = stale_reason(*held) is not None
            elif _attempt_process_gone(tmp.name):
                dead = True
            else:
                try:
                    dead = time.time() - tmp.stat().st_mtime > stale_seconds()
                except FileNotFoundError:
                    continue
            if dead:
                shutil.rmtree(tmp, ignore_errors=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="vpbatch-lock-heartbeat",
                                      daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self._file)
            except FileNotFoundError:
                self._lost = True
                return
            except OSError:  # a hiccup of the mount: the next beat tries again
                continue

    def check(self) -> None:
        """Raise OutputError unless this lock is still held (call before committing)."""
        if self._beat is None:
            raise OutputError(f"{self.path}: lock of {self.what} is not held")
        if self._lost or not self._file.exists():
            self._lost = True
            raise OutputError(f"{self.path}: lost the lock of {self.what} (another host took "
                              "it as stale); nothing committed")

    def release(self) -> None:
        """Give the lock up (idempotent; a lost lock is left to its new owner)."""
        if self._beat is None:
            return
        self._stop.set()
        self._beat.join()
        self._beat = None
        try:
            self._file.unlink()
        except FileNotFoundError:
            return
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
