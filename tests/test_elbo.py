"""The variational view (scoresde/elbo.py) against closed forms and exact log-densities.

Truths used: torch.distributions' Gaussian KL; the DDPM chain's algebra (composition of one-step
kernels, Bayes' rule for the posterior, Ho et al.'s Eqs. 11-12); and, for the bounds, the exact
log-density of a Gaussian mixture diffused by the SDE (``sd.exact_log_prob``), with its exact
score. Statistical checks use standard errors from fixed seeds (3 SE).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import scoresde as sd
from scoresde.elbo import discretized_gaussian_log_likelihood

F64 = torch.float64


def centred_mixture(d: int = 8, seed: int = 0) -> sd.GaussianMixture:
    """3 anisotropic components with the weighted mean of the means at 0 (a centred mixture)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    means = torch.randn(3, d, generator=g, dtype=F64)
    means = means - (weights[:, None] * means).sum(0)
    stds = 0.3 + 0.4 * torch.rand(3, d, generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, weights)


MIX8 = centred_mixture(8)


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std() / math.sqrt(x.numel()))


# -- Gaussian KL ----------------------------------------------------------------------------------
def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, lv1, m2, lv2 = (2 * torch.randn(1000, generator=g, dtype=F64) for _ in range(4))
    p = torch.distributions.Normal(m1, torch.exp(0.5 * lv1))
    q = torch.distributions.Normal(m2, torch.exp(0.5 * lv2))
    assert_close(
        sd.normal_kl(m1, lv1, m2, lv2),
        torch.distributions.kl_divergence(p, q),
        rtol=1e-12,
        atol=1e-12,
    )
    # Broadcasting with numbers (a standard-normal prior), and KL(p || p) = 0.
    assert_close(
        sd.normal_kl(m1, lv1, 0.0, 0.0),
        torch.distributions.kl_divergence(p, torch.distributions.Normal(0.0, 1.0)),
        rtol=1e-12,
        atol=1e-12,
    )
    assert_close(sd.normal_kl(m1, lv1, m1, lv1), torch.zeros_like(m1), rtol=0, atol=0)
    with pytest.raises(TypeError):
        sd.normal_kl(0.0, 0.0, 1.0, 0.0)


# -- the DDPM chain: the seed's exercises --------------------------------------------------------
def test_closed_form_marginal_by_induction():
    # q(x_i | x_{i-1}) = N(sqrt(1 - beta_i) x_{i-1}, beta_i): composing the kernels gives
    # q(x_i | x_0) = N(m_i x_0, v_i) with m_i = sqrt(1 - beta_i) m_{i-1},
    # v_i = (1 - beta_i) v_{i-1} + beta_i, which must be sqrt(abar_i) and 1 - abar_i (Ho Eq. 4),
    # and the continuous marginal of VPSDE at discrete_times.
    sde, n = sd.VPSDE(), 1000
    betas = sde.discrete_betas(n)
    m, v = torch.ones((), dtype=F64), torch.zeros((), dtype=F64)
    ms, vs = [], []
    for beta in betas:
        m, v = torch.sqrt(1 - beta) * m, (1 - beta) * v + beta
        ms.append(m)
        vs.append(v)
    abar = torch.cumprod(1 - betas, 0)
    assert_close(torch.stack(ms), abar.sqrt(), rtol=1e-12, atol=0)
    assert_close(torch.stack(vs), 1 - abar, rtol=1e-12, atol=0)
    alpha, sigma = sd.VPSDE(T=2.0).marginal(sde.discrete_times(n)[1:])
    assert_close(alpha, abar.sqrt(), rtol=1e-12, atol=0)
    assert_close(sigma**2, 1 - abar, rtol=1e-10, atol=0)


def test_linear_schedule_alpha_bar_and_snr_at_1000_steps():
    # Ho et al.'s betas linspace(1e-4, 0.02, 1000): abar_1000 = 4.04e-5 (so x_1000 keeps
    # sqrt(abar) = 0.64% of x_0), SNR_1 = (1 - beta_1) / beta_1 = 9999.
    sde = sd.VPSDE()
    abar = torch.cumprod(1 - sde.discrete_betas(1000), 0)
    assert abs(float(abar[-1]) - 4.04e-5) < 5e-8
    snr = abar / (1 - abar)
    assert abs(float(snr[0]) - 9999.0) < 1e-6
    assert abs(float(snr[-1]) - 4.04e-5) < 5e-8
    assert bool((snr[1:] < snr[:-1]).all())  # SNR falls monotonically along the chain
    # sde.log_snr is half the log-SNR, at the chain's times.
    lam = sd.VPSDE(T=2.0).log_snr(sde.discrete_times(1000)[1:])
    assert_close(2 * lam, snr.log(), rtol=0, atol=1e-9)


