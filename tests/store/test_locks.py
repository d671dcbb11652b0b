"""The partition lock across processes and hosts: refusal, dead owners, stale heartbeats."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import DAY, fake_build
from vpbatch.errors import OutputError
from vpbatch.store import locks
from vpbatch.store.locks import OWNER_SUFFIX, DirLock, Owner
from vpbatch.store.writer import PartitionWriter, is_complete

HOLDER = """
import sys, time
from vpbatch.store.locks import DirLock
lock = DirLock(sys.argv[1], "x")
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def fake_owner(path: Path, host: str, age: float, pid: int = 1) -> Path:
    """An owner file as another machine would leave it, last heartbeat ``age`` s ago."""
    path.mkdir()
    file = path / f"{'f' * 32}{OWNER_SUFFIX}"
    file.write_text(json.dumps({"host": host, "boot_id": "other-boot", "pid": pid,
                                "process_start": "", "token": "f" * 32,
                                "since": "2026-02-06T14:30:00+00:00"}))
    then = time.time() - age
    os.utime(file, (then, then))
    return file


def test_lock_given_holder_second_lock_refuses_naming_host_and_pid(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    with DirLock(path, "future_mbo.MNQH6.2026-02-06"):
        with pytest.raises(OutputError) as err:
            DirLock(path, "future_mbo.MNQH6.2026-02-06").acquire()
        assert str(err.value).startswith(
            f"{path}: another build of future_mbo.MNQH6.2026-02-06 is running (host "
            f"{socket.gethostname()} pid {os.getpid()} since ")
    assert not path.exists()
    with DirLock(path, "x"):  # released: free again
        assert path.is_dir()


def test_lock_given_owner_killed_with_sigkill_is_broken_at_once(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        with pytest.raises(OutputError, match=f"pid {proc.pid} since"):
            DirLock(path, "x").acquire()
        proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        lock = DirLock(path, "x")
        lock.acquire()  # dead but not reaped yet (a zombie): holds nothing
    finally:
        proc.kill()
        proc.wait()
    assert len(lock.broken) == 1
    assert f"process {proc.pid} on {socket.gethostname()} is gone" in lock.broken[0]
    lock.release()


def test_lock_given_attempt_of_killed_process_removes_its_temp_folder_keeps_live_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A process killed between its temp folder and the rename leaves `.<lock>.<token>.new`.
    path = tmp_path / "p.lock"
    dead = fake_owner(tmp_path / ".p.lock.dead.new", "worker-7", age=30).parent
    live = fake_owner(tmp_path / ".p.lock.live.new", "worker-8", age=1).parent
    empty_old = tmp_path / ".p.lock.empty.new"
    empty_old.mkdir()
    os.utime(empty_old, (time.time() - 30, time.time() - 30))
    monkeypatch.setenv(locks.STALE_ENV, "20")
    with DirLock(path, "x"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.lock.live.new"]
    assert live.is_dir() and not dead.exists()


def test_lock_given_fresh_attempt_of_killed_process_without_owner_removes_it(
        tmp_path: Path) -> None:
    """Killed between ``mkdir`` of its attempt and its owner file (or mid-write): the name
    says which process of this machine it was, so it goes at once, not after the stale time."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mine = locks._machine_tag()
    no_owner = tmp_path / f".p.lock.{'a' * 32}.{mine}-{gone.pid}.new"
    no_owner.mkdir()
    half_written = tmp_path / f".p.lock.{'b' * 32}.{mine}-{gone.pid}.new"
    half_written.mkdir()
    (half_written / f"{'b' * 32}{OWNER_SUFFIX}").write_text('{"host": "')
    contender = tmp_path / f".p.lock.{'c' * 32}.{mine}-{os.getpid()}.new"  # alive: between
    contender.mkdir()                                                        # mkdir and write
    elsewhere = tmp_path / f".p.lock.{'d' * 32}.0badc0de-{gone.pid}.new"  # another machine
    elsewhere.mkdir()
    with DirLock(tmp_path / "p.lock", "x") as lock:
        assert (tmp_path / "p.lock" / f"{lock.token}{OWNER_SUFFIX}").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([contender.name, elsewhere.name])


def test_lock_given_other_host_with_fresh_heartbeat_refuses(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    fake_owner(path, "worker-7", age=5)
    with pytest.raises(OutputError, match=r"is running \(host worker-7 pid 1 since "):
        DirLock(path, "x").acquire()


def test_lock_given_other_host_silent_past_stale_time_is_broken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.lock"
    fake_owner(path, "worker-7", age=30)
    monkeypatch.setenv(locks.STALE_ENV, "20")
    with DirLock(path, "x") as lock:
        assert len(lock.broken) == 1
        assert lock.broken[0].startswith("host worker-7 pid 1 since ")
        assert lock.broken[0].endswith("no heartbeat for 30 s (stale after 20 s)")
        assert [p.name for p in path.iterdir()] == [f"{lock.token}{OWNER_SUFFIX}"]


def test_lock_given_bad_stale_time_env_raises_naming_it(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.lock"
    fake_owner(path, "worker-7", age=30)
    monkeypatch.setenv(locks.STALE_ENV, "soon")
    with pytest.raises(OutputError, match="VPBATCH_LOCK_STALE_SECONDS: 'soon' is not a positive"):
        DirLock(path, "x").acquire()


def test_lock_heartbeat_keeps_owner_file_fresh(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_SECONDS", 0.05)
    with DirLock(tmp_path / "p.lock", "x") as lock:
        owner = tmp_path / "p.lock" / f"{lock.token}{OWNER_SUFFIX}"
        os.utime(owner, (1, 1))
        deadline = time.monotonic() + 5
        while owner.stat().st_mtime < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert time.time() - owner.stat().st_mtime < 5


def test_lock_given_legacy_flock_file_takes_its_name(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    path.write_bytes(b"")  # what vpbatch <= 0.1 left behind
    with DirLock(path, "x"):
        assert path.is_dir()


def test_writer_given_lock_broken_by_another_host_commits_nothing(tmp_path: Path) -> None:
    build = fake_build(n_states=3)
    out = PartitionWriter(tmp_path, build.product, DAY, config=build.config)
    out.open()
    out.write_snapshots(build.snapshots)
    out.write_grid(build.grid)
    lock_dir = tmp_path / "gold" / ".locks" / "future_mbo.MNQH6.2026-02-06.lock"
    for owner in lock_dir.iterdir():  # what a host that judged us dead does
        owner.unlink()
    with pytest.raises(OutputError, match=r"lost the lock of future_mbo\.MNQH6\.2026-02-06"):
        out.commit()
    assert not is_complete(tmp_path, build.product, DAY)
    assert not list((tmp_path / "gold").glob(".tmp.*"))


def _contend(path: str, counter: str, rounds: int) -> int:
    """Increment a counter file under the lock (read, pause, write): lost updates if unsafe."""
    won = 0
    for _ in range(rounds):
        try:
            lock = DirLock(Path(path), "x")
            lock.acquire()
        except OutputError:
            continue
        try:
            value = int(Path(counter).read_text())
            time.sleep(0.001)
            Path(counter).write_text(str(value + 1))
            won += 1
        finally:
            lock.release()
    return won


def test_lock_given_four_processes_contending_never_lets_two_in(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        wins = pool.starmap(_contend, [(str(tmp_path / "p.lock"), str(counter), 60)] * 4)
    assert sum(wins) >= 4  # the test exercised the lock
    assert int(counter.read_text()) == sum(wins)
    assert not (tmp_path / "p.lock").exists()
    assert Owner.me("t").same_machine(Owner.me("u"))
