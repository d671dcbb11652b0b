"""The viewer page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

``make test`` installs chromium when it is missing; these tests fail (never skip) without it.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from playwright.sync_api import Browser, Page

from tests.serve.conftest import DAY, SYMBOL, ServerThread
from vpbatch.clock import et_ns
from vpbatch.pictures import palette
from vpbatch.serve import create_app
from vpbatch.serve.scale import color_scale
from vpbatch.serve.stream import BUFFER_STATES

#: How the tests, the benchmark and users' CI launch Chromium (no GPU, no network chatter).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = os.environ.get("VPBATCH_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y "
                    "chromium); the browser tests never skip")
    return path


class Watched:
    """A page with its console errors and the websockets it opened."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.sockets: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    yield Watched(page)
    page.close()


def viewer(server: ServerThread, **params: Any) -> str:
    query = {"product_type": "future_mbo", "symbol": SYMBOL, "dt": DAY.isoformat(),
             "throttle_ms": "25", **params}
    return f"{server.base}/vacuum-pressure.html?" + "&".join(f"{k}={v}" for k, v in query.items())


def stats(page: Page) -> dict[str, Any]:
    return page.evaluate("window.vp.stats")


def wait_for(page: Page, condition: str, timeout_s: float = 30) -> None:
    page.wait_for_function(condition, timeout=timeout_s * 1000)


def assert_closed_without_retry(page: Page, state: str) -> None:
    """The server closed the socket and the page's close handler scheduled no reconnect.

    Waits for the socket itself to be CLOSED: the browser sets ``readyState`` and runs the
    ``close`` handlers in one task (HTML, "the WebSocket connection is closed"), so from then
    on a reconnect would already show as a retry timer, ``retries > 0`` and ``reconnecting``,
    whatever its delay; no sleep has to outlast it.
    """
    wait_for(page, "window.vp.conn.ws.readyState === WebSocket.CLOSED", timeout_s=10)
    conn = page.evaluate("""() => ({timer: window.vp.conn.timer ?? null,
                                   retries: window.vp.conn.retries,
                                   connection: window.vp.stats.connection})""")
    assert conn == {"timer": None, "retries": 0, "connection": state}, conn


def canvas_pixels(page: Page) -> np.ndarray:
    """RGB of the heatmap canvas as drawn (device pixels)."""
    data = page.evaluate("""() => {
        const c = document.getElementById('heatmap');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = '';
        for (let i = 0; i < px.length; i += 4096) {
            s += String.fromCharCode(...px.subarray(i, i + 4096));
        }
        return [c.width, c.height, btoa(s)];
    }""")
    width, height, b64 = data
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(height, width, 4)[..., :3]


def test_page_loads_receives_frames_and_draws_the_heatmap(server: ServerThread,
                                                          watched: Watched) -> None:
    page = watched.page
    page.goto(viewer(server, speed=50, start_time="09:30"))
    wait_for(page, "window.vp && window.vp.stats.drawn >= 60")
    assert "MNQH6 · 2026-02-06 · lake" in page.text_content("#title")
    px = canvas_pixels(page).astype(int)
    background = np.array([0x0B, 0x0C, 0x10])
    painted = np.abs(px - background).sum(axis=2) > 30
    assert painted.mean() > 0.02  # cells, lines and the regime band are on the canvas
    chroma = px.max(axis=2) - px.min(axis=2)
    assert (chroma > 60).sum() > 50  # coloured (pressure/vacuum) cells, not only grey depth
    status = page.text_content("#status")
    for field in ("time: 09:3", "spot: 215", "regime: ", "frames/s: ", "dropped: ",
                  "connection: open"):
        assert field in status
    assert watched.errors == []


