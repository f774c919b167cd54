"""ScoreModel and the score <-> eps <-> x0 <-> v identities (scoresde/model.py).

With x_t = alpha x0 + sigma eps (Song et al. 2021, Eq. 29):
    score = -eps / sigma                          (Song et al. 2021, Eq. 7; Ho et al. 2020)
    score = (alpha x0 - x_t) / sigma^2            (Tweedie's formula)
    v     = alpha eps - sigma x0                  (Salimans & Ho 2022, Sec. 4)
The expected values below are written from these formulas directly, not through the module.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import scoresde as sd
from scoresde.model import (
    PARAMETERIZATIONS,
    ScoreModel,
    prediction_from_score,
    regression_target,
    score_from_prediction,
)

F64 = torch.float64

SDES = {
    "vp": sd.VPSDE(0.1, 20.0),
    "subvp": sd.SubVPSDE(0.1, 20.0),
    "ve": sd.VESDE(0.01, 50.0),
}
SDE_NAMES = list(SDES)


def _times(n: int = 64) -> torch.Tensor:
    """Per-sample times spanning [1e-3, 1], both ends included (small sigma and small alpha)."""
    g = torch.Generator().manual_seed(0)
    t = 1e-3 + (1 - 1e-3) * torch.rand(n, generator=g, dtype=F64)
    t[0], t[1] = 1e-3, 1.0
    return t


def _draw(n: int, d: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, d, generator=g, dtype=F64)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over samples of ||a - b|| / ||b||."""
    diff = (a - b).reshape(a.shape[0], -1).norm(dim=1)
    return float((diff / b.reshape(b.shape[0], -1).norm(dim=1)).max())


def _mixture() -> sd.GaussianMixture:
    means = torch.tensor([[-1.0, 0.5], [1.5, 1.0], [0.0, -2.0]], dtype=F64)
    return sd.GaussianMixture(means, [0.3, 0.5, 0.2], weights=[0.5, 0.3, 0.2])


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
    t = _times()
    alpha, sigma = sde.marginal(t)
    g = torch.Generator().manual_seed(2)
    x = 3 * torch.randn(t.shape[0], 2, 4, generator=g, dtype=F64)  # event dims (2, 4)
    s = torch.randn(t.shape[0], 2, 4, generator=g, dtype=F64) / sigma.reshape(-1, 1, 1)
    pred = prediction_from_score(s, p, x, alpha, sigma)
    assert pred.shape == x.shape and pred.dtype == F64
    assert _rel_err(score_from_prediction(pred, p, x, alpha, sigma), s) <= 1e-10


@pytest.mark.parametrize("name", SDE_NAMES)
def test_regression_targets_match_the_conditional_score(name):
    """regression_target(p, x0, z) == prediction_from_score(-z/sigma, p, x_t) == the closed forms
    eps = z, score = -z/sigma, x0 = x0, v = alpha z - sigma x0, for x_t = alpha x0 + sigma z."""
    sde = SDES[name]
    t = _times()
    alpha, sigma = sde.marginal(t)
    a, s = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
    x0, z = _draw(t.shape[0])
    x_t = a * x0 + s * z
    closed_form = {"eps": z, "score": -z / s, "x0": x0, "v": a * z - s * x0}
    for p in PARAMETERIZATIONS:
        target = regression_target(p, x0, z, alpha, sigma)
        assert _rel_err(target, closed_form[p]) <= 1e-10, p
        from_score = prediction_from_score(-z / s, p, x_t, alpha, sigma)
        assert _rel_err(from_score, closed_form[p]) <= 1e-10, p
        # and back: every exact target implies the exact conditional score
        score = score_from_prediction(closed_form[p], p, x_t, alpha, sigma)
        assert _rel_err(score, -z / s) <= 1e-10, p


def test_v_reconstructs_x0_and_eps():
    """Salimans & Ho: with r = alpha^2 + sigma^2, x0 = (alpha x - sigma v)/r, eps = (sigma x +
    alpha v)/r; checked through the x0 and eps predictions implied by the v prediction."""
    sde = SDES["vp"]
    t = _times()
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
    for p in PARAMETERIZATIONS:
        scalar = regression_target(p, x0, z, a, s)
        batched = regression_target(p, x0, z, a.expand(5), s.expand(5))
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


# --- ScoreModel --------------------------------------------------------------------------------


