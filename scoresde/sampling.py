"""``sample()``: one front door for every solver.

The front door validates arguments once, builds the time grid (float64, on the sample's device),
draws x_T, wraps the score function to count evaluations, runs the solver's step rule over the grid
and checks for non-finite values without a host–device sync per step. Solvers only know their
update (see ``solvers/base.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .compile import GRAPH_MODES, CUDAGraphScore, check_compile, check_cuda_graph, compile_fn
from .noise import NOISES, BrownianTreeNoise, GaussianNoise
from .paths import check_start
from .sde import SDE, ScoreFn
from .solvers.base import Context, CountingScore, NonFiniteError, Solver
from .solvers.edm import EDM, Restart
from .solvers.exponential import DDIM, DPMSolver, DPMSolverSDE, UniPC
from .solvers.ode import ODERK4, RK45, ODEEuler, ODEHeun, Scipy
from .solvers.pc import Langevin, PredictorCorrector
from .solvers.sde import Ancestral, EulerMaruyama, ReverseDiffusion
from .solvers.torchsde import TorchsdeSolver
from .validation import (
    check_bool,
    check_callable,
    check_choice,
    check_device,
    check_float_dtype,
    check_instance,
    check_int,
    check_positive,
    check_real,
    check_shape,
    check_tensor,
)

_SOLVER_CLASSES: dict[str, type[Solver]] = {
    cls.name: cls
    for cls in (
        EulerMaruyama,
        ReverseDiffusion,
        Ancestral,
        PredictorCorrector,
        Langevin,
        ODEEuler,
        ODEHeun,
        ODERK4,
        RK45,
        Scipy,
        DDIM,
        DPMSolver,
        DPMSolverSDE,
        UniPC,
        EDM,
        Restart,
        TorchsdeSolver,
    )
}
#: Names accepted by ``sample(solver=...)``.
SOLVERS: tuple[str, ...] = tuple(_SOLVER_CLASSES)
#: ``sample``'s default solver: the measured best general-purpose choice (docs/samplers.md,
#: "Defaults"): at its default steps it reaches the noise floor on every benchmark problem,
#: including the narrow-mode and 256-D anisotropic mixtures, at one score call per step.
DEFAULT_SOLVER = "dpm_solver"
#: Names accepted by ``sample(time_grid=...)`` (or pass a decreasing tensor of times).
TIME_GRIDS: tuple[str, ...] = ("uniform", "quadratic", "logsnr", "karras")


@dataclass
class SampleResult:
    """What ``sample`` returns.

    Attributes
    ----------
    samples
        Tensor of the requested shape.
    nfe
        Score evaluations actually made (counted), including a final ``denoise`` step.
    times
        The time grid used (float64), or [T, eps] for solvers that choose their own steps.
    trajectory
        ``(steps + 1, *shape)`` states on the grid when ``return_trajectory``; else None.
    stats
        Solver statistics, e.g. per-sample ``accepted_steps`` / ``rejected_steps`` of ode_rk45.
    """

    samples: Tensor
    nfe: int
    times: Tensor
    trajectory: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class StepHook:
    """Changes the state between the steps of a fixed-step solver: ``sample(step_hook=...)``.

    ``start`` gets x_T and returns the state the solver starts from; ``__call__`` gets the state
    after step i (t0 -> t1) and returns the state the next step starts from. Both see the solve's
    ``Context``: score calls through ``ctx.score`` count in ``nfe`` and ``ctx.noise`` draws from
    the same source, in order. A hook is an object, so it can carry state from step to step, and
    it runs inside the loop: it must not sync with the host (no ``.item()``, no Python branch on
    tensor values). The inpainters (``inpainting.py``) are built on it.
    """

    def start(self, ctx: Context, x: Tensor, ts: Tensor) -> Tensor:
        return x

    def __call__(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor) -> Tensor:
        return x


def solver_class(name: str) -> type[Solver]:
    """The class of the solver called ``name``, not constructed: its metadata is class data."""
    if name not in _SOLVER_CLASSES:
        raise ValueError(f"unknown solver {name!r}; valid solvers are {SOLVERS}")
    return _SOLVER_CLASSES[name]


def make_solver(solver: str | Solver, **options) -> Solver:
    """A solver object from its name and keyword options (unknown names/options are errors)."""
    if isinstance(solver, Solver):
        if options:
            raise ValueError(
                f"options {sorted(options)} given with a solver object; set them on it"
            )
        return solver
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a name in {SOLVERS} or a Solver, got {solver!r}")
    return solver_class(solver).create(**options)


def make_time_grid(
    sde: SDE,
    steps: int,
    eps: float | None = None,
    kind: str = "uniform",
    rho: float = 7.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Decreasing times t_0 = T > t_1 > ... > t_steps = eps, float64, length steps + 1.

    uniform:   equal steps in t.
    quadratic: t = eps + (T - eps) u^2 on a uniform u grid (DDIM's quadratic spacing, Song et al.
               2021a, App. D.2), finer near the data.
    logsnr:    equal steps in lambda_t = log(alpha_t / sigma_t) (Lu et al. 2022a, Sec. 3.3).
    karras:    sigma_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho in
               sigma = sigma_t / alpha_t = exp(-lambda_t) (Karras et al. 2022, Eq. 5).
    """
    check_instance("sde", sde, SDE)
    eps = _check_eps(sde, eps)
    steps = check_int("steps", steps, 1)
    check_choice("time_grid", kind, TIME_GRIDS)
    rho = check_positive("rho", rho)
    device = check_device("device", device)
    check_start(sde, sde.T)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)
    # The end points as one (2,) tensor: their lambdas take one schedule evaluation, not two
    # (elementwise, so each value is the 0-d computation's).
    ends = torch.tensor([sde.T, eps], dtype=torch.float64, device=device)
    t_hi, t_lo = ends.unbind(0)
    if kind == "uniform":
        ts = t_hi + u * (t_lo - t_hi)
    elif kind == "quadratic":
        ts = t_lo + (t_hi - t_lo) * (1 - u) ** 2
    else:
        lam_hi, lam_lo = sde.log_snr(ends).unbind(0)
        if kind == "logsnr":
            lam = lam_hi + u * (lam_lo - lam_hi)
        else:
            s_max, s_min = torch.exp(-lam_hi / rho), torch.exp(-lam_lo / rho)
            lam = -rho * torch.log(s_max + u * (s_min - s_max))
        ts = sde.t_from_log_snr(lam)
    # The end points are exact, not round-tripped through lambda.
    ts[0], ts[-1] = t_hi, t_lo
    return ts


