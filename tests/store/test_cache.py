"""vpbatch.store.cache and ``vpbatch cache``: round trip, keys, corruption, staleness, races."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.cache import command
from vpbatch.errors import OutputError, VpbatchWarning
from vpbatch.store import cache
from vpbatch.store.cache import CacheKey, cache_dir, clear, list_entries, load, save

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "glbx-mdp3-20260206.mbo.dbn.zst"
    path.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    return path


@pytest.fixture
def key(raw: Path) -> CacheKey:
    return CacheKey(hashlib.sha256(raw.read_bytes()).hexdigest(), instrument_id=42,
                    publisher_id=1, boundary_ts=1_770_388_200_000_000_000, book_format=3,
                    engine_version="1.2.3", source=raw.name)


def book_state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    orders = np.zeros(50, [("order_id", "<u8"), ("price", "<i8"), ("size", "<u4"),
                           ("side", "u1")])
    orders["order_id"] = rng.integers(1, 1 << 40, 50)
    orders["price"] = rng.integers(1, 1 << 40, 50)
    return {
        "orders": orders,
        "depth": rng.integers(0, 100, (2, 300)).astype(np.int64),
        "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
        "scalar": np.array(1.5),
        "empty": np.zeros(0, np.int32),
    }


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name]), name


# --- keys -------------------------------------------------------------------------------------


def test_cache_key_digest_is_stable_across_runs() -> None:
    key = CacheKey("ab" * 32, 42, 1, 1_770_388_200_000_000_000, 1)
    ident = {"boundary_ts": 1_770_388_200_000_000_000, "extra": "", "file_sha256": "ab" * 32,
             "instrument_id": 42, "publisher_id": 1}
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    assert key.digest == hashlib.sha256(text.encode()).hexdigest()


def test_cache_key_digest_given_identity_change_differs(key: CacheKey) -> None:
    for change in ({"instrument_id": 43}, {"publisher_id": 2}, {"boundary_ts": 1},
                   {"file_sha256": "00" * 32}, {"extra": "K=50"}):
        assert dataclasses.replace(key, **change).digest != key.digest, change
    # the versions and the display name select the same slot (checked on load instead)
    assert dataclasses.replace(key, book_format=4, engine_version="9", source="x").digest \
        == key.digest


def test_cache_given_other_engine_version_warns_stale_and_replaces(tmp_path: Path,
                                                                  key: CacheKey) -> None:
    save(tmp_path, key, book_state())
    newer = dataclasses.replace(key, engine_version="1.2.4")
    _load_warns(tmp_path, newer, r"is stale \(key differs: engine_version '1\.2\.3' != "
                                 r"'1\.2\.4'\)")
    assert load(tmp_path, key) is None  # removed


def test_cache_key_round_trips_through_its_dict(key: CacheKey) -> None:
    assert CacheKey.from_dict(key.to_dict()) == key


def test_known_sha256_given_same_size_and_mtime_returns_the_remembered_hint(
        tmp_path: Path, raw: Path, key: CacheKey) -> None:
    assert cache.known_sha256(tmp_path, raw) is None
    cache.remember_sha256(tmp_path, raw, key.file_sha256)
    assert cache.known_sha256(tmp_path, raw) == key.file_sha256
    # An edit in the tail that keeps size and mtime still returns the (now wrong) hint: the
    # build verifies it against the bytes it reads (tests/build/test_pipeline.py).
    st = raw.stat()
    with open(raw, "r+b") as fh:
        fh.seek(st.st_size - 10)
        fh.write(b"\xff")
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.known_sha256(tmp_path, raw) == key.file_sha256
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a plain edit moves the mtime
    assert cache.known_sha256(tmp_path, raw) is None
    assert clear(tmp_path) == 0 and cache.known_sha256(tmp_path, raw) is None


# --- round trip -------------------------------------------------------------------------------


def test_cache_given_saved_state_loads_identical_arrays_and_meta(tmp_path: Path,
                                                                 key: CacheKey) -> None:
    state = book_state()
    path = save(tmp_path, key, state, {"n_orders": np.int64(50), "spot": 21000.25, "ok": True})
    assert path == cache_dir(tmp_path) / f"{key.digest}.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load(tmp_path, key)
    assert got is not None
    arrays, meta = got
    assert_same(arrays, state)
    assert meta == {"n_orders": 50, "spot": 21000.25, "ok": True}


def test_cache_given_no_entry_returns_none_without_warning(tmp_path: Path, key: CacheKey) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(tmp_path, key) is None


def test_cache_save_given_object_array_or_bad_name_refuses(tmp_path: Path, key: CacheKey) -> None:
    with pytest.raises(TypeError, match="object arrays cannot be cached"):
        save(tmp_path, key, {"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="name '__header__'"):
        save(tmp_path, key, {"__header__": np.zeros(1)})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save(tmp_path, key, {"x": np.zeros(1)}, {"when": object()})


def test_cache_save_given_unwritable_lake_raises_output_error(tmp_path: Path,
                                                              key: CacheKey) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"file\.txt/lake/cache/book/.*\.npz: cannot write"):
        save(blocker / "lake", key, book_state())


# --- corruption and staleness -----------------------------------------------------------------


def _load_warns(lake: Path, key: CacheKey, match: str) -> None:
    with pytest.warns(VpbatchWarning, match=match):
        assert load(lake, key) is None
    assert not (cache_dir(lake) / f"{key.digest}.npz").exists()


def test_cache_given_truncated_entry_warns_removes_and_rebuilds(tmp_path: Path,
                                                                key: CacheKey) -> None:
    path = save(tmp_path, key, book_state())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _load_warns(tmp_path, key, r"\.npz: book cache entry is corrupt \(BadZipFile")
    save(tmp_path, key, book_state())
    assert load(tmp_path, key) is not None


def test_cache_given_flipped_payload_byte_warns_corrupt(tmp_path: Path, key: CacheKey) -> None:
    state = {"depth": np.zeros(100_000, np.int64)}
    path = save(tmp_path, key, state)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the depth array
    path.write_bytes(bytes(data))
    _load_warns(tmp_path, key, "is corrupt")


def test_cache_given_payload_not_matching_checksum_warns_corrupt(
        tmp_path: Path, key: CacheKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_payload_sha256", lambda arrays: "0" * 64)
    save(tmp_path, key, book_state())
    monkeypatch.undo()
    _load_warns(tmp_path, key, r"corrupt \(payload checksum mismatch\)")


def test_cache_given_garbage_file_warns_corrupt(tmp_path: Path, key: CacheKey) -> None:
    cache_dir(tmp_path).mkdir(parents=True)
    (cache_dir(tmp_path) / f"{key.digest}.npz").write_bytes(b"\x00" * 100)
    _load_warns(tmp_path, key, "is corrupt")


def test_cache_given_pickled_member_refuses_to_unpickle(tmp_path: Path, key: CacheKey) -> None:
    header = json.dumps({"cache_format": cache.CACHE_FORMAT, "key": key.to_dict(), "meta": {},
                         "arrays": {"evil": {}}, "payload_sha256": ""}).encode()
    cache_dir(tmp_path).mkdir(parents=True)
    with open(cache_dir(tmp_path) / f"{key.digest}.npz", "wb") as fh:
        np.savez(fh, __header__=np.frombuffer(header, np.uint8),
                 evil=np.array([object()], dtype=object), allow_pickle=True)
    _load_warns(tmp_path, key, r"corrupt \(ValueError: Object arrays cannot be loaded")


def test_cache_given_other_book_format_warns_stale_and_removes(tmp_path: Path,
                                                               key: CacheKey) -> None:
    save(tmp_path, key, book_state())
    newer = dataclasses.replace(key, book_format=4)
    _load_warns(tmp_path, newer, r"is stale \(key differs: book_format 3 != 4\)")


def test_cache_given_other_cache_format_warns_stale(tmp_path: Path, key: CacheKey,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "CACHE_FORMAT", 0)
    save(tmp_path, key, book_state())
    monkeypatch.undo()
    _load_warns(tmp_path, key, r"is stale \(cache format 0, expected 1\)")


def test_cache_given_leftover_temp_file_next_save_removes_it(tmp_path: Path,
                                                             key: CacheKey) -> None:
    folder = cache_dir(tmp_path)
    folder.mkdir(parents=True)
    leftover = folder / f".{key.digest}.npz.{'a' * 32}.tmp"
    leftover.write_bytes(b"half")
    old = leftover.stat().st_mtime - cache.TEMP_STALE_SECONDS - 1
    os.utime(leftover, (old, old))
    assert [e.digest for e in list_entries(tmp_path)] == []
    save(tmp_path, key, book_state())
    assert not leftover.exists()


def test_cache_given_fresh_temp_file_of_another_writer_keeps_it(tmp_path: Path,
                                                                 key: CacheKey) -> None:
    # Another host may be writing it: the lock on a network mount may not reach that host.
    folder = cache_dir(tmp_path)
    folder.mkdir(parents=True)
    in_flight = folder / f".{key.digest}.npz.{'b' * 32}.tmp"
    in_flight.write_bytes(b"being written")
    save(tmp_path, key, book_state())
    assert in_flight.read_bytes() == b"being written"
    assert load(tmp_path, key) is not None


# --- concurrency ------------------------------------------------------------------------------

_WORKER = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    from vpbatch.store.cache import CacheKey, load, save

    lake, role, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = CacheKey("ab" * 32, 42, 1, 5, 1, "1.0")
    bad = 0
    for i in range(rounds):
        if role == "read":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = load(lake, key)
            bad += len(caught)
            if got is not None:
                arrays, meta = got
                fill = meta["fill"]
                bad += int(not (arrays["depth"] == fill).all())
        else:
            fill = int(role)
            save(lake, key, {"depth": np.full(200_000, fill, np.int64)}, {"fill": fill})
    print(bad)
""")


