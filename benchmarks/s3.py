"""``python -m benchmarks.s3``: the lake on a local S3 server (moto) against a folder, one run.

The benchmark day (``.bench/synth-<BENCH_RECORDS>.mbo.dbn.zst``, made by ``make bench``) is
built 09:30-16:00 ET into a folder lake and into a bucket of a moto server on 127.0.0.1
(its own process), alternately, each build in a fresh process with a cold book cache; then
``vpbatch sql`` scans one hour of ``vp_grid`` from each. For every step: wall time, the bytes
the process read (``/proc/self/io`` ``rchar``: file reads for the folder, socket reads for the
bucket) and, for the bucket, the S3 requests and the bytes they carried. Appends one entry to
BENCHMARKS.md.

``python -m benchmarks.s3 step <name> <args...>`` runs one step and prints its JSON;
``python -m benchmarks.s3 moto-range`` times moto's ranged reads of a small and a big object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from benchmarks.run import _commit, _machine

ROOT: Final = Path(__file__).resolve().parents[1]
WORK: Final = ROOT / ".bench"
RECORDS: Final = int(os.environ.get("BENCH_RECORDS", "50000000"))
ROUNDS: Final = int(os.environ.get("BENCH_S3_ROUNDS", "2"))
SYMBOL: Final = "MNQH6"
DAY: Final = dt.date(2026, 2, 6)
BUCKET: Final = "vpbatch-bench"
#: One hour of vp_grid (11:00-12:00 ET): the states' event ids from vp_snapshot, then the grid
#: rows of those states (row groups outside the range are skipped by their statistics).
HOUR_SQL: Final = (
    "WITH h AS (SELECT min(event_id) AS lo, max(event_id) AS hi FROM vp_snapshot "
    "WHERE epoch_ns(ts_event) >= epoch_ns(TIMESTAMPTZ '2026-02-06 11:00:00-05') "
    "AND epoch_ns(ts_event) < epoch_ns(TIMESTAMPTZ '2026-02-06 12:00:00-05')) "
    "SELECT count(*) AS cells, round(sum(pressure_now), 3) AS pressure, "
    "round(sum(vacuum_now), 3) AS vacuum FROM vp_grid, h WHERE event_id BETWEEN lo AND hi")
_SERVER: Final = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


# -- steps (one process each) ---------------------------------------------------------------


def _io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = int(value)
    return out


def _count_s3() -> Counter[str]:
    """Count S3 requests by kind, the body bytes read from responses and those sent."""
    import s3fs
    from aiobotocore.response import StreamingBody
    from fsspec.asyn import sync_wrapper

    counts: Counter[str] = Counter()
    original = s3fs.S3FileSystem._call_s3
    read = StreamingBody.read

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        counts[f"requests.{method}"] += 1
        body = kwargs.get("Body")
        if body is not None and hasattr(body, "__len__"):
            counts["bytes_sent"] += len(body)
        return await original(self, method, *args, **kwargs)

    async def counted_read(self: Any, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = await read(self, *args, **kwargs)
        counts["bytes_received"] += len(data)
        return data

    s3fs.S3FileSystem._call_s3 = counted  # type: ignore[method-assign]
    s3fs.S3FileSystem.call_s3 = sync_wrapper(counted)  # type: ignore[method-assign]
    StreamingBody.read = counted_read  # type: ignore[method-assign]
    return counts


def step_build(lake: str) -> dict[str, Any]:
    from vpbatch.build.pipeline import build
    from vpbatch.build.request import BuildRequest

    counts = _count_s3()
    req = BuildRequest(symbol=SYMBOL, day=DAY, lake=lake if "://" in lake else Path(lake),
                       start_time=dt.time(9, 30), end_time=dt.time(16, 0), force=True,
                       use_cache=False)
    before = _io()
    started = time.perf_counter()
    result = build(req)
    wall = time.perf_counter() - started
    after = _io()
    return {"seconds": wall, "records": result.records, "timings": result.timings,
            "grid_rows": result.rows["vp_grid"], "read_bytes": after["rchar"] - before["rchar"],
            "written_bytes": after["wchar"] - before["wchar"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "s3": dict(counts)}


def step_sql(lake: str) -> dict[str, Any]:
    import duckdb  # noqa: F401 - imported before the clock starts, like the CLI's first query

    from vpbatch.sql import connect, execute

    counts = _count_s3()
    before = _io()
    started = time.perf_counter()
    con = connect(lake if "://" in lake else Path(lake))
    opened = time.perf_counter() - started
    df = execute(con, HOUR_SQL)
    wall = time.perf_counter() - started
    after = _io()
    con.close()
    return {"seconds": wall, "connect_seconds": opened, "result": df.row(0),
            "read_bytes": after["rchar"] - before["rchar"], "s3": dict(counts)}


def step_upload(raw: str, lake: str) -> dict[str, Any]:
    from vpbatch.products import resolve_product
    from vpbatch.store import open_lake, raw_location

    store = open_lake(lake)
    target = f"{raw_location(store, resolve_product(SYMBOL))}/glbx-mdp3-20260206.mbo.dbn.zst"
    started = time.perf_counter()
    store.upload(Path(raw), target)
    return {"seconds": time.perf_counter() - started, "bytes": Path(raw).stat().st_size}


STEPS: Final = {"build": step_build, "sql": step_sql, "upload": step_upload}


def moto_range(runs: int = 5) -> None:
    """Time a 1 KiB ranged GET of a 1 MiB and of a 400 MiB object on a moto server: moto reads
    the whole object for a range, so its wall times grow with object size (BENCHMARKS.md)."""
    import boto3

    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        endpoint = f"http://127.0.0.1:{int(server.stdout.readline())}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                          aws_secret_access_key="bench", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        body = os.urandom(400 << 20)
        s3.put_object(Bucket=BUCKET, Key="big", Body=body)
        s3.put_object(Bucket=BUCKET, Key="small", Body=body[:1 << 20])
        for key in ("small", "big", "small", "big"):
            started = time.perf_counter()
            for _ in range(runs):
                s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=1000-2023")["Body"].read()
            each = (time.perf_counter() - started) / runs * 1000
            print(f"{key}: {each:.1f} ms per 1 KiB ranged GET")
    finally:
        server.communicate("", timeout=60)


# -- the run ---------------------------------------------------------------------------------


def _step(env: dict[str, str], *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.s3", "step", *args]
    print("$", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _requests(s3: dict[str, int]) -> str:
    reqs = {k.split(".", 1)[1]: v for k, v in s3.items() if k.startswith("requests.")}
    return ", ".join(f"{v} {k}" for k, v in sorted(reqs.items(), key=lambda kv: -kv[1]))


def main() -> None:
    raw = WORK / f"synth-{RECORDS}.mbo.dbn.zst"
    if not raw.is_file():
        sys.exit(f"{raw}: missing; run make bench (or BENCH_RECORDS=... make bench) first")
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1", "XDG_CACHE_HOME": str(WORK / "s3-host-cache")}
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench",
                     aws_secret_access_key="bench",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        bucket = f"s3://{BUCKET}/lake"
        folder = WORK / "s3-folder-lake"
        shutil.rmtree(folder, ignore_errors=True)
        from vpbatch.products import resolve_product
        from vpbatch.store.lake import raw_dir

        target = raw_dir(folder, resolve_product(SYMBOL))
        target.mkdir(parents=True)
        os.link(raw, target / "glbx-mdp3-20260206.mbo.dbn.zst")
        upload = _step(env, "upload", str(raw), bucket)
        load_before = os.getloadavg()
        builds: dict[str, list[dict[str, Any]]] = {"folder": [], "bucket": []}
        sqls: dict[str, list[dict[str, Any]]] = {"folder": [], "bucket": []}
        for _ in range(ROUNDS):
            builds["folder"].append(_step(env, "build", str(folder)))
            builds["bucket"].append(_step(env, "build", bucket))
        for _ in range(ROUNDS):
            sqls["folder"].append(_step(env, "sql", str(folder)))
            sqls["bucket"].append(_step(env, "sql", bucket))
        load_after = os.getloadavg()
    finally:
        if server.poll() is None:
            server.communicate("", timeout=60)
    _write_entry(raw, upload, builds, sqls, load_before, load_after)


def _where(lake: str) -> str:
    return "the bucket" if lake == "bucket" else "the folder"


def _arg(where: str) -> str:
    return f"s3://{BUCKET}/lake" if where == "bucket" else ".bench/s3-folder-lake"


def _moved(run: dict[str, Any], where: str, *, written: bool) -> str:
    """What a step moved: file bytes (rchar/wchar) for the folder, S3 bodies for the bucket."""
    if where == "folder":
        out = f"read {_mb(run['read_bytes'])} from files"
        return out + (f", wrote {_mb(run['written_bytes'])}" if written else "")
    s3 = run["s3"]
    out = (f"S3: {_requests(s3)}; {_mb(s3.get('bytes_received', 0))} received")
    return out + (f", {_mb(s3.get('bytes_sent', 0))} sent" if written else "")


def _write_entry(raw: Path, upload: dict[str, Any], builds: dict[str, list[dict[str, Any]]],
                 sqls: dict[str, list[dict[str, Any]]], load_before: tuple[float, ...],
                 load_after: tuple[float, ...]) -> None:
    rows = []
    for where in ("folder", "bucket"):
        runs, last = builds[where], builds[where][-1]
        secs = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        rows.append(f"| build 09:30-16:00 into {_where(where)} (cold book cache) | "
                    f"{secs} s ({last['records']:,} "
                    f"records, {last['grid_rows']:,} grid rows, peak RSS "
                    f"{last['peak_rss_mb']:,.0f} MB); {_moved(last, where, written=True)} | "
                    f"`python -m benchmarks.s3 step build {_arg(where)}` |")
    for where in ("folder", "bucket"):
        runs, last = sqls[where], sqls[where][-1]
        secs = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        rows.append(f"| `vpbatch sql`: one hour of vp_grid from {_where(where)} | "
                    f"{secs} s (of which connect "
                    f"{last['connect_seconds']:.2f} s; result {tuple(last['result'])}); "
                    f"{_moved(last, where, written=False)} | "
                    f"`python -m benchmarks.s3 step sql {_arg(where)}` |")
    entry = [
        "",
        f"## {dt.date.today().isoformat()} — the lake on a local S3 server (commit {_commit()}, "
        "issue 19)",
        "",
        f"Machine: {_machine()}. Load {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        f"Command: `python -m benchmarks.s3` (moto {_moto_version()} server on 127.0.0.1 in its "
        f"own process; {ROUNDS} rounds, folder and bucket alternating, each step a fresh "
        f"process). Input: `{raw.relative_to(ROOT)}` ({raw.stat().st_size:,} bytes, "
        f"{RECORDS:,} records), uploaded to the bucket in {upload['seconds']:.1f} s. The query: "
        f"`{HOUR_SQL}`.",
        "",
        "| benchmark | result | command |",
        "|---|---|---|",
        *rows,
        "",
    ]
    if not os.environ.get("BENCH_DRY"):  # BENCH_DRY=1: print the entry only
        with open(ROOT / "BENCHMARKS.md", "a") as fh:
            fh.write("\n".join(entry))
    print("\n".join(entry))


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "step":
        print(json.dumps(STEPS[sys.argv[2]](*sys.argv[3:]), default=str))
    elif sys.argv[1:] == ["moto-range"]:
        moto_range()
    else:
        main()