def test_page_pause_resume_and_seek_control_the_stream(server: ServerThread,
                                                       watched: Watched) -> None:
    page = watched.page
    page.goto(viewer(server, speed=20, start_time="09:30"))
    wait_for(page, "window.vp && window.vp.stats.received >= 10")
    page.click("#pause")
    wait_for(page, "window.vp.stats.paused === true")
    assert page.text_content("#pause") == "Resume"
    # Counted from the pause's status frame: after it only the states already in the
    # server's buffer and the one pair being written may land, never the stream.
    before = stats(page)["received"]
    time.sleep(1.0)  # the behaviour under test: a paused stream stays quiet for a second
    assert stats(page)["received"] - before <= BUFFER_STATES + 1
    page.click("#pause")
    wait_for(page, f"window.vp.stats.paused === false && window.vp.stats.received > {before + 3}")
    page.fill("#seek-time", "09:37")
    page.click("#seek-form button")
    target = et_ns(DAY, dt.time(9, 37))
    wait_for(page, f"window.vp.stats.ts && BigInt(window.vp.stats.ts) >= {target}n")
    oldest = page.evaluate("String(window.vp.heatmap.ts[window.vp.heatmap.slotOf(0)])")
    assert int(oldest) >= target  # the history restarted at the seek target
    page.select_option("#speed", "100")
    wait_for(page, "window.vp.conn.speed === 100")
    assert watched.errors == []


def test_page_shows_end_and_does_not_reconnect(server: ServerThread, watched: Watched) -> None:
    page = watched.page
    page.goto(viewer(server, speed=0, start_time="09:39"))
    wait_for(page, "window.vp && window.vp.stats.connection === 'ended'")
    assert "End of data" in page.text_content("#banner")
    assert_closed_without_retry(page, "ended")
    assert len(watched.sockets) == 1
    assert watched.errors == []


def test_page_shows_error_for_bad_parameters_and_does_not_reconnect(
        server: ServerThread, watched: Watched) -> None:
    page = watched.page
    page.goto(viewer(server, symbol="../../etc"))
    wait_for(page, "window.vp && window.vp.stats.connection === 'error'")
    assert "symbol: '../../etc' is not a contract or ticker" in page.text_content("#banner")
    assert_closed_without_retry(page, "error")
    assert len(watched.sockets) == 1


def test_page_reconnect_url_resumes_after_the_last_state(server: ServerThread,
                                                         watched: Watched) -> None:
    page = watched.page
    page.goto(viewer(server, speed=20, start_time="09:30"))
    wait_for(page, "window.vp && window.vp.stats.received >= 5")
    url, last = page.evaluate("[window.vp.conn.url(), window.vp.conn.lastTs]")
    start = url.split("start_time=")[1].split("&")[0].replace("%3A", ":")
    resumed = et_ns(DAY, dt.time.fromisoformat(start))
    assert int(last) < resumed <= int(last) + 1000


def test_page_tooltip_shows_the_cell_under_the_mouse(server: ServerThread,
                                                     watched: Watched) -> None:
    page = watched.page
    page.goto(viewer(server, speed=50, start_time="09:30"))
    wait_for(page, "window.vp && window.vp.stats.drawn >= 30")
    page.click("#pause")
    wait_for(page, "window.vp.stats.paused === true")
    box = page.locator("#heatmap").bounding_box()
    assert box is not None
    plot_w = page.evaluate("window.vp.heatmap.view.plotW")
    page.mouse.move(box["x"] + plot_w - 3, box["y"] + box["height"] * 0.45)
    tip = page.text_content("#tooltip")
    assert tip is not None and "pressure_now" in tip and "rest_depth" in tip and "ET" in tip


