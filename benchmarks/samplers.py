"""Sampler benchmark: every solver of ``scoresde`` on exact-score Gaussian mixtures.

For each problem (``ring``: 8 Gaussians on a circle, 2-D; ``gmm64``: a seeded random 64-D mixture;
both from ``scoresde.comparison``) and SDE (VP, sub-VP, VE with Song et al.'s defaults) it runs
every solver variant at several step counts from one shared x_T and one shared noise seed (common
random numbers), and reports

* NFE, counted by ``sample`` (``res.nfe``);
* MMD^2 (``scoresde.metrics.mmd2``, unbiased, kernel scales from the target) and the Frechet
  distance of Gaussian fits against exact samples of the solver's target p_eps, next to the noise
  floor of both (mean +- std over independent exact sample sets);
* for deterministic (probability-flow ODE) solvers, the distance to a tight-tolerance float64
  solution of the same ODE from the same x_T (``ode_rk45`` at rtol = atol = 1e-8) on the first
  ``--n-ref`` samples: RMS per coordinate, the median per-sample error and the number of samples
  that end in another mixture component than the reference ("mode switches");
* wall time and process CPU time of the ``sample`` call (CPU time is the steadier number on
  a shared machine).

A second part compares the time grids (uniform / quadratic / logsnr / karras) of every fixed-step
solver at a few step counts and names the grid with the smallest error per NFE: the median
per-sample error to the reference for deterministic solvers (the RMS winner is reported too),
MMD^2 clamped below at the noise floor's std for stochastic ones; the error is aggregated over
problems and SDEs by its geometric mean.

Run ``python benchmarks/samplers.py --help``. The default is the full grid (about 2 min per ring
case and 25-50 min per gmm64 case on a shared 2-core machine); ``--quick`` is a reduced grid
(about 4 min).
Samples are float32 (``--dtype``), references float64; one torch thread by default (``--threads``).
``--summarize FILE.csv`` re-prints the per-case summary tables of an earlier ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as P  # noqa: E402

import scoresde as sd  # noqa: E402

FULL_STEPS = (5, 10, 20, 50, 100, 250, 1000)
QUICK_STEPS = (5, 10, 20, 50)
GRID_STEPS = (10, 20, 50)
ADAPTIVE_RTOLS = {"ode_rk45": (1e-2, 1e-3, 1e-4, 1e-5), "scipy": (1e-3, 1e-5)}


@dataclass
class Variant:
    """One solver with fixed options; ``adaptive`` variants take no ``steps``."""

    solver: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.solver}({opts})" if opts else self.solver

    @property
    def adaptive(self) -> bool:
        """The solver chooses its own steps (declares no NFE per step): tolerances, no steps."""
        return sd.make_solver(self.solver, **self.options).nfe_per_step is None

    @property
    def deterministic(self) -> bool:
        return not sd.make_solver(self.solver, **self.options).stochastic

    @property
    def fixed_grid(self) -> bool:
        return sd.make_solver(self.solver, **self.options).fixed_grid

    @property
    def default_grid(self) -> str:
        return sd.make_solver(self.solver, **self.options).default_time_grid

    def applies(self, sde: sd.SDE) -> bool:
        if self.solver == "ancestral" or self.options.get("predictor") == "ancestral":
            return sde.ancestral_rule is not None
        return True


def make_variants(dim: int) -> list[Variant]:
    """Every solver in ``sd.SOLVERS`` with the option variants worth comparing.

    pc and langevin run with their default batch step rule; in 16-D and above the per-sample
    rule is added as a variant (in low dimension it diverges, see ``LangevinCorrector``).
    """
    per_sample = [Variant("pc", {"step_norm": "sample"})] if dim >= 16 else []
    out = [
        Variant("euler_maruyama"),
        Variant("reverse_diffusion"),
        Variant("ancestral"),
        Variant("pc"),
        *per_sample,
        Variant("langevin"),
        Variant("ode_euler"),
        Variant("ode_heun"),
        Variant("ode_rk4"),
        Variant("ddim", {"eta": 0.0}),
        Variant("ddim", {"eta": 1.0}),
    ]
    out += [
        Variant("dpm_solver", {"order": k, "prediction": p})
        for p in ("data", "noise")
        for k in (1, 2, 3)
    ]
    out += [
        Variant("dpm_solver", {"order": 2, "prediction": p, "solver_type": "midpoint"})
        for p in ("data", "noise")
    ]
    out += [Variant("dpm_solver_sde", {"order": k}) for k in (1, 2)]
    out += [
        Variant("unipc", {"order": k, "prediction": p}) for p in ("data", "noise") for k in (2, 3)
    ]
    # each form with the other form's default B(h)
    out += [Variant("unipc", {"order": 3, "variant": "bh2"})]
    out += [Variant("unipc", {"order": 3, "prediction": "data", "variant": "bh1"})]
    out += [Variant("torchsde", {"method": "euler"})]
    out += [Variant("ode_rk45", {"rtol": r, "atol": r}) for r in ADAPTIVE_RTOLS["ode_rk45"]]
    out += [
        Variant("scipy", {"method": "RK45", "rtol": r, "atol": r}) for r in ADAPTIVE_RTOLS["scipy"]
    ]
    missing = set(sd.SOLVERS) - {v.solver for v in out}
    if missing:  # a solver added to the package after this file: run it with its defaults
        out += [Variant(name) for name in sorted(missing)]
    return out


@dataclass
class Row:
    problem: str
    sde: str
    solver: str
    steps: int | None
    grid: str
    nfe: int
    mmd2: float | None
    fd: float | None
    rms: float | None
    median: float | None
    switches: int | None
    seconds: float
    cpu_seconds: float
    deterministic: bool
    note: str = ""


class Case:
    """One (problem, SDE): target samples, noise floor, x_T, the reference, and a result cache."""

    def __init__(self, problem: str, sde_name: str, args):
        self.problem, self.sde_name = problem, sde_name
        self.data = P.PROBLEMS[problem]()
        self.sde = P.make_sde(sde_name)
        self.score = sd.exact_score(self.sde, self.data)
        self.eps = self.sde.sampling_eps
        self.dtype = getattr(torch, args.dtype)
        self.seed = args.seed
        n, d = args.n, self.data.dim
        self.target = P.marginal_samples(self.sde, self.data, self.eps, n, args.seed + 7).float()
        self.floor = P.noise_floor(
            self.sde, self.data, self.eps, self.target, args.floor_draws, args.seed
        )
        self.x_T64 = P.prior_noise(n, d, args.seed + 1) * self.sde.prior_std
        self.x_T = self.x_T64.to(self.dtype)
        self.n_ref = min(args.n_ref, n)
        self.ref, self.ref_nfe, self.ref_seconds = P.pf_ode_reference(
            self.sde, self.score, self.x_T64[: self.n_ref], self.eps, args.ref_rtol
        )
        self.rows: dict[tuple, Row] = {}

    def run(self, v: Variant, steps: int | None, grid: str | None, metrics: str = "all") -> Row:
        """Sample with variant v; ``metrics="all"`` or ``"error"`` (only the grid-study error)."""
        grid_name = grid or (v.default_grid if v.fixed_grid and not v.adaptive else "—")
        key = (v.label, steps, grid_name)
        if key in self.rows:  # the main table runs first, with every metric
            return self.rows[key]
        kwargs = dict(v.options)
        if not v.adaptive:
            kwargs["steps"] = steps
            if v.fixed_grid:
                kwargs["time_grid"] = grid_name
        gen = torch.Generator().manual_seed(self.seed + 2)
        note = ""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = sd.sample(
                self.sde,
                self.score,
                tuple(self.x_T.shape),
                solver=v.solver,
                x_T=self.x_T,
                generator=gen,
                **kwargs,
            )
            x, nfe = res.samples, res.nfe
        except (sd.NonFiniteError, RuntimeError) as err:
            x, nfe, note = None, 0, type(err).__name__
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        det = v.deterministic
        mmd = fd = err_rms = med = switches = None
        if x is not None:
            if det:
                pe = P.path_error(self.data, x[: self.n_ref], self.ref)
                err_rms, med, switches = pe.rms, pe.median, pe.switches
            if metrics == "all" or not det:
                mmd = P.safe_mmd2(x, self.target)
                fd = P.safe_frechet(x, self.target)
        else:
            mmd = fd = err_rms = med = float("nan")
        row = Row(
            self.problem,
            self.sde_name,
            v.label,
            steps,
            grid_name,
            nfe,
            mmd,
            fd,
            err_rms,
            med,
            switches,
            seconds,
            cpu,
            det,
            note,
        )
        self.rows[key] = row
        return row


def main_table(rows: list[Row]) -> str:
    header = [
        "problem",
        "sde",
        "solver",
        "steps",
        "grid",
        "NFE",
        "MMD²",
        "Fréchet",
        "RMS vs ref",
        "median err",
        "mode switches",
        "wall (s)",
        "CPU (s)",
    ]
    body = []
    for r in rows:
        steps = str(r.steps) if r.steps is not None else "adaptive"
        body.append(
            [
                r.problem,
                r.sde,
                r.solver + (f" [{r.note}]" if r.note else ""),
                steps,
                r.grid,
                str(r.nfe),
                P.fmt(r.mmd2),
                P.fmt(r.fd),
                P.fmt(r.rms) if r.deterministic else "—",
                P.fmt(r.median) if r.deterministic else "—",
                str(r.switches) if r.deterministic else "—",
                f"{r.seconds:.2f}",
                f"{r.cpu_seconds:.2f}",
            ]
        )
    return P.markdown_table(header, body)


def pivot_tables(rows: list[Row], steps: list[int]) -> str:
    """Compact view of one (problem, SDE): RMS to the reference of the ODE solvers and MMD^2 of
    the stochastic ones by step count (default grids), and the adaptive solvers' NFE and RMS."""
    by_solver: dict[str, dict] = defaultdict(dict)
    grid_of, nfe_per_step, det_of = {}, {}, {}
    adaptive = []
    for r in rows:
        if r.steps is None:
            adaptive.append(r)
            continue
        by_solver[r.solver][r.steps] = r
        grid_of[r.solver], det_of[r.solver] = r.grid, r.deterministic
        if r.nfe:
            nfe_per_step[r.solver] = f"{r.nfe / r.steps:.3g}"
    parts = []
    for det, metric in ((True, "RMS / median per-sample error vs reference"), (False, "MMD²")):
        body = []
        for name, cells in by_solver.items():
            if det_of[name] != det:
                continue
            vals = []
            for s in steps:
                r = cells.get(s)
                if r is None:
                    vals.append("—")
                elif det:
                    vals.append(f"{P.fmt(r.rms)} / {P.fmt(r.median)}")
                else:
                    vals.append(P.fmt(r.mmd2))
            body.append([name, grid_of[name], nfe_per_step.get(name, "?"), *vals])
        if body:
            title = "ODE solvers" if det else "stochastic solvers"
            parts.append(f"{title}, {metric} by steps:")
            parts.append("")
            header = ["solver", "grid", "NFE/step", *map(str, steps)]
            parts.append(P.markdown_table(header, body))
            parts.append("")
    if adaptive:
        body = [
            [r.solver, str(r.nfe), P.fmt(r.rms), P.fmt(r.median), str(r.switches), P.fmt(r.mmd2)]
            for r in adaptive
        ]
        header = ["adaptive solver", "NFE", "RMS vs ref", "median err", "mode switches", "MMD²"]
        parts.append(P.markdown_table(header, body))
        parts.append("")
    return "\n".join(parts)


