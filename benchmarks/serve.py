"""``make bench`` (serve part): ``vpbatch serve`` as users run it, measured from outside.

One synthetic MNQH6 day (``BENCH_SERVE_RECORDS`` records, default 10,000,000) is generated and
built 09:30-09:45 ET into ``.bench/serve-lake`` (reused while it exists), then the real CLI
(``vpbatch serve``) is started on 127.0.0.1 and measured with real clients:

* states/s one websocket client receives at ``speed=0`` from the lake and from raw (the raw
  figure after its first frame; the time to the first frame is the fast-forward + warm-up);
* pacing at ``speed=1``: over ``BENCH_PACING_S`` seconds (default 60), how far the event time
  of each received frame is from ``speed x wall time`` since the first frame;
* the page in headless Chromium at ``speed=1``, ``throttle_ms=25``: states drawn per second
  (and how many the data holds per second at that time);
* server RSS idle and with 10 clients streaming at ``speed=1``;
* many viewers of one day (issue 22, :func:`viewers`): one viewer alone, then ``BENCH_VIEWERS``
  (default 50) connecting at once, at ``speed=1``, ``throttle_ms=25``, for ``BENCH_VIEWERS_S``
  (default 20) seconds of the day (``end_time`` closes the stream): the frames each receives
  compared byte for byte with the lone viewer's, server RSS (peak while they stream), the time
  from connecting to the first frame, and RSS 3 s after they left; then
  :data:`WAVES` waves of as many viewers at ``speed=0`` (each reads its first frame and leaves),
  their first-frame times and RSS 3 s after the last wave.

``python -m benchmarks.serve`` runs everything and appends one entry to BENCHMARKS.md
(``--print``: prints the entry instead); ``python -m benchmarks.serve viewers`` runs only the
viewer scenarios on a fresh server and prints their JSON (nothing recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import websockets

from benchmarks.run import _commit, _machine

ROOT = Path(__file__).resolve().parents[1]
LAKE = ROOT / ".bench" / "serve-lake"
RECORDS = int(os.environ.get("BENCH_SERVE_RECORDS", "10000000"))
PACING_S = float(os.environ.get("BENCH_PACING_S", "60"))
BROWSER_S = float(os.environ.get("BENCH_BROWSER_S", "15"))
PORT = int(os.environ.get("BENCH_SERVE_PORT", "8093"))
VIEWERS = int(os.environ.get("BENCH_VIEWERS", "50"))
VIEWERS_S = float(os.environ.get("BENCH_VIEWERS_S", "20"))
#: Waves of VIEWERS viewers at speed 0 (each reads its first frame and leaves).
WAVES = 4
SYMBOL, DAY = "MNQH6", dt.date(2026, 2, 6)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _vpbatch(*args: str) -> None:
    cmd = [str(ROOT / ".venv" / "bin" / "vpbatch"), *args]
    print("$ vpbatch", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def prepare() -> None:
    marker = LAKE / f".built-{RECORDS}"
    if marker.exists():
        return
    _vpbatch("synth", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--records", str(RECORDS),
             "--lake", str(LAKE), "--quiet")
    _vpbatch("build", "--symbol", SYMBOL, "--dt", DAY.isoformat(), "--start-time", "09:30",
             "--end-time", "09:45", "--lake", str(LAKE), "--force", "--quiet")
    marker.touch()


def url(**params: Any) -> str:
    query = {"product_type": "future_mbo", "symbol": SYMBOL, "dt": DAY.isoformat(), **params}
    return f"ws://127.0.0.1:{PORT}/v1/vacuum-pressure/stream?" + "&".join(
        f"{k}={v}" for k, v in query.items())


async def firehose(source: str, limit: int) -> dict[str, Any]:
    """States/s one client receives at speed=0 (after the first frame), first-frame latency."""
    started = time.perf_counter()
    first = None
    states = 0
    # max_queue=None: the client reads the socket as fast as frames come (with the default of
    # 16 queued messages the client's own flow control, not the server, sets the pace).
    async with websockets.connect(url(speed=0, source=source, start_time="09:30"),
                                  max_size=None, compression=None, max_queue=None) as ws:
        async for message in ws:
            if isinstance(message, bytes):
                states += 1
                if first is None:
                    first = time.perf_counter()
                if states >= limit:
                    break
    end = time.perf_counter()
    assert first is not None
    return {"states": states, "first_frame_s": round(first - started, 3),
            "states_per_s": round((states - 1) / (end - first), 1)}


async def _together(n: int, limit: int) -> dict[str, Any]:
    """Aggregate states/s of ``n`` simultaneous firehose clients (server vs client bound)."""
    runs = await asyncio.gather(*(firehose("lake", limit) for _ in range(n)))
    return {"clients": n, "each": [r["states_per_s"] for r in runs],
            "total_states_per_s": round(sum(r["states_per_s"] for r in runs), 1)}


async def pacing(seconds: float) -> dict[str, Any]:
    """Event time advanced vs wall time at speed 1, per received frame."""
    errors, gaps = [], []
    async with websockets.connect(url(speed=1, start_time="09:30", throttle_ms=25),
                                  max_size=None, compression=None) as ws:
        wall0 = ev0 = None
        last_ev = None
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                continue
            frame = json.loads(message)
            if frame["type"] in ("runtime_config", "status"):
                continue
            if frame["type"] != "grid_update":
                break
            now, ev = time.perf_counter(), int(frame["ts_ns"])
            if wall0 is None:
                wall0, ev0 = now, ev
            assert ev0 is not None
            errors.append((ev - ev0) / 1e9 - (now - wall0))
            if last_ev is not None:
                gaps.append((ev - last_ev) / 1e9)
            last_ev = ev
            if now - wall0 >= seconds:
                break
    absolute = [abs(e) for e in errors]
    frame = statistics.median(gaps)
    last_second = errors[-max(1, round(1 / max(frame, 1e-3))):]
    return {"seconds": seconds, "frames": len(errors),
            "final_error_ms": round(statistics.median(last_second) * 1000, 1),
            "within_one_frame": round(sum(a <= frame for a in absolute) / len(absolute), 4),
            "max_abs_error_ms": round(max(absolute) * 1000, 1),
            "median_abs_error_ms": round(statistics.median(absolute) * 1000, 2),
            "median_frame_interval_ms": round(statistics.median(gaps) * 1000, 1)}


async def many_clients(n: int, seconds: float, pid: int) -> dict[str, Any]:
    async def one() -> int:
        count = 0
        async with websockets.connect(url(speed=1, start_time="09:30"), max_size=None,
                                      compression=None) as ws:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                try:
                    message = await asyncio.wait_for(ws.recv(), deadline - time.perf_counter())
                except TimeoutError:
                    break
                count += isinstance(message, bytes)
        return count

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(seconds * 0.8)
    rss = _rss_mb(pid)
    counts = await asyncio.gather(*tasks)
    return {"clients": n, "rss_mb": rss, "states_each": min(counts)}


async def _viewer(params: dict[str, Any], started: float | None = None) -> dict[str, Any]:
    """One viewer to the end of its stream: frames, a digest of every frame in order, time
    from connecting (or ``started``) to the first grid frame."""
    started = time.perf_counter() if started is None else started
    digest = hashlib.sha256()
    first = None
    frames = dropped = 0
    last: dict[str, Any] = {}
    async with websockets.connect(url(**params), max_size=None, compression=None,
                                  open_timeout=60) as ws:
        async for message in ws:
            if isinstance(message, bytes):
                frames += 1
                if first is None:
                    first = time.perf_counter()
                digest.update(message)
                continue
            frame = json.loads(message)
            if frame["type"] == "grid_update":
                digest.update(message.encode())
                dropped += frame["dropped"]
            elif frame["type"] != "runtime_config":
                last = frame
    return {"frames": frames, "dropped": dropped, "digest": digest.hexdigest(),
            "first_frame_s": None if first is None else first - started,
            "end": last.get("type"), "reason": last.get("reason")}


async def _first_frame(params: dict[str, Any], started: float) -> float:
    """Seconds from ``started`` to this viewer's first grid frame (then it leaves)."""
    async with websockets.connect(url(**params), max_size=None, compression=None,
                                  open_timeout=60) as ws:
        async for message in ws:
            if isinstance(message, bytes):
                return time.perf_counter() - started
    raise RuntimeError("the stream ended before a frame")


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak.append(_rss_mb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def _health() -> dict[str, Any]:
    with urlopen(f"http://127.0.0.1:{PORT}/health", timeout=10) as resp:
        return dict(json.loads(resp.read()))


async def viewers(n: int, seconds: float, pid: int) -> dict[str, Any]:
    """Issue 22: ``n`` viewers of one day at speed 1 (vs one alone), then waves at speed 0."""
    end = (dt.datetime.combine(DAY, dt.time(9, 30)) + dt.timedelta(seconds=seconds)).time()
    params = {"speed": 1, "start_time": "09:30", "end_time": end.isoformat(),
              "throttle_ms": 25}
    idle = _rss_mb(pid)
    alone = await _viewer(params)
    await asyncio.sleep(1.0)
    rss_after_one = _rss_mb(pid)
    peak: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pid, peak, stop))
    started = time.perf_counter()
    runs = await asyncio.gather(*(_viewer(params, started) for _ in range(n)))
    stop.set()
    await sampler
    await asyncio.sleep(3.0)
    after = _rss_mb(pid)
    health = _health()
    firsts = sorted(r["first_frame_s"] for r in runs)
    result: dict[str, Any] = {
        "viewers": n, "seconds": seconds, "idle_rss_mb": idle,
        "alone": {"frames": alone["frames"], "dropped": alone["dropped"],
                  "first_frame_s": round(alone["first_frame_s"], 3), "end": alone["reason"],
                  "rss_mb_after": rss_after_one},
        "frames_each": sorted({r["frames"] for r in runs}),
        "identical_to_alone": sum(r["digest"] == alone["digest"] for r in runs),
        "dropped_total": sum(r["dropped"] for r in runs),
        "ended": sum(r["reason"] == "end_time" for r in runs),
        "peak_rss_mb": max(peak), "first_frame_s": {
            "max": round(firsts[-1], 3), "median": round(statistics.median(firsts), 3),
            "min": round(firsts[0], 3)},
        "rss_mb_3s_after": after, "streams_after": health["streams"],
        "cache_after": health.get("cache"),
    }
    waves = []
    for _ in range(WAVES):
        started = time.perf_counter()
        times = await asyncio.gather(*(_first_frame({"speed": 0, "start_time": "09:30"},
                                                    started) for _ in range(n)))
        waves.append({"max": round(max(times), 3), "median": round(statistics.median(times), 3)})
    await asyncio.sleep(3.0)
    health = _health()
    result["speed0_waves"] = {"waves": WAVES, "first_frame_s": waves,
                              "rss_mb_3s_after": _rss_mb(pid),
                              "streams_after": health["streams"],
                              "cache_after": health.get("cache")}
    return result


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def browser(seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    page_url = (f"http://127.0.0.1:{PORT}/vacuum-pressure.html?product_type=future_mbo&symbol="
                f"{SYMBOL}&dt={DAY}&speed=1&start_time=09:30&throttle_ms=25")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=os.environ.get("VPBATCH_CHROMIUM",
                                                                    "/usr/bin/chromium"),
                                     args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1600, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_url)
        page.wait_for_function("window.vp && window.vp.stats.drawn > 5", timeout=30_000)
        time.sleep(1.0)
        start = page.evaluate("[performance.now(), window.vp.stats.drawn, "
                              "window.vp.stats.received, window.vp.stats.ts]")
        raf = page.evaluate(f"""() => new Promise((done) => {{
            let n = 0; const t0 = performance.now();
            const tick = (t) => {{
                n += 1;
                if (t - t0 < {seconds * 1000}) requestAnimationFrame(tick);
                else done(n * 1000 / (t - t0));
            }};
            requestAnimationFrame(tick); }})""")
        end = page.evaluate("[performance.now(), window.vp.stats.drawn, "
                            "window.vp.stats.received, window.vp.stats.ts]")
        page.screenshot(path=str(ROOT / ".bench" / "serve-page.png"))
        chromium.close()
    wall = (end[0] - start[0]) / 1000
    event = (int(end[3]) - int(start[3])) / 1e9
    return {"seconds": round(wall, 1), "drawn_per_s": round((end[1] - start[1]) / wall, 1),
            "received_per_s": round((end[2] - start[2]) / wall, 1),
            "raf_per_s": round(raf, 1), "event_seconds": round(event, 1),
            "page_errors": errors}


