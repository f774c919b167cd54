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
