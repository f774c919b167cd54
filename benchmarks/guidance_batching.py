"""Guidance of a class-conditional network: one batched call per NFE against one call per branch.

For the digits U-Net of ``scripts/digits_guidance.py`` (``UNet(channels=16)``, 8x8, 10 classes;
random weights: the cost does not depend on them) and a batch of ``--n`` samples, it times one
guided score evaluation of CFG, negative guidance and multi-condition guidance (K = 2) written
both ways: ``classifier_free_guidance`` / ``negative_guidance`` / ``multi_condition_guidance`` of
per-label score functions (2, 2 and 3 network calls of n rows), and ``cfg_score_fn`` /
``negative_score_fn`` / ``multi_condition_score_fn`` (one call of 2n, 2n and 3n rows). It checks
the two give the same scores (max |difference|) and prints the median of ``--repeats`` timings.

Run ``python benchmarks/guidance_batching.py`` (``--device cuda`` on a GPU, where the batched
form saves kernel launches; on a CPU the work is the same either way).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scoresde.guidance import (
    cfg_score_fn,
    classifier_free_guidance,
    multi_condition_guidance,
    multi_condition_score_fn,
    negative_guidance,
    negative_score_fn,
)
from scoresde.model import ScoreModel
from scoresde.nets import UNet
from scoresde.sde import VPSDE


def branch(model, labels: torch.Tensor):
    """The score function of per-sample labels: one network call per evaluation."""

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x, t, labels)

    return score_fn


def timed(fn, x, t, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """(median seconds, output) of ``fn(x, t)`` over ``repeats`` runs after one warm-up."""
    out = fn(x, t)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(x, t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=16, image_size=8, num_classes=10)
    with torch.no_grad():  # the output layers start at 0: make the branches differ
        for param in net.parameters():
            param.add_(0.02 * torch.randn_like(param))
    model = ScoreModel(net, VPSDE()).to(device).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.n, 1, 8, 8, generator=g).to(device)
    t = torch.full((args.n,), 0.5, device=device)
    y = (torch.arange(args.n) % 10).to(device)
    other, null = (y + 1) % 10, torch.full_like(y, 10)
    rows = [
        (
            "CFG w = 3",
            classifier_free_guidance(branch(model, y), branch(model, null), 3.0),
            cfg_score_fn(model, y, 3.0),
            2,
        ),
        (
            "negative w = 2",
            negative_guidance(branch(model, y), branch(model, other), 2.0),
            negative_score_fn(model, y, other, 2.0),
            2,
        ),
        (
            "multi (3, -1)",
            multi_condition_guidance(
                branch(model, null), [branch(model, y), branch(model, other)], [3.0, -1.0]
            ),
            multi_condition_score_fn(model, [y, other], [3.0, -1.0]),
            3,
        ),
    ]
    print(f"# U-Net width 16 on 8x8, batch {args.n}, {args.device}, {args.threads} thread(s)")
    print("\n| guidance | calls per NFE: per branch / batched | ms per NFE: per branch | "
          "batched | speed-up | max abs difference |\n|---|---|---|---|---|---|")  # fmt: skip
    with torch.no_grad():
        for name, per_branch, batched, calls in rows:
            a, out_a = timed(per_branch, x, t, args.repeats, device)
            b, out_b = timed(batched, x, t, args.repeats, device)
            diff = float((out_a - out_b).abs().max())
            print(
                f"| {name} | {calls} / 1 | {1e3 * a:.1f} | {1e3 * b:.1f} | {a / b:.2f}x | "
                f"{diff:.1e} |"
            )
    print(f"\nCommand: python benchmarks/guidance_batching.py --n {args.n} --device {args.device}")


if __name__ == "__main__":
    main()
