"""Gaussian paths (scoresde/paths.py) and the exact velocity (oracle.exact_velocity).

Truths: f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2 by central finite differences of
the closed-form alpha, sigma written here (Song et al. 2021, App. B); the flow-matching identity
u = E[alpha' x0 + sigma' eps | x_t] = f x - g^2/2 score (Lipman et al. 2023, Eq. 8; Song et al.
Eq. 13); samples at the noise floor of independent exact draws (design.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import F64, RING
from torch.testing import assert_close

import scoresde as sd
from scoresde.checkpoint import load_checkpoint, save_checkpoint
from scoresde.metrics import mmd2, noise_floor

#: (SDE, alpha(t), sigma(t)) written independently of the package, in float64 Python maths.
CLOSED_FORMS = {
    "rf": (sd.RectifiedFlow(), lambda t: 1 - t, lambda t: t),
    "path_cos": (
        sd.GaussianPath(
            lambda t: torch.cos(t * math.pi / 2), lambda t: torch.sin(t * math.pi / 2), T=0.99
        ),
        lambda t: math.cos(t * math.pi / 2),
        lambda t: math.sin(t * math.pi / 2),
    ),
    # A path that is not variance preserving and whose alpha is not 1 - sigma.
    "path_poly": (
        sd.GaussianPath(lambda t: (1 - t) ** 2, lambda t: t * (2 - t) ** 0.5, T=0.95),
        lambda t: (1 - t) ** 2,
        lambda t: t * (2 - t) ** 0.5,
    ),
}


def _vp(alpha_bar):
    return lambda t: math.sqrt(alpha_bar(t)), lambda t: math.sqrt(1 - alpha_bar(t))


def _sigmoid_gamma(t: float, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> float:
    def v(u: float) -> float:
        return 1 / (1 + math.exp(-u))

    return (v(end / tau) - v((t * (end - start) + start) / tau)) / (v(end / tau) - v(start / tau))


def _cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2


#: Every beta schedule, as (SDE, alpha(t), sigma(t)) written out here (Song et al. Eq. 33;
#: Nichol & Dhariwal Eq. 17; Hoogeboom et al. 2022; Chen 2023, Alg. 1).
SCHEDULE_FORMS = {
    "vp_linear": (sd.VPSDE(), *_vp(lambda t: math.exp(-(0.1 * t + 9.95 * t**2)))),
    "subvp_linear": (
        sd.SubVPSDE(),
        lambda t: math.exp(-0.5 * (0.1 * t + 9.95 * t**2)),
        lambda t: 1 - math.exp(-(0.1 * t + 9.95 * t**2)),
    ),
    "vp_cosine": (sd.VPSDE(schedule="cosine"), *_vp(_cosine_alpha_bar)),
    "vp_polynomial": (sd.VPSDE(schedule="polynomial"), *_vp(lambda t: (1 - t**2) ** 2)),
    "vp_polynomial3": (
        sd.VPSDE(schedule="polynomial", power=3.0),
        *_vp(lambda t: (1 - t**3) ** 2),
    ),
    "vp_sigmoid": (sd.VPSDE(schedule="sigmoid"), *_vp(_sigmoid_gamma)),
    "vp_sigmoid_0_3": (
        sd.VPSDE(schedule="sigmoid", start=0.0, end=3.0, tau=0.7),
        *_vp(lambda t: _sigmoid_gamma(t, 0.0, 3.0, 0.7)),
    ),
    "subvp_sigmoid": (
        sd.SubVPSDE(schedule="sigmoid"),
        lambda t: math.sqrt(_sigmoid_gamma(t)),
        lambda t: 1 - _sigmoid_gamma(t),
    ),
}
FD_H = 1e-5  # central differences: truncation ~h^2 |f'''|, round-off ~1e-16 / h, both < 1e-8


def finite_difference_f_g2(alpha, sigma, t: float) -> tuple[float, float]:
    """f = d log alpha/dt, g^2 = d sigma^2/dt - 2 f sigma^2 by 4th-order central differences."""

    def d(fn):
        h = FD_H
        return (-fn(t + 2 * h) + 8 * fn(t + h) - 8 * fn(t - h) + fn(t - 2 * h)) / (12 * h)

    f = d(lambda s: math.log(alpha(s)))
    return f, d(lambda s: sigma(s) ** 2) - 2 * f * sigma(t) ** 2


@pytest.mark.parametrize("name", list(CLOSED_FORMS) + list(SCHEDULE_FORMS))
def test_f_and_g2_match_finite_differences_of_alpha_and_sigma(name):
    sde, alpha, sigma = {**CLOSED_FORMS, **SCHEDULE_FORMS}[name]
    ts = [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, sde.T - 0.01]
    f, g2 = sde.f(torch.tensor(ts, dtype=F64)), sde.g2(torch.tensor(ts, dtype=F64))
    for i, t in enumerate(ts):
        f_fd, g2_fd = finite_difference_f_g2(alpha, sigma, t)
        assert abs(float(f[i]) - f_fd) <= 1e-6 * abs(f_fd), (t, float(f[i]), f_fd)
        assert abs(float(g2[i]) - g2_fd) <= 1e-6 * abs(g2_fd), (t, float(g2[i]), g2_fd)


def test_rectified_flow_closed_forms_and_endpoints():
    sde = sd.RectifiedFlow(T=1.0)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
    c = sde.coeffs(t)
    assert_close(c.alpha, 1 - t, rtol=0, atol=0)
    assert_close(c.sigma, t, rtol=0, atol=0)
    assert_close(c.f[:3], -1 / (1 - t[:3]), rtol=1e-15, atol=0)
    assert_close(c.g2[:3], 2 * t[:3] / (1 - t[:3]), rtol=1e-15, atol=0)
    # The ends: lambda = +inf at t = 0 (sigma = 0) and -inf at t = 1 (alpha = 0), and back.
    assert c.log_snr[0] == math.inf and c.log_snr[-1] == -math.inf and c.f[-1] == -math.inf
    assert_close(sde.t_from_log_snr(c.log_snr), t, rtol=0, atol=1e-16)
    assert sde.prior_std == 1.0 and sd.RectifiedFlow().prior_std == sd.RectifiedFlow().T == 0.999


@pytest.mark.parametrize("name", list(CLOSED_FORMS))
def test_t_from_log_snr_inverts_log_snr(name):
    sde = CLOSED_FORMS[name][0]
    t = torch.linspace(0.0, sde.T, 101, dtype=F64)
    assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-13)
    ends = sde.t_from_log_snr(torch.tensor([math.inf, -math.inf], dtype=F64))
    assert ends.tolist() == [0.0, sde.T if name != "rf" else 1.0]


def test_gaussian_path_of_the_straight_line_equals_rectified_flow():
    rf, path = sd.RectifiedFlow(), sd.GaussianPath(lambda t: 1 - t, lambda t: t, T=0.999)
    t = torch.linspace(0.0, 0.999, 50, dtype=F64)
    a, b = rf.coeffs(t), path.coeffs(t)
    for field in ("log_alpha", "log_sigma", "f", "g2"):
        assert_close(getattr(b, field), getattr(a, field), rtol=1e-13, atol=1e-13)
    assert path.prior_std == rf.prior_std


def test_gaussian_path_of_vp_functions_equals_vpsde():
    # alpha = exp(-B/2), sigma = sqrt(1 - exp(-B)) with Song et al.'s linear beta (Eq. 33).
    vp = sd.VPSDE()

    def big_b(t):
        return 0.1 * t + 0.5 * 19.9 * t**2

    path = sd.GaussianPath(
        lambda t: torch.exp(-0.5 * big_b(t)), lambda t: torch.sqrt(-torch.expm1(-big_b(t)))
    )
    t = torch.linspace(1e-3, 1.0, 50, dtype=F64)
    assert_close(path.f(t), vp.f(t), rtol=1e-12, atol=0)
    assert_close(path.g2(t), vp.g2(t), rtol=1e-12, atol=0)
    lam = vp.log_snr(t)
    assert_close(path.t_from_log_snr(lam), vp.t_from_log_snr(lam), rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "alpha_fn, sigma_fn, message",
    [
        (lambda t: 1 + 0 * t, lambda t: 1 - t / 2, r"g\^2 .* < 0 .* at t = 0.00099"),
        # sigma rises, then falls after t = 0.5: g^2 < 0 from there on.
        (lambda t: 1 - 0.5 * t, lambda t: torch.sin(math.pi * t), r"g\^2 .* < 0 .* at t = 0.5"),
        (lambda t: -t, lambda t: t, r"alpha must be > 0"),
        (lambda t: 1 - t, lambda t: t - 0.5, r"sigma must be >= 0 at 0"),
        (lambda t: 1.0, lambda t: t, r"map a float64 tensor"),
    ],
)
def test_gaussian_path_rejects_bad_paths_naming_where(alpha_fn, sigma_fn, message):
    with pytest.raises(ValueError, match=message):
        sd.GaussianPath(alpha_fn, sigma_fn, T=0.99)


def test_gaussian_path_has_no_config_but_rectified_flow_round_trips():
    with pytest.raises(ValueError, match="no config"):
        CLOSED_FORMS["path_cos"][0].config()
    for sde in (sd.RectifiedFlow(), sd.RectifiedFlow(T=0.99), sd.RectifiedFlow(T=1.0)):
        rebuilt = sd.sde.sde_from_config(sde.config())
        assert type(rebuilt) is sd.RectifiedFlow and rebuilt.T == sde.T
    with pytest.raises(ValueError, match="T must be"):
        sd.RectifiedFlow(T=1.5)


# ---------------------------------------------------------------------------------------------
# exact_velocity

MIX = sd.GaussianMixture(
    [[-2.0, 0.5], [2.0, 1.0], [0.0, -1.0]],
    stds=[[0.3, 0.2], [0.5, 0.1], [1.0, 1.0]],
    weights=[0.2, 0.3, 0.5],
).to(dtype=F64)


@pytest.mark.parametrize(
    "sde",
    [sd.RectifiedFlow(), sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), CLOSED_FORMS["path_poly"][0]],
    ids=["rf", "vp", "subvp", "ve", "path_poly"],
)
def test_exact_velocity_is_the_pf_ode_drift_of_the_exact_score(sde):
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(200, 2, generator=g, dtype=F64)
    t = torch.cat([torch.tensor([0.0, sde.T], dtype=F64), sde.T * torch.rand(198, generator=g)])
    t = t.to(F64)
    u = sd.exact_velocity(sde, MIX)(x, t)
    drift = sde.reverse_drift(x, t, sd.exact_score(sde, MIX)(x, t), 0.5)
    assert_close(u, drift, rtol=1e-10, atol=1e-10)


def test_rectified_flow_velocity_of_a_gaussian_is_eps_hat_minus_x0_hat():
    # One Gaussian N(m, s^2) in closed form: x0_hat = m + (1-t) s^2 (x - (1-t) m) / v,
    # v = (1-t)^2 s^2 + t^2, eps_hat = t (x - (1-t) m) / v, u = eps_hat - x0_hat (Liu et al. Eq. 2).
    m, s = 1.5, 0.4
    data = sd.GaussianMixture(torch.tensor([[m]], dtype=F64), torch.tensor(s, dtype=F64))
    sde = sd.RectifiedFlow()
    x = torch.linspace(-3, 3, 13, dtype=F64)[:, None]
    for t in (0.1, 0.5, 0.9):
        v = (1 - t) ** 2 * s**2 + t**2
        expected = t * (x - (1 - t) * m) / v - (m + (1 - t) * s**2 * (x - (1 - t) * m) / v)
        assert_close(sd.exact_velocity(sde, data)(x, t), expected, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# Sampling: every solver, the endpoint, the noise floor

N_MMD = 4000
MMD_BANDWIDTH = 1.6


def mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    return mmd2(x, y, bandwidth=MMD_BANDWIDTH)


def score_from_velocity(sde: sd.SDE, velocity):
    """score = 2 (f x - u) / g^2: the PF-ODE velocity read back as a score (t > 0)."""

    def score_fn(x, t):
        tt = t.to(F64)
        f, g2 = sde.f(tt)[:, None].to(x.dtype), sde.g2(tt)[:, None].to(x.dtype)
        return 2 * (f * x - velocity(x, t)) / g2

    return score_fn


def rf_reference(sde: sd.SDE, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    alpha, sigma = sde.marginal(torch.tensor(sde.sampling_eps, dtype=F64))

    def draw() -> torch.Tensor:
        x0 = RING.sample(n, generator=g)
        return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)

    return draw


@pytest.mark.parametrize("solver", sd.SOLVERS)
def test_every_solver_runs_rectified_flow_or_refuses_clearly(solver):
    sde = sd.RectifiedFlow()
    score = sd.exact_score(sde, RING)
    steps = {"steps": 8} if sd.make_solver(solver).nfe_per_step is not None else {}
    if solver == "ancestral":  # no discrete chain, as for sub-VP
        with pytest.raises(ValueError, match="discrete chain"):
            sd.sample(sde, score, (64, 2), solver, **steps)
        return
    res = sd.sample(
        sde, score, (64, 2), solver, generator=torch.Generator().manual_seed(0), **steps
    )
    assert bool(torch.isfinite(res.samples).all())
    # From T = 1 exactly no score-based step exists: a clear error, never NaN.
    with pytest.raises(ValueError, match="alpha_t = 0"):
        sd.sample(sd.RectifiedFlow(T=1.0), score, (64, 2), solver, **steps)


def test_sampling_from_t_1_on_an_explicit_grid_below_it_works():
    sde = sd.RectifiedFlow(T=1.0)
    grid = torch.linspace(0.999, 1e-3, 11, dtype=F64)
    res = sd.sample(sde, sd.exact_score(sde, RING), (16, 2), "ode_heun", time_grid=grid)
    assert bool(torch.isfinite(res.samples).all())
    with pytest.raises(ValueError, match="alpha_t = 0"):
        sd.make_time_grid(sde, 10)
    with pytest.raises(ValueError, match="alpha_t = 0"):
        sd.log_likelihood(sde, sd.exact_score(sde, RING), torch.zeros(2, 2))


@pytest.mark.parametrize("solver, steps", [("dpm_solver", 100), ("ode_rk45", None)])
def test_rectified_flow_with_the_exact_velocity_reaches_the_noise_floor(solver, steps):
    sde = sd.RectifiedFlow()
    draw = rf_reference(sde, N_MMD, seed=1234)
    _, floor = noise_floor(draw, mmd, n_pairs=8)
    reference = draw()
    score = score_from_velocity(sde, sd.exact_velocity(sde, RING))
    res = sd.sample(
        sde,
        score,
        (N_MMD, 2),
        solver,
        steps=steps,
        dtype=torch.float32,
        generator=torch.Generator().manual_seed(7),
    )
    value = mmd(res.samples, reference)
    assert value <= 3 * floor, (value / floor, value, floor)


def test_rectified_flow_likelihood_of_a_gaussian_is_exact():
    # Centred data N(0, s^2): p_T = N(0, T^2 + (1-T)^2 s^2) and the prior N(0, T^2) differ by
    # (1-T)^2 s^2 only; with the exact log p_T as the prior the integration error is all that is
    # left (design.md), so log p_eps matches the closed form.
    s, sde = 0.7, sd.RectifiedFlow()
    data = sd.GaussianMixture([[0.0, 0.0]], stds=s).to(dtype=F64)
    x = torch.tensor([[0.3, -0.5], [1.0, 0.2]], dtype=F64)
    log_p = sd.exact_log_prob(sde, data)
    out = sd.log_likelihood(
        sde,
        sd.exact_score(sde, data),
        x,
        eps=1e-3,
        rtol=1e-9,
        atol=1e-9,
        prior_logp=lambda z: log_p(z, sde.T),
    )
    assert_close(out.logp, log_p(x, 1e-3), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "sde",
    [
        sd.RectifiedFlow(),
        sd.RectifiedFlow(T=1.0),
        sd.VPSDE(schedule="polynomial", power=3.0),
        sd.VPSDE(schedule="sigmoid", start=0.0, end=3.0, tau=0.7),
        sd.SubVPSDE(schedule="sigmoid"),
        sd.VPSDE(schedule="cosine"),
    ],
    ids=["rf", "rf_T1", "vp_poly3", "vp_sigmoid", "subvp_sigmoid", "vp_cosine"],
)
def test_new_sdes_round_trip_through_a_checkpoint(tmp_path, sde):
    # load_model rebuilds the SDE with sde_from_config from the checkpoint's JSON header.
    save_checkpoint(tmp_path / "ck", {"w": torch.zeros(1)}, {"sde": sde.config()})
    _, meta = load_checkpoint(tmp_path / "ck")
    rebuilt = sd.sde.sde_from_config(meta["sde"])
    assert type(rebuilt) is type(sde) and rebuilt.config() == sde.config()
    t = torch.linspace(0.0, sde.T, 17, dtype=F64)
    assert torch.equal(rebuilt.log_snr(t), sde.log_snr(t))
    assert torch.equal(rebuilt.g2(t[:-1]), sde.g2(t[:-1]))


def test_ddim_on_the_straight_path_is_euler_on_the_velocity():
    # x_1 = alpha_1 x0_hat + sigma_1 eps_hat (DDIM) = x + (t_1 - t_0)(eps_hat - x0_hat) (Euler on
    # u = eps_hat - x0_hat) when alpha + sigma = 1: two independent step rules, one answer.
    sde = sd.RectifiedFlow()
    score = sd.exact_score(sde, RING)
    x_T = sde.prior_sample((256, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    grid = torch.linspace(sde.T, 1e-3, 13, dtype=F64)
    ddim = sd.sample(sde, score, (256, 2), "ddim", time_grid=grid, x_T=x_T).samples
    euler = sd.sample(sde, score, (256, 2), "ode_euler", time_grid=grid, x_T=x_T).samples
    assert_close(ddim, euler, rtol=1e-10, atol=1e-10)
