"""The score <-> eps <-> x0 <-> v conversions, Tweedie's formula and the PF-ODE velocity
(scoresde/parameterization.py), against closed forms.

With x_t = alpha x0 + sigma eps (Song et al. 2021, Eq. 29):
    score = -eps / sigma                          (Song et al. 2021, Eq. 7; Ho et al. 2020)
    score = (alpha x0 - x_t) / sigma^2            (Tweedie's formula)
    v     = alpha eps - sigma x0                  (Salimans & Ho 2022, Sec. 4)
For Gaussian data N(m, s^2 I) the pair (x0, x_t) is jointly Gaussian, so the exact score, the
posterior means E[x0 | x_t], E[eps | x_t] and the flow map are closed forms; the expected values
below are written from these formulas directly, not through the module.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SDES_COSINE
from torch import nn
from torch.testing import assert_close

import scoresde as sd
from scoresde.model import ScoreModel
from scoresde.parameterization import (
    PARAMETERIZATIONS,
    prediction_from_score,
    regression_target,
    score_from_prediction,
    tweedie_x0,
    velocity,
    velocity_from_prediction,
)

F64 = torch.float64

SDES = {**SDES_COSINE, "rf": sd.RectifiedFlow()}
SDE_NAMES = list(SDES)


def _times(n: int = 64, T: float = 1.0) -> torch.Tensor:
    """Per-sample times spanning [1e-3, T], both ends included (small sigma and small alpha)."""
    g = torch.Generator().manual_seed(0)
    t = 1e-3 + (T - 1e-3) * torch.rand(n, generator=g, dtype=F64)
    t[0], t[1] = 1e-3, T
    return t


def _draw(n: int, d: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, d, generator=g, dtype=F64)


def _f_g2(sde, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """f(t) and g(t)^2: the velocity conversions need them, the others ignore them."""
    return {"f": sde.f(t), "g2": sde.g2(t)}


def _velocity_closed_form(sde, t, x0, z) -> torch.Tensor:
    """d/dt (alpha_t x0 + sigma_t z) by autograd through the SDE's own log alpha, log sigma:
    alpha' x0 + sigma' z, independent of the module's f, g^2 formula."""
    tt = t.clone().requires_grad_(True)
    alpha, sigma = torch.exp(sde.log_alpha(tt)), torch.exp(sde.log_sigma(tt))
    d_alpha = torch.autograd.grad(alpha.sum(), tt)[0]
    d_sigma = torch.autograd.grad(sigma.sum(), tt)[0]
    return d_alpha.reshape(-1, 1) * x0 + d_sigma.reshape(-1, 1) * z


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over samples of ||a - b|| / ||b||."""
    diff = (a - b).reshape(a.shape[0], -1).norm(dim=1)
    return float((diff / b.reshape(b.shape[0], -1).norm(dim=1)).max())


# --- the identities ----------------------------------------------------------------------------


def test_identities_on_a_hand_computed_example():
    """alpha = 0.6, sigma = 0.8, x0 = 1, eps = 0.5: x_t = 1, score = -0.625, v = -0.5."""
    a, s = torch.tensor(0.6, dtype=F64), torch.tensor(0.8, dtype=F64)
    x0, eps = torch.ones(1, 1, dtype=F64), torch.full((1, 1), 0.5, dtype=F64)
    x = a * x0 + s * eps
    expected = {"eps": 0.5, "score": -0.625, "x0": 1.0, "v": -0.5}
    for p, value in expected.items():
        pred = prediction_from_score(torch.full((1, 1), -0.625, dtype=F64), p, x, a, s)
        assert_close(pred, torch.full((1, 1), value, dtype=F64), rtol=1e-14, atol=1e-14)
        assert_close(regression_target(p, x0, eps, a, s), pred, rtol=1e-14, atol=1e-14)
        score = score_from_prediction(pred, p, x, a, s)
        assert_close(score, torch.full((1, 1), -0.625, dtype=F64), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_score_prediction_round_trip(name, p):
    """score_from_prediction(prediction_from_score(s)) == s at per-sample times, to 1e-10."""
    sde = SDES[name]
    t = _times(T=sde.T)
    alpha, sigma = sde.marginal(t)
    g = torch.Generator().manual_seed(2)
    x = 3 * torch.randn(t.shape[0], 2, 4, generator=g, dtype=F64)  # event dims (2, 4)
    s = torch.randn(t.shape[0], 2, 4, generator=g, dtype=F64) / sigma.reshape(-1, 1, 1)
    fg = _f_g2(sde, t)
    pred = prediction_from_score(s, p, x, alpha, sigma, **fg)
    assert pred.shape == x.shape and pred.dtype == F64
    assert _rel_err(score_from_prediction(pred, p, x, alpha, sigma, **fg), s) <= 1e-10


@pytest.mark.parametrize("name", SDE_NAMES)
def test_regression_targets_match_the_conditional_score(name):
    """regression_target(p, x0, z) == prediction_from_score(-z/sigma, p, x_t) == the closed forms
    eps = z, score = -z/sigma, x0 = x0, v = alpha z - sigma x0, for x_t = alpha x0 + sigma z."""
    sde = SDES[name]
    t = _times(T=sde.T)
    alpha, sigma = sde.marginal(t)
    a, s = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
    x0, z = _draw(t.shape[0])
    x_t = a * x0 + s * z
    closed_form = {"eps": z, "score": -z / s, "x0": x0, "v": a * z - s * x0}
    closed_form["velocity"] = _velocity_closed_form(sde, t, x0, z)
    fg = _f_g2(sde, t)
    for p in PARAMETERIZATIONS:
        target = regression_target(p, x0, z, alpha, sigma, **fg)
        assert _rel_err(target, closed_form[p]) <= 1e-10, p
        from_score = prediction_from_score(-z / s, p, x_t, alpha, sigma, **fg)
        assert _rel_err(from_score, closed_form[p]) <= 1e-10, p
        # and back: every exact target implies the exact conditional score
        score = score_from_prediction(closed_form[p], p, x_t, alpha, sigma, **fg)
        assert _rel_err(score, -z / s) <= 1e-10, p


def test_v_reconstructs_x0_and_eps():
    """Salimans & Ho: with r = alpha^2 + sigma^2, x0 = (alpha x - sigma v)/r, eps = (sigma x +
    alpha v)/r; checked through the x0 and eps predictions implied by the v prediction."""
    sde = SDES["vp"]
    t = _times(T=sde.T)
    alpha, sigma = sde.marginal(t)
    a, s = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
    x0, z = _draw(t.shape[0], seed=3)
    x = a * x0 + s * z
    v = a * z - s * x0
    score = score_from_prediction(v, "v", x, alpha, sigma)
    assert _rel_err(prediction_from_score(score, "x0", x, alpha, sigma), x0) <= 1e-10
    assert _rel_err(prediction_from_score(score, "eps", x, alpha, sigma), z) <= 1e-10


def test_scalar_coefficients_broadcast():
    """0-d alpha and sigma apply to the whole batch, like per-sample ones with equal entries."""
    x0, z = _draw(5)
    a, s = torch.tensor(0.7, dtype=F64), torch.tensor(0.4, dtype=F64)
    f, g2 = torch.tensor(-0.3, dtype=F64), torch.tensor(1.2, dtype=F64)
    for p in PARAMETERIZATIONS:
        scalar = regression_target(p, x0, z, a, s, f=f, g2=g2)
        batched = regression_target(
            p, x0, z, a.expand(5), s.expand(5), f=f.expand(5), g2=g2.expand(5)
        )
        assert_close(scalar, batched, rtol=0, atol=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: score_from_prediction(x, "noise", x, torch.ones(()), torch.ones(())),
        lambda x: prediction_from_score(x, "noise", x, torch.ones(()), torch.ones(())),
        lambda x: regression_target("noise", x, x, torch.ones(()), torch.ones(())),
        lambda x: ScoreModel(nn.Identity(), SDES["vp"], parameterization="noise"),
    ],
    ids=["score_from_prediction", "prediction_from_score", "regression_target", "ScoreModel"],
)
def test_unknown_parameterization_lists_the_options(call):
    with pytest.raises(ValueError, match="noise") as info:
        call(torch.zeros(2, 2))
    for p in PARAMETERIZATIONS:
        assert repr(p) in str(info.value)


# --- Gaussian data: exact score, Tweedie = posterior mean, flow velocity ------------------------

M, S = torch.tensor([0.7, -1.2, 2.0], dtype=F64), 0.6  # data N(M, S^2 I)


def _gaussian_posterior(sde, t: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Closed forms for x_t = alpha x0 + sigma eps with x0 ~ N(M, S^2 I): x_t ~ N(alpha M, V I),
    V = alpha^2 S^2 + sigma^2; Cov(x0, x_t) = alpha S^2, Cov(eps, x_t) = sigma, so
    E[x0 | x] = M + alpha S^2 (x - alpha M) / V and E[eps | x] = sigma (x - alpha M) / V."""
    alpha, sigma = (c.reshape(-1, 1) for c in sde.marginal(t))
    var = alpha**2 * S**2 + sigma**2
    r = x - alpha * M
    x0 = M + alpha * S**2 * r / var
    eps = sigma * r / var
    # E[alpha' x0 + sigma' eps | x] = f x + g^2 E[eps | x] / (2 sigma), as alpha' = f alpha and
    # sigma' = g^2 / (2 sigma) + f sigma
    f, g2 = (c.reshape(-1, 1) for c in (sde.f(t), sde.g2(t)))
    u = f * x + g2 * eps / (2 * sigma)
    return {"score": -r / var, "x0": x0, "eps": eps, "v": alpha * eps - sigma * x0, "velocity": u}