class ExactPredictionNet(nn.Module):
    """Outputs the exact prediction of kind p for a Gaussian mixture, from ``sd.exact_score``.

    Records the t it was called with, to check that ScoreModel hands it a (batch,) tensor.
    """

    def __init__(self, sde, data, p):
        super().__init__()
        self.sde, self.p, self.score = sde, p, sd.exact_score(sde, data)
        self.seen_t: list[torch.Tensor] = []

    def forward(self, x, t):
        self.seen_t.append(t)
        alpha, sigma = self.sde.marginal(t)
        return prediction_from_score(self.score(x, t), self.p, x, alpha, sigma)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_score_model_returns_the_exact_score(name, p):
    sde, data = SDES[name], _mixture()
    exact = sd.exact_score(sde, data)
    net = ExactPredictionNet(sde, data, p)
    model = ScoreModel(net, sde, parameterization=p)
    t = _times(32)
    alpha, sigma = sde.marginal(t)
    x0, z = data.sample(32, torch.Generator().manual_seed(4)), _draw(32, d=2, seed=5)[1]
    x = alpha[:, None] * x0 + sigma[:, None] * z  # samples of p_t
    s = exact(x, t)
    diff = (model(x, t) - s).norm(dim=1) / s.norm(dim=1)
    tol = torch.full_like(t, 1e-10)
    if p == "x0":
        # score = (alpha x0 - x) / sigma^2 cancels: round-off eps_mach |x| / sigma^2 is inherent
        # (7e-10 relative for sub-VP at t = 1e-3, where sigma = 1.1e-4).
        tol += 16 * torch.finfo(F64).eps * x.norm(dim=1) / (sigma**2 * s.norm(dim=1))
    assert torch.all(diff <= tol), (diff / tol).max()
    # t as a 0-d tensor: the net sees it broadcast to a (batch,) tensor
    out = model(x, torch.tensor(0.3, dtype=F64))
    assert out.shape == x.shape and out.dtype == F64
    assert _rel_err(out, exact(x, 0.3)) <= 1e-10
    assert net.seen_t[-1].shape == (32,)
    assert torch.all(net.seen_t[-1] == 0.3)


def test_score_model_python_float_time_is_not_rounded_to_float32():
    sde, data = SDES["vp"], _mixture()
    net = ExactPredictionNet(sde, data, "eps")
    model = ScoreModel(net, sde, parameterization="eps")
    x = data.sample(8, torch.Generator().manual_seed(4))
    out = model(x, 0.3)
    assert net.seen_t[-1].shape == (8,)
    assert torch.all(net.seen_t[-1] == 0.3)
    assert _rel_err(out, sd.exact_score(sde, data)(x, 0.3)) <= 1e-10


def test_score_model_float32_follows_the_input_dtype():
    sde, data = SDES["vp"], _mixture()
    model = ScoreModel(ExactPredictionNet(sde, data, "eps"), sde, "eps")
    t = _times(16)
    x = data.sample(16, torch.Generator().manual_seed(6))
    out32 = model(x.float(), t.float())
    assert out32.dtype == torch.float32
    assert_close(out32.double(), model(x, t), rtol=1e-4, atol=1e-4)


def test_score_model_rejects_a_bad_time_shape():
    model = ScoreModel(ExactPredictionNet(SDES["vp"], _mixture(), "eps"), SDES["vp"])
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="t must"):
        model(x, torch.full((3,), 0.5, dtype=F64))


class RecordingNet(nn.Module):
    """net(x, t, y=None) = x * (1 + t) + y (broadcast over the event), recording y."""

    def __init__(self):
        super().__init__()
        self.seen_y = []

    def forward(self, x, t, y=None):
        self.seen_y.append(y)
        out = x * (1 + t[:, None])
        return out if y is None else out + y[:, None].to(x.dtype)


class NoLabelNet(nn.Module):
    """An unconditional net whose forward takes no y at all."""

    def forward(self, x, t):
        return x * t[:, None]


def test_labels_are_passed_through_to_the_net():
    sde = SDES["ve"]
    net = RecordingNet()
    model = ScoreModel(net, sde, "score")
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    y = torch.arange(6)
    out = model(x, t, y)
    assert net.seen_y[-1] is y
    assert_close(out, x * (1 + t[:, None]) + y[:, None].to(F64), rtol=0, atol=0)
    assert_close(model.prediction(x, t, y), out, rtol=0, atol=0)
    # without y, an unconditional net that has no y argument still works
    plain = ScoreModel(NoLabelNet(), sde, "score")
    assert_close(plain(x, t), x * t[:, None], rtol=0, atol=0)


def test_score_model_is_public_api():
    assert sd.ScoreModel is ScoreModel
