"""vpbatch.pictures (plot, report) and ``vpbatch plot`` / ``vpbatch report`` on real builds."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner, Result

pytest.importorskip("matplotlib")

from matplotlib import image as mpimg

from cli.main import cli
from tests.fakes import fake_build
from vpbatch.build.pipeline import build
from vpbatch.build.request import BuildRequest
from vpbatch.clock import et_ns, parse_clock
from vpbatch.errors import ConfigError, InputError
from vpbatch.pictures.plot import (
    draw_heatmap,
    figure_bytes,
    heatmap_image,
    parse_size,
    plot_heatmap,
    require_matplotlib,
    scales,
)
from vpbatch.pictures.plot_data import MAX_COLUMNS, load_heatmap, open_session, resolve_window
from vpbatch.pictures.report import (
    BUSY_WINDOW_NS,
    regime_table,
    write_report,
)
from vpbatch.sql import connect, run_query
from vpbatch.store.writer import PartitionWriter
from vpbatch.synth import synth_to_lake

DAY = dt.date(2026, 2, 6)
GOOG_DAY = dt.date(2024, 4, 3)
GOOG = "dbeq-basic-goog-20240403.mbo.dbn.zst"
T0, T1 = dt.time(9, 33), dt.time(9, 38)

DbnPath = Callable[[str], Path]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MNQH6 day (300k records), built 09:30-09:45 ET with the mbp table."""
    root = tmp_path_factory.mktemp("plotlake")
    synth_to_lake(root, "MNQH6", DAY, records=300_000)
    result = build(BuildRequest(symbol="MNQH6", day=DAY, lake=root, start_time=dt.time(9, 30),
                                end_time=dt.time(9, 45), mbp_levels=10, use_cache=False))
    assert result.status == "built" and result.rows["vp_snapshot"] > 1000
    return root


@pytest.fixture(scope="module")
def goog_lake(tmp_path_factory: pytest.TempPathFactory, dbn_path: DbnPath) -> Path:
    """The shared GOOG file (full-depth publisher 39), grids only: no mbp table."""
    root = tmp_path_factory.mktemp("googlake")
    result = build(BuildRequest(symbol="GOOG", day=None, lake=root, path=dbn_path(GOOG),
                                publisher_id=39, use_cache=False))
    assert result.status == "built" and "mbp" not in result.rows
    return root


def png_pixels(data: bytes) -> np.ndarray:
    """RGB(A) floats in [0, 1], rows top to bottom."""
    return np.asarray(mpimg.imread(io.BytesIO(data), format="png"))


def heat_region(pixels: np.ndarray) -> np.ndarray:
    """A crop well inside the heatmap axes (clear of titles, legend, colour bars, regime band)."""
    h, w = pixels.shape[:2]
    return pixels[int(h * 0.2): int(h * 0.8), int(w * 0.12): int(w * 0.75), :3]


def run(*args: str, ok: bool = False) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=not ok)


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "dpi", "pixels"), [
    ("1600", 100, 1600), ("900px", 100, 900), ("12in", 100, 1200), ("7.5in", 120, 900),
])
def test_parse_size_given_pixels_or_inches_returns_pixels(text: str, dpi: int,
                                                           pixels: int) -> None:
    assert parse_size(text, dpi) == pixels


@pytest.mark.parametrize("text", ["12cm", "wide", "-5", "100", "2in"])
def test_parse_size_given_bad_or_tiny_size_raises_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--width"):
        parse_size(text, 100, "--width")


def test_parse_clock_given_times_and_datetimes_parses_them() -> None:
    assert parse_clock("10:00") == dt.time(10, 0)
    assert parse_clock("10:00:30.5") == dt.time(10, 0, 30, 500_000)
    assert parse_clock("2026-02-05T20:00") == dt.datetime(2026, 2, 5, 20, 0)
    with pytest.raises(ConfigError, match="--to: '25:00' is not a time"):
        parse_clock("25:00", "--to")


def test_et_ns_given_wall_time_uses_new_york_with_dst() -> None:
    winter = et_ns(DAY, dt.time(9, 30))
    summer = et_ns(dt.date(2024, 7, 1), dt.time(9, 30))
    assert winter == int(dt.datetime(2026, 2, 6, 14, 30, tzinfo=dt.UTC).timestamp()) * 10**9
    assert summer == int(dt.datetime(2024, 7, 1, 13, 30, tzinfo=dt.UTC).timestamp()) * 10**9


def test_require_matplotlib_given_it_is_missing_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=re.escape("pip install vpbatch[plot]")):
        require_matplotlib()


# -- loading: time is linear, one state per column, as-of at the start -----------------------------