def test_cache_given_concurrent_saves_and_loads_never_corrupts(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "lake"), role, "25"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for role in ("1", "2", "read", "read")]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "0", (out, err)
    key = CacheKey("ab" * 32, 42, 1, 5, 1, "1.0")
    got = load(tmp_path / "lake", key)
    assert got is not None and got[1]["fill"] in (1, 2)
    assert sorted(p.name for p in cache_dir(tmp_path / "lake").iterdir()) == [
        ".lock", f"{key.digest}.npz"]


# --- listing, clearing, CLI -------------------------------------------------------------------


def test_cache_list_entries_and_clear(tmp_path: Path, key: CacheKey) -> None:
    save(tmp_path, key, book_state(), {"records": 10})
    other = dataclasses.replace(key, boundary_ts=key.boundary_ts + 1)
    save(tmp_path, other, book_state(1))
    entries = list_entries(tmp_path)
    assert sorted(e.digest for e in entries) == sorted([key.digest, other.digest])
    first = next(e for e in entries if e.digest == key.digest)
    assert first.key["instrument_id"] == 42 and first.meta == {"records": 10}
    assert first.size == first.path.stat().st_size and first.created.endswith("+00:00")
    assert clear(tmp_path) == 2
    assert list_entries(tmp_path) == []
    assert clear(tmp_path / "nowhere") == 0


