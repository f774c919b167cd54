"""``scoresde train --net tabular`` and its per-column standardisation, end to end through the
command line, against closed forms: the checkpoint's stored mean/std, and samples and likelihoods
mapped back through exactly x = mean + std z (scoresde/cli/data.py ``transform``)."""

from __future__ import annotations

import math

import numpy as np
import torch

import scoresde as sd
from scoresde import cli, data
from scoresde.checkpoint import load_checkpoint, save_checkpoint
from scoresde.cli import data as cli_data

TINY = ["--width", "8", "--depth", "1", "--batch-size", "32", "--warmup", "0", "--quiet"]


def _zero_output(ckpt: str, parameterization: str) -> None:
    """Rewrite a checkpoint with its network's output layer 0 (raw and EMA weights) and the given
    parameterisation, so that the model is a closed form."""
    tensors, meta = load_checkpoint(ckpt)
    for k in tensors:
        if k.endswith(("net.out.weight", "net.out.bias")):
            tensors[k] = torch.zeros_like(tensors[k])
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    save_checkpoint(ckpt, tensors, {**meta, "parameterization": parameterization})


def test_train_net_tabular_maps_samples_and_likelihoods_through_mean_plus_std_z(tmp_path, capsys):
    """``--net tabular`` on ``tabular_mixture`` (column scales from 1e-3 to 1e4): the checkpoint
    stores each column's exact mean and std, and ``sample`` / ``likelihood`` map the model's
    standardised units z back through exactly x = mean + std z, column by column.

    Truth in closed form: with its output layer set to 0, a v-prediction model on the VP SDE is
    exactly the standard normal in standardised units (v = 0 gives eps = sigma z, the score -z of
    N(0, I) at every t), and its PF-ODE drift -beta z / 2 - beta (-z) / 2 vanishes. So ODE samples
    are the prior draw x_T itself, z = x_T, and log p(x) is that of N(mean, diag std^2)."""
    run = tmp_path / "run"
    argv = ["train", "--data", "tabular_mixture", "--n-data", "512", "--out", str(run)]
    argv += ["--net", "tabular", "--parameterization", "v", "--sde", "vp", "--steps", "2"]
    assert cli.main([*argv, *TINY]) == 0
    ckpt = str(run / "checkpoint")
    meta = load_checkpoint(ckpt)[1]
    assert meta["net"]["config"]["dropout"] == 0.1  # the tabular preset
    x = data.tabular_mixture(512, generator=torch.Generator().manual_seed(0))  # what train drew
    st = meta["standardize"]
    assert st == cli_data.standardize(x)
    mean = torch.tensor(st["mean"], dtype=torch.float64)
    std = torch.tensor(st["std"], dtype=torch.float64)
    assert torch.equal(mean, x.double().mean(0)) and torch.equal(std, x.double().std(0))
    assert float(std.max() / std.min()) > 1e6
    _zero_output(ckpt, "v")

    n, out = 4000, tmp_path / "s.npy"
    cmd = ["sample", "--checkpoint", ckpt, "--solver", "ode_euler", "--steps", "4", "--seed", "3"]
    assert cli.main([*cmd, "--n", str(n), "--out", str(out)]) == 0
    x_T = torch.randn(n, 5, generator=torch.Generator().manual_seed(3)).double()  # its draw
    z = (torch.from_numpy(np.load(out)).double() - mean) / std
    # Every column to float32 round-off of its own scale (|mean| / std reaches ~3).
    assert float((z - x_T).abs().max()) < 1e-5

    # PF-ODE likelihood in data units: log N(x; mean, std^2) summed over the columns, i.e.
    # log N(z; 0, I) - sum log std; the command prints the mean bits/dim to 4 decimals.
    like = ["likelihood", "--checkpoint", ckpt, "--data", "tabular_mixture", "--n", "64"]
    capsys.readouterr()
    assert cli.main([*like, "--divergence", "exact"]) == 0
    printed = float(capsys.readouterr().out.split()[0])
    held = data.tabular_mixture(64, generator=torch.Generator().manual_seed(1)).double()
    logp = torch.distributions.Normal(mean, std).log_prob(held).sum(1)
    assert abs(printed - float((-logp / 5 / math.log(2)).mean())) < 2e-4

    # The same network as an eps-prediction model has score 0 (eps = 0): DDIM then multiplies
    # x_T by alpha(t_end) / alpha(T) = exp((B(T) - B(t_end)) / 2) ~ 152 in standardised units
    # (the ~100x spread of an untrained, near-zero-output eps-model), still mapped back exactly.
    _zero_output(ckpt, "eps")
    cmd = ["sample", "--checkpoint", ckpt, "--solver", "ddim", "--steps", "4", "--seed", "3"]
    assert cli.main([*cmd, "--n", str(n), "--out", str(out)]) == 0
    sde = sd.VPSDE()
    ratio = float(sde.marginal(sde.sampling_eps)[0] / sde.marginal(sde.T)[0])
    assert 150 < ratio < 155
    z = (torch.from_numpy(np.load(out)).double() - mean) / std
    assert float((z / ratio - x_T).abs().max()) < 1e-5