def test_load_heatmap_given_window_takes_last_state_at_or_before_each_column_end(
    lake: Path,
) -> None:
    con = connect(lake)
    session = open_session(con, lake, "MNQH6", DAY)
    start_ns, end_ns = resolve_window(session, T0, T1)
    data = load_heatmap(con, session, start_ns, end_ns, 300)
    con.close()
    snaps = run_query(lake, "SELECT event_id, epoch_ns(ts_event) AS ts FROM vp_snapshot "
                            "WHERE symbol = 'MNQH6' ORDER BY event_id")
    ts, ids = snaps["ts"].to_numpy(), snaps["event_id"].to_numpy()
    assert data.columns == 300 and data.bin_ns == -(-(end_ns - start_ns) // 300)
    chosen_ids = ids[np.searchsorted(ts, data.state_ts, side="right") - 1]
    # The state in force at each column's right edge (<= edge, latest event_id).
    right_edges = data.edges_ns[1:] - 1
    expected = ids[np.searchsorted(ts, right_edges, side="right") - 1]
    got = chosen_ids[data.col_state]
    assert (data.col_state >= 0).all()  # the state in force at 09:33 fills column 0
    np.testing.assert_array_equal(got, expected)
    inside = (ts >= start_ns) & (ts < end_ns)
    assert data.states_in_window == int(inside.sum()) == int(data.col_states.sum())
    assert data.cell_net.shape == (data.state_ts.size, 2 * session.K + 1)
    assert data.state_ts.size <= data.columns + 1


def test_load_heatmap_given_long_window_caps_columns(lake: Path) -> None:
    con = connect(lake)
    session = open_session(con, lake, "MNQH6", DAY)
    data = load_heatmap(con, session, session.first_ns, session.last_ns + 1, 10 * MAX_COLUMNS)
    con.close()
    assert data.columns == MAX_COLUMNS
    assert data.states_in_window == session.states
    assert data.state_ts.size <= MAX_COLUMNS


def test_heatmap_image_given_state_places_cells_at_absolute_price(lake: Path) -> None:
    con = connect(lake)
    session = open_session(con, lake, "MNQH6", DAY)
    data = load_heatmap(con, session, *resolve_window(session, T0, T1), 200)
    con.close()
    raster = heatmap_image(data, scales(data))
    col = 123
    state = data.col_state[col]
    spot_bucket = data.cell_bucket[state, session.K]
    filled = np.flatnonzero(raster.image[:, col, 3] > 0) + raster.b_lo
    np.testing.assert_array_equal(filled, spot_bucket + np.arange(-session.K, session.K + 1))
    spot = run_query(lake, "SELECT spot_price FROM vp_snapshot WHERE symbol = 'MNQH6' AND "
                           "epoch_ns(ts_event) = $ts", {"ts": int(data.state_ts[state])})
    assert spot_bucket * session.bucket == pytest.approx(spot.item())


# -- pictures ---------------------------------------------------------------------------------


def test_plot_heatmap_given_png_has_requested_size_and_visible_structure(
    lake: Path, tmp_path: Path
) -> None:
    out = plot_heatmap(lake, "MNQH6", DAY, T0, T1, tmp_path / "h.png", width=1000, height=560,
                       dpi=100)
    pixels = png_pixels(out.read_bytes())
    assert pixels.shape[:2] == (560, 1000)
    region = heat_region(pixels)
    rgb = np.round(region * 255).astype(np.int64)
    distinct = np.unique(rgb.reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1]))
    assert distinct.size > 300
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    pressure = (r - b > 80) & (g - b > 30)     # orange/yellow
    vacuum = (b - r > 80) & (g > r)            # blue/cyan
    assert pressure.mean() > 0.002 and vacuum.mean() > 0.002
    assert region.mean(axis=2).std() > 0.05     # brightness varies (depth)


def test_plot_heatmap_given_same_input_writes_identical_png(lake: Path, tmp_path: Path) -> None:
    a = plot_heatmap(lake, "MNQH6", DAY, T0, T1, tmp_path / "a.png", width=600, height=400)
    b = plot_heatmap(lake, "MNQH6", DAY, T0, T1, tmp_path / "b.png", width=600, height=400)
    assert a.read_bytes() == b.read_bytes()


def test_draw_heatmap_labels_time_axis_in_new_york(lake: Path) -> None:
    con = connect(lake)
    session = open_session(con, lake, "MNQH6", DAY)
    data = load_heatmap(con, session, *resolve_window(session, T0, T1), 400)
    con.close()
    fig = draw_heatmap(data, width=1000, height=600)
    figure_bytes(fig, "png")  # lays out and draws the ticks
    heat, band = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in band.get_xticklabels() if t.get_text()]
    assert labels and set(labels) <= {"09:33", "09:34", "09:35", "09:36", "09:37", "09:38"}
    assert band.get_xlabel() == "time (America/New_York, 2026-02-06)"
    assert heat.get_ylabel() == "price"
    assert "MNQH6 · 2026-02-06 · 09:33:00 – 09:38:00 ET" in fig.get_suptitle()


