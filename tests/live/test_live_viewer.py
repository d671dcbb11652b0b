"""``vpbatch live`` as users run it, watched: the real CLI against the stand-in gateway, its
viewer server, ``/health``, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

import numpy as np
from playwright.sync_api import sync_playwright

from tests.live.conftest import REPO, SYNTH_DAY
from tests.live.gateway import TEST_KEY, StandInGateway
from tests.serve.test_browser import (
    CHROMIUM_ARGS,
    Watched,
    assert_closed_without_retry,
    canvas_pixels,
    chromium_path,
    wait_for,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(port: int) -> dict:
    with urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return json.loads(r.read())


def test_live_page_in_chromium_draws_the_session_and_health_reports_it(
        synth_file: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATABENTO_API_KEY": TEST_KEY}
    with StandInGateway(synth_file, rate=10_000) as gw:  # 15 s for the day
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "live", "--symbol", "MNQH6", "--dt",
             SYNTH_DAY.isoformat(), "--gateway", f"127.0.0.1:{gw.port}", "--port", str(port),
             "--lake", str(tmp_path), "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith(f"vpbatch live: http://127.0.0.1:{port}/"), line
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 800})
                watched = Watched(page)
                page.goto(f"http://127.0.0.1:{port}/vacuum-pressure.html?product_type="
                          f"future_mbo&symbol=MNQH6&source=live")
                wait_for(page, "window.vp && window.vp.stats.drawn >= 30", timeout_s=60)
                assert page.text_content("#live-badge") == "LIVE"
                wait_for(page, "window.vp.stats.live && window.vp.stats.live.records > 0")
                px = canvas_pixels(page).astype(int)
                painted = np.abs(px - np.array([0x0B, 0x0C, 0x10])).sum(axis=2) > 30
                assert painted.mean() > 0.01
                live = health(port)["live"]["MNQH6"]
                assert live["viewers"] == 1 and live["records"] > 0
                assert live["state"] in ("replaying", "live")
                assert live["latency"]["frames"] > 0 and live["latency"]["p50_ms"] is not None
                proc.send_signal(signal.SIGTERM)  # a clean stop: recording and partitions
                wait_for(page, "window.vp.stats.connection === 'ended'")
                assert_closed_without_retry(page, "ended")
                assert watched.errors == []
                browser.close()
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "MNQH6: built" in out
