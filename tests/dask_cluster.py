"""A real Dask cluster for the tests: ``dask scheduler`` + ``dask worker`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

DASK = Path(sys.executable).with_name("dask")


class Cluster:
    """A scheduler and ``n_workers`` one-thread workers on 127.0.0.1; :meth:`close` ends all.

    ``isolated`` gives each worker an empty folder of its own (cwd, ``TMPDIR``,
    ``XDG_CACHE_HOME``): nodes that share no disk with the client or each other. ``env``
    adds to every process's environment. Each process logs to ``folder/<name>.log``.
    """

    def __init__(self, folder: Path, n_workers: int = 2, *, isolated: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        base = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.scheduler = self._start("scheduler", folder, [
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
            "127.0.0.1:0", "--scheduler-file", str(self.scheduler_file)], base)
        self.address = self._wait_address()
        self.homes = [folder / f"worker{i}" if isolated else folder for i in range(n_workers)]
        self.workers = []
        for i, home in enumerate(self.homes):
            own = base
            if isolated:
                home.mkdir()
                own = {**base, "TMPDIR": str(home), "XDG_CACHE_HOME": str(home / "cache")}
            self.workers.append(self._start(f"worker{i}", home, [
                "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--host", "127.0.0.1", "--name", f"w{i}", "--death-timeout", "60"], own))
        from distributed import Client

        with Client(self.address, timeout="60s", set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=180)

    def _start(self, name: str, cwd: Path, args: list[str],
               env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(DASK), *args], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def _wait_address(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                pytest.fail(f"dask scheduler exited: {self.log('scheduler')}")
            try:
                return str(json.loads(self.scheduler_file.read_text())["address"])
            except (FileNotFoundError, ValueError, KeyError):
                time.sleep(0.1)
        pytest.fail("dask scheduler did not write its scheduler file")

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=3)  # a --no-nanny worker may sit on SIGTERM
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