def test_plot_heatmap_given_svg_writes_text_with_et_ticks(lake: Path, tmp_path: Path) -> None:
    out = plot_heatmap(lake, "MNQH6", DAY, T0, T1, tmp_path / "h.svg", width=900, height=500)
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert 'width="648pt" height="360pt"' in svg  # 900 x 500 px at 100 dpi
    assert "09:35" in svg and "14:35" not in svg  # 09:35 ET, not 14:35 UTC
    assert "America/New_York" in svg
    assert "data:image/png;base64," in svg  # the raster itself


def test_plot_heatmap_given_html_embeds_the_png_without_scripts(
    lake: Path, tmp_path: Path
) -> None:
    out = plot_heatmap(lake, "MNQH6", DAY, T0, T1, tmp_path / "h.html", width=800, height=450)
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert "<h1>MNQH6 · 2026-02-06 · 09:33:00 – 09:38:00 ET</h1>" in page
    payload = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert payload is not None
    assert png_pixels(base64.b64decode(payload.group(1))).shape[:2] == (450, 800)


def test_plot_heatmap_given_equity_without_mbp_uses_snapshot_volume(
    goog_lake: Path, tmp_path: Path
) -> None:
    out = plot_heatmap(goog_lake, "GOOG", GOOG_DAY, None, None, tmp_path / "goog.png",
                       width=900, height=500)
    pixels = png_pixels(out.read_bytes())
    assert pixels.shape[:2] == (500, 900)
    region = np.round(heat_region(pixels) * 255).astype(np.int64)
    assert np.unique(region.reshape(-1, 3), axis=0).shape[0] > 100
    con = connect(goog_lake)
    session = open_session(con, goog_lake, "GOOG", GOOG_DAY)
    data = load_heatmap(con, session, session.first_ns, session.last_ns + 1, 500)
    con.close()
    assert not session.has_mbp and data.trades is None
    assert session.bucket == 0.5
    total = run_query(goog_lake, "SELECT sum(buy_volume) + sum(sell_volume) FROM vp_snapshot")
    assert data.col_buy.sum() + data.col_sell.sum() == total.item()


# -- errors -----------------------------------------------------------------------------------


