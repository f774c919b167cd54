"""The torchsde bridge (scoresde/solvers/torchsde.py): the wrapped forward and reverse SDEs, and a
reverse-time run with the exact score that must recover the data (Anderson 1982; Song et al. 2021,
Eq. 6). The forward direction is checked against `marginal` in test_sde.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchsde
from conftest import SDES_COSINE as SDES
from torch.testing import assert_close

import scoresde as sd
from scoresde.metrics import MMD, kernel_sum, mmd2

F64 = torch.float64

NAMES = list(SDES)


def score_of_x_and_t(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A score that depends on both arguments, to see each one routed through the wrapper."""
    return -x * (1 + t.reshape(-1, *([1] * (x.dim() - 1))))


# ---------------------------------------------------------------------------------------------
# The wrapper's formulas


@pytest.mark.parametrize("name", NAMES)
def test_forward_wrapper_is_drift_and_diffusion(name):
    sde = SDES[name]
    wrapped = sd.to_torchsde(sde, (2, 3))
    assert wrapped.noise_type == "diagonal" and wrapped.sde_type == "ito"
    y = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    s = torch.tensor(0.3, dtype=F64)
    assert_close(wrapped.f(s, y), sde.drift(y.reshape(4, 2, 3), 0.3).reshape(4, 6), rtol=0, atol=0)
    g = wrapped.g(s, y)
    assert g.shape == y.shape and g.dtype == F64
    assert_close(g, sde.diffusion(s).expand(4, 6), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_wrapper_runs_time_backwards(name):
    # y(s) = x(T - s): dy = -[f - g^2 score](y, T - s) ds + g(T - s) dW.
    sde = SDES[name]
    wrapped = sd.to_torchsde(sde.reverse(score_of_x_and_t), (2,))
    y = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    s = 0.25
    t = sde.T - s
    g = sde.diffusion(torch.tensor(t, dtype=F64))
    expected_f = -(sde.drift(y, t) - g**2 * score_of_x_and_t(y, torch.full((5,), t, dtype=F64)))
    assert_close(wrapped.f(torch.tensor(s, dtype=F64), y), expected_f, rtol=1e-12, atol=1e-12)
    assert_close(wrapped.g(torch.tensor(s, dtype=F64), y), g.expand(5, 2), rtol=1e-15, atol=0)
    pf = sd.to_torchsde(sde.reverse(score_of_x_and_t, probability_flow=True), (2,))
    assert float(pf.g(torch.tensor(s, dtype=F64), y).abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------
# The MMD helper itself


BANDWIDTH, LEVELS = 1.6, 5  # RBF scales 1.6 ... 0.1: from a ring's radius to a component's std


def test_mmd_matches_direct_computation():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 2, generator=g, dtype=F64)
    y = 1.3 * torch.randn(40, 2, generator=g, dtype=F64) + 0.2

    def gram(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * (1.6 / 2**j) ** 2)) for j in range(LEVELS))

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    expected = (
        (kxx.sum() - kxx.diagonal().sum()) / (50 * 49)
        + (kyy.sum() - kyy.diagonal().sum()) / (40 * 39)
        - 2 * kxy.mean()
    )
    assert kernel_sum(x, y, BANDWIDTH, LEVELS, block=7) == pytest.approx(float(kxy.sum()), rel=1e-5)
    assert mmd2(x, y, BANDWIDTH, LEVELS) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Reverse-time SDE with the exact score recovers the data

N_SAMPLES = 10_000
N_FLOOR_PAIRS = 5
STEPS = 1000
EPS = {"vp": 1e-3, "subvp": 1e-3, "vp_cosine": 1e-3, "ve": 1e-5}  # Song et al.'s sampling eps


def ring_mixture(std: float = 0.15) -> sd.GaussianMixture:
    angle = 2 * math.pi * torch.arange(8) / 8
    return sd.GaussianMixture(2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], 1), std)


@pytest.fixture(scope="module")
def ring_reference():
    """Exact samples and the MMD² noise floor at n = 10k (design.md: std over independent pairs).

    Returns (data, MMD to the reference set, floor std). Ten independent exact sets form five
    independent pairs; the floor is the standard deviation of their five MMD² values.
    """
    data = ring_mixture()
    sets = [
        data.sample(N_SAMPLES, generator=torch.Generator().manual_seed(100 + i))
        for i in range(2 * N_FLOOR_PAIRS)
    ]
    null = torch.tensor(
        [mmd2(sets[2 * i], sets[2 * i + 1], BANDWIDTH, LEVELS) for i in range(N_FLOOR_PAIRS)],
        dtype=F64,
    )
    return data, MMD(sets[0], BANDWIDTH, LEVELS), float(null.std())


def reverse_sde_samples(sde: sd.SDE, data: sd.GaussianMixture, eps: float) -> torch.Tensor:
    """x_eps after STEPS Euler steps of the reverse SDE with the exact score, from the prior."""
    rev = sde.reverse(sd.exact_score(sde, data))
    x_T = sde.prior_sample((N_SAMPLES, 2), generator=torch.Generator().manual_seed(1))
    s_end = sde.T - eps
    dt = s_end / STEPS
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=s_end, size=(N_SAMPLES, 2), dtype=torch.float32, entropy=2, dt=dt
    )
    ts = torch.tensor([0.0, s_end], dtype=F64)
    ys = torchsde.sdeint(sd.to_torchsde(rev, (2,)), x_T, ts, method="euler", dt=dt, bm=bm)
    return ys[-1]


@pytest.mark.parametrize("name", NAMES)
def test_reverse_sde_with_exact_score_recovers_the_mixture(name, ring_reference):
    data, to_reference, floor_std = ring_reference
    x = reverse_sde_samples(SDES[name], data, EPS[name])
    assert x.shape == (N_SAMPLES, 2) and bool(torch.isfinite(x).all())
    err = to_reference(x)
    # Between exact sets MMD² has mean 0 and std floor_std: 3 floor_std is a 3-sigma band.
    assert err <= 3 * floor_std, f"MMD² = {err:.2e}, noise floor std = {floor_std:.2e}"


def test_mmd_band_rejects_a_slightly_wrong_mixture(ring_reference):
    # The band has power: the same ring with stds 20% too large (0.18 vs 0.15) lies far outside.
    _, to_reference, floor_std = ring_reference
    wrong = ring_mixture(0.18).sample(N_SAMPLES, generator=torch.Generator().manual_seed(999))
    assert to_reference(wrong) > 3 * floor_std
