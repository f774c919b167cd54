"""Host-side cost of sampling around the score function (issues 15 and 21).

    PYTHONPATH=$PWD python benchmarks/step_overhead.py        # this tree
    PYTHONPATH=OLD_TREE python benchmarks/step_overhead.py    # e.g. a `git archive` of main
    PYTHONPATH=$PWD python benchmarks/step_overhead.py --sections sample   # one table

``pieces`` (issue 15: did routing the schedule through the public float64 primitives add
per-step overhead?): microseconds per call, min over 7 repeats of 2000 calls, 1 torch thread,
CPU, batch 64 x 2, float64, of the exact mixture score, the solver's counted score
(``CountingScore``), the PF-ODE drift with its score call (``Context.pf_drift``) and Tweedie's x0
(``Context.data_pred``).

``sample`` (issue 21: a solver's fixed and per-step cost where the network costs nothing): whole
``sd.sample`` calls of each solver on VP with the exact score of N(0, I) data, score(x, t) = -x
(about a microsecond), batch 64 x 2, float32, 1 torch thread, timed at 2 and 50 steps (min over
``--repeats`` rounds). per step = (T(50) - T(2)) / 48, fixed = T(2) - 2 per step (time grid,
validation, coefficients, set-up: what a call costs beyond its steps), overhead/step = per step
minus the solver's score calls at the bare score's cost. "bare loop" is the floor: a hand-written
DDIM loop x <- a_i x + b_i score(x, t_i) over coefficients computed beforehand.
"""

from __future__ import annotations

import argparse
import time

import torch

import scoresde as sd
from scoresde.noise import GaussianNoise
from scoresde.solvers.base import Context, CountingScore


def best_s(fn, n: int, repeats: int) -> float:
    """Seconds per call of ``fn``: the best over ``repeats`` timings of ``n`` calls each."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def per_call_us(fn, n: int = 2000, repeats: int = 7) -> float:
    return 1e6 * best_s(fn, n, repeats)


def pieces() -> None:
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


#: (label, solver, options) of the ``sample`` table.
SAMPLE_SOLVERS: tuple[tuple[str, str, dict], ...] = (
    ("ddim", "ddim", {}),
    ("dpm_solver (3, noise)", "dpm_solver", {}),
    ("dpm_solver (2, data)", "dpm_solver", {"order": 2, "prediction": "data"}),
    ("unipc", "unipc", {}),
    ("ancestral", "ancestral", {}),
    ("euler_maruyama", "euler_maruyama", {}),
    ("reverse_diffusion", "reverse_diffusion", {}),
    ("pc", "pc", {}),
    ("ode_euler", "ode_euler", {}),
)


def _score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact score of N(0, I) data under VP (its marginals stay N(0, I))."""
    return -x


def sample_costs(repeats: int) -> None:
    sde, shape, lo, hi = sd.VPSDE(), (64, 2), 2, 50
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    t = torch.full((shape[0],), 0.5)
    score_s = best_s(lambda: _score(x, t), 2000, repeats)
    print(f"bare score call: {1e6 * score_s:.2f} us")
    print(
        "| solver | call at 2 steps (ms) | fixed per call (ms) | per step (us) "
        "| overhead/step (us) |"
    )
    print("|---|---:|---:|---:|---:|")

    def row(label: str, run, nfe_per_step: int) -> None:
        t_lo = best_s(lambda: run(lo), 100, repeats)
        t_hi = best_s(lambda: run(hi), 10, repeats)
        per_step = (t_hi - t_lo) / (hi - lo)
        fixed = t_lo - lo * per_step
        over = per_step - nfe_per_step * score_s
        print(
            f"| {label} | {1e3 * t_lo:.3f} | {1e3 * fixed:.3f} | {1e6 * per_step:.1f} | "
            f"{1e6 * over:.1f} |"
        )

    for label, name, options in SAMPLE_SOLVERS:
        nfe_per_step = sd.make_solver(name, **options).nfe_per_step

        def run(steps: int, name=name, options=options) -> None:
            sd.sample(sde, _score, shape, name, steps=steps, generator=g, **options)

        row(label, run, nfe_per_step)

    coeffs = {}
    for steps in (lo, hi):  # DDIM's a_i, b_i and the batched times, made before the loop
        ts = sd.make_time_grid(sde, steps)
        alpha, sigma = sde.marginal(ts)
        a = (alpha[1:] / alpha[:-1]).float()
        b = (alpha[1:] * sigma[:-1] ** 2 / alpha[:-1] - sigma[1:] * sigma[:-1]).float()
        coeffs[steps] = (a, b, ts.float()[:, None].expand(-1, shape[0]))

    def bare(steps: int) -> torch.Tensor:
        a, b, tb = coeffs[steps]
        x = torch.randn(shape, generator=g)
        for i in range(steps):
            x = torch.addcmul(a[i] * x, b[i], _score(x, tb[i]))
        return x

    row("bare loop (floor)", bare, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=("pieces", "sample"), default=None)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = args.sections or ["pieces", "sample"]
    if "pieces" in sections:
        pieces()
    if "sample" in sections:
        sample_costs(args.repeats)


if __name__ == "__main__":
    main()
