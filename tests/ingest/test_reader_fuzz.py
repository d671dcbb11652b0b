"""Reader fuzzing (tests/ingest/fuzz_reader.py) in its own process: a decoder crash fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _fuzz(examples: int, timeout: int) -> None:
    done = subprocess.run([sys.executable, "-m", "tests.ingest.fuzz_reader", "--examples",
                           str(examples)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode} (negative: killed by a signal)\n" \
                                 f"{report}"
    assert f"{examples} mutated files" in report, report


def test_reader_given_200_mutated_dbn_files_never_tracebacks_hangs_or_crashes() -> None:
    _fuzz(200, timeout=600)


@pytest.mark.slow
def test_reader_given_5000_mutated_dbn_files_never_tracebacks_hangs_or_crashes() -> None:
    _fuzz(5000, timeout=3600)
