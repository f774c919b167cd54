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


# ---- mixture metrics: mode weights and widths --------------------------------------------------

SEPARATED = sd.GaussianMixture(
    torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, -10.0]], dtype=F64),
    torch.tensor([[0.1, 0.5, 0.2], [0.3, 0.05, 0.4], [0.2, 0.2, 0.02]], dtype=F64),
    [0.6, 0.3, 0.1],
)  # modes >= 20 of their stds apart: no sample is assigned to the wrong mode


def _samples_with_counts(mix, counts, c: float, seed: int) -> torch.Tensor:
    """counts[k] samples of mode k with z standardised within each mode, scaled by c: each mode's
    sample std is exactly c times its true std in every coordinate."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for k, m in enumerate(counts):
        if m == 0:
            continue
        z = torch.randn(m, mix.dim, generator=g, dtype=F64)
        z = (z - z.mean(0)) / z.std(0)
        parts.append(mix.means[k] + c * mix.stds[k] * z)
    return torch.cat(parts)


def test_mode_assignment_is_the_most_likely_component():
    from scipy.stats import multivariate_normal

    from scoresde.metrics import mode_assignment

    mix = sd.GaussianMixture(
        torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0]], dtype=F64),
        torch.tensor([[0.5, 0.3], [0.2, 0.6], [0.4, 0.4]], dtype=F64),
        [0.5, 0.2, 0.3],
    )  # overlapping: the assignment is a real decision
    x = mix.sample(500, generator=torch.Generator().manual_seed(0))
    dens = np.stack(
        [
            w * multivariate_normal(m, np.diag(s**2)).pdf(x.numpy())
            for m, s, w in zip(
                mix.means.numpy(), mix.stds.numpy(), mix.weights.numpy(), strict=True
            )
        ],
        1,
    )
    assert torch.equal(mode_assignment(x, mix), torch.from_numpy(dens.argmax(1)))


def test_mode_weight_tv_of_known_reassigned_weights():
    from scoresde.metrics import mode_weight_tv

    counts = [500, 200, 300]  # shares 0.5, 0.2, 0.3 against weights 0.6, 0.3, 0.1
    x = _samples_with_counts(SEPARATED, counts, 1.0, 0)
    assert mode_weight_tv(x, SEPARATED) == pytest.approx(0.5 * (0.1 + 0.1 + 0.2), abs=1e-12)


def test_mode_weight_tv_of_exact_samples_is_within_sampling_error():
    from scoresde.metrics import mode_weight_tv

    n = 4000
    w = SEPARATED.weights
    # each share is within 4 standard errors sqrt(w (1 - w) / n) of its weight
    bound = float(0.5 * (4 * (w * (1 - w) / n).sqrt()).sum())
    for seed in range(5):
        x = SEPARATED.sample(n, generator=torch.Generator().manual_seed(seed))
        assert mode_weight_tv(x, SEPARATED) < bound


@pytest.mark.parametrize("c", [0.7, 1.0, 1.25])
def test_width_error_of_a_known_std_factor_is_abs_log_c(c):
    from scoresde.metrics import width_error

    x = _samples_with_counts(SEPARATED, [600, 300, 100], c, 1)
    assert width_error(x, SEPARATED) == pytest.approx(abs(math.log(c)), abs=1e-9)


def test_width_error_of_exact_samples_is_the_standard_error_of_log_std():
    from scoresde.metrics import width_error

    # log of a sample std has standard error 1 / sqrt(2 (m - 1)) for m Gaussian samples, so
    # the RMS over 16 coordinates of mode k is ~ that, and the weighted sum is sum_k w_k SE_k.
    mix = sd.GaussianMixture(SEPARATED.means.repeat(1, 6)[:, :16], 0.3, [0.6, 0.3, 0.1])
    n = 4000
    expected = float((mix.weights / (2 * (n * mix.weights - 1)).sqrt()).sum())
    values = [
        width_error(mix.sample(n, generator=torch.Generator().manual_seed(s)), mix)
        for s in range(4)
    ]
    # the RMS over 16 coordinates has ~18% relative spread per mode; 4 draws average it down
    assert np.mean(values) == pytest.approx(expected, rel=0.25)


def test_width_error_is_inf_when_a_mode_is_lost():
    from scoresde.metrics import mode_weight_tv, width_error

    x = _samples_with_counts(SEPARATED, [700, 300, 0], 1.0, 2)
    assert width_error(x, SEPARATED) == math.inf
    assert mode_weight_tv(x, SEPARATED) == pytest.approx(0.1, abs=1e-12)


def test_mixture_metrics_reject_a_dimension_mismatch():
    from scoresde.metrics import width_error

    with pytest.raises(ValueError, match="dimension 3"):
        width_error(torch.zeros(10, 2), SEPARATED)