def _data_rate(lake: Path) -> float:
    """States per event second the build holds in its first minute (what speed 1 can show)."""
    from vpbatch.sql import run_query

    df = run_query(lake, "SELECT count(*) AS n FROM vp_snapshot WHERE epoch_ns(ts_event) < "
                         "(SELECT min(epoch_ns(ts_event)) FROM vp_snapshot) + 60000000000")
    return float(df["n"][0]) / 60


@contextlib.contextmanager
def serving() -> Iterator[subprocess.Popen[bytes]]:
    """``vpbatch serve`` on the bench lake, ready (``/health`` answers) until the block ends."""
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "vpbatch"), "serve", "--lake",
                               str(LAKE), "--port", str(PORT)], cwd=ROOT,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(2.0)  # the view kernel loads in the background at start
        yield server
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    prepare()
    if sys.argv[1:] == ["viewers"]:
        with serving() as server:
            result = asyncio.run(viewers(VIEWERS, VIEWERS_S, server.pid))
        print(json.dumps(result, indent=1))
        return
    data_rate = round(_data_rate(LAKE), 1)
    with serving() as server:
        idle = _rss_mb(server.pid)
        results: dict[str, Any] = {"idle_rss_mb": idle, "load_before": os.getloadavg()[0]}
        results["lake"] = asyncio.run(firehose("lake", 20_000))
        print("lake", results["lake"], file=sys.stderr, flush=True)
        results["two_lake_clients"] = asyncio.run(_together(2, 20_000))
        print("two_lake_clients", results["two_lake_clients"], file=sys.stderr, flush=True)
        results["raw"] = asyncio.run(firehose("raw", 20_000))
        print("raw", results["raw"], file=sys.stderr, flush=True)
        results["pacing"] = asyncio.run(pacing(PACING_S))
        print("pacing", results["pacing"], file=sys.stderr, flush=True)
        results["browser"] = browser(BROWSER_S)
        print("browser", results["browser"], file=sys.stderr, flush=True)
        results["clients"] = asyncio.run(many_clients(10, 10.0, server.pid))
        print("clients", results["clients"], file=sys.stderr, flush=True)
        results["data_states_per_s"] = data_rate
        results["load_after"] = os.getloadavg()[0]
    with serving() as server:  # a fresh server: its idle RSS is the baseline
        results["viewers"] = asyncio.run(viewers(VIEWERS, VIEWERS_S, server.pid))
        print("viewers", results["viewers"], file=sys.stderr, flush=True)
    print(json.dumps(results))
    if "--print" in sys.argv[1:]:
        print(_entry(results))
    else:
        _append(results)


