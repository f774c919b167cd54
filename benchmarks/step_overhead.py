"""Host-side cost per call of the pieces every solver step goes through (issue 15: did routing the
schedule through the public float64 primitives add per-step overhead?).

    PYTHONPATH=$PWD python benchmarks/step_overhead.py        # this tree
    PYTHONPATH=OLD_TREE python benchmarks/step_overhead.py    # e.g. a `git archive` of main

Times (microseconds per call, min over 7 repeats of 2000 calls, 1 torch thread, CPU, batch 64 x 2,
float64) of: the exact mixture score, the solver's counted score (``CountingScore``), the PF-ODE
drift with its score call (``Context.pf_drift``) and Tweedie's x0 (``Context.data_pred``).
"""

from __future__ import annotations

import time

import torch

import scoresde as sd
from scoresde.noise import GaussianNoise
from scoresde.solvers.base import Context, CountingScore


def per_call_us(fn, n: int = 2000, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return 1e6 * best


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    mix = sd.GaussianMixture(torch.randn(3, 2, generator=g, dtype=torch.float64), stds=0.3)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    print(f"{'sde':4s} {'piece':22s} {'us/call':>8s}")
    for name, sde in (("vp", sd.VPSDE()), ("ve", sd.VESDE())):
        score = sd.exact_score(sde, mix)
        counted = CountingScore(score)
        ctx = Context(sde, counted, GaussianNoise(x.shape, x.device, x.dtype), 1)
        s = score(x, t)
        rows = {
            "exact_score": lambda score=score: score(x, t),
            "CountingScore": lambda counted=counted: counted(x, t),
            "Context.pf_drift": lambda ctx=ctx: ctx.pf_drift(x, t),
            "Context.data_pred": lambda ctx=ctx, s=s: ctx.data_pred(x, t, s),
        }
        for piece, fn in rows.items():
            print(f"{name:4s} {piece:22s} {per_call_us(fn):8.1f}")


if __name__ == "__main__":
    main()
