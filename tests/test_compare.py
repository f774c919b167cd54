"""scoresde.compare: the solver x steps grid, its table, files, plots and commands."""

import argparse
import json

import pytest

from scoresde.compare import (
    PROBLEMS,
    add_compare_parser,
    add_demo_parser,
    compare,
    split_solvers,
)

N = 400


@pytest.fixture(scope="module")
def table():
    return compare("ring", "vp", ["ode_heun", "ddim:eta=1", "ode_rk45"], [5, 20], n=N, rtols=[1e-4])


def test_grid_runs_with_measured_nfe(table):
    rows = {(r["solver"], r["steps"]): r for r in table.rows}
    assert set(rows) == {
        ("ode_heun", 5),
        ("ode_heun", 20),
        ("ddim(eta=1)", 5),
        ("ddim(eta=1)", 20),
        ("ode_rk45", None),
    }
    assert rows[("ode_heun", 5)]["nfe"] == 10 and rows[("ode_heun", 20)]["nfe"] == 40
    assert rows[("ddim(eta=1)", 20)]["nfe"] == 20
    assert all(r["error"] is None and r["seconds"] > 0 for r in table.rows)
    assert set(table.noise_floor) == {"mmd2", "frechet"} and table.noise_floor["mmd2"][1] > 0
    assert rows[("ddim(eta=1)", 5)]["ref_rms"] is None  # stochastic: no path error


def test_error_falls_with_steps_and_tight_solver_is_near_reference(table):
    rows = {(r["solver"], r["steps"]): r for r in table.rows}
    assert rows[("ode_heun", 20)]["ref_rms"] < rows[("ode_heun", 5)]["ref_rms"] / 4
    # by 20 steps the samples are indistinguishable from exact ones (MMD² within the noise band)
    assert table.at_floor(rows[("ode_heun", 20)], "mmd2")
    assert rows[("ode_rk45", None)]["ref_rms"] < 1e-3


def test_common_random_numbers_make_rows_reproducible(table):
    again = compare("ring", "vp", [("ode_heun", {}), "ddim:eta=1"], [5], n=N)
    for r in again.rows:
        old = next(o for o in table.rows if (o["solver"], o["steps"]) == (r["solver"], 5))
        assert r["mmd2"] == old["mmd2"] and r["ref_rms"] == old["ref_rms"]


def test_bad_names_list_valid_ones():
    with pytest.raises(ValueError, match="ode_heun"):
        compare("ring", "vp", ["ode_hen"], [5], n=N)
    with pytest.raises(ValueError, match="gmm64"):
        compare("rnig", "vp", ["ode_heun"], [5], n=N)


def test_impossible_configs_are_rows_not_crashes():
    t = compare("ring", "vp", ["ode_euler", "dpm_solver:order=7"], [0, 3], n=200)
    by = {(r["solver"], r["steps"]): r for r in t.rows}
    assert "steps" in by[("ode_euler", 0)]["error"]
    assert by[("ode_euler", 3)]["error"] is None and by[("ode_euler", 3)]["nfe"] == 3
    assert "order" in by[("dpm_solver(order=7)", 3)]["error"]
    assert "error" in t.to_markdown()


def test_table_saves_csv_json_and_markdown(table, tmp_path):
    table.save_csv(tmp_path / "t.csv")
    table.save_json(tmp_path / "t.json")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("solver,steps,rtol,nfe") and len(lines) == 1 + len(table.rows)
    data = json.loads((tmp_path / "t.json").read_text())
    assert len(data["rows"]) == len(table.rows) and "mmd2" in data["noise_floor"]
    assert str(table).startswith("| solver |") and "Noise floor" in str(table)


def test_problems_and_solver_specs():
    assert PROBLEMS["ring"]().means.shape == (8, 2)
    assert PROBLEMS["grid"]().means.shape == (25, 2)
    assert PROBLEMS["gmm64"]().dim == 64
    assert split_solvers("ode_heun,dpm_solver:order=3,prediction=noise,pc") == [
        "ode_heun",
        "dpm_solver:order=3,prediction=noise",
        "pc",
    ]


def _run(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_compare_parser(sub)
    add_demo_parser(sub)
    args = p.parse_args(argv)
    return args.func(args)


def test_compare_command_writes_table_and_plots(tmp_path, capsys):
    out = tmp_path / "res"
    argv = [
        "compare",
        "--problem",
        "ring",
        "--sde",
        "ve",
        "--solvers",
        "ode_heun,ancestral",
        "--steps",
        "5,10",
        "--out",
        str(out),
        "--n",
        "300",
    ]
    assert _run(argv) == 0
    assert "| ode_heun | 5 |" in capsys.readouterr().out
    for name in (
        "table.md",
        "table.csv",
        "table.json",
        "error_vs_nfe_mmd2.png",
        "time_vs_error.png",
        "samples.png",
        "trajectories.png",
    ):
        assert (out / name).stat().st_size > 0, name


def test_demo_quick_runs(tmp_path, capsys):
    assert _run(["demo", "--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert "demo finished" in capsys.readouterr().out
    assert (tmp_path / "error_vs_nfe_mmd2.png").exists()
