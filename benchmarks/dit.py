"""DiT against the U-Net on 8x8 digits at (nearly) equal parameter count and equal steps, on CPU.

    python benchmarks/dit.py --steps 600 --threads 1
    python benchmarks/dit.py --steps 3000 --seeds 0,1

Both nets train with the digits recipe of ``benchmarks/training.py`` (VP SDE, eps prediction,
batch 128, lr 1e-3, warmup 200 capped at steps/4) for the same number of steps: the U-Net at base
width 16, the DiT (patch 2, 16 tokens) at hidden 60 and depth 6 (``--width 15 --depth 6``). Each
is judged as in ``benchmarks/training.py``: 2000 EMA samples (DPM-Solver-3, 50 steps) labelled by
a logistic-regression classifier trained on the real digits; the mean top-class probability and
the smallest class share are reported with the final training loss (mean of the last loss.csv
row, the mean over the last tenth of the steps) and the train time. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import evaluate_digits  # noqa: E402

from scoresde import cli  # noqa: E402
from scoresde.training import load_model  # noqa: E402

NETS = {
    "unet": ["--net", "unet", "--width", "16"],
    "dit": ["--net", "dit", "--width", "15", "--depth", "6"],
}


def run(name: str, steps: int, threads: int, out: Path, seed: int, lr: float = 1e-3) -> dict:
    argv = ["train", "--data", "digits", "--out", str(out), "--sde", "vp", "--quiet"]
    argv += ["--seed", str(seed)]
    argv += ["--steps", str(steps), "--batch-size", "128", "--lr", str(lr), "--ckpt-every", "0"]
    argv += [
        "--threads",
        str(threads),
        "--warmup",
        str(min(200, steps // 4)),
        "--log-every",
        str(max(1, steps // 10)),
    ]
    start = time.perf_counter()
    cli.main([*argv, *NETS[name]])
    seconds = time.perf_counter() - start
    model, _ = load_model(out / "checkpoint")
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        "net": name,
        "seed": seed,
        "params": sum(p.numel() for p in model.net.parameters()),
        "final loss": float(rows[-1]["loss"]) if rows else float("nan"),
        "train s": seconds,
        **evaluate_digits(out, 2000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--nets", default="unet,dit", help=f"comma-separated, of {list(NETS)}")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="results/dit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    if unknown := set(args.nets.split(",")) - set(NETS):
        parser.error(f"unknown nets {sorted(unknown)}; choose from {list(NETS)}")
    rows = [
        run(name, args.steps, args.threads, Path(args.out) / f"{name}_seed{seed}", seed, args.lr)
        for name in args.nets.split(",")
        for seed in seeds
    ]
    print(
        "| net | seed | params | steps | final loss | train time | mean top-class prob "
        "| min class share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['net']} | {r['seed']} | {r['params'] / 1e3:.0f}k | {r['steps']} | "
            f"{r['final loss']:.4f} | {r['train s']:.0f} s | {r['mean top-class prob']} | "
            f"{r['min class share']} |"
        )
    print(f"\nreal digits mean top-class prob: {rows[0]['real digits']}")
    print(
        f"command: python benchmarks/dit.py --steps {args.steps} --threads {args.threads} "
        f"--seeds {args.seeds} --nets {args.nets} --lr {args.lr:g}"
    )


if __name__ == "__main__":
    main()
