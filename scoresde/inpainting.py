"""Inpainting: sample p(x_missing | x_known) with an unconditional score.

    inpaint(sde, s, known, mask, method=...)   "replacement" (Song et al. 2021, App. I.2),
                                               "repaint" (Lugmayr et al. 2022),
                                               "smc" (twisted SMC, Wu et al. 2023, ``smc.py``)

Every method runs through ``sample()``, which owns the time grid, the noise source, the counted
score and the non-finite check: replacement and repaint as the predictor-corrector solver with a
``Replacement`` step hook that re-imposes the known coordinates (and walks RePaint's jumps back
up the grid), smc as the ``TwistedSMC`` solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .sampling import StepHook, make_solver, sample
from .sde import SDE, ScoreFn, batch_coeff
from .smc import TwistedSMC
from .solvers.base import Context, NonFiniteError, Solver
from .solvers.pc import PredictorCorrector
from .validation import check_bool, check_callable, check_generator, check_instance, check_int

__all__ = ["inpaint", "InpaintResult", "INPAINT_METHODS", "Replacement", "repaint_schedule"]


#: Names accepted by ``inpaint(method=...)``.
INPAINT_METHODS: tuple[str, ...] = ("replacement", "repaint", "smc")

_PC_OPTIONS = {
    "predictor": "reverse_diffusion",
    "corrector": "langevin",
    "snr": 0.16,
    "corrector_steps": 1,
    "step_size": 0.1,
    "step_norm": "sample",
}
#: Each method's options and their defaults: replacement follows Song et al.'s PC inpainter
#: (reverse diffusion + one Langevin step, snr 0.16), repaint Lugmayr et al.'s 250-step setting
#: (j = 10, r = 10, no corrector), smc Wu et al.'s TDS (16 particles, resampling when the ESS
#: falls below half of them; ``twist_var_floor`` is added to the twist's variance, see
#: ``smc.TwistedSMC``).
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "replacement": {**_PC_OPTIONS, "denoise": False},
    "repaint": {
        **_PC_OPTIONS,
        "corrector": "none",
        "jump_length": 10,
        "repeats": 10,
        "denoise": False,
    },
    "smc": {"particles": 16, "ess_threshold": 0.5, "twist_var_floor": 0.0},
}

#: Default time grid per method (``benchmarks/inpainting.py``: on the uniform grid smc's last
#: step from sigma ~ 0.05 to 0.01 leaves the final weights degenerate; logsnr steps evenly in
#: log sigma near the data).
METHOD_TIME_GRIDS = {"replacement": "uniform", "repaint": "uniform", "smc": "logsnr"}


@dataclass
class InpaintResult:
    """What ``inpaint`` returns.

    Attributes
    ----------
    samples
        ``(B, *event)``; the known coordinates equal ``known`` exactly.
    nfe
        Score-function calls actually made (counted). For smc each call evaluates
        B * particles rows and is followed by one vector-Jacobian product (the twist's gradient).
    times
        The time grid (float64, T -> eps).
    particles
        smc only: ``(B, K, *event)`` final particles.
    weights
        smc only: ``(B, K)`` normalised final weights (``samples`` is one particle per row drawn
        from them).
    log_weights
        smc only: their unnormalised logs.
    ess
        smc only: ``(steps, B)`` effective sample size before each step's resampling decision.
    final_ess
        smc only: ``(B,)`` effective sample size after the last step.
    resampled
        smc only: ``(steps, B)`` bool.
    log_evidence
        smc only: ``(B,)`` the SMC estimate of log p_eps(x_known) (unbiased in exp).
    stats
        Extra counters (e.g. ``down_steps``/``up_steps`` of repaint).
    """

    samples: Tensor
    nfe: int
    times: Tensor
    particles: Tensor | None = None
    weights: Tensor | None = None
    log_weights: Tensor | None = None
    ess: Tensor | None = None
    final_ess: Tensor | None = None
    resampled: Tensor | None = None
    log_evidence: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _check_known_mask(known: Tensor, mask: Tensor) -> Tensor:
    if not isinstance(known, Tensor) or not known.is_floating_point() or known.dim() < 2:
        raise ValueError("known must be a floating tensor of shape (batch, *event)")
    if not isinstance(mask, Tensor):
        raise ValueError("mask must be a bool tensor (True = known coordinate)")
    if mask.shape not in (known.shape, known.shape[1:]):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}; it must match known {tuple(known.shape)} or "
            f"its event shape {tuple(known.shape[1:])}"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise ValueError(f"mask must be a bool tensor (True = known), got {mask.dtype}")
        mask = mask != 0
    return mask.to(known.device).expand(known.shape)


def _method_options(method: str, options: dict) -> dict:
    if method not in INPAINT_METHODS:
        raise ValueError(
            f"unknown inpainting method {method!r}; valid methods are {INPAINT_METHODS}"
        )
    accepted = METHOD_OPTIONS[method]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"inpainting method {method!r} got unknown option(s) {unknown}; it accepts "
            f"{sorted(accepted)}"
        )
    return {**accepted, **options}


def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    known: Tensor,
    mask: Tensor,
    method: str = "replacement",
    steps: int | None = None,
    *,
    eps: float | None = None,
    time_grid: str | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    **options,
) -> InpaintResult:
    """Sample p(x_missing | x_known) with an unconditional score, by one of ``INPAINT_METHODS``.

    Parameters
    ----------
    sde
        The forward SDE.
    score_fn
        The (unconditional) score of its marginals.
    known
        ``(B, *event)`` values; only the entries where ``mask`` is True are read.
    mask
        Bool, True = known coordinate; shape ``(B, *event)`` or ``(*event)`` shared by all rows.
    method
        "replacement" (Song et al. 2021, App. I.2: the predictor-corrector sampler with the
        known coordinates replaced by a forward-diffused copy of ``known`` after every update);
        "repaint" (Lugmayr et al. 2022, Alg. 1: the same replacement plus resampling — after
        every ``jump_length`` reverse steps the state is re-noised ``jump_length`` steps forward,
        ``repeats`` times per segment); "smc" (the Twisted Diffusion Sampler of Wu et al. 2023,
        Alg. 1: ``particles`` weighted particles per row, see ``smc.TwistedSMC``).
    steps
        Number of grid intervals (required). For repaint, the grid's reverse steps are
        traversed ``repeats`` times per segment, so NFE ~ steps * repeats.
    eps
        End time (default ``sde.sampling_eps``), as in ``sample``.
    time_grid
        Grid kind, as in ``sample``; default ``METHOD_TIME_GRIDS[method]``: uniform for
        replacement and repaint (as in their papers), logsnr for smc (its last step must be
        short relative to sigma, see ``smc.TwistedSMC``).
    generator
        Randomness (the samples' device is known's device).
    **options
        Per method, see ``METHOD_OPTIONS``: predictor/corrector/snr/corrector_steps/
        step_size/step_norm/denoise (replacement, repaint), jump_length/repeats (repaint),
        particles/ess_threshold/twist_var_floor (smc). Unknown options are errors.

    Notes
    -----
    Unlike the reference inpainter the known coordinates of the result are ``known`` exactly,
    and no unknown coordinate carries the last step's noise when ``denoise`` is asked for (the
    reference code's ``x_mean`` mixed the noisy state back in); the known coordinates at T are a
    forward-diffused copy of ``known``, not ``known`` itself.
    """
    check_instance("sde", sde, SDE)
    check_callable("score_fn", score_fn)
    check_generator("generator", generator)
    opts = _method_options(method, options)
    mask = _check_known_mask(known, mask)
    # Unknown entries are never read (they may be NaN, as in missing data): zero them, so not
    # even a multiplication by a zero gradient can carry a NaN into the samples.
    known = torch.where(mask, known, torch.zeros((), dtype=known.dtype, device=known.device))
    if steps is None:
        raise ValueError("inpaint needs steps (an integer >= 1)")
    steps = check_int("steps", steps, 1)
    sample_options: dict[str, Any] = dict(
        eps=eps,
        time_grid=time_grid or METHOD_TIME_GRIDS[method],
        generator=generator,
        device=known.device,
        dtype=known.dtype,
        progress=progress,
    )
    if method == "smc":
        return _smc(sde, score_fn, known, mask, steps, sample_options, **opts)
    denoise = check_bool("denoise", opts.pop("denoise"))
    jump_length, repeats = opts.pop("jump_length", 1), opts.pop("repeats", 1)
    if opts["predictor"] == "none":
        raise ValueError("inpainting needs a predictor; choose one of the pc predictors")
    algo = make_solver("pc", **opts)
    assert isinstance(algo, PredictorCorrector)
    if method == "replacement":
        path = list(range(steps + 1))
    else:
        path = repaint_schedule(steps, jump_length, repeats)
    hook = Replacement(known, mask, algo, path)
    if algo.corrector is not None:  # Song et al. re-impose the known values after it too
        algo.corrector = _ReplaceAfter(algo.corrector, hook)
    res = sample(
        sde, score_fn, known.shape, algo, steps, denoise=denoise, step_hook=hook, **sample_options
    )
    down = sum(b > a for a, b in zip(path[:-1], path[1:], strict=True))
    stats = {"down_steps": down, "up_steps": len(path) - 1 - down}
    x = torch.where(mask, known, res.samples)
    return InpaintResult(samples=x, nfe=res.nfe, times=res.times, stats=stats)


def repaint_schedule(steps: int, jump_length: int, repeats: int) -> list[int]:
    """The grid indices RePaint visits (0 = T, ``steps`` = eps), Lugmayr et al. 2022, Sec. 4.

    Going down one index is a reverse step; going up one is a forward (re-noising) step. After
    reaching each index i with steps - i a multiple of ``jump_length`` (below the first segment),
    the path jumps back up ``jump_length`` indices, ``repeats - 1`` times, so every segment of
    the grid is traversed ``repeats`` times (RePaint's ``get_schedule_jump``, in our indexing).
    ``repeats=1`` is plain replacement.
    """
    check_int("steps", steps, 1)
    check_int("jump_length", jump_length, 1)
    check_int("repeats", repeats, 1)
    remaining_jumps = {r: repeats - 1 for r in range(0, steps - jump_length, jump_length)}
    r, path = steps, [0]  # r = steps - index: reverse steps still to go
    while r >= 1:
        r -= 1
        path.append(steps - r)
        if remaining_jumps.get(r, 0) > 0:
            remaining_jumps[r] -= 1
            for _ in range(jump_length):
                r += 1
                path.append(steps - r)
    return path


class Replacement(StepHook):
    """A step hook that re-imposes a fresh forward-diffused copy of the known coordinates,
    x_M <- alpha_t known_M + sigma_t z (Song et al. 2021, App. I.2), at x_T and after each step.

    With a ``path`` from ``repaint_schedule`` it also walks RePaint's jumps (Lugmayr et al. 2022,
    Alg. 1): after the solver's step reaches a grid index from which the path goes back up, it
    re-noises with the exact forward transition x_b = a x_a + sqrt(v) z (Alg. 1, line 10) one
    index at a time, then takes ``solver``'s reverse steps (each followed by the replacement)
    back down, as often as the path says. The walk is over Python ints: no host sync.

    Parameters
    ----------
    known, mask
        ``(B, *event)`` values and bool mask (True = known coordinate).
    solver
        The fixed-step solver ``sample`` runs; RePaint's jumps take its steps with the state its
        ``init`` returns, so it must be a solver whose state is fixed per grid (``pc``'s is).
    path
        Grid indices to visit (0 = T, steps = eps); default: straight down the grid.
    """

    def __init__(
        self, known: Tensor, mask: Tensor, solver: Solver, path: list[int] | None = None
    ) -> None:
        self.known, self.mask, self.solver, self.path = known, mask, solver, path

    def replace(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = ctx.marginal(t)
        known = self.known
        diffused = (
            batch_coeff(alpha, known) * known + batch_coeff(sigma, known) * ctx.noise.normal()
        )
        return torch.where(self.mask, diffused, x)

    def start(self, ctx: Context, x: Tensor, ts: Tensor) -> Tensor:
        self.ts, self.pos = ts, 0
        if self.path is None:
            self.path = list(range(ctx.steps + 1))
        x = self.replace(ctx, x, ts[0])
        self.state = self.solver.init(ctx, x, ts)  # the solver's per-grid coefficients
        return x

    def __call__(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor) -> Tensor:
        x = self.replace(ctx, x, t1)
        path, ts = self.path, self.ts
        assert path is not None  # start() set it
        self.pos += 1  # the solver's step: path[pos - 1] = i -> path[pos] = i + 1
        while self.pos + 1 < len(path) and path[self.pos + 1] != i + 2:  # a jump back up
            a, b = path[self.pos], path[self.pos + 1]
            if b == a + 1:  # reverse step t_a -> t_b < t_a
                x, _ = self.solver.step(ctx, a, ts[a], ts[b], x, self.state)
                x = self.replace(ctx, x, ts[b])
            else:  # forward step t_a -> t_b > t_a
                coef, var = ctx.sde.transition(ts[a], ts[b])
                x = batch_coeff(coef, x) * x + batch_coeff(torch.sqrt(var), x) * ctx.noise.normal()
            self.pos += 1
        return x


class _ReplaceAfter:
    """A corrector followed by the hook's replacement at the corrector's time."""

    def __init__(self, corrector, hook: Replacement) -> None:
        self.corrector, self.hook = corrector, hook

    def __call__(self, ctx: Context, x: Tensor, t: Tensor, t_lo: Tensor, t_hi: Tensor) -> Tensor:
        return self.hook.replace(ctx, self.corrector(ctx, x, t, t_lo, t_hi), t)


def _smc(
    sde: SDE,
    score_fn: ScoreFn,
    known: Tensor,
    mask: Tensor,
    steps: int,
    sample_options: dict,
    **opts,
) -> InpaintResult:
    """Run ``TwistedSMC`` through ``sample`` and draw one particle per row by its weight."""
    algo = TwistedSMC(known, mask, **opts)
    b, k, event, dev = known.shape[0], algo.k, known.shape[1:], known.device
    res = sample(sde, score_fn, (b * k, *event), algo, steps, **sample_options)
    st = res.stats["smc"]
    log_w = st.log_w
    log_z = st.log_z + torch.logsumexp(log_w, 1) - math.log(k)
    weights = torch.softmax(log_w, 1)
    generator = sample_options["generator"]
    g_dev = generator.device if generator is not None else dev
    pick = torch.multinomial(weights.to(g_dev), 1, generator=generator).to(dev)[:, 0]
    parts = res.samples.reshape(b, k, *event)
    samples = parts[torch.arange(b, device=dev), pick]
    if not bool(torch.isfinite(samples).all() & torch.isfinite(log_w).any(1).all()):
        raise NonFiniteError("non-finite samples or weights appeared in the smc inpainter")
    resampled = torch.stack(st.resampled)
    return InpaintResult(
        samples=samples,
        nfe=res.nfe,
        times=res.times,
        particles=parts,
        weights=weights,
        log_weights=log_w,
        ess=torch.stack(st.ess),
        final_ess=1.0 / (weights**2).sum(1),
        resampled=resampled,
        log_evidence=log_z,
        stats={"particles": k, "resample_count": resampled.sum(0)},
    )
