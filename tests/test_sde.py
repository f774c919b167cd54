"""Forward SDEs (scoresde/sde.py) against closed forms, identities and Monte-Carlo simulation.

References: Song et al. 2021 (ICLR), "Score-Based Generative Modeling through SDEs", Eqs. 9, 11,
29-33; Ho et al. 2020 (DDPM) for the discrete betas; Nichol & Dhariwal 2021, Eq. 17 for the cosine
schedule.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchsde
from torch.testing import assert_close

import scoresde as sd

F64 = torch.float64

SDES = {
    "vp": sd.VPSDE(0.1, 20.0),
    "subvp": sd.SubVPSDE(0.1, 20.0),
    "ve": sd.VESDE(0.01, 50.0),
    "vp_cosine": sd.VPSDE(schedule="cosine"),
    "vp_polynomial": sd.VPSDE(schedule="polynomial", power=2.0),
    "vp_sigmoid": sd.VPSDE(schedule="sigmoid", start=-3.0, end=3.0, tau=1.0),
    "rf": sd.RectifiedFlow(),
    # The trigonometric path alpha = cos(pi t/2), sigma = sin(pi t/2), f and g^2 by autograd.
    "path_cos": sd.GaussianPath(
        lambda t: torch.cos(t * math.pi / 2), lambda t: torch.sin(t * math.pi / 2), T=0.99
    ),
}
NAMES = list(SDES)
#: The prior's std where it is not 1: sigma_T (VE: sigma_max; the paths: sigma at their T < 1).
PRIOR_STD = {"ve": 50.0, "rf": 0.999, "path_cos": math.sin(0.99 * math.pi / 2)}

COSINE_S = 0.008


def hoogeboom_alpha_bar(t: float, power: float = 2.0) -> float:
    """alpha_bar(t) = (1 - t^p)^2 (Hoogeboom et al. 2022, ``polynomial_schedule``, no precision
    shift)."""
    return (1 - t**power) ** 2


def chen_gamma(t: float, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> float:
    """Chen 2023, Alg. 1 ``sigmoid_schedule`` (without its clip at 1e-9)."""

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    return (v_end - sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)


def nichol_dhariwal_alpha_bar(t: float) -> float:
    """alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s)/(1 + s) pi/2) (Nichol & Dhariwal Eq. 17)."""

    def f(u: float) -> float:
        return math.cos((u + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2

    return f(t) / f(0.0)


def closed_form_marginal(name: str, t: float) -> tuple[float, float]:
    """(alpha_t, sigma_t) written out independently of the package (Song et al. Eqs. 29, 31, 33)."""
    if name in ("vp", "subvp"):
        big_b = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2  # int_0^t beta
        alpha = math.exp(-0.5 * big_b)
        var_vp = 1 - math.exp(-big_b)
        return alpha, math.sqrt(var_vp) if name == "vp" else var_vp
    if name == "ve":
        return 1.0, 0.01 * (50.0 / 0.01) ** t
    if name in ("vp_polynomial", "vp_sigmoid"):
        alpha_bar = hoogeboom_alpha_bar(t) if name == "vp_polynomial" else chen_gamma(t)
        return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    if name == "rf":
        return 1 - t, t
    if name == "path_cos":
        return math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)
    alpha_bar = nichol_dhariwal_alpha_bar(t)
    return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)


def t64(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Marginals


@pytest.mark.parametrize("name", NAMES)
def test_marginal_matches_closed_form(name):
    sde = SDES[name]
    ts = torch.linspace(0.01, sde.T, 40, dtype=F64)
    alpha, sigma = sde.marginal(ts)
    expected = torch.tensor([closed_form_marginal(name, float(t)) for t in ts], dtype=F64)
    assert_close(alpha, expected[:, 0], rtol=1e-12, atol=0)
    assert_close(sigma, expected[:, 1], rtol=1e-10, atol=0)
    assert_close(sde.marginal(t64(0.0))[0], t64(1.0), rtol=1e-15, atol=0)


# Monte-Carlo check of `marginal` against the forward SDE itself. Euler-Maruyama on the grid
# k * DT has a bias of O(DT); `euler_moments` computes it exactly (the chain is linear) and the test
# first asserts it is below 0.2 standard errors at every checked time, so the 4-SE comparison tests
# `marginal`, not the discretisation. (DT = 2e-4 keeps VE's left-point bias in sum g^2 dt, about
# 17 DT / 2 relative, at 0.17 SE; sub-VP's g^2 ~ t near 0 makes t < 0.2 costlier.)
MC_TIMES = (0.2, 0.4, 0.6, 0.9)
MC_DT = 2e-4
MC_PATHS = 20_000
MC_X0 = 1.5


def euler_moments(sde: sd.SDE, var0: float, steps: int) -> tuple[list[float], list[float]]:
    """Mean factor and variance after k = 1..steps Euler steps x' = (1 + f dt) x + g sqrt(dt) z."""
    tk = torch.arange(steps, dtype=F64) * MC_DT
    f = sde.drift(torch.ones(steps, 1, dtype=F64), tk)[:, 0].tolist()
    g2 = (sde.diffusion(tk) ** 2).tolist()
    m, v, means, variances = 1.0, var0, [], []
    for fk, g2k in zip(f, g2, strict=True):
        m, v = (1 + fk * MC_DT) * m, (1 + fk * MC_DT) ** 2 * v + g2k * MC_DT
        means.append(m)
        variances.append(v)
    return means, variances


