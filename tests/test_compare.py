"""scoresde.comparison and the compare / demo commands: the grid, its table, files and plots."""

import argparse
import json

import pytest
import torch

import scoresde as sd
from scoresde.cli.compare import add_compare_parser, add_demo_parser
from scoresde.comparison import (
    PROBLEMS,
    Problem,
    checkpoint_problem,
    compare,
    is_adaptive,
    markdown_table,
    mixture_problem,
    parse_options,
    parse_solver,
    ring,
    split_solvers,
    write_outputs,
)
from scoresde.data import checkerboard
from scoresde.model import ScoreModel
from scoresde.nets import ResidualMLP, UNet
from scoresde.sde import VESDE, VPSDE
from scoresde.training import TrainConfig, Trainer

N = 400


@pytest.fixture(scope="module")
def table():
    return compare("ring", "vp", ["ode_heun", "ddim:eta=1", "ode_rk45"], [5, 20], n=N, rtols=[1e-4])


def test_grid_runs_with_measured_nfe(table):
    rows = {(r.solver, r.steps): r for r in table.rows}
    assert set(rows) == {
        ("ode_heun", 5),
        ("ode_heun", 20),
        ("ddim(eta=1)", 5),
        ("ddim(eta=1)", 20),
        ("ode_rk45", None),
    }
    assert rows[("ode_heun", 5)].nfe == 10 and rows[("ode_heun", 20)].nfe == 40
    assert rows[("ddim(eta=1)", 20)].nfe == 20
    assert all(r.error is None and r.seconds > 0 for r in table.rows)
    # a mixture problem gets the mode-weight and width metrics beside MMD² and Fréchet
    assert set(table.noise_floor) == {"mmd2", "frechet", "mode_tv", "width"}
    assert table.noise_floor["mmd2"][1] > 0
    assert rows[("ddim(eta=1)", 5)].ref_rms is None  # stochastic: no path error


def test_error_falls_with_steps_and_tight_solver_is_near_reference(table):
    rows = {(r.solver, r.steps): r for r in table.rows}
    assert rows[("ode_heun", 20)].ref_rms < rows[("ode_heun", 5)].ref_rms / 4
    # by 20 steps the samples are indistinguishable from exact ones (MMD² within the noise band)
    assert table.at_floor(rows[("ode_heun", 20)], "mmd2")
    assert rows[("ode_rk45", None)].ref_rms < 1e-3


def test_reference_distances_match_the_exact_flow_map():
    # Gaussian data: the PF-ODE map is known in closed form, so the row's ref_rms / ref_median
    # (against the float64 rk45 reference) must equal the distances to the exact flow of the same
    # x_T (compare draws z with seed + 1) up to the reference solve's own error (~1e-7).
    mean = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    std = torch.tensor([[0.5, 0.2]], dtype=torch.float64)
    sde, seed = VPSDE(), 4
    t = compare(sd.GaussianMixture(mean, std), sde, ["ode_heun"], [8], n=300, seed=seed)
    (row,) = t.rows
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    exact = sd.gaussian_flow_map(sde, mean, std)(z * sde.prior_std, sde.T, sde.sampling_eps)
    per_sample = (t.samples[("ode_heun", 8)].double() - exact).pow(2).mean(1).sqrt()
    assert row.ref_rms == pytest.approx(float(per_sample.pow(2).mean().sqrt()), abs=1e-6)
    assert row.ref_median == pytest.approx(float(per_sample.median()), abs=1e-6)
    assert row.ref_median > 1e-4  # 8 Heun steps are far from exact: the check is not vacuous


def test_common_random_numbers_make_rows_reproducible(table):
    again = compare("ring", "vp", [("ode_heun", {}), "ddim:eta=1"], [5], n=N)
    for r in again.rows:
        old = next(o for o in table.rows if (o.solver, o.steps) == (r.solver, 5))
        assert r.metrics["mmd2"] == old.metrics["mmd2"] and r.ref_rms == old.ref_rms