def _check_eps(sde: SDE, eps: float | None) -> float:
    if eps is None:
        return sde.sampling_eps
    return check_real("eps", eps, 0.0, sde.T, lo_open=True, hi_open=True)


def _explicit_grid(sde: SDE, grid: Tensor, device: torch.device) -> Tensor:
    if grid.dtype == torch.bool or grid.is_complex():
        raise TypeError(f"time_grid must be a real tensor of times, got {grid.dtype}")
    ts = grid.to(device=device, dtype=torch.float64)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(
            f"an explicit time_grid must be 1-D with >= 2 times, got {tuple(ts.shape)}"
        )
    if not bool(torch.all(ts[1:] < ts[:-1])):
        raise ValueError("an explicit time_grid must be strictly decreasing (from T towards 0)")
    if not bool((ts[0] <= sde.T) & (ts[-1] >= 0)):
        raise ValueError(f"an explicit time_grid must lie in [0, T] = [0, {sde.T}]")
    return ts


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    solver: str | Solver = DEFAULT_SOLVER,
    steps: int | None = None,
    *,
    eps: float | None = None,
    time_grid: str | Tensor | None = None,
    rho: float = 7.0,
    denoise: bool = False,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | None = None,
    noise: str = "gaussian",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    return_trajectory: bool = False,
    step_hook: StepHook | None = None,
    compile: bool | str = False,
    cuda_graph: bool = False,
    **solver_options,
) -> SampleResult:
    """Draw samples by integrating the reverse-time SDE or probability-flow ODE from T to eps.

    Parameters
    ----------
    sde
        The forward SDE.
    score_fn
        ``score_fn(x, t) -> Tensor`` of x's shape; t has shape ``(batch,)``.
    shape
        ``(batch, *event)``.
    solver
        A name in ``SOLVERS`` or a ``Solver`` object (default ``DEFAULT_SOLVER``).
    steps
        Grid intervals for fixed-step solvers (default: the solver's ``default_steps``; not
        needed by ``ode_rk45``/``scipy``).
    eps
        Final time, default ``sde.sampling_eps``.
    time_grid
        A name in ``TIME_GRIDS`` (default: the solver's) or an explicit decreasing tensor of
        times in [0, T].
    rho
        For ``karras``.
    denoise
        Finish with Tweedie's x0 = (x + sigma^2 score) / alpha at eps (one more NFE).
    x_T
        Initial state (default: drawn from the prior).
    generator
        Randomness (default: torch's global RNG).
    seeds
        One int per sample instead of ``generator``: each sample gets its own generator, so it
        does not depend on its batch (for solvers whose ``per_sample_seeds`` is True).
    noise
        Where stochastic solvers get their noise (a name in ``NOISES``, ``scoresde.noise``):
        ``"gaussian"`` (default) draws afresh at every step; ``"brownian"`` takes each step's
        noise from one Brownian path on [0, T] (a torchsde Brownian tree seeded from
        ``generator``, or one per sample from ``seeds``), so with the same seed a sample stays
        on the same path, and converges, as ``steps`` or the grid change. x_T is the same for
        both. Deterministic solvers ignore it.
    callback
        Called as ``callback(i, t, x)`` after each grid step.
    step_hook
        A ``StepHook`` that changes the state after x_T is drawn and after each step (fixed-step
        solvers only), before the non-finite check and ``callback``: e.g. re-imposing known
        coordinates (``inpaint``).
    compile
        ``torch.compile`` the score function for this run: False (default), True (mode
        "default") or a mode in ``scoresde.compile.COMPILE_MODES``; the CUDA-graph modes
        ("reduce-overhead", "max-autotune") need a CUDA device. Samples agree with eager ones to
        float rounding (fusion reorders floating-point operations), not bit for bit. The first
        call per shape compiles (seconds); torch caches the result for later calls.
    cuda_graph
        Capture the score function's call as a CUDA graph (``CUDAGraphScore``) and replay it at
        every step: one launch per evaluation instead of one per kernel. CUDA and fixed-step
        solvers only (a ValueError elsewhere); the score function must not sync with the host or
        draw random numbers. Capturing costs three warm-up calls per run, so to sample the same
        shape repeatedly, wrap once (``score_fn = CUDAGraphScore(model)``) and pass that instead.
    **solver_options
        Passed to the solver (e.g. ``order=3``, ``snr=0.16``, ``rtol=1e-6``).

    Examples
    --------
    >>> import torch
    >>> import scoresde as sd
    >>> sde = sd.VPSDE()
    >>> data = sd.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], stds=0.3)
    >>> score, g = sd.exact_score(sde, data), torch.Generator().manual_seed(0)
    >>> res = sd.sample(sde, score, (500, 2), "dpm_solver", steps=10, generator=g)
    >>> res.samples.shape, res.nfe
    (torch.Size([500, 2]), 10)
    >>> sd.sample(sde, score, (500, 2), "dpm", steps=10)
    Traceback (most recent call last):
    ...
    ValueError: unknown solver 'dpm'; valid solvers are (...)
    """
    check_instance("sde", sde, SDE)
    check_callable("score_fn", score_fn)
    algo = make_solver(solver, **solver_options)
    shape = check_shape("shape", shape, min_dims=2)
    steps = None if steps is None else check_int("steps", steps, 1)
    device, dtype = check_device("device", device), check_float_dtype("dtype", dtype)
    denoise = check_bool("denoise", denoise)
    check_choice("noise", noise, NOISES)
    check_bool("progress", progress)
    return_trajectory = check_bool("return_trajectory", return_trajectory)
    if callback is not None:
        check_callable("callback", callback)
    if step_hook is not None:
        check_instance("step_hook", step_hook, StepHook)
        if not algo.fixed_grid:
            raise ValueError(f"step_hook needs a fixed-step solver; {algo.name!r} is adaptive")
    if time_grid is not None and not isinstance(time_grid, str | Tensor):
        raise TypeError(f"time_grid must be a name in {TIME_GRIDS} or a tensor, got {time_grid!r}")
    if x_T is not None:
        # An integer x_T made every step truncate (all-NaN samples, an int max|x| buffer that
        # could not hold NaN): the state must be floating, and finite to start with.
        check_tensor("x_T", x_T, floating=True, finite=True)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape is {shape}")
        device = device if device is not None else x_T.device
        dtype = dtype or x_T.dtype
    device = device if device is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    score_fn = _accelerated(score_fn, algo, device, compile, cuda_graph)

    if steps is None and not isinstance(time_grid, Tensor):
        steps = algo.default_steps
    if isinstance(time_grid, Tensor):
        if eps is not None:
            raise ValueError("give either eps or an explicit time_grid, not both")
        ts = _explicit_grid(sde, time_grid, device)
        if steps is not None and steps != ts.numel() - 1:
            raise ValueError(f"steps={steps} but the explicit time_grid has {ts.numel() - 1} steps")
        steps = ts.numel() - 1
        check_start(sde, ts[0])
    elif algo.fixed_grid:
        if steps is None:
            raise ValueError(f"solver {algo.name!r} needs steps (an integer >= 1)")
        kind = time_grid or algo.default_time_grid
        ts = make_time_grid(sde, steps, eps, kind, rho, device)  # checks its start itself
    else:
        if time_grid is not None:
            raise ValueError(
                f"solver {algo.name!r} chooses its own steps; time_grid does not apply"
            )
        t_end = _check_eps(sde, eps)
        ts = torch.tensor([sde.T, t_end], dtype=torch.float64, device=device)
        check_start(sde, ts[0])
    algo.check(sde, steps)

    draws = GaussianNoise(shape, device, dtype, generator=generator, seeds=seeds)
    if x_T is None:
        x = draws.normal() * sde.prior_std
    else:
        x = x_T.to(device=device, dtype=dtype)
    # The tree's entropy is drawn after x_T, so a seed gives the same x_T with either source.
    tree = noise == "brownian" and algo.stochastic
    source = BrownianTreeNoise(draws, sde.T) if tree else draws
    score = CountingScore(score_fn)
    ctx = Context(sde, score, source, steps or 0)
    if step_hook is not None:
        x = step_hook.start(ctx, x, ts)

    trajectory = [x] if return_trajectory else None
    if algo.fixed_grid:
        x = _run_fixed(algo, ctx, x, ts, progress, callback, trajectory, step_hook)
    else:
        x = algo.integrate(ctx, x, ts[0], ts[-1])
        _raise_if_nonfinite(x, None, ts[-1])
        if trajectory is not None:
            trajectory.append(x)
    if denoise:
        x = ctx.data_pred(x, ts[-1], score(x, ts[-1]))
        _raise_if_nonfinite(x, None, ts[-1], "denoised samples")
    return SampleResult(
        samples=x,
        nfe=score.nfe,
        times=ts,
        trajectory=torch.stack(trajectory) if trajectory is not None else None,
        stats=ctx.stats,
    )


