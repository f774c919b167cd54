"""Sample-based distances between two sets of samples."""

from __future__ import annotations

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def median_distance(x: Tensor, n: int = 1000) -> float:
    """Median pairwise Euclidean distance of (at most) the first n samples."""
    xs = _flat(x[:n]).double()
    d = torch.cdist(xs, xs)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median())


def kernel_sum(a: Tensor, b: Tensor, bandwidth: float, levels: int, block: int = 32) -> float:
    """sum_{i,j} k(a_i, b_j) for k(u, v) = sum_{l<levels} exp(-|u-v|^2 / (2 (bandwidth/2^l)^2)).

    Halving the bandwidth raises the kernel to the 4th power, so one exp per pair serves every
    level. Row blocks in float32 (|a|^2 + |b|^2 - 2 a.b via addmm), sums in float64.
    """
    a, b = _flat(a).float(), _flat(b).float()
    bb = (b * b).sum(1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], block):
        ai = a[i : i + block]
        d2 = torch.addmm(bb, ai, b.T, beta=1, alpha=-2).add_((ai * ai).sum(1, keepdim=True))
        k = d2.clamp_(min=0).mul_(-0.5 / bandwidth**2).exp_()
        total += k.sum(dtype=torch.float64)
        for _ in range(levels - 1):
            total += k.square_().square_().sum(dtype=torch.float64)
    return float(total)


