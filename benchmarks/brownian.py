"""Pathwise convergence with ``noise="brownian"`` and what the tree costs.

    python benchmarks/brownian.py            # ~2 min on one core

For each stochastic solver that declares a strong ``order``: the RMS distance of its samples at
N steps to its own FINE-step samples from the same seed (default grid over [T, eps], VP SDE, the
anisotropic 3-D Gaussian with its exact score, float64), once with the default source (fresh
draws on every grid) and once with the Brownian tree (one path for every grid), the fitted
log-log slope, and the seconds per step of each source at FINE steps. Then the wall time of one
euler_maruyama run (64 samples, 100 steps) per source with one generator and with per-sample
``seeds`` (one tree per sample).
"""

from __future__ import annotations

import time

import numpy as np
import torch

import scoresde as sd

F64 = torch.float64
DATA = sd.GaussianMixture(
    torch.tensor([[1.0, -0.5, 2.0]], dtype=F64), torch.tensor([[0.5, 0.3, 1.5]], dtype=F64)
)
LEVELS = [8, 16, 32, 64, 128]
FINE = 1024
BATCH = 256
VARIANTS = [
    ("euler_maruyama", {}),
    ("reverse_diffusion", {}),
    ("ancestral", {}),
    ("ddim", {"eta": 1.0}),
    ("dpm_solver_sde", {"order": 1}),
    ("dpm_solver_sde", {"order": 2}),
]


def run(solver: str, options: dict, noise: str, steps: int) -> tuple[torch.Tensor, float]:
    sde = sd.VPSDE()
    start = time.perf_counter()
    res = sd.sample(
        sde,
        sd.exact_score(sde, DATA),
        (BATCH, 3),
        solver,
        steps,
        noise=noise,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
        **options,
    )
    return res.samples, time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(1)
    head = ["solver", "order", "noise", *[f"N={n}" for n in LEVELS], "slope", "s/step"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for solver, options in VARIANTS:
        algo = sd.make_solver(solver, **options)
        label = solver + "".join(f"({k}={v})" for k, v in options.items())
        for noise in sd.NOISES:
            ref, seconds = run(solver, options, noise, FINE)
            errors = [
                float((run(solver, options, noise, n)[0] - ref).pow(2).sum(1).mean().sqrt())
                for n in LEVELS
            ]
            slope = np.polyfit(np.log2([1 / n for n in LEVELS]), np.log2(errors), 1)[0]
            cells = [label, f"{algo.order:g}", noise, *[f"{e:.3g}" for e in errors]]
            print("| " + " | ".join([*cells, f"{slope:.2f}", f"{seconds / FINE:.1e}"]) + " |")
    print(f"\nRMS to the {FINE}-step samples of the same seed; {BATCH} samples, VP, float64.")
    print("\n| randomness | noise | seconds (euler_maruyama, 64 samples, 100 steps) |")
    print("|---|---|---|")
    sde = sd.VPSDE()
    for label, kwargs in (
        ("generator", {"generator": torch.Generator().manual_seed(0)}),
        ("seeds", {"seeds": list(range(64))}),
    ):
        for noise in sd.NOISES:
            start = time.perf_counter()
            sd.sample(
                sde,
                sd.exact_score(sde, DATA),
                (64, 3),
                "euler_maruyama",
                100,
                noise=noise,
                **kwargs,
            )
            print(f"| {label} | {noise} | {time.perf_counter() - start:.2f} |")


if __name__ == "__main__":
    main()
