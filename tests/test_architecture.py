"""The house (docs/architecture.md): no import cycle, data flowing one way, small modules.

Imports are read from the source (``ast``), lazy ones inside functions included: a cycle broken
only by importing late is still a cycle to whoever reads the code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vpbatch"
#: What each layer may import from vpbatch (besides itself and the top-level shared modules).
SHARED = {"vpbatch", "vpbatch.errors", "vpbatch.config", "vpbatch.clock", "vpbatch.products",
          "vpbatch.memory", "vpbatch.progress", "vpbatch.version"}
ALLOWED = {
    "vpbatch.book": {"vpbatch.book"},
    "vpbatch.store": {"vpbatch.store", "vpbatch.book"},
    "vpbatch.ingest": {"vpbatch.ingest", "vpbatch.book", "vpbatch.store"},
    "vpbatch.build": {"vpbatch.build", "vpbatch.book", "vpbatch.ingest", "vpbatch.store",
                      "vpbatch.sql"},
    "vpbatch.synth": {"vpbatch.synth", "vpbatch.book", "vpbatch.store"},
    # The live source: build's job over a queue, recorded to the lake, shown by serve's app.
    "vpbatch.live": {"vpbatch.live", "vpbatch.book", "vpbatch.ingest", "vpbatch.store",
                     "vpbatch.build", "vpbatch.serve"},
    # Analysis of built days, through sql: evaluate measures predictors (its HTML page draws
    # with pictures' helpers); fit learns models and hands them to evaluate as predictors.
    "vpbatch.evaluate": {"vpbatch.evaluate", "vpbatch.sql", "vpbatch.store",
                         "vpbatch.pictures"},
    "vpbatch.fit": {"vpbatch.fit", "vpbatch.evaluate", "vpbatch.sql", "vpbatch.store"},
}
#: The one module allowed past MAX_LINES: the compiled kernel reads best in one place.
MAX_LINES = 700
LONG_ALLOWED = {"vpbatch/book/kernels.py"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The vpbatch modules ``path`` imports (``from vpbatch.x import y`` names module x.y
    when that is a module, else x)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in ("vpbatch", "cli"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] in ("vpbatch", "cli"))
    return out


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_given_a_cycle_names_it() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_vpbatch_has_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_comes_before_it_in_the_data_flow(layer: str) -> None:
    allowed = ALLOWED[layer] | SHARED
    wrong = {f"{name} -> {dep}" for name, deps in GRAPH.items() if _package(name) == layer
             for dep in deps if dep not in allowed and _package(dep) not in allowed}
    assert sorted(wrong) == []


def test_library_never_imports_the_cli() -> None:
    assert sorted(f"{n} -> {d}" for n, deps in GRAPH.items() for d in deps
                  if d.split(".")[0] == "cli") == []


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= LONG_ALLOWED, long


def test_serve_request_parsing_loads_no_engine() -> None:
    """A viewer's query is checked without numba (the old layout imported the engine here)."""
    code = ("import sys, vpbatch.serve.request, vpbatch.serve.protocol; "
            "print(sorted(m for m in ('numba', 'vpbatch.book.engine', 'vpbatch.build.pipeline') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_every_test_file_is_collected() -> None:
    """pytest skips some folder names by default (``build``): no test file may go unseen.

    pytest chooses the files itself; ``tests.collect_paths`` only keeps it from importing them.
    """
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-s",
                          "-p", "no:cacheprovider", "-p", "tests.collect_paths", "tests"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    collected = {str(Path(line.split(": ", 1)[1]).relative_to(ROOT))
                 for line in out.splitlines() if line.startswith("collected: ")}
    assert collected, out
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    assert on_disk - collected == set()


def _marks_timing(path: Path) -> bool:
    """Whether the file uses ``pytest.mark.timing`` (on a test, a class or ``pytestmark``)."""
    return any(isinstance(node, ast.Attribute) and node.attr == "timing"
               and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"
               for node in ast.walk(ast.parse(path.read_text())))


def test_make_test_runs_every_file_with_wall_clock_tests() -> None:
    """``make test`` runs ``-m timing`` over the Makefile's ``TIMING_TESTS`` only (the suite
    deselects them everywhere): a timing test in any other file would never run."""
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines()
                if line.startswith("TIMING_TESTS :="))
    listed = set(line.split(":=", 1)[1].split())
    marked = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
              if _marks_timing(p)}
    assert marked, "no file marks a test pytest.mark.timing"
    assert marked == listed, f"add to or remove from the Makefile's TIMING_TESTS: {marked ^ listed}"
