"""``vpbatch`` ends without the interpreter's teardown (``cli.main.fast_exit``), and still
runs its exit handlers, flushes what it printed and keeps its exit code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = """
import shutil, sys, tempfile, threading, time, weakref
from pathlib import Path
from cli.main import fast_exit

class Holder:
    pass

work = Path(tempfile.mkdtemp(prefix="vpbatch-exit-"))
holder = Holder()
weakref.finalize(holder, shutil.rmtree, work)  # left alive: runs as an exit handler
print(work)
sys.stdout.write("x" * 200_000)  # more than any pipe buffer: flushed before the exit
if {thread!r}:
    def late() -> None:
        time.sleep(0.5)
        (Path({marker!r})).write_text("done")
    threading.Thread(target=late).start()  # non-daemon: the exit waits for it
fast_exit({code!r})
"""


def _run(tmp_path: Path, code: object, thread: bool = False) -> subprocess.CompletedProcess[str]:
    marker = str(tmp_path / "marker")
    script = textwrap.dedent(_SCRIPT).format(code=code, thread=thread, marker=marker)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("code,status", [(None, 0), (0, 0), (3, 3), (130, 130)])
def test_fast_exit_keeps_the_code_flushes_stdout_and_runs_exit_handlers(
        tmp_path: Path, code: object, status: int) -> None:
    done = _run(tmp_path, code)
    assert done.returncode == status, done.stderr
    work, rest = done.stdout.split("\n", 1)
    assert rest == "x" * 200_000
    assert not Path(work).exists()  # weakref.finalize ran at exit
    assert done.stderr == ""


def test_fast_exit_given_message_prints_it_and_exits_1(tmp_path: Path) -> None:
    done = _run(tmp_path, "Error: bad thing")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: bad thing"


def test_fast_exit_given_running_non_daemon_thread_waits_for_it(tmp_path: Path) -> None:
    done = _run(tmp_path, 0, thread=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "marker").read_text() == "done"


def test_vpbatch_given_usage_error_exits_2_with_its_message() -> None:
    done = subprocess.run([sys.executable, "-m", "cli", "build", "--no-such-option"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "No such option '--no-such-option'" in done.stderr
