"""The runaway cases of issue 14 and the cost of argument checks on the hot path, as a table.

    PYTHONPATH=. python benchmarks/bad_inputs.py [--max-steps N]

Each runaway case prints what it ended with, the score calls it made and the seconds it took
(--max-steps caps ode_rk45 so a build without the fixes finishes). The last table times one
``exact_score`` call (what every solver step calls) and the checks it now makes, single-threaded
on CPU.
"""

from __future__ import annotations

import argparse
import time
import timeit

import torch

import scoresde as sd
from scoresde.validation import check_times


def runaway_cases(max_steps: int):
    sde = sd.VPSDE()
    score = sd.exact_score(sde, sd.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], stds=0.3))
    calls = [0]

    def counted(fn):
        def inner(x, t):
            calls[0] += 1
            return fn(x, t, calls[0])

        return inner

    def g():
        return torch.Generator().manual_seed(0)

    probe_inf = counted(lambda x, t, n: score(x, t) * (float("inf") if n == 2 else 1.0))
    plain = counted(lambda x, t, n: score(x, t))
    rk45 = {"max_steps": max_steps}
    return [
        (
            "rk45, inf at the probe",
            lambda: sd.sample(sde, probe_inf, (100, 2), "ode_rk45", generator=g(), **rk45),
        ),
        (
            "rk45, safety=0",
            lambda: sd.sample(sde, plain, (100, 2), "ode_rk45", safety=0.0, generator=g(), **rk45),
        ),
        (
            "rk45, float16",
            lambda: sd.sample(
                sde, plain, (100, 2), "ode_rk45", dtype=torch.float16, generator=g(), **rk45
            ),
        ),
        (
            "torchsde adaptive, rtol=-1",
            lambda: sd.sample(
                sde, plain, (100, 2), "torchsde", steps=10, adaptive=True, rtol=-1.0, generator=g()
            ),
        ),
        (
            "integer x_T",
            lambda: sd.sample(
                sde, plain, (4, 2), "ode_euler", steps=5, x_T=torch.ones(4, 2, dtype=torch.long)
            ),
        ),
        ("ddim eta=5", lambda: sd.sample(sde, plain, (4, 2), "ddim", steps=5, eta=5.0)),
        ("pc snr=inf", lambda: sd.sample(sde, plain, (4, 2), "pc", steps=5, snr=float("inf"))),
    ], calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases, calls = runaway_cases(args.max_steps)
    print("| case | outcome | score calls | seconds |\n|---|---|---:|---:|")
    for name, run in cases:
        calls[0] = 0
        t0 = time.perf_counter()
        try:
            res = run()
            outcome = f"returned, {int(torch.isnan(res.samples).sum())} NaN entries"
        except Exception as err:  # the table reports whatever happens
            outcome = f"{type(err).__name__}: {str(err)[:70]}"
        print(f"| {name} | {outcome} | {calls[0]} | {time.perf_counter() - t0:.3f} |")

    sde = sd.VPSDE()
    data = sd.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], stds=0.3)
    score = sd.exact_score(sde, data)
    x, t = torch.randn(500, 2), torch.full((500,), 0.5)
    rows = [
        ("exact_score(x, t), x (500, 2), t (500,)", lambda: score(x, t)),
        ("its checks: check_times on the tensor t", lambda: check_times("t", t, sde.T)),
        ("its checks: check_times on a float t", lambda: check_times("t", 0.5, sde.T)),
        ("its checks: GaussianMixture._check_x", lambda: data._check_x(x)),
    ]
    print("\n| per call | microseconds |\n|---|---:|")
    for name, fn in rows:
        n = 2000
        print(f"| {name} | {min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6:.2f} |")


if __name__ == "__main__":
    main()