def _samples_of_p_t(sde, t: torch.Tensor, seed: int = 8) -> torch.Tensor:
    x0, z = _draw(t.shape[0], seed=seed)
    alpha, sigma = (c.reshape(-1, 1) for c in sde.marginal(t))
    return alpha * (M + S * x0) + sigma * z


@pytest.mark.parametrize("name", SDE_NAMES)
def test_tweedie_is_the_exact_posterior_mean_of_gaussian_data(name):
    """tweedie_x0(x, exact score) == E[x0 | x_t = x] in closed form, at per-sample times."""
    sde = SDES[name]
    t = _times(T=sde.T)
    x = _samples_of_p_t(sde, t)
    exact = _gaussian_posterior(sde, t, x)
    alpha, sigma = sde.marginal(t)
    assert _rel_err(tweedie_x0(x, exact["score"], alpha, sigma), exact["x0"]) <= 1e-10
    # The oracle's score of the one-component mixture is the same Gaussian score.
    oracle = sd.exact_score(sde, sd.GaussianMixture(M[None], stds=S))
    assert _rel_err(oracle(x, t), exact["score"]) <= 1e-10


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_posterior_mean_predictions_give_the_exact_gaussian_score(name, p):
    """The Bayes-optimal predictor of each kind (E[eps | x], E[x0 | x], ...) converts to the
    exact score -(x - alpha M) / V, and the exact score converts to it."""
    sde = SDES[name]
    t = _times(T=sde.T)
    x = _samples_of_p_t(sde, t, seed=9)
    exact = _gaussian_posterior(sde, t, x)
    alpha, sigma = sde.marginal(t)
    # x0 -> score divides by sigma^2: the round-off eps_mach |x| / sigma^2 is inherent (see
    # test_model's x0 case); the smallest sigma here is sub-VP's 1.1e-4 at t = 1e-3.
    s_min = float(sigma.min())
    tol = 1e-10 if p != "x0" else 1e-10 + 16 * torch.finfo(F64).eps * 10 / s_min**2
    fg = _f_g2(sde, t)
    got = score_from_prediction(exact[p], p, x, alpha, sigma, **fg)
    assert _rel_err(got, exact["score"]) <= tol
    assert (
        _rel_err(prediction_from_score(exact["score"], p, x, alpha, sigma, **fg), exact[p]) <= 1e-10
    )