def rows_from_csv(path: str) -> list[Row]:
    """Rows written by ``--csv`` (main-table and grid-study rows alike)."""

    def num(v):
        return None if v in ("", "None") else float(v)

    out = []
    with open(path, newline="") as fh:
        for d in csv.DictReader(fh):
            steps = None if d["steps"] in ("", "None") else int(d["steps"])
            out.append(
                Row(
                    d["problem"],
                    d["sde"],
                    d["solver"],
                    steps,
                    d["grid"],
                    int(d["nfe"]),
                    num(d["mmd2"]),
                    num(d["frechet"]),
                    num(d["rms"]),
                    num(d["median"]),
                    None if d["switches"] in ("", "None") else int(d["switches"]),
                    float(d["seconds"]),
                    float(d["cpu_seconds"]),
                    d["deterministic"] == "True",
                    d["note"],
                )
            )
    return out


def summarize_csv(path: str) -> str:
    """Re-render the per-(problem, SDE) pivot tables from a ``--csv`` file, default grids only."""
    rows = rows_from_csv(path)
    defaults = {}
    for dim in (2, 64):
        for v in make_variants(dim):
            defaults[v.label] = v.default_grid if (v.fixed_grid and not v.adaptive) else "—"
    cases = list(dict.fromkeys((r.problem, r.sde) for r in rows))
    steps = sorted({r.steps for r in rows if r.steps is not None})
    out = []
    for problem, sde_name in cases:
        sel = [
            r
            for r in rows
            if (r.problem, r.sde) == (problem, sde_name)
            and r.grid == defaults.get(r.solver, r.grid)
        ]
        out += [f"#### {problem} / {sde_name}", "", pivot_tables(sel, steps)]
    return "\n".join(out)


