"""``scoresde compare`` (a solver x steps grid on a preset or a checkpoint) and ``scoresde demo``
(a seconds-long tour on the 2-D ring): ``scoresde.comparison`` on the command line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..cliutil import (
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    THREADS_HINT,
    int_at_least,
    list_of,
    load_checkpoint_model,
)
from ..comparison import (
    DEFAULT_RTOLS,
    METRICS,
    PROBLEMS,
    SDES,
    checkpoint_problem,
    compare,
    split_solvers,
    write_outputs,
)
from ..sampling import SOLVERS
from .common import apply_common_flags


def cmd_compare(args: argparse.Namespace) -> int:
    apply_common_flags(args)
    problem = args.problem or "ring"
    if args.checkpoint is None and args.data is not None:
        raise SystemExit("scoresde: --data goes with --checkpoint (a --problem brings its own)")
    if args.checkpoint is not None:
        if args.sde is not None:
            raise SystemExit("scoresde: --sde cannot be given with --checkpoint (it has its SDE)")
        if args.data is None:
            raise SystemExit("scoresde: --checkpoint needs --data (the reference data set)")
        meta = load_checkpoint_model(args.checkpoint)[1]  # a clear error for an unreadable file
        if meta.get("standardize"):
            raise ValueError(
                f"{args.checkpoint} was trained with --standardize; compare runs in the data's "
                "own units and does not undo it yet (sample it with 'scoresde sample')"
            )
        problem = checkpoint_problem(args.checkpoint, args.data, device=args.device)
    table = compare(
        problem,
        args.sde,
        split_solvers(args.solvers),
        args.steps,
        n=args.n,
        seed=args.seed,
        metrics=[m for m in args.metrics.split(",") if m] if args.metrics else None,
        rtols=args.rtols,
        reference_tol=args.reference_tol,
        n_ref=args.n_ref,
        device=args.device if args.checkpoint is None else None,
        progress=True,
    )
    print(table)
    files = write_outputs(table, args.out)
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0


#: The demo's solvers: SDE, PC, ODE and exponential-integrator families (pc with the batch
#: step-size norm, which is stable in 2-D; see benchmarks/samplers.py).
DEMO_SOLVERS = (
    "euler_maruyama",
    "ancestral",
    "pc:step_norm=batch",
    "ode_euler",
    "ode_heun",
    "ddim",
    "dpm_solver:order=2",
    "dpm_solver:order=3",
    "unipc",
    "ode_rk45",
)
DEMO_STEPS = (5, 10, 20, 50, 100)


def cmd_demo(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    solvers: tuple[str, ...]
    steps: tuple[int, ...]
    rtols: tuple[float, ...]
    if args.quick:
        solvers, steps, n, rtols = DEMO_SOLVERS[3:6] + ("ode_rk45",), (5, 10), 500, (1e-3,)
    else:
        solvers, steps, n, rtols = DEMO_SOLVERS, DEMO_STEPS, args.n, (1e-2, 1e-3, 1e-4)
    print(
        f"scoresde demo: sampling the 8-Gaussian ring (exact score, VP SDE) with {len(solvers)} "
        f"solvers at steps {', '.join(map(str, steps))}, n = {n} ...\n"
    )
    table = compare("ring", "vp", solvers, steps, n=n, seed=args.seed, rtols=rtols, progress=True)
    print(table)
    files = write_outputs(table, args.out)
    print(f"\nwrote {len(files)} files into {Path(args.out).resolve()}:")
    for f in files:
        print(f"  {f.name}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0


def add_compare_parser(
    subparsers, formatter_class=argparse.HelpFormatter
) -> argparse.ArgumentParser:
    """Register ``scoresde compare`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "compare",
        help="compare solvers x step counts on an exact-score problem or a trained checkpoint",
        description="Run every solver at every step count from one shared x_T and score the "
        "samples against exact samples (--problem) or data (--checkpoint with --data), with the "
        "noise floor between independent reference sets. Writes table.md/csv/json and PNG plots "
        f"into --out. Problems: {', '.join(PROBLEMS)}; solvers: {', '.join(SOLVERS)}.",
        formatter_class=formatter_class,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--problem",
        default=None,
        choices=tuple(PROBLEMS),
        help="exact-score Gaussian-mixture preset (default: ring)",
    )
    which.add_argument(
        "--checkpoint",
        default=None,
        help="a trained checkpoint, path without suffix, with --data (default: none, a --problem)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="reference data for --checkpoint: a toy set name, 'digits', a .npy/.npz file or an "
        "image folder (default: none; required with --checkpoint)",
    )
    p.add_argument(
        "--sde", default=None, choices=tuple(SDES), help="SDE for --problem (default: vp)"
    )
    p.add_argument(
        "--solvers",
        default="ode_heun,dpm_solver,pc",
        help="comma-separated; options as name:key=val,key=val (e.g. dpm_solver:order=3)",
    )
    p.add_argument(
        "--steps",
        type=list_of(POSITIVE_INT),
        default="5,10,20,50",
        metavar="N,N,...",
        help="comma-separated step counts for fixed-step solvers",
    )
    p.add_argument("--out", default="compare_results", help="output folder")
    p.add_argument("--n", type=int_at_least(2), default=4000, help="samples per run")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T, the noise and the metrics")
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, of {METRICS} (default mmd2,frechet, plus mode_tv,width for a "
        "--problem)",
    )
    p.add_argument(
        "--rtols",
        type=list_of(POSITIVE_FLOAT),
        default=",".join(f"{r:g}" for r in DEFAULT_RTOLS),
        metavar="TOL,TOL,...",
        help="tolerances for adaptive solvers (ode_rk45, scipy), which take no step counts",
    )
    p.add_argument(
        "--reference-tol",
        type=POSITIVE_FLOAT,
        default=1e-7,
        help="rtol = atol of the float64 ode_rk45 reference solve behind ref_rms (the slow part)",
    )
    p.add_argument(
        "--n-ref",
        type=POSITIVE_INT,
        default=None,
        help="samples that get a reference solve (default: all --n)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument(
        "--threads",
        type=NONNEGATIVE_INT,
        default=0,
        help=f"torch threads, 0: leave as is; {THREADS_HINT}",
    )
    p.set_defaults(func=cmd_compare)
    return p


def add_demo_parser(subparsers, formatter_class=argparse.HelpFormatter) -> argparse.ArgumentParser:
    """Register ``scoresde demo`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "demo",
        help="a seconds-long tour: compare solvers on the 2-D ring, write plots",
        description=f"Compare {len(DEMO_SOLVERS)} solvers ({', '.join(DEMO_SOLVERS)}) at steps "
        f"{', '.join(map(str, DEMO_STEPS))} on the 8-Gaussian ring with the exact score (VP "
        "SDE): a table on stdout, PNG plots in --out. Seconds on idle cores; measured 33 s on "
        "one thread of a 2-core CPU under load 9, where two threads took 271 s.",
        formatter_class=formatter_class,
    )
    p.add_argument("--out", default=".", help="folder for the table and PNGs")
    p.add_argument("--n", type=int_at_least(2), default=2000, help="samples per run")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T, the noise and the metrics")
    p.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=1,
        help="torch threads: the demo's tensors are small, and more threads only help on idle "
        "cores",
    )
    p.add_argument("--quick", action="store_true", help="a smaller grid (4 solvers, n = 500)")
    p.set_defaults(func=cmd_demo)
    return p
