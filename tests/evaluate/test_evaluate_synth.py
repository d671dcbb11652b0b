"""``vpbatch evaluate`` end to end on built synthetic days: the planted signal, its placebo
controls, the shuffled future, the CLI (table, --json, HTML) and its errors; ``synth
--informed`` itself."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from cli.main import cli
from tests.evaluate.conftest import DAY, SYMBOL, away_from_chance, shuffled
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.errors import ConfigError
from vpbatch.evaluate.evaluation import (
    Evaluation,
    compute_targets,
    evaluate_states,
    load_states,
)
from vpbatch.evaluate.stats import Bootstrap
from vpbatch.synth import synth_session, synth_to_lake


def _result(ev: Evaluation, predictor: str, target: str, metric: str) -> dict:
    for r in ev.results:
        if (r["predictor"], r["target"], r["metric"]) == (predictor, target, metric):
            return r
    raise KeyError((predictor, target, metric))


# ------------------------------------------------------------------------------------------
# synth --informed


def test_synth_given_informed_zero_writes_the_unplanted_stream_byte_for_byte(
        tmp_path: Path) -> None:
    # Pinned from the generator before the planted-signal option existed (commit 4e3bae6).
    synth_session(tmp_path / "a.mbo.dbn", day=DAY, records=20_000, seed=7, informed=0.0)
    digest = hashlib.sha256((tmp_path / "a.mbo.dbn").read_bytes()).hexdigest()
    assert digest == "3c1cffa168bdefd97578b5609ab44c6c2e3687ebf3077b5fab368dcece06bbf7"


def test_synth_given_informed_is_deterministic_and_differs_from_plain(tmp_path: Path) -> None:
    for name, informed in (("a", 0.3), ("b", 0.3), ("c", 0.0)):
        synth_session(tmp_path / f"{name}.mbo.dbn", day=DAY, records=20_000, seed=7,
                      informed=informed)
    data = {n: (tmp_path / f"{n}.mbo.dbn").read_bytes() for n in "abc"}
    assert data["a"] == data["b"]
    assert data["a"] != data["c"]


def test_synth_given_informed_jump_keeps_the_planted_stream_and_is_deterministic(
        planted_lake: Path, tmp_path: Path) -> None:
    # The planted day (aligned jumps) is the stream from before --informed-jump existed:
    # sha256 of the decompressed file, written by the generator at commit 23e1f6e.
    raw = next(planted_lake.glob("raw/**/*.mbo.dbn.zst"))
    with zstandard.ZstdDecompressor().stream_reader(raw.open("rb")) as fh:
        data = fh.read()
    assert hashlib.sha256(data).hexdigest() == (
        "9207984b8d56582512dc5d77de541da2ba4724bc5518d5aa531285190e524605")
    files = {}
    for name, jump in (("a", "random"), ("b", "random"), ("c", "aligned"), ("d", "none")):
        path = tmp_path / f"{name}.mbo.dbn"
        synth_session(path, day=DAY, records=20_000, seed=7, informed=0.3, informed_jump=jump)
        files[name] = path.read_bytes()
    assert files["a"] == files["b"]
    assert len({files["a"], files["c"], files["d"]}) == 3


@pytest.mark.parametrize(("kw", "match"), [
    ({"informed": 0.3, "informed_jump": "sideways"}, "informed_jump: must be one of"),
    ({"informed": 0.0, "informed_jump": "random"}, "informed_jump: 'random' needs informed"),
])
def test_synth_given_bad_informed_jump_raises(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synth_session(tmp_path / "x.mbo.dbn", day=DAY, records=20_000, **kw)
    assert not list(tmp_path.iterdir())


def test_synth_cli_given_informed_jump_without_informed_exits_with_a_message(
        tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["synth", "--records", "2000", "--informed-jump", "random",
                                   "--out", str(tmp_path / "x.dbn")])
    assert res.exit_code == 1
    assert "informed_jump: 'random' needs informed episodes" in res.stderr
    assert not list(tmp_path.iterdir())


def test_synth_cli_given_informed_out_of_range_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["synth", "--records", "2000", "--informed", "1.5", "--out",
                                   str(tmp_path / "x.dbn")])
    assert res.exit_code == 2
    assert "--informed" in res.output


# ------------------------------------------------------------------------------------------
# Planted signal and shuffled future


def test_evaluate_given_planted_informed_flow_finds_more_information_in_the_regime(
        plain_eval: Evaluation, planted_eval: Evaluation) -> None:
    """Informed episodes act beyond the touch, so the regime sees them and level-1 signals
    do not: the regime's information rises above the unplanted day's interval."""
    for target in ("event_2", "event_5", "clock_30s"):
        planted = _result(planted_eval, "regime_score", target, "ic")
        plain = _result(plain_eval, "regime_score", target, "ic")
        assert planted["ci_low"] > plain["ci_high"], (target, planted, plain)
    for target in ("event_2", "event_5"):
        mcc = _result(planted_eval, "regime", target, "mcc")
        assert mcc["ci_low"] > _result(plain_eval, "regime", target, "mcc")["ci_high"]
    # Level-1 queue imbalance does not see the planted flow.
    qi = _result(planted_eval, "queue_imbalance", "event_5", "ic")
    assert qi["ci_high"] < _result(planted_eval, "regime_score", "event_5", "ic")["ci_low"]


#: The checks of the planted-signal test above: (predictor, target, metric).
PLANTED_CHECKS = [("regime_score", t, "ic") for t in ("event_2", "event_5", "clock_30s")] + [
    ("regime", t, "mcc") for t in ("event_2", "event_5")]


def test_evaluate_given_placebo_day_finds_no_information_in_the_informed_activity(
        plain_eval: Evaluation, planted_eval: Evaluation, placebo_eval: Evaluation) -> None:
    """Placebo control: the same episodes, the same pulls and adds, the same jumps, but each
    jump's direction independent of the activity. What the regime found on the planted day
    is the activity's alignment with the move: the planted day is above the placebo's
    interval, and the placebo is not above the unplanted day's (the test that detects the
    planted signal stays silent)."""
    for key in PLANTED_CHECKS:
        planted, placebo, plain = (_result(ev, *key) for ev in (planted_eval, placebo_eval,
                                                                plain_eval))
        assert planted["ci_low"] > placebo["ci_high"], (key, planted, placebo)
        assert placebo["ci_low"] <= plain["ci_high"], (key, placebo, plain)


def test_evaluate_given_informed_activity_without_a_move_finds_nothing_extra(
        plain_eval: Evaluation, activity_only_eval: Evaluation) -> None:
    """The informed-looking activity with no move after it: at no horizon does the regime
    carry more information than on the unplanted day."""
    for target in ("event_1", "event_2", "event_5", "clock_1s", "clock_5s", "clock_30s",
                   "clock_60s"):
        for predictor, metric in (("regime_score", "ic"), ("regime", "mcc")):
            activity = _result(activity_only_eval, predictor, target, metric)
            plain = _result(plain_eval, predictor, target, metric)
            assert activity["ci_low"] <= plain["ci_high"], (target, metric, activity, plain)


def test_evaluate_given_shuffled_future_every_predictor_is_at_chance(planted_lake: Path) -> None:
    """The planted day carries information; with its future returns shuffled none is left.

    Many estimates are checked at once, so each is held to a Bonferroni level (family-wise
    5%): |estimate - chance| within z standard errors, the standard error read off its 95%
    bootstrap interval. A predictor that peeks at the future sits far outside.
    """
    states = load_states(planted_lake, SYMBOL, DAY, DAY)
    targets = shuffled(compute_targets(states), seed=3)
    ev = evaluate_states(states, targets=targets, settings=Bootstrap(resamples=400))
    chance = {t["target"]: t["chance_balanced_accuracy"] for t in ev.targets}
    rows = [r for r in ev.results if r["metric"] in ("balanced_accuracy", "mcc", "ic")]
    misses = away_from_chance(rows, chance)
    assert len(rows) > 150
    assert not misses


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_evaluate_given_built_day_prints_table_with_every_predictor(
        planted_lake: Path) -> None:
    res = CliRunner().invoke(cli, ["evaluate", "--symbol", SYMBOL, "--dt", DAY.isoformat(),
                                   "--lake", str(planted_lake), "--resamples", "50"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for word in ("regime_score", "queue_imbalance", "microprice", "ofi_10s", "momentum_5s",
                 "majority", "event_5", "clock_60s", "excluded (crossed book)", "["):
        assert word in res.output


def test_cli_evaluate_given_json_and_html_writes_both(planted_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["evaluate", "--symbol", SYMBOL, "--dt", DAY.isoformat(),
                                   "--lake", str(planted_lake), "--resamples", "50", "--json",
                                   "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["states"]["total"] >= doc["states"]["evaluated"] > 0
    assert {t["target"] for t in doc["targets"]} == {
        "event_1", "event_2", "event_5", "clock_1s", "clock_5s", "clock_30s", "clock_60s"}
    assert {r["metric"] for r in doc["results"]} == {
        "coverage", "hit_rate", "balanced_accuracy", "mcc", "ic"}
    page = out.read_text()
    for section in ("hit-rate", "ic", "calibration", "results"):
        assert f'<section id="{section}">' in page
    assert page.count("data:image/png;base64,") == 4
    assert "<script" not in page and "http" not in page


def test_cli_evaluate_given_unbuilt_day_exits_3_naming_the_built_days(planted_lake: Path) -> None:
    res = CliRunner().invoke(cli, ["evaluate", "--symbol", SYMBOL, "--dt", "2026-02-09",
                                   "--lake", str(planted_lake)])
    assert res.exit_code == 3
    assert "Error:" in res.stderr and "no complete build of MNQH6 for 2026-02-09" in res.stderr
    assert "2026-02-06" in res.stderr


def test_cli_evaluate_given_dt_and_range_together_is_a_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["evaluate", "--symbol", SYMBOL, "--dt", "2026-02-06",
                                   "--start", "2026-02-02", "--lake", str(tmp_path)])
    assert res.exit_code == 2
    assert "either --dt or --start/--end" in res.output


def test_cli_evaluate_given_range_walks_forward_over_built_days(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    lake = tmp_path_factory.mktemp("range")
    days = (dt.date(2026, 2, 4), dt.date(2026, 2, 5))
    for day in days:
        synth_to_lake(lake, SYMBOL, day, records=30_000, seed=2)
        build(BuildRequest(symbol=SYMBOL, day=day, lake=lake, use_cache=False))
    res = CliRunner().invoke(cli, ["evaluate", "--symbol", SYMBOL, "--start", "2026-02-03",
                                   "--end", "2026-02-06", "--lake", str(lake), "--json",
                                   "--resamples", "50"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["days"] == ["2026-02-04", "2026-02-05"]
    assert doc["split"].startswith("walk-forward")
    states = load_states(lake, SYMBOL, days[1], days[1])
    assert doc["states"]["test"] == len(states)
    assert {t["test_day"] for t in doc["thresholds"]} == {"2026-02-05"}
