"""What every solver shares: the step contract, the solve context, noise sources."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..parameterization import tweedie_x0
from ..sde import SDE, ScoreFn, randn
from ..validation import batch_time, check_callable, check_choice, check_generator, check_int

__all__ = ["Context", "CountingScore", "NoiseSource", "NonFiniteError", "Solver", "check_choice"]


class NonFiniteError(FloatingPointError):
    """NaN or inf appeared in the samples; the message names the first step or time."""


class CountingScore:
    """Wraps a user ``score_fn(x, t)``: broadcasts t to (batch,), checks the output, counts calls.

    ``nfe`` is the number of calls actually made, so every reported NFE is a measurement.
    """

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = check_callable("score_fn", score_fn)
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.score_fn(x, batch_time(t, x))
        self.nfe += 1
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"score_fn must return a tensor of x's shape {tuple(x.shape)}, got {got}"
            )
        return out.to(x.dtype)


class NoiseSource:
    """Standard normal draws shaped like the samples.

    With ``seeds`` each sample has its own generator, so a sample's noise (and result) does not
    depend on the batch it is drawn in (cf. EDM's ``StackedRandomGenerator``). Otherwise one
    ``generator`` (or the global RNG) draws the whole batch.
    """

    def __init__(
        self,
        shape: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ):
        self.shape = tuple(shape)
        self.device = device
        self.dtype = dtype
        self.generator = check_generator("generator", generator)
        self.generators = None
        if seeds is not None:
            if generator is not None:
                raise ValueError("give either generator or seeds (one int per sample), not both")
            if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence | Tensor):
                raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
            if len(seeds) != self.shape[0]:
                raise ValueError(
                    f"seeds must have one entry per sample ({self.shape[0]}), got {len(seeds)}"
                )
            # torch.Generator.manual_seed takes any 64-bit pattern; negative seeds are refused so
            # that one seed names one stream.
            seeds = [check_int(f"seeds[{i}]", s, 0, 2**64 - 1) for i, s in enumerate(seeds)]
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self) -> Tensor:
        if self.generators is not None:
            return torch.stack(
                [
                    torch.randn(self.shape[1:], generator=g, device=self.device, dtype=self.dtype)
                    for g in self.generators
                ]
            )
        return randn(self.shape, self.generator, self.device, self.dtype)


@dataclass
class Context:
    """What a solver sees: the SDE, the counted score, the noise source and the grid length."""

    sde: SDE
    score: CountingScore
    noise: NoiseSource
    steps: int
    stats: dict[str, Any] = field(default_factory=dict)

    def coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) in the schedule's float64."""
        return self.sde.marginal(t)

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor, c: float = 1.0) -> Tensor:
        """``sde.reverse_drift``: c = 1 for the reverse SDE, 1/2 for the probability-flow ODE."""
        return self.sde.reverse_drift(x, t, score, c)

    def pf_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Probability-flow ODE drift f x - g^2 score / 2 (Song et al. Eq. 13); one score call."""
        return self.reverse_drift(x, t, self.score(x, t), 0.5)

    def data_pred(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Tweedie's x0 estimate (x + sigma^2 score) / alpha (``tweedie_x0``)."""
        return tweedie_x0(x, score, *self.coeffs(t))


def affine_step(
    coeffs: dict[str, Tensor], i: int, x: Tensor, score: Tensor, noise: Tensor | None = None
) -> Tensor:
    """x_1 = c_x[i] x + c_score[i] score (+ c_noise[i] noise), for solvers whose step is this
    affine map with per-step scalars computed once for the grid in ``init``: a step then launches
    one fused ``addcmul`` per term (0-d weights on the device, no sync) and no schedule arithmetic.
    """
    x1 = torch.addcmul(coeffs["x"][i] * x, coeffs["score"][i], score)
    return x1 if noise is None else torch.addcmul(x1, coeffs["noise"][i], noise)


class Solver:
    """One solver: a step rule plus metadata, constructed from its keyword options.

    Fixed-step solvers implement ``step(ctx, i, t0, t1, x, state) -> (x, state)`` for one interval
    t0 > t1 of the grid (``init`` makes the state); the front door owns the grid, NFE counting,
    callbacks and non-finite checks. Solvers with ``fixed_grid = False`` implement ``integrate``.
    """

    name: ClassVar[str]
    stochastic: ClassVar[bool] = False
    #: False for solvers that choose their own steps (``integrate``); they get only [T, eps].
    fixed_grid: ClassVar[bool] = True
    #: Grid used when ``time_grid`` is not given; chosen by ``benchmarks/samplers.py``.
    default_time_grid: ClassVar[str] = "uniform"
    #: Steps used when ``sample`` gets no ``steps`` (None: the solver needs them given).
    default_steps: ClassVar[int | None] = None

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
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

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