def test_bad_names_list_valid_ones():
    with pytest.raises(ValueError, match="ode_heun"):
        compare("ring", "vp", ["ode_hen"], [5], n=N)
    with pytest.raises(ValueError, match="gmm64"):
        compare("rnig", "vp", ["ode_heun"], [5], n=N)


def test_impossible_configs_are_rows_not_crashes():
    t = compare("ring", "vp", ["ode_euler", "dpm_solver:order=7"], [0, 3], n=200)
    by = {(r.solver, r.steps): r for r in t.rows}
    assert "steps" in by[("ode_euler", 0)].error
    assert by[("ode_euler", 3)].error is None and by[("ode_euler", 3)].nfe == 3
    assert "order" in by[("dpm_solver(order=7)", 3)].error
    assert "error" in t.to_markdown()


def test_sample_options_in_a_spec_keep_the_row_deterministic():
    # time_grid is an option of sample(), not of the solver: the row is still a PF-ODE row.
    t = compare("ring", "vp", ["dpm_solver:time_grid=karras"], [10], n=200)
    (row,) = t.rows
    assert row.error is None and row.deterministic is True and row.ref_rms is not None


def test_table_saves_csv_json_and_markdown(table, tmp_path):
    table.save_csv(tmp_path / "t.csv")
    table.save_json(tmp_path / "t.json")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("solver,steps,rtol,nfe") and len(lines) == 1 + len(table.rows)
    data = json.loads((tmp_path / "t.json").read_text())
    assert len(data["rows"]) == len(table.rows) and "mmd2" in data["noise_floor"]
    assert str(table).startswith("| solver |") and "Noise floor" in str(table)


def test_rows_flatten_to_the_json_columns_in_order(table):
    # the JSON/CSV format: the fields in order, each metric in the place of ``metrics``
    order = ["solver", "name", "options", "steps", "rtol", "nfe", "seconds", "deterministic"]
    order += [*table.metrics, "ref_rms", "ref_median", "error"]
    data = table.to_dict()["rows"]
    for row, flat in zip(table.rows, data, strict=True):
        assert list(row.to_dict()) == order and list(flat) == order
        assert row.value("mmd2") == row.metrics["mmd2"] == flat["mmd2"]
        assert row.value("nfe") == row.nfe == flat["nfe"]
    with pytest.raises(KeyError, match="unknown column 'nope'.*'ref_rms'.*'mmd2'"):
        table.rows[0].value("nope")
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_problems_and_solver_specs():
    assert PROBLEMS["ring"]().means.shape == (8, 2)
    assert PROBLEMS["grid"]().means.shape == (25, 2)
    assert PROBLEMS["gmm64"]().dim == 64
    assert split_solvers("ode_heun,dpm_solver:order=3,prediction=noise,pc") == [
        "ode_heun",
        "dpm_solver:order=3,prediction=noise",
        "pc",
    ]
    assert parse_solver("pc: snr=0.16 , denoise=false,eps=none") == (
        "pc",
        {"snr": 0.16, "denoise": False, "eps": None},
    )
    assert parse_options(["steps=10", "time_grid=karras"]) == {"steps": 10, "time_grid": "karras"}
    with pytest.raises(ValueError, match="'order' in solver spec 'dpm_solver:order' is not key"):
        parse_solver("dpm_solver:order")
    with pytest.raises(ValueError, match="'=3' is not key=value"):
        parse_options(["=3"])


def test_is_adaptive_reads_the_solver_metadata():
    # Adaptive (rtol/atol runs, no steps) means nfe_per_step is None: the two step-size
    # controlled solvers, and torchsde only with its adaptive option.
    assert [name for name in sd.SOLVERS if is_adaptive(name, {})] == ["ode_rk45", "scipy"]
    assert is_adaptive("torchsde", {"adaptive": True}) and not is_adaptive("torchsde", {})
    assert is_adaptive("ode_rk45", {"rtol": 1e-3, "time_grid": "uniform"})  # a sample keyword
    # Invalid options do not raise here (the run reports them): the class's metadata decides.
    assert is_adaptive("ode_rk45", {"bogus": 1}) and not is_adaptive("dpm_solver", {"order": 7})


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


