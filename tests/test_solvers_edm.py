"""EDM's sampler and Restart sampling (solvers/edm.py) against independent implementations of the
published algorithms, the exact Gaussian flow map and exact mixture marginals.

The reference implementations below are written from the papers in EDM's own variables: the noise
level sigma and the denoiser D(x_hat; sigma) = x_hat + sigma^2 grad log p(x_hat; sigma) of the data
convolved with N(0, sigma^2 I) (a Gaussian mixture whose stds grow to sqrt(s^2 + sigma^2)); x_hat
= x / alpha_t. They share no code with the solvers (no SDE schedule inside the loop).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import (
    F64,
    GAUSS,
    GAUSS_MEAN,
    GAUSS_STD,
    RING,
    RING_MEANS,
    RING_STD,
    SDES,
    fitted_slope,
)
from torch.testing import assert_close

import scoresde as sd
from scoresde.metrics import mmd2, noise_floor

# ---------------------------------------------------------------------------------------------
# independent references, in EDM's variables


def ring_denoiser(x_hat: torch.Tensor, sigma: float) -> torch.Tensor:
    """D(x_hat; sigma) of the ring: Tweedie with the score of the ring * N(0, sigma^2)."""
    smoothed = sd.GaussianMixture(RING_MEANS, math.sqrt(RING_STD**2 + sigma**2))
    return x_hat + sigma**2 * smoothed.score(x_hat)


def edm_alg1(denoiser, x_hat: torch.Tensor, sigmas: list[float]) -> tuple[torch.Tensor, int]:
    """Karras et al. 2022, Alg. 1 with sigma(t) = t, s(t) = 1 (as in their ``edm_sampler`` with
    S_churn = 0). Returns x_N and the number of denoiser calls."""
    calls = 0
    for s0, s1 in zip(sigmas[:-1], sigmas[1:], strict=True):
        d = (x_hat - denoiser(x_hat, s0)) / s0
        x_next = x_hat + (s1 - s0) * d
        calls += 1
        if s1 != 0:
            d_prime = (x_next - denoiser(x_next, s1)) / s1
            x_next = x_hat + (s1 - s0) * (0.5 * d + 0.5 * d_prime)
            calls += 1
        x_hat = x_next
    return x_hat, calls


def karras_sigmas(s_max: float, s_min: float, n: int, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022, Eq. 5 (n intervals, both ends included)."""
    return [
        (s_max ** (1 / rho) + i / n * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        for i in range(n + 1)
    ]


def alg2_step(x, s0: float, s1: float, gamma: float, eps: torch.Tensor | None) -> torch.Tensor:
    """Karras et al. 2022, Alg. 2 lines 4-11 (eps: the draw already times S_noise)."""
    s_hat = s0 + gamma * s0
    x_hat = x if eps is None else x + math.sqrt(s_hat**2 - s0**2) * eps
    d = (x_hat - ring_denoiser(x_hat, s_hat)) / s_hat
    x_next = x_hat + (s1 - s_hat) * d
    if s1 != 0:
        d_prime = (x_next - ring_denoiser(x_next, s1)) / s1
        x_next = x_hat + (s1 - s_hat) * (0.5 * d + 0.5 * d_prime)
    return x_next


def edm_sigmas(sde, ts: torch.Tensor) -> list[float]:
    alpha, sigma_t = sde.marginal(ts)
    return (sigma_t / alpha).tolist()


def ring_score(name: str):
    return sd.exact_score(SDES[name], RING)


def prior(name: str, n: int, seed: int = 0) -> torch.Tensor:
    return SDES[name].prior_sample((n, 2), generator=torch.Generator().manual_seed(seed), dtype=F64)


def sample_ring(name: str, solver: str, x_T: torch.Tensor, seed: int, **kwargs):
    """``sd.sample`` on the ring from x_T, its noise from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return sd.sample(
        SDES[name], ring_score(name), x_T.shape, solver, x_T=x_T, generator=g, **kwargs
    )


# ---------------------------------------------------------------------------------------------
# edm without churn is Alg. 1


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("steps", [1, 2, 7, 18])
def test_edm_without_churn_is_algorithm_1(name, steps):
    sde = SDES[name]
    x_T = prior(name, 64)
    res = sd.sample(sde, ring_score(name), x_T.shape, "edm", steps=steps, x_T=x_T)
    sigmas = edm_sigmas(sde, res.times)
    alpha = sde.marginal(res.times)[0]
    ref, calls = edm_alg1(ring_denoiser, x_T / alpha[0], sigmas)
    assert_close(res.samples, alpha[-1] * ref, rtol=1e-10, atol=1e-10)
    assert res.nfe == calls == 2 * steps  # the grid ends at eps, sigma(eps) > 0: all Heun


@pytest.mark.parametrize("name", ["vp", "subvp"])
@pytest.mark.parametrize("steps", [1, 2, 10])
def test_edm_grid_ending_at_sigma_zero_takes_an_euler_last_step(name, steps):
    # EDM's own grid: t_N = 0 (sigma = 0), where Alg. 1 skips the correction (line 6).
    sde = SDES[name]
    grid = torch.cat([sd.make_time_grid(sde, steps, kind="karras")[:-1], torch.zeros(1, dtype=F64)])
    x_T = prior(name, 64)
    res = sd.sample(sde, ring_score(name), x_T.shape, "edm", time_grid=grid, x_T=x_T)
    ref, calls = edm_alg1(ring_denoiser, x_T / sde.marginal(grid[0])[0], edm_sigmas(sde, grid))
    assert bool(torch.isfinite(res.samples).all())
    assert_close(res.samples, ref, rtol=1e-10, atol=1e-10)  # alpha(0) = 1
    assert res.nfe == calls == 2 * steps - 1


def test_edm_with_denoise_is_edms_sampler_with_one_more_sigma():
    # EDM's sampler with num_steps = n + 1 sigmas and t_N = 0 equals edm with steps = n and
    # denoise=True (the Euler step sigma_min -> 0 lands on D, Tweedie's x0): NFE 2n + 1 both.
    sde, n = SDES["ve"], 12
    x_T = prior("ve", 64)
    res = sd.sample(sde, ring_score("ve"), x_T.shape, "edm", steps=n, x_T=x_T, denoise=True)
    ref, calls = edm_alg1(ring_denoiser, x_T, [*edm_sigmas(sde, res.times), 0.0])
    assert_close(res.samples, ref, rtol=1e-10, atol=1e-10)
    assert res.nfe == calls == 2 * n + 1


# ---------------------------------------------------------------------------------------------
# order 2 against the exact flow map


@pytest.mark.parametrize("name", list(SDES))
def test_edm_has_global_order_2_against_the_exact_flow_map(name):
    # Gaussian data: the PF-ODE is linear and gaussian_flow_map is its exact solution. Default
    # (karras) grid over the whole sampling interval [T, eps].
    sde = SDES[name]
    x_T = sde.prior_sample((64, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)(x_T, sde.T, sde.sampling_eps)
    steps = [2**k for k in range(4, 9)]
    errors = []
    for n in steps:
        res = sd.sample(sde, sd.exact_score(sde, GAUSS), x_T.shape, "edm", steps=n, x_T=x_T)
        errors.append(float((res.samples - exact).abs().max()))
    slope = fitted_slope([1 / n for n in steps], errors, 1e-10)
    assert abs(slope - 2) <= 0.25, (slope, errors)


# ---------------------------------------------------------------------------------------------
# churn: Alg. 2


def test_edm_churn_follows_algorithm_2_with_the_same_noise():
    # Alg. 2 written out with the draws the solver makes (one per step, as EDM's code), VE.
    sde, n = SDES["ve"], 10
    opts = {"S_churn": 30.0, "S_tmin": 0.05, "S_tmax": 10.0, "S_noise": 1.007}
    x_T = prior("ve", 32)
    res = sample_ring("ve", "edm", x_T, 3, steps=n, **opts)
    g = torch.Generator().manual_seed(3)
    sigmas = edm_sigmas(sde, res.times)
    x, churned = x_T, 0
    for s0, s1 in zip(sigmas[:-1], sigmas[1:], strict=True):
        eps = opts["S_noise"] * torch.randn(x.shape, generator=g, dtype=F64)
        in_range = opts["S_tmin"] <= s0 <= opts["S_tmax"]
        gamma = min(opts["S_churn"] / n, math.sqrt(2) - 1) if in_range else 0.0
        churned += gamma > 0
        x = alg2_step(x, s0, s1, gamma, eps)
    assert 0 < churned < n  # the test covers steps with and without churn
    assert_close(res.samples, x, rtol=1e-9, atol=1e-9)
    assert res.nfe == 2 * n


def test_edm_churn_never_raises_time_above_T():
    # S_tmax = inf churns from the first step; sigma_hat is capped at sigma(T) (t_hat <= T).
    sde = SDES["vp"]
    score = ring_score("vp")
    times = []

    def recording(x, t):
        times.append(float(t.max()))
        return score(x, t)

    res = sd.sample(sde, recording, (16, 2), "edm", steps=4, S_churn=100.0, dtype=F64)
    assert bool(torch.isfinite(res.samples).all())
    assert times[0] == sde.T  # the first step starts at T: no churn there
    assert max(times) <= sde.T


N_MMD = 4000
MMD_BANDWIDTH = 1.6  # kernel levels 1.6 ... 0.1: the ring's radius to a component's std


def mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    return mmd2(x, y, bandwidth=MMD_BANDWIDTH)


@functools.cache
def ring_reference(name: str) -> tuple[torch.Tensor, float]:
    """Exact draws of p_eps and the noise floor (std of MMD^2 between 8 pairs of exact sets)."""
    sde = SDES[name]
    g = torch.Generator().manual_seed(1234)
    alpha, sigma = sde.marginal(torch.tensor(sde.sampling_eps, dtype=F64))

    def draw() -> torch.Tensor:
        x0 = RING.sample(N_MMD, generator=g)
        return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)

    _, floor = noise_floor(draw, mmd, n_pairs=8)
    return draw(), floor


def ring_mmd_in_floors(name: str, solver: str, steps: int, **options) -> float:
    sde = SDES[name]
    reference, floor = ring_reference(name)
    res = sd.sample(
        sde,
        ring_score(name),
        (N_MMD, 2),
        solver,
        steps=steps,
        dtype=torch.float32,
        generator=torch.Generator().manual_seed(7),
        **options,
    )
    return mmd(res.samples, reference) / floor


TABLE5_VE = {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0}  # Karras et al. Table 5, S_noise 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_edm_with_churn_reaches_the_noise_floor(name):
    assert ring_mmd_in_floors(name, "edm", 400, **TABLE5_VE) <= 3


@pytest.mark.slow
def test_churn_criterion_flags_an_inflated_noise():
    # The criterion is not blind: S_noise = 1.5 adds visibly too much noise at the same steps.
    assert ring_mmd_in_floors("ve", "edm", 400, **TABLE5_VE, S_noise=1.5) > 10


# ---------------------------------------------------------------------------------------------
# restart


def restart_index(sigmas: list[float], interval: tuple[float, float]) -> int:
    """The grid point nearest sigma_min among those below sigma_max (their code's argmin)."""
    below = [k for k in range(1, len(sigmas)) if sigmas[k] < interval[1]]
    return min(below, key=lambda k: abs(sigmas[k] - interval[0]))


def restart_reference(
    name, x_T, ts, g, interval=(0.06, 0.30), K=2, restart_steps=2, restart_gamma=0.0, S_noise=1.0
):
    """Xu et al. 2023: Alg. 1 main steps; at ``restart_index`` K jumps to sigma_max by noise
    drawn from g, each followed by Alg. 2 steps with gamma = restart_gamma (Alg. 1 when 0) on a
    rho = 7 grid back down."""
    sde = SDES[name]
    alpha = sde.marginal(ts)[0]
    sigmas = edm_sigmas(sde, ts)
    j = restart_index(sigmas, interval)
    x, _ = edm_alg1(ring_denoiser, x_T / alpha[0], sigmas[: j + 1])
    for _ in range(K):
        z = S_noise * torch.randn(x.shape, generator=g, dtype=F64)
        x = x + math.sqrt(interval[1] ** 2 - sigmas[j] ** 2) * z
        grid = karras_sigmas(interval[1], sigmas[j], restart_steps)
        for s0, s1 in zip(grid[:-1], grid[1:], strict=True):
            churn = restart_gamma > 0
            eps = S_noise * torch.randn(x.shape, generator=g, dtype=F64) if churn else None
            x = alg2_step(x, s0, s1, restart_gamma, eps)
    x, _ = edm_alg1(ring_denoiser, x, sigmas[j:])
    return alpha[-1] * x


@pytest.mark.parametrize("name", ["vp", "ve"])
@pytest.mark.parametrize(
    "steps, options",
    [(18, {}), (10, {"K": 3, "restart_steps": 4}), (30, {"interval": (0.5, 3.0), "K": 1})],
)
def test_restart_matches_the_published_algorithm(name, steps, options):
    x_T = prior(name, 32)
    res = sample_ring(name, "restart", x_T, 5, steps=steps, **options)
    ref = restart_reference(name, x_T, res.times, torch.Generator().manual_seed(5), **options)
    assert_close(res.samples, ref, rtol=1e-9, atol=1e-9)
    K, restart_steps = options.get("K", 2), options.get("restart_steps", 2)
    assert res.nfe == 2 * steps + 2 * K * restart_steps  # the count formula in the docstring


@pytest.mark.parametrize("name", list(SDES))
def test_restart_without_restarts_is_the_edm_ode_sampler(name):
    sde = SDES[name]
    x_T = prior(name, 32)
    a = sd.sample(sde, ring_score(name), x_T.shape, "restart", steps=15, x_T=x_T, K=0)
    b = sd.sample(sde, ring_score(name), x_T.shape, "edm", steps=15, x_T=x_T)
    assert torch.equal(a.samples, b.samples)
    assert a.nfe == b.nfe == 30


def test_restart_gamma_and_s_noise_churn_the_restart_steps():
    # Their command-line settings (restart_gamma = 0.05, S_noise = 1.003): each restart step is
    # an Alg. 2 step with gamma = 0.05, one noise draw per jump and per restart step.
    x_T = prior("ve", 16)
    opts = {"K": 2, "restart_steps": 3, "restart_gamma": 0.05, "S_noise": 1.003}
    res = sample_ring("ve", "restart", x_T, 2, steps=12, **opts)
    plain = sample_ring("ve", "restart", x_T, 2, steps=12, K=2, restart_steps=3)
    assert res.nfe == plain.nfe == 2 * 12 + 2 * 2 * 3
    assert not torch.equal(res.samples, plain.samples)
    ref = restart_reference("ve", x_T, res.times, torch.Generator().manual_seed(2), **opts)
    assert_close(res.samples, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["vp", "subvp"])
@pytest.mark.parametrize("steps", [1, 2, 6])
def test_restart_on_a_grid_ending_at_sigma_zero(name, steps):
    # 1- and 2-step grids to t = 0: finite, NFE one less than on a grid ending at eps.
    sde = SDES[name]
    grid = torch.cat([sd.make_time_grid(sde, steps, kind="karras")[:-1], torch.zeros(1, dtype=F64)])
    res = sample_ring(name, "restart", prior(name, 64), 0, time_grid=grid)
    assert bool(torch.isfinite(res.samples).all())
    # The restart point is the grid sigma nearest 0.06: sigma = 0 on the shortest grids, where
    # each restart segment ends with an Euler step too.
    sigmas = edm_sigmas(sde, grid)
    j = restart_index(sigmas, (0.06, 0.30))
    assert res.nfe == 2 * steps - 1 + 2 * 2 * 2 - (2 if sigmas[j] == 0 else 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_restart_reaches_the_noise_floor(name):
    assert ring_mmd_in_floors(name, "restart", 400, K=4, restart_steps=20) <= 3


# ---------------------------------------------------------------------------------------------
# option checks


@pytest.mark.parametrize(
    "solver, options, message",
    [
        ("edm", {"S_churn": -1.0}, "S_churn must be a finite number >= 0"),
        ("edm", {"S_churn": math.inf}, "S_churn must be a finite number >= 0"),
        ("edm", {"S_noise": 0.0}, "S_noise must be a positive number"),
        ("edm", {"S_noise": -1.0}, "S_noise must be a positive number"),
        ("edm", {"S_tmin": 2.0, "S_tmax": 1.0}, "0 <= S_tmin <= S_tmax"),
        ("edm", {"S_tmin": -0.1}, "0 <= S_tmin <= S_tmax"),
        ("restart", {"K": -1}, r"K \(number of restarts\) must be an integer >= 0"),
        ("restart", {"K": 1.5}, r"K \(number of restarts\)"),
        ("restart", {"restart_steps": 0}, "restart_steps must be an integer >= 1"),
        ("restart", {"interval": (0.3, 0.06)}, "0 < sigma_min < sigma_max"),
        ("restart", {"interval": (0.0, 0.3)}, "0 < sigma_min < sigma_max"),
        ("restart", {"interval": (0.1, 0.1)}, "0 < sigma_min < sigma_max"),
        ("restart", {"interval": 0.3}, r"pair \(sigma_min, sigma_max\)"),
        ("restart", {"restart_gamma": -0.1}, r"restart_gamma must be in \[0, sqrt\(2\) - 1\]"),
        ("restart", {"S_noise": 0.0}, "S_noise must be a positive number"),
    ],
)
def test_bad_options_are_rejected(solver, options, message):
    with pytest.raises(ValueError, match=message):
        sd.sample(SDES["vp"], ring_score("vp"), (4, 2), solver, steps=5, **options)


def test_restart_interval_above_T_is_rejected():
    # VE: sigma(T) = sigma_max = 50, so sigma_max = 60 would need t > T.
    with pytest.raises(ValueError, match=r"lies above sigma\(T\) = 50.*\(0, T\]"):
        sd.sample(SDES["ve"], ring_score("ve"), (4, 2), "restart", steps=5, interval=(1.0, 60.0))


def test_restart_interval_below_the_grid_end_is_rejected():
    with pytest.raises(ValueError, match="must lie above the grid's end"):
        sd.sample(SDES["vp"], ring_score("vp"), (4, 2), "restart", steps=5, eps=0.5)
