"""PF-ODE log-likelihood against the exact log-density of diffused Gaussian mixtures."""

import math

import pytest
import torch
from conftest import SONG_SDES as SDES

import scoresde as sd


def _mixture(d: int, seed: int = 0) -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(3, d, generator=g, dtype=torch.float64)
    stds = 0.3 + 0.5 * torch.rand(3, d, generator=g, dtype=torch.float64)
    return sd.GaussianMixture(means, stds, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))


def _integration_error(sde, data, x, **kw):
    """Mean |log p_eps - exact| with the exact log p_T as the prior, so only the ODE solve errs."""
    exact = sd.exact_log_prob(sde, data)
    out = sd.log_likelihood(
        sde, sd.exact_score(sde, data), x, prior_logp=lambda z: exact(z, sde.T), **kw
    )
    return (out.logp - exact(x, out.eps)).abs().mean().item(), out


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("d, n", [(2, 32), (16, 8)])
def test_exact_divergence_matches_exact_log_density(name, d, n):
    sde, data = SDES[name], _mixture(d)
    x = data.sample(n, generator=torch.Generator().manual_seed(1))
    err_loose, _ = _integration_error(sde, data, x, rtol=1e-3, atol=1e-3)
    err_tight, out = _integration_error(sde, data, x, rtol=1e-5, atol=1e-5)
    assert err_tight <= 1e-2
    assert err_tight < err_loose  # the error shrinks with the tolerance
    assert out.nfe > 0 and out.logp.shape == (n,)
    # logp is prior + delta by construction; the default prior is the SDE's own.
    assert torch.allclose(out.logp, out.prior_logp + out.delta_logp)


def test_prior_mismatch_is_what_remains_with_the_default_prior():
    # With pi instead of p_T the difference to the exact answer is log p_T(x_T) - log pi(x_T).
    sde, data = SDES["ve"], _mixture(2)
    x = data.sample(16, generator=torch.Generator().manual_seed(2))
    exact = sd.exact_log_prob(sde, data)
    out = sd.log_likelihood(sde, sd.exact_score(sde, data), x)
    mismatch = exact(out.x_T, sde.T) - sde.prior_logp(out.x_T)
    torch.testing.assert_close(out.logp - exact(x, out.eps), -mismatch, atol=1e-3, rtol=0)


