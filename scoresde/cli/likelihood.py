"""``scoresde likelihood``: bits per dimension of data under a checkpoint, by the PF-ODE."""

from __future__ import annotations

import argparse
import math

from ..cliutil import (
    POSITIVE_FLOAT,
    POSITIVE_INT,
    THREADS_HINT,
    TimeBar,
    load_checkpoint_model,
    say,
)
from .common import add_command, add_common_flags, apply_common_flags
from .data import data_help, load_data, transform


def cmd_likelihood(args: argparse.Namespace) -> int:
    import torch

    from ..likelihood import bits_per_dim, dequantize, log_likelihood

    apply_common_flags(args)
    model, meta = load_checkpoint_model(args.checkpoint, device=args.device)
    model.eval()
    x, _ = load_data(args.data, args.n, args.seed + 1, args.data_key)
    if len(x) < args.n:
        raise ValueError(f"--data has {len(x)} items, fewer than --n {args.n}")
    x = x[: args.n].to(args.device)
    if args.bits:  # 8-bit images stored as k / 127.5 - 1: back to k, then uniform dequantisation
        levels = torch.round((x.double() + 1) * 127.5)
        x = dequantize(levels, generator=torch.Generator().manual_seed(args.seed)).float()
    z = transform(meta, x)
    # log p_x(x) = log p_z(z) - sum log std: the change of variables of the standardisation
    ones, zeros = torch.ones(1, *x.shape[1:]).double(), torch.zeros(1, *x.shape[1:]).double()
    log_det = float((transform(meta, ones) - transform(meta, zeros)).log().sum())
    chunk = args.chunk or len(z)
    logps, nfe = [], 0
    say(
        f"likelihood: {len(z)} samples, PF-ODE solved with rtol = atol = {args.tol:g}; "
        f"{THREADS_HINT}"
    )
    generator = torch.Generator().manual_seed(args.seed)
    for k, lo in enumerate(range(0, len(z), chunk)):
        bar = TimeBar(model, 1e-5, model.sde.T, f"likelihood {k + 1}/{-(-len(z) // chunk)}")
        try:
            out = log_likelihood(
                model.sde,
                bar,
                z[lo : lo + chunk],
                divergence=args.divergence,
                rtol=args.tol,
                atol=args.tol,
                generator=generator,
            )
        finally:
            bar.close()
        logps.append(out.logp)
        nfe += out.nfe
    logp = torch.cat(logps) + log_det
    dims = x[0].numel()
    nll = -logp / dims
    bpd = bits_per_dim(logp, dims) if args.bits else nll / math.log(2)
    unit = "bits/dim (8-bit data)" if args.bits else "bits/dim (continuous)"
    se = bpd.std() / math.sqrt(bpd.numel())
    print(
        f"{float(bpd.mean()):.4f} +/- {float(se):.4f} {unit} over {bpd.numel()} samples "
        f"({nfe} score evaluations)"
    )
    return 0


def add_likelihood_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``scoresde likelihood`` on an argparse subparsers object."""
    li = add_command(
        subparsers,
        "likelihood",
        "PF-ODE log-likelihood of data under a checkpoint",
        "Bits per dimension of data under a checkpoint, by the probability-flow ODE "
        "(instantaneous change of variables, adaptive RK45).",
    )
    li.add_argument("--checkpoint", required=True, help="checkpoint path, without suffix")
    li.add_argument("--data", required=True, help=data_help())
    li.add_argument(
        "--data-key",
        default=None,
        help="the data array of a .npz file holding several (default: its only one)",
    )
    li.add_argument("--n", type=POSITIVE_INT, default=256, help="how many data items")
    li.add_argument(
        "--divergence",
        default="hutchinson",
        choices=("exact", "hutchinson"),
        help="divergence of the drift: exact trace (d backward passes) or Hutchinson's estimate",
    )
    li.add_argument(
        "--tol", type=POSITIVE_FLOAT, default=1e-5, help="rtol = atol of the adaptive ODE solve"
    )
    li.add_argument(
        "--chunk",
        type=POSITIVE_INT,
        default=None,
        help="items per ODE solve, to bound memory (default: all at once)",
    )
    li.add_argument(
        "--bits",
        action="store_true",
        help="data are 8-bit images scaled to [-1, 1]: report bits/dim of the discrete data",
    )
    add_common_flags(li)
    li.set_defaults(func=cmd_likelihood)
    return li
