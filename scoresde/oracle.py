"""Exact answers: Gaussian mixtures pushed through linear SDEs.

If x_0 ~ sum_k w_k N(m_k, diag(s_k^2)) and x_t = alpha_t x_0 + sigma_t z, then
x_t ~ sum_k w_k N(alpha_t m_k, diag(alpha_t^2 s_k^2 + sigma_t^2)) — a mixture again, so its density,
score and the probability-flow map of a single Gaussian are available in closed form. These are the
ground truth every solver and estimator in the package is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .sde import SDE, TimeLike, as_time

__all__ = ["GaussianMixture", "exact_score", "exact_log_prob", "gaussian_flow_map"]


class GaussianMixture:
    """A mixture of K axis-aligned Gaussians in d dimensions.

    Parameters
    ----------
    means : (K, d) tensor-like
    stds : scalar, (K,) or (K, d), all > 0
    weights : (K,) non-negative with a positive sum (normalised here); default uniform.
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
        if stds.dim() == 0 or stds.shape == (k,):
            stds = stds.reshape(-1, 1).expand(k, d)
        elif stds.shape != (k, d):
            raise ValueError(
                f"stds must be a scalar, (K,) or (K, d) = {(k, d)} tensor, got {tuple(stds.shape)}"
            )
        if not torch.all(torch.isfinite(stds) & (stds > 0)):
            raise ValueError("stds must be finite and positive")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape (K,) = ({k},), got {tuple(weights.shape)}")
        total = weights.sum()
        if not (torch.all(weights >= 0) and torch.isfinite(total) and total > 0):
            raise ValueError("weights must be non-negative with a finite positive sum")
        self.means = means
        self.stds = stds.contiguous()
        self.weights = weights / total
        # Converted copies per (device, dtype): a score function called every solver step must not
        # re-validate (validation syncs with the device) or re-copy its parameters.
        self._cache: dict = {}

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, device=None, dtype=None) -> GaussianMixture:
        return GaussianMixture(
            self.means.to(device=device, dtype=dtype),
            self.stds.to(device=device, dtype=dtype),
            self.weights.to(device=device, dtype=dtype),
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, d) exact samples: a component by its weight, then its Gaussian."""
        dev = generator.device if generator is not None else self.means.device
        w = self.weights.to(dev)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=self.means.dtype)
        k = k.to(self.means.device)
        return self.means[k] + self.stds[k] * z.to(self.means.device)

    def _params(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                p.to(device=device, dtype=dtype)
                for p in (self.means, self.stds, torch.log(self.weights))
            )
        return self._cache[key]

    def _at(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, K) log w_k + log N(x; mean_k, var_k), and the (B, K, d) means and variances."""
        means, stds, log_w = self._params(x.device, x.dtype)
        a = alpha.to(x.dtype).reshape(-1, 1, 1)
        mean = a * means
        var = (a * stds) ** 2 + sigma.to(x.dtype).reshape(-1, 1, 1) ** 2
        diff = x.unsqueeze(1) - mean
        log_n = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        return log_w + log_n, mean, var

    def _check_x(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ValueError(
                f"x must have shape (batch, ...) with {self.dim} values per sample, "
                f"got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim)

    def log_prob(self, x: Tensor) -> Tensor:
        """(batch,) log density of the mixture itself (t = 0 of a VP/sub-VP SDE)."""
        one = torch.ones(1, dtype=x.dtype, device=x.device)
        return _log_prob(self, self._check_x(x), one, 0 * one)

    def score(self, x: Tensor) -> Tensor:
        """grad_x log p(x), same shape as x."""
        one = torch.ones(1, dtype=x.dtype, device=x.device)
        return _score(self, self._check_x(x), one, 0 * one).reshape(x.shape)


def _log_prob(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    log_joint, _, _ = mix._at(x, alpha, sigma)
    return torch.logsumexp(log_joint, dim=1)


def _score(mix: GaussianMixture, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    # score = sum_k r_k(x) (mean_k - x) / var_k with responsibilities r = softmax(log joint).
    log_joint, mean, var = mix._at(x, alpha, sigma)
    r = torch.softmax(log_joint, dim=1).unsqueeze(-1)
    return (r * (mean - x.unsqueeze(1)) / var).sum(1)


def _coefficients(sde: SDE, t: TimeLike, x: Tensor) -> tuple[Tensor, Tensor]:
    tt = as_time(t, x.device)
    if tt.dim() == 0:
        tt = tt.expand(x.shape[0])
    elif tt.shape[0] != x.shape[0]:
        raise ValueError(f"t has {tt.shape[0]} entries but x has batch size {x.shape[0]}")
    return torch.exp(sde._log_alpha(tt)), torch.exp(sde._log_sigma(tt))


def exact_score(sde: SDE, data: GaussianMixture) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact score grad_x log p_t(x) of ``data`` diffused by ``sde``; t scalar or (batch,)."""

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        xf = data._check_x(x)
        alpha, sigma = _coefficients(sde, t, x)
        return _score(data, xf, alpha, sigma).reshape(x.shape)

    return score_fn


def exact_log_prob(sde: SDE, data: GaussianMixture) -> Callable[[Tensor, TimeLike], Tensor]:
    """The exact log p_t(x), (batch,), of ``data`` diffused by ``sde``; t scalar or (batch,)."""

    def log_prob_fn(x: Tensor, t: TimeLike) -> Tensor:
        xf = data._check_x(x)
        alpha, sigma = _coefficients(sde, t, x)
        return _log_prob(data, xf, alpha, sigma)

    return log_prob_fn


def gaussian_flow_map(sde: SDE, mean, std) -> Callable[[Tensor, TimeLike, TimeLike], Tensor]:
    """Exact probability-flow map x_t -> x_s for data N(mean, diag(std^2)).

    The marginal at t is N(alpha_t m, v_t) with v_t = alpha_t^2 std^2 + sigma_t^2, elementwise. The
    PF-ODE dx/dt = f x - g^2/2 score is linear in x with solution
    x_s = alpha_s m + sqrt(v_s / v_t) (x_t - alpha_t m)  (Song et al. 2021, Eq. 13, Gaussian data).
    """
    mean = torch.as_tensor(mean)
    std = torch.as_tensor(std)

    def flow(x: Tensor, t: TimeLike, s: TimeLike) -> Tensor:
        m = mean.to(device=x.device, dtype=torch.float64).reshape(-1)
        sd = std.to(device=x.device, dtype=torch.float64).reshape(-1)
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        out = []
        for tau in (t, s):
            a, sig = _coefficients(sde, tau, xf)
            out.append((a.unsqueeze(-1), (a.unsqueeze(-1) * sd) ** 2 + sig.unsqueeze(-1) ** 2))
        (a_t, v_t), (a_s, v_s) = out
        xs = a_s * m + torch.sqrt(v_s / v_t) * (xf - a_t * m)
        return xs.to(x.dtype).reshape(x.shape)

    return flow