def test_net_tabular_defaults_to_v_prediction(tmp_path):
    """``--net tabular`` trains a v-prediction model with lr 5e-4 unless told otherwise (the eps
    form's bounded score sends the PF-ODE's tail draws far out:
    ``test_bounded_net_score_saturates_as_eps_and_pulls_back_linearly_as_v``)."""
    argv = ["train", "--data", "tabular_mixture", "--n-data", "64", "--net", "tabular"]
    argv += ["--steps", "1", *TINY]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    meta = load_checkpoint(str(tmp_path / "a" / "checkpoint"))[1]
    assert (meta["parameterization"], meta["train"]["lr"]) == ("v", 5e-4)
    given = ["--parameterization", "eps", "--lr", "2e-3"]
    assert cli.main([*argv, "--out", str(tmp_path / "b"), *given]) == 0
    meta = load_checkpoint(str(tmp_path / "b" / "checkpoint"))[1]
    assert (meta["parameterization"], meta["train"]["lr"]) == ("eps", 2e-3)


def test_bounded_net_score_saturates_as_eps_and_pulls_back_linearly_as_v():
    """Far from the data the residual MLP's output stops growing (it ends in LayerNorm -> SiLU ->
    Linear, and LayerNorm(r h) = LayerNorm(h)): as eps, |score| = |eps| / sigma saturates, while
    the exact score of the diffused (standardised) data grows like -x. As v, the conversion
    score = -x / r - alpha v / (r sigma), r = alpha^2 + sigma^2 (Salimans & Ho 2022, Sec. 4),
    restores the linear pull for any bounded v: score(R u) / R -> -u for the VP SDE (r = 1)."""
    torch.manual_seed(0)
    net = sd.nets.ResidualMLP.tabular(5, hidden=32, depth=2).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)  # zero at initialisation: make it non-trivial
    sde = sd.VPSDE()
    u = torch.nn.functional.normalize(torch.randn(16, 5, dtype=torch.float64), dim=1).float()
    t = torch.full((16,), 0.5)
    with torch.no_grad():
        eps_model, v_model = sd.ScoreModel(net, sde, "eps"), sd.ScoreModel(net, sde, "v")
        near, far = (eps_model(r * u, t).norm(dim=1) for r in (1e3, 1e4))
        assert float((far / near - 1).abs().max()) < 1e-2  # saturated: 10x further, same score
        for radius in (1e3, 1e4):
            bound = float(v_model(radius * u, t).sub(-radius * u).norm(dim=1).max())
            assert float((v_model(radius * u, t) / radius + u).norm(dim=1).max()) < 1e-2
            assert bound < 10.0  # |score + x| = alpha |v| / sigma stays bounded


def test_exact_score_of_the_standardised_table_reproduces_its_widths():
    """The sampling path of ``benchmarks/tabular.py`` (``scoresde sample``'s DPM-Solver order 3,
    50 steps, the default end time, samples mapped back through mean + std z) driven by the exact
    score of the standardised mixture (means (m - mean) / std, stds s / std) reproduces every
    sub-population's widths: its width error is within 3 standard deviations of the noise floor
    of exact draws, and no row lies further than d^2 = 50 from its sub-population (a chi^2_5
    tail of 1.4e-9 a row). So the trained models' width errors come from the models."""
    n = 4000
    mix = data.tabular_mixture_density()
    x = data.tabular_mixture(20000, generator=torch.Generator().manual_seed(0))
    meta = {"standardize": cli_data.standardize(x)}
    mean = torch.tensor(meta["standardize"]["mean"], dtype=torch.float64)
    std = torch.tensor(meta["standardize"]["std"], dtype=torch.float64)
    standardised = sd.GaussianMixture((mix.means - mean) / std, mix.stds / std, mix.weights)
    sde, exact = sd.VPSDE(), sd.exact_score(sd.VPSDE(), standardised)

    def score(z, t):
        return exact(z.double(), t).float()

    g = torch.Generator().manual_seed(1)
    res = sd.sample(sde, score, (n, 5), solver="dpm_solver", steps=50, order=3, generator=g)
    x = cli_data.transform(meta, res.samples, inverse=True).double()
    seeds = iter(range(10, 20))
    floor, spread = sd.metrics.noise_floor(
        lambda: mix.sample(n, torch.Generator().manual_seed(next(seeds))),
        lambda a, b: sd.metrics.width_error(a, mix),
    )
    assert sd.metrics.width_error(x, mix) < floor + 3 * spread
    k = sd.metrics.mode_assignment(x, mix)
    assert float(((x - mix.means[k]) / mix.stds[k]).square().sum(1).max()) < 50
