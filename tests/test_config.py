"""``vpbatch.config``: every SPEC parameter from a ``vp.toml``, validated with precise errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from vpbatch.config import (
    CONFIG_KEYS,
    DEFAULT_WARMUP,
    EngineConfig,
    ForceCoefficients,
    load_config_file,
    parse_duration_ns,
)
from vpbatch.errors import ConfigError
from vpbatch.store.lake import MANIFEST_FILE

ESM4 = "glbx-mdp3-esm4-20240508-0000-0002utc.mbo.dbn.zst"
EVERYTHING = """
K = 7
band = 40
tau_v = 1.5
tau_a = 4
tau_j = 8.0
tau_rest = 20.0
regime_lambda = 6.0
theta_on = 0.4
theta_off = 0.2
intensity_floor = 0.5
eps = 1e-9
regime_step = "250ms"
epoch = 2024-05-08T00:00:00.050Z
sample = "event"
warmup = "5m"

[forces]
pressure_v_add = 2.0
pressure_v_rest_pos = 0.25
pressure_a_add = 0.0
vacuum_v_pull = 1.25
vacuum_v_fill = 3.0
vacuum_v_rest_neg = 0.75
vacuum_a_pull = 0.1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vp.toml"
    path.write_text(text)
    return path


def test_load_config_file_given_every_key_sets_every_parameter(tmp_path: Path) -> None:
    settings = load_config_file(write(tmp_path, EVERYTHING))
    assert settings.warmup_ns == 5 * 60 * 10**9
    assert settings.config == EngineConfig(
        K=7, band=40, tau_v=1.5, tau_a=4.0, tau_j=8.0, tau_rest=20.0, regime_lambda=6.0,
        theta_on=0.4, theta_off=0.2, intensity_floor=0.5, eps=1e-9, regime_step_ns=250_000_000,
        sample="event", epoch_ns=1_715_126_400_050_000_000,
        forces=ForceCoefficients(2.0, 0.25, 0.0, 1.25, 3.0, 0.75, 0.1))
    assert set(CONFIG_KEYS) == {line.split(" =")[0] for line in EVERYTHING.splitlines()
                                if " = " in line and not line.startswith(("pressure", "vacuum"))
                                } | {"forces"}


def test_load_config_file_given_empty_file_is_the_defaults(tmp_path: Path) -> None:
    settings = load_config_file(write(tmp_path, "# nothing\n"))
    assert settings.config == EngineConfig()
    assert settings.warmup_ns == parse_duration_ns(DEFAULT_WARMUP, "warmup")


def test_load_config_file_given_options_they_win(tmp_path: Path) -> None:
    settings = load_config_file(write(tmp_path, EVERYTHING), sample="10ms",
                                overrides={"K": 3, "warmup_ns": 1})
    assert settings.config.K == 3 and settings.config.sample_ns == 10_000_000
    assert settings.config.sample == "time" and settings.warmup_ns == 1
    assert settings.config.band == 40  # the file's, not overridden


@pytest.mark.parametrize(("text", "message"), [
    ("tau_x = 1", "vp.toml: unknown key 'tau_x' (valid keys: K, band, tau_v,"),
    ("tau_v = -2", "vp.toml: tau_v: must be > 0, was -2.0"),
    ("tau_v = 'fast'", "vp.toml: tau_v: expected a number, was 'fast'"),
    ("tau_rest = inf", "vp.toml: tau_rest: must be a finite number, was inf"),
    ("K = 2.5", "vp.toml: K: expected an integer, was 2.5"),
    ("K = true", "vp.toml: K: expected an integer, was True"),
    ("K = 60\nband = 50", "vp.toml: band: must be between K (60) and 1000000, was 50"),
    ("theta_on = 0.1\ntheta_off = 0.2",
     "vp.toml: theta_on/theta_off: need 0 <= theta_off <= theta_on <= 1, were 0.1/0.2"),
    ("intensity_floor = -1", "vp.toml: intensity_floor: must be >= 0, was -1.0"),
    ("eps = 0", "vp.toml: eps: must be > 0, was 0.0"),
    ("regime_step = 100", "vp.toml: regime_step: expected a duration string such as \"100ms\", "
                          "was 100"),
    ("regime_step = '10 parsecs'", "vp.toml: regime_step: '10 parsecs' is not a duration"),
    ("sample = 'sometimes'", "vp.toml: --sample: 'sometimes' is not a duration"),
    ("epoch = 2026-02-06T09:30:00", "vp.toml: epoch: a date-time needs a UTC offset"),
    ("epoch = 'noon'", "vp.toml: epoch: expected ns since the Unix epoch or a date-time"),
    ("[forces]\nvacuum_v_fill = -1.5",
     "vp.toml: forces.vacuum_v_fill: must be a finite number >= 0 (forces are non-negative)"),
    ("[forces]\nvacuum = 1", "vp.toml: forces: unknown key 'vacuum' (valid keys: pressure_v_add"),
    ("forces = 3", "vp.toml: forces: expected a table [forces], was 3"),
    ("K = 1\nband = = 2", "vp.toml: invalid TOML: Invalid value (at line 2, column 8)"),
])
def test_load_config_file_given_bad_value_names_file_key_and_problem(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(write(tmp_path, text))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_load_config_file_given_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vp\.toml: no such config file$"):
        load_config_file(tmp_path / "vp.toml")


def test_engine_config_given_epoch_moves_regime_and_bin_boundaries() -> None:
    from vpbatch.book.state import make_params

    params = make_params(EngineConfig(epoch_ns=5), bucket=1, tick=1)
    assert params.epoch == 5


def test_build_cli_given_config_file_records_every_parameter_in_the_manifest(
        tmp_path: Path, dbn_path: Callable[[str], Path]) -> None:
    config = write(tmp_path, EVERYTHING.replace("sample = \"event\"", "sample = \"packet\""))
    args = ["build", "-q", "--symbol", "ESM4", "--path", str(dbn_path(ESM4)), "--lake",
            str(tmp_path / "lake"), "--config", str(config), "--K", "5", "--no-cache"]
    (tmp_path / "lake").mkdir()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(next((tmp_path / "lake" / "gold").rglob(MANIFEST_FILE)).read_text())
    want = load_config_file(config, overrides={"K": 5}).config.to_dict()
    assert manifest["config"] == json.loads(json.dumps(want))
    assert manifest["config"]["K"] == 5 and manifest["config"]["band"] == 40  # option wins
    assert manifest["config"]["forces"]["vacuum_v_fill"] == 3.0
    assert manifest["config"]["epoch_ns"] == 1_715_126_400_050_000_000


def test_build_cli_given_bad_config_file_exits_1_with_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, "theta_off = 0.9\n")
    result = CliRunner().invoke(cli, ["build", "-q", "--symbol", "ESM4", "--dt", "2024-05-08",
                                      "--lake", str(tmp_path), "--config", str(config)])
    assert result.exit_code == 1
    assert result.stderr == ("Error: vp.toml: theta_on/theta_off: need 0 <= theta_off <= "
                             "theta_on <= 1, were 0.3/0.9\n")