class MMD:
    """Unbiased MMD^2 to a fixed reference set, caching the reference's own kernel mean.

    MMD_u^2 = 1/(m(m-1)) sum_{i!=j} k(x_i,x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i,y_j)
              - 2/(mn) sum_{i,j} k(x_i,y_j)                     (Gretton et al. 2012, Lemma 6)
    with the multi-scale RBF kernel of ``kernel_sum``; ``bandwidth`` defaults to twice the median
    distance of the reference, so the levels span 2x to 1/8x of it.
    """

    def __init__(self, reference: Tensor, bandwidth: float | None = None, levels: int = 5):
        if reference.shape[0] < 2:
            raise ValueError("the reference needs at least 2 samples")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.reference = reference
        self.bandwidth = bandwidth or 2 * median_distance(reference)
        self.levels = levels
        self.ref_term = self._self_term(reference)

    def _self_term(self, x: Tensor) -> float:
        n = x.shape[0]  # the diagonal k(x, x) = levels exactly
        return (kernel_sum(x, x, self.bandwidth, self.levels) - n * self.levels) / (n * (n - 1))

    def __call__(self, x: Tensor) -> float:
        if _flat(x).shape[1] != _flat(self.reference).shape[1] or x.shape[0] < 2:
            raise ValueError(
                f"x must be (n >= 2, ...) with the reference's event size, got {tuple(x.shape)}"
            )
        cross = kernel_sum(x, self.reference, self.bandwidth, self.levels)
        cross /= x.shape[0] * self.reference.shape[0]
        return self._self_term(x) + self.ref_term - 2 * cross


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None, levels: int = 5) -> float:
    """Unbiased MMD^2 between samples x and y (see ``MMD``; y is the reference).

    The estimator is unbiased, so for two samples of one distribution it scatters around 0 (and
    can be negative): compare it with the spread of MMD^2 between independent exact sample sets
    (the noise floor), not with 0. O(mn) time, O(block n) memory.
    """
    return MMD(y, bandwidth, levels)(x)


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between Gaussian fits of x and y (FID's formula):

        ||mu_x - mu_y||^2 + tr(C_x + C_y - 2 (C_x^{1/2} C_y C_x^{1/2})^{1/2})

    (Dowson & Landau 1982; Heusel et al. 2017), in float64 with a symmetric square root, so no
    complex parts appear. Biased upwards at finite n by about tr(C)/n-order terms: compare it with
    the same statistic between two exact sample sets of the same size.
    """
    import numpy as np
    from scipy import linalg

    a, b = _flat(x).double().cpu().numpy(), _flat(y).double().cpu().numpy()
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    ra = linalg.sqrtm(ca)
    ra = np.real(ra + ra.T) / 2
    mid = linalg.sqrtm(ra @ cb @ ra)
    tr = np.trace(ca) + np.trace(cb) - 2 * np.trace(np.real(mid))
    return float(mu @ mu + tr)


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011): sqrt of the mean over random unit
    directions of the squared W2 between the 1-D projections, each computed by sorting.
    Needs equal sample sizes. Its floor between two exact sets is O(n^-1/2) and positive."""
    a, b = _flat(x).double(), _flat(y).double()
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal shapes, got {a.shape} and {b.shape}")
    dev = generator.device if generator is not None else a.device
    theta = torch.randn(
        a.shape[1], n_projections, generator=generator, device=dev, dtype=torch.float64
    ).to(a.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, pb = (a @ theta).sort(0).values, (b @ theta).sort(0).values
    return float((pa - pb).pow(2).mean().sqrt())


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2013), unbiased
    (U-statistics for the within-set terms), so it scatters around 0 for equal distributions."""
    a, b = _flat(x).double(), _flat(y).double()
    m, n = a.shape[0], b.shape[0]
    xy = torch.cdist(a, b).mean()
    xx = torch.cdist(a, a).sum() / (m * (m - 1))
    yy = torch.cdist(b, b).sum() / (n * (n - 1))
    return float(2 * xy - xx - yy)


def noise_floor(sampler, metric, n_pairs: int = 5) -> tuple[float, float]:
    """(mean, std) of ``metric(a, b)`` over ``n_pairs`` pairs of independent exact sample sets,
    ``sampler()`` drawing one set. A method is at the floor when its metric is within a few stds
    of the mean (design.md: the spread over several draws, not one draw)."""
    values = torch.tensor(
        [metric(sampler(), sampler()) for _ in range(n_pairs)], dtype=torch.float64
    )
    return float(values.mean()), float(values.std())


def _mixture_params(mixture, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x (n, d), means (K, d), stds (K, d), weights (K,)) in float64 on x's device."""
    a = _flat(x).double()
    means, stds, weights = (
        p.to(device=a.device, dtype=torch.float64)
        for p in (mixture.means, mixture.stds, mixture.weights)
    )
    if a.shape[1] != means.shape[1]:
        raise ValueError(
            f"x has {a.shape[1]} values per sample but the mixture has dimension {means.shape[1]}"
        )
    return a, means, stds, weights


def mode_assignment(x: Tensor, mixture) -> Tensor:
    """(n,) index of each sample's most likely component, argmax_k w_k N(x; m_k, diag s_k^2).

    ``mixture`` is a ``GaussianMixture`` (means (K, d), stds (K, d), weights (K,)).
    """
    a, means, stds, weights = _mixture_params(mixture, x)
    z = (a.unsqueeze(1) - means) / stds  # (n, K, d)
    log_joint = weights.log() - stds.log().sum(-1) - 0.5 * z.square().sum(-1)
    return log_joint.argmax(1)


def mode_weight_tv(x: Tensor, mixture) -> float:
    """Total variation between the mixture's weights and the share of samples in each mode:
    TV = 1/2 sum_k |n_k / n - w_k|, with samples assigned by ``mode_assignment``.

    Between exact samples and the mixture it is not 0 but the sampling error of the shares
    (~ sum_k sqrt(w_k (1 - w_k) / (2 pi n)) for well-separated modes) plus the share of samples
    that overlapping modes misassign: compare it with its noise floor.
    """
    weights = mixture.weights.to(device=x.device, dtype=torch.float64)
    counts = torch.bincount(mode_assignment(x, mixture), minlength=weights.numel())
    return float(0.5 * (counts.double() / x.shape[0] - weights).abs().sum())


def width_error(x: Tensor, mixture) -> float:
    """Weight-averaged RMS log width error of the modes:

        sum_k w_k sqrt( mean_j log(std_kj / s_kj)^2 ),

    with std_kj the sample standard deviation of coordinate j over the samples assigned to mode
    k (``mode_assignment``) and s_kj the mode's true std. A sampler that scales every mode's
    spread by c has width error |log c|. A mode with fewer than 2 samples has no width: the
    error is then inf (``mode_weight_tv`` shows the lost mass). Its floor between exact samples
    and the mixture is the standard error of log std (~ 1 / sqrt(2 n_k) per coordinate) plus a
    truncation bias where modes overlap: compare it with its noise floor.
    """
    a, _, stds, weights = _mixture_params(mixture, x)
    k = mode_assignment(x, mixture)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for j in range(weights.numel()):
        members = a[k == j]
        if members.shape[0] < 2:
            return float("inf")
        log_ratio = torch.log(members.std(0) / stds[j])
        total += weights[j] * log_ratio.square().mean().sqrt()
    return float(total)
