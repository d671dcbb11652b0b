"""Reader fuzzing: mutated real DBN bytes give a one-line VpbatchError, or read cleanly.

hypothesis mutates the sample files in tests/data (plain DBN and zstd): flipped bytes in the
header, the metadata and the records; overwritten ``length`` fields, metadata lengths and
DBN versions; truncation anywhere; shuffled record order. Each mutant is written to disk
and read the way a build reads it (``open_mbo``, ``instruments``, ``resolve``, every chunk,
the input's sha256). The property: it either succeeds or raises a ``VpbatchError`` whose
message is one line naming the file; never another exception (a traceback for the user),
never a hang (each example has a wall-clock alarm), never a crash (this module runs in
its own process, see tests/ingest/test_reader_fuzz.py, so a segfault in a decoder fails the test
instead of killing pytest).

    .venv/bin/python -m tests.ingest.fuzz_reader --examples 200      # what make test runs
    .venv/bin/python -m tests.ingest.fuzz_reader --examples 5000     # make test-slow
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from types import FrameType

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DATA
from vpbatch.errors import VpbatchError

SOURCES = ("glbx-mdp3-mesh5-20250121-1330-1331utc.mbo.dbn.zst",
           "fixture-XNAS.ITCH.mbo.dbn.zst", "fixture-GLBX.MDP3.mbo.dbn.zst",
           "dbeq-basic-goog-20240403.mbo.dbn.zst")
#: Seconds one example may take before it counts as a hang.
HANG_SECONDS = 20
#: Records kept of each source (keeps examples fast; the structure is what matters).
KEEP_RECORDS = 400
RECORD = 56


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no answer within {HANG_SECONDS} s")


def _plain(name: str) -> bytes:
    """The first KEEP_RECORDS records of a sample file, decompressed (metadata + records)."""
    with open(DATA / name, "rb") as fh:
        dbn = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    meta_len = 8 + int.from_bytes(dbn[4:8], "little")
    return dbn[: meta_len + KEEP_RECORDS * RECORD]


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, bytes): one source, a few mutations, compressed or not."""
    name = draw(st.sampled_from(SOURCES))
    data = bytearray(_plain(name))
    meta_len = 8 + int.from_bytes(data[4:8], "little")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip_header", "flip_meta", "flip_record", "length",
                                     "meta_length", "version", "truncate", "swap_records",
                                     "zero_run"]))
        n = len(data)
        if n < 9:
            break
        if kind == "flip_header":
            i = draw(st.integers(0, 7))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "flip_meta":
            i = draw(st.integers(8, max(8, min(meta_len, n) - 1)))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "flip_record" and n > meta_len:
            i = draw(st.integers(meta_len, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "length" and n > meta_len:
            rec = draw(st.integers(0, max(0, (n - meta_len) // RECORD - 1)))
            at = meta_len + rec * RECORD
            if at < n:
                data[at] = draw(st.integers(0, 255))
        elif kind == "meta_length":
            data[4:8] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        elif kind == "version":
            data[3] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(1, n - 1)):]
        elif kind == "swap_records" and n >= meta_len + 2 * RECORD:
            k = (n - meta_len) // RECORD
            a, b = draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))
            ra = slice(meta_len + a * RECORD, meta_len + (a + 1) * RECORD)
            rb = slice(meta_len + b * RECORD, meta_len + (b + 1) * RECORD)
            data[ra], data[rb] = data[rb], data[ra]
        elif kind == "zero_run":
            i = draw(st.integers(0, n - 1))
            data[i: i + draw(st.integers(1, 64))] = bytes(min(64, n - i))[: len(data[i:i + 64])]
    compressed = draw(st.booleans())
    if compressed:
        blob = zstandard.ZstdCompressor().compress(bytes(data))
        if draw(st.booleans()):  # damage the compressed stream too
            i = draw(st.integers(0, len(blob) - 1))
            blob = blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1:]
        return "fuzz.mbo.dbn.zst", blob
    return "fuzz.mbo.dbn", bytes(data)


def read_like_a_build(path: Path) -> None:
    """What ``vpbatch build`` and ``vpbatch info`` do with a file, minus the engine."""
    from vpbatch.ingest.reader import open_mbo

    source = open_mbo(path)
    instruments = source.instruments()
    symbol = next(iter(instruments.values()), None) if len(instruments) == 1 else None
    selection = source.resolve(symbol) if symbol else None
    if selection is not None:
        for _ in source.iter_selection(selection, chunk_records=97):
            pass
    else:
        for _ in source.iter_raw(chunk_records=97):
            pass
    source.sha256()


OUTCOMES = {"read": 0, "refused": 0}


def check(folder: Path, name: str, blob: bytes) -> None:
    path = folder / name
    path.write_bytes(blob)
    signal.alarm(HANG_SECONDS)
    try:
        read_like_a_build(path)
        OUTCOMES["read"] += 1
    except VpbatchError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not one line: {message!r}"
        assert "Traceback" not in message, message
        OUTCOMES["refused"] += 1
    finally:
        signal.alarm(0)


def run(examples: int) -> int:
    missing = [name for name in SOURCES if not (DATA / name).is_file()]
    if missing:
        print(f"reader fuzz: data files not found in {DATA}: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), print_blob=True)
        @given(mutated_files())
        def fuzz(case: tuple[str, bytes]) -> None:
            check(folder, *case)

        try:
            fuzz()
        except Exception:
            traceback.print_exc()
            return 1
    print(f"reader fuzz: {examples} mutated files, every one read cleanly "
          f"({OUTCOMES['read']}) or refused in one line ({OUTCOMES['refused']})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    sys.exit(run(parser.parse_args().examples))