def test_scipy_and_fixed_step_integrators_agree_with_rk45():
    sde, data = SDES["vp"], _mixture(2)
    x = data.sample(8, generator=torch.Generator().manual_seed(3))
    ref = sd.log_likelihood(sde, sd.exact_score(sde, data), x, rtol=1e-7, atol=1e-7).logp
    sci = sd.log_likelihood(
        sde, sd.exact_score(sde, data), x, integrator="scipy", rtol=1e-6, atol=1e-6
    ).logp
    rk4 = sd.log_likelihood(sde, sd.exact_score(sde, data), x, integrator="rk4", steps=40).logp
    torch.testing.assert_close(sci, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(rk4, ref, atol=1e-3, rtol=0)


def test_hutchinson_is_unbiased():
    # One fixed probe per solve; over many independent solves the mean of the estimates must be
    # within 3 standard errors of the exact-trace result (same x, same tolerance).
    sde, data = SDES["vp"], _mixture(4)
    x = data.sample(1, generator=torch.Generator().manual_seed(4)).expand(200, 4).contiguous()
    score = sd.exact_score(sde, data)
    exact = sd.log_likelihood(sde, score, x[:1], rtol=1e-6, atol=1e-6).logp
    g = torch.Generator().manual_seed(5)
    for probe in ("rademacher", "gaussian"):
        est = sd.log_likelihood(
            sde, score, x, divergence="hutchinson", probe=probe, generator=g, rtol=1e-6, atol=1e-6
        ).logp
        se = est.std() / math.sqrt(est.numel())
        assert est.std() > 0  # probes differ across rows, so the estimates scatter
        assert abs(est.mean() - exact[0]) <= 3 * se, (probe, est.mean(), exact, se)


def test_chunking_does_not_change_the_result():
    sde, data = SDES["subvp"], _mixture(2)
    x = data.sample(10, generator=torch.Generator().manual_seed(6))
    score = sd.exact_score(sde, data)
    whole = sd.log_likelihood(sde, score, x).logp
    chunked = sd.log_likelihood(sde, score, x, chunk_size=3).logp
    torch.testing.assert_close(chunked, whole, atol=1e-10, rtol=0)


def test_float32_input_gives_float32_output():
    sde, data = SDES["vp"], _mixture(2)
    x = data.sample(4, generator=torch.Generator().manual_seed(7)).float()
    out = sd.log_likelihood(sde, sd.exact_score(sde, data), x)
    assert out.logp.dtype == torch.float32 and torch.isfinite(out.logp).all()


def test_bits_per_dim_of_uniform_8bit_data_is_8():
    # Data uniform over 256 levels: the dequantised u is uniform on [0,1]^D, so the exact model on
    # y = 2u - 1 has log p_y = -D log 2, and the discrete data has exactly 8 bits per dimension.
    d = 5
    x = torch.randint(0, 256, (100, d), generator=torch.Generator().manual_seed(8))
    y = sd.dequantize(x, generator=torch.Generator().manual_seed(9))
    assert y.min() >= -1 and y.max() <= 1
    logp_y = torch.full((100,), -d * math.log(2.0), dtype=torch.float64)
    torch.testing.assert_close(sd.bits_per_dim(logp_y, d), torch.full_like(logp_y, 8.0))
    logp_u = torch.zeros(100, dtype=torch.float64)  # the same model on [0, 1]
    torch.testing.assert_close(
        sd.bits_per_dim(logp_u, d, scale="[0,1]"), torch.full_like(logp_u, 8.0)
    )


def test_bits_per_dim_of_a_two_level_distribution():
    # 1-bit data uniform over {0, 1}: 1 bit per dimension with the exact uniform model on [0, 1].
    logp_u = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(
        sd.bits_per_dim(logp_u, 7, n_bits=1, scale="[0,1]"), torch.ones(3, dtype=torch.float64)
    )


def test_bad_input_is_rejected():
    sde, data = SDES["vp"], _mixture(2)
    score = sd.exact_score(sde, data)
    with pytest.raises(ValueError, match="shape"):
        sd.log_likelihood(sde, score, torch.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        sd.log_likelihood(sde, score, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="divergence"):
        sd.log_likelihood(sde, score, torch.zeros(1, 2), divergence="trace")
    with pytest.raises(ValueError, match="eps"):
        sd.log_likelihood(sde, score, torch.zeros(1, 2), eps=0.0)
    with pytest.raises(ValueError, match="steps"):
        sd.log_likelihood(sde, score, torch.zeros(1, 2), integrator="heun")

    def detached(x, t):
        return score(x, t).detach()

    for div in ("exact", "hutchinson"):
        with pytest.raises(ValueError, match="differentiable"):
            sd.log_likelihood(sde, detached, torch.zeros(1, 2, dtype=torch.float64), divergence=div)


@pytest.mark.gpu
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_log_likelihood_on_cuda_equals_the_cpu_result(divergence):
    # Same probes (a CPU generator draws them on the CPU), same tolerance: the two solves differ
    # by round-off amplified at most by the step-size controller.
    sde, data = SDES["vp"], _mixture(16)
    x = data.sample(64, generator=torch.Generator().manual_seed(8))
    out = {}
    for device in ("cpu", "cuda"):
        dev_data = data.to(device=device)
        out[device] = sd.log_likelihood(
            sde,
            sd.exact_score(sde, dev_data),
            x.to(device),
            divergence=divergence,
            generator=torch.Generator().manual_seed(0),
        )
        assert out[device].logp.device.type == device
    torch.testing.assert_close(out["cuda"].logp.cpu(), out["cpu"].logp, atol=1e-6, rtol=0)
