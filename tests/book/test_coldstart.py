"""A cold start compiles the engine in two processes (issue 22): same outputs, and a fallback.

Timings are never asserted here (``python -m benchmarks.startup`` measures them).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from vpbatch.book import coldstart
from vpbatch.book.engine import Engine
from vpbatch.config import EngineConfig
from vpbatch.ingest.reader import open_mbo

ROOT = Path(__file__).resolve().parents[2]
ESM4 = ROOT / "tests" / "data" / "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"

#: Runs ESM4 through the engine and prints the outputs' digests and how each part was compiled.
#: Book-only first (then ``catch_up``), event sampling with MBP rows: every stage runs.
_RUN_ESM4 = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np
    from vpbatch.book import kernels
    from vpbatch.book.engine import Engine
    from vpbatch.config import EngineConfig
    from vpbatch.ingest.reader import open_mbo

    records = np.concatenate(list(open_mbo(sys.argv[1]).iter_chunks(symbol="ESM4")))
    engine = Engine(EngineConfig(sample="event"), bucket=250_000_000, mbp_levels=10)
    engine.process_book_only(records[:20_000])
    parts = [engine.process(records[20_000:])]
    parts.append(engine.finish())
    digest = hashlib.sha256()
    for part in parts:
        for array in part:
            digest.update(np.ascontiguousarray(array).tobytes())
    how = {}
    for k in (*kernels.STAGES, kernels.process_chunk):
        stats = k.stats
        how[k.py_func.__name__] = [sum(stats.cache_hits.values()), sum(stats.cache_misses.values())]
    print(json.dumps({"digest": digest.hexdigest(), "how": how}))
""")


def _run_esm4(cache: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _RUN_ESM4, str(ESM4)], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cold_start_compiles_the_stages_in_another_process_and_gives_the_same_bytes(tmp_path):
    """An empty cache: the other process compiles its stages, this one loads them; the outputs
    equal those of a run whose kernels were all loaded from a filled cache."""
    cold = _run_esm4(tmp_path / "cold")
    for name in coldstart.OTHER_PROCESS:
        assert cold["how"][name] == [1, 0], name  # loaded: the other process compiled it
    assert cold["how"]["apply_record"] == [0, 1]  # compiled here meanwhile
    assert cold["how"]["process_chunk"] == [0, 1]
    warm = _run_esm4(tmp_path / "cold")  # the same cache, now filled
    assert warm["how"]["process_chunk"] == [1, 0]
    assert all(misses == 0 for _, misses in warm["how"].values())  # nothing compiled
    assert warm["digest"] == cold["digest"]
    # and the same bytes in this process, whatever compiled its kernels
    records = np.concatenate(list(open_mbo(ESM4).iter_chunks(symbol="ESM4")))
    engine = Engine(EngineConfig(sample="event"), bucket=250_000_000, mbp_levels=10)
    engine.process_book_only(records[:20_000])
    digest = hashlib.sha256()
    for part in (engine.process(records[20_000:]), engine.finish()):
        for array in part:
            digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == cold["digest"]


_TINY = textwrap.dedent("""
    from numba import njit

    @njit(cache=True)
    def stage_a(x):
        return x + 1

    @njit(cache=True)
    def stage_b(x):
        return x * 2

    @njit(cache=True)
    def chunk(x):
        return stage_a(x) + stage_b(x)
""")

#: compile_engine over tiny kernels; ``spawn`` starts a process that fails at once (before
#: it has printed the name of any stage it was to compile).
_COMPILE_TINY = textwrap.dedent("""
    import json, subprocess, sys
    from vpbatch.book import coldstart
    import tiny

    spawned = []

    def spawn():
        spawned.append(1)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"],
                                stdout=subprocess.PIPE)

    coldstart.OTHER_PROCESS = ("stage_b",)
    stages = {"stage_a": (tiny.stage_a, (1,)), "stage_b": (tiny.stage_b, (1,))}
    seconds = coldstart.compile_engine((tiny.chunk, (1,)), stages, spawn)
    print(json.dumps({"parts": sorted(seconds), "spawned": len(spawned),
                      "result": tiny.chunk(3)}))
""")


def _compile_tiny(folder: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / "cache"),
           "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", _COMPILE_TINY], cwd=folder, env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compile_engine_given_the_other_process_fails_compiles_its_stages_here(tmp_path):
    """A failed second process costs time, never a kernel; a cached kernel starts nothing."""
    (tmp_path / "tiny.py").write_text(_TINY)
    first = _compile_tiny(tmp_path)
    assert first == {"parts": ["process_chunk", "stage_a", "stage_b", "waited"], "spawned": 1,
                     "result": 10}
    again = _compile_tiny(tmp_path)
    assert again == {"parts": [], "spawned": 0, "result": 10}
