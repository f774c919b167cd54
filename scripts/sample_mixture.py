"""Sample a 2-D Gaussian mixture with its exact score and report how close the samples are.

    python scripts/sample_mixture.py [--n 4000] [--sde vp|subvp|ve] [--steps 50]

Prints, for a few solvers, the measured NFE, the unbiased MMD^2 to exact data samples, and the
noise floor: the mean and spread (standard deviation) of MMD^2 between pairs of independent exact
sample sets of the same size. A solver is "in band" when its MMD^2 is below 3 x that spread.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import scoresde as sd
from scoresde.metrics import mmd2

SDES = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}


def ring(k: int = 8, radius: float = 2.0, std: float = 0.2) -> sd.GaussianMixture:
    angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return sd.GaussianMixture(means, std)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="samples per set")
    parser.add_argument("--sde", choices=sorted(SDES), default="vp")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sde = SDES[args.sde]()
    data = ring()
    score = sd.exact_score(sde, data)
    g = torch.Generator().manual_seed(args.seed)
    # The noise floor comes from pairs of independent exact sets: comparing several sets with one
    # shared reference would shift them all by that reference's own fluctuation.
    floor = [
        mmd2(data.sample(args.n, generator=g), data.sample(args.n, generator=g)) for _ in range(5)
    ]
    reference = data.sample(args.n, generator=g)
    mean = sum(floor) / len(floor)
    spread = math.sqrt(sum((f - mean) ** 2 for f in floor) / (len(floor) - 1))
    print(f"2-D ring of 8 Gaussians, {type(sde).__name__}, n = {args.n}, {args.steps} steps")
    print(f"noise floor: MMD^2 between exact sample sets = {mean:.2e} +/- {spread:.1e}\n")
    print(f"{'solver':<16} {'NFE':>5} {'MMD^2':>10} {'in band':>8} {'time':>7}")
    for name, options in [
        ("ode_heun", {}),
        ("dpm_solver", {"order": 3}),
        ("dpm_solver_sde", {}),
        ("euler_maruyama", {}),
        ("ode_rk45", {"rtol": 1e-5, "atol": 1e-5}),
    ]:
        steps = None if name == "ode_rk45" else args.steps
        start = time.perf_counter()
        res = sd.sample(sde, score, (args.n, 2), solver=name, steps=steps, generator=g, **options)
        elapsed = time.perf_counter() - start
        err = mmd2(res.samples, reference)
        ok = "yes" if err <= 3 * spread else "no"
        print(f"{name:<16} {res.nfe:>5} {err:>10.2e} {ok:>8} {elapsed:>6.2f}s")


if __name__ == "__main__":
    main()
