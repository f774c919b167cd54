"""Comparison figures and tables: every value drawn where it is, one colour per solver in every
figure, the band and the table's ``*`` the same bound, no empty columns, readable titles."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scoresde import plots  # noqa: E402
from scoresde.comparison import ComparisonTable, compare, write_outputs  # noqa: E402


@pytest.fixture(scope="module")
def small():
    # n = 500: the unbiased MMD^2 of ode_heun at 10 and 20 steps is below zero (at the floor)
    return compare("ring", "vp", ["ode_heun", "ddim:eta=1"], [10, 20], n=500, rtols=[1e-3])


def test_a_table_with_only_negative_mmd2_still_gets_its_plot(small, tmp_path):
    heun = [r for r in small.rows if r.solver == "ode_heun"]
    assert all(r.metrics["mmd2"] < 0 for r in heun)  # the case that used to lose its PNG
    only_heun = ComparisonTable(heun, small.noise_floor, small.metrics, small.meta)
    files = {f.name for f in write_outputs(only_heun, tmp_path, trajectory=False)}
    assert "error_vs_nfe_mmd2.png" in files and (tmp_path / "error_vs_nfe_mmd2.png").stat().st_size


def _lines(table, metric: str) -> dict[str, tuple]:
    fig, ax = plt.subplots()
    plots._error_axes(ax, table, plots._series(table, "nfe", metric), metric, "NFE")
    out = {
        line.get_label(): (line.get_color(), line.get_marker(), list(line.get_ydata()))
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }
    scale = ax.get_yscale()
    plt.close(fig)
    return out, scale


def test_values_at_or_below_zero_are_drawn_where_they_are(small):
    lines, scale = _lines(small, "mmd2")
    assert scale == "symlog"  # a log axis cannot show MMD^2 <= 0
    heun = sorted(r.metrics["mmd2"] for r in small.rows if r.solver == "ode_heun")
    assert sorted(lines["ode_heun"][2]) == heun  # not clamped to an axis edge


def test_a_solver_keeps_its_colour_in_every_figure(small):
    mmd, _ = _lines(small, "mmd2")
    ref, _ = _lines(small, "ref_rms")  # stochastic ddim(eta=1) has no ref_rms: one line fewer
    assert set(ref) == {"ode_heun"} and set(mmd) == {"ode_heun", "ddim(eta=1)"}
    assert ref["ode_heun"][:2] == mmd["ode_heun"][:2]
    assert mmd["ode_heun"][0] != mmd["ddim(eta=1)"][0]


def test_band_and_star_are_the_same_bound(small):
    fig, ax = plt.subplots()
    plots._error_axes(ax, small, plots._series(small, "nfe", "mmd2"), "mmd2", "NFE")
    band = next(p for p in ax.patches if "noise floor" in p.get_label())
    top = band.get_y() + band.get_height()  # axhspan: a rectangle in data units along y
    plt.close(fig)
    mean, std = small.noise_floor["mmd2"]
    assert top == pytest.approx(mean + small.floor_stds * std)
    assert f"mean + {small.floor_stds:g} sd" in band.get_label()
    for r in small.rows:
        assert small.at_floor(r, "mmd2") == (r.metrics["mmd2"] <= top)
    assert f"at most {small.floor_stds:g} std" in small.to_markdown()


def test_error_column_only_when_a_run_failed(small):
    assert "error" not in small.to_markdown().splitlines()[0]
    assert "error" not in small.columns()
    failed = compare("ring", "vp", ["dpm_solver:order=7"], [5], n=50)
    assert "error" in failed.to_markdown().splitlines()[0] and "error" in failed.columns()


def test_titles_read_naturally(small):
    title = plots.figure_title(small, "error vs NFE")
    assert title == "error vs NFE: ring, VP SDE, n = 500"
    meta = {**small.meta, "sde": "VESDE", "checkpoint": "results/cb/checkpoint", "data": "rings"}
    t = ComparisonTable(small.rows, small.noise_floor, small.metrics, {**meta, "target": "data"})
    assert plots.figure_title(t, "x") == "x: checkpoint cb/checkpoint, data rings, VE SDE, n = 500"
    assert "checkpoint results/cb/checkpoint, data rings" in t.to_markdown()