@pytest.mark.parametrize("name", NAMES)
def test_marginal_matches_forward_simulation(name):
    sde = SDES[name]
    n = MC_PATHS
    # p_0 is the point mass at x0 smoothed by N(0, std(0)^2): std(0) = sigma_min for VE, 0 else.
    std0 = float(sde.marginal(t64(0.0))[1])
    gen = torch.Generator().manual_seed(20240501)
    y0 = MC_X0 + std0 * torch.randn(n, 1, generator=gen, dtype=F64)
    # State in float32 (torchsde's Brownian increments are 5x cheaper; the round-off, ~1e-6, is far
    # below the SE of ~1e-2), the time grid in float64 so the output times fall on the grid.
    ts = torch.tensor((0.0, *MC_TIMES), dtype=F64)
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=MC_TIMES[-1], size=(n, 1), dtype=torch.float32, entropy=7, dt=MC_DT
    )
    ys = torchsde.sdeint(
        sd.to_torchsde(sde, (1,)), y0.float(), ts, method="euler", dt=MC_DT, bm=bm
    ).double()

    means, variances = euler_moments(sde, std0**2, round(MC_TIMES[-1] / MC_DT))
    for i, t in enumerate(MC_TIMES, start=1):
        x = ys[i, :, 0]
        alpha, sigma = (float(c) for c in sde.marginal(t64(t)))
        se_mean = float(x.std()) / math.sqrt(n)
        se_var = float(x.var()) * math.sqrt(2 / (n - 1))
        k = round(t / MC_DT) - 1
        assert abs(means[k] * MC_X0 - alpha * MC_X0) < 0.2 * se_mean, "Euler bias too large"
        assert abs(variances[k] - sigma**2) < 0.2 * se_var, "Euler bias too large"
        assert abs(float(x.mean()) - alpha * MC_X0) <= 4 * se_mean, f"mean at t={t}"
        assert abs(float(x.var()) - sigma**2) <= 4 * se_var, f"variance at t={t}"


