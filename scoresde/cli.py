"""The ``scoresde`` command: ``train``, ``sample``, ``likelihood``, ``compare``, ``demo``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .compare import add_compare_parser, add_demo_parser, parse_options

SDE_NAMES = ("vp", "subvp", "ve")


def _make_sde(name: str):
    from . import sde

    return {"vp": sde.VPSDE, "subvp": sde.SubVPSDE, "ve": sde.VESDE}[name]()


def _load_data(name: str, n: int, seed: int):
    """(data, labels or None) for a toy set name, 'digits', or a .npy/.npz path."""
    import torch

    from . import data

    if name in data.TOY_DATASETS:
        return data.TOY_DATASETS[name](n, generator=torch.Generator().manual_seed(seed)), None
    if name == "digits":
        return data.digits(return_labels=True)
    path = Path(name)
    if path.suffix in (".npy", ".npz"):
        return data.load_array(path), None
    if path.is_dir():
        return data.load_image_folder(path), None
    valid = sorted(data.TOY_DATASETS) + ["digits", "<file.npy|file.npz>", "<image folder>"]
    raise SystemExit(f"scoresde: unknown data {name!r}; valid: {', '.join(valid)}")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .model import ScoreModel
    from .nets import ResidualMLP, UNet
    from .training import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # before anything is built: the network's initialisation
    x, labels = _load_data(args.data, args.n_data, args.seed)
    num_classes = int(labels.max()) + 1 if (labels is not None and args.conditional) else None
    if x.dim() == 2:
        net = ResidualMLP(x.shape[1], hidden=args.width, depth=args.depth, num_classes=num_classes)
    elif x.dim() == 4:
        net = UNet(
            in_channels=x.shape[1],
            channels=args.width,
            image_size=x.shape[-1],
            num_classes=num_classes,
        )
    else:
        raise SystemExit(f"scoresde: data of shape {tuple(x.shape)} is neither (N, d) nor images")
    sde = _make_sde(args.sde)
    model = ScoreModel(net, sde, args.parameterization)
    config = TrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        decay_steps=args.steps if args.lr_decay == "cosine" else 0,
        ema_decay=args.ema_decay,
        weighting=args.weighting,
        seed=args.seed,
        p_uncond=args.p_uncond if num_classes else 0.0,
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        sample_every=args.sample_every,
        bf16=args.bf16,
    )

    def sample_fn(ema, step):
        from .sampling import sample

        return sample(
            sde,
            ema,
            (min(args.n_plot, 64 if x.dim() == 4 else args.n_plot), *x.shape[1:]),
            solver="dpm_solver",
            steps=30,
            order=3,
            generator=torch.Generator().manual_seed(0),
        ).samples

    with Trainer(
        model,
        x,
        config,
        labels=labels if num_classes else None,
        out_dir=args.out,
        device=args.device,
        sample_fn=sample_fn,
    ) as trainer:  # under torchrun, closing destroys the process group it initialised
        checkpoint = Path(args.out) / "checkpoint"
        if args.resume and checkpoint.with_suffix(".safetensors").exists():
            trainer.load(checkpoint)
        remaining = args.steps - trainer.step
        if remaining > 0:
            trainer.train(remaining, progress=not args.quiet)
        path = trainer.save()
    if path is not None and not args.quiet:
        print(f"saved {path} (step {trainer.step})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .plots import save_samples
    from .sampling import sample
    from .training import event_shape, load_model

    model, meta = load_model(args.checkpoint, ema=not args.raw_weights, device=args.device)
    model.eval()
    shape = (args.n, *event_shape(meta))
    options = parse_options(args.option, " given to --option")
    score_fn = _guided_score(model, args)
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        if args.inpaint_mask is not None:
            res = _inpaint(model, score_fn, shape, args, generator, options)
        else:
            res = sample(
                model.sde,
                score_fn,
                shape,
                solver=args.solver,
                steps=args.steps,
                generator=generator,
                device=args.device,
                **options,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = res.samples.cpu()
    if out.suffix == ".png":
        save_samples(x, out, title=f"{args.solver}, {res.nfe} NFE")
    else:
        np.save(out, x.numpy())
    print(f"wrote {args.n} samples to {out} ({res.nfe} score evaluations)")
    return 0


def _guided_score(model, args: argparse.Namespace):
    """The model itself, or its classifier-free-guided score for ``--class`` / ``--guidance``."""
    from .guidance import cfg_score_fn

    if args.label is None:
        if args.guidance != 1.0:
            raise SystemExit("scoresde: --guidance needs --class (the class to guide towards)")
        return model
    return cfg_score_fn(model, args.label, scale=args.guidance)


def _inpaint(model, score_fn, shape, args: argparse.Namespace, generator, options):
    """Inpaint the first ``--n`` items of ``--inpaint-data``: the mask's True part is kept."""
    from .guidance import inpaint, mask_from_spec

    if args.steps is None:
        raise SystemExit("scoresde: inpainting needs --steps")
    x, _ = _load_data(args.inpaint_data, args.n, args.seed)
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise SystemExit(
            f"scoresde: --inpaint-data has items of shape {tuple(x.shape[1:])}, the model makes "
            f"{tuple(shape[1:])}"
        )
    mask = mask_from_spec(args.inpaint_mask, shape[1:])
    return inpaint(
        model.sde,
        score_fn,
        x[: args.n].to(args.device),
        mask.to(args.device),
        args.inpaint_method,
        args.steps,
        generator=generator,
        **options,
    )