def _accelerated(
    score_fn: ScoreFn, algo: Solver, device: torch.device, compile: bool | str, cuda_graph: bool
) -> ScoreFn:
    """``score_fn`` compiled and/or CUDA-graphed as ``sample``'s options ask (checked here)."""
    mode = check_compile(compile)
    if cuda_graph is True and not algo.fixed_grid:
        raise ValueError(
            f"cuda_graph=True needs a fixed-step solver; {algo.name!r} chooses its own steps "
            "(and syncs with the host to do so): use a fixed-step solver or leave it off"
        )
    if check_cuda_graph(cuda_graph, device, "the score function's calls") and mode in GRAPH_MODES:
        raise ValueError(
            f"compile mode {mode!r} already captures CUDA graphs; with cuda_graph=True use "
            "compile=True ('default') or 'max-autotune-no-cudagraphs'"
        )
    if mode is not None:
        score_fn = compile_fn(score_fn, mode, device)
    if cuda_graph and not isinstance(score_fn, CUDAGraphScore):
        score_fn = CUDAGraphScore(score_fn)
    return score_fn


def _run_fixed(algo, ctx, x, ts, progress, callback, trajectory, step_hook) -> Tensor:
    state = algo.init(ctx, x, ts)
    # The grid's times as 0-d tensors, unbound once (indexing ts made two views per step); the
    # score's casts of them to x's dtype are made once too (``CountingScore.use_grid``).
    times = ctx.score.use_grid(ts, x)
    # max |x| after each step, kept on the device (NaN and inf propagate through the max): the
    # first non-finite step is found with one host sync at the end, none per step. Collected in
    # a list and stacked once, which costs less per step than writing into a buffer.
    max_abs: list[Tensor] = []
    steps = range(ctx.steps)
    if progress:  # tqdm only when shown: even disabled it costs a constructor and an iterator
        steps = tqdm(steps, desc=algo.name, leave=False)
    for i in steps:
        t0, t1 = times[i], times[i + 1]
        x, state = algo.step(ctx, i, t0, t1, x, state)
        if step_hook is not None:
            x = step_hook(ctx, i, t0, t1, x)
        max_abs.append(torch.linalg.vector_norm(x, float("inf")))
        if callback is not None:
            callback(i, t1, x)
        if trajectory is not None:
            trajectory.append(x)
    finite = torch.isfinite(torch.stack(max_abs))
    if not bool(finite.all()):
        i_bad = int((~finite).int().argmax())
        _raise_if_nonfinite(None, i_bad, ts[i_bad + 1])
    return x


