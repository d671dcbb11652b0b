"""Compile-time hygiene of the kernels (issue 22): one signature each, a cache that cannot go stale.

Timings are never asserted here (benchmarks/startup.py measures them); these check the
properties the timings rely on.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from numba import typeof

from vpbatch.book import kernels
from vpbatch.book.dtypes import F_LAST, MBO_DTYPE
from vpbatch.book.engine import Engine
from vpbatch.book.precompile import GROUPS, kernel_calls
from vpbatch.config import EngineConfig

ROOT = Path(__file__).resolve().parents[2]
#: vpbatch modules the jitted code never sees (used from Python only).
PYTHON_ONLY = {"vpbatch.book.jit", "vpbatch.book.numba_math", "vpbatch.book.pure_python",
               "vpbatch.config", "vpbatch.errors"}


def _vpbatch_imports(module_name: str) -> set[str]:
    path = ROOT / (module_name.replace(".", "/") + ".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vpbatch"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vpbatch"))
    return found


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name in PYTHON_ONLY:
            continue
        seen.add(name)
        todo.extend(_vpbatch_imports(name))
    return seen


def test_cache_guards_cover_every_module_the_kernels_compile_in():
    from vpbatch.synth import kernel as synth_kernel

    for module in (kernels, synth_kernel):
        listed = {m.__name__ for m in module.COMPILED_FROM}
        assert _closure(module.__name__) <= listed, module.__name__


def _two_sided(n: int, t0: int) -> np.ndarray:
    """``n`` bid/ask adds one tick apart around 100.00, one per event."""
    out = np.zeros(n, dtype=MBO_DTYPE)
    for i in range(n):
        out[i]["ts_event"] = out[i]["ts_recv"] = t0 + i * 1_000_000
        out[i]["action"], out[i]["side"] = ord("A"), ord("B") if i % 2 == 0 else ord("A")
        out[i]["price"] = 100_000_000_000 + (-1 - i if i % 2 == 0 else 1 + i) * 250_000_000
        out[i]["size"], out[i]["order_id"], out[i]["flags"] = 1, i + 1, F_LAST
    return out


def test_each_kernel_is_compiled_for_one_signature_the_one_precompile_compiles():
    """Writable and read-only records, growth, state, export/import: one type per kernel.
    (The stages ``process_chunk`` links in get the precompile's types too: test_coldstart.)"""
    before = {kernel: set(kernel.signatures) for kernel in kernels.KERNELS}
    records = _two_sided(64, 1_700_000_000_000_000_000)
    engine = Engine(EngineConfig(sample="event"), bucket=250_000_000, mbp_levels=2,
                    capacity=8)
    engine.process(records[:32])
    frozen = records[32:].copy()
    frozen.flags.writeable = False
    engine.process(frozen)
    engine.finish()
    engine.state()
    engine.depth("B", 99_750_000_000)
    engine.import_book(engine.export_book())
    calls = kernel_calls()
    assert {k.split("/")[0] for k in calls} == {n for group in GROUPS for n in group}
    assert {kernel for kernel, _ in calls.values()} == {*kernels.KERNELS, *kernels.STAGES}
    for kernel in kernels.KERNELS:
        expected = {tuple(typeof(a) for a in args) for k, args in calls.values() if k is kernel}
        seen = set(kernel.signatures)
        assert expected <= seen and seen - before[kernel] <= expected, kernel.py_func.__name__


def _run(script: str, cwd: Path, cache: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def test_guard_recompiles_a_kernel_whose_constant_changed_in_another_file(tmp_path):
    """numba alone serves the stale constant from its cache; the guarded kernel does not."""
    (tmp_path / "dep.py").write_text("LIMIT = 1\n")
    kernel_src = textwrap.dedent("""
        import sys
        from numba import njit
        import dep
        from dep import LIMIT

        @njit(cache=True)
        def limit():
            return LIMIT
        {guard}
    """)
    (tmp_path / "plain.py").write_text(kernel_src.format(guard=""))
    (tmp_path / "guarded.py").write_text(kernel_src.format(guard=(
        "from vpbatch.book.jit import guard\n"
        "guard('test', (sys.modules[__name__], dep))\n")))
    cache = tmp_path / "cache"
    script = "import plain, guarded; print(plain.limit(), guarded.limit())"
    assert _run(script, tmp_path, cache) == "1 1"
    assert _run(script, tmp_path, cache) == "1 1"  # both loaded from the cache
    (tmp_path / "dep.py").write_text("LIMIT = 2\n")
    assert _run(script, tmp_path, cache) == "1 2"
    assert _run(script, tmp_path, cache) == "1 2"


def test_load_kernels_loads_what_a_live_session_then_calls() -> None:
    """``vpbatch live`` loads the kernels before connecting: its first records must not wait
    for numba (a new specialisation after load_kernels would mean a load or a compile)."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from vpbatch.book import kernels\n"
        "from vpbatch.book.engine import Engine, load_kernels\n"
        "from vpbatch.config import EngineConfig\n"
        "from vpbatch.ingest.reader import open_mbo\n"
        "load_kernels()\n"
        "loaded = {k: len(getattr(kernels, k).signatures) for k in "
        "('process_chunk', 'flush_pending')}\n"
        "engine = Engine(EngineConfig(), bucket=250_000_000, tick=250_000_000)\n"
        "for chunk in open_mbo(sys.argv[1]).iter_chunks(symbol='ESM4'):\n"
        "    frozen = np.frombuffer(chunk.tobytes(), chunk.dtype)  # as a live feed's bytes\n"
        "    list(engine.stream(frozen))\n"
        "engine.finish()\n"
        "after = {k: len(getattr(kernels, k).signatures) for k in loaded}\n"
        "print(loaded == after == {'process_chunk': 1, 'flush_pending': 1})\n"
    )
    esm4 = ROOT / "tests" / "data" / "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
    out = subprocess.run([sys.executable, "-c", code, str(esm4)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"


def test_loading_the_kernels_skips_numbas_blas_probe_and_np_dot_still_compiles() -> None:
    """numba's BLAS probe imports ``scipy.linalg`` (0.12-0.3 s before a build's first record):
    loading the engine's kernels skips it, numba still knows BLAS is there, and a jitted
    ``np.dot`` (which needs it) compiles afterwards, through numba's own check, and computes."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from numba import njit\n"
        "from vpbatch.book.engine import load_kernels\n"
        "load_kernels()\n"
        "print('scipy.linalg' in sys.modules)\n"
        "from numba.np import arraymath\n"
        "print(arraymath._HAVE_BLAS)\n"
        "dot = njit(lambda a, b: np.dot(a, b))\n"
        "print(dot(np.arange(3.0), np.arange(1.0, 4.0)), 'scipy.linalg' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "True", "8.0", "True"]
