"""EDM's sampler (Karras et al. 2022, Alg. 1 and 2) and Restart sampling (Xu et al. 2023).

Both integrate the probability-flow ODE in EDM's variables: the noise level sigma = sigma_t/alpha_t
and the scaled state x_hat = x/alpha_t (Karras et al. Eq. 4 and Alg. 1 with s(t) = alpha_t; for VE
alpha = 1 and sigma = sigma_t). There the ODE is d x_hat / d sigma = (x_hat - D(x_hat; sigma))/sigma
(their Eq. 3 with sigma(t) = t) with the denoiser D(x_hat; sigma) = (x + sigma_t^2 score(x, t))
/ alpha_t (Tweedie), so the slope is d = -sigma_t score(x, t), the noise prediction. A step is
Heun's method in sigma, after an optional "churn" that raises sigma to sigma_hat = (1 + gamma) sigma
by adding fresh noise (Alg. 2). All per-step scalars are computed for the grid once, in
``init``; a step launches only tensor updates (no host-device sync).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..sde import SDE
from .base import Context, Solver


def _sigma(sde: SDE, t: Tensor) -> Tensor:
    """EDM's noise level sigma = sigma_t / alpha_t = exp(-lambda_t) (float64)."""
    return torch.exp(-sde.log_snr(t))


@dataclass
class _Plan:
    """Per-interval scalars (float64, on the grid's device) of ``_churned_heun_step``: alpha_0;
    the churned time t_hat with alpha and sigma_t there; the churn noise scale; the step
    h = sigma_1 - sigma_hat; t_1 with alpha and sigma_t there; and, on the host, whether the step
    gets the second-order correction (Alg. 1: only where sigma_1 != 0)."""

    a0: Tensor
    t_hat: Tensor
    a_hat: Tensor
    st_hat: Tensor
    noise: Tensor
    h: Tensor
    t1: Tensor
    a1: Tensor
    st1: Tensor
    heun: list[bool]


def _plan(sde: SDE, ts: Tensor, gamma: Tensor, s_noise: float) -> _Plan:
    """The ``_Plan`` of the intervals ts[i] > ts[i+1] with churn gamma[i] (0: none).

    sigma_hat = (1 + gamma) sigma_i, at the time t_hat with that noise level (t_i exactly where
    gamma = 0); the churn noise is S_noise sqrt(sigma_hat^2 - sigma_i^2) (Alg. 2).
    gamma is capped so that t_hat <= T: EDM's sigma has no upper end, an SDE's stops at T.
    """
    c = sde.coeffs(ts)
    sigma = torch.exp(-c.log_snr)  # _sigma at every grid time
    s0, t0 = sigma[:-1], ts[:-1]
    t_top = torch.tensor(sde.T, dtype=ts.dtype, device=ts.device)
    gamma = torch.minimum(gamma, _sigma(sde, t_top) / s0 - 1).clamp(min=0)
    t_hat = torch.where(gamma > 0, sde.t_from_log_snr(-torch.log(s0 * (1 + gamma))), t0)
    c_hat = sde.coeffs(t_hat)
    s_hat = torch.exp(-c_hat.log_snr)  # = sigma_i exactly where gamma = 0
    return _Plan(
        a0=c.alpha[:-1],
        t_hat=t_hat,
        a_hat=c_hat.alpha,
        st_hat=c_hat.sigma,
        noise=s_noise * torch.sqrt(s_hat**2 - s0**2),
        h=sigma[1:] - s_hat,
        t1=ts[1:],
        a1=c.alpha[1:],
        st1=c.sigma[1:],
        heun=(sigma[1:] > 0).tolist(),  # one sync per solve, not per step
    )


