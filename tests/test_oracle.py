"""The Gaussian-mixture oracle (scoresde/oracle.py) against independent computations.

x_0 ~ sum_k w_k N(m_k, diag(s_k^2)) and x_t = alpha_t x_0 + sigma_t z give
x_t ~ sum_k w_k N(alpha_t m_k, diag(alpha_t^2 s_k^2 + sigma_t^2)) (Song et al. 2021, Eq. 29/33).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SDES_COSINE as SDES
from scipy.integrate import solve_ivp
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal
from torch.testing import assert_close

import scoresde as sd

F64 = torch.float64

NAMES = list(SDES)


def ring_means(k: int, radius: float) -> torch.Tensor:
    angle = 2 * math.pi * torch.arange(k, dtype=F64) / k
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)


def make_mixtures() -> dict[str, sd.GaussianMixture]:
    g = torch.Generator().manual_seed(11)
    return {
        # 1-D, scalar std, unequal weights
        "1d": sd.GaussianMixture(
            torch.tensor([[-1.0], [0.5], [2.0]], dtype=F64), 0.3, weights=[0.2, 0.5, 0.3]
        ),
        # 2-D ring, (K,) stds, unnormalised unequal weights
        "2d": sd.GaussianMixture(ring_means(4, 2.0), [0.1, 0.2, 0.15, 0.3], weights=[1, 2, 3, 4]),
        # 8-D, anisotropic (K, d) stds
        "8d": sd.GaussianMixture(
            torch.randn(5, 8, generator=g, dtype=F64),
            0.05 + torch.rand(5, 8, generator=g, dtype=F64),
            weights=torch.rand(5, generator=g, dtype=F64) + 0.1,
        ),
        # 64-D, anisotropic, strongly unequal weights
        "64d": sd.GaussianMixture(
            2 * torch.randn(3, 64, generator=g, dtype=F64),
            0.1 + 0.4 * torch.rand(3, 64, generator=g, dtype=F64),
            weights=[0.7, 0.2, 0.1],
        ),
    }


MIXTURES = make_mixtures()


def reference_mixture(means, stds, weights) -> MixtureSameFamily:
    """The same mixture built from torch.distributions (an independent log-density)."""
    return MixtureSameFamily(Categorical(probs=weights), Independent(Normal(means, stds), 1))


def diffused_points(sde, data, t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """x_t = alpha_t x_0 + sigma_t z, x_0 ~ data, one t per row; every 4th z has norm 3 sqrt(d)."""
    g = torch.Generator().manual_seed(seed)
    x0 = data.sample(t.shape[0], generator=g)
    alpha, sigma = sde.marginal(t)
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    z[::4] = 3 * z[::4] / z[::4].norm(dim=1, keepdim=True) * math.sqrt(x0.shape[1])
    return alpha[:, None] * x0 + sigma[:, None] * z


def per_sample_times(sde, n: int) -> torch.Tensor:
    t = torch.linspace(1e-3, sde.T, n, dtype=F64)
    return t[torch.randperm(n, generator=torch.Generator().manual_seed(5))]


# ---------------------------------------------------------------------------------------------
# Densities and scores


@pytest.mark.parametrize("mix", list(MIXTURES))
def test_mixture_log_prob_matches_torch_distributions(mix):
    data = MIXTURES[mix]
    ref = reference_mixture(data.means, data.stds, data.weights)
    x = data.sample(64, generator=torch.Generator().manual_seed(1))
    x = torch.cat([x, x + 2.0])  # also points between and outside the components
    assert_close(data.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)
    assert_close(data.weights.sum(), torch.tensor(1.0, dtype=F64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("mix", list(MIXTURES))
@pytest.mark.parametrize("name", NAMES)
def test_exact_log_prob_is_the_diffused_mixture_density(name, mix):
    sde, data = SDES[name], MIXTURES[mix]
    log_prob_t = sd.exact_log_prob(sde, data)
    for t in (0.05, 0.5, 0.9 * sde.T):
        alpha, sigma = (float(c) for c in sde.marginal(torch.tensor(t, dtype=F64)))
        stds_t = torch.sqrt(alpha**2 * data.stds**2 + sigma**2)
        ref = reference_mixture(alpha * data.means, stds_t, data.weights)
        x = diffused_points(sde, data, torch.full((32,), t, dtype=F64))
        assert_close(log_prob_t(x, t), ref.log_prob(x), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("mix", list(MIXTURES))
@pytest.mark.parametrize("name", NAMES)
def test_exact_score_is_grad_of_exact_log_prob(name, mix):
    # Per-sample times: one (batch,) tensor with a different t in every row.
    sde, data = SDES[name], MIXTURES[mix]
    t = per_sample_times(sde, 24)
    x = diffused_points(sde, data, t).requires_grad_()
    (grad,) = torch.autograd.grad(sd.exact_log_prob(sde, data)(x, t).sum(), x)
    score = sd.exact_score(sde, data)(x.detach(), t)
    assert score.shape == x.shape and score.dtype == F64
    assert float((score - grad).abs().max()) <= 1e-8
    # a scalar time as well
    (grad,) = torch.autograd.grad(sd.exact_log_prob(sde, data)(x, 0.3).sum(), x)
    assert float((sd.exact_score(sde, data)(x.detach(), 0.3) - grad).abs().max()) <= 1e-8


@pytest.mark.parametrize("mix", list(MIXTURES))
def test_mixture_score_is_grad_of_mixture_log_prob(mix):
    data = MIXTURES[mix]
    x = data.sample(32, generator=torch.Generator().manual_seed(2)).requires_grad_()
    (grad,) = torch.autograd.grad(data.log_prob(x).sum(), x)
    assert float((data.score(x.detach()) - grad).abs().max()) <= 1e-8


@pytest.mark.parametrize("name", ["vp", "subvp", "vp_cosine"])
def test_exact_score_at_t0_is_the_data_score(name):
    # alpha_0 = 1 and sigma_0 = 0 for VP and sub-VP, so p_0 is the data itself.
    data = MIXTURES["8d"]
    x = data.sample(16, generator=torch.Generator().manual_seed(3))
    assert_close(sd.exact_score(SDES[name], data)(x, 0.0), data.score(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_exact_score_per_sample_time_equals_scalar_time_rows(name):
    sde, data = SDES[name], MIXTURES["2d"]
    t = per_sample_times(sde, 6)
    x = diffused_points(sde, data, t)
    score_fn = sd.exact_score(sde, data)
    rows = torch.cat([score_fn(x[i : i + 1], float(t[i])) for i in range(6)])
    assert_close(score_fn(x, t), rows, rtol=1e-13, atol=1e-13)
    rows_0d = torch.cat([score_fn(x[i : i + 1], t[i]) for i in range(6)])  # 0-d tensor times
    assert_close(rows_0d, rows, rtol=0, atol=0)
    # an event shape other than (d,) is flattened and restored
    assert_close(score_fn(x.reshape(6, 1, 2), t), score_fn(x, t).reshape(6, 1, 2), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mix", ["2d", "64d"])
def test_exact_score_float32_is_close_to_float64(name, mix):
    sde, data = SDES[name], MIXTURES[mix]
    t = per_sample_times(sde, 32)
    x = diffused_points(sde, data, t)
    s64 = sd.exact_score(sde, data)(x, t)
    s32 = sd.exact_score(sde, data.to(dtype=torch.float32))(x.float(), t.float())
    logp32 = sd.exact_log_prob(sde, data.to(dtype=torch.float32))(x.float(), t.float())
    assert s32.dtype == logp32.dtype == torch.float32
    assert bool(torch.isfinite(s32).all()) and bool(torch.isfinite(logp32).all())
    # float32 round-off (eps ~ 1.2e-7) enters through x - alpha m, whose error relative to the
    # score is eps |x| / var, and through the d-term sums in the softmax: bound the error row by
    # row by 50 eps (|x| / var_min + |score|) (measured: <= 7 eps (...)).
    var_min = (data.stds.min() ** 2 * sde.marginal(t)[0] ** 2 + sde.marginal(t)[1] ** 2)[:, None]
    scale = x.abs().amax(1, keepdim=True) / var_min + s64.abs().amax(1, keepdim=True)
    assert bool(((s32.double() - s64).abs() <= 50 * 1.2e-7 * scale).all())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_score_far_from_all_components_is_the_nearest_components_score(name, dtype):
    # Equal stds: far away, the nearest component takes all the responsibility, and the score is
    # its Gaussian score -(x - alpha m_k) / (alpha^2 s^2 + sigma^2) — finite, no 0/0 from exp.
    sde = SDES[name]
    means = ring_means(8, 2.0)
    data = sd.GaussianMixture(means, 0.15, weights=torch.linspace(1, 2, 8, dtype=F64)).to(
        dtype=dtype
    )
    x = torch.tensor([[1e3, 1e3], [-1e3, 5e2], [0.0, -1e3]], dtype=dtype)
    t = 0.3
    alpha, sigma = (float(c) for c in sde.marginal(torch.tensor(t, dtype=F64)))
    nearest = torch.cdist(x.double(), alpha * means).argmin(1)
    var = alpha**2 * 0.15**2 + sigma**2
    expected = -(x.double() - alpha * means[nearest]) / var
    score = sd.exact_score(sde, data)(x, t)
    logp = sd.exact_log_prob(sde, data)(x, t)
    assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(logp).all())
    rtol = 1e-12 if dtype == F64 else 1e-6
    assert_close(score.double(), expected, rtol=rtol, atol=0)
    # and t = 0 of the data itself
    data_expected = -(x.double() - means[torch.cdist(x.double(), means).argmin(1)]) / 0.15**2
    assert_close(data.score(x).double(), data_expected, rtol=rtol, atol=0)


# ---------------------------------------------------------------------------------------------
# Sampling


def test_mixture_sample_moments_within_standard_error():
    means = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, -5.0]], dtype=F64)
    stds = torch.tensor([[0.3, 0.5], [0.4, 0.2], [0.5, 0.5]], dtype=F64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    data = sd.GaussianMixture(means, stds, weights=weights)
    n = 40_000
    x = data.sample(n, generator=torch.Generator().manual_seed(4))
    assert x.shape == (n, 2) and x.dtype == F64
    assert torch.equal(x, data.sample(n, generator=torch.Generator().manual_seed(4)))

    mean = (weights[:, None] * means).sum(0)
    var = (weights[:, None] * (stds**2 + means**2)).sum(0) - mean**2
    se_mean = x.std(0) / math.sqrt(n)
    assert bool(((x.mean(0) - mean).abs() <= 4 * se_mean).all())
    sq = (x - x.mean(0)) ** 2
    se_var = sq.std(0) / math.sqrt(n)  # the mixture is not Gaussian: SE from the 4th moment
    assert bool(((x.var(0) - var).abs() <= 4 * se_var).all())

    # Components are 10+ stds apart, so the nearest mean identifies each sample's component.
    k = torch.cdist(x, means).argmin(1)
    freq = torch.bincount(k, minlength=3).to(F64) / n
    assert bool(((freq - weights).abs() <= 4 * torch.sqrt(weights * (1 - weights) / n)).all())
    for j in range(3):
        xj = x[k == j]
        nj = xj.shape[0]
        assert bool(((xj.mean(0) - means[j]).abs() <= 4 * stds[j] / math.sqrt(nj)).all())
        var_se = stds[j] ** 2 * math.sqrt(2 / (nj - 1))
        assert bool(((xj.var(0) - stds[j] ** 2).abs() <= 4 * var_se).all())


# ---------------------------------------------------------------------------------------------
# Fokker-Planck: dp/dt = -d/dx (f x p) + g^2/2 d^2p/dx^2 (Song et al. Eq. 48 / Oksendal 2003)


@pytest.mark.parametrize("t", [0.1, 0.4, 0.7])
@pytest.mark.parametrize("name", NAMES)
def test_exact_density_solves_fokker_planck(name, t):
    # Central differences in float64 with h_t = 1e-4, h_x = 1e-3: truncation, (h_t^2 / 6) rate^2
    # with rate <= 20 and (h_x^2 / 12) / var with var >= 0.09, is <= 1e-6 of each term; round-off,
    # eps / h_t and eps / h_x^2, is ~1e-10. Near stationarity the terms nearly cancel, so relative
    # to max |dp/dt| the residual reaches ~1e-5 (measured): the 1e-4 bound keeps a 10x margin,
    # while g^2 off by 1% already leaves a residual ~1e-2.
    sde = SDES[name]
    data = MIXTURES["1d"]
    log_prob = sd.exact_log_prob(sde, data)
    ht, hx = 1e-4, 1e-3
    x = torch.linspace(-5.0, 6.0, 441, dtype=F64)[:, None]

    def p(y, tau):
        return torch.exp(log_prob(y, tau))

    def flux(y):  # f(x, t) p(x, t)
        return sde.drift(y, t)[:, 0] * p(y, t)

    dp_dt = (p(x, t + ht) - p(x, t - ht)) / (2 * ht)
    dflux_dx = (flux(x + hx) - flux(x - hx)) / (2 * hx)
    d2p_dx2 = (p(x + hx, t) - 2 * p(x, t) + p(x - hx, t)) / hx**2
    g2 = float(sde.diffusion(torch.tensor(t, dtype=F64))) ** 2
    residual = dp_dt + dflux_dx - 0.5 * g2 * d2p_dx2
    assert float(residual.abs().max()) <= 1e-4 * float(dp_dt.abs().max())


# ---------------------------------------------------------------------------------------------
# Probability-flow map of a Gaussian


FLOW_MEAN = torch.tensor([1.0, -2.0], dtype=F64)
FLOW_STD = torch.tensor([0.5, 0.2], dtype=F64)


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_flow_map_matches_pf_ode_solution(name):
    # dx/dt = f x - g^2/2 score(x, t) (Song et al. Eq. 13), integrated by scipy to rtol 1e-10.
    sde = SDES[name]
    data = sd.GaussianMixture(FLOW_MEAN[None], FLOW_STD[None])
    score_fn = sd.exact_score(sde, data)
    t, s = 0.8 * sde.T, 0.05
    x_t = torch.tensor([[0.3, 0.1], [-1.0, 2.0], [2.5, -0.4], [0.0, 0.0]], dtype=F64)
    x_t = x_t * sde.marginal(torch.tensor(t, dtype=F64))[1]

    def rhs(tau, y):
        x = torch.from_numpy(y).reshape(4, 2)
        g2 = float(sde.diffusion(torch.tensor(tau, dtype=F64))) ** 2
        return (sde.drift(x, tau) - 0.5 * g2 * score_fn(x, tau)).reshape(-1).numpy()

    sol = solve_ivp(rhs, (t, s), x_t.reshape(-1).numpy(), method="DOP853", rtol=1e-10, atol=1e-12)
    assert sol.success
    expected = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(4, 2)
    flow = sd.gaussian_flow_map(sde, FLOW_MEAN, FLOW_STD)
    assert_close(flow(x_t, t, s), expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_flow_map_pushes_marginal_t_to_marginal_s(name):
    sde = SDES[name]
    flow = sd.gaussian_flow_map(sde, FLOW_MEAN, FLOW_STD)
    t, s = 0.8 * sde.T, 0.05
    (a_t, sig_t), (a_s, sig_s) = (
        (float(c) for c in sde.marginal(torch.tensor(u, dtype=F64))) for u in (t, s)
    )
    v_t, v_s = a_t**2 * FLOW_STD**2 + sig_t**2, a_s**2 * FLOW_STD**2 + sig_s**2
    n = 20_000
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    x_s = flow(a_t * FLOW_MEAN + torch.sqrt(v_t) * z, t, s)
    se_mean = x_s.std(0) / math.sqrt(n)
    assert bool(((x_s.mean(0) - a_s * FLOW_MEAN).abs() <= 4 * se_mean).all())
    se_var = x_s.var(0) * math.sqrt(2 / (n - 1))
    assert bool(((x_s.var(0) - v_s).abs() <= 4 * se_var).all())
    # The PF map of a Gaussian is the monotone affine transport: it sends z to the same z.
    assert_close(x_s, a_s * FLOW_MEAN + torch.sqrt(v_s) * z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_flow_map_is_identity_at_equal_times_and_composes(name):
    sde = SDES[name]
    flow = sd.gaussian_flow_map(sde, FLOW_MEAN, FLOW_STD)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(8), dtype=F64)
    assert_close(flow(x, 0.6, 0.6), x, rtol=1e-15, atol=1e-15)
    assert_close(flow(flow(x, 0.9, 0.4), 0.4, 0.01), flow(x, 0.9, 0.01), rtol=1e-12, atol=1e-12)
    t_batch = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5], dtype=F64)
    rows = torch.cat([flow(x[i : i + 1], float(t_batch[i]), 0.1) for i in range(5)])
    assert_close(flow(x, t_batch, 0.1), rows, rtol=1e-14, atol=1e-14)
    assert flow(x.float(), 0.9, 0.1).dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Bad input

TWO = [[0.0, 0.0], [1.0, 1.0]]

BAD_MIXTURES = [
    (dict(means=[0.0, 1.0], stds=0.1), "means"),
    (dict(means=TWO, stds=[[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]]), "stds"),
    (dict(means=TWO, stds=[0.1, 0.2, 0.3]), "stds"),
    (dict(means=TWO, stds=0.0), "stds"),
    (dict(means=TWO, stds=[0.1, -0.1]), "stds"),
    (dict(means=TWO, stds=[[0.1, 0.1], [0.1, float("nan")]]), "stds"),
    (dict(means=TWO, stds=0.1, weights=[0.0, 0.0]), "weights"),
    (dict(means=TWO, stds=0.1, weights=[-1.0, 2.0]), "weights"),
    (dict(means=TWO, stds=0.1, weights=[float("inf"), 1.0]), "weights"),
    (dict(means=TWO, stds=0.1, weights=[0.5, 0.3, 0.2]), "weights"),
]


@pytest.mark.parametrize(("kwargs", "argument"), BAD_MIXTURES)
def test_bad_mixture_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        sd.GaussianMixture(**kwargs)


def test_bad_oracle_call_arguments_raise_value_error_naming_them():
    data = sd.GaussianMixture(TWO, 0.1)
    sde = SDES["vp"]
    with pytest.raises(ValueError, match=r"\bx\b"):
        data.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\bx\b"):
        sd.exact_score(sde, data)(torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"\bt\b"):
        sd.exact_score(sde, data)(torch.zeros(4, 2), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"\bt\b"):
        sd.exact_log_prob(sde, data)(torch.zeros(4, 2), torch.full((3,), 0.5))


# ---------------------------------------------------------------------------------------------
# Device (runs where CUDA is present)


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_exact_score_runs_on_the_input_device(name):
    sde, data = SDES[name], MIXTURES["8d"]
    t = per_sample_times(sde, 16)
    x = diffused_points(sde, data, t)
    on_gpu = sd.exact_score(sde, data.to(device="cuda"))(x.cuda(), t.cuda())
    assert on_gpu.device.type == "cuda"
    assert_close(on_gpu.cpu(), sd.exact_score(sde, data)(x, t), rtol=1e-10, atol=1e-10)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert data.to(device="cuda").sample(8, generator=g).device.type == "cuda"
