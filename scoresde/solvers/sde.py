"""Predictors for the reverse-time SDE: Euler–Maruyama, reverse diffusion, ancestral sampling."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE
from .base import Context, Solver, check_choice


class EulerMaruyama(Solver):
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, Eq. 6; Kloeden & Platen 9.1).

    With h = t0 - t1 > 0:  x1 = x - [f(x, t0) - g(t0)^2 score(x, t0)] h + g(t0) sqrt(h) z.
    Strong order 1/2 in general, 1 for this additive-noise SDE; weak order 1.
    """

    name = "euler_maruyama"
    stochastic = True
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "karras"

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        h = t0 - t1
        drift = ctx.reverse_drift(x, t0, ctx.score(x, t0))
        g = torch.sqrt(ctx.sde._g2(t0) * h)
        return x - drift * h + g * ctx.noise(), state


class ReverseDiffusion(Solver):
    """Song et al.'s reverse-diffusion predictor (App. E, Eq. 46), via ``sde.discretize``.

    The forward step t1 -> t0 is x_{t0} = x_{t1} + f_d + G z with f_d = (a - 1) x, G^2 = v (the
    exact Gaussian transition); reversed: x1 = x - f_d + G^2 score(x, t0) + G z.
    """

    name = "reverse_diffusion"
    stochastic = True

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        f_d, g = ctx.sde.discretize(x, t0, t0 - t1)
        return x - f_d + g**2 * ctx.score(x, t0) + g * ctx.noise(), state


class Ancestral(Solver):
    """Ancestral sampling: DDPM's rule for VP (Ho et al. 2020, Alg. 2), SMLD's for VE.

    On the grid interval t1 < t0 the forward transition is x_{t0} = a x_{t1} + sqrt(v) z
    (``sde.transition``); for VP this is DDPM's beta_i = 1 - a^2 = v, for VE SMLD's
    v = sigma_{t0}^2 - sigma_{t1}^2. The step is
        x1 = (x + v score(x, t0)) / a + s z,
    with s^2 = v (``variance="beta"``, Ho et al.'s sigma_t^2 = beta_t) or the posterior variance
    s^2 = v sigma_{t1}^2 / sigma_{t0}^2 (``"posterior"``, beta-tilde; also Song et al.'s SMLD rule).
    As in Algorithm 2, no noise is added on the final step. Sub-VP has no such discrete chain in
    Song et al., so it is rejected.
    """

    name = "ancestral"
    stochastic = True
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "logsnr"

    def __init__(self, variance: str = "posterior"):
        self.variance = check_choice("variance", variance, ("posterior", "beta"))

    def check(self, sde: SDE, steps: int) -> None:
        if sde.ancestral_rule is None:
            raise ValueError(
                "solver 'ancestral' needs an SDE with a discrete chain (VPSDE: DDPM, VESDE: SMLD); "
                f"{type(sde).__name__} has none. Use 'reverse_diffusion' or 'euler_maruyama'."
            )

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        a, v = ctx.sde.transition(t1, t0)
        x_mean = (x + v * ctx.score(x, t0)) / a
        if i == ctx.steps - 1:
            return x_mean, state
        var = v
        if self.variance == "posterior":
            var = v * torch.exp(2 * (ctx.sde._log_sigma(t1) - ctx.sde._log_sigma(t0)))
        return x_mean + torch.sqrt(var) * ctx.noise(), state