def _churned_heun_step(
    ctx: Context, p: _Plan, i: int, x: Tensor, noise: Tensor | None = None
) -> Tensor:
    """Step i of Karras et al. 2022, Alg. 2 (loop body) in x_hat = x / alpha; returns x_{i+1}.

    Without ``noise`` (or with gamma_i = 0) this is Alg. 1's step: Heun's method in sigma,
    Euler on a last step to sigma = 0. Two score calls, one on an Euler step.
    """
    x_hat = x / p.a0[i]
    if noise is not None:  # churn: x_hat_i = x_i + sqrt(t_hat^2 - t_i^2) eps_i
        x_hat = x_hat + p.noise[i] * noise
    d = -p.st_hat[i] * ctx.score(p.a_hat[i] * x_hat, p.t_hat[i])  # d_i at t_hat
    x_next = x_hat + p.h[i] * d  # Euler step
    if p.heun[i]:  # the second-order correction where sigma_{i+1} != 0
        d_prime = -p.st1[i] * ctx.score(p.a1[i] * x_next, p.t1[i])
        x_next = x_hat + p.h[i] * (0.5 * d + 0.5 * d_prime)
    return p.a1[i] * x_next


def _check_s_noise(s_noise: float) -> float:
    if not (isinstance(s_noise, int | float) and 0 < s_noise < math.inf):
        raise ValueError(f"S_noise must be a positive number, got {s_noise!r}")
    return float(s_noise)