def test_tweedie_of_a_mixture_is_the_responsibility_weighted_posterior_mean():
    """For a mixture, E[x0 | x_t] = sum_k r_k(x) (m_k + alpha s_k^2 (x - alpha m_k) / V_k) with
    r_k the posterior component weights; Tweedie from the oracle's exact score must equal it."""
    sde = sd.VPSDE()
    means = torch.tensor([[-1.0, 0.5], [1.5, 1.0], [0.0, -2.0]], dtype=F64)
    stds, weights = torch.tensor([0.3, 0.5, 0.2], dtype=F64), torch.tensor([0.5, 0.3, 0.2])
    data = sd.GaussianMixture(means, stds, weights=weights)
    t = _times(32)
    alpha, sigma = sde.marginal(t)
    x = data.sample(32, torch.Generator().manual_seed(4)) * alpha[:, None]
    x = x + sigma[:, None] * _draw(32, d=2, seed=5)[1]
    a, s = alpha[:, None, None], sigma[:, None, None]
    var = a**2 * stds[None, :, None] ** 2 + s**2  # (n, K, 1)
    diff = x[:, None, :] - a * means[None]  # (n, K, d)
    log_n = (-0.5 * diff**2 / var - 0.5 * torch.log(2 * torch.pi * var)).sum(-1)
    r = torch.softmax(torch.log(weights.to(F64)) + log_n, dim=1)[..., None]
    posterior = (r * (means[None] + a * stds[None, :, None] ** 2 * diff / var)).sum(1)
    score = sd.exact_score(sde, data)(x, t)
    assert _rel_err(tweedie_x0(x, score, alpha, sigma), posterior) <= 1e-10


