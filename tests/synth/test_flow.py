"""``synth --flow``: how the ordinary flow follows the latent fair value.

``depth`` (the default) is the stream as it always was (its bytes are pinned in
``tests/evaluate/test_evaluate_synth.py``); ``touch`` is deterministic, a valid MBO stream
(planted jumps included: they are swept and re-quoted at once, so the mid does not catch up
over several changes as it does in the default flow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.synth.replay import FRIDAY, read_dbn, replay
from tests.synth.test_state import _check_book
from vpbatch.errors import ConfigError
from vpbatch.synth import synth_session
from vpbatch.synth.dbn import record_buffer
from vpbatch.synth.kernel import run
from vpbatch.synth.session import start_day
from vpbatch.synth.state import MAX_GROUP


def test_flow_depth_is_the_default_stream(tmp_path: Path) -> None:
    synth_session(tmp_path / "a.dbn", day=FRIDAY, records=20_000, seed=7, informed=0.3)
    synth_session(tmp_path / "b.dbn", day=FRIDAY, records=20_000, seed=7, informed=0.3,
                  flow="depth")
    assert (tmp_path / "a.dbn").read_bytes() == (tmp_path / "b.dbn").read_bytes()


@pytest.mark.parametrize("informed", [0.0, 0.3])
def test_flow_touch_is_deterministic_and_differs_from_depth(tmp_path: Path,
                                                            informed: float) -> None:
    data = {}
    for name, flow in (("a", "touch"), ("b", "touch"), ("c", "depth")):
        synth_session(tmp_path / f"{name}.dbn", day=FRIDAY, records=20_000, seed=7,
                      informed=informed, flow=flow)
        data[name] = (tmp_path / f"{name}.dbn").read_bytes()
    assert data["a"] == data["b"]
    assert data["a"] != data["c"]


@pytest.mark.parametrize("jump", ["aligned", "random", "none"])
def test_flow_touch_writes_a_valid_stream(tmp_path: Path, jump: str) -> None:
    path = tmp_path / "t.dbn"
    stats = synth_session(path, day=FRIDAY, records=30_000, seed=5, informed=0.3,
                          informed_jump=jump, flow="touch")
    assert stats.records == 30_000
    _, recs = read_dbn(path)
    shapes = replay(recs)  # the independent dict book: fails on any inconsistency
    assert shapes["T"] > 0 and shapes["A"] > 0


def test_flow_touch_keeps_the_book_consistent() -> None:
    d = start_day("MNQH6", FRIDAY, 20_000, 3, None, 42, 1, 0.5, "random", "touch")
    out = record_buffer(5_000 + MAX_GROUP, 42, 1)
    assert run(d.sim, out, d.h, d.hcum, 5_000) >= 5_000
    _check_book(d.sim)


def _after_jumps(flow: str, groups: int = 30_000) -> float:
    """Placebo day (random jumps): the share of the mid's changes 1-3 after the one a jump
    makes (the first change at or after an episode's end) that go the jump's way. A gradual
    catch-up makes them follow the jump; a jump that shows at once leaves them a coin or
    less (mid changes alternate more often than not: bid-ask bounce)."""
    d = start_day("MNQH6", FRIDAY, 200_000, 11, None, 42, 1, 0.3, "random", flow)
    st = d.sim.state[0]
    out = record_buffer(1 + MAX_GROUP, 42, 1)
    mid, left, jump = [], [], []
    for _ in range(groups):
        run(d.sim, out, d.h, d.hcum, 1)
        mid.append(0.5 * (st["best_bid"] + st["best_ask"]))
        left.append(st["episode_left"])
        jump.append(st["episode_jump"])
    m, ep, jp = np.array(mid), np.array(left), np.array(jump)
    changes = np.flatnonzero(np.diff(m) != 0) + 1
    ends = np.flatnonzero((ep[1:] == 0) & (ep[:-1] == 1)) + 1
    agree = []
    for e in ends:
        j = np.searchsorted(changes, e)
        for k in (1, 2, 3):
            if j + k < len(changes):
                c = changes[j + k]
                agree.append(np.sign(m[c] - m[c - 1]) == jp[e - 1])
    assert len(agree) > 300
    return float(np.mean(agree))


def test_flow_touch_shows_a_jump_at_once() -> None:
    # The default flow catches up over several mid changes (a run the book remembers).
    assert _after_jumps("depth") > 0.6
    assert _after_jumps("touch") < 0.52


def test_bad_flow_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="flow: must be one of depth, touch"):
        synth_session(tmp_path / "x.dbn", day=FRIDAY, records=20_000, flow="sideways")
    assert not list(tmp_path.iterdir())


def test_cli_flow(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["synth", "--records", "5000", "--flow", "touch", "--quiet",
                                   "--out", str(tmp_path / "x.dbn")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["synth", "--records", "5000", "--flow", "up", "--out",
                                   str(tmp_path / "y.dbn")])
    assert res.exit_code == 2
