"""``compile=True`` against eager on a CPU: the 8x8-digits U-Net (width 16, 0.44 M parameters).

    python benchmarks/compile_cpu.py --threads 1

Sampling: ``dpm_solver``, 20 steps, batch 64, float32, median of 5 runs after the first (which
compiles); the largest difference between compiled and eager samples from the same seed.
Training: ``Trainer`` steps/s at batch 128, median of 3 timings of 20 steps after the first 20
(which compile). Prints a Markdown table. CPU numbers say nothing about GPU launch overhead; they
show that compiling works here, what it costs up front, and that it changes no result.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import scoresde as sd
from scoresde.nets import UNet
from scoresde.training import TrainConfig, Trainer


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(seconds of the first call, median seconds of ``repeats`` later calls, last result)."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), out


def digits_model(sde: sd.VPSDE) -> sd.ScoreModel:
    torch.manual_seed(0)
    return sd.ScoreModel(UNet(in_channels=1, channels=16, image_size=8), sde)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sde = sd.VPSDE()
    model = digits_model(sde).eval()
    rows, samples = [], {}
    for compile in (False, True):

        def run(compile=compile):
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                return sd.sample(
                    sde, model, (64, 1, 8, 8), "dpm_solver", steps=20, generator=g, compile=compile
                ).samples

        first, median, samples[compile] = timed(run, 5)
        label = "compiled" if compile else "eager"
        rows.append(
            ["sampling, 20 steps, batch 64", label, f"{first:.1f}", f"{median * 1e3:.0f} ms"]
        )
    data = torch.randn(1024, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for compile in (False, True):
        config = TrainConfig(batch_size=128, log_every=20, compile=compile)
        trainer = Trainer(digits_model(sde), data, config)
        first, median, _ = timed(lambda trainer=trainer: trainer.train(20, progress=False), 3)
        label = "compiled" if compile else "eager"
        rows.append(["training, batch 128", label, f"{first:.1f}", f"{20 / median:.1f} steps/s"])
    diff = float((samples[True] - samples[False]).abs().max())
    print(f"# CPU, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| run | mode | first call s | then |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nmax |compiled - eager| over the samples: {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