def _raise_if_nonfinite(
    x: Tensor | None, step: int | None, t: Tensor, what: str = "samples"
) -> None:
    if x is not None and bool(torch.isfinite(x).all()):
        return
    where = f"at step {step} (t = {float(t):.6g})" if step is not None else f"by t = {float(t):.6g}"
    raise NonFiniteError(f"non-finite values (NaN or inf) appeared in the {what} {where}")


def sample_sharded(
    sde: SDE, score_fn: ScoreFn, shape: Sequence[int], seed: int = 0, **kwargs
) -> SampleResult:
    """``sample`` split across the ranks of an initialised torch.distributed group, then gathered.

    Sample k always uses the per-sample seed ``seed + k`` (``seeds=``), so the gathered result is
    the same as one process drawing all of ``shape`` with ``seeds=range(seed, seed + n)``, whatever
    the world size. Every rank returns the full gathered batch; ``nfe`` is this rank's count.
    Without torch.distributed this is ``sample(..., seeds=...)``.
    """
    import torch.distributed as dist

    shape = check_shape("shape", shape, min_dims=2)
    seed = check_int("seed", seed, 0)
    n = shape[0]
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    per_rank = -(-n // world)  # ceil: the last ranks may get fewer (or no) samples
    lo, hi = min(n, rank * per_rank), min(n, (rank + 1) * per_rank)
    if hi > lo:
        res = sample(
            sde, score_fn, (hi - lo, *shape[1:]), seeds=list(range(seed + lo, seed + hi)), **kwargs
        )
        local, nfe = res.samples, res.nfe
    else:
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        local, nfe = torch.empty((0, *shape[1:]), dtype=dtype, device=kwargs.get("device")), 0
    if world == 1:
        return SampleResult(local, nfe, res.times)
    padded = torch.zeros((per_rank, *shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    sizes = [max(0, min(n, (r + 1) * per_rank) - min(n, r * per_rank)) for r in range(world)]
    gathered = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
    times = res.times if hi > lo else torch.empty(0)
    return SampleResult(gathered, nfe, times)
