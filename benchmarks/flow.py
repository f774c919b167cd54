"""Rectified flow against VP at few steps: the same mixtures, exact scores, the same solvers.

``sd.RectifiedFlow()`` (alpha = 1 - t, sigma = t, T = 1 - 1e-3) and ``sd.VPSDE()`` (Song et al.'s
linear beta in [0.1, 20]) sample the same exact-score Gaussian mixtures (``ring``, ``grid``,
``narrow`` from ``scoresde.comparison``) with deterministic solvers at 5, 10 and 20 score
evaluations (Heun: 4, 10, 20), each solver on its default time grid, from one shared standard
normal z per problem (x_T = prior_std z: common random numbers). Reported per (problem,
solver, NFE):

* MMD^2 (``scoresde.metrics.mmd2``, unbiased) against exact samples of the SDE's own p_eps, as a
  multiple of the noise floor's std (the spread of MMD^2 between independent exact sets; a value
  within ~3 of the floor's mean/std is at the floor);
* the median per-sample RMS distance to a float64 ``ode_rk45`` solution (rtol = atol = 1e-8) of
  the same PF-ODE from the same x_T: the integration error alone.

Run ``python benchmarks/flow.py`` (about 8 min on one CPU thread) or ``--quick`` (ring only);
``--csv FILE`` also writes the rows.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as P  # noqa: E402

import scoresde as sd  # noqa: E402

NFES = (5, 10, 20)
#: (label, solver, options, score calls per step): deterministic solvers on their default grids,
#: and Euler on the uniform grid too (Liu et al.'s rectified-flow sampler).
SOLVERS = [
    ("ode_euler (karras)", "ode_euler", {}, 1),
    ("ode_euler (uniform)", "ode_euler", {"time_grid": "uniform"}, 1),
    ("ode_heun (quadratic)", "ode_heun", {}, 2),
    ("ddim (uniform)", "ddim", {}, 1),
    ("dpm_solver (3, noise, logsnr)", "dpm_solver", {}, 1),
    ("dpm_solver++ (2M, data, quadratic)", "dpm_solver", {"order": 2, "prediction": "data"}, 1),
    ("unipc (quadratic)", "unipc", {}, 1),
]
SDES = {"VP": sd.VPSDE, "RF": sd.RectifiedFlow}


def run_case(name: str, n: int, seed: int, floor_draws: int) -> list[dict]:
    data = P.PROBLEMS[name]()
    z = P.prior_noise(n, data.dim, seed)
    rows = []
    for sde_label, make in SDES.items():
        sde = make()
        score = sd.exact_score(sde, data)
        eps = sde.sampling_eps
        target = P.marginal_samples(sde, data, eps, n, seed + 1).float()
        floor = P.noise_floor(sde, data, eps, target, floor_draws, seed)
        x_T = sde.prior_std * z
        ref, _, _ = P.pf_ode_reference(sde, score, x_T, eps)
        for label, solver, options, per_step in SOLVERS:
            for nfe in NFES:
                steps = nfe // per_step
                res = sd.sample(
                    sde, score, (n, data.dim), solver, steps, x_T=x_T.float(), **options
                )
                mmd = P.safe_mmd2(res.samples, target)
                err = P.path_error(data, res.samples, ref)
                rows.append(
                    {
                        "problem": name,
                        "sde": sde_label,
                        "solver": label,
                        "nfe": nfe,
                        "nfe_counted": res.nfe,
                        "mmd2": mmd,
                        "mmd2_floor_mean": floor.mmd_mean,
                        "mmd2_floor_std": floor.mmd_std,
                        "mmd2_in_floor_stds": (mmd - floor.mmd_mean) / floor.mmd_std,
                        "path_median": err.median,
                        "mode_switches": err.switches,
                    }
                )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (problem, solver, NFE), VP and RF side by side."""
    by_key = {(r["problem"], r["solver"], r["nfe"], r["sde"]): r for r in rows}
    lines = [
        "| problem | solver | NFE | MMD² / floor std: VP | RF | median path error: VP | RF |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    seen = []
    for r in rows:
        key = (r["problem"], r["solver"], r["nfe"])
        if key in seen:
            continue
        seen.append(key)
        vp, rf = by_key.get((*key, "VP")), by_key.get((*key, "RF"))
        if vp is None or rf is None:
            continue
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {P.fmt(vp['mmd2_in_floor_stds'])} | "
            f"{P.fmt(rf['mmd2_in_floor_stds'])} | {P.fmt(vp['path_median'])} | "
            f"{P.fmt(rf['path_median'])} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Geometric mean over problems and solvers of the path error ratio RF / VP, per NFE."""
    out = [
        "| NFE | geometric mean of RF / VP median path error | RF better in |",
        "|---:|---:|---:|",
    ]
    for nfe in sorted({r["nfe"] for r in rows}):
        pairs = {}
        for r in rows:
            if r["nfe"] == nfe:
                pairs.setdefault((r["problem"], r["solver"]), {})[r["sde"]] = r["path_median"]
        ratios = torch.tensor(
            [p["RF"] / p["VP"] for p in pairs.values() if len(p) == 2], dtype=torch.float64
        )
        better = int((ratios < 1).sum())
        out.append(
            f"| {nfe} | {P.fmt(float(ratios.log().mean().exp()))} | {better} of {len(ratios)} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="ring,grid,narrow")
    parser.add_argument("--quick", action="store_true", help="ring only")
    parser.add_argument("--n", type=int, default=4000, help="samples per run")
    parser.add_argument("--floor-draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ["ring"] if args.quick else args.problems.split(",")
    rows = []
    for name in names:
        rows += run_case(name, args.n, args.seed, args.floor_draws)
    print(f"command: {P.command_line()}")
    print(f"environment: {P.environment_line()}")
    print(table(rows))
    print()
    print(summary(rows))
    if args.csv is not None:
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
