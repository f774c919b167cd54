"""Predictors for the reverse-time SDE: Euler–Maruyama, reverse diffusion, ancestral sampling."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE
from ..validation import check_choice
from .base import Context, Solver, affine_step


class EulerMaruyama(Solver):
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, Eq. 6; Kloeden & Platen 9.1).

    With h = t0 - t1 > 0:  x1 = x - [f(x, t0) - g(t0)^2 score(x, t0)] h + g(t0) sqrt(h) z.
    Strong order 1/2 in general, 1 for this additive-noise SDE; weak order 1.
    End: the last step adds noise like every other and lands on the grid's last time (eps by
    default), so x_eps carries the residual noise sigma(eps).
    """

    name = "euler_maruyama"
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 500
    order = 1  # strong, additive noise
    stochastic = True
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "karras"

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict[str, Tensor]:
        # x1 = (1 - f h) x + g^2 h score + g sqrt(h) z, as an affine_step.
        c, h = ctx.sde.coeffs(ts[:-1]), ts[:-1] - ts[1:]
        g2h = c.g2 * h
        return {"x": 1 - c.f * h, "score": g2h, "noise": torch.sqrt(g2h)}

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        return affine_step(state, i, x, ctx.score(x, t0), ctx.noise(t0, t1)), state


class ReverseDiffusion(Solver):
    """Song et al.'s reverse-diffusion predictor (App. E, Eq. 46); ``sde.discretize`` gives the
    same forward step.

    The forward step t1 -> t0 is x_{t0} = x_{t1} + f_d + G z with f_d = (a - 1) x, G^2 = v (the
    exact Gaussian transition); reversed: x1 = x - f_d + G^2 score(x, t0) + G z.
    End: as ``euler_maruyama``, noise on the last step too; returns x at eps.
    """

    name = "reverse_diffusion"
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 500
    order = 1  # strong, additive noise
    stochastic = True

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict[str, Tensor]:
        # x1 = (2 - a) x + v score + sqrt(v) z with (a, v) = transition(t1, t0), for the grid.
        a, v = ctx.sde.transition(ts[1:], ts[:-1])
        return {"x": 2 - a, "score": v, "noise": torch.sqrt(v)}

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        return affine_step(state, i, x, ctx.score(x, t0), ctx.noise(t0, t1)), state


class Ancestral(Solver):
    """Ancestral sampling: DDPM's rule for VP (Ho et al. 2020, Alg. 2), SMLD's for VE.

    On the grid interval t1 < t0 the forward transition is x_{t0} = a x_{t1} + sqrt(v) z
    (``sde.transition``); for VP this is DDPM's beta_i = 1 - a^2 = v, for VE SMLD's
    v = sigma_{t0}^2 - sigma_{t1}^2. The step is
        x1 = (x + v score(x, t0)) / a + s z,
    with s^2 = v (``variance="beta"``, Ho et al.'s sigma_t^2 = beta_t) or the posterior variance
    s^2 = v sigma_{t1}^2 / sigma_{t0}^2 (``"posterior"``, beta-tilde; also Song et al.'s SMLD rule).
    As in Algorithm 2, no noise is added on the final step: it returns the posterior mean of
    x_eps given x at the previous grid time. Sub-VP has no such discrete chain in Song et al., so
    it is rejected.
    """

    name = "ancestral"
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 500
    #: Strong order 1/2: the noiseless final step (Alg. 2) leaves out an increment of std
    #: ~ g sqrt(h); the other steps converge at order 1 (tests/test_noise.py).
    order = 0.5
    stochastic = True
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "logsnr"

    def __init__(self, variance: str = "posterior"):
        self.variance = check_choice("variance", variance, ("posterior", "beta"))

    def check(self, sde: SDE, steps: int | None) -> None:
        if sde.ancestral_rule is None:
            raise ValueError(
                "solver 'ancestral' needs an SDE with a discrete chain (VPSDE: DDPM, VESDE: SMLD); "
                f"{type(sde).__name__} has none. Use 'reverse_diffusion' or 'euler_maruyama'."
            )

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict[str, Tensor]:
        # x1 = x / a + (v / a) score + s z: the per-step scalars, once for the grid.
        a, v = ctx.sde.transition(ts[1:], ts[:-1])
        var = v
        if self.variance == "posterior":
            log_sigma = ctx.sde.log_sigma(ts)
            var = v * torch.exp(2 * (log_sigma[1:] - log_sigma[:-1]))
        return {"x": 1 / a, "score": v / a, "noise": torch.sqrt(var)}

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        noise = None if i == ctx.steps - 1 else ctx.noise(t0, t1)  # none on the final step (Alg. 2)
        return affine_step(state, i, x, ctx.score(x, t0), noise), state