def cmd_likelihood(args: argparse.Namespace) -> int:
    import torch

    from .likelihood import bits_per_dim, dequantize, log_likelihood
    from .training import load_model

    model, meta = load_model(args.checkpoint, device=args.device)
    model.eval()
    x, _ = _load_data(args.data, args.n, args.seed + 1)
    x = x[: args.n].to(args.device)
    if args.bits:  # 8-bit images stored as k / 127.5 - 1: back to k, then uniform dequantisation
        levels = torch.round((x.double() + 1) * 127.5)
        x = dequantize(levels, generator=torch.Generator().manual_seed(args.seed)).float()
    out = log_likelihood(
        model.sde,
        model,
        x,
        divergence=args.divergence,
        rtol=args.tol,
        atol=args.tol,
        generator=torch.Generator().manual_seed(args.seed),
        chunk_size=args.chunk,
    )
    dims = x[0].numel()
    nll = -out.logp / dims
    bpd = bits_per_dim(out.logp, dims) if args.bits else nll / math.log(2)
    unit = "bits/dim (8-bit data)" if args.bits else "bits/dim (continuous)"
    se = bpd.std() / math.sqrt(bpd.numel())
    print(
        f"{float(bpd.mean()):.4f} +/- {float(se):.4f} {unit} over {bpd.numel()} samples "
        f"({out.nfe} score evaluations)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scoresde", description="Continuous-time score-based diffusion toolkit."
    )
    parser.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = parser.add_subparsers(dest="command")

    tr = sub.add_parser("train", help="train a score model with denoising score matching")
    tr.add_argument(
        "--data", required=True, help="toy set name, 'digits', a .npy/.npz file or an image folder"
    )
    tr.add_argument("--sde", choices=SDE_NAMES, default="vp")
    tr.add_argument("--out", required=True, help="output folder (checkpoint, loss.csv, figures)")
    tr.add_argument("--steps", type=int, default=5000)
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--warmup", type=int, default=200)
    tr.add_argument(
        "--lr-decay",
        choices=("none", "cosine"),
        default="none",
        help="cosine: decay the learning rate to 0 over --steps",
    )
    tr.add_argument("--ema-decay", type=float, default=0.999)
    tr.add_argument("--weighting", default="sigma2", choices=("sigma2", "likelihood", "none"))
    tr.add_argument("--parameterization", default="eps", choices=("eps", "score", "x0", "v"))
    tr.add_argument("--width", type=int, default=128, help="MLP hidden width / U-Net channels")
    tr.add_argument("--depth", type=int, default=3, help="MLP residual blocks")
    # not "--n": torchrun's argument parser would take it for an abbreviation of its own flags
    tr.add_argument("--n-data", type=int, default=100_000, help="toy data set size")
    tr.add_argument("--conditional", action="store_true", help="class-conditional (labelled data)")
    tr.add_argument("--p-uncond", type=float, default=0.1, help="label dropout for CFG")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CUDA")
    tr.add_argument("--log-every", type=int, default=100)
    tr.add_argument("--ckpt-every", type=int, default=1000)
    tr.add_argument("--sample-every", type=int, default=0)
    tr.add_argument("--n-plot", type=int, default=2000)
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)

    sa = sub.add_parser("sample", help="sample from a trained checkpoint")
    sa.add_argument("--checkpoint", required=True)
    sa.add_argument("--solver", default="dpm_solver")
    sa.add_argument("--steps", type=int, default=None)
    sa.add_argument("--n", type=int, default=1000)
    sa.add_argument("--out", required=True, help=".npy for arrays, .png for a figure")
    sa.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="solver option, e.g. --option order=3 (repeatable)",
    )
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--device", default="cpu")
    sa.add_argument("--raw-weights", action="store_true", help="use the raw weights, not the EMA")
    sa.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        help="class to sample (class-conditional checkpoints); default: unconditional",
    )
    sa.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale w with --class (0: unconditional, 1: conditional)",
    )
    sa.add_argument(
        "--inpaint-mask",
        default=None,
        help="inpaint --inpaint-data: top|bottom|left|right (the known half) or a .npy mask",
    )
    sa.add_argument(
        "--inpaint-method", default="replacement", choices=("replacement", "repaint", "smc")
    )
    sa.add_argument(
        "--inpaint-data", default="digits", help="data set whose first --n items are inpainted"
    )
    sa.set_defaults(func=cmd_sample)

    li = sub.add_parser("likelihood", help="PF-ODE log-likelihood of data under a checkpoint")
    li.add_argument("--checkpoint", required=True)
    li.add_argument("--data", required=True)
    li.add_argument("--n", type=int, default=256)
    li.add_argument("--divergence", default="hutchinson", choices=("exact", "hutchinson"))
    li.add_argument("--tol", type=float, default=1e-5)
    li.add_argument("--chunk", type=int, default=None)
    li.add_argument(
        "--bits",
        action="store_true",
        help="data are 8-bit images scaled to [-1, 1]: report bits/dim of the discrete data",
    )
    li.add_argument("--seed", type=int, default=0)
    li.add_argument("--device", default="cpu")
    li.set_defaults(func=cmd_likelihood)

    add_compare_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: its message, not a traceback
        raise SystemExit(f"scoresde: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