def test_posterior_variance_and_mean_from_bayes_rule():
    # q(x_{i-1} | x_i, x_0) ∝ q(x_i | x_{i-1}) q(x_{i-1} | x_0): precisions add,
    # 1/var = (1 - beta_i)/beta_i + 1/(1 - abar_{i-1}), and the mean is var times the sum of the
    # precision-weighted means (Bishop 2006, Eq. 2.116).
    sde, n = sd.VPSDE(), 200
    betas = sde.discrete_betas(n)
    abar = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - betas, 0)])
    g = torch.Generator().manual_seed(1)
    i = torch.arange(2, n + 1)
    x0, x_i = (torch.randn(n - 1, 3, generator=g, dtype=F64) for _ in range(2))
    mean, var = sd.ddpm_posterior(sde, n, i, x0, x_i)
    b, ab_prev = betas[i - 1], abar[i - 1]
    var_bayes = 1 / ((1 - b) / b + 1 / (1 - ab_prev))
    mean_bayes = var_bayes[:, None] * (
        (1 - b).sqrt()[:, None] * x_i / b[:, None]
        + ab_prev.sqrt()[:, None] * x0 / (1 - ab_prev)[:, None]
    )
    assert_close(var, var_bayes, rtol=1e-10, atol=0)
    assert_close(mean, mean_bayes, rtol=1e-10, atol=1e-12)
    # i = 1: abar_0 = 1, so the posterior is the point mass at x_0.
    mean1, var1 = sd.ddpm_posterior(sde, n, 1, x0, x_i)
    assert_close(mean1, x0, rtol=1e-12, atol=1e-14) and float(var1) == 0.0