def test_vp_marginal_at_T_matches_closed_form():
    alpha, sigma = sd.VPSDE(0.1, 20.0).marginal(t64(1.0))
    # int_0^1 beta = beta_min + (beta_max - beta_min)/2 = 0.1 + 9.95
    assert float(alpha) == pytest.approx(math.exp(-0.5 * (0.1 + 9.95)), rel=1e-13)
    assert float(alpha) == pytest.approx(6.6e-3, abs=5e-5)
    assert abs(float(sigma) - 1) < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_prior_sample_is_normal_with_prior_std(name):
    sde = SDES[name]
    prior_std = PRIOR_STD.get(name, 1.0)
    z = sde.prior_sample((20_000, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert z.shape == (20_000, 2) and z.dtype == F64
    n = z.shape[0]
    for j in range(2):
        assert abs(float(z[:, j].mean())) <= 4 * prior_std / math.sqrt(n)
        var_se = prior_std**2 * math.sqrt(2 / (n - 1))
        assert abs(float(z[:, j].var()) - prior_std**2) <= 4 * var_se
    cov = float((z[:, 0] * z[:, 1]).mean())
    assert abs(cov) <= 4 * prior_std**2 / math.sqrt(n)
    again = sde.prior_sample((20_000, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(z, again)
    assert sde.prior_sample((3, 2)).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_prior_logp_is_normal_log_density(name, dtype):
    sde = SDES[name]
    prior_std = PRIOR_STD.get(name, 1.0)
    z = prior_std * torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(0), dtype=dtype)
    normal = torch.distributions.Normal(t64(0.0), t64(prior_std))
    expected = normal.log_prob(z.double()).sum((1, 2))
    logp = sde.prior_logp(z)
    assert logp.shape == (7,) and logp.dtype == dtype
    tol = 1e-12 if dtype == F64 else 1e-5
    assert_close(logp.double(), expected, rtol=tol, atol=0)


# ---------------------------------------------------------------------------------------------
# Discrete schedules


def test_vp_discrete_betas_equal_ddpm_linspace():
    betas = sd.VPSDE(0.1, 20.0).discrete_betas(1000)
    assert betas.dtype == F64
    assert_close(betas, torch.linspace(1e-4, 0.02, 1000, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine", "polynomial", "sigmoid"])
@pytest.mark.parametrize("n", [25, 1000])
def test_vp_discrete_times_give_alphas_cumprod(schedule, n):
    sde = sd.VPSDE(schedule=schedule)
    t = sde.discrete_times(n)
    assert t.shape == (n + 1,) and t.dtype == F64
    assert float(t[0]) == 0.0
    assert bool(torch.all(t[1:] > t[:-1]))
    # The last times lie beyond T (see discrete_times): tensor times are checked for kind and
    # shape only, so the float64 primitives read the schedule there.
    c = sde.coeffs(t)
    alpha, sigma = c.alpha, c.sigma
    alphas_cumprod = torch.cumprod(1 - sde.discrete_betas(n), 0)
    assert_close(alpha[1:] ** 2, alphas_cumprod, rtol=1e-12, atol=1e-14)
    assert bool(torch.isfinite(sigma).all())


def test_scaled_linear_is_stable_diffusions_chain_and_its_exact_integral():
    # Stable Diffusion: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2, i.e. beta_min =
    # N beta_start = 0.85, beta_max = N beta_end = 12 (written out here with Python floats).
    n = 1000
    sde = sd.VPSDE(0.85, 12.0, schedule="scaled_linear")
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    expected = [(lo + i / (n - 1) * (hi - lo)) ** 2 for i in range(n)]
    assert_close(sde.discrete_betas(n), torch.tensor(expected, dtype=F64), rtol=1e-12, atol=0)
    # beta(t) = (a + d t)^2 and alpha^2 = exp(-B), B(t) = ((a + d t)^3 - a^3) / (3 d).
    a, d = math.sqrt(0.85), math.sqrt(12.0) - math.sqrt(0.85)
    ts = torch.linspace(0.0, 1.0, 41, dtype=F64)
    big_b = torch.tensor([((a + d * t) ** 3 - a**3) / (3 * d) for t in ts.tolist()], dtype=F64)
    assert_close(sde.beta(ts), (a + d * ts) ** 2, rtol=1e-14, atol=0)
    assert_close(sde.marginal(ts)[0] ** 2, torch.exp(-big_b), rtol=1e-12, atol=0)
    # The inverse of B, also where B is tiny (no cancellation) and for beta_min = beta_max.
    for other in (sde, sd.VPSDE(2.0, 2.0, schedule="scaled_linear")):
        t = torch.cat([torch.tensor([0.0, 1e-12, 1e-8], dtype=F64), ts[1:]])
        b = other.schedule.integral(t)
        assert_close(other.schedule.inverse_integral(b), t, rtol=1e-12, atol=0)
    assert_close(
        sd.VPSDE(2.0, 2.0, schedule="scaled_linear").marginal(ts)[0] ** 2, torch.exp(-2 * ts)
    )
    # Its config rebuilds it, for VP and sub-VP (checkpoints).
    for cls in (sd.VPSDE, sd.SubVPSDE):
        other = cls(0.85, 12.0, schedule="scaled_linear", T=1.002)
        rebuilt = sd.sde_from_config(other.config())
        assert type(rebuilt) is cls and rebuilt.config() == other.config()
        assert_close(rebuilt.log_snr(ts), other.log_snr(ts), rtol=0, atol=0)


def test_cosine_marginal_is_nichol_dhariwal_alpha_bar():
    sde = sd.VPSDE(schedule="cosine")
    ts = torch.linspace(0.0, sde.T, 101, dtype=F64)
    alpha, sigma = sde.marginal(ts)
    alpha_bar = torch.tensor([nichol_dhariwal_alpha_bar(float(t)) for t in ts], dtype=F64)
    assert_close(alpha**2, alpha_bar, rtol=1e-12, atol=0)
    assert_close(sigma**2, 1 - alpha_bar, rtol=1e-12, atol=1e-15)
    assert float(sigma[0]) == 0.0  # exactly: p_0 is the data


def test_cosine_discrete_betas_match_nichol_dhariwal_clipped():
    n = 1000
    expected = [
        min(1 - nichol_dhariwal_alpha_bar(i / n) / nichol_dhariwal_alpha_bar((i - 1) / n), 0.999)
        for i in range(1, n + 1)
    ]
    betas = sd.VPSDE(schedule="cosine").discrete_betas(n)
    assert_close(betas, torch.tensor(expected, dtype=F64), rtol=1e-10, atol=1e-14)
    assert float(betas[-1]) == 0.999  # the clip is active at the last step


def test_cosine_time_ends_where_beta_reaches_the_clip():
    # beta(T) = beta_clip * N = 999: the continuous analogue of the paper's clip at 0.999.
    sde = sd.VPSDE(schedule="cosine")
    assert float(sde.beta(t64(sde.T))) == pytest.approx(999.0, rel=1e-9)
    assert sde.beta_max == pytest.approx(999.0, rel=1e-9)
    assert sde.beta_min == pytest.approx(math.pi / 1.008 * math.tan(COSINE_S / 1.008 * math.pi / 2))


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_polynomial_discrete_betas_match_hoogeboom_clipped(power):
    # Their code: alphas2 on t = i/n, alphas_step = alphas2[i] / alphas2[i-1] clipped below at
    # 0.001 (``clip_noise_schedule``), i.e. beta_i = 1 - alphas_step clipped at 0.999.
    n = 1000
    expected = [
        min(1 - hoogeboom_alpha_bar(i / n, power) / hoogeboom_alpha_bar((i - 1) / n, power), 0.999)
        for i in range(1, n + 1)
    ]
    betas = sd.VPSDE(schedule="polynomial", power=power).discrete_betas(n)
    assert_close(betas, torch.tensor(expected, dtype=F64), rtol=1e-9, atol=1e-15)
    assert float(betas[-1]) == 0.999


@pytest.mark.parametrize("options", [{}, {"start": 0.0, "end": 3.0, "tau": 0.7}])
def test_sigmoid_discrete_betas_match_chen_gamma_clipped(options):
    n = 1000
    expected = [
        min(1 - chen_gamma(i / n, **options) / chen_gamma((i - 1) / n, **options), 0.999)
        for i in range(1, n + 1)
    ]
    sde = sd.VPSDE(schedule="sigmoid", **options)
    assert_close(sde.discrete_betas(n), torch.tensor(expected, dtype=F64), rtol=1e-9, atol=1e-15)
    ts = torch.linspace(0.0, sde.T, 101, dtype=F64)
    gamma = torch.tensor([chen_gamma(float(t), **options) for t in ts], dtype=F64)
    # atol: the reference's own round-off, v(1) - v(t) of two sigmoids of ~1 (a few 1e-16).
    assert_close(sde.marginal(ts)[0] ** 2, gamma, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("schedule", ["polynomial", "sigmoid"])
def test_new_schedules_end_where_beta_reaches_the_clip_and_round_trip(schedule):
    sde = sd.VPSDE(schedule=schedule)
    assert float(sde.beta(t64(sde.T))) == pytest.approx(999.0, rel=1e-9)
    for cls in (sd.VPSDE, sd.SubVPSDE):
        other = cls(
            schedule=schedule,
            beta_clip=0.99,
            **({"power": 3.0} if schedule == "polynomial" else {"tau": 0.5}),
        )
        rebuilt = sd.sde_from_config(other.config())
        assert type(rebuilt) is cls and rebuilt.config() == other.config()
        t = torch.linspace(0, other.T, 9, dtype=F64)
        assert_close(rebuilt.log_snr(t), other.log_snr(t), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['power'\]"):
        sd.VPSDE(schedule="sigmoid", power=2.0)
    with pytest.raises(ValueError, match="end must be > start"):
        sd.VPSDE(schedule="sigmoid", start=3.0, end=-3.0)


# ---------------------------------------------------------------------------------------------
# Identities between f, g and the marginal (the moment ODEs of a linear SDE, Sarkka & Solin 2019
# Eqs. 5.50-5.51, as used in Song et al. App. B):
# d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2.


@pytest.mark.parametrize("name", NAMES)
def test_drift_coefficient_is_dlog_alpha_dt(name):
    sde = SDES[name]
    t = torch.linspace(0.01, sde.T, 30, dtype=F64).requires_grad_()
    alpha, _ = sde.marginal(t)
    (dlog_alpha,) = torch.autograd.grad(torch.log(alpha).sum(), t)
    f = sde.drift(torch.ones(30, 1, dtype=F64), t.detach())[:, 0]
    assert_close(f, dlog_alpha, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_diffusion_squared_is_dsigma2_dt_minus_2f_sigma2(name):
    sde = SDES[name]
    t = torch.linspace(0.01, sde.T, 30, dtype=F64).requires_grad_()
    _, sigma = sde.marginal(t)
    (dvar,) = torch.autograd.grad((sigma**2).sum(), t)
    f = sde.drift(torch.ones(30, 1, dtype=F64), t.detach())[:, 0]
    g2 = sde.diffusion(t.detach()) ** 2
    assert_close(g2, dvar - 2 * f * sigma.detach() ** 2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_public_f_and_g2_are_the_derivatives_of_the_public_log_alpha_and_log_sigma(name):
    """f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2, all through the float64
    primitives (autograd through log_alpha / log_sigma)."""
    sde = SDES[name]
    t = torch.linspace(0.01, sde.T, 30, dtype=F64).requires_grad_()
    (dlog_alpha,) = torch.autograd.grad(sde.log_alpha(t).sum(), t)
    (dvar,) = torch.autograd.grad(torch.exp(2 * sde.log_sigma(t)).sum(), t)
    f, g2 = sde.f(t.detach()), sde.g2(t.detach())
    assert_close(f, dlog_alpha, rtol=1e-10, atol=1e-12)
    sigma2 = torch.exp(2 * sde.log_sigma(t.detach()))
    assert_close(g2, dvar - 2 * f * sigma2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_coeffs_gathers_the_float64_primitives_exactly(name):
    sde = SDES[name]
    ts = torch.linspace(sde.T, 1e-3, 17, dtype=F64)
    c = sde.coeffs(ts)
    expected = {
        "t": ts,
        "log_alpha": sde.log_alpha(ts),
        "log_sigma": sde.log_sigma(ts),
        "alpha": sde.marginal(ts)[0],
        "sigma": sde.marginal(ts)[1],
        "log_snr": sde.log_snr(ts),
        "f": sde.f(ts),
        "g2": sde.g2(ts),
    }
    for field, value in expected.items():
        got = getattr(c, field)
        assert got.dtype == F64 and got.shape == ts.shape, field
        assert torch.equal(got, value), field
    a, s = closed_form_marginal(name, 0.5)
    assert_close(float(sde.coeffs(0.5).alpha), a, rtol=1e-12, atol=0)
    assert_close(float(sde.coeffs(0.5).sigma), s, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["log_alpha", "log_sigma", "f", "g2", "coeffs"])
def test_primitives_are_float64_and_check_numbers_not_tensor_values(method):
    sde = SDES["vp"]
    fn = getattr(sde, method)
    out = fn(torch.full((3,), 0.5, dtype=torch.float32))
    out = out.alpha if method == "coeffs" else out
    assert out.dtype == F64 and out.shape == (3,)
    out = fn(0.5)
    assert (out.alpha if method == "coeffs" else out).dtype == F64
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        fn(1.5)
    with pytest.raises(TypeError, match="t"):
        fn("0.5")
    with pytest.raises(ValueError, match="t"):
        fn(torch.zeros(2, 2))


@pytest.mark.parametrize("name", NAMES)
def test_log_snr_is_log_alpha_over_sigma_and_inverts(name):
    sde = SDES[name]
    t = torch.linspace(1e-3, sde.T, 50, dtype=F64)
    alpha, sigma = sde.marginal(t)
    lam = sde.log_snr(t)
    assert_close(lam, torch.log(alpha / sigma), rtol=1e-12, atol=1e-12)
    assert_close(sde.t_from_log_snr(lam), t, rtol=1e-10, atol=0)
    lam_grid = torch.linspace(float(lam.min()), float(lam.max()), 50, dtype=F64)
    assert_close(sde.log_snr(sde.t_from_log_snr(lam_grid)), lam_grid, rtol=1e-10, atol=1e-10)
    if name != "ve":  # VE's sigma_0 > 0: its log-SNR is finite at t = 0
        # sigma_0 = 0: lambda = +inf is exactly t = 0 (sub-VP's closed form once gave inf - inf).
        assert float(sde.t_from_log_snr(math.inf)) == 0.0


S_T_PAIRS = [(0.0, 0.2), (0.1, 0.5), (0.3, 0.9), (0.5, 0.99), (0.05, 0.06), (0.7, 0.7)]


@pytest.mark.parametrize("name", NAMES)
def test_transition_is_ratio_of_marginals(name):
    # x_t = (alpha_t/alpha_s) x_s + sqrt(sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2) z.
    sde = SDES[name]
    s = torch.tensor([p[0] for p in S_T_PAIRS], dtype=F64)
    t = torch.tensor([p[1] for p in S_T_PAIRS], dtype=F64)
    a, v = sde.transition(s, t)
    alpha_s, sigma_s = sde.marginal(s)
    alpha_t, sigma_t = sde.marginal(t)
    a_expected = alpha_t / alpha_s
    assert_close(a, a_expected, rtol=1e-12, atol=0)
    assert_close(v, sigma_t**2 - a_expected**2 * sigma_s**2, rtol=1e-9, atol=1e-15)
    assert float(v[-1]) == 0.0 and float(a[-1]) == 1.0  # s == t


@pytest.mark.parametrize("name", NAMES)
def test_transition_composes_chapman_kolmogorov(name):
    sde = SDES[name]
    s, u, t = t64([0.0, 0.1, 0.4]), t64([0.3, 0.35, 0.8]), t64([0.6, 0.9, 0.95])
    a_su, v_su = sde.transition(s, u)
    a_ut, v_ut = sde.transition(u, t)
    a_st, v_st = sde.transition(s, t)
    assert_close(a_su * a_ut, a_st, rtol=1e-12, atol=0)
    assert_close(a_ut**2 * v_su + v_ut, v_st, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_transition_variance_over_a_short_step_is_g2_dt(name):
    # v(t - h, t) = g(t - h/2)^2 h (1 + O(h)); h = 2^-30 is exact in float64, truncation ~1e-8
    # relative, and the cancellation in log(sigma_t / sigma_s) costs ~1e-16 / (h * rate) ~ 1e-7.
    sde = SDES[name]
    h = 2.0**-30
    t = t64([0.25, 0.5, 0.75])
    a, v = sde.transition(t - h, t)
    assert_close(v / h, sde.diffusion(t - h / 2) ** 2, rtol=1e-6, atol=0)
    f = sde.drift(torch.ones(3, 1, dtype=F64), t - h / 2)[:, 0]
    assert_close((a - 1) / h, f, rtol=1e-6, atol=1e-7)


def test_vp_discretize_is_the_ddpm_step():
    # On discrete_times, the exact transition t_{i-1} -> t_i is x_i = sqrt(1 - beta_i) x_{i-1} +
    # sqrt(beta_i) z (Ho et al. 2020, Eq. 2).
    n = 1000
    sde = sd.VPSDE(0.1, 20.0, T=float(sd.VPSDE().discrete_times(n)[-1]))  # the whole chain
    t = sde.discrete_times(n)
    betas = sde.discrete_betas(n)
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    f_d, g = sde.discretize(x, t[1:], t[1:] - t[:-1])
    assert_close(f_d, (torch.sqrt(1 - betas) - 1)[:, None] * x, rtol=1e-9, atol=1e-15)
    assert_close(g.reshape(-1), torch.sqrt(betas), rtol=1e-9, atol=0)
    assert g.shape == (n, 1)  # per-sample coefficient, shaped to broadcast over the event


def test_ve_discretize_is_the_smld_step():
    # x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z (Song et al. App. E, Eq. 45).
    sde = sd.VESDE(0.01, 50.0)
    t_prev, t = t64([0.1, 0.5]), t64([0.2, 0.6])
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    f_d, g = sde.discretize(x, t, t - t_prev)
    sig = lambda u: 0.01 * 5000.0**u  # noqa: E731
    expected = t64([sig(0.2) ** 2 - sig(0.1) ** 2, sig(0.6) ** 2 - sig(0.5) ** 2])
    assert_close(f_d, torch.zeros_like(x), rtol=0, atol=1e-15)
    assert_close(g.reshape(-1) ** 2, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_drift_is_f_minus_g2_score(name):
    # Reverse SDE dx = [f - g^2 s] dt + g dw (Song et al. Eq. 6); PF-ODE dx = [f - g^2 s / 2] dt
    # (Eq. 13).
    sde = SDES[name]
    seen = []

    def score_fn(x, t):
        seen.append(t)
        return -x * (1 + t[:, None])

    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = 0.4
    f = sde.drift(x, t)
    g = sde.diffusion(t64(t))
    s = -x * 1.4
    assert_close(sde.reverse(score_fn).drift(x, t), f - g**2 * s, rtol=1e-12, atol=1e-12)
    pf = sde.reverse(score_fn, probability_flow=True)
    assert_close(pf.drift(x, t), f - 0.5 * g**2 * s, rtol=1e-12, atol=1e-12)
    assert_close(sde.reverse(score_fn).diffusion(t64(t)), g, rtol=0, atol=0)
    assert float(pf.diffusion(t64(t))) == 0.0
    assert seen[0].shape == (5,)  # the score always sees a (batch,) time
    # sde.reverse_drift is the same formula for a given score, with per-sample times too
    assert_close(sde.reverse_drift(x, t, s), f - g**2 * s, rtol=1e-12, atol=1e-12)
    tb = torch.tensor([0.1, 0.2, 0.4, 0.6, 0.9], dtype=F64)
    fb, g2b = sde.f(tb)[:, None], sde.g2(tb)[:, None]
    assert_close(sde.reverse_drift(x, tb, s, 0.5), fb * x - 0.5 * g2b * s, rtol=1e-12, atol=0)


def test_sde_classes_name_each_sde_and_rebuild_it():
    assert dict(sd.SDE_CLASSES) == {
        "vp": sd.VPSDE,
        "subvp": sd.SubVPSDE,
        "ve": sd.VESDE,
        "rf": sd.RectifiedFlow,
    }
    assert [c.label for c in sd.SDE_CLASSES.values()] == ["VP", "sub-VP", "VE", "RF"]
    with pytest.raises(TypeError):
        sd.SDE_CLASSES["x"] = sd.VPSDE  # read-only: no global mutable registry
    for name, cls in sd.SDE_CLASSES.items():
        sde = sd.sde_from_name(name)
        assert type(sde) is cls and sde.name == name
        assert sd.sde_from_config(sde.config()).config() == sde.config()
    with pytest.raises(ValueError, match=r"sde must be one of \('vp', 'subvp', 've', 'rf'\)"):
        sd.sde_from_name("vpsde")


# ---------------------------------------------------------------------------------------------
# dtype, time forms, gradients


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_outputs_follow_input_dtype(name, dtype):
    sde = SDES[name]
    t = torch.tensor([0.1, 0.5, 0.9], dtype=dtype)
    x = torch.randn(3, 2, dtype=dtype)
    alpha, sigma = sde.marginal(t)
    assert alpha.dtype == sigma.dtype == dtype
    assert sde.diffusion(t).dtype == dtype
    assert sde.log_snr(t).dtype == dtype
    # drift and marginal_prob follow x, whatever t's dtype
    for tt in (t, t.double(), t.float(), 0.5):
        assert sde.drift(x, tt).dtype == dtype
        mean, std = sde.marginal_prob(x, tt)
        assert mean.dtype == std.dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_float32_schedule_is_the_float64_schedule_rounded(name):
    # Schedules are computed in float64 and cast: no float32 round-off inside the schedule.
    sde = SDES[name]
    t32 = torch.linspace(0.01, sde.T, 50, dtype=torch.float32)
    a32, s32 = sde.marginal(t32)
    a64, s64 = sde.marginal(t32.double())
    assert torch.equal(a32, a64.float()) and torch.equal(s32, s64.float())
    assert torch.equal(sde.diffusion(t32), sde.diffusion(t32.double()).float())


@pytest.mark.parametrize("name", NAMES)
def test_time_may_be_float_0d_or_batch_tensor(name):
    sde = SDES[name]
    times = [0.05, 0.5, 0.9]
    tb = torch.tensor(times, dtype=F64)
    alpha_b, sigma_b = sde.marginal(tb)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    drift_b = sde.drift(x, tb)
    mean_b, std_b = sde.marginal_prob(x, tb)
    assert alpha_b.shape == (3,) and std_b.shape == (3, 1, 1, 1)
    for i, ti in enumerate(times):
        a0d, s0d = sde.marginal(t64(ti))
        assert a0d.shape == () and s0d.shape == ()
        assert float(a0d) == float(alpha_b[i]) and float(s0d) == float(sigma_b[i])
        a_float, s_float = sde.marginal(ti)  # Python float: default dtype
        assert float(a_float) == pytest.approx(float(alpha_b[i]), rel=1e-6)
        assert float(s_float) == pytest.approx(float(sigma_b[i]), rel=1e-6)
        assert torch.equal(sde.drift(x[i : i + 1], ti), drift_b[i : i + 1])
        assert torch.equal(sde.drift(x[i : i + 1], t64(ti)), drift_b[i : i + 1])
        assert_close(mean_b[i], alpha_b[i] * x[i], rtol=1e-15, atol=0)
        assert float(std_b[i]) == float(sigma_b[i])


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_through_x_and_t(name):
    sde = SDES[name]
    t = torch.tensor([0.2, 0.6], dtype=F64, requires_grad=True)
    alpha, sigma = sde.marginal(t)
    (d_alpha,) = torch.autograd.grad(alpha.sum(), t)
    (d_sigma,) = torch.autograd.grad(sigma.sum(), t)
    f = sde.drift(torch.ones(2, 1, dtype=F64), t.detach())[:, 0]
    assert_close(d_alpha, f * alpha.detach(), rtol=1e-10, atol=1e-14)
    assert bool(torch.all(d_sigma > 0))  # sigma_t increases for all three SDEs
    (d_g,) = torch.autograd.grad(sde.diffusion(t).sum(), t)
    assert bool(torch.isfinite(d_g).all())

    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    (dx,) = torch.autograd.grad(sde.drift(x, t.detach()).sum(), x)
    assert_close(dx, f[:, None].expand(2, 3), rtol=1e-15, atol=0)
    mean, std = sde.marginal_prob(x, t)
    d_mean_dx, d_mean_dt = torch.autograd.grad(mean.sum(), (x, t))
    assert_close(d_mean_dx, alpha.detach()[:, None].expand(2, 3), rtol=1e-15, atol=0)
    expected_dt = f * alpha.detach() * x.detach().sum(1)
    assert_close(d_mean_dt, expected_dt, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Bad input


BAD_SDE_ARGS = [
    (lambda: sd.VPSDE(beta_min=-0.1), "beta_min"),
    (lambda: sd.VPSDE(beta_min=float("nan")), "beta_min"),
    (lambda: sd.VPSDE(beta_max=-20.0), "beta_max"),
    (lambda: sd.VPSDE(beta_min=20.0, beta_max=0.1), "beta_max"),
    (lambda: sd.SubVPSDE(beta_min=-0.1), "beta_min"),
    (lambda: sd.SubVPSDE(beta_min=20.0, beta_max=0.1), "beta_max"),
    (lambda: sd.VESDE(sigma_min=-0.01), "sigma_min"),
    (lambda: sd.VESDE(sigma_max=-50.0), "sigma_max"),
    (lambda: sd.VESDE(sigma_max=float("inf")), "sigma_max"),
    (lambda: sd.VESDE(sigma_min=50.0, sigma_max=0.01), "sigma_max"),
    (lambda: sd.VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_max"),
    (lambda: sd.VPSDE(T=0.0), "T"),
    (lambda: sd.VPSDE(T=-1.0), "T"),
    (lambda: sd.VPSDE(schedule="cosine", T=1.0), "T"),
    (lambda: sd.SubVPSDE(T=0.0), "T"),
    (lambda: sd.VESDE(T=0.0), "T"),
    (lambda: sd.VESDE(T=-1.0), "T"),
    (lambda: sd.VPSDE(schedule="quadratic"), "schedule"),
    (lambda: sd.VPSDE().discrete_betas(0), "n"),
    (lambda: sd.VPSDE(0.1, 20.0).discrete_betas(10), "n"),  # beta_max / 10 = 2 > 1
    (lambda: sd.VPSDE(0.1, 20.0).discrete_times(20), "n"),  # beta_max / 20 = 1
    (lambda: sd.VPSDE().marginal(torch.zeros(2, 2)), "t"),
]


@pytest.mark.parametrize(("make", "argument"), BAD_SDE_ARGS)
def test_bad_sde_arguments_raise_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        make()


# ---------------------------------------------------------------------------------------------
# Device (runs where CUDA is present)


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_outputs_stay_on_the_input_device(name):
    sde = SDES[name]
    t = torch.tensor([0.1, 0.5], device="cuda")
    x = torch.randn(2, 3, device="cuda")
    alpha, sigma = sde.marginal(t)
    assert alpha.device.type == sigma.device.type == "cuda"
    assert sde.drift(x, t).device.type == "cuda" and sde.drift(x, 0.5).device.type == "cuda"
    assert sde.diffusion(t).device.type == "cuda"
    assert_close(alpha.cpu(), sde.marginal(t.cpu())[0], rtol=1e-6, atol=0)
    z = sde.prior_sample((4, 2), device="cuda")
    assert z.device.type == "cuda" and sde.prior_logp(z).device.type == "cuda"
