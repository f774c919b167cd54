"""Bridge to torchsde: integrate our forward or reverse SDEs with any torchsde method."""

from __future__ import annotations

import torch
from torch import Tensor

from ..noise import BrownianTreeNoise
from ..sde import SDE, ReverseSDE, as_time, batch_coeff
from ..validation import check_bool, check_choice, check_positive
from .base import Context, Solver

__all__ = ["TorchsdeSDE", "TorchsdeSolver", "to_torchsde"]


class TorchsdeSDE(torch.nn.Module):
    """An object ``torchsde.sdeint`` accepts (``noise_type="diagonal"``, ``sde_type="ito"``).

    Wraps a forward ``SDE`` (time runs forward, s = t) or a ``ReverseSDE``, which torchsde
    integrates in reversed time s = T - t: y(s) = x(T - s) solves
    ``dy = -[f - g^2 score](y, T - s) ds + g(T - s) dW_s`` (Anderson 1982).
    torchsde works on (batch, d) states, so events are flattened and reshaped around each call.
    """

    noise_type = "diagonal"

    def __init__(self, sde: SDE | ReverseSDE, event_shape: tuple[int, ...], sde_type: str = "ito"):
        super().__init__()
        # g depends on t only (additive noise), so the Ito and Stratonovich forms coincide and
        # either kind of torchsde solver integrates the same equation.
        self.sde_type = sde_type
        self.target = sde
        self.event_shape = tuple(event_shape)
        self.reverse = isinstance(sde, ReverseSDE)

    def _time(self, s: Tensor) -> Tensor:
        s = as_time(s)
        return self.target.T - s if self.reverse else s

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x = y.reshape(y.shape[0], *self.event_shape)
        drift = self.target.drift(x, self._time(s).to(y.device))
        return (-drift if self.reverse else drift).reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        g = self.target.diffusion(self._time(s)).to(device=y.device)
        return batch_coeff(g, y).expand_as(y).contiguous()


def to_torchsde(
    sde: SDE | ReverseSDE, event_shape: tuple[int, ...], sde_type: str = "ito"
) -> TorchsdeSDE:
    """Wrap ``sde`` (forward) or ``sde.reverse(score_fn)`` for ``torchsde.sdeint``.

    For a reverse SDE, integrate over s in [0, T - eps] from y(0) = x_T; y(s) approximates x_{T-s}.
    ``sde_type="stratonovich"`` lets Stratonovich solvers (``reversible_heun``, ``midpoint``, ...)
    run the same equation: the noise is additive, so there is no correction term.
    """
    return TorchsdeSDE(sde, event_shape, sde_type)


#: Drift evaluations per step of torchsde's fixed-step methods (measured through ``sample``'s
#: NFE count by tests/test_sampling.py's declared-vs-measured test). torchsde's other two methods
#: do not run here: ``adjoint_reversible_heun`` is for adjoints only, ``log_ode`` is Stratonovich
#: but not in ``_STRATONOVICH``.
_NFE_PER_STEP = {
    "euler": 1,
    "milstein": 1,
    "srk": 10,
    "euler_heun": 1,
    "heun": 2,
    "midpoint": 2,
    "reversible_heun": 1,
}
_STRATONOVICH = ("midpoint", "heun", "euler_heun", "reversible_heun", "log_ode_midpoint")


class TorchsdeSolver(Solver):
    """Integrate the reverse SDE with ``torchsde.sdeint`` and any of its methods.

    Fixed-step methods use the uniform step (T - eps) / steps; ``adaptive=True`` uses torchsde's
    step-size control with ``rtol``/``atol``. The Brownian path is a ``torchsde.BrownianInterval``
    seeded from ``generator`` (one integer draw), so runs are reproducible. Milstein and SRK work
    because the noise is diagonal (here even additive: g depends on t only).
    End: returns the SDE solution at eps, carrying sigma(eps), like ``euler_maruyama``.
    """

    name = "torchsde"
    stochastic = True
    fixed_grid = False  # torchsde owns its time stepping; the front door passes only [T, eps]
    per_sample_seeds = False  # one Brownian path for the batch: seeds are rejected
    nfe_per_step: int | None = 1  # method="euler"; __init__ sets the method's (None when adaptive)
    #: 500 fixed steps (as ``euler_maruyama``); __init__ sets None with ``adaptive=True``.
    default_steps: int | None = 500

    def nfe(self, steps: int) -> int | None:
        """Per step as ``nfe_per_step``, plus the one call ``sdeint`` makes to check shapes and,
        for ``reversible_heun``, one for its initial state."""
        if self.nfe_per_step is None:
            return None
        return self.nfe_per_step * steps + 1 + (self.method == "reversible_heun")

    def __init__(
        self, method: str = "euler", adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-3
    ):
        import torchsde

        self.method = check_choice("method", method, tuple(torchsde.settings.METHODS.all()))
        self.adaptive = check_bool("adaptive", adaptive)
        # rtol = -1 made torchsde's controller shrink forever (150 s, 299k NFE).
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)
        # None for the methods that do not run (see _NFE_PER_STEP).
        self.nfe_per_step = None if self.adaptive else _NFE_PER_STEP.get(self.method)
        self.default_steps = None if self.adaptive else type(self).default_steps

    def check(self, sde: SDE, steps: int | None) -> None:
        if not self.adaptive and not steps:
            raise ValueError("solver 'torchsde' needs steps >= 1 unless adaptive=True")

    def integrate(self, ctx: Context, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        import torchsde

        if isinstance(ctx.noise, BrownianTreeNoise):
            # Its dyadic tree (halfway_tree) recursed without end on torchsde's own tensor times.
            raise ValueError(
                "solver 'torchsde' draws its own Brownian interval from generator; "
                "noise='brownian' applies to the fixed-step solvers (use noise='gaussian')"
            )
        if ctx.noise.generators is not None:
            raise ValueError(
                "solver 'torchsde' draws one Brownian path for the whole batch; per-sample seeds "
                "are not supported (pass generator= instead)"
            )
        shape = x.shape
        rev = ctx.sde.reverse(lambda y, t: ctx.score(y, t))
        sde_type = "stratonovich" if self.method in _STRATONOVICH else "ito"
        wrapped = to_torchsde(rev, tuple(shape[1:]), sde_type)
        y0 = x.reshape(shape[0], -1)
        ts = torch.stack([torch.zeros_like(t0), t0 - t1]).to(y0.dtype)
        s_end = float(ts[-1])
        g = ctx.noise.generator
        seed = torch.randint(2**62, (1,), generator=g, device=g.device if g else None)
        bm = torchsde.BrownianInterval(
            t0=0.0,
            t1=s_end,
            size=y0.shape,
            dtype=y0.dtype,
            device=y0.device,
            entropy=int(seed),
            # SRK needs space-time Levy area; the others ignore it.
            levy_area_approximation="space-time" if self.method == "srk" else "none",
        )
        steps = ctx.steps or 1
        ys = torchsde.sdeint(
            wrapped,
            y0,
            ts,
            bm=bm,
            method=self.method,
            dt=s_end / steps,
            adaptive=self.adaptive,
            rtol=self.rtol,
            atol=self.atol,
        )
        return ys[-1].reshape(shape)
