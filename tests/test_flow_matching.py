"""Conditional flow matching and the minibatch-OT coupling (scoresde/flow_matching.py).

Flow matching (Lipman et al. 2023, Eq. 23) regresses u(x_t, t) on alpha' x0 + sigma' eps for
x_t = alpha x0 + sigma eps. For a fixed t, E||h(x_t) - target||^2 = E||u* - target||^2 +
E||h - u*||^2 with u* = E[target | x_t], the PF-ODE velocity f x - g^2 score / 2 (Song et al.
Eq. 13): the exact velocity is the minimiser, and the loss there is the conditional variance of the
target. The OT coupling (Tong et al. 2024) is checked against a brute-force search over
permutations.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import SDES
from test_losses import SmoothNet
from torch import nn
from torch.testing import assert_close

import scoresde as sd
from scoresde.flow_matching import COUPLINGS, flow_matching_loss, ot_permutation
from scoresde.model import ScoreModel

F64 = torch.float64

SDE_NAMES = list(SDES)


class ExactVelocity(nn.Module):
    """net(x, t) = f x - g^2 score / 2 + shift(x): the exact PF-ODE velocity of ``data`` (from the
    oracle's exact score), optionally perturbed by a fixed smooth field."""

    def __init__(self, sde, data, shift: float = 0.0):
        super().__init__()
        self.sde, self.score, self.shift = sde, sd.exact_score(sde, data), shift

    def forward(self, x, t):
        u = self.sde.reverse_drift(x, t, self.score(x, t), 0.5)
        return u + self.shift * torch.cos(x)


def _mixture() -> sd.GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=F64)
    return sd.GaussianMixture(means, 0.3, weights=[0.5, 0.3, 0.2])


def _path_derivatives(sde, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha'_t, sigma'_t) by autograd through the SDE's log alpha and log sigma."""
    tt = t.clone().requires_grad_(True)
    alpha, sigma = torch.exp(sde.log_alpha(tt)), torch.exp(sde.log_sigma(tt))
    return (
        torch.autograd.grad(alpha.sum(), tt)[0],
        torch.autograd.grad(sigma.sum(), tt)[0],
    )


# --- the loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", ["velocity", "eps"])
def test_per_sample_loss_is_eq_23_with_the_path_derivative(name, p):
    """||u_theta(x_t) - (alpha' x0 + sigma' z)||^2, alpha' and sigma' by autograd; for a
    non-velocity net u_theta is its prediction converted to f x - g^2 score / 2."""
    sde = SDES[name]
    g = torch.Generator().manual_seed(1)
    t = 1e-3 + (1 - 1e-3) * torch.rand(16, generator=g, dtype=F64)
    x0 = 1 + 2 * torch.randn(16, 3, generator=g, dtype=F64)
    z = torch.randn(16, 3, generator=g, dtype=F64)
    net = SmoothNet()
    model = ScoreModel(net, sde, p)
    got = flow_matching_loss(sde, model, x0, t=t, noise=z, reduction="none")
    d_alpha, d_sigma = _path_derivatives(sde, t)
    alpha, sigma = sde.marginal(t)
    x_t = alpha[:, None] * x0 + sigma[:, None] * z
    out = net(x_t, t)
    if p == "eps":
        out = sde.f(t)[:, None] * x_t + sde.g2(t)[:, None] * out / (2 * sigma[:, None])
    expected = (out - d_alpha[:, None] * x0 - d_sigma[:, None] * z).pow(2).sum(1)
    assert_close(got, expected, rtol=1e-10, atol=0)
    assert_close(
        flow_matching_loss(sde, model, x0, t=t, noise=z), expected.mean(), rtol=1e-10, atol=0
    )


@pytest.mark.parametrize("name", SDE_NAMES)
def test_loss_at_the_exact_velocity_is_the_conditional_variance_of_the_target(name):
    """Gaussian data N(M, S^2 I): (x0, eps) given x_t is Gaussian, so per dimension
    Var(alpha' x0 + sigma' eps | x_t)
        = alpha'^2 S^2 + sigma'^2 - (alpha' alpha S^2 + sigma' sigma)^2 / V
    with V = alpha^2 S^2 + sigma^2, the same for every x_t. The mean loss of the exact velocity at
    a fixed t matches d times it within 4 standard errors."""
    sde, d, n, S = SDES[name], 2, 20_000, 0.5
    data = sd.GaussianMixture(torch.tensor([[0.7, -1.2]], dtype=F64), S)
    model = ScoreModel(ExactVelocity(sde, data), sde, "velocity")
    g = torch.Generator().manual_seed(2)
    for t_value in (0.05, 0.3, 0.8):
        t = torch.full((n,), t_value, dtype=F64)
        losses = flow_matching_loss(
            sde, model, data.sample(n, g), t=t, generator=g, reduction="none"
        )
        (alpha, sigma), (da, ds) = sde.marginal(t[:1]), _path_derivatives(sde, t[:1])
        var = alpha**2 * S**2 + sigma**2
        cond = da**2 * S**2 + ds**2 - (da * alpha * S**2 + ds * sigma) ** 2 / var
        se = float(losses.std()) / math.sqrt(n)
        assert abs(float(losses.mean()) - d * float(cond)) <= 4 * se, (t_value, se)