def _append(r: dict[str, Any]) -> None:
    bench = ROOT / "BENCHMARKS.md"
    with bench.open("a") as fh:
        fh.write("\n" + _entry(r))


def _entry(r: dict[str, Any]) -> str:
    """The BENCHMARKS.md entry of one run."""
    lake, raw, pace, page, clients = (r["lake"], r["raw"], r["pacing"], r["browser"],
                                      r["clients"])
    command = "python -m benchmarks.serve"
    lines = [
        f"## {dt.date.today().isoformat()} — commit {_commit()} — `make bench` (serve)",
        "",
        f"Machine: {_machine()}. Shared by other jobs while measured: load average "
        f"{r['load_before']:.1f} before, {r['load_after']:.1f} after.",
        f"Input: synthetic {RECORDS:,}-record MNQH6 day built 09:30-09:45 ET "
        f"(`vpbatch synth` + `vpbatch build`), {r['data_states_per_s']} states per event second "
        "in its first minute. Server: `vpbatch serve` (uvicorn, websockets-sansio) on 127.0.0.1; "
        "clients: Python `websockets` (firehose clients with `max_queue=None`: no client-side flow "
        "control), Chromium via Playwright.",
        "",
        "| what | figure | command |",
        "|---|---|---|",
        f"| states/s, one client, speed=0, lake | {lake['states_per_s']:,} states/s over "
        f"{lake['states']:,} states; first frame {lake['first_frame_s']} s after connecting | "
        f"`{command}` |",
        f"| states/s, {r['two_lake_clients']['clients']} clients at once, speed=0, lake | "
        f"{r['two_lake_clients']['total_states_per_s']:,} states/s together "
        f"({', '.join(f'{x:,}' for x in r['two_lake_clients']['each'])}) | `{command}` |",
        f"| states/s, one client, speed=0, raw | {raw['states_per_s']:,} states/s after the first "
        f"frame; first frame {raw['first_frame_s']} s (fast-forward from cache + 30 min warm-up)"
        f" | `{command}` |",
        f"| pacing at speed=1, {pace['seconds']:g} s | event time - wall time in the last "
        f"second: {pace['final_error_ms']} ms (median); "
        f"{100 * pace['within_one_frame']:.2f}% of frames within one frame interval; max abs error "
        f"{pace['max_abs_error_ms']} ms, median {pace['median_abs_error_ms']} ms over "
        f"{pace['frames']:,} frames (median frame interval {pace['median_frame_interval_ms']} ms)"
        f" | `{command}` |",
        f"| browser (headless Chromium), speed=1, throttle 25 ms | {page['drawn_per_s']} states "
        f"drawn/s ({page['received_per_s']} received/s, {page['raf_per_s']} animation frames/s) "
        f"over {page['seconds']} s | `{command}` |",
        f"| server RSS | {r['idle_rss_mb']} MB idle; {clients['rss_mb']} MB with "
        f"{clients['clients']} clients at speed=1 | `{command}` |",
        *_viewer_lines(r["viewers"], command),
        "",
    ]
    return "\n".join(lines)


