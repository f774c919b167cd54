"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1 / Sec. 4.2)."""

from __future__ import annotations

from torch import Tensor

from ..sde import SDE
from ..validation import check_choice
from .base import Context, Solver
from .correctors import make_corrector
from .sde import Ancestral, EulerMaruyama, ReverseDiffusion

PREDICTORS: dict[str, type[Solver] | None] = {
    "reverse_diffusion": ReverseDiffusion,
    "euler_maruyama": EulerMaruyama,
    "ancestral": Ancestral,
    "none": None,
}


class PredictorCorrector(Solver):
    """At each grid time t_i: ``corrector_steps`` corrector steps at t_i, then one predictor step
    t_i -> t_{i+1}, in the order of Song et al.'s reference sampler. NFE per step:
    corrector_steps + 1 (corrector_steps alone with ``predictor="none"``). End: the last
    predictor step lands on eps (with the predictor's own end rule; ``reverse_diffusion`` adds
    noise there too), so x_eps carries sigma(eps); ``denoise=True`` adds Tweedie's step.

    The corrector defaults to the batch step rule (``step_norm="batch"``), which stays stable on
    narrow modes; the per-sample rule is an option (see ``LangevinCorrector``).
    """

    name = "pc"
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 500
    stochastic = True
    # Metadata of the defaults (one Langevin step with the batch rule, then the predictor);
    # __init__ sets each instance's own.
    nfe_per_step = 2
    per_sample_seeds = False
    #: Chosen by benchmarks/samplers.py (64-D) under the per-sample step rule, the default then,
    #: and not re-chosen for the batch rule; 2-D data with ``step_norm="batch"`` does better on
    #: "quadratic" (docs/samplers.md).
    default_time_grid = "uniform"

    def __init__(
        self,
        predictor: str = "reverse_diffusion",
        corrector: str = "langevin",
        snr: float = 0.16,
        corrector_steps: int = 1,
        step_size: float = 0.1,
        step_norm: str = "batch",
    ):
        check_choice("predictor", predictor, tuple(PREDICTORS))
        predictor_cls = PREDICTORS[predictor]
        self.predictor = predictor_cls() if predictor_cls else None
        self.corrector = make_corrector(corrector, snr, corrector_steps, step_size, step_norm)
        if self.predictor is None and self.corrector is None:
            raise ValueError("predictor and corrector cannot both be 'none'")
        n_corrector = self.corrector.n_steps if self.corrector is not None else 0
        self.nfe_per_step = n_corrector + (self.predictor is not None)
        # The predictor's strong order alone; none with a corrector, whose step size (set by
        # snr or step_size) does not shrink with the grid.
        self.order = self.predictor.order if n_corrector == 0 and self.predictor else None
        # The Langevin corrector's batch rule couples the samples through its batch-mean step.
        batch_rule = getattr(self.corrector, "step_norm", None) == "batch"
        self.per_sample_seeds = n_corrector == 0 or not batch_rule

    def check(self, sde: SDE, steps: int | None) -> None:
        if self.predictor is not None:
            self.predictor.check(sde, steps)

    def init(self, ctx: Context, x: Tensor, ts: Tensor):
        return self.predictor.init(ctx, x, ts) if self.predictor is not None else None

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        if self.corrector is not None:
            x = self.corrector(ctx, x, t0, t1, t0)
        if self.predictor is not None:
            x, state = self.predictor.step(ctx, i, t0, t1, x, state)
        return x, state


class Langevin(PredictorCorrector):
    """Corrector-only sampling: annealed Langevin dynamics over the time grid (Song et al.'s
    "LD" sampler with the SNR rule by default; ``corrector="ald"`` for NCSN's step rule).
    The last corrector runs at the grid's final time, so the grid's first time is skipped.
    End: the last corrector step targets p_eps and adds noise, so x_eps carries sigma(eps).
    """

    name = "langevin"
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 1000
    nfe_per_step = 1  # corrector_steps
    default_time_grid = "uniform"  # no grid helps corrector-only sampling (benchmarks/samplers.py)

    def __init__(
        self,
        corrector: str = "langevin",
        snr: float = 0.16,
        corrector_steps: int = 1,
        step_size: float = 0.1,
        step_norm: str = "batch",
    ):
        check_choice("corrector", corrector, ("langevin", "ald"))
        super().__init__("none", corrector, snr, corrector_steps, step_size, step_norm)

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        # Target p_{t1}: annealing ends at the grid's last time (eps), as the output is p_eps.
        return self.corrector(ctx, x, t1, t1, t0), state
