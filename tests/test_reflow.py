"""Reflow pairs and straightness (scoresde/reflow.py) against closed forms.

Gaussian data N(m, s^2 I) under the straight path (alpha = 1 - t, sigma = t) has the exact flow
map x_t = alpha_t m + sqrt(V_t) w, V_t = alpha_t^2 s^2 + sigma_t^2 (``gaussian_flow_map``): curved
in time unless s = 1 and m = 0, so its straightness S (Liu et al. 2023, Sec. 2.2) is a positive
integral of closed forms; the pairs it generates are the linear coupling x = m + s w (at T = 1),
and the flow fitted to them is exactly straight.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import scoresde as sd
from scoresde.model import ScoreModel
from scoresde.reflow import reflow_pairs, straightness

F64 = torch.float64
M, S = torch.tensor([1.5, -0.5], dtype=F64), 0.4


def test_straightness_of_a_quarter_circle_is_its_closed_form():
    """Z_s = (cos(pi s / 2), sin(pi s / 2)): chord (-1, 1), speed (pi/2)(-sin, cos), so
    S = 2 + pi^2/4 - pi * int_0^1 (sin + cos)(pi s / 2) ds = pi^2/4 - 2; the piecewise-linear
    reading converges as O(h^2). A straight path at constant speed has S = 0 on any grid."""
    for k in (200, 400):
        s = torch.linspace(0, 1, k + 1, dtype=F64)
        arc = torch.stack([torch.cos(math.pi * s / 2), torch.sin(math.pi * s / 2)], -1)[:, None]
        err = abs(float(straightness(arc)) - (math.pi**2 / 4 - 2))
        assert err <= 2 / k**2, (k, err)
    t = torch.tensor([1.0, 0.7, 0.2, 0.05], dtype=F64)  # a non-uniform grid, noise end first
    a, b = torch.tensor([[3.0, -1.0]], dtype=F64), torch.tensor([[0.5, 2.0]], dtype=F64)
    u = ((1.0 - t) / 0.95).reshape(-1, 1, 1)
    line = a + u * (b - a)
    assert float(straightness(line, t)) == pytest.approx(0, abs=1e-24)


def _gaussian_path_quantities(sde, w: torch.Tensor, t: torch.Tensor):
    """x(t) = alpha m + sqrt(V) w and dx/dt = alpha' m + V' / (2 sqrt V) w, V' = 2 alpha alpha' s^2
    + 2 sigma sigma' with alpha' = -1, sigma' = 1 (the straight path)."""
    alpha, sigma = (1 - t)[:, None, None], t[:, None, None]
    v = alpha**2 * S**2 + sigma**2
    dv = -2 * alpha * S**2 + 2 * sigma
    return alpha * M + v.sqrt() * w, -M + dv / (2 * v.sqrt()) * w


def test_straightness_of_the_exact_gaussian_flow_matches_quadrature():
    """RK4 trajectories of the exact score (RectifiedFlow, 400 uniform steps) vs the closed-form
    flow map's S by a 20001-point trapezoid rule, per sample, to 1e-4 relative."""
    sde = sd.RectifiedFlow()
    data = sd.GaussianMixture(M[None], S)
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * sde.prior_std
    res = sd.sample(
        sde,
        sd.exact_score(sde, data),
        (6, 2),
        "ode_rk4",
        400,
        x_T=x_T,
        time_grid="uniform",
        return_trajectory=True,
    )
    got = straightness(res.trajectory, res.times)
    t_hi, t_lo = float(res.times[0]), float(res.times[-1])
    v_T = (1 - t_hi) ** 2 * S**2 + t_hi**2
    w = (x_T - (1 - t_hi) * M) / math.sqrt(v_T)
    t = torch.linspace(t_hi, t_lo, 20001, dtype=F64)
    x, dxdt = _gaussian_path_quantities(sde, w, t)
    chord = x[-1] - x[0]
    integrand = (chord + (t_hi - t_lo) * dxdt).pow(2).sum(-1)  # dx/ds = -(t_hi - t_lo) dx/dt
    expected = torch.trapezoid(integrand, dx=1 / 20000, dim=0)
    assert float(expected.min()) > 0.05  # curved: this is no trivial zero
    assert_close(got, expected, rtol=1e-4, atol=0)


