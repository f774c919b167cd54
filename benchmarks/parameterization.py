"""eps or v for the default 2-D MLP: train both, sample with an ODE and an SDE solver, measure.

    python benchmarks/parameterization.py --steps 3000 --threads 1

For each toy set in ``--tasks`` (default checkerboard, swiss_roll, eight_gaussians: the last a
mixture of eight Gaussians of std 0.1 on a circle of radius 2) trains the default 2-D recipe of
``benchmarks/training.py`` (``--net mlp``: ``ResidualMLP`` width 128, depth 3; batch 512, lr 2e-3,
VP, training seed ``--seed``) once with ``--parameterization eps`` (the CLI's default) and once with
``v`` (score = -x - (alpha/sigma) v, which keeps a linear pull far from the data; docs/training.md,
"Tables with heterogeneous column scales"). Draws ``--n`` samples from each EMA model with the
default sampler (``dpm_solver`` order 3, 50 steps: a probability-flow ODE) and with
``euler_maruyama`` (500 steps: the reverse SDE), same seeds, and reports per row:

- MMD^2 against ``--n`` held-out points, and its noise floor (std of MMD^2 over 5 pairs of
  independent held-out sets, as in ``benchmarks/training.py``);
- far (NN): samples whose distance to the nearest held-out point exceeds 0.1 max |data| (0.24 to
  0.32 here; 5x the median nearest-neighbour distance among held-out points, ~0.065, counted
  ~1000 of 10 000 for every model: the blur at the checkerboard's edges, not far samples);
- far (radius): samples with |x| > 1.5 max |data| over the held-out points;
- max |x| (the held-out max |data| is in the header).

Held-out sets have the same size, so the floors of the far counts are those of the held-out set
itself (printed in the header). Writes checkpoints to ``--out``; a model already there is reused.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from scoresde import cli
from scoresde.checkpoint import load_model
from scoresde.data import TOY_DATASETS
from scoresde.metrics import MMD, mmd2
from scoresde.sampling import sample

MLP_2D = "--batch-size 512 --lr 2e-3 --width 128 --depth 3 --sde vp".split()
SAMPLERS = {
    "dpm_solver-3, 50 (ODE)": ("dpm_solver", 50, {"order": 3}),
    "euler_maruyama, 500 (SDE)": ("euler_maruyama", 500, {}),
}
NN_FACTOR, RADIUS_FACTOR = 0.1, 1.5


def nearest(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(n,) distance from each row of x (n, 2) to its nearest row of ref (m, 2), in chunks."""
    out = []
    for i in range(0, len(x), 2000):
        out.append(torch.cdist(x[i : i + 2000].double(), ref.double()).min(1).values)
    return torch.cat(out)


def train(task: str, param: str, out: Path, steps: int, seed: int, threads: int) -> float:
    timing = out / "train_seconds.txt"
    if not (out / "checkpoint.safetensors").exists():
        t0 = time.perf_counter()
        cli.main(
            [
                "train", "--data", task, "--out", str(out), "--quiet", "--ckpt-every", "0",
                "--steps", str(steps), "--seed", str(seed), "--threads", str(threads),
                "--parameterization", param, *MLP_2D,
            ]
        )  # fmt: skip
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return float(timing.read_text()) if timing.exists() else math.nan


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["checkerboard", "swiss_roll", "eight_gaussians"])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="training seed (sampling: seed 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/parameterization")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("command: python " + " ".join(["benchmarks/parameterization.py", *sys.argv[1:]]))
    rows = [
        "| data | param. | train s | sampler | MMD^2 | / floor std | far (NN) | far (radius) "
        "| max abs x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        gen = TOY_DATASETS[task]
        held = [gen(args.n, generator=torch.Generator().manual_seed(1000 + i)) for i in range(11)]
        floor = statistics.stdev([mmd2(held[2 * i + 1], held[2 * i + 2]) for i in range(5)])
        mmd = MMD(held[0])
        r_max = float(held[0].norm(dim=1).max())
        nn_cut = NN_FACTOR * r_max
        # the far counts of an independent held-out set: what exact samples score
        ref_far_nn = int((nearest(held[1], held[0]) > nn_cut).sum())
        ref_far_r = int((held[1].norm(dim=1) > RADIUS_FACTOR * r_max).sum())
        print(
            f"# {task}: MMD^2 floor std {floor:.1e}; NN cut {nn_cut:.3f}; max |data| {r_max:.2f} "
            f"(radius cut {RADIUS_FACTOR * r_max:.2f}); an independent held-out set: "
            f"far (NN) {ref_far_nn}, far (radius) {ref_far_r}, "
            f"max |x| {float(held[1].norm(dim=1).max()):.2f}",
            flush=True,
        )
        for param in ("eps", "v"):
            out = Path(args.out) / f"{task}-{param}-seed{args.seed}"
            seconds = train(task, param, out, args.steps, args.seed, args.threads)
            model, _ = load_model(out / "checkpoint")
            model.eval()
            for name, (solver, steps, options) in SAMPLERS.items():
                with torch.no_grad():
                    x = sample(
                        model.sde,
                        model,
                        (args.n, 2),
                        solver=solver,
                        steps=steps,
                        generator=torch.Generator().manual_seed(1),
                        **options,
                    ).samples
                if not bool(x.isfinite().all()):
                    rows.append(f"| {task} | {param} | {seconds:.0f} | {name} | non-finite |||||")
                    continue
                err = mmd(x)
                far_nn = int((nearest(x, held[0]) > nn_cut).sum())
                norm = x.norm(dim=1)
                far_r = int((norm > RADIUS_FACTOR * r_max).sum())
                rows.append(
                    f"| {task} | {param} | {seconds:.0f} | {name} | {err:.2e} | {err / floor:.1f} "
                    f"| {far_nn} | {far_r} | {float(norm.max()):.2f} |"
                )
                print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
