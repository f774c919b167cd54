"""Probability-flow ODE solvers (solvers/ode.py) against the exact flow map of Gaussian data.

For data N(m, diag(s^2)) the PF-ODE is linear and ``sd.gaussian_flow_map`` is its exact solution,
so every error below is the solver's own. Orders are least-squares log-log slopes over step sizes
2^-k in float64, above the round-off floor, with tolerance +-0.25 (diffrax's test_integrate).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import F64, GAUSS, GAUSS_MEAN, GAUSS_STD, SDES, fitted_slope
from torch.testing import assert_close

import scoresde as sd
from scoresde.solvers.ode import FIXED_STEPS

FLOOR = 1e-10  # errors below this are float64 round-off, not truncation error
#: The fixed-step Runge-Kutta solvers of ode.py; their order and NFE are read from the classes.
RK_SOLVERS = ["ode_euler", "ode_heun", "ode_rk4"]


def order_of(solver: str) -> int:
    return sd.make_solver(solver).order


def prior_draw(sde, n: int = 64, seed: int = 0) -> torch.Tensor:
    return sde.prior_sample((n, 3), generator=torch.Generator().manual_seed(seed), dtype=F64)


def exact_endpoint(sde, x_T: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    eps = sde.sampling_eps if eps is None else eps
    return sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)(x_T, sde.T, eps)


@pytest.mark.parametrize("rule, order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_fn_based_step_rules_have_their_order_on_exponential_decay(rule, order):
    # dy/dt = -y, y(0) = y0: y(1) = y0 exp(-1). The rules take any fn(y, t) and 0-d times.
    y0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    calls = []

    def fn(y, t):
        calls.append(t.dim())
        return -y

    steps = [2**k for k in range(2, 8)]
    errors = []
    for n in steps:
        y = y0
        ts = torch.linspace(0.0, 1.0, n + 1, dtype=F64)
        for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
            y = FIXED_STEPS[rule](fn, y, t0, t1)
        errors.append(float((y - y0 * np.exp(-1.0)).abs().max()))
    assert calls == [0] * order * sum(steps)  # one call per stage (stages = order here), 0-d t
    slope = fitted_slope([1 / n for n in steps], errors, FLOOR)
    assert abs(slope - order) <= 0.25, (slope, errors)


@pytest.mark.parametrize("solver", RK_SOLVERS)
@pytest.mark.parametrize("name", list(SDES))
def test_fixed_step_order_on_logsnr_interval(name, solver):
    # lambda from -1 to 2 on a grid uniform in lambda, from an exact marginal sample at t(-1).
    sde = SDES[name]
    t_a = sde.t_from_log_snr(torch.tensor(-1.0, dtype=F64))
    g = torch.Generator().manual_seed(0)
    alpha, sigma = sde.marginal(t_a)
    x_a = alpha * GAUSS.sample(64, generator=g) + sigma * torch.randn(64, 3, generator=g, dtype=F64)
    score = sd.exact_score(sde, GAUSS)
    steps = [2**k for k in range(3, 9)]
    errors = []
    for n in steps:
        grid = sde.t_from_log_snr(torch.linspace(-1.0, 2.0, n + 1, dtype=F64))
        res = sd.sample(sde, score, x_a.shape, solver, time_grid=grid, x_T=x_a)
        exact = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)(x_a, grid[0], grid[-1])
        errors.append(float((res.samples - exact).abs().max()))
    slope = fitted_slope([1 / n for n in steps], errors, FLOOR)
    assert abs(slope - order_of(solver)) <= 0.25, (slope, errors)


@pytest.mark.parametrize("solver", RK_SOLVERS)
@pytest.mark.parametrize("name", list(SDES))
def test_fixed_step_order_on_full_interval(name, solver):
    # [T, eps] on the solver's default (uniform) grid, from a prior draw: the sampling problem.
    sde = SDES[name]
    x_T = prior_draw(sde)
    exact = exact_endpoint(sde, x_T)
    score = sd.exact_score(sde, GAUSS)
    steps = [2**k for k in range(5, 10)]
    errors = []
    for n in steps:
        res = sd.sample(sde, score, x_T.shape, solver, steps=n, x_T=x_T)
        assert res.nfe == sd.make_solver(solver).nfe(n)
        errors.append(float((res.samples - exact).abs().max()))
    slope = fitted_slope([1 / n for n in steps], errors, FLOOR)
    assert abs(slope - order_of(solver)) <= 0.25, (slope, errors)


@pytest.mark.parametrize("tol, bound", [(1e-6, 1e-5), (1e-8, 1e-7)])
@pytest.mark.parametrize("name", list(SDES))
def test_rk45_meets_its_tolerance_against_exact_flow(name, tol, bound):
    # Tolerance proportionality: the global error follows the requested local tolerance
    # (it stays within 10x tol here; Hairer et al. II.4).
    sde = SDES[name]
    x_T = prior_draw(sde)
    res = sd.sample(
        sde, sd.exact_score(sde, GAUSS), x_T.shape, "ode_rk45", x_T=x_T, rtol=tol, atol=tol
    )
    assert float((res.samples - exact_endpoint(sde, x_T)).abs().max()) <= bound
    assert torch.equal(res.times, torch.tensor([sde.T, sde.sampling_eps], dtype=F64))


def test_rk45_reports_per_sample_step_counts_and_counts_its_nfe():
    sde = SDES["vp"]
    x_T = prior_draw(sde, n=32)
    calls = []
    score = sd.exact_score(sde, GAUSS)

    def counted(x, t):
        calls.append(x.shape[0])
        return score(x, t)

    res = sd.sample(sde, counted, x_T.shape, "ode_rk45", x_T=x_T, rtol=1e-6, atol=1e-6)
    accepted, rejected = res.stats["accepted_steps"], res.stats["rejected_steps"]
    assert accepted.shape == rejected.shape == (32,)
    assert accepted.dtype == rejected.dtype == torch.long
    assert bool((accepted >= 1).all()) and bool((rejected >= 0).all())
    assert res.nfe == len(calls)
    # One batched call for f(x_T), one for the initial step-size estimate, then 6 stages per
    # iteration (FSAL); the batch iterates until its slowest sample arrives.
    iterations = int((accepted + rejected).max())
    assert res.nfe == 2 + 6 * iterations


def test_rk45_rejects_steps_at_tight_tolerance_and_still_arrives():
    # A first step of the whole interval must be rejected (error >> tol) and then shrunk.
    sde = SDES["vp"]
    x_T = prior_draw(sde, n=8)
    res = sd.sample(
        sde,
        sd.exact_score(sde, GAUSS),
        x_T.shape,
        "ode_rk45",
        x_T=x_T,
        rtol=1e-6,
        atol=1e-6,
        first_step=sde.T - sde.sampling_eps,
    )
    assert bool((res.stats["rejected_steps"] >= 1).all())
    assert res.nfe == 1 + 6 * int((res.stats["accepted_steps"] + res.stats["rejected_steps"]).max())
    assert float((res.samples - exact_endpoint(sde, x_T)).abs().max()) <= 1e-5


def test_rk45_max_steps_is_enforced():
    sde = SDES["vp"]
    with pytest.raises(RuntimeError, match="did not reach"):
        sd.sample(
            sde, sd.exact_score(sde, GAUSS), (4, 3), "ode_rk45", rtol=1e-9, atol=1e-9, max_steps=3
        )


def test_rk45_sample_result_does_not_depend_on_its_batch():
    # Every sample has its own time and step size: sample k integrated alone or in a batch of 16
    # takes the same steps. The values agree to a few ulps, not bitwise: transcendental kernels
    # (exp, log) vectorise differently for batch lengths 1 and 16.
    sde = SDES["ve"]
    x_T = prior_draw(sde, n=16, seed=3)
    score = sd.exact_score(sde, GAUSS)
    batch = sd.sample(sde, score, x_T.shape, "ode_rk45", x_T=x_T)
    for k in (0, 5, 11):
        alone = sd.sample(sde, score, (1, 3), "ode_rk45", x_T=x_T[k : k + 1])
        assert_close(alone.samples[0], batch.samples[k], rtol=1e-12, atol=1e-12)
        for key in ("accepted_steps", "rejected_steps"):
            assert int(alone.stats[key][0]) == int(batch.stats[key][k])


@pytest.mark.parametrize("method", ["RK45", "DOP853", "LSODA", "Radau"])
def test_scipy_solve_ivp_matches_exact_flow_and_reports_nfev(method):
    sde = SDES["vp"]
    x_T = prior_draw(sde, n=8)
    res = sd.sample(
        sde,
        sd.exact_score(sde, GAUSS),
        x_T.shape,
        "scipy",
        x_T=x_T,
        method=method,
        rtol=1e-8,
        atol=1e-8,
    )
    assert float((res.samples - exact_endpoint(sde, x_T)).abs().max()) <= 1e-6
    if method == "Radau":
        # scipy's nfev leaves out the calls of its finite-difference Jacobians, one per state
        # coordinate (8 x 3 = 24) per Jacobian; our nfe counts them.
        extra = res.nfe - res.stats["scipy_nfev"]
        assert extra > 0 and extra % x_T.numel() == 0
    else:
        assert res.nfe == res.stats["scipy_nfev"]
    assert res.stats["scipy_status"] == 0


@pytest.mark.parametrize(
    "solver", ["ode_euler", "ode_heun", "ode_rk4", "ode_rk45", "scipy", "ddim", "dpm_solver"]
)
def test_deterministic_solvers_from_one_x_T_reach_the_exact_endpoint(solver):
    # Every deterministic solver accepts the same x_T and lands on the flow map's image of it
    # (ignoring x_T would give O(1) errors). At 1000 steps on their default grids the first-order
    # methods are within 1e-2 (measured 1.4e-3 and 6e-3), the others within 1e-3.
    sde = SDES["vp"]
    x_T = prior_draw(sde, n=16, seed=4)
    options = {} if solver in ("ode_rk45", "scipy") else {"steps": 1000}
    res = sd.sample(sde, sd.exact_score(sde, GAUSS), x_T.shape, solver, x_T=x_T, **options)
    error = float((res.samples - exact_endpoint(sde, x_T)).abs().max())
    first_order = solver in ("ode_euler", "ddim")
    assert error <= (1e-2 if first_order else 1e-3), error


@pytest.mark.parametrize("solver", RK_SOLVERS)
def test_float32_run_matches_float64_run_to_float32_precision(solver):
    # dtype policy: float32 in, float32 out; schedules stay float64, so the float32 result is the
    # float64 one up to float32 round-off accumulated over the steps (~steps * eps32 relative).
    sde = SDES["vp"]
    x_T = prior_draw(sde, n=16, seed=5)
    score = sd.exact_score(sde, GAUSS)
    r64 = sd.sample(sde, score, x_T.shape, solver, steps=100, x_T=x_T)
    r32 = sd.sample(sde, score, x_T.shape, solver, steps=100, x_T=x_T.float())
    assert r32.samples.dtype == torch.float32
    eps32 = torch.finfo(torch.float32).eps
    scale = float(r64.samples.abs().max())
    assert float((r32.samples.double() - r64.samples).abs().max()) <= 100 * eps32 * scale