@pytest.mark.parametrize("name", SDE_NAMES)
def test_velocity_is_the_time_derivative_of_the_gaussian_flow_map(name):
    """For Gaussian data the PF-ODE flow map is x_t = alpha M + sqrt(V_t) (x0 - M) / S (each
    sample keeps its standardised position); d x_t / dt (autograd) == velocity(x_t, exact score)."""
    sde = SDES[name]
    t = _times(16, T=sde.T).clone().requires_grad_(True)
    x0 = M + S * _draw(16, seed=10)[0]
    alpha, sigma = (c.reshape(-1, 1) for c in sde.marginal(t))
    x_t = alpha * M + torch.sqrt(alpha**2 * S**2 + sigma**2) * (x0 - M) / S
    dxdt = torch.stack(
        [torch.autograd.grad(x_t[:, j].sum(), t, retain_graph=True)[0] for j in range(3)], 1
    )
    x = x_t.detach()
    score = _gaussian_posterior(sde, t.detach(), x)["score"]
    assert _rel_err(velocity(sde, x, t.detach(), score), dxdt) <= 1e-9


# --- the flow-matching velocity ----------------------------------------------------------------


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_every_prediction_of_the_exact_mixture_score_implies_the_pf_ode_drift(name, p):
    """velocity_from_prediction(exact prediction of kind p) == f x - g^2 score / 2 with the
    oracle's exact mixture score (Song et al. Eq. 13), to float64 precision."""
    sde = SDES[name]
    means = torch.tensor([[-1.0, 0.5], [1.5, 1.0], [0.0, -2.0]], dtype=F64)
    data = sd.GaussianMixture(means, [0.3, 0.5, 0.2], weights=[0.5, 0.3, 0.2])
    t = _times(32, T=sde.T)
    alpha, sigma = sde.marginal(t)
    x = alpha[:, None] * data.sample(32, torch.Generator().manual_seed(6))
    x = x + sigma[:, None] * _draw(32, d=2, seed=7)[1]
    score = sd.exact_score(sde, data)(x, t)
    f, g2 = sde.f(t)[:, None], sde.g2(t)[:, None]
    drift = f * x - 0.5 * g2 * score
    assert _rel_err(velocity(sde, x, t, score), drift) <= 1e-12
    fg = _f_g2(sde, t)
    pred = prediction_from_score(score, p, x, alpha, sigma, **fg)
    u = velocity_from_prediction(pred, p, x, alpha, sigma, **fg)
    # x0 -> score divides by sigma^2 (see test_posterior_mean_predictions...): the same round-off
    tol = 1e-10 if p != "x0" else 1e-10 + 16 * torch.finfo(F64).eps * 10 / float(sigma.min()) ** 2
    assert _rel_err(u, drift) <= tol