def test_cache_cli_ls_and_clear(tmp_path: Path, key: CacheKey) -> None:
    runner = CliRunner()
    empty = runner.invoke(command, ["ls", "--lake", str(tmp_path)], catch_exceptions=False)
    assert empty.exit_code == 0 and "no cache entries" in empty.output
    save(tmp_path, key, book_state())
    bad = cache_dir(tmp_path) / ("f" * 64 + ".npz")
    bad.write_bytes(b"junk")
    listed = runner.invoke(command, ["ls", "--lake", str(tmp_path)], catch_exceptions=False)
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["digest", "source", "instrument", "publisher"]
    row = next(line for line in lines if line.startswith(key.digest[:12]))
    assert "glbx-mdp3-20260206.mbo.dbn.zst" in row and "2026-02-06T14:30:00.000000000Z" in row
    assert any(line.startswith("f" * 12) and "unreadable" in line for line in lines)
    assert lines[-1].startswith("2 entries")
    as_json = runner.invoke(command, ["ls", "--json", "--lake", str(tmp_path)],
                            catch_exceptions=False)
    assert {e["digest"] for e in json.loads(as_json.output)} == {key.digest, "f" * 64}
    cleared = runner.invoke(command, ["clear", "--lake", str(tmp_path)], catch_exceptions=False)
    assert cleared.exit_code == 0
    assert cleared.output.startswith("removed 2 cache entries from ")
    assert list_entries(tmp_path) == []
