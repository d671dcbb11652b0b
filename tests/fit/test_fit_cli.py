"""``vpbatch fit`` and ``vpbatch evaluate --models/--model`` end to end on two built days."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from tests.fit.conftest import DAYS, SYMBOL

DAY1, DAY2 = (d.isoformat() for d in DAYS)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def model_json(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "sub" / "model.json"
    res = CliRunner().invoke(cli, ["fit", "--symbol", SYMBOL, "--start", DAY1, "--lake",
                                   str(lake), "--models", "l1,vp+l1", "--targets",
                                   "event_1,event_5,clock_5s", "-o", str(out), "-q"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.stderr
    assert f"{SYMBOL} trained on {DAY1}; default model vp+l1/event_1" in res.stdout
    out.with_suffix(".stdout").write_text(res.stdout)
    return out


def test_fit_cli_given_a_built_day_writes_the_versioned_model_document(
        model_json: Path) -> None:
    doc = json.loads(model_json.read_text())
    assert doc["format"] == "vpbatch-model" and doc["format_version"] == 2
    assert doc["symbol"] == SYMBOL and doc["training_days"] == [DAY1]
    assert doc["vpbatch_version"]
    assert [(m["name"], m["target"]) for m in doc["models"]] == [
        (n, t) for n in ("l1", "vp+l1") for t in ("event_1", "event_5", "clock_5s")]
    for m in doc["models"]:
        p = len(m["features"])
        assert p == (5 if m["name"] == "l1" else 67)
        assert len(m["mean"]) == len(m["scale"]) == len(m["transforms"]) == p
        assert len(m["coef"]) == (3 if m["target"] == "clock_5s" else 1)
        assert m["regularisation"]["C"] in m["regularisation"]["grid"]
        # The group penalty (field scale) only where level-1 and field features meet.
        reg = m["regularisation"]
        assert ("field_scale" in reg) == (m["name"] == "vp+l1")
        if m["name"] == "vp+l1":
            assert reg["field_scale"] in reg["field_scale_grid"]
            k = reg["field_scale_grid"].index(reg["field_scale"])
            assert reg["cv_log_loss"] == reg["field_scale_cv_log_loss"][k]
            if reg["field_scale"] == 0:  # the field's coefficients: exactly 0
                assert all(c == 0 for row in m["coef"] for c in row[5:])
        assert m["training"]["usable_states"] > 3_000
        assert set(m["in_sample"]) == {"coverage", "hit_rate", "balanced_accuracy", "mcc", "ic"}
        if m["target"].startswith("event"):
            assert m["band"]["lo"] == m["band"]["hi"]  # two classes: every state gets a call


def test_fit_cli_prints_each_models_c_and_field_scale(model_json: Path) -> None:
    doc = json.loads(model_json.read_text())
    rows = {tuple(line.split()[:2]): line.split() for line in
            model_json.with_suffix(".stdout").read_text().splitlines()[2:]}
    assert len(rows) == len(doc["models"])
    for m in doc["models"]:
        reg = m["regularisation"]
        row = rows[(m["name"], m["target"])]
        assert float(row[2]) == reg["C"]
        assert row[3] == ("-" if m["name"] == "l1" else f"{reg['field_scale']:g}")


def test_fit_cli_given_the_same_days_twice_writes_the_same_bytes(
        lake: Path, model_json: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.json"
    res = run("fit", "--symbol", SYMBOL, "--dt", DAY1, "--lake", str(lake), "--models",
              "l1,vp+l1", "--targets", "event_1,event_5,clock_5s", "-o", str(again), "-q")
    assert res.exit_code == 0, res.output
    assert again.read_bytes() == model_json.read_bytes()


def test_evaluate_cli_given_a_saved_model_scores_it_on_a_later_day(
        lake: Path, model_json: Path) -> None:
    res = run("evaluate", "--symbol", SYMBOL, "--dt", DAY2, "--lake", str(lake), "--model",
              str(model_json), "--resamples", "50", "--json", "-q")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert "model_l1" in doc["predictors"] and "model_vp+l1" in doc["predictors"]
    scored = {r["target"] for r in doc["results"] if r["predictor"] == "model_vp+l1"}
    assert scored == {"event_1", "event_5", "clock_5s"}  # the targets the file has
    assert {(d["a"], d["b"]) for d in doc["differences"]} == {("model_vp+l1", "model_l1")}
    assert {f["file"] for f in doc["fits"]} == {str(model_json)}


def test_evaluate_cli_given_a_model_trained_on_the_tested_day_refuses(
        lake: Path, model_json: Path) -> None:
    res = run("evaluate", "--symbol", SYMBOL, "--dt", DAY1, "--lake", str(lake), "--model",
              str(model_json), "-q")
    assert res.exit_code == 1
    assert res.stderr.strip() == (f"Error: {model_json}: trained on {DAY1}, which is tested "
                                  "here; evaluate a saved model on days after its training days")


def test_evaluate_cli_given_models_walks_forward_and_reports_the_paired_difference(
        lake: Path, tmp_path: Path) -> None:
    page = tmp_path / "eval.html"
    res = run("evaluate", "--symbol", SYMBOL, "--start", DAY1, "--end", DAY2, "--lake",
              str(lake), "--models", "vp+l1,l1", "--resamples", "50", "--json", "-o",
              str(page), "-q")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["split"].startswith("walk-forward")
    assert {"fit_l1", "fit_vp+l1"} <= set(doc["predictors"])
    assert "fit_vp" not in doc["predictors"]
    # Fitted on day 1, tested on day 2 only: no model sees its test part.
    assert {f["test_day"] for f in doc["fits"]} == {DAY2}
    assert len(doc["fits"]) == 2 * 7
    assert all(("field_scale" in f) == (f["predictor"] == "fit_vp+l1") for f in doc["fits"])
    assert {r["target"] for r in doc["results"] if r["predictor"] == "fit_vp+l1"} == {
        t["target"] for t in doc["targets"]}
    assert len(doc["differences"]) == 7 * 2
    for d in doc["differences"]:
        assert set(d) == {"a", "b", "target", "metric", "estimate", "ci_low", "ci_high"}
        assert (d["a"], d["b"]) == ("fit_vp+l1", "fit_l1") and d["metric"] in ("mcc", "ic")
    html = page.read_text()
    assert '<section id="differences">' in html and "fit_vp+l1 - fit_l1" in html
    # The fits table shows each vp+l1 model's field scale (s = 0: the level-1 model).
    assert "<th>field_scale</th>" in html
    for f in doc["fits"]:
        if f["predictor"] == "fit_vp+l1":
            assert (f"<td>fit_vp+l1</td><td>{f['target']}</td>" in html)
    scales = [f"<td>{f['field_scale']:.4g}</td>" for f in doc["fits"]
              if f["predictor"] == "fit_vp+l1"]
    assert all(cell in html for cell in scales)


def test_evaluate_cli_given_models_prints_the_differences_table(lake: Path) -> None:
    res = run("evaluate", "--symbol", SYMBOL, "--dt", DAY2, "--lake", str(lake), "--models",
              "l1,vp+l1", "--resamples", "50", "-q")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    at = lines.index("fit_vp+l1 - fit_l1")
    assert lines[at + 1].split() == ["target", "MCC", "IC"]
    assert [line.split()[0] for line in lines[at + 2:at + 9]] == [
        "event_1", "event_2", "event_5", "clock_1s", "clock_5s", "clock_30s", "clock_60s"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("fit", "--models", "l1,xx"), 2,
     "Invalid value for '--models': unknown name 'xx' (valid: l1, vp, vp+l1)"),
    (("fit", "--targets", "event_3"), 2, "Invalid value for '--targets': unknown name "
     "'event_3' (valid: event_1, event_2, event_5, clock_1s, clock_5s, clock_30s, clock_60s)"),
    (("fit", "--start", "2026-02-09"), 3, "Error: "),
    (("evaluate", "--dt", DAY2, "--models", "vp,l2"), 2,
     "Invalid value for '--models': unknown name 'l2'"),
])
def test_cli_given_bad_names_or_days_exits_with_one_clear_line(
        lake: Path, tmp_path: Path, args: tuple[str, ...], code: int, message: str) -> None:
    more = ("-o", str(tmp_path / "m.json")) if args[0] == "fit" else ()
    extra = ("--dt", DAY1) if args[0] == "fit" and "--start" not in args else ()
    res = run(*args, *extra, *more, "--symbol", SYMBOL, "--lake", str(lake), "-q")
    assert res.exit_code == code, res.output
    assert message in res.output
    if code == 3:
        assert res.stderr.count("\n") == 1
        assert "no complete build of MNQH6 for 2026-02-09" in res.stderr
        assert f"built days of MNQH6: {DAY1}, {DAY2}" in res.stderr
    assert not (tmp_path / "m.json").exists()


def test_evaluate_cli_given_a_malformed_model_file_names_the_file_and_field(
        lake: Path, model_json: Path, tmp_path: Path) -> None:
    doc = json.loads(model_json.read_text())
    doc["models"][1]["intercept"] = []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    res = run("evaluate", "--symbol", SYMBOL, "--dt", DAY2, "--lake", str(lake), "--model",
              str(bad), "-q")
    assert res.exit_code == 3
    assert res.stderr == f"Error: {bad}: models[1].intercept: expected 1 finite number\n"