def test_velocity_on_a_hand_computed_example():
    """alpha = 0.6, sigma = 0.8, f = -0.5, g^2 = 2, x = 1, score = -0.625:
    u = f x - g^2 score / 2 = -0.5 + 0.625 = 0.125; target for x0 = 1, eps = 0.5:
    alpha' = f alpha = -0.3, sigma' = (g^2 + 2 f sigma^2) / (2 sigma) = (2 - 0.64) / 1.6 = 0.85,
    alpha' + 0.5 sigma' = 0.125 (the score of this pair is the conditional one, so they agree)."""
    a, s = torch.tensor(0.6, dtype=F64), torch.tensor(0.8, dtype=F64)
    f, g2 = torch.tensor(-0.5, dtype=F64), torch.tensor(2.0, dtype=F64)
    x0, eps = torch.ones(1, 1, dtype=F64), torch.full((1, 1), 0.5, dtype=F64)
    x = a * x0 + s * eps
    score = torch.full((1, 1), -0.625, dtype=F64)
    expected = torch.full((1, 1), 0.125, dtype=F64)
    u = prediction_from_score(score, "velocity", x, a, s, f=f, g2=g2)
    assert_close(u, expected, rtol=1e-14, atol=1e-14)
    target = regression_target("velocity", x0, eps, a, s, f=f, g2=g2)
    assert_close(target, expected, rtol=1e-14, atol=1e-14)
    back = score_from_prediction(u, "velocity", x, a, s, f=f, g2=g2)
    assert_close(back, score, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, o: score_from_prediction(x, "velocity", x, o, o),
        lambda x, o: prediction_from_score(x, "velocity", x, o, o, f=o),
        lambda x, o: regression_target("velocity", x, x, o, o, g2=o),
        lambda x, o: velocity_from_prediction(x, "eps", x, o, o, f=None, g2=o),
    ],
    ids=["score_from_prediction", "prediction_from_score", "regression_target", "from_eps"],
)
def test_velocity_conversions_need_f_and_g2(call):
    with pytest.raises(ValueError, match="needs f and g2"):
        call(torch.zeros(2, 2, dtype=F64), torch.ones((), dtype=F64))


def test_other_parameterizations_ignore_f_and_g2():
    """Giving f and g^2 changes nothing for eps, score, x0 and v (bit for bit)."""
    x0, z = _draw(6)
    a, s = torch.tensor(0.7, dtype=F64), torch.tensor(0.4, dtype=F64)
    fg = {"f": torch.tensor(-3.0, dtype=F64), "g2": torch.tensor(9.0, dtype=F64)}
    for p in ("eps", "score", "x0", "v"):
        assert torch.equal(
            regression_target(p, x0, z, a, s), regression_target(p, x0, z, a, s, **fg)
        )
        assert torch.equal(
            score_from_prediction(z, p, x0, a, s), score_from_prediction(z, p, x0, a, s, **fg)
        )
        assert torch.equal(
            prediction_from_score(z, p, x0, a, s), prediction_from_score(z, p, x0, a, s, **fg)
        )


@pytest.mark.parametrize("name", SDE_NAMES)
def test_velocity_of_the_exact_score_is_the_oracle_exact_velocity(name):
    """prediction_from_score(exact score, "velocity") == sd.exact_velocity (computed by the
    oracle as E[alpha' x0 + sigma' eps | x_t], another route) to 1e-10."""
    sde = SDES[name]
    means = torch.tensor([[-1.0, 0.5], [1.5, 1.0], [0.0, -2.0]], dtype=F64)
    data = sd.GaussianMixture(means, [0.3, 0.5, 0.2], weights=[0.5, 0.3, 0.2])
    t = _times(32, T=sde.T)
    alpha, sigma = sde.marginal(t)
    x = alpha[:, None] * data.sample(32, torch.Generator().manual_seed(8))
    x = x + sigma[:, None] * _draw(32, d=2, seed=9)[1]
    u = prediction_from_score(
        sd.exact_score(sde, data)(x, t), "velocity", x, alpha, sigma, **_f_g2(sde, t)
    )
    assert _rel_err(u, sd.exact_velocity(sde, data)(x, t)) <= 1e-10


def test_straight_path_target_is_eps_minus_x0_and_g2_zero_gives_no_score():
    """RectifiedFlow: alpha' = -1, sigma' = 1, so the target is eps - x0 (Liu et al. 2023,
    Eq. 1). At t = 0, g^2 = 0: the velocity is finite (f x) but implies no score (inf/NaN),
    like eps -> score at sigma = 0."""
    sde = sd.RectifiedFlow()
    x0, z = _draw(8, seed=11)
    t = _times(8, T=sde.T)
    alpha, sigma = sde.marginal(t)
    target = regression_target("velocity", x0, z, alpha, sigma, **_f_g2(sde, t))
    assert _rel_err(target, z - x0) <= 1e-12
    t0 = torch.zeros(8, dtype=F64)
    a0, s0 = sde.marginal(t0)
    u = prediction_from_score(-z, "velocity", x0, a0, s0, **_f_g2(sde, t0))
    assert_close(u, -x0, rtol=0, atol=0)  # f(0) x = -x, g^2(0) = 0
    assert not torch.isfinite(
        score_from_prediction(u, "velocity", x0, a0, s0, **_f_g2(sde, t0))
    ).any()
