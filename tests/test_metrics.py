"""scoresde.metrics against closed forms and straightforward reference computations."""

import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.metrics import (
    MMD,
    energy_distance,
    frechet_distance,
    median_distance,
    mmd2,
    noise_floor,
    sliced_wasserstein,
)

F64 = torch.float64


def ring(n: int, seed: int) -> torch.Tensor:
    angle = 2 * math.pi * torch.arange(8, dtype=F64) / 8
    mix = sd.GaussianMixture(2.0 * torch.stack([angle.cos(), angle.sin()], 1), 0.2)
    return mix.sample(n, generator=torch.Generator().manual_seed(seed)).float()


def frechet_2x2_closed_form(m1, c1, m2, c2) -> float:
    """||m1 - m2||^2 + tr C1 + tr C2 - 2 tr (C1^1/2 C2 C1^1/2)^1/2 for 2 x 2 covariances.

    C1^1/2 C2 C1^1/2 is similar to C1 C2, so its square root's trace is sqrt(l1) + sqrt(l2) over
    the eigenvalues of C1 C2, i.e. sqrt(tr(C1 C2) + 2 sqrt(det(C1 C2))): no matrix square root."""
    p = c1 @ c2
    tr_sqrt = math.sqrt(np.trace(p) + 2 * math.sqrt(np.linalg.det(p)))
    d = m1 - m2
    return float(d @ d + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)


M1, M2 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
L1 = np.array([[1.0, 0.0], [0.5, 0.8]])
L2 = np.array([[0.7, 0.0], [-0.3, 1.2]])


def test_frechet_of_gaussian_samples_matches_closed_form():
    n = 20_000
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(M1) + torch.randn(n, 2, generator=g, dtype=F64) @ torch.from_numpy(L1).T
    y = torch.from_numpy(M2) + torch.randn(n, 2, generator=g, dtype=F64) @ torch.from_numpy(L2).T
    c1, c2 = L1 @ L1.T, L2 @ L2.T
    exact = frechet_2x2_closed_form(M1, c1, M2, c2)
    # The estimator's spread is dominated by ||mu_x - mu_y||^2: SE = sqrt(4 d'(C1 + C2) d / n)
    # (0.019 here; 20 seeds give 0.018); its bias is O((tr C1 + tr C2) / n) = 2e-4.
    d = M1 - M2
    se = math.sqrt(4 * d @ (c1 + c2) @ d / n)
    bias = (np.trace(c1) + np.trace(c2)) / n
    assert frechet_distance(x, y) == pytest.approx(exact, abs=4 * se + bias)


def test_frechet_of_exact_moments_equals_closed_form():
    # Four points s = (+-1, +-1) have mean 0 and sample covariance (ddof = 1) 4/3 I exactly; with
    # dyadic means and factors, x = m + s L' is exact in float32 (the metric's input precision).
    s = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    la, lb = np.array([[1.0, 0.0], [0.5, 2.0]]), np.array([[0.5, 0.0], [-0.25, 1.5]])
    ma, mb = np.array([0.25, -1.5]), np.array([-1.0, 0.75])
    x = torch.from_numpy(ma) + s @ torch.from_numpy(la).T
    y = torch.from_numpy(mb) + s @ torch.from_numpy(lb).T
    exact = frechet_2x2_closed_form(ma, 4 / 3 * la @ la.T, mb, 4 / 3 * lb @ lb.T)
    assert frechet_distance(x, y) == pytest.approx(exact, abs=1e-8, rel=1e-12)


def sliced_direct(x, y, theta) -> float:
    """sqrt(mean over projections of (1/n) sum_i (sorted x.theta - sorted y.theta)_i^2)."""
    total = 0.0
    for k in range(theta.shape[1]):
        px = sorted(float(v) for v in x.double() @ theta[:, k])
        py = sorted(float(v) for v in y.double() @ theta[:, k])
        total += sum((a - b) ** 2 for a, b in zip(px, py, strict=True)) / len(px)
    return math.sqrt(total / theta.shape[1])


def test_sliced_wasserstein_matches_per_projection_computation():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    y = 1.5 * torch.randn(40, 3, generator=g) + 0.3
    theta = torch.randn(3, 16, generator=torch.Generator().manual_seed(7), dtype=F64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    got = sliced_wasserstein(x, y, 16, generator=torch.Generator().manual_seed(7))
    assert got == pytest.approx(sliced_direct(x, y, theta), rel=1e-12)


def test_sliced_wasserstein_in_one_dimension_is_exact_w2():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(101, 1, generator=g), 2 * torch.randn(101, 1, generator=g) - 1
    exact_w2 = float((x.double().sort(0).values - y.double().sort(0).values).pow(2).mean().sqrt())
    assert sliced_wasserstein(x, y, 8, generator=g) == pytest.approx(exact_w2, rel=1e-12)


def test_mmd_default_bandwidth_matches_direct_computation():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 2, generator=g, dtype=F64)
    y = 1.3 * torch.randn(50, 2, generator=g, dtype=F64) + 0.2
    d = torch.cdist(y, y)
    bandwidth = 2 * float(d[torch.triu(torch.ones(50, 50, dtype=torch.bool), 1)].median())
    assert MMD(y).bandwidth == pytest.approx(bandwidth, rel=1e-6)  # float32 distances inside

    def gram(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * (bandwidth / 2**j) ** 2)) for j in range(5))

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    expected = (
        (kxx.sum() - kxx.diagonal().sum()) / (60 * 59)
        + (kyy.sum() - kyy.diagonal().sum()) / (50 * 49)
        - 2 * kxy.mean()
    )
    assert median_distance(y) == pytest.approx(bandwidth / 2, rel=1e-6)
    assert mmd2(x, y) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


def test_energy_distance_matches_direct_formula():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 2, generator=g)  # float32, the metric's input precision
    y = torch.randn(25, 2, generator=g) + 0.5
    a, b = x.double().numpy(), y.double().numpy()

    def mean_dist(u, v, skip_diagonal):
        vals = [
            np.linalg.norm(u[i] - v[j])
            for i in range(len(u))
            for j in range(len(v))
            if not (skip_diagonal and i == j)
        ]
        return sum(vals) / len(vals)

    expected = 2 * mean_dist(a, b, False) - mean_dist(a, a, True) - mean_dist(b, b, True)
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-10)


def test_noise_floor_of_mmd_is_centred_with_positive_spread():
    draws = iter(range(100, 200))
    mean, std = noise_floor(lambda: ring(500, next(draws)), mmd2, n_pairs=20)
    assert std > 0
    assert abs(mean) < 4 * std / math.sqrt(20)  # unbiased: mean 0 within 4 standard errors


METRIC_FNS = {
    "mmd2": mmd2,
    "frechet": frechet_distance,
    "sliced_w2": lambda x, y: sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0)),
    "energy": energy_distance,
}


@pytest.mark.parametrize("name", list(METRIC_FNS))
def test_metric_sits_at_noise_floor_for_one_distribution_and_above_for_a_shift(name):
    fn = METRIC_FNS[name]
    draws = iter(range(10, 100))
    mean, std = noise_floor(lambda: ring(1000, next(draws)), fn, n_pairs=5)
    same = fn(ring(1000, 1), ring(1000, 2))
    shifted = fn(ring(1000, 3) + torch.tensor([1.0, 0.0]), ring(1000, 4))  # half the radius
    assert same <= mean + 3 * std
    assert shifted > mean + 6 * std