def _viewer_lines(v: dict[str, Any], command: str) -> list[str]:
    alone, waves = v["alone"], v["speed0_waves"]
    frames = "/".join(str(f) for f in v["frames_each"])
    return [
        f"| {v['viewers']} viewers of one day at speed=1, throttle 25 ms, "
        f"{v['seconds']:g} s (`end_time`) | {v['identical_to_alone']} of {v['viewers']} "
        f"receive byte-identical frames to one viewer alone ({frames} frames each, "
        f"{alone['frames']} alone; {v['dropped_total']} dropped); server RSS "
        f"{v['idle_rss_mb']} MB idle, {v['peak_rss_mb']} MB peak | `{command}` |",
        f"| time to first frame, speed=1 | one viewer alone {alone['first_frame_s']} s; "
        f"{v['viewers']} connecting at once: median {v['first_frame_s']['median']} s, max "
        f"{v['first_frame_s']['max']} s | `{command}` |",
        f"| time to first frame, {waves['waves']} waves of {v['viewers']} at speed=0 | max "
        f"{', '.join(str(w['max']) for w in waves['first_frame_s'])} s (median "
        f"{', '.join(str(w['median']) for w in waves['first_frame_s'])} s) | `{command}` |",
        f"| server RSS after the viewers leave (3 s) | {v['rss_mb_3s_after']} MB after the "
        f"{v['viewers']} at speed=1; {waves['rss_mb_3s_after']} MB after the "
        f"{waves['waves'] * v['viewers']} speed=0 connections ({v['idle_rss_mb']} MB idle) | "
        f"`{command}` |",
    ]


if __name__ == "__main__":
    main()
