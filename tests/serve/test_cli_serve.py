"""``vpbatch serve`` on the command line: help, refusals, the real server process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from click.testing import CliRunner

from cli.main import cli
from vpbatch.serve.server import exposure_warning, is_loopback, viewer_url

REPO = Path(__file__).resolve().parents[2]


def test_serve_help_documents_the_example_and_options() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for text in ("--lake", "--host", "--port", "--token", "vacuum-pressure.html", "127.0.0.1"):
        assert text in result.output


def test_serve_given_missing_lake_exits_1_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--lake", str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code == 1
    # the one line is all: no URL to open before the refusal
    assert result.output.strip().splitlines() == [
        f"Error: --lake: {tmp_path / 'nope'} is not a folder (build a day first: vpbatch build)"]


def test_exposure_warning_given_public_host_without_token_warns() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("0.0.0.0", "s3cret") is None
    message = exposure_warning("0.0.0.0", None)
    assert message is not None and "anyone who can reach this port" in message
    assert "--token" in message
    assert viewer_url("0.0.0.0", 8002, "t") == "http://127.0.0.1:8002/?token=t"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_runs_uvicorn_on_loopback_until_interrupted(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--lake", str(tmp_path),
                             "--port", str(port)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert json.loads(resp.read())["status"] == "ok"
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        with urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert "No built days yet" in resp.read().decode()
    finally:
        proc.send_signal(2)
        proc.wait(timeout=20)
    assert proc.stderr is not None
    assert f"vpbatch serve: http://127.0.0.1:{port}/" in proc.stderr.read()
