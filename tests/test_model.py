"""ScoreModel (scoresde/model.py): a network of any parameterization read as the exact score.

The conversions themselves are tested in test_parameterization.py; here the expected values come
from the exact mixture score (``sd.exact_score``).
"""

from __future__ import annotations

import pytest
import torch
from conftest import SDES
from test_parameterization import _draw, _rel_err, _times
from torch import nn
from torch.testing import assert_close

import scoresde as sd
from scoresde.model import PARAMETERIZATIONS, ScoreModel, prediction_from_score

F64 = torch.float64

SDE_NAMES = list(SDES)


def _mixture() -> sd.GaussianMixture:
    means = torch.tensor([[-1.0, 0.5], [1.5, 1.0], [0.0, -2.0]], dtype=F64)
    return sd.GaussianMixture(means, [0.3, 0.5, 0.2], weights=[0.5, 0.3, 0.2])


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
        fg = {"f": self.sde.f(t), "g2": self.sde.g2(t)}
        return prediction_from_score(self.score(x, t), self.p, x, alpha, sigma, **fg)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_score_model_returns_the_exact_score(name, p):
    sde, data = SDES[name], _mixture()
    exact = sd.exact_score(sde, data)
    net = ExactPredictionNet(sde, data, p)
    model = ScoreModel(net, sde, parameterization=p)
    t = _times(32, T=sde.T)
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


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_velocity_output_is_the_pf_ode_drift_of_the_exact_score(name, p):
    """model(x, t, output="velocity") == f x - g^2 score / 2 with the exact mixture score, for a
    net of every parameterization; for "velocity" it is the raw net output, bit for bit."""
    sde, data = SDES[name], _mixture()
    exact = sd.exact_score(sde, data)
    model = ScoreModel(ExactPredictionNet(sde, data, p), sde, parameterization=p)
    t = _times(32, T=sde.T)
    alpha, sigma = sde.marginal(t)
    x0, z = data.sample(32, torch.Generator().manual_seed(4)), _draw(32, d=2, seed=5)[1]
    x = alpha[:, None] * x0 + sigma[:, None] * z
    drift = sde.reverse_drift(x, t, exact(x, t), 0.5)
    u = model(x, t, output="velocity")
    assert torch.equal(u, model.velocity(x, t))
    tol = 1e-10 if p != "x0" else 1e-10 + 16 * torch.finfo(F64).eps * 10 / float(sigma.min()) ** 2
    assert _rel_err(u, drift) <= tol
    if p == "velocity":
        assert torch.equal(u, model.prediction(x, t))
    with pytest.raises(ValueError, match="output"):
        model(x, t, output="eps")