def test_reflow_pairs_are_the_exact_flow_map_of_the_noise():
    """With the exact score of Gaussian data, each pair is (eps, Phi(prior_std eps)) with Phi the
    closed-form flow map from T to the sampling end, to the ODE's tolerance; the same generator
    gives the same pairs, in one batch or several."""
    sde = sd.RectifiedFlow()
    data = sd.GaussianMixture(M[None], S)
    score = sd.exact_score(sde, data)
    kw = {"dtype": F64, "rtol": 1e-8, "atol": 1e-8}
    noise, x = reflow_pairs(sde, score, 64, (2,), generator=torch.Generator().manual_seed(1), **kw)
    flow = sd.gaussian_flow_map(sde, M, S)
    expected = flow(sde.prior_std * noise, sde.T, sde.sampling_eps)
    assert_close(x, expected, rtol=0, atol=1e-6)
    again = reflow_pairs(
        sde, score, 64, (2,), generator=torch.Generator().manual_seed(1), batch_size=20, **kw
    )
    assert torch.equal(again[0], noise)
    assert_close(again[1], x, rtol=0, atol=1e-12)


class StraightVelocity(nn.Module):
    """The velocity of the reflow coupling x1 = m + s w (w = noise) on x_t = (1-t) x1 + t w:
    the target w - x1 is a function of x_t, w = (x_t - (1 - t) m) / ((1 - t) s + t)."""

    def forward(self, x, t):
        t = t[:, None]
        w = (x - (1 - t) * M) / ((1 - t) * S + t)
        return w - (M + S * w)


def test_the_reflow_of_a_gaussian_is_exactly_straight():
    """Pairs of the exact 1-rectified flow with T = 1 are the linear coupling x1 = m + s eps, so
    flow matching on them has zero irreducible loss at the straight velocity, and its trajectories
    have S = 0, where the 1-rectified flow's S is positive (Liu et al. 2023, Thm. 3.7's limit)."""
    sde = sd.RectifiedFlow(T=1.0)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(256, 2, generator=g, dtype=F64)
    x1 = M + S * noise  # the exact flow map at T = 1 (gaussian_flow_map: V_1 = 1)
    model = ScoreModel(StraightVelocity(), sde, "velocity")
    loss = sd.flow_matching_loss(sde, model, x1, "pairs", noise=noise, generator=g)
    assert float(loss) < 1e-24
    rf = sd.RectifiedFlow()
    x_T = noise * rf.prior_std
    kw = {"x_T": x_T, "time_grid": "uniform", "return_trajectory": True}
    straight = sd.sample(
        rf, ScoreModel(StraightVelocity(), rf, "velocity"), (256, 2), "ode_rk4", 50, **kw
    )
    curved = sd.sample(
        rf, sd.exact_score(rf, sd.GaussianMixture(M[None], S)), (256, 2), "ode_rk4", 50, **kw
    )
    s_straight = straightness(straight.trajectory, straight.times)
    s_curved = straightness(curved.trajectory, curved.times)
    assert float(s_straight.max()) < 1e-20
    assert float(s_curved.mean()) > 0.05


def test_bad_input_is_a_clear_error():
    sde = sd.RectifiedFlow()
    score = sd.exact_score(sde, sd.GaussianMixture(M[None], S))
    with pytest.raises(ValueError, match="deterministic ODE solver"):
        reflow_pairs(sde, score, 4, (2,), solver="euler_maruyama", steps=4)
    with pytest.raises(ValueError, match="at least 2 states"):
        straightness(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="times must have shape"):
        straightness(torch.zeros(3, 3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="strictly monotone"):
        straightness(torch.zeros(3, 3, 2), torch.tensor([1.0, 0.5, 0.5]))


def test_reflow_is_public_api():
    assert sd.reflow_pairs is reflow_pairs and sd.straightness is straightness