def test_plot_heatmap_given_missing_day_lists_built_days(lake: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        plot_heatmap(lake, "MNQH6", DAY + dt.timedelta(days=1), T0, T1, tmp_path / "x.png")
    assert str(err.value) == (
        f"{lake}: no complete build of MNQH6 for 2026-02-07 (built days of MNQH6: 2026-02-06); "
        f"run `vpbatch build --symbol MNQH6 --dt 2026-02-07`")
    with pytest.raises(InputError, match=r"no builds of ESH6; symbols built: MNQH6"):
        plot_heatmap(lake, "ESH6", DAY, T0, T1, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_heatmap_given_window_without_states_says_what_the_build_covers(
    lake: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputError) as err:
        plot_heatmap(lake, "MNQH6", DAY, dt.time(11, 0), dt.time(11, 5), tmp_path / "x.png")
    message = str(err.value)
    assert message.startswith("MNQH6 2026-02-06: no states between 11:00:00 and 11:05:00 ET "
                              "(the build covers 09:30:00.")
    assert re.search(r"– 09:4\d:\d\d\.\d{3} ET, [\d,]+ states\)$", message)


def test_plot_heatmap_given_reversed_window_or_bad_suffix_raises_config_error(
    lake: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"--to \(09:33:00\) must be after --from \(09:38:00\)"):
        plot_heatmap(lake, "MNQH6", DAY, T1, T0, tmp_path / "x.png")
    with pytest.raises(ConfigError, match=re.escape("use one of .png, .svg, .html")):
        plot_heatmap(lake, "MNQH6", DAY, T0, T1, tmp_path / "x.jpg")


# -- CLI --------------------------------------------------------------------------------------


def test_plot_command_given_window_prints_the_written_path(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "cli.png"
    result = run("plot", "--symbol", "MNQH6", "--dt", "2026-02-06", "--from", "09:33",
                 "--to", "09:38", "-o", str(out), "--lake", str(lake), "--width", "8in",
                 "--height", "450px", "--dpi", "100", ok=True)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n"
    assert png_pixels(out.read_bytes()).shape[:2] == (450, 800)


def test_plot_command_given_errors_exits_with_code_and_one_line(lake: Path) -> None:
    missing = run("plot", "--symbol", "MNQH6", "--dt", "2026-02-09", "--lake", str(lake))
    assert missing.exit_code == 3
    assert missing.stderr.startswith(f"Error: {lake}: no complete build of MNQH6 for 2026-02-09")
    reversed_ = run("plot", "--symbol", "MNQH6", "--dt", "2026-02-06", "--from", "10:00",
                    "--to", "09:00", "--lake", str(lake))
    assert reversed_.exit_code == 1
    assert reversed_.stderr == ("Error: --to (09:00:00) must be after --from (10:00:00) "
                                "(America/New_York)\n")
    bad = run("plot", "--symbol", "MNQH6", "--dt", "2026-02-06", "--from", "9h",
              "--lake", str(lake))
    assert bad.exit_code == 1 and "Error: --from: '9h' is not a time" in bad.stderr


# -- report -----------------------------------------------------------------------------------


def test_write_report_given_day_has_sections_and_embedded_images(
    lake: Path, tmp_path: Path
) -> None:
    out = write_report(lake, "MNQH6", DAY, tmp_path / "r.html")
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert "http://" not in page and "https://" not in page
    for section in ("summary", "anomalies", "book", "regimes", "activity", "profiles",
                    "heatmap"):
        assert f'<section id="{section}">' in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3
    for payload in images:
        pixels = png_pixels(base64.b64decode(payload))
        assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05
    assert "No anomalies." in page
    records = run_query(lake, "SELECT sum(n_records) FROM vp_snapshot").item()
    assert f"<td>{records:,}</td>" in page
    # 09:30-10:00 cut to the build's last state (before 09:45)
    assert re.search(r"Busiest half hour: 09:30:00 – 09:44:5\d ET, [\d,]+ records", page)


def test_regime_table_given_day_is_time_weighted_until_the_next_state(lake: Path) -> None:
    con = connect(lake)
    session = open_session(con, lake, "MNQH6", DAY)
    table = regime_table(con, session)
    con.close()
    assert table["regime"].to_list() == ["UP", "DOWN", "CHOP"]
    assert table["states"].fill_null(0).sum() == session.states
    assert table["time_ns"].fill_null(0).sum() == session.last_ns - session.first_ns
    assert table["time_share"].fill_null(0).sum() == pytest.approx(1.0)
    snaps = run_query(lake, "SELECT epoch_ns(ts_event) AS ts, CAST(regime AS VARCHAR) AS r "
                            "FROM vp_snapshot ORDER BY event_id")
    dur = np.diff(snaps["ts"].to_numpy(), append=snaps["ts"][-1])
    by_regime = pl.DataFrame({"r": snaps["r"], "d": dur}).group_by("r").agg(pl.col("d").sum())
    for regime, total in by_regime.iter_rows():
        got = table.filter(pl.col("regime") == regime)["time_ns"].item()
        assert got == total
    runs = int((snaps["r"] != snaps["r"].shift(1)).fill_null(True).sum())
    assert table["episodes"].fill_null(0).sum() == runs


def test_report_command_given_missing_day_exits_3(lake: Path, tmp_path: Path) -> None:
    result = run("report", "--symbol", "MNQH6", "--dt", "2026-02-07", "--lake", str(lake),
                 "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 3
    assert "built days of MNQH6: 2026-02-06" in result.stderr
    ok = run("report", "--symbol", "MNQH6", "--dt", "2026-02-06", "--lake", str(lake),
             "-o", str(tmp_path / "r.html"), ok=True)
    assert ok.exit_code == 0 and ok.stdout == f"{tmp_path / 'r.html'}\n"
    assert BUSY_WINDOW_NS == 30 * 60 * 10**9


def test_report_given_build_with_one_regime_lists_all_three(tmp_path: Path) -> None:
    fake = fake_build(n_states=30, seed=5)
    fake.snapshots["regime"] = 1  # UP throughout
    with PartitionWriter(tmp_path, fake.product, fake.day, config=fake.config,
                         mbp_levels=fake.levels) as writer:
        writer.write_snapshots(fake.snapshots)
        writer.write_grid(fake.grid)
        writer.write_mbp(fake.mbp)
    con = connect(tmp_path)
    table = regime_table(con, open_session(con, tmp_path, "MNQH6", fake.day))
    con.close()
    assert table["regime"].to_list() == ["UP", "DOWN", "CHOP"]
    assert table["states"].to_list() == [30, None, None]
    assert table["episodes"].to_list() == [1, None, None]
    page = write_report(tmp_path, "MNQH6", fake.day, tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 3
