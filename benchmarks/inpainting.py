"""Inpainting benchmark: replacement, RePaint and twisted SMC against the exact conditional.

Problem: an 8-D Gaussian mixture whose 8 components come in pairs that share their first four
coordinates' means (``paired8``), so knowing x_1..x_4 leaves a bimodal conditional on x_5..x_8;
anisotropic stds U(0.3, 0.6), unequal weights. The score is exact (``sd.exact_score``, float64)
and the conditional p(x_5..8 | x_1..4) is exact too (``GaussianMixture.condition``), so every
error below is the inpainting method's, not a network's. Known values: ``--cases`` draws of the
mixture itself (seeded), each inpainted ``--n`` times.

Metric: unbiased MMD^2 (``scoresde.metrics.MMD``, kernel scales from the reference) between the
n inpainted missing coordinates and n exact conditional draws, averaged over the cases, next to
the noise band: mean +- std of the same statistic between independent exact sets.

Tables
  1. replacement and repaint over steps and corrector settings;
  2. smc over particles 1..K at fixed steps (and two ablations: TDS's original twist variance
     sigma_t^2/alpha_t^2, and the uniform grid);
  3. equal cost: smc with K particles and S steps against replacement with K*S score evaluations
     per sample (smc additionally takes one vector-Jacobian product per evaluation).

Run ``python benchmarks/inpainting.py`` (``--quick`` for a smaller grid).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as P  # noqa: E402

import scoresde as sd  # noqa: E402
from scoresde.inpainting import inpaint  # noqa: E402
from scoresde.metrics import MMD  # noqa: E402

F64 = torch.float64


def paired8(seed: int = 0) -> sd.GaussianMixture:
    """8-D mixture, components in pairs sharing the means of coordinates 1-4 (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    centres = (2 * torch.randn(4, 4, generator=g, dtype=F64)).repeat_interleave(2, 0)
    means = torch.cat([centres, 2 * torch.randn(8, 4, generator=g, dtype=F64)], 1)
    stds = 0.3 + 0.3 * torch.rand(8, 8, generator=g, dtype=F64)
    return sd.GaussianMixture(means, stds, 0.2 + torch.rand(8, generator=g, dtype=F64))


class Case:
    """One known vector: the exact conditional's reference set and its noise band."""

    def __init__(self, data: sd.GaussianMixture, known: torch.Tensor, n: int, seed: int):
        self.mask = torch.tensor([True] * 4 + [False] * 4)
        self.known = known.expand(n, 8).clone()
        self.cond = data.condition(self.known, self.mask)
        self.metric = MMD(self._exact(seed)[:, 4:])
        band = torch.tensor([self.metric(self._exact(seed + 1 + k)[:, 4:]) for k in range(5)])
        self.band = (float(band.mean()), float(band.std()))
        self.weights = self.cond.log_weights[0].exp()

    def _exact(self, seed: int) -> torch.Tensor:
        return self.cond.sample(torch.Generator().manual_seed(seed))


def run(sde, score, cases, method, steps, seed=0, **options):
    """Mean MMD^2 over the cases, NFE (calls), seconds, and the smc diagnostics."""
    errs, secs, extra = [], 0.0, {"ess": [], "logz": []}
    nfe = 0
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        res = inpaint(
            sde,
            score,
            case.known,
            case.mask,
            method,
            steps,
            generator=torch.Generator().manual_seed(seed + i),
            **options,
        )
        secs += time.perf_counter() - t0
        assert torch.equal(res.samples[:, :4], case.known[:, :4])
        errs.append(case.metric(res.samples[:, 4:]))
        nfe = res.nfe
        if method == "smc":
            extra["ess"].append(float(res.final_ess.mean()))
            extra["logz"].append(float((res.log_evidence - case.cond.log_evidence).mean()))
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return mean(errs), nfe, secs, mean(extra["ess"]), mean(extra["logz"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="inpainted samples per known vector")
    p.add_argument("--cases", type=int, default=3, help="known vectors (draws of the mixture)")
    p.add_argument("--quick", action="store_true", help="smaller grid and n = 1000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", default="1,2,3", help="which tables to make (1, 2, 3)")
    args = p.parse_args(argv)
    parts = {int(v) for v in args.parts.split(",")}
    quick = args.quick
    torch.set_num_threads(args.threads)
    if quick:
        args.n = min(args.n, 1000)
    t_start = time.perf_counter()
    sde, data = sd.VPSDE(), paired8()
    score = sd.exact_score(sde, data)
    knowns = data.sample(args.cases, torch.Generator().manual_seed(5))
    cases = [Case(data, knowns[i], args.n, 100 + 10 * i) for i in range(args.cases)]
    band_mean = sum(c.band[0] for c in cases) / len(cases)
    # The tables average over the cases, so their noise is that of a mean of independent terms.
    band_std = sum(c.band[1] ** 2 for c in cases) ** 0.5 / len(cases)
    print(f"# command: {P.command_line()}")
    print(f"# {P.environment_line()}")
    print(f"# paired8, VP SDE, {args.cases} known vectors, n = {args.n} each")
    for i, c in enumerate(cases):
        w = ", ".join(f"{v:.2f}" for v in c.weights.tolist() if v > 0.005)
        print(f"#   case {i}: conditional component weights > 0.005: {w}")
    print(
        f"# noise band of the case-averaged MMD^2 (exact vs exact, 5 draws per case): "
        f"{band_mean:.2e} +- {band_std:.2e}\n"
    )

    if 1 in parts:
        table_replacement(sde, score, cases, quick)
    if 2 in parts:
        table_smc(sde, score, cases, quick)
    if 3 in parts:
        table_equal_cost(sde, score, cases, quick)
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


def table_replacement(sde, score, cases, quick: bool) -> None:
    """1. replacement / repaint over steps and correctors."""
    fmt = P.fmt
    steps_list = (100, 250, 1000) if not quick else (100, 250)
    rows = []
    for steps in steps_list:
        for label, opts in (
            ("none", {"corrector": "none"}),
            ("langevin x1 (snr 0.16)", {}),
            ("langevin x3 (snr 0.16)", {"corrector_steps": 3}),
        ):
            err, nfe, secs, _, _ = run(sde, score, cases, "replacement", steps, **opts)
            rows.append(["replacement", str(steps), label, str(nfe), fmt(err), f"{secs:.1f}"])
    repaint_grid = ((100, 10, 10), (250, 10, 10), (100, 1, 10), (250, 5, 4))
    for steps, j, r in repaint_grid[: 2 if quick else 4]:
        err, nfe, secs, _, _ = run(sde, score, cases, "repaint", steps, jump_length=j, repeats=r)
        rows.append(["repaint", str(steps), f"j={j}, r={r}", str(nfe), fmt(err), f"{secs:.1f}"])
    err, nfe, secs, _, _ = run(
        sde, score, cases, "repaint", 100, jump_length=10, repeats=10, corrector="langevin"
    )
    rows.append(["repaint", "100", "j=10, r=10 + langevin x1", str(nfe), fmt(err), f"{secs:.1f}"])
    print("## 1. replacement and RePaint (MMD^2 vs the exact conditional, mean over cases)\n")
    print(
        P.markdown_table(["method", "steps", "corrector / resampling", "NFE", "MMD^2", "s"], rows)
    )


def table_smc(sde, score, cases, quick: bool) -> None:
    """2. smc over particles, and ablations."""
    fmt = P.fmt
    steps = 100
    parts = (1, 2, 4, 8, 16, 32, 64) if not quick else (1, 4, 16)
    rows = []
    for k in parts:
        err, nfe, secs, ess, logz = run(sde, score, cases, "smc", steps, particles=k)
        rows.append([str(k), str(nfe * k), fmt(err), f"{ess:.1f}", f"{logz:+.3f}", f"{secs:.1f}"])
    k = 16
    alpha, sigma = sde.marginal(torch.tensor(sde.sampling_eps, dtype=F64))
    tds_var = float((sigma / alpha) ** 2)
    for label, s, opts in (
        ("16, TDS twist var sigma^2/alpha^2", steps, {"twist_var_floor": tds_var}),
        ("16, uniform grid", steps, {"time_grid": "uniform"}),
        ("16, 400 logsnr steps", 400, {}),
    ):
        if quick and s > steps:
            continue
        err, nfe, secs, ess, logz = run(sde, score, cases, "smc", s, particles=k, **opts)
        rows.append([label, str(nfe * k), fmt(err), f"{ess:.1f}", f"{logz:+.3f}", f"{secs:.1f}"])
    print(f"\n## 2. smc ({steps} logsnr steps) over particles\n")
    print(
        P.markdown_table(
            [
                "particles",
                "score evals / sample",
                "MMD^2",
                "final ESS",
                "log Z_hat - log p(x_known)",
                "s",
            ],
            rows,
        )
    )


def table_equal_cost(sde, score, cases, quick: bool) -> None:
    """3. smc against replacement and repaint at equal score evaluations per sample."""
    fmt = P.fmt
    rows = []
    budgets = ((8, 100), (32, 100)) if not quick else ((8, 100),)
    for k, s in budgets:
        cost = k * s
        err, nfe, secs, _, _ = run(sde, score, cases, "smc", s, particles=k)
        rows.append([f"smc, {k} particles x {s} steps", str(cost), fmt(err), f"{secs:.1f}"])
        err, nfe, secs, _, _ = run(sde, score, cases, "replacement", cost, corrector="none")
        rows.append([f"replacement, {cost} steps", str(nfe), fmt(err), f"{secs:.1f}"])
        err, nfe, secs, _, _ = run(sde, score, cases, "replacement", cost // 2)
        rows.append([f"replacement, {cost // 2} PC steps", str(nfe), fmt(err), f"{secs:.1f}"])
        err, nfe, secs, _, _ = run(
            sde, score, cases, "repaint", cost // 10, jump_length=10, repeats=10
        )
        rows.append([f"repaint, {cost // 10} steps j=10 r=10", str(nfe), fmt(err), f"{secs:.1f}"])
    print("\n## 3. equal score evaluations per sample\n")
    print(P.markdown_table(["method", "score evals / sample", "MMD^2", "s"], rows))


if __name__ == "__main__":
    main()