def test_the_exact_velocity_minimises_the_loss():
    """On a mixture, loss(u* + delta) - loss(u*) on the same draws estimates E||delta||^2 > 0 (the
    cross term has mean 0 because u* = E[target | x_t]): checked within 4 standard errors."""
    sde, data = SDES["vp"], _mixture()
    n = 20_000
    g = torch.Generator().manual_seed(3)
    x0 = data.sample(n, g)
    t = 0.05 + 0.95 * torch.rand(n, generator=g, dtype=F64)
    z = torch.randn(n, 2, generator=g, dtype=F64)
    exact = ScoreModel(ExactVelocity(sde, data), sde, "velocity")
    best = flow_matching_loss(sde, exact, x0, t=t, noise=z, reduction="none")
    for shift in (0.3, 1.0):
        worse = ScoreModel(ExactVelocity(sde, data, shift), sde, "velocity")
        diff = flow_matching_loss(sde, worse, x0, t=t, noise=z, reduction="none") - best
        alpha, sigma = sde.marginal(t)
        x_t = alpha[:, None] * x0 + sigma[:, None] * z
        sq = (shift * torch.cos(x_t)).pow(2).sum(1)  # ||delta||^2 at the same points
        se = float((diff - sq).std()) / math.sqrt(n)
        assert abs(float(diff.mean() - sq.mean())) <= 4 * se
        assert float(diff.mean()) > 4 * float(diff.std()) / math.sqrt(n)  # a higher loss


# --- the couplings -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_ot_permutation_is_the_brute_force_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(6, 2, generator=g, dtype=F64) * 2
    z = torch.randn(6, 2, generator=g, dtype=F64)
    perm = ot_permutation(x0, z)
    assert sorted(perm.tolist()) == list(range(6))

    def cost(p):
        return float((x0 - z[list(p)]).pow(2).sum())

    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert cost(perm.tolist()) == pytest.approx(best, rel=1e-12)
    # the same permutation for noise scaled by any c > 0 (the prior's scale does not matter)
    assert torch.equal(ot_permutation(x0, 50 * z), perm)


def test_ot_coupling_is_the_loss_on_the_permuted_noise_and_pairs_use_the_noise_given():
    sde = SDES["subvp"]
    model = ScoreModel(SmoothNet(), sde, "velocity")
    g = torch.Generator().manual_seed(4)
    x0, z = torch.randn(8, 3, generator=g, dtype=F64), torch.randn(8, 3, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64) * 0.9 + 0.1
    kw = {"t": t, "reduction": "none"}
    ot = flow_matching_loss(sde, model, x0, "ot", noise=z, **kw)
    permuted = flow_matching_loss(sde, model, x0, "pairs", noise=z[ot_permutation(x0, z)], **kw)
    assert torch.equal(ot, permuted)
    assert torch.equal(
        flow_matching_loss(sde, model, x0, "pairs", noise=z, **kw),
        flow_matching_loss(sde, model, x0, "independent", noise=z, **kw),
    )


def test_ot_coupling_reduces_the_loss_variance():
    """Tong et al. 2024, Sec. 3.2: OT pairs cross less, so the target varies less given x_t.
    Over 100 minibatches of 32 (VP, mixture data, stratified t, the exact independent-coupling
    velocity as the model) the minibatch loss's standard deviation falls by more than 4 standard
    errors of the difference (SE of a sample std ~ s / sqrt(2 (K - 1)))."""
    sde, data = SDES["vp"], _mixture()
    model = ScoreModel(ExactVelocity(sde, data), sde, "velocity")
    stds = {}
    for coupling in ("independent", "ot"):
        g = torch.Generator().manual_seed(5)
        losses = torch.stack(
            [
                flow_matching_loss(
                    sde,
                    model,
                    data.sample(32, g),
                    coupling,
                    time_sampling="stratified",
                    generator=g,
                )
                for _ in range(100)
            ]
        )
        stds[coupling] = (float(losses.std()), float(losses.std()) / math.sqrt(2 * 99))
    (s_ind, se_ind), (s_ot, se_ot) = stds["independent"], stds["ot"]
    assert s_ind - s_ot > 4 * math.hypot(se_ind, se_ot), stds


# --- draws and checks --------------------------------------------------------------------------


def test_draws_are_reproducible_with_a_generator():
    sde = SDES["vp"]
    model = ScoreModel(SmoothNet(), sde, "velocity")
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    for coupling in ("independent", "ot"):
        a = flow_matching_loss(sde, model, x0, coupling, generator=torch.Generator().manual_seed(7))
        b = flow_matching_loss(sde, model, x0, coupling, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(coupling="sinkhorn"), "coupling"),
        (dict(coupling="pairs"), "needs the coupled noise"),
        (dict(t=torch.zeros(4, dtype=F64)), r"t must lie in \(0, T"),
        (dict(t=torch.full((4,), 1.5, dtype=F64)), r"t must lie in \(0, T"),
        (dict(noise=torch.zeros(4, 2, dtype=F64)), "noise must have x0's shape"),
        (dict(eps=0.0), "eps must be a number"),
        (dict(reduction="sum"), "reduction"),
    ],
    ids=["coupling", "pairs-without-noise", "t=0", "t>T", "noise-shape", "eps", "reduction"],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    sde = SDES["vp"]
    model = ScoreModel(SmoothNet(), sde, "velocity")
    with pytest.raises(ValueError, match=message) as info:
        flow_matching_loss(sde, model, torch.zeros(4, 3, dtype=F64), **kwargs)
    if kwargs.get("coupling") == "sinkhorn":
        for c in COUPLINGS:
            assert repr(c) in str(info.value)


def test_a_plain_score_function_is_a_type_error():
    sde = SDES["vp"]
    with pytest.raises(TypeError, match="model must be a ScoreModel"):
        flow_matching_loss(sde, sd.exact_score(sde, _mixture()), torch.zeros(4, 2, dtype=F64))


def test_flow_matching_loss_is_public_api():
    assert sd.flow_matching_loss is flow_matching_loss