def grid_error(row: Row, floor: P.Floor, path_metric: str = "median") -> float:
    """Error used to pick a time grid: the median per-sample error (or the RMS) to the reference
    for ODE solvers; MMD^2 clamped below at the noise floor's std for stochastic ones."""
    if row.deterministic:
        v = row.median if path_metric == "median" else row.rms
    else:
        v = max(row.mmd2, floor.mmd_std) if row.mmd2 is not None else float("nan")
    return float("inf") if v is None or math.isnan(v) else v


def grid_summary(
    cases: list[Case], variants: list[Variant], grid_steps, path_metric: str = "median"
) -> tuple[str, dict]:
    """Per solver and grid: geometric-mean error over (problem, SDE) at each step count, the mean
    rank among the grids over all cells, and the winner (smallest overall geometric mean)."""
    errs: dict[tuple, list[float]] = defaultdict(list)  # (label, grid, steps) -> errors
    ranks: dict[tuple, list[float]] = defaultdict(list)  # (label, grid) -> ranks
    for case in cases:
        for v in variants:
            for s in grid_steps:
                cell = {}
                for g in sd.TIME_GRIDS:
                    row = case.rows.get((v.label, s, g))
                    if row is not None:
                        cell[g] = grid_error(row, case.floor, path_metric)
                if len(cell) < 2:
                    continue
                order = sorted(cell, key=cell.get)
                for rank, g in enumerate(order, 1):
                    ranks[(v.label, g)].append(rank)
                    errs[(v.label, g, s)].append(cell[g])
    body, winners = [], {}
    for v in variants:
        scores = {}
        for g in sd.TIME_GRIDS:
            if not ranks.get((v.label, g)):
                continue
            per_step = []
            logs = []
            for s in grid_steps:
                e = errs.get((v.label, g, s), [])
                if not e:
                    per_step.append("—")
                    continue
                gm = float(np.exp(np.mean(np.log(np.maximum(e, 1e-300)))))
                per_step.append(P.fmt(gm))
                logs += list(np.log(np.maximum(e, 1e-300)))
            scores[g] = float(np.mean(logs)) if logs else float("inf")
            body.append(
                [
                    v.label,
                    g,
                    ("median err" if path_metric == "median" else "RMS")
                    if v.deterministic
                    else "MMD²",
                    *per_step,
                    f"{np.mean(ranks[(v.label, g)]):.2f}",
                ]
            )
        if scores:
            best = min(scores, key=scores.get)
            winners[v.label] = best
            for row in body[-len(scores) :]:
                if row[1] == best:
                    row[1] = f"**{best}**"
    header = ["solver", "grid", "error", *[f"{s} steps" for s in grid_steps], "mean rank"]
    return P.markdown_table(header, body), winners


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--problems",
        default="ring,gmm64",
        help="comma list of: ring, grid, gmm64, narrow, aniso256",
    )
    p.add_argument("--sdes", default="vp,subvp,ve", help="comma list of: vp, subvp, ve")
    p.add_argument(
        "--steps",
        default=None,
        help=f"comma list (default {','.join(map(str, FULL_STEPS))}; "
        f"--quick: {','.join(map(str, QUICK_STEPS))})",
    )
    p.add_argument(
        "--solvers",
        default=None,
        help="comma list of solver names or variant labels (default: all)",
    )
    p.add_argument("--n", type=int, default=None, help="samples (default 4000; --quick 2000)")
    p.add_argument(
        "--n-ref",
        type=int,
        default=None,
        help="samples with an ODE reference for the RMS (default 1000; --quick 500)",
    )
    p.add_argument("--ref-rtol", type=float, default=1e-8, help="reference ode_rk45 rtol = atol")
    p.add_argument(
        "--floor-draws",
        type=int,
        default=None,
        help="independent exact sets for the noise floor (default 8; --quick 4)",
    )
    p.add_argument(
        "--grid-steps",
        default=None,
        help="steps of the time-grid study (default 10,20,50; --quick 10,20); 'none' skips it",
    )
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine two OpenMP threads "
        "per process oversubscribe the cores and run up to 20x slower)",
    )
    p.add_argument("--quick", action="store_true", help="reduced grid, < 10 min on 2 CPU cores")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    p.add_argument("--csv", default=None, help="also write every row as CSV here")
    p.add_argument(
        "--summarize", default=None, metavar="CSV", help="only print the summary tables of a --csv"
    )
    args = p.parse_args(argv)
    q = args.quick
    args.steps = [
        int(s)
        for s in (args.steps or ",".join(map(str, QUICK_STEPS if q else FULL_STEPS))).split(",")
    ]
    args.n = args.n or (2000 if q else 4000)
    args.n_ref = args.n_ref or (500 if q else 1000)
    args.floor_draws = args.floor_draws or (4 if q else 8)
    gs = args.grid_steps or ("10,20" if q else ",".join(map(str, GRID_STEPS)))
    args.grid_steps = [] if gs == "none" else [int(s) for s in gs.split(",")]
    args.problems = args.problems.split(",")
    args.sdes = args.sdes.split(",")
    for name in args.problems:
        if name not in P.PROBLEMS:
            p.error(f"unknown problem {name!r}; choose from {sorted(P.PROBLEMS)}")
    for name in args.sdes:
        if name not in P.SDE_NAMES:
            p.error(f"unknown sde {name!r}; choose from {P.SDE_NAMES}")
    return args