def test_eps_and_x0_prediction_give_the_same_mu():
    # Ho et al. Eq. 11 (noise prediction) equals the posterior mean (Eq. 7) at
    # x0_hat = (x_i - sqrt(1 - abar_i) eps) / sqrt(abar_i) (Eq. 15 read as a prediction of x_0).
    sde, n = sd.VPSDE(), 1000
    betas = sde.discrete_betas(n)
    abar = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - betas, 0)])
    g = torch.Generator().manual_seed(2)
    i = torch.randint(2, n + 1, (500,), generator=g)
    x_i, eps = (torch.randn(500, 4, generator=g, dtype=F64) for _ in range(2))
    b, ab = betas[i - 1][:, None], abar[i][:, None]
    mu_eps = (x_i - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt()
    x0_hat = (x_i - (1 - ab).sqrt() * eps) / ab.sqrt()
    mu_x0, _ = sd.ddpm_posterior(sde, n, i, x0_hat, x_i)
    assert_close(mu_x0, mu_eps, rtol=1e-9, atol=1e-9)


def test_ddpm_posterior_is_the_sdes_gaussian_conditioning():
    # docs/theory.md §3: for s = t_{i-1} < t = t_i, mean = a sigma_s^2/sigma_t^2 x_t
    # + alpha_s v / sigma_t^2 x_0 and var = sigma_s^2 v / sigma_t^2, with (a, v) = transition(s, t).
    n = 100
    sde = sd.VPSDE(T=float(sd.VPSDE().discrete_times(n)[-1]))
    ts = sde.discrete_times(n)
    g = torch.Generator().manual_seed(3)
    i = torch.arange(2, n + 1)
    x0, x_i = (torch.randn(n - 1, 2, generator=g, dtype=F64) for _ in range(2))
    a, v = sde.transition(ts[i - 1], ts[i])
    (alpha_s, sigma_s), sigma_t = sde.marginal(ts[i - 1]), sde.marginal(ts[i])[1]
    mean, var = sd.ddpm_posterior(sde, n, i, x0, x_i)
    expected = (a * sigma_s**2 / sigma_t**2)[:, None] * x_i + (alpha_s * v / sigma_t**2)[
        :, None
    ] * x0
    assert_close(mean, expected, rtol=1e-9, atol=1e-12)
    assert_close(var, sigma_s**2 * v / sigma_t**2, rtol=1e-9, atol=0)


# -- the discretised decoder ---------------------------------------------------------------------
@pytest.mark.parametrize("levels", [17, 256])
def test_discretized_decoder_sums_to_one_over_the_levels(levels):
    grid = torch.linspace(-1, 1, levels, dtype=F64)
    g = torch.Generator().manual_seed(4)
    mean = 1.5 * torch.randn(6, generator=g, dtype=F64)
    std = torch.tensor([1e-3, 0.01, 0.1, 0.5, 2.0, 0.05], dtype=F64)
    logp = discretized_gaussian_log_likelihood(grid[:, None], mean[None], std[None], levels)
    assert_close(logp.exp().sum(0), torch.ones(6, dtype=F64), rtol=0, atol=1e-12)


def test_discretized_decoder_is_density_times_bin_width_for_fine_bins():
    levels = 2**16 + 1
    grid = torch.linspace(-1, 1, levels, dtype=F64)[1:-1:997]  # interior levels
    mean, std = torch.tensor(0.2, dtype=F64), torch.tensor(0.3, dtype=F64)
    logp = discretized_gaussian_log_likelihood(grid, mean, std, levels)
    density = torch.distributions.Normal(mean, std).log_prob(grid)
    assert_close(logp, density + math.log(2 / (levels - 1)), rtol=0, atol=1e-8)


def test_discretized_decoder_far_tails_match_high_precision():
    # 36 std from the mean a difference of CDFs is 1 - 1 = 0 in float64; log_ndtr on the near
    # side keeps it. Reference: mpmath at 400 digits (1 - Phi(36) ~ 1e-284).
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 400
    x = torch.tensor([0.9, -1.0, 1.0, -0.2], dtype=F64)
    mean = torch.tensor([-0.9, 0.8, -0.7, 0.95], dtype=F64)
    std, half = 0.05, 1 / 255
    logp = discretized_gaussian_log_likelihood(x, mean, std, 256)
    for k in range(4):
        xk, mk = float(x[k]), float(mean[k])
        lo = -mpmath.inf if xk == -1 else (mpmath.mpf(xk) - half - mk) / std
        hi = mpmath.inf if xk == 1 else (mpmath.mpf(xk) + half - mk) / std
        ref = mpmath.log(mpmath.ncdf(hi) - mpmath.ncdf(lo))
        assert abs(float(logp[k]) - float(ref)) < 1e-9 * abs(float(ref)), (k, logp[k], ref)


# -- the continuous-time ELBO ---------------------------------------------------------------------
def _prior_mismatch(sde, mix, n: int, seed: int) -> tuple[float, float]:
    """KL(p_T || pi) = E_{x_T ~ p_T}[log p_T(x_T) - log pi(x_T)] by Monte Carlo: (mean, SE)."""
    g = torch.Generator().manual_seed(seed)
    x_T = sde.marginal_prob(mix.sample(n, generator=g), sde.T)[0]
    x_T = x_T + sde.marginal(torch.tensor(sde.T, dtype=F64))[1] * torch.randn(
        x_T.shape, generator=g, dtype=F64
    )
    return mean_se(sd.exact_log_prob(sde, mix)(x_T, sde.T) - sde.prior_logp(x_T))


def _end_point(sde, mix, eps: float, n: int, seed: int) -> tuple[float, float]:
    """E_{x_0}[log p_0(x_0) - d log alpha_eps - E_q log p_eps(x_eps)] = H(p_eps) - H(alpha x_0)
    >= 0: what the Gaussian decoder at eps costs even with the exact score and prior."""
    g = torch.Generator().manual_seed(seed)
    x0 = mix.sample(n, generator=g)
    alpha, sigma = sde.marginal(torch.tensor(eps, dtype=F64))
    y = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)
    d = x0.shape[1]
    return mean_se(mix.log_prob(x0) - d * alpha.log() - sd.exact_log_prob(sde, mix)(y, eps))


def test_continuous_elbo_bounds_the_exact_log_density_8d():
    # With the exact score, E[log p_0(x_0) - elbo(x_0)] over data x_0 ~ p_0 is exactly
    # KL(p_T || pi) (the prior mismatch) + H(p_eps) - H(alpha_eps x_0) (the end point), both >= 0:
    # the variational gap of the path vanishes (see continuous_elbo). So the mean gap must be
    # >= -3 SE and <= prior mismatch + end point + 3 SE (the last two estimated exactly, by MC
    # from the exact log-densities, with their SEs in the combined SE).
    sde, n = sd.VPSDE(), 1000
    x0 = MIX8.sample(n, generator=torch.Generator().manual_seed(10))
    res = sd.continuous_elbo(
        sde, sd.exact_score(sde, MIX8), x0, n_times=32, generator=torch.Generator().manual_seed(11)
    )
    gap, se = mean_se(MIX8.log_prob(x0) - res.elbo)
    mismatch, se_mm = _prior_mismatch(sde, MIX8, 20000, 12)
    end, se_end = _end_point(sde, MIX8, res.eps, 20000, 13)
    # Both are tiny for a centred mixture under VP (MC estimates of quantities >= 0).
    assert -3 * se_mm <= mismatch < 1e-3 and -3 * se_end <= end < 1e-3, (mismatch, end)
    assert gap >= -3 * se, (gap, se)
    assert gap <= mismatch + end + 3 * math.sqrt(se**2 + se_mm**2 + se_end**2), (gap, se, mismatch)
    assert se < 0.1  # the control variates keep the test sharp (0.06 here)
    # The per-sample stderr describes the scatter of elbo around its conditional mean.
    assert float(res.stderr.mean()) < 3.0


