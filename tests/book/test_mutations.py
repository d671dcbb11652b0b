"""The property test kills every mutant of tests/book/mutations.py (issue 8).

One subprocess (the kernels run as plain Python under ``NUMBA_DISABLE_JIT=1``, so no mutant
needs compiling); about a minute on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.book.mutations import MUTANTS

ROOT = Path(__file__).parents[2]


def test_property_given_each_broken_kernel_fails_and_given_the_real_one_passes() -> None:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.book.mutations"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    report = done.stdout + done.stderr
    assert "baseline (unmutated): passes" in report, report
    for mutant in MUTANTS:
        line = next((x for x in report.splitlines() if x.startswith(mutant.name + " ")), "")
        assert "killed at example" in line, f"{mutant.name} not caught:\n{report}"
    assert done.returncode == 0, report