# ----------------------------------------------------------------------------------------------
# Problems: a mixture wrapped as a Problem, and trained checkpoints with a data set


def test_mixture_problem_reproduces_the_preset_path(table):
    prob = mixture_problem(ring(), "vp", seed=0, name="ring")
    assert isinstance(prob, Problem) and prob.target == "exact" and prob.event_shape == (2,)
    again = compare(prob, None, ["ode_heun", "ddim:eta=1", "ode_rk45"], [5, 20], n=N, rtols=[1e-4])
    keys = ("nfe", "mmd2", "frechet", "ref_rms", "error")
    assert [[r.value(k) for k in keys] for r in again.rows] == [
        [r.value(k) for k in keys] for r in table.rows
    ]
    assert again.noise_floor == table.noise_floor and again.meta["problem"] == "ring"
    assert (
        compare(prob, VPSDE(), ["ode_heun"], [5], n=N).rows[0].metrics["mmd2"]
        == again.rows[0].metrics["mmd2"]
    )
    with pytest.raises(ValueError, match="sde="):
        compare(prob, "ve", ["ode_heun"], [5], n=N)
    with pytest.raises(ValueError, match="eps="):
        compare(prob, solvers=["ode_heun"], steps=[5], n=N, eps=0.01)


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory):
    """A residual MLP trained for 200 steps on the checkerboard (under a second). It predicts x0:
    an eps-model this young has a biased eps near t = 0 and throws samples far out."""
    torch.manual_seed(0)
    model = ScoreModel(ResidualMLP(2, hidden=32, depth=2), VPSDE(), "x0")
    data = checkerboard(4000, torch.Generator().manual_seed(0))
    trainer = Trainer(model, data, TrainConfig(batch_size=256, lr=3e-3, warmup=20, log_every=1000))
    trainer.train(200, progress=False)
    return trainer.save(tmp_path_factory.mktemp("mlp") / "checkpoint").with_suffix("")


def test_checkpoint_grid_against_data(mlp_checkpoint):
    prob = checkpoint_problem(mlp_checkpoint, "checkerboard")
    assert prob.target == "data" and prob.event_shape == (2,) and isinstance(prob.sde, VPSDE)
    t = compare(prob, solvers=["ode_heun", "ddim:eta=1"], steps=[5, 20], n=300, n_ref=100)
    rows = {(r.solver, r.steps): r for r in t.rows}
    assert all(r.error is None and r.metrics["mmd2"] is not None for r in t.rows)
    assert rows[("ode_heun", 5)].nfe == 10 and rows[("ddim(eta=1)", 20)].nfe == 20
    # ref_rms: distance to a tight float64 solution of the model's own PF-ODE from the same x_T
    assert rows[("ode_heun", 20)].ref_rms < rows[("ode_heun", 5)].ref_rms / 4
    assert rows[("ddim(eta=1)", 5)].ref_rms is None
    assert t.noise_floor["mmd2"][1] > 0 and t.noise_floor["frechet"][0] > 0
    assert (
        rows[("ode_heun", 20)].metrics["frechet"] < 0.5
    )  # a (roughly) trained model: near the data
    assert t.meta["target"] == "data" and t.meta["checkpoint"] == str(mlp_checkpoint)
    assert t.meta["data"] == "checkerboard" and "data samples" in t.to_markdown()


def test_checkpoint_problem_errors(mlp_checkpoint):
    with pytest.raises(ValueError, match=r"shape \(3,\).*takes \(2,\)"):
        checkpoint_problem(mlp_checkpoint, torch.randn(500, 3))
    with pytest.raises(ValueError, match="checkerboard.*digits"):
        checkpoint_problem(mlp_checkpoint, "checkrboard")
    small = checkpoint_problem(mlp_checkpoint, torch.randn(50, 2))
    with pytest.raises(ValueError, match="50 items.*needs 110"):
        compare(small, solvers=["ode_heun"], steps=[5], n=10)
    prob = checkpoint_problem(mlp_checkpoint, "two_moons")
    with pytest.raises(ValueError, match="sde="):
        compare(prob, "ve", ["ode_heun"], [5], n=50)
    with pytest.raises(ValueError, match="sde="):
        compare(prob, VESDE(), ["ode_heun"], [5], n=50)