def _per_point_theory(sde, mix, x0: torch.Tensor, eps: float, n: int, seed: int):
    """elbo(x_0) with the exact score: d log alpha_eps + E_q log p_eps(x_eps)
    - E_{q(x_T | x_0)}[log p_T(x_T) - log pi(x_T)], per point, by MC: (mean, SE)."""
    g = torch.Generator().manual_seed(seed)
    logp = sd.exact_log_prob(sde, mix)
    k, d = x0.shape
    xs = x0.repeat_interleave(n, 0)
    out = torch.zeros(k * n, dtype=F64)
    for t, sign in ((eps, 1.0), (sde.T, -1.0)):
        alpha, sigma = sde.marginal(torch.tensor(t, dtype=F64))
        y = alpha * xs + sigma * torch.randn(xs.shape, generator=g, dtype=F64)
        term = logp(y, t) - (sde.prior_logp(y) if t == sde.T else 0.0)
        out = out + sign * term
    out = out.reshape(k, n) + d * sde.marginal(torch.tensor(eps, dtype=F64))[0].log()
    return out.mean(1), out.std(1) / math.sqrt(n)


@pytest.mark.parametrize(
    "sde",
    [sd.VPSDE(T=0.2), sd.SubVPSDE(T=0.2), sd.VESDE(sigma_max=1.0)],
    ids=["vp", "subvp", "ve"],
)
def test_continuous_elbo_is_tight_per_point_up_to_prior_and_end_point(sde):
    # A short horizon (or small sigma_max) leaves a large prior mismatch (nats), so this checks
    # every term of the bound per data point, on each SDE: with the exact score the estimate
    # must match d log alpha_eps + E log p_eps(x_eps) - E[log p_T - log pi](x_T) within 3 SE.
    mix = centred_mixture(3, seed=5)
    x0 = mix.sample(3, generator=torch.Generator().manual_seed(20))
    reps = 300
    res = sd.continuous_elbo(
        sde,
        sd.exact_score(sde, mix),
        x0.repeat_interleave(reps, 0),
        n_times=16,
        generator=torch.Generator().manual_seed(21),
    )
    elbo = res.elbo.reshape(3, reps)
    est, se = elbo.mean(1), elbo.std(1) / math.sqrt(reps)
    theory, se_th = _per_point_theory(sde, mix, x0, res.eps, 20000, 22)
    prior_gap = float((mix.log_prob(x0) - theory).abs().max())
    assert prior_gap > 0.1  # the prior term matters here
    assert ((est - theory).abs() <= 3 * (se**2 + se_th**2).sqrt()).all(), (est, theory, se)
    # Both samplings of t estimate the same bound.
    uni = sd.continuous_elbo(
        sde,
        sd.exact_score(sde, mix),
        x0.repeat_interleave(reps, 0),
        n_times=16,
        importance=False,
        generator=torch.Generator().manual_seed(23),
    )
    e2 = uni.elbo.reshape(3, reps)
    se2 = e2.std(1) / math.sqrt(reps)
    assert ((e2.mean(1) - theory).abs() <= 3 * (se2**2 + se_th**2).sqrt()).all()