class EDM(Solver):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2), for any SDE through sigma = sigma_t
    / alpha_t and x_hat = x / alpha_t (see the module docstring).

    Step i (from t_i to t_{i+1} on the grid, sigma_i = sigma(t_i)):
        gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0
        sigma_hat = (1 + gamma_i) sigma_i;  x_hat += S_noise sqrt(sigma_hat^2 - sigma_i^2) z
        d = (x_hat - D(x_hat; sigma_hat)) / sigma_hat;  x' = x_hat + (sigma_{i+1} - sigma_hat) d
        if sigma_{i+1} != 0:  x' = x_hat + (sigma_{i+1} - sigma_hat) (d + d'(x', sigma_{i+1})) / 2
    with N = steps. ``S_churn = 0`` (the default) is the deterministic Heun sampler of Alg. 1.
    S_tmin and S_tmax are noise levels sigma (EDM's t, where sigma(t) = t). gamma is also capped
    so that sigma_hat <= sigma(T): a step that starts at T gets no churn.

    Defaults are those of the NVlabs code's ``edm_sampler`` (S_churn = 0, S_tmin = 0,
    S_tmax = inf, S_noise = 1): Table 5's tuned values (e.g. ImageNet-64: S_churn = 40,
    S_tmin = 0.05, S_tmax = 50, S_noise = 1.003) were found by a grid search per model, and
    S_noise > 1 adds more noise than the exact process, a bias with an exact score.

    The end: the grid ends at eps with sigma(eps) > 0, so every step is a Heun step and
    NFE = 2 steps. ``denoise=True`` then adds EDM's last step sigma_min -> 0 (Euler from sigma to
    0 lands on D(x_hat; sigma), which is Tweedie's x0), so ``steps=n, denoise=True`` is EDM's
    sampler with num_steps = n + 1 (NFE 2n + 1), except for churn on that last step. An explicit
    grid ending at t = 0 (VP, sub-VP: sigma = 0) gets the Euler step itself: NFE = 2 steps - 1.
    Default grid: Karras et al.'s rho = 7 grid in sigma (``karras``).
    """

    name = "edm"
    order, nfe_per_step = 2, 2
    stochastic = False  # S_churn = 0; __init__ sets S_churn > 0
    default_time_grid = "karras"
    #: Steps when none are given (issue 20): as ``ode_heun`` (200 NFE); measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 100

    def __init__(
        self,
        S_churn: float = 0.0,
        S_tmin: float = 0.0,
        S_tmax: float = math.inf,
        S_noise: float = 1.0,
    ):
        if not (isinstance(S_churn, int | float) and 0 <= S_churn < math.inf):
            raise ValueError(f"S_churn must be a finite number >= 0, got {S_churn!r}")
        if not (isinstance(S_tmin, int | float) and isinstance(S_tmax, int | float)):
            raise ValueError(f"S_tmin and S_tmax must be numbers, got {S_tmin!r}, {S_tmax!r}")
        if not 0 <= S_tmin <= S_tmax:
            raise ValueError(f"need 0 <= S_tmin <= S_tmax, got S_tmin={S_tmin}, S_tmax={S_tmax}")
        self.S_churn, self.S_tmin, self.S_tmax = float(S_churn), float(S_tmin), float(S_tmax)
        self.S_noise = _check_s_noise(S_noise)
        self.stochastic = self.S_churn > 0

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> _Plan:
        s0 = _sigma(ctx.sde, ts[:-1])
        in_range = (s0 >= self.S_tmin) & (s0 <= self.S_tmax)
        gamma = min(self.S_churn / ctx.steps, math.sqrt(2) - 1) * in_range.to(s0.dtype)
        return _plan(ctx.sde, ts, gamma, self.S_noise)

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state: _Plan):
        # Alg. 2 draws eps_i every step; the churn of step i is charged to its grid interval
        noise = ctx.noise(t0, t1) if self.stochastic else None
        return _churned_heun_step(ctx, state, i, x, noise), state


@dataclass
class _RestartPlan:
    main: _Plan
    restart: _Plan
    after: int  # the main step that lands on sigma_min: the restarts follow it
    a_min: Tensor  # alpha at the restart interval's ends (the grid time nearest sigma_min ...
    a_max: Tensor  # ... and the time of sigma_max)
    jump: Tensor  # S_noise sqrt(sigma_max^2 - sigma_min^2)


class Restart(Solver):
    """Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes",
    Sec. 4): EDM's Heun ODE steps (Karras et al. 2022, Alg. 1, as in ``edm``) on the grid, and
    on reaching sigma_min, K times: a forward-noise jump to sigma_max,
        x_hat <- x_hat + S_noise sqrt(sigma_max^2 - sigma_min^2) z,
    and ``restart_steps`` Heun steps back from sigma_max to sigma_min on a rho = 7 grid in sigma.
    The jump is the exact forward transition, so the restarts contract the ODE's accumulated
    error; K = 0 is the ODE sampler alone.

    ``interval = (sigma_min, sigma_max)`` is in noise levels sigma = sigma_t / alpha_t (the
    paper's t, EDM's sigma(t) = t). As in their code, sigma_min is moved to the nearest grid
    point (nearest in sigma, among those below sigma_max). Defaults are their CIFAR-10 VP setting
    (README and ``params_cifar10_vp.txt``: interval [0.06, 0.30], K = 2, N_Restart = 3 time
    points, i.e. ``restart_steps = 2`` intervals). Their command lines also add a churn
    ``restart_gamma = 0.05`` (EDM's gamma) to each restart step and S_noise = 1.003; we default
    to 0 and 1, the algorithm as published, exact in the limit of small steps of both the grid
    and the restarts (``restart_steps`` does not grow with ``steps``; both are options).
    The end is as for ``edm``: Heun steps down to eps (``denoise=True`` adds Tweedie's step).

    NFE = 2 steps + 2 K restart_steps, less one for each Euler step to sigma = 0 (an explicit grid
    ending at t = 0 for VP/sub-VP: its last step, and each restart if it starts there).
    Default grid: ``karras`` (EDM's, as in their code).
    """

    name = "restart"
    # Defaults' metadata (K = 2); __init__ sets the instance's. Order: none with restarts, whose
    # restart_steps do not grow with the grid; with K = 0 it is edm's Heun sampler (2).
    order, nfe_per_step, stochastic = None, 2, True
    default_time_grid = "karras"
    #: Steps when none are given (issue 20): 100 Heun steps plus the restarts (208 NFE).
    default_steps = 100

    def __init__(
        self,
        interval: tuple[float, float] = (0.06, 0.30),
        K: int = 2,
        restart_steps: int = 2,
        restart_gamma: float = 0.0,
        S_noise: float = 1.0,
    ):
        lo_hi = tuple(interval) if isinstance(interval, tuple | list) else ()
        if not (len(lo_hi) == 2 and all(isinstance(v, int | float) for v in lo_hi)):
            raise ValueError(f"interval must be a pair (sigma_min, sigma_max), got {interval!r}")
        if not 0 < lo_hi[0] < lo_hi[1]:
            raise ValueError(f"interval needs 0 < sigma_min < sigma_max, got {interval!r}")
        if isinstance(K, bool) or not isinstance(K, int) or K < 0:
            raise ValueError(f"K (number of restarts) must be an integer >= 0, got {K!r}")
        bad_steps = isinstance(restart_steps, bool) or not isinstance(restart_steps, int)
        if bad_steps or restart_steps < 1:
            raise ValueError(f"restart_steps must be an integer >= 1, got {restart_steps!r}")
        if not (isinstance(restart_gamma, int | float) and 0 <= restart_gamma <= math.sqrt(2) - 1):
            raise ValueError(f"restart_gamma must be in [0, sqrt(2) - 1], got {restart_gamma!r}")
        self.interval = (float(lo_hi[0]), float(lo_hi[1]))
        self.K, self.restart_steps = K, restart_steps
        self.restart_gamma = float(restart_gamma)
        self.S_noise = _check_s_noise(S_noise)
        self.stochastic = self.K > 0
        self.order = None if self.K > 0 else 2

    def nfe(self, steps: int) -> int:
        """2 per Heun step on the grid, plus K restarts of ``restart_steps`` Heun steps."""
        return 2 * steps + 2 * self.K * self.restart_steps

    def check(self, sde: SDE, steps: int | None) -> None:
        s_top = float(_sigma(sde, torch.tensor(sde.T, dtype=torch.float64)))
        if self.interval[1] > s_top:
            raise ValueError(
                f"interval's sigma_max = {self.interval[1]:g} lies above sigma(T) = {s_top:.6g}: "
                f"the restart interval must lie in (0, T] (sigma in (0, {s_top:.6g}])"
            )

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> _RestartPlan:
        sde, (s_min, s_max) = ctx.sde, self.interval
        sigma = _sigma(sde, ts)
        # The restart starts at the grid point nearest sigma_min (as their code, argmin |t_i -
        # t_min|), among those below sigma_max; decided once, on the host.
        below = (sigma[1:] < s_max).tolist()
        if not any(below):
            raise ValueError(
                f"interval's sigma_max = {s_max:g} must lie above the grid's end "
                f"(sigma = {float(sigma[-1]):.6g})"
            )
        dist = (sigma[1:] - s_min).abs().tolist()
        j = 1 + min((k for k in range(len(dist)) if below[k]), key=dist.__getitem__)
        # The restart grid: rho = 7 in sigma from sigma_max to the grid's sigma_j.
        u = torch.linspace(0.0, 1.0, self.restart_steps + 1, dtype=ts.dtype, device=ts.device)
        r_hi, r_lo = s_max ** (1 / 7), sigma[j] ** (1 / 7)
        r_ts = sde.t_from_log_snr(-7 * torch.log(r_hi + u * (r_lo - r_hi)))
        r_ts[-1] = ts[j]  # the restart ends exactly on the grid
        gamma = torch.full_like(r_ts[:-1], self.restart_gamma)
        zero = torch.zeros_like(ts[:-1])
        return _RestartPlan(
            main=_plan(sde, ts, zero, 1.0),
            restart=_plan(sde, r_ts, gamma, self.S_noise),
            after=j - 1,
            a_min=sde.marginal(ts[j])[0],
            a_max=sde.marginal(r_ts[0])[0],
            jump=self.S_noise * torch.sqrt(_sigma(sde, r_ts[0]) ** 2 - sigma[j] ** 2),
        )

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state: _RestartPlan):
        x = _churned_heun_step(ctx, state.main, i, x)
        if i == state.after:
            churn = self.restart_gamma > 0
            for _ in range(self.K):
                # Forward jump sigma_min -> sigma_max: x_hat + sqrt(max^2 - min^2) z, fresh
                # noise (normal(), not a Brownian increment: the restarts re-run an interval).
                x = state.a_max * (x / state.a_min + state.jump * ctx.noise.normal())
                for k in range(self.restart_steps):  # the ODE back to sigma_min
                    z = ctx.noise.normal() if churn else None
                    x = _churned_heun_step(ctx, state.restart, k, x, z)
        return x, state
