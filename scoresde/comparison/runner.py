"""``compare``: every (solver, step count) pair run from one shared x_T and one noise seed
(common random numbers), its NFE (counted by ``sample``) and wall time measured, its samples scored
against a reference set with the metrics of ``scoresde.metrics``, the two-sample noise floor of
each metric, and for deterministic solvers the RMS distance to a tight-tolerance solution of the
same probability-flow ODE from the same x_T."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import metrics as M
from ..cliutil import THREADS_HINT, TimeBar, say
from ..oracle import GaussianMixture
from ..sampling import sample
from ..sde import SDE
from .problems import FLOOR_PAIRS, Problem, resolve_problem
from .specs import is_adaptive, is_deterministic, parse_solver, solver_label
from .table import ComparisonTable, Row

F64 = torch.float64

#: Metric names accepted by ``compare(metrics=...)``; each is computed against the reference set,
#: except ``mode_tv`` and ``width`` (``metrics.mode_weight_tv`` / ``metrics.width_error``), which
#: need the problem's mixture (``Problem.mixture``) and are computed against it.
METRICS: tuple[str, ...] = ("mmd2", "frechet", "sliced_w2", "energy", "mode_tv", "width")
#: Metrics that need ``Problem.mixture``; ``compare`` adds them by default where it has one.
MIXTURE_METRICS: tuple[str, ...] = ("mode_tv", "width")
#: Tolerances (rtol = atol) at which adaptive solvers (ode_rk45, scipy, torchsde adaptive=True)
#: are run when their options give none: they take tolerances, not step counts.
DEFAULT_RTOLS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)


def _metric_fns(
    names: Sequence[str], target: Tensor, seed: int, mixture: GaussianMixture | None = None
) -> dict[str, Callable[[Tensor, Tensor], float]]:
    """metric(x, y) functions; MMD's kernel scale and the sliced projections are fixed once, so
    every solver (and the noise floor) is scored by the same statistic. The mixture metrics
    ignore y: they compare x with ``mixture``."""
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; valid metrics are {METRICS}")
    if mixture is None and any(m in MIXTURE_METRICS for m in names):
        raise ValueError(
            f"metrics {MIXTURE_METRICS} need a problem with a known mixture (an exact-score "
            "preset or GaussianMixture), not a checkpoint"
        )
    bandwidth = 2 * M.median_distance(target)
    fns: dict[str, Callable[[Tensor, Tensor], float]] = {}
    for m in names:
        if m == "mmd2":
            fns[m] = lambda x, y: M.mmd2(x, y, bandwidth=bandwidth)
        elif m == "frechet":
            fns[m] = M.frechet_distance
        elif m == "sliced_w2":
            fns[m] = lambda x, y: M.sliced_wasserstein(
                x, y, generator=torch.Generator().manual_seed(seed + 3)
            )
        elif m == "energy":
            fns[m] = M.energy_distance
        elif m == "mode_tv":
            fns[m] = lambda x, y: M.mode_weight_tv(x, mixture)
        else:
            fns[m] = lambda x, y: M.width_error(x, mixture)
    return fns


def compare(
    problem: str | GaussianMixture | Problem = "ring",
    sde: str | SDE | None = None,
    solvers: Sequence = ("ode_heun", "dpm_solver", "pc"),
    steps: Sequence[int] = (5, 10, 20, 50),
    n: int = 4000,
    seed: int = 0,
    reference_tol: float = 1e-7,
    metrics: Sequence[str] | None = None,
    rtols: Sequence[float] = DEFAULT_RTOLS,
    eps: float | None = None,
    n_ref: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    keep_samples: bool = True,
    progress: bool = False,
) -> ComparisonTable:
    """Run every solver at every step count on one problem and tabulate the errors.

    ``compare("ring", "vp", ["ode_heun", "dpm_solver:order=3"], [5, 10, 20])`` runs the grid on
    an exact-score preset, against exact samples of p_eps. For a trained model, build the problem
    from its checkpoint and a data set, ``p = checkpoint_problem("results/cb/checkpoint",
    "checkerboard")``, and run ``compare(p, solvers=..., steps=..., n=2000)``: the metrics are then
    taken against data (they include the model's own error, so a solver can plateau above the
    floor), ``ref_rms`` still measures the solver alone against the model's own PF-ODE, and the
    noise floor is the spread between independent data sets. The command line is ``scoresde
    compare --checkpoint results/cb/checkpoint --data checkerboard``.

    Parameters
    ----------
    problem
        A name in ``PROBLEMS``, a ``GaussianMixture`` or a ``Problem`` (``mixture_problem``,
        ``checkpoint_problem`` or your own).
    sde
        A name in ``SDES`` or an ``SDE`` for a mixture (default ``"vp"``). A ``Problem`` carries
        its SDE: leave ``sde`` None (a different one is an error).
    solvers
        Each a name, ``(name, {options})`` or ``"name:key=val,key=val"``.
    steps
        Step counts for fixed-step solvers. Adaptive solvers (``ode_rk45``, ``scipy``,
        ``torchsde`` with ``adaptive=True``) take tolerances instead: they run once at their own
        ``rtol`` if the options give one, else once per value of ``rtols`` (rtol = atol).
    n
        Samples per run.
    seed
        x_T, the noise and the projections derive from it, and for names and mixtures the
        reference sets (a ``Problem``'s own ``draw`` fixes those of other problems).
    reference_tol
        rtol = atol of the float64 ``ode_rk45`` reference for ``ref_rms``.
    metrics
        Names in ``METRICS``, each computed on the flattened samples against the problem's
        reference set ``draw(n, 0)`` (``mode_tv`` and ``width``: against ``Problem.mixture``).
        Default: mmd2 and frechet, plus mode_tv and width where the problem has a mixture.
    eps
        Final time (default the problem's ``eps``, else ``sde.sampling_eps``); a mixture's exact
        target is p_eps, not p_0.
    n_ref
        How many of the n samples get a reference solution (default all); it bounds the cost of
        the reference for a network.
    device, dtype
        Where and in which dtype the runs are made (a ``Problem`` fixes its device; a checkpoint's
        model takes its own dtype, float32).
    keep_samples
        Keep each run's samples in the table (for the sample figure).
    progress
        Status lines on stderr, and where stderr is a terminal, progress bars for the reference
        solve and the grid.

    Notes
    -----
    Common random numbers: every run starts from the same x_T of shape ``(n, *event_shape)``
    (float64 draw cast to ``dtype``) and gets a fresh generator seeded identically, so
    deterministic rows are reproducible and stochastic rows differ only by the solver. A run that
    fails (an impossible step count, an invalid option, non-finite values) is a row with its
    ``error``; the grid goes on.

    The reference solve runs in float64. For a network that means a float64 copy of the model
    (``Problem.reference_score_fn``): it is the same function up to float32 round-off (~1e-7
    relative), whereas the float32 model's round-off noise would swamp an adaptive step control at
    a 1e-7 tolerance, so the copy gives the tight solution of the model's own PF-ODE.
    """
    prob = resolve_problem(problem, sde, eps, seed, device)
    sde_name = sde if isinstance(sde, str) else type(prob.sde).__name__
    specs = [parse_solver(s) for s in solvers]
    steps = list(steps)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    eps = prob.eps if eps is None else float(eps)
    eps = prob.sde.sampling_eps if eps is None else eps
    device, shape = prob.device, (n, *prob.event_shape)

    def reference_set(k: int) -> Tensor:  # flattened, on device, in dtype
        x = prob.draw(n, k)
        if tuple(x.shape) != shape:
            raise ValueError(f"{prob.name}: draw({n}, {k}) has shape {tuple(x.shape)}, not {shape}")
        return x.to(device).to(dtype).reshape(n, -1)

    target = reference_set(0)
    if metrics is None:
        metrics = ("mmd2", "frechet") + (MIXTURE_METRICS if prob.mixture is not None else ())
    fns = _metric_fns(metrics, target, seed, prob.mixture)
    floor_sets = [reference_set(k) for k in range(1, 2 * FLOOR_PAIRS + 1)]
    floor = {m: M.noise_floor(iter(floor_sets).__next__, fn, FLOOR_PAIRS) for m, fn in fns.items()}

    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    x_T64 = (z * prob.sde.prior_std).to(device)
    x_T = x_T64.to(dtype)
    n_ref = n if n_ref is None else min(int(n_ref), n)
    if progress:
        say(
            f"compare: reference solve of {n_ref} samples (float64 ode_rk45, rtol = atol = "
            f"{reference_tol:g}): the slow part; {THREADS_HINT}"
        )
    score_ref = prob.reference_score_fn or prob.score_fn
    bar = TimeBar(score_ref, prob.sde.T, eps, "reference") if progress else None
    t_ref = time.perf_counter()
    try:
        ref_res = sample(
            prob.sde,
            bar or score_ref,
            (n_ref, *prob.event_shape),
            solver="ode_rk45",
            rtol=reference_tol,
            atol=reference_tol,
            eps=eps,
            x_T=x_T64[:n_ref],
        )
    finally:
        if bar is not None:
            bar.close()
    ref_seconds = time.perf_counter() - t_ref
    ref, ref_nfe = ref_res.samples, ref_res.nfe

    runs: list[tuple[str, int | None, dict[str, Any]]] = []
    for name, options in specs:
        if is_adaptive(name, options):
            opts = (
                [options]
                if "rtol" in options
                else [{**options, "rtol": r, "atol": r} for r in rtols]
            )
            runs += [(name, None, o) for o in opts]
        else:
            runs += [(name, s, options) for s in steps]
    if progress:
        say(f"compare: reference done in {ref_seconds:.1f} s ({ref_nfe} NFE); {len(runs)} runs")
    rows, kept = [], {}
    for name, s, opts in tqdm(runs, desc="runs", disable=None if progress else True, leave=False):
        row, x = _run_one(prob.sde, prob.score_fn, name, opts, s, eps, x_T, seed, fns, target, ref)
        rows.append(row)
        if keep_samples and x is not None:
            kept[(row.solver, s if s is not None else opts["rtol"])] = x
    meta = {
        "problem": prob.name,
        "target": prob.target,
        **prob.info,
        "sde": sde_name,
        "n": n,
        "dim": math.prod(prob.event_shape),
        "event_shape": list(prob.event_shape),
        "seed": seed,
        "eps": eps,
        "dtype": str(dtype).replace("torch.", ""),
        "reference_tol": reference_tol,
        "reference_nfe": ref_nfe,
        "reference_seconds": ref_seconds,
        "n_ref": n_ref,
        "floor_pairs": FLOOR_PAIRS,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    target = target.reshape(shape).detach().cpu()
    return ComparisonTable(rows, floor, fns, meta, kept, target, prob)


def _run_one(
    sde, score_fn, name, options, steps, eps, x_T, seed, fns, target, ref
) -> tuple[Row, Tensor | None]:
    """(row, samples or None) of one run; failures become the row's ``error``."""
    row = Row(
        solver_label(name, options),
        name,
        options,
        steps,
        options.get("rtol") if is_adaptive(name, options) else None,
        deterministic=is_deterministic(name, options),
        metrics=dict.fromkeys(fns),
    )
    t0 = time.perf_counter()
    try:
        res = sample(
            sde,
            score_fn,
            tuple(x_T.shape),
            solver=name,
            steps=steps,
            eps=eps,
            x_T=x_T,
            generator=torch.Generator(device=x_T.device).manual_seed(seed + 2),
            **options,
        )
    except (ValueError, TypeError, RuntimeError, FloatingPointError) as err:
        row.error = f"{type(err).__name__}: {err}"
        return row, None
    row.seconds = time.perf_counter() - t0
    row.nfe = res.nfe
    x = res.samples
    for m, fn in fns.items():
        row.metrics[m] = float(fn(x.reshape(len(x), -1), target))
    if row.deterministic:
        per_sample = (x[: ref.shape[0]].to(F64) - ref.to(F64)).reshape(len(ref), -1).pow(2).mean(1)
        row.ref_rms = float(per_sample.mean().sqrt())
        row.ref_median = float(per_sample.sqrt().median())
    return row, x.detach().cpu()