# -- the DDPM variational bound --------------------------------------------------------------------
def test_ddpm_vlb_bounds_the_exact_log_density_and_its_gap_shrinks():
    # E[nll] >= E[-log p_0] for any model (KL(p_0 || p_model) >= 0), so the mean gap
    # nll + log p_0 must be >= -3 SE; with the exact score it falls as the chain gets finer.
    # beta's gap falls by ~0.16 nats from N = 100 to 1000 (SE 0.035 at 1200 points); the
    # posterior variance's by ~6.5 nats, so fewer points do.
    sde = sd.VPSDE()
    score = sd.exact_score(sde, MIX8)
    x0 = MIX8.sample(1200, generator=torch.Generator().manual_seed(30))
    gaps = {}
    for variance, n in (("beta", 1200), ("posterior", 300)):
        logp = MIX8.log_prob(x0[:n])
        for N in (100, 1000):
            res = sd.ddpm_vlb(
                sde,
                score,
                x0[:n],
                N=N,
                variance=variance,
                generator=torch.Generator().manual_seed(31),
            )
            assert_close(res.nll, res.prior + res.diffusion + res.decoder)
            assert_close(res.terms.sum(), res.nll.mean(), rtol=1e-10, atol=0)
            gaps[variance, N] = res.nll + logp
        gap, se = mean_se(gaps[variance, 1000])
        assert gap >= -3 * se, (variance, gap, se)
        shrink, se_shrink = mean_se(gaps[variance, 100] - gaps[variance, 1000])
        assert shrink > 3 * se_shrink, (variance, shrink, se_shrink)
    # With the exact score, beta is the better reverse variance at high SNR (Ho et al. Sec. 3.2).
    assert float(gaps["beta", 1000].mean()) < float(gaps["posterior", 1000].mean())


def test_ddpm_vlb_discretized_decoder_gives_bits_per_dim():
    # 8-bit data on a 2-D mixture: the discretised bound is a bound on -log P of discrete data, so
    # bits/dim must be >= the entropy of the exact discretised mixture (mean over data, 3 SE).
    mix = sd.GaussianMixture(torch.tensor([[-0.5, 0.2], [0.4, -0.3]], dtype=F64), 0.15)
    sde, levels = sd.VPSDE(), 256
    x = mix.sample(400, generator=torch.Generator().manual_seed(40)).clamp(-1, 1)
    x = torch.round((x + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    res = sd.ddpm_vlb(
        sd.VPSDE(),
        sd.exact_score(sde, mix),
        x,
        N=1000,
        decoder="discretized",
        variance="beta",
        generator=torch.Generator().manual_seed(41),
    )
    # P(x) of the quantised mixture ~ p(x) * bin width (bins of 2/255 are small against 0.15).
    exact_bits = -(mix.log_prob(x) + 2 * math.log(2 / (levels - 1))) / (2 * math.log(2))
    gap, se = mean_se(res.bits_per_dim - exact_bits)
    assert gap >= -3 * se and gap < 0.2, (gap, se)
    assert_close(res.bits_per_dim, res.nll / (2 * math.log(2)))


# -- arguments, dtypes, reproducibility -------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    x = MIX8.sample(4, generator=torch.Generator().manual_seed(50))
    ve = sd.VESDE()
    score = sd.exact_score(ve, MIX8)
    with pytest.raises(ValueError, match="DDPM"):
        sd.ddpm_vlb(ve, score, x)
    with pytest.raises(ValueError, match="DDPM"):
        sd.ddpm_vlb(sd.SubVPSDE(), score, x)
    vp = sd.VPSDE()
    with pytest.raises(ValueError, match="variance"):
        sd.ddpm_vlb(vp, score, x, variance="learned")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        sd.ddpm_vlb(vp, score, 3 * torch.ones(2, 8, dtype=F64), decoder="discretized")
    with pytest.raises(ValueError, match="n_times"):
        sd.continuous_elbo(vp, score, x, n_times=1)
    with pytest.raises(ValueError, match="eps"):
        sd.continuous_elbo(vp, score, x, eps=1.0)
    with pytest.raises(ValueError, match="i must"):
        sd.ddpm_posterior(vp, 10, 11, x, x)
    with pytest.raises(ValueError, match="i must"):
        sd.ddpm_posterior(vp, 10, torch.zeros(4, dtype=torch.long), x, x)


def test_reproducible_and_float32():
    sde = sd.VPSDE()
    score = sd.exact_score(sde, MIX8)
    x = MIX8.sample(8, generator=torch.Generator().manual_seed(60))
    a = sd.continuous_elbo(sde, score, x, n_times=4, generator=torch.Generator().manual_seed(1))
    b = sd.continuous_elbo(sde, score, x, n_times=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.elbo, b.elbo)
    c = sd.ddpm_vlb(sde, score, x, N=30, generator=torch.Generator().manual_seed(1))
    d = sd.ddpm_vlb(sde, score, x, N=30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c.nll, d.nll) and c.terms.shape == (31,) and c.times.shape == (31,)
    x32 = x.float()
    e = sd.continuous_elbo(sde, score, x32, n_times=4, generator=torch.Generator().manual_seed(1))
    f = sd.ddpm_vlb(sde, score, x32, N=30, generator=torch.Generator().manual_seed(1))
    assert e.elbo.dtype == torch.float32 and f.nll.dtype == torch.float32
    assert_close(e.elbo.double(), a.elbo, rtol=1e-4, atol=1e-3)
