"""Are the defaults right on hard data? ``sample()``'s default solver, pc, the ODE solvers and
the best sampler per NFE budget on the hard mixtures, and old-vs-new defaults on the easy ones.

Part 1 (``--problems narrow,aniso256``): with the exact score, against the **data** (the clean
mixture: what a user wants), MMD^2, mode-weight TV and width error (``scoresde.metrics``) of

* ``sample(sde, score, shape, steps=200)`` (the default solver) and ``sample(sde, score, shape)``
  (its default steps too);
* ``pc`` at 200 steps with its default options, and with the old per-sample step rule;
* every ODE solver at its defaults at 200 steps, and every solver at its default steps;
* every sampler at a 10 and a 20 NFE budget (steps = budget / NFE per step), the best marked.

The noise floor of each metric is its RMS over ``--floor-sets`` independent exact data sets (for
MMD^2, whose mean is ~0, that is its standard deviation, design.md; for TV and width, which are
positive, it is about their mean). "x floor" columns give metric / floor.

Part 2 (``--before-after ring,grid,gmm64``): each changed default, old against new, on the
easy presets, same metrics: nothing that worked may get worse.

    python benchmarks/defaults.py --out results/defaults.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as P  # noqa: E402

import scoresde as sd  # noqa: E402
from scoresde.metrics import MMD, mode_weight_tv, width_error  # noqa: E402

F64 = torch.float64
ODE_SOLVERS = ("ode_euler", "ode_heun", "ode_rk4", "ddim", "dpm_solver", "unipc")
#: (label, solver, options) of the samplers tried at each NFE budget, each at the largest step
#: count whose NFE fits.
BUDGET_SAMPLERS = (
    ("ode_heun", "ode_heun", {}),
    ("ddim", "ddim", {}),
    ("dpm_solver", "dpm_solver", {}),
    ("dpm_solver(order=2,prediction=data)", "dpm_solver", {"order": 2, "prediction": "data"}),
    ("unipc", "unipc", {}),
    ("euler_maruyama", "euler_maruyama", {}),
    ("ancestral", "ancestral", {}),
    ("dpm_solver_sde", "dpm_solver_sde", {}),
    ("pc", "pc", {}),
    ("edm", "edm", {}),
    ("restart", "restart", {}),
)


class Case:
    """One (problem, SDE): the data, the exact score, the metrics and their floors."""

    def __init__(self, problem: str, sde_name: str, n: int, floor_sets: int, seed: int):
        self.problem, self.sde_name, self.n, self.seed = problem, sde_name, n, seed
        self.data = P.PROBLEMS[problem]()
        self.sde = P.make_sde(sde_name)
        self.score = sd.exact_score(self.sde, self.data)
        sets = [self.draw(k) for k in range(floor_sets + 1)]
        self.mmd = MMD(sets[0])
        floor = torch.tensor([self.metrics(x) for x in sets[1:]], dtype=F64)
        self.floor = floor.square().mean(0).sqrt().tolist()

    def draw(self, k: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 100 + k)
        return self.data.sample(self.n, generator=g).float()

    def metrics(self, x: torch.Tensor) -> list[float]:
        if not bool(torch.isfinite(x).all()):
            return [float("nan")] * 3
        return [self.mmd(x), mode_weight_tv(x, self.data), width_error(x, self.data)]

    def run(self, solver: str | None, steps: int | None, **options) -> tuple[int, list[float]]:
        kw = dict(options)
        if solver is not None:
            kw["solver"] = solver
        if steps is not None:
            kw["steps"] = steps
        g = torch.Generator().manual_seed(self.seed + 1)
        try:
            res = sd.sample(self.sde, self.score, (self.n, self.data.dim), generator=g, **kw)
        except sd.NonFiniteError:
            return 0, [float("nan")] * 3
        return res.nfe, self.metrics(res.samples)

    def fit_steps(self, solver: str, budget: int, **options) -> int | None:
        """The largest step count whose NFE (counted on 2 samples) is at most ``budget``."""
        for steps in range(budget, 0, -1):
            probe = sd.sample(self.sde, self.score, (2, self.data.dim), solver, steps, **options)
            if probe.nfe <= budget:
                return steps
        return None

    def row(self, label: str, nfe: int, vals: list[float]) -> list[str]:
        ratios = [
            abs(v) / f if f > 0 else float("nan") for v, f in zip(vals, self.floor, strict=True)
        ]
        return [
            self.problem,
            self.sde_name,
            label,
            str(nfe),
            *(P.fmt(v) for v in vals),
            *(f"{r:.2g}" for r in ratios),
        ]


HEAD = ["problem", "sde", "call", "NFE", "MMD²", "TV", "width", "MMD² ×floor", "TV ×floor"]
HEAD += ["width ×floor"]


def floor_row(case: Case) -> list[str]:
    return (
        [case.problem, case.sde_name, "exact data (the floor)", "—"]
        + [P.fmt(f) for f in case.floor]
        + ["1", "1", "1"]
    )


def hard_part(
    case: Case, emit, only: set[str] | None = None, ode=ODE_SOLVERS, default_steps=True
) -> None:
    """Part 1 on one case; ``only``: restrict every section to these solver names."""
    if only is not None:
        budget_part(case, emit, only)
        return
    rows = [floor_row(case)]

    def add(label, solver, steps, **options):
        nfe, vals = case.run(solver, steps, **options)
        rows.append(case.row(label, nfe, vals))
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        return vals

    add("sample(steps=200) (default solver)", None, 200)
    add("sample() (default solver and steps)", None, None)
    add("pc, 200 steps, defaults", "pc", 200)
    add("pc, 200 steps, step_norm=sample (old default)", "pc", 200, step_norm="sample")
    for s in ode:
        add(f"{s}, 200 steps, defaults", s, 200)
    emit(P.markdown_table(HEAD, rows) + "\n")
    if default_steps:
        rows = [floor_row(case)]
        for s in sd.SOLVERS:
            steps = sd.make_solver(s).default_steps
            if steps is not None:
                add(f"{s}, its default {steps} steps", s, None)
        emit("Every solver with no options and no steps (its ``default_steps``):\n")
        emit(P.markdown_table(HEAD, rows) + "\n")
    budget_part(case, emit, None)


def budget_part(case: Case, emit, only: set[str] | None) -> None:
    """Each sampler at 10 and 20 NFE (and, for ``only``, at 200 steps and its default steps)."""
    if only is not None:
        rows = [floor_row(case)]
        for s in sorted(only):
            for steps in (200, None):
                nfe, vals = case.run(s, steps)
                label = f"{s}, {steps or sd.make_solver(s).default_steps} steps, defaults"
                rows.append(case.row(label, nfe, vals))
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        emit(P.markdown_table(HEAD, rows) + "\n")
    for budget in (10, 20):
        rows = [floor_row(case)]
        scored = []
        for label, solver, options in BUDGET_SAMPLERS:
            if solver not in sd.SOLVERS or (only is not None and solver not in only):
                continue
            steps = case.fit_steps(solver, budget, **options)
            if steps is None:
                continue
            nfe, vals = case.run(solver, steps, **options)
            rows.append(case.row(f"{label}, {steps} steps", nfe, vals))
            score = sum(abs(v) / f for v, f in zip(vals, case.floor, strict=True))
            scored.append((score if math.isfinite(score) else math.inf, len(rows)))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        best = min(scored)[1] - 1
        rows[best][2] = f"**{rows[best][2]}**"
        emit(f"NFE budget {budget} (best: smallest sum of the three ×floor ratios, bold):\n")
        emit(P.markdown_table(HEAD, rows) + "\n")


#: (label, solver, old options, new options): the defaults this change touched.
CHANGES = (
    ("sample() default solver", None, {"solver": "pc", "step_norm": "sample"}, {}),
    ("pc", "pc", {"step_norm": "sample"}, {}),
    ("langevin", "langevin", {"step_norm": "sample"}, {}),
    ("dpm_solver", "dpm_solver", {}, {}),
    ("unipc", "unipc", {}, {}),
    ("ode_heun", "ode_heun", {}, {}),
    ("euler_maruyama", "euler_maruyama", {}, {}),
)


def before_after(case: Case, steps_list, old_eps: float, emit) -> None:
    """Old against new defaults; the old end point is eps = ``old_eps`` (Song et al.'s)."""
    head = ["problem", "sde", "call", "steps", "NFE old", "NFE new"]
    head += [f"{m} {w}" for m in ("MMD²", "TV", "width") for w in ("old", "new")]
    rows = [[case.problem, case.sde_name, "exact data (floor)", "—", "—", "—"]]
    rows[0] += [P.fmt(f) for f in case.floor for _ in range(2)]
    for label, solver, old, new in CHANGES:
        for steps in steps_list:
            old_opts = dict(old)
            s_old = old_opts.pop("solver", solver)
            nfe_o, v_o = case.run(s_old, steps, eps=old_eps, **old_opts)
            nfe_n, v_n = case.run(solver, steps, **new)
            cells = [P.fmt(v) for pair in zip(v_o, v_n, strict=True) for v in pair]
            rows.append(
                [case.problem, case.sde_name, label, str(steps), str(nfe_o), str(nfe_n), *cells]
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    emit(P.markdown_table(head, rows) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", default="narrow,aniso256")
    p.add_argument("--sdes", default="vp")
    p.add_argument("--before-after", default="ring,grid,gmm64", help="'none' skips part 2")
    p.add_argument("--ba-steps", default="20,200")
    p.add_argument("--n", type=int, default=10_000, help="samples (2-D); >= 64-D use --n-high")
    p.add_argument("--n-high", type=int, default=4000)
    p.add_argument("--floor-sets", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--only-solvers",
        default=None,
        help="part 1 for these only (200 steps, default steps, 10/20 NFE), e.g. edm,restart",
    )
    p.add_argument("--ode-solvers", default=",".join(ODE_SOLVERS), help="ODE solvers at 200 steps")
    p.add_argument(
        "--skip-default-steps", action="store_true", help="skip 'every solver at its default steps'"
    )
    args = p.parse_args(argv)
    only = set(args.only_solvers.split(",")) if args.only_solvers else None
    torch.set_num_threads(1)
    out: list[str] = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        out.append(text)
        if args.out:
            Path(args.out).write_text("\n".join(out) + "\n")

    t0 = time.perf_counter()
    emit(f"`{P.command_line()}`\n\n{P.environment_line()}\n")
    for problem in filter(None, args.problems.split(",")):
        for sde_name in args.sdes.split(","):
            n = args.n if P.PROBLEMS[problem]().dim <= 2 else args.n_high
            case = Case(problem, sde_name, n, args.floor_sets, args.seed)
            emit(f"### {problem} / {sde_name}, n = {n}\n")
            ode = [s for s in args.ode_solvers.split(",") if s]
            hard_part(case, emit, only, ode, not args.skip_default_steps)
    if args.before_after != "none":
        steps_list = [int(s) for s in args.ba_steps.split(",")]
        for problem in args.before_after.split(","):
            for sde_name in args.sdes.split(","):
                n = args.n if P.PROBLEMS[problem]().dim <= 2 else args.n_high
                case = Case(problem, sde_name, n, args.floor_sets, args.seed)
                old_eps = 1e-5 if sde_name == "ve" else 1e-3
                emit(f"### before / after: {problem} / {sde_name}, n = {n}\n")
                before_after(case, steps_list, old_eps, emit)
    emit(f"Total wall time: {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