def test_compare_command_on_a_checkpoint(mlp_checkpoint, tmp_path, capsys):
    out = tmp_path / "res"
    base = ["compare", "--checkpoint", str(mlp_checkpoint), "--solvers", "ode_heun,pc"]
    argv = [*base, "--data", "checkerboard", "--steps", "5,10", "--n", "200", "--n-ref", "50"]
    assert _run([*argv, "--out", str(out)]) == 0
    assert "| ode_heun | 5 |" in capsys.readouterr().out
    for name in ("table.md", "table.csv", "table.json", "error_vs_nfe_ref_rms.png", "samples.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "trajectories.png").exists()
    assert json.loads((out / "table.json").read_text())["meta"]["target"] == "data"
    with pytest.raises(SystemExit, match="--sde"):
        _run([*argv, "--sde", "vp", "--out", str(out)])
    with pytest.raises(SystemExit, match="--data"):
        _run([*base, "--out", str(out)])
    with pytest.raises(SystemExit):  # argparse: --problem and --checkpoint exclude each other
        _run([*argv, "--problem", "ring", "--out", str(out)])


def test_image_checkpoint_writes_an_image_panel(tmp_path):
    pytest.importorskip("sklearn")
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=8, channel_mults=(1, 2), num_res_blocks=1, image_size=8)
    data = torch.zeros(64, 1, 8, 8)
    path = Trainer(ScoreModel(net, VPSDE()), data, TrainConfig(batch_size=32)).save(tmp_path / "c")
    prob = checkpoint_problem(path.with_suffix(""), "digits")
    assert prob.event_shape == (1, 8, 8)
    t = compare(prob, solvers=["ode_euler"], steps=[3], n=60, n_ref=8, metrics=["mmd2"])
    assert t.rows[0].error is None and t.rows[0].nfe == 3 and t.meta["dim"] == 64
    assert t.target.shape == (60, 1, 8, 8) and t.samples[("ode_euler", 3)].shape == (60, 1, 8, 8)
    files = {f.name for f in write_outputs(t, tmp_path / "out")}
    assert "samples.png" in files and "trajectories.png" not in files
    with pytest.raises(ValueError, match="1797 items.*use n <= 163"):
        compare(prob, solvers=["ode_euler"], steps=[3], n=200)


def test_mixture_metrics_are_taken_against_p_eps_and_match_the_metric_functions():
    from scoresde.comparison import mixture_problem, narrow
    from scoresde.metrics import mode_weight_tv, width_error

    prob = mixture_problem(narrow(), "vp", name="narrow")
    alpha, sigma = prob.sde.marginal(torch.tensor(prob.eps, dtype=torch.float64))
    data = narrow()
    assert torch.allclose(prob.mixture.means, alpha * data.means)
    assert torch.allclose(prob.mixture.stds, torch.sqrt(alpha**2 * data.stds**2 + sigma**2))
    t = compare(prob, solvers=["dpm_solver"], steps=[30], n=2000, metrics=["mode_tv", "width"])
    (row,) = t.rows
    x = t.samples[("dpm_solver", 30)]
    assert row.metrics["mode_tv"] == mode_weight_tv(x, prob.mixture)
    assert row.metrics["width"] == width_error(x, prob.mixture)
    # the floor is the spread of exact sets: positive mean (sampling error), positive spread
    assert all(mu > 0 and sd > 0 for mu, sd in t.noise_floor.values())


def test_mixture_metrics_need_a_mixture():
    from scoresde.comparison.runner import _metric_fns

    with pytest.raises(ValueError, match="mode_tv"):
        _metric_fns(["mmd2", "mode_tv"], torch.zeros(10, 2), 0, None)
