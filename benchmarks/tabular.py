"""The tabular preset on a table whose column scales differ by 1e7 (``data.tabular_mixture``).

Trains six models with ``scoresde train`` on ``--n-data`` rows of ``tabular_mixture`` (same
steps, batch 256, VP): ``--net tabular`` (``ResidualMLP.tabular``: width 512, depth 4, dropout
0.1; standardises every column; v-prediction and lr 5e-4 by default), the same with ``--lr 2e-3``
as v and as eps; ``--net mlp`` (width 128, depth 3, eps, lr 2e-3) on the raw columns; and
``--net mlp --standardize`` as eps and as v. Samples ``--n`` rows of each with ``scoresde sample``
(``dpm_solver`` order 3, 50 steps: the command maps them back through mean + std z) and scores
them against the exact mixture (``tabular_mixture_density()``), each metric next to its noise
floor (mean +/- std over 5 pairs of exact sets of the same size):

- MMD^2 of the rows divided by the exact column stds (so that every column counts);
- ``mode_weight_tv``: total variation between the sub-population shares and (0.5, 0.3, 0.2);
- ``width_error``: weight-averaged RMS log ratio of each sub-population's column stds;
- far rows: rows whose squared Mahalanobis distance d^2 to their most likely sub-population
  exceeds 50 (a chi^2_5 tail of 1.4e-9: none among exact draws). A few such rows are enough to
  inflate the width error, while MMD^2 (a bounded kernel) barely sees them.

Run ``python benchmarks/tabular.py`` (``--steps``, default 2000; ~20 min on one CPU thread at
5000 steps). A model already in ``--out`` is reused, with its recorded train time.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from scoresde import cli
from scoresde.checkpoint import load_model
from scoresde.data import TABULAR_MEANS, TABULAR_STDS, TABULAR_WEIGHTS, tabular_mixture_density
from scoresde.metrics import MMD, mode_assignment, mode_weight_tv, noise_floor, width_error

PARAM_V, PARAM_EPS, LR = (
    ["--parameterization", "v"],
    ["--parameterization", "eps"],
    ["--lr", "2e-3"],
)
CONFIGS = {
    "--net tabular (v, lr 5e-4)": ("tabular-v-lr5e-4", ["--net", "tabular"]),
    "--net tabular --lr 2e-3 (v)": ("tabular-v", ["--net", "tabular", *LR]),
    "--net tabular --lr 2e-3 --parameterization eps": (
        "tabular-eps",
        ["--net", "tabular", *LR, *PARAM_EPS],
    ),
    "--net mlp, raw columns (eps)": ("mlp-raw", ["--net", "mlp"]),
    "--net mlp --standardize (eps)": ("mlp-std-eps", ["--net", "mlp", "--standardize"]),
    "--net mlp --standardize --parameterization v": (
        "mlp-std-v",
        ["--net", "mlp", "--standardize", *PARAM_V],
    ),
}
#: A row is "far" from the mixture beyond this squared Mahalanobis distance to its most likely
#: sub-population: P(chi^2_5 > 50) = 1.4e-9.
FAR_D2 = 50.0


def column_stds() -> torch.Tensor:
    """The exact std of each column of the mixture: sum_k w_k (s_k^2 + m_k^2) - mean^2."""
    w, m, s = (
        torch.tensor(v, dtype=torch.float64) for v in (TABULAR_WEIGHTS, TABULAR_MEANS, TABULAR_STDS)
    )
    mean = (w[:, None] * m).sum(0)
    return ((w[:, None] * (s**2 + m**2)).sum(0) - mean**2).sqrt()


def far_rows(x: torch.Tensor, mix) -> tuple[int, float]:
    """(how many rows lie beyond d^2 = ``FAR_D2``, the largest d^2), d^2 being a row's squared
    Mahalanobis distance to its most likely sub-population (that component's diagonal
    covariance)."""
    k = mode_assignment(x, mix)
    d2 = ((x - mix.means[k]) / mix.stds[k]).square().sum(1)
    return int((d2 > FAR_D2).sum()), float(d2.max())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/tabular")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--n-data", type=int, default=20000)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mix = tabular_mixture_density()
    scale = column_stds()

    def exact(seed: int) -> torch.Tensor:
        return mix.sample(args.n, torch.Generator().manual_seed(seed))

    seeds = iter(range(100, 200))
    ref = exact(99)
    mmd = MMD(ref / scale)
    floors = {
        "MMD^2": noise_floor(lambda: exact(next(seeds)) / scale, lambda a, b: MMD(b)(a)),
        "mode TV": noise_floor(lambda: exact(next(seeds)), lambda a, b: mode_weight_tv(a, mix)),
        "width err": noise_floor(lambda: exact(next(seeds)), lambda a, b: width_error(a, mix)),
    }
    print(
        f"# tabular_mixture: {args.n_data} rows, {args.steps} steps, batch 256, VP; "
        f"{args.n} samples, dpm_solver order 3, 50 steps"
    )
    head = " | ".join(f"{k} (floor {m:.1e} +/- {s:.1e})" for k, (m, s) in floors.items())
    rows = [
        f"| model | parameters | train s | {head} | far rows (exact: 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (folder, flags) in CONFIGS.items():
        out = Path(args.out) / folder
        t0 = time.perf_counter()
        timing = out / "train_seconds.txt"  # so that a rerun that reuses the model reports it
        if not (out / "checkpoint.safetensors").exists():
            cli.main(
                [
                    "train", "--data", "tabular_mixture", "--n-data", str(args.n_data),
                    "--out", str(out), "--steps", str(args.steps), "--batch-size", "256",
                    "--sde", "vp", "--ckpt-every", "0", "--quiet",
                    "--threads", str(args.threads), *flags,
                ]
            )  # fmt: skip
            timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
        t_train = float(timing.read_text()) if timing.exists() else math.nan
        ckpt = str(out / "checkpoint")
        samples = out / "samples.npy"
        cli.main(
            [
                "sample", "--checkpoint", ckpt, "--solver", "dpm_solver", "--steps", "50",
                "--option", "order=3", "--n", str(args.n), "--seed", "1", "--out", str(samples),
            ]
        )  # fmt: skip
        x = torch.from_numpy(np.load(samples)).double()
        model, _ = load_model(ckpt)
        params = sum(p.numel() for p in model.parameters())
        finite = bool(x.isfinite().all())
        values = (
            [mmd(x / scale), mode_weight_tv(x, mix), width_error(x, mix)]
            if finite
            else [math.nan] * 3
        )
        cells = " | ".join(f"{v:.2e}" for v in values)
        far = "{} (max d^2 {:.0f})".format(*far_rows(x, mix)) if finite else "-"
        rows.append(f"| {name} | {params / 1e6:.2f}M | {t_train:.0f} | {cells} | {far} |")
    print("\n" + "\n".join(rows))
    print(f"\nCommand: python benchmarks/tabular.py --steps {args.steps}")


if __name__ == "__main__":
    main()
