"""The discrete view: DDPM (Ho et al. 2020) and DDIM (Song, Meng & Ermon 2021) on a beta chain.

Written from the papers, independently of the continuous-time solvers, so that tests can check that
``sample(VPSDE, ..., solver="ancestral" | "ddim")`` on ``VPSDE.discrete_times(N)`` is this chain.
Index convention of the papers: x_N ~ N(0, I) down to x_0; alpha_i = 1 - beta_i,
alpha_bar_i = prod_{j<=i} alpha_j, and ``eps_fn(x, i)`` predicts the noise in x_i (i = 1..N).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .validation import (
    check_callable,
    check_choice,
    check_generator,
    check_int,
    check_real,
    check_tensor,
)

EpsFn = Callable[[Tensor, int], Tensor]


def _alpha_bars(betas: Tensor) -> Tensor:
    # alpha_bar_0 = 1 at index 0, then cumulative products: (N + 1,) in float64.
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.dim() != 1 or not bool(torch.all((betas > 0) & (betas < 1))):
        raise ValueError("betas must be a 1-D tensor with entries in (0, 1)")
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def ddpm_sample(
    eps_fn: EpsFn,
    betas: Tensor,
    x_N: Tensor,
    generator: torch.Generator | None = None,
    variance: str = "posterior",
) -> Tensor:
    """Algorithm 2 of Ho et al. 2020:
        x_{i-1} = 1/sqrt(alpha_i) (x_i - beta_i / sqrt(1 - alpha_bar_i) eps(x_i, i)) + s_i z,
    z ~ N(0, I) for i > 1 and z = 0 for i = 1; s_i^2 = beta_i (``"beta"``) or the posterior
    variance beta_tilde_i = (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i) beta_i (``"posterior"``).
    Noise is drawn with ``torch.randn(x.shape, generator=generator)`` once per step i > 1.
    """
    check_callable("eps_fn", eps_fn)
    check_tensor("x_N", x_N, min_dim=1)
    check_choice("variance", variance, ("posterior", "beta"))
    check_generator("generator", generator)
    abar = _alpha_bars(betas).to(x_N.device)
    betas = torch.as_tensor(betas, dtype=torch.float64).to(x_N.device)
    x = x_N
    for i in range(len(betas), 0, -1):
        beta = betas[i - 1]
        eps = eps_fn(x, i)
        x_mean = (x - beta / torch.sqrt(1 - abar[i]) * eps) / torch.sqrt(1 - beta)
        if i == 1:
            return x_mean
        var = beta if variance == "beta" else (1 - abar[i - 1]) / (1 - abar[i]) * beta
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x_mean + torch.sqrt(var) * z
    return x


def ddim_sample(
    eps_fn: EpsFn,
    betas: Tensor,
    x_N: Tensor,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDIM, Song, Meng & Ermon 2021, Eq. 12, on a decreasing sub-sequence tau of 1..N:
        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - s^2) eps + s z,
        x0_hat = (x - sqrt(1 - abar_i) eps) / sqrt(abar_i),
        s = eta sqrt((1 - abar_prev) / (1 - abar_i)) sqrt(1 - abar_i / abar_prev).
    The last step goes to index 0 (abar_0 = 1), where x_0 = x0_hat.
    """
    check_callable("eps_fn", eps_fn)
    check_tensor("x_N", x_N, min_dim=1)
    eta = check_real("eta", eta, 0.0, 1.0)
    check_generator("generator", generator)
    abar = _alpha_bars(betas).to(x_N.device)
    n = len(abar) - 1
    if timesteps is None:
        taus = list(range(n, 0, -1))
    else:
        if isinstance(timesteps, str) or not isinstance(timesteps, Sequence | Tensor):
            raise TypeError(f"timesteps must be a sequence of integers, got {timesteps!r}")
        taus = [check_int("timesteps", i) for i in timesteps]
        if not taus:
            raise ValueError("timesteps must not be empty")
    if (
        any(a <= b for a, b in zip(taus, taus[1:], strict=False))
        or not 1 <= taus[-1] <= taus[0] <= n
    ):
        raise ValueError(f"timesteps must be strictly decreasing integers in [1, {n}]")
    x = x_N
    for i, j in zip(taus, taus[1:] + [0], strict=True):
        eps = eps_fn(x, i)
        x0_hat = (x - torch.sqrt(1 - abar[i]) * eps) / torch.sqrt(abar[i])
        s = eta * torch.sqrt((1 - abar[j]) / (1 - abar[i]) * (1 - abar[i] / abar[j]))
        x = torch.sqrt(abar[j]) * x0_hat + torch.sqrt(1 - abar[j] - s**2) * eps
        if eta > 0 and j > 0:
            x = x + s * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x
