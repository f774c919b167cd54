"""Guidance benchmark: what classifier-free / classifier guidance samples, with exact scores.

Problem (2-D, ``three_classes``): class 0 two blobs on the left, class 1 one blob on the right,
class 2 a wide pair of blobs in the middle overlapping both; priors (0.5, 0.2, 0.3). The class
conditional and unconditional scores are exact at every t (``scoresde.oracle``), so with exact
noisy classifier log p_t(y | x) the classifier-guided score s_u + w grad log p_t(y | x) *equals*
the CFG score s_u + w (s_c - s_u): one table serves both.

For each guidance scale w it samples the guided score with probability-flow ODE solvers
(``dpm_solver`` order 3 with 50 steps, and ``ode_rk45`` at rtol = atol = 1e-6 as the ODE's
converged answer) and a reverse-SDE solver (``ancestral``, 1000 steps) and reports the
unbiased MMD^2 against
  * the tilted density p_w(x) ∝ p(x | y)^w p(x)^(1-w) — the distribution whose score at t = 0 is
    the guided score — sampled exactly enough by inverse-CDF sampling of a 1200 x 1200 grid on
    [-6, 6]^2 (cell 0.01, jittered uniformly inside the cell);
  * the class conditional p(x | y);
next to the noise band (mean +- std of MMD^2 between independent grid-sampled sets of p_w), and
the mean exact log p(y | x) of the samples (how "confidently class y" they are).
w = 0 and w = 1 are the sanity rows: there p_w is the unconditional and the conditional density
and the guided score is an exact score, so both samplers must land in the noise band.

Run ``python benchmarks/guidance.py`` (``--n`` samples per set, default 4000).
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
from scoresde.guidance import classifier_free_guidance, classifier_guidance  # noqa: E402
from scoresde.metrics import MMD  # noqa: E402
from scoresde.oracle import (  # noqa: E402
    ClassConditionalMixture,
    exact_class_score,
    exact_classifier,
)

F64 = torch.float64


def three_classes() -> ClassConditionalMixture:
    def gm(means, stds, weights=None):
        return sd.GaussianMixture(
            torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64), weights
        )

    return ClassConditionalMixture(
        [
            gm([[-2.0, 1.0], [-2.0, -1.0]], [0.3, 0.5], weights=[0.7, 0.3]),
            gm([[2.0, 0.0]], [[0.4, 0.6]]),
            gm([[0.0, 0.5], [0.5, -0.5]], 0.8),
        ],
        class_weights=[0.5, 0.2, 0.3],
    )


def tilted_sampler(data: ClassConditionalMixture, y: int, w: float, lim=6.0, cells=1200):
    """n -> n draws of p_w ∝ p(x|y)^w p(x)^(1-w) by sampling grid cells, jittered in the cell."""
    edges = torch.linspace(-lim, lim, cells + 1, dtype=F64)
    h = float(edges[1] - edges[0])
    centres = edges[:-1] + h / 2
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
    log_p = w * data.conditional(y).log_prob(grid) + (1 - w) * data.mixture.log_prob(grid)
    prob = torch.softmax(log_p, 0)

    def sample(n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        idx = torch.multinomial(prob, n, replacement=True, generator=g)
        return grid[idx] + h * (torch.rand(n, 2, generator=g, dtype=F64) - 0.5)

    return sample


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--label", type=int, default=2, help="the class y to guide towards")
    p.add_argument("--scales", default="0,1,2,3,5")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    sde, data, y, n = sd.VPSDE(), three_classes(), args.label, args.n
    s_c, s_u = exact_class_score(sde, data, y), sd.exact_score(sde, data.mixture)
    log_py = exact_classifier(sde, data, y)

    # Classifier guidance with the exact classifier is the conditional score (w = 1) and the CFG
    # score (any w), pointwise.
    x = 2 * torch.randn(4096, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.rand(4096, generator=torch.Generator().manual_seed(1), dtype=F64) * (1 - 1e-3) + 1e-3
    cg_err = {
        w: float(
            (
                classifier_guidance(s_u, log_py, w)(x, t)
                - classifier_free_guidance(s_c, s_u, w)(x, t)
            )
            .abs()
            .max()
        )
        for w in (1.0, 3.0)
    }
    print(f"# command: {P.command_line()}")
    print(f"# {P.environment_line()}")
    print(f"# three_classes, VP SDE, class y = {y}, n = {n} per set")
    print(
        "# max |classifier guidance (exact log p_t(y|x)) - CFG| over 4096 (x, t): "
        + ", ".join(f"w={w:g}: {e:.1e}" for w, e in cg_err.items())
    )
    cond_ref = MMD(data.conditional(y).sample(n, torch.Generator().manual_seed(11)))

    rows = []
    for w in (float(v) for v in args.scales.split(",")):
        sampler = tilted_sampler(data, y, w)
        ref = MMD(sampler(n, 100))
        band = torch.tensor([ref(sampler(n, 101 + k)) for k in range(5)])
        score = classifier_free_guidance(s_c, s_u, scale=w)
        target_logpy = float(data.log_prob_class(sampler(n, 200), y).mean())
        for solver, steps, opts in (
            ("dpm_solver", 50, {"order": 3}),
            ("ode_rk45", None, {"rtol": 1e-6, "atol": 1e-6}),
            ("ancestral", 1000, {}),
        ):
            g = torch.Generator().manual_seed(7)
            t0 = time.perf_counter()
            res = sd.sample(sde, score, (n, 2), solver, steps, dtype=F64, generator=g, **opts)
            secs = time.perf_counter() - t0
            xs = res.samples
            rows.append(
                [
                    f"{w:g}",
                    f"{solver} {steps or 'rtol 1e-6'} ({res.nfe} NFE)",
                    P.fmt(ref(xs)),
                    f"{float(band.mean()):.1e} ± {float(band.std()):.1e}",
                    P.fmt(cond_ref(xs)),
                    f"{float(data.log_prob_class(xs, y).mean()):.3f}",
                    f"{target_logpy:.3f}",
                    f"{secs:.1f}",
                ]
            )
    print()
    print(
        P.markdown_table(
            [
                "w",
                "sampler",
                "MMD² to p_w",
                "band (p_w vs p_w)",
                "MMD² to p(x|y)",
                "mean log p(y|x), samples",
                "mean log p(y|x), p_w",
                "s",
            ],
            rows,
        )
    )
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
