"""What every solver shares: the step contract, the solve context, noise sources."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..noise import Noise
from ..parameterization import tweedie_x0
from ..sde import SDE, ScoreFn
from ..validation import batch_time, check_callable, check_choice

__all__ = [
    "Context",
    "CountingScore",
    "Noise",
    "NonFiniteError",
    "Solver",
    "check_choice",
]


class NonFiniteError(FloatingPointError):
    """NaN or inf appeared in the samples; the message names the first step or time."""


class CountingScore:
    """Wraps a user ``score_fn(x, t)``: broadcasts t to (batch,), checks the output, counts calls.

    ``nfe`` is the number of calls actually made, so every reported NFE is a measurement.
    """

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = check_callable("score_fn", score_fn)
        self.nfe = 0
        self._grid: dict[int, tuple[Tensor, Tensor]] = {}

    def use_grid(self, ts: Tensor, x: Tensor) -> tuple[Tensor, ...]:
        """The grid's times as 0-d tensors (``ts.unbind()``) for a solve's loop to pass to its
        steps; their casts to x's dtype, batched, are made here once for the whole grid, so a
        score call at one of these times (the same objects) skips ``batch_time``'s per-call cast
        and expand. The values are ``batch_time``'s exactly (one float64 -> dtype rounding)."""
        times = ts.unbind(0)
        batched = ts.to(device=x.device, dtype=x.dtype)[:, None].expand(len(times), x.shape[0])
        self._grid = {id(t): (t, b) for t, b in zip(times, batched.unbind(0), strict=True)}
        return times

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        hit = self._grid.get(id(t))
        b = hit[1] if hit is not None and hit[0] is t else None
        if b is not None and b.shape[0] == x.shape[0] and b.dtype == x.dtype:
            t_batch = b
        else:  # not a grid time, or a state of another batch or dtype (a step hook's)
            t_batch = batch_time(t, x)
        out = self.score_fn(x, t_batch)
        self.nfe += 1
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"score_fn must return a tensor of x's shape {tuple(x.shape)}, got {got}"
            )
        return out.to(x.dtype)


@dataclass
class Context:
    """What a solver sees: the SDE, the counted score, the noise source and the grid length.

    ``noise(t0, t1)`` is the standard normal increment of a step over [t1, t0] (a Brownian
    increment for ``noise="brownian"``), ``noise.normal()`` a draw outside any interval
    (see ``scoresde.noise``).
    """

    sde: SDE
    score: CountingScore
    noise: Noise
    steps: int
    stats: dict[str, Any] = field(default_factory=dict)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) in the schedule's float64 (``sde.marginal``)."""
        return self.sde.marginal(t)

    def pf_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Probability-flow ODE drift f x - g^2 score / 2 (Song et al. Eq. 13); one score call."""
        return self.sde.reverse_drift(x, t, self.score(x, t), 0.5)

    def data_pred(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Tweedie's x0 estimate (x + sigma^2 score) / alpha (``tweedie_x0``)."""
        return tweedie_x0(x, score, *self.marginal(t))


def affine_step(
    weights: dict[str, Tensor], i: int, x: Tensor, score: Tensor, noise: Tensor | None = None
) -> Tensor:
    """x_1 = c_x[i] x + c_score[i] score (+ c_noise[i] noise), for solvers whose step is this
    affine map with per-step scalars computed once for the grid in ``init``: a step then launches
    one fused ``addcmul`` per term (0-d weights on the device, no sync) and no schedule arithmetic.
    """
    x1 = torch.addcmul(weights["x"][i] * x, weights["score"][i], score)
    return x1 if noise is None else torch.addcmul(x1, weights["noise"][i], noise)


@functools.cache
def _init_options(init) -> tuple[str, ...]:
    """The keyword options of a solver's ``__init__``, once per class (``inspect.signature``
    took a tenth of a short ``sample()`` call when it ran on every call)."""
    return tuple(p for p in inspect.signature(init).parameters if p != "self")


class Solver:
    """One solver: a step rule plus metadata, constructed from its keyword options.

    Fixed-step solvers implement ``step(ctx, i, t0, t1, x, state) -> (x, state)`` for one interval
    t0 > t1 of the grid (``init`` makes the state); the front door owns the grid, NFE counting,
    callbacks and non-finite checks. Solvers with ``fixed_grid = False`` implement ``integrate``.

    Metadata (torchsde's ``base_solver.py``, diffrax's ``AbstractSolver``) is class data that the
    front door, the tests, the benchmarks and ``compare`` read instead of lists of names. Where it
    depends on an option (``pc``'s corrector steps, ``dpm_solver``'s order, ``edm``'s churn, ...)
    the class value is the default options' and ``__init__`` sets the instance's own, so read it
    from ``make_solver(name, **options)``.
    """

    name: ClassVar[str]
    #: Order of convergence in the step size h with the exact score, as the tests measure it: for
    #: deterministic solvers the order of the step rule (local error O(h^(order + 1)); global
    #: O(h^order) once a multistep method has its history), for stochastic ones the strong
    #: (pathwise) order on our SDEs, whose noise is additive (``noise="brownian"`` shows it
    #: through ``sample``). None: no order in h (Langevin correctors, whose step size does not
    #: shrink with the grid; adaptive and external solvers, which follow their tolerances).
    order: float | None = None
    #: Score calls per grid step (None: the solver chooses its own steps). ``nfe(steps)`` is the
    #: count for a whole solve.
    nfe_per_step: int | None = 1
    #: Whether the solver draws noise (simulates the reverse SDE rather than the PF-ODE).
    stochastic: bool = False
    #: False for solvers that choose their own steps (``integrate``); they get only [T, eps].
    fixed_grid: bool = True
    #: Whether a sample drawn with ``sample(seeds=...)`` (one generator per sample) is independent
    #: of the rest of its batch (False: the batch couples the samples, or ``seeds`` is rejected).
    per_sample_seeds: bool = True
    #: Grid used when ``time_grid`` is not given; chosen by ``benchmarks/samplers.py``.
    default_time_grid: str = "uniform"
    #: Steps used when ``sample`` gets no ``steps`` (None: the solver needs them given).
    default_steps: int | None = None

    def nfe(self, steps: int) -> int | None:
        """Score calls of ``sample(..., steps=steps)`` on a grid ending at eps > 0 (every named
        grid does), without ``denoise``'s one extra call; None where the solver chooses its own
        steps. ``nfe_per_step * steps`` unless a solver adds calls outside its grid steps
        (``restart``). An explicit grid ending at t = 0 saves one call for each Euler step to
        sigma = 0 (``edm``, ``restart``)."""
        return None if self.nfe_per_step is None else self.nfe_per_step * steps

    def __init__(self) -> None:  # solvers without options; ``options()`` then lists none
        pass

    def check(self, sde: SDE, steps: int | None) -> None:
        """Raise ValueError if this solver cannot run ``sde`` with ``steps`` (checked once)."""

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> Any:
        return None

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state: Any):
        raise NotImplementedError

    def integrate(self, ctx: Context, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        raise NotImplementedError

    @classmethod
    def options(cls) -> list[str]:
        return list(_init_options(cls.__init__))

    @classmethod
    def create(cls, **options) -> Solver:
        """Construct, rejecting unknown options with the list of accepted ones."""
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            raise ValueError(
                f"solver {cls.name!r} got unknown option(s) {unknown}; "
                f"it accepts {cls.options() or 'no options'}"
            )
        return cls(**options)
