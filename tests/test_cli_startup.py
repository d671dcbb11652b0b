"""The CLI starts without importing heavy libraries (an instant ``vpbatch --help``).

Timing is measured in ``make bench``; this test checks the cause: which modules a fresh
interpreter has imported after printing help.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Imported only inside the commands that need them.
HEAVY = ("databento", "pandas", "pyarrow", "duckdb", "numba", "polars", "matplotlib", "aiohttp")

_PROBE = """
import json, sys
from cli.main import cli
try:
    cli.main(args=sys.argv[1:], prog_name="vpbatch", standalone_mode=False)
except SystemExit:
    pass
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def _imported_after(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], cwd=REPO,
                         check=True, capture_output=True, text=True, timeout=120)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("build", "--help"),
                                  ("info", "--help"), ("sql", "--help"), ("plot", "--help")])
def test_help_given_fresh_interpreter_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    assert _imported_after(*args) == []


def test_help_given_fresh_interpreter_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "cli", "--help"], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    from cli.main import cli

    for name in cli.commands:
        assert f"  {name} " in out
