"""Guidance variants on exact scores: what each does to the samples of a 2-D class mixture.

Problem: ``three_classes`` of ``benchmarks/guidance.py`` (class 0 two blobs on the left, class 1
one blob on the right, class 2 a wide pair in the middle overlapping both). Every score is exact
(``scoresde.oracle``), so the numbers show the variants themselves, not a network's error.

Each row samples one guided score with ``dpm_solver`` (order 3, 50 steps, VP) and reports, over
the samples x: the fraction whose most probable class under the exact p(y | x) is the requested
class 2 and the fraction given to class 0, the mean exact log p(2 | x), and the per-sample
spread (the mean over samples of the std of the two coordinates, the quantity guidance rescale
acts on) next to that of exact class-2 samples, and the largest |x| (a tilted density
p(x | y)^(1+w) p(x | y_neg)^(-w) is not normalisable where the negative class is the narrower
one, and the samples run off).

Run ``python benchmarks/guidance_variants.py`` (``--n`` samples per row, default 4000).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guidance import three_classes  # noqa: E402

import scoresde as sd  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sde, data = sd.VPSDE(), three_classes()
    s_u = sd.exact_score(sde, data.mixture)
    s = [sd.exact_class_score(sde, data, y) for y in range(3)]
    log_post = [sd.exact_classifier(sde, data, y) for y in range(3)]
    rows = {
        "conditional (w = 1)": s[2],
        "CFG w = 3": sd.classifier_free_guidance(s[2], s_u, 3.0),
        "CFG linear w(t): 5 -> 1 (mean 3)": sd.classifier_free_guidance(
            s[2], s_u, sd.linear_scale(5.0, 1.0)
        ),
        "CFG cosine w(t): 5 -> 1 (mean 3)": sd.classifier_free_guidance(
            s[2], s_u, sd.cosine_scale(5.0, 1.0)
        ),
        "CFG w = 3 on t in [0.2, 0.7]": sd.classifier_free_guidance(
            s[2], s_u, sd.interval_scale(3.0, 0.2, 0.7)
        ),
        "CFG w = 3, rescale 0.7": sd.classifier_free_guidance(s[2], s_u, 3.0, rescale=0.7),
        "negative: class 2 away from 0, w = 2": sd.negative_guidance(s[2], s[0], 2.0),
        "negative: class 0 away from 2, w = 2": sd.negative_guidance(s[0], s[2], 2.0),
        "multi: classes 1 and 2, w = (2, 2)": sd.multi_condition_guidance(
            s_u, [s[1], s[2]], [2.0, 2.0]
        ),
    }
    exact = data.conditional(2).sample(args.n, torch.Generator().manual_seed(args.seed))
    print(f"# n = {args.n}; exact class-2 samples: spread {exact.std(1).mean():.3f}\n")
    print(
        "| guided score | to class 2 | to class 0 | mean log p(2 given x) | spread | max norm | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, score in rows.items():
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(args.seed + 1)
        x = sd.sample(sde, score, (args.n, 2), "dpm_solver", 50, order=3, generator=g).samples
        lp = torch.stack([f(x, 0.0) for f in log_post], 1)
        pred = lp.argmax(1)
        print(
            f"| {name} | {(pred == 2).double().mean():.3f} | {(pred == 0).double().mean():.3f} "
            f"| {lp[:, 2].mean():.3f} | {x.std(1).mean():.3f} "
            f"| {x.norm(dim=1).max():.3g} | {time.perf_counter() - t0:.1f} |"
        )


if __name__ == "__main__":
    main()
