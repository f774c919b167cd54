"""Does training work on a CPU? Train from the command line, sample, and measure.

    python benchmarks/training.py --task checkerboard   # 2-D, MMD vs held-out data
    python benchmarks/training.py --task swiss_roll
    python benchmarks/training.py --task digits         # 8x8 U-Net, judged by a classifier

2-D tasks: 10k samples from the EMA model (DPM-Solver-3, 50 steps) against 10k held-out data; the
noise floor is the standard deviation of MMD^2 between pairs of independent held-out sets.
Digits: a logistic-regression classifier trained on the real digits labels 2000 generated digits;
reported are the mean top-class probability and the share of each predicted class.
Prints a Markdown table and the command; writes checkpoints and figures to --out.
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
from scoresde.data import TOY_DATASETS, digits
from scoresde.metrics import MMD, mmd2
from scoresde.plots import save_samples
from scoresde.sampling import sample
from scoresde.training import load_model

MLP_2D = "--batch-size 512 --lr 2e-3 --width 128 --depth 3".split()
PRESETS = {
    "checkerboard": ["--steps", "15000", *MLP_2D],
    "swiss_roll": ["--steps", "8000", *MLP_2D],
    "digits": "--steps 4000 --batch-size 128 --lr 1e-3 --width 16 --warmup 200".split(),
}


def train(task: str, out: Path, extra: list[str]) -> float:
    args = [
        "train",
        "--data",
        task,
        "--out",
        str(out),
        "--sde",
        "vp",
        "--quiet",
        "--ckpt-every",
        "0",
        *PRESETS[task],
        *extra,
    ]
    start = time.perf_counter()
    cli.main(args)
    return time.perf_counter() - start


def evaluate_2d(task: str, out: Path, n: int) -> dict:
    model, meta = load_model(out / "checkpoint")
    model.eval()
    with torch.no_grad():
        res = sample(
            model.sde,
            model,
            (n, 2),
            solver="dpm_solver",
            steps=50,
            order=3,
            generator=torch.Generator().manual_seed(1),
        )
    gen = TOY_DATASETS[task]
    held = [gen(n, generator=torch.Generator().manual_seed(1000 + i)) for i in range(11)]
    floor = [mmd2(held[2 * i + 1], held[2 * i + 2]) for i in range(5)]
    err = MMD(held[0])(res.samples)
    save_samples(res.samples, out / "samples.png", title=f"{task}: trained model, {res.nfe} NFE")
    save_samples(held[0], out / "data.png", title=f"{task}: held-out data")
    spread = statistics.stdev(floor)
    return {
        "MMD^2": f"{err:.2e}",
        "floor std": f"{spread:.1e}",
        "ratio": f"{err / spread:.2f}",
        "pass (<= 5x)": err <= 5 * spread,
        "steps": meta["step"],
    }


def evaluate_digits(out: Path, n: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    x, y = digits(return_labels=True)
    clf = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1).numpy(), y.numpy())
    model, meta = load_model(out / "checkpoint")
    model.eval()
    with torch.no_grad():
        res = sample(
            model.sde,
            model,
            (n, 1, 8, 8),
            solver="dpm_solver",
            steps=50,
            order=3,
            generator=torch.Generator().manual_seed(1),
        )
    xs = res.samples.clamp(-1, 1)
    proba = clf.predict_proba(xs.reshape(n, -1).numpy())
    top = proba.max(1).mean()
    share = torch.bincount(torch.from_numpy(proba.argmax(1)), minlength=10).float() / n
    real_top = clf.predict_proba(x.reshape(len(x), -1).numpy()).max(1).mean()
    save_samples(xs[:64], out / "samples.png", title="8x8 digits: trained U-Net")
    return {
        "mean top-class prob": f"{top:.3f}",
        "real digits": f"{real_top:.3f}",
        "min class share": f"{float(share.min()):.3f}",
        "pass": bool(top >= 0.8 and share.min() >= 0.05),
        "steps": meta["step"],
        "class shares": " ".join(f"{v:.2f}" for v in share.tolist()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(PRESETS), required=True)
    parser.add_argument("--out", default="results/training")
    parser.add_argument("--n", type=int, default=None, help="samples to evaluate")
    parser.add_argument("--skip-train", action="store_true", help="evaluate an existing run")
    args, extra = parser.parse_known_args()
    out = Path(args.out) / args.task
    print("command: python " + " ".join(sys.argv))
    seconds = math.nan if args.skip_train else train(args.task, out, extra)
    if args.task == "digits":
        row = evaluate_digits(out, args.n or 2000)
    else:
        row = evaluate_2d(args.task, out, args.n or 10_000)
    row = {"task": args.task, "train time (s)": f"{seconds:.0f}", **row}
    print("| " + " | ".join(row) + " |")
    print("|" + "---|" * len(row))
    print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
