"""Denoising score matching in continuous time, and DDPM's discrete loss."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from .model import ScoreModel
from .sde import VPSDE, batch_coeff, randn
from .validation import check_choice

WEIGHTINGS = ("sigma2", "likelihood", "none")
#: The Trainer's losses: denoising score matching (``dsm_loss``) or flow matching
#: (``scoresde.flow_matching.flow_matching_loss``).
LOSSES = ("dsm", "fm")
TIME_SAMPLING = ("uniform", "stratified", "antithetic")

#: Smallest training time (Song et al.'s code trains on t ~ U(1e-5, T)).
TRAIN_EPS = 1e-5


def sample_times(
    n: int,
    T: float,
    eps: float = TRAIN_EPS,
    method: str = "uniform",
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """n times in [eps, T], float64: i.i.d. uniform, stratified (one per equal bin, in a random
    order) or antithetic (u and 1 - u pairs): the last two reduce the loss's variance over t."""
    check_choice("time_sampling", method, TIME_SAMPLING)
    dev = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64)
    if method == "stratified":
        perm = torch.randperm(n, generator=generator, device=dev)
        u = (perm + u) / n
    elif method == "antithetic":
        half = u[: (n + 1) // 2]
        u = torch.cat([half, 1 - half])[:n]
    return (eps + (T - eps) * u).to(device)


def loss_times(
    sde,
    b: int,
    t: Tensor | None,
    eps: float,
    time_sampling: str,
    generator: torch.Generator | None,
    device,
    positive: bool = False,
) -> Tensor:
    """The (batch,) or 0-d float64 training times of a loss: ``t`` checked to lie in [0, T]
    ((0, T] with ``positive``), or drawn by ``sample_times`` in [eps, T] when ``t`` is None."""
    if t is None:
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < sde.T:
            raise ValueError(f"eps must be a number in (0, T = {sde.T}), got {eps!r}")
        return sample_times(b, sde.T, eps, time_sampling, generator, device)
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.shape not in ((), (b,)):
        raise ValueError(f"t must be 0-d or of shape ({b},), got {tuple(t.shape)}")
    # One host sync, only for a t the caller chose (the trainer draws its own).
    low_ok = t > 0 if positive else t >= 0
    if not bool((low_ok & (t <= sde.T)).all()):
        raise ValueError(
            f"t must lie in {'(0' if positive else '[0'}, T = {sde.T}], got values in "
            f"[{float(t.min())}, {float(t.max())}]"
        )
    return t


def dsm_loss(
    sde,
    model: ScoreModel | DistributedDataParallel,
    x0: Tensor,
    weighting: str = "sigma2",
    eps: float = TRAIN_EPS,
    time_sampling: str = "uniform",
    reduction: str = "mean",
    y: Tensor | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continuous-time denoising score matching (Song et al. 2021, Eq. 7; Vincent 2011).

    With t ~ U(eps, T), z ~ N(0, I), x_t = alpha_t x0 + sigma_t z, the per-sample loss is
        lambda(t) / 2 * || model(x_t, t) + z / sigma_t ||^2
    (the exact score of p_0t(x_t | x0) is -z / sigma_t), with lambda(t) = sigma_t^2 (``"sigma2"``,
    Song et al.'s default), g(t)^2 (``"likelihood"``: the loss then bounds the negative
    log-likelihood; Song, Durkan, Murray & Ermon 2021, Thm. 1) or 1 (``"none"``). With sigma2
    weighting and an eps-predicting model this is 1/2 ||eps_hat - z||^2, DDPM's L_simple up to the
    factor 1/2.
    ``t`` ((batch,) or 0-d, in [0, T]) and ``noise`` (x0's shape) may be given to fix the draw;
    otherwise t ~ U(eps, T) with 0 < eps < T. ``reduction="none"`` gives per-sample losses.
    ``model`` is a ``ScoreModel`` or its ``DistributedDataParallel`` wrapper (``Trainer``'s).
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("time_sampling", time_sampling, TIME_SAMPLING)
    check_choice("reduction", reduction, ("mean", "none"))
    b = x0.shape[0]
    t = loss_times(sde, b, t, eps, time_sampling, generator, x0.device)
    if noise is None:
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    alpha, sigma = sde.marginal(t)
    x_t = batch_coeff(alpha, x0) * x0 + batch_coeff(sigma, x0) * noise
    score = model(x_t, t.to(x0.dtype), y)
    # lambda/2 ||s + z/sigma||^2 written as w/2 ||sigma s + z||^2 with w = lambda / sigma^2, which
    # stays finite as sigma -> 0 for the sigma2 weighting.
    residual = (batch_coeff(sigma, x0) * score + noise).reshape(b, -1)
    if weighting == "sigma2":
        w = torch.ones_like(t)
    elif weighting == "likelihood":
        w = sde.g2(t) / sigma**2
    else:
        w = 1 / sigma**2
    losses = 0.5 * w.to(x0.dtype) * residual.pow(2).sum(1)
    return losses.mean() if reduction == "mean" else losses


def ddpm_loss(
    sde: VPSDE,
    model: ScoreModel,
    x0: Tensor,
    n_steps: int = 1000,
    i: Tensor | None = None,
    noise: Tensor | None = None,
    y: Tensor | None = None,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDPM's L_simple (Ho et al. 2020, Algorithm 1): || eps - eps_theta(x_i, i) ||^2.

    i ~ U{1, ..., N}, x_i = sqrt(alpha_bar_i) x0 + sqrt(1 - alpha_bar_i) eps, and the model is
    queried at the continuous time t_i = ``sde.discrete_times(N)[i]`` where the marginals agree.
    """
    if sde.ancestral_rule != "ddpm":
        raise ValueError(f"ddpm_loss needs a VPSDE, got {type(sde).__name__}")
    check_choice("reduction", reduction, ("mean", "none"))
    b = x0.shape[0]
    dev = generator.device if generator is not None else x0.device
    if i is None:
        i = torch.randint(1, n_steps + 1, (b,), generator=generator, device=dev)
    times = sde.discrete_times(n_steps).to(x0.device)
    t = times[i.to(x0.device)]
    if noise is None:
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
    abar = torch.cat(
        [torch.ones(1, dtype=torch.float64), torch.cumprod(1 - sde.discrete_betas(n_steps), 0)]
    )
    abar = abar.to(x0.device)[i.to(x0.device)]
    x_i = batch_coeff(abar.sqrt(), x0) * x0 + batch_coeff((1 - abar).sqrt(), x0) * noise
    sigma = sde.marginal(t)[1]
    eps_hat = -batch_coeff(sigma, x0) * model(x_i, t.to(x0.dtype), y)
    losses = (noise - eps_hat).reshape(b, -1).pow(2).sum(1)
    return losses.mean() if reduction == "mean" else losses