def _arrow_b64(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode()


def test_arrow_decoder_reads_what_pyarrow_writes(server: ServerThread, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{server.base}/health")
    table = pa.table({
        "i8": pa.array([-3, 0, 7], pa.int8()), "u16": pa.array([0, 65535, 2], pa.uint16()),
        "i32": pa.array([-50, 0, 50], pa.int32()), "i64": pa.array([-(2**40), 1, 2**40]),
        "f32": pa.array([0.5, -1.25, 3e38], pa.float32()), "f64": pa.array([np.pi, -0.0, 1e-300]),
        "f64n": pa.array([1.0, None, 3.0]),
        "ts": pa.array([0, 1_770_388_200_191_628_078, 5], pa.timestamp("ns", tz="UTC")),
        "flag": pa.array([True, False, True]),
    })
    got = page.evaluate("""async (b64) => {
        const m = await import('/static/js/arrow.js');
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const t = m.decodeArrow(bytes.buffer);
        const out = {length: t.length, names: t.schema.map((f) => f.name),
                     types: t.schema.map((f) => f.type.kind + f.type.bitWidth)};
        const show = (v) => Number.isNaN(v) ? 'NaN' : v;
        for (const f of t.schema) out[f.name] = Array.from(m.numbers(t, f.name), show);
        out.ts_exact = Array.from(t.columns.ts, String);
        return out;
    }""", _arrow_b64(table))
    assert got["length"] == 3 and got["names"] == table.column_names
    assert got["types"] == ["int8", "int16", "int32", "int64", "float32", "float64", "float64",
                            "timestamp64", "bool1"]
    for name in ("i8", "u16", "i32", "i64", "f64"):
        assert got[name] == table.column(name).to_pylist(), name
    assert got["f32"] == pytest.approx(table.column("f32").to_pylist(), rel=1e-7)
    assert got["f64n"] == [1.0, "NaN", 3.0]
    assert got["flag"] == [1, 0, 1]
    assert got["ts_exact"] == [str(v) for v in table.column("ts").cast(pa.int64()).to_pylist()]


def test_page_colour_scale_is_the_plot_colour_scale(server: ServerThread,
                                                    watched: Watched) -> None:
    page = watched.page
    page.goto(f"{server.base}/health")
    nets = [-5.0, -1.0, -0.3, -1e-9, 0.0, 0.2, 0.999, 1.0, 4.0, float("nan")]
    depths = [0, 1, 3, 10, 40, 99, 100, 500, 7, 0]
    got = page.evaluate("""async ([spec, nets, depths]) => {
        const m = await import('/static/js/colors.js');
        const s = new m.ColorScale(spec);
        s.netLimit = 1.0; s.depthLimit = 100;
        return nets.map((n, i) => s.rgb(n === null ? NaN : n, depths[i]));
    }""", [color_scale(), [None if np.isnan(n) else n for n in nets], depths])
    cmap = palette.net_cmap()  # what `vpbatch plot` draws with
    unit = np.nan_to_num(np.clip(np.array(nets) / 1.0, -1, 1) * 0.5 + 0.5, nan=0.5)
    expect = cmap(unit)[:, :3] * palette.brightness(np.array(depths, float), 100.0)[:, None]
    np.testing.assert_allclose(np.array(got), expect, atol=1e-6)
    assert color_scale()["net_colors"] == list(palette.NET_COLORS)


def test_index_page_links_each_built_day_to_the_viewer(server: ServerThread,
                                                       watched: Watched) -> None:
    page = watched.page
    page.goto(f"{server.base}/")
    page.click(f"text={DAY.isoformat()}")
    wait_for(page, "window.vp && window.vp.stats.received >= 1")
    assert "start_time=09" in page.url and watched.errors == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_page_reconnects_after_a_server_restart_and_resumes_where_it_was(
        serve_lake: Path, watched: Watched) -> None:
    page = watched.page
    port = _free_port()
    first = ServerThread(create_app(serve_lake), port=port).__enter__()
    try:
        page.goto(viewer(first, speed=20, start_time="09:30"))
        wait_for(page, "window.vp && window.vp.stats.received >= 20")
    finally:
        first.__exit__()  # the server goes away mid-stream (close 1012), no `end`
    wait_for(page, "window.vp.stats.connection === 'reconnecting'")
    before = stats(page)
    with ServerThread(create_app(serve_lake), port=port):
        wait_for(page, f"window.vp.stats.received >= {before['received'] + 10}")
        after = page.evaluate("""() => {
            const h = window.vp.heatmap;
            const ts = [];
            for (let c = 0; c < h.count; c++) ts.push(String(h.ts[h.slotOf(c)]));
            return {ts, connection: window.vp.stats.connection};
        }""")
    assert after["connection"] == "open" and len(watched.sockets) >= 2
    stamps = [int(t) for t in after["ts"]]
    assert stamps == sorted(set(stamps))  # the history kept going: no gap back, no repeat
    assert int(before["ts"]) in stamps and stamps[-1] > int(before["ts"])
