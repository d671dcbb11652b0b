"""The partition lock on an object store: a lease object with conditional writes (moto)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import pytest

from tests.s3.conftest import subprocess_env
from vpbatch.errors import OutputError
from vpbatch.store import lease as lease_module
from vpbatch.store import locks
from vpbatch.store.fs import open_lake
from vpbatch.store.lease import Lease, read_lease
from vpbatch.store.locks import Owner

WHAT = "future_mbo.MNQH6.2026-02-06"
HOLDER = """
import sys, time
from vpbatch.store.fs import open_lake
from vpbatch.store.lease import Lease
lease = Lease(open_lake(sys.argv[1]), sys.argv[2], "x")
lease.acquire()
print("held", flush=True)
time.sleep(120)
"""


def put_owner(location: str, owner: Owner) -> None:
    """A lease object as another owner would have written it (now)."""
    body = {"owner": asdict(owner), "beat": 1, "stale_after": 60.0}
    open_lake(location.rsplit("/", 1)[0]).put(location, json.dumps(body).encode())


def test_lease_given_holder_second_lease_refuses_naming_host_and_pid(lake_url: str) -> None:
    lake = open_lake(lake_url)
    where = lake.loc("gold", ".locks", f"{WHAT}.lock")
    with Lease(lake, where, WHAT) as held:
        body = read_lease(lake, where)
        assert body is not None and body["owner"]["token"] == held.token
        assert body["owner"]["pid"] == os.getpid()
        with pytest.raises(OutputError) as err:
            Lease(lake, where, WHAT).acquire()
        assert str(err.value).startswith(
            f"{where}: another build of {WHAT} is running (host {socket.gethostname()} pid "
            f"{os.getpid()} since ")
        held.check()
    assert read_lease(lake, where) is None  # released: deleted
    with Lease(lake, where, WHAT):  # and free again
        pass


def test_lease_given_owner_killed_with_sigkill_is_taken_over_at_once(lake_url: str) -> None:
    lake = open_lake(lake_url)
    where = lake.loc("p.lock")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, lake_url, where],
                            stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lease = Lease(lake, where, "x")
    lease.acquire()  # same machine, process gone: no waiting for a stale heartbeat
    try:
        assert len(lease.broken) == 1 and f"pid {proc.pid}" in lease.broken[0]
        assert "is gone" in lease.broken[0]
    finally:
        lease.release()


def test_lease_given_other_host_fresh_refuses_and_stale_is_taken_over(
        lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = open_lake(lake_url)
    where = lake.loc("p.lock")
    other = Owner("worker-9", "other-boot", 4121, "", "f" * 32, "2026-02-06T14:30:00+00:00")
    put_owner(where, other)
    with pytest.raises(OutputError, match=r"another build of x is running \(host worker-9 pid "
                                          r"4121 since 2026-02-06T14:30:00\+00:00\)"):
        Lease(lake, where, "x").acquire()
    monkeypatch.setenv(locks.STALE_ENV, "1")
    deadline = time.monotonic() + 60
    lease = Lease(lake, where, "x")
    while True:  # the store's Last-Modified has whole seconds: wait until it is old enough
        try:
            lease.acquire()
            break
        except OutputError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    try:
        assert lease.broken[0].startswith("host worker-9 pid 4121 since ")
        assert "no heartbeat for" in lease.broken[0]
        body = read_lease(lake, where)
        assert body is not None and body["owner"]["token"] == lease.token
    finally:
        lease.release()


def test_lease_heartbeat_rewrites_the_lease(lake_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_SECONDS", 0.05)
    lake = open_lake(lake_url)
    where = lake.loc("p.lock")
    with Lease(lake, where, "x"):
        deadline = time.monotonic() + 30
        while (body := read_lease(lake, where)) is not None and body["beat"] < 4:
            assert time.monotonic() < deadline, body
            time.sleep(0.02)


def test_lease_taken_over_by_another_host_is_lost_and_left_alone(
        lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_SECONDS", 0.05)
    lake = open_lake(lake_url)
    where = lake.loc("p.lock")
    mine = Lease(lake, where, WHAT)
    mine.acquire()
    thief = Owner("worker-3", "other-boot", 7, "", "e" * 32, "2026-02-06T14:31:00+00:00")
    put_owner(where, thief)  # another host judged us dead and took the lease over
    with pytest.raises(OutputError, match=rf"{where}: lost the lease of {WHAT} \(another host "
                                          r"took it as stale\); nothing committed"):
        mine.check()
    mine.release()
    body = read_lease(lake, where)
    assert body is not None and body["owner"]["token"] == "e" * 32  # theirs, untouched


def test_lease_given_wait_takes_it_when_the_holder_releases(
        lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease_module, "WAIT_SECONDS", 0.05)
    lake = open_lake(lake_url)
    where = lake.loc("p.lock")
    first = Lease(lake, where, "x")
    first.acquire()
    events: list[str] = []
    waiting = threading.Event()
    second = Lease(lake, where, "x")

    def wait_for_it() -> None:
        waiting.set()
        with pytest.warns(Warning, match="is running .*; waiting for it"):
            second.acquire(wait=True)
        events.append("second acquired")

    thread = threading.Thread(target=wait_for_it)
    thread.start()
    waiting.wait(10)
    time.sleep(0.3)  # the waiter is polling a live lease
    events.append("first released")
    first.release()
    thread.join(30)
    assert events == ["first released", "second acquired"]
    body = read_lease(lake, where)
    assert body is not None and body["owner"]["token"] == second.token
    second.release()