def select(variants: list[Variant], spec: str | None) -> list[Variant]:
    if not spec:
        return variants
    wanted = spec.split(",")
    unknown = [w for w in wanted if w not in sd.SOLVERS and w not in {v.label for v in variants}]
    if unknown:
        raise SystemExit(f"unknown solver(s) {unknown}; names: {sd.SOLVERS}")
    return [v for v in variants if v.solver in wanted or v.label in wanted]


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.summarize:
        print(summarize_csv(args.summarize))
        return
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out: list[str] = []

    def emit(text: str = "") -> None:
        print(text, flush=True)
        out.append(text)

    emit(f"`{P.command_line()}`")
    emit()
    emit(
        f"{P.environment_line()}; samples {args.dtype}, n = {args.n}, seed {args.seed}; "
        f"reference: ode_rk45 float64 rtol = atol = {args.ref_rtol:g} on the first "
        f"{args.n_ref} samples; grids study at steps {args.grid_steps or 'none'}."
    )
    emit()
    cases, floors = [], []

    def write_outputs() -> None:
        """(Re)write --out and --csv after every case, so that a stopped run keeps its results."""
        if args.out:
            Path(args.out).write_text("\n".join(out) + "\n")
        if args.csv:
            with open(args.csv, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(
                    [
                        "problem",
                        "sde",
                        "solver",
                        "steps",
                        "grid",
                        "nfe",
                        "mmd2",
                        "frechet",
                        "rms",
                        "median",
                        "switches",
                        "seconds",
                        "cpu_seconds",
                        "deterministic",
                        "note",
                    ]
                )
                for case in cases:
                    for r in case.rows.values():
                        w.writerow(
                            [
                                r.problem,
                                r.sde,
                                r.solver,
                                r.steps,
                                r.grid,
                                r.nfe,
                                r.mmd2,
                                r.fd,
                                r.rms,
                                r.median,
                                r.switches,
                                f"{r.seconds:.4f}",
                                f"{r.cpu_seconds:.4f}",
                                r.deterministic,
                                r.note,
                            ]
                        )

    variants_by_case = {}
    for problem in args.problems:
        for sde_name in args.sdes:
            t_case = time.perf_counter()
            case = Case(problem, sde_name, args)
            cases.append(case)
            variants = [
                v for v in select(make_variants(case.data.dim), args.solvers) if v.applies(case.sde)
            ]
            variants_by_case[(problem, sde_name)] = variants
            f = case.floor
            floors.append(
                [
                    problem,
                    sde_name,
                    f"{case.eps:g}",
                    f"{P.fmt(f.mmd_mean)} ± {P.fmt(f.mmd_std)}",
                    f"{P.fmt(f.fd_mean)} ± {P.fmt(f.fd_std)}",
                    str(f.draws),
                    str(case.ref_nfe),
                    f"{case.ref_seconds:.1f}",
                ]
            )
            rows = []
            for v in variants:
                for s in [None] if v.adaptive else args.steps:
                    rows.append(case.run(v, s, None))
            for v in variants:
                if v.adaptive or not v.fixed_grid:
                    continue
                for s in args.grid_steps:
                    for g in sd.TIME_GRIDS:
                        case.run(v, s, g, metrics="error")
            print(
                f"<!-- {problem}/{sde_name} done in {time.perf_counter() - t_case:.0f} s -->",
                file=sys.stderr,
                flush=True,
            )
            emit(f"### {problem} / {sde_name}")
            emit()
            emit(main_table(rows))
            emit()
            emit(pivot_tables(rows, args.steps))
            write_outputs()

    emit("### Noise floor and reference")
    emit()
    emit(
        P.markdown_table(
            [
                "problem",
                "sde",
                "eps",
                "MMD² floor (mean ± std)",
                "Fréchet floor (mean ± std)",
                "draws",
                "reference NFE",
                "reference time (s)",
            ],
            floors,
        )
    )
    emit()
    if args.grid_steps:
        labels = []
        for vs in variants_by_case.values():
            labels += [
                v
                for v in vs
                if v.label not in {w.label for w in labels} and not v.adaptive and v.fixed_grid
            ]
        table, winners = grid_summary(cases, labels, args.grid_steps)
        emit("### Time grids: error per NFE (geometric mean over problems × SDEs)")
        emit()
        emit(table)
        emit()
        emit(
            "Winners (smallest geometric-mean error over all cells; ODE solvers by the median "
            "per-sample error): " + "; ".join(f"{k}: {g}" for k, g in winners.items())
        )
        emit()
        _, rms_winners = grid_summary(cases, labels, args.grid_steps, "rms")
        changed = {k: g for k, g in rms_winners.items() if winners.get(k) != g}
        emit(
            "ODE solvers whose winner changes when ranked by RMS instead: "
            + ("; ".join(f"{k}: {g}" for k, g in changed.items()) or "none")
        )
        emit()
    emit(f"Total wall time: {time.perf_counter() - started:.0f} s.")

    write_outputs()


if __name__ == "__main__":
    main()
