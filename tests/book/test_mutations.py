"""The property test kills every mutant of tests/book/mutations.py (issue 8).

Two subprocesses, each with half of the mutants (the kernels run as plain Python under
``NUMBA_DISABLE_JIT=1``, so no mutant needs compiling); about 10 s on 2 cores.
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
    names = [m.name for m in MUTANTS]
    halves = [subprocess.Popen([sys.executable, "-m", "tests.book.mutations", *part], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for part in (names[0::2], names[1::2])]
    reports = [proc.communicate(timeout=900)[0] for proc in halves]
    report = "\n".join(reports)
    for text in reports:
        assert "baseline (unmutated): passes" in text, report
    for mutant in MUTANTS:
        line = next((x for x in report.splitlines() if x.startswith(mutant.name + " ")), "")
        assert "killed at example" in line, f"{mutant.name} not caught:\n{report}"
    assert [proc.returncode for proc in halves] == [0, 0], report
