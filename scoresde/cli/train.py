"""``scoresde train``: a score model trained with denoising score matching or flow matching on a
data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliutil import (
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    THREADS_HINT,
    float_in,
    int_at_least,
    say,
)
from ..comparison import SDES
from ..flow_matching import COUPLINGS
from ..losses import LOSSES, WEIGHTINGS
from ..parameterization import PARAMETERIZATIONS
from .common import add_command, add_common_flags, add_speed_flags, apply_common_flags
from .data import data_help, load_data, standardize, transform

#: Training defaults by kind of data, used for each of these flags that is not given. Vectors:
#: the 2-D recipe of benchmarks/training.py; images: its 8x8-digits recipe (docs/training.md), a
#: U-Net that trains in ~12 min on 2 cores where width 128 and batch 256 would take hours.
TRAIN_DEFAULTS = {
    "vectors": {"steps": 5000, "batch_size": 256, "lr": 2e-3, "width": 128},
    "images": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "width": 16},
}
#: ``--net tabular``'s default parameterisation. The residual MLP's output is bounded (it ends in
#: LayerNorm -> SiLU -> Linear), so an eps-predicting one has a score -eps/sigma that stops growing
#: a few stds from the data, and the PF-ODE's expansion (-beta x / 2 in reverse time) then carries
#: the prior's tail draws far out (benchmarks/tabular.py: 5 of 4000 rows 13-85 stds from every
#: sub-population, width error 0.21). v-prediction keeps the linear pull: eps = sigma x + alpha v,
#: so score = -x - (alpha / sigma) v (Salimans & Ho 2022, Sec. 4) for any bounded v.
TABULAR_PARAMETERIZATION = "v"
#: ``--net tabular``'s default learning rate: the width-512 preset fits the sub-populations'
#: widths better at 5e-4 than at the vectors' 2e-3 (benchmarks/tabular.py, width error: 0.041
#: against 0.053 at 5000 steps; at 2500 steps 0.048 and 0.049 against 0.068 and 0.069 over two
#: seeds, while dropout 0 instead of 0.1 gives 0.066).
TABULAR_LR = 5e-4
#: Data whose per-coordinate std is outside this range trains badly with the SDEs' defaults
#: (the prior N(0, I) and sigma_max = 50 assume data of scale ~1).
WELL_SCALED = (0.05, 20.0)


def describe_defaults() -> str:
    """``TRAIN_DEFAULTS`` in words, for the command's help."""
    return "; ".join(
        f"{kind}: {d['steps']} steps, batch {d['batch_size']}, lr {d['lr']:g}, width {d['width']}"
        for kind, d in TRAIN_DEFAULTS.items()
    )


def _check_training_data(args: argparse.Namespace, x, labels):
    """Fill in the per-data defaults and check the data: (x, num_classes, standardisation)."""
    kind = "vectors" if x.dim() == 2 else "images"
    for flag, value in TRAIN_DEFAULTS[kind].items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    if args.conditional and labels is None:
        raise ValueError(
            f"--conditional needs class labels, and data {args.data!r} has none: use 'digits', "
            "or a .npz file with its labels named by --label-key"
        )
    num_classes = int(labels.max()) + 1 if args.conditional else None
    if not bool(x.isfinite().all()):
        raise ValueError(f"data {args.data!r} holds NaN or infinite values")
    std = float(x.double().std())
    stats = None
    if args.standardize:
        stats = standardize(x)
        x = transform({"standardize": stats}, x)
    elif not WELL_SCALED[0] <= std <= WELL_SCALED[1]:
        say(
            f"scoresde: warning: data {args.data!r} has std {std:.3g}; the SDEs' defaults assume "
            "data of scale ~1 (prior N(0, I)), so it will train poorly. Add --standardize (the "
            "transform is stored in the checkpoint and undone when sampling)"
        )
    return x, num_classes, stats


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..model import ScoreModel
    from ..nets import DiT, ResidualMLP, UNet
    from ..training import TrainConfig, Trainer

    apply_common_flags(args)
    torch.manual_seed(args.seed)  # before anything is built: the network's initialisation
    x, labels = load_data(args.data, args.n_data, args.seed, args.data_key, args.label_key)
    if args.net == "tabular":
        args.standardize = True
        args.width = args.width or 512
        args.lr = args.lr or TABULAR_LR
        if args.parameterization is None and args.loss == "dsm":
            args.parameterization = TABULAR_PARAMETERIZATION
    x, num_classes, standardize = _check_training_data(args, x, labels)
    net: ResidualMLP | UNet | DiT
    fits = {"auto", "mlp", "tabular"} if x.dim() == 2 else {"auto", "unet", "dit"}
    if args.net not in fits:
        raise SystemExit(f"scoresde: --net {args.net} does not fit data of shape {tuple(x.shape)}")
    if x.dim() == 2 and args.net == "tabular":
        net = ResidualMLP.tabular(
            x.shape[1], hidden=args.width, depth=args.depth or 4, num_classes=num_classes
        )
    elif x.dim() == 2:
        net = ResidualMLP(
            x.shape[1], hidden=args.width, depth=args.depth or 3, num_classes=num_classes
        )
    elif x.dim() == 4 and args.net == "dit":
        size = x.shape[-1]
        net = DiT(
            in_channels=x.shape[1],
            image_size=size,
            patch_size=2 if size <= 16 or size % 4 else 4,
            hidden=4 * args.width,
            depth=args.depth or 6,
            num_classes=num_classes,
        )
    elif x.dim() == 4:
        net = UNet(
            in_channels=x.shape[1],
            channels=args.width,
            image_size=x.shape[-1],
            num_classes=num_classes,
        )
    else:
        raise SystemExit(f"scoresde: data of shape {tuple(x.shape)} is neither (N, d) nor images")
    sde = SDES[args.sde]()
    if args.parameterization is None:
        args.parameterization = "velocity" if args.loss == "fm" else "eps"
    if args.coupling != "independent" and args.loss != "fm":
        raise SystemExit(f"scoresde: --coupling {args.coupling} needs --loss fm")
    model = ScoreModel(net, sde, args.parameterization)
    config = TrainConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        decay_steps=args.steps if args.lr_decay == "cosine" else 0,
        ema_decay=args.ema_decay,
        loss=args.loss,
        weighting=args.weighting,
        coupling=args.coupling,
        seed=args.seed,
        p_uncond=args.p_uncond if num_classes else 0.0,
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        sample_every=args.sample_every,
        bf16=args.bf16,
        compile=args.compile or False,
        cuda_graph=args.cuda_graph,
    )

    def sample_fn(ema, step):
        from ..sampling import sample

        out = sample(
            sde,
            ema,
            (min(args.n_plot, 64 if x.dim() == 4 else args.n_plot), *x.shape[1:]),
            solver="dpm_solver",
            steps=30,
            order=3,
            generator=torch.Generator().manual_seed(0),
        ).samples
        return transform({"standardize": standardize}, out, inverse=True)

    class CLITrainer(Trainer):  # the checkpoint also records the data's standardisation
        def state(self):
            tensors, meta = super().state()
            return tensors, {**meta, "standardize": standardize} if standardize else meta

    with CLITrainer(
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
        if remaining > 0 and not args.quiet and trainer.rank == 0:
            params = sum(p.numel() for p in net.parameters())
            say(
                f"training a {type(net).__name__} (width {args.width}, {params / 1e3:.0f}k "
                f"parameters) on {args.data}: {len(x)} items of shape {tuple(x.shape[1:])}, "
                f"{remaining} steps of batch {args.batch_size} on {args.device}, torch threads: "
                f"{torch.get_num_threads()}. The bar's time left is the estimate; "
                f"{THREADS_HINT}."
            )
        if remaining > 0:
            trainer.train(remaining, progress=not args.quiet)
        path = trainer.save()
    if path is not None and not args.quiet:
        print(f"saved {path} (step {trainer.step})")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``scoresde train`` on an argparse subparsers object."""
    tr = add_command(
        subparsers,
        "train",
        "train a score model with denoising score matching or flow matching",
        "Train a score model with denoising score matching (--loss dsm) or conditional flow "
        "matching (--loss fm, Lipman et al. 2023). Vectors (N, d) train a residual "
        "MLP, images (N, C, H, W) a U-Net. --steps, --batch-size, --lr and --width default by "
        f"kind of data: {describe_defaults()}. The progress bar's time left is the estimate; "
        f"{THREADS_HINT}.",
    )
    tr.add_argument("--data", required=True, help=data_help())
    tr.add_argument(
        "--data-key",
        default=None,
        help="the data array of a .npz file holding several (default: its only one)",
    )
    tr.add_argument(
        "--label-key",
        default=None,
        help="the integer class-label array of a .npz file (default: no labels)",
    )
    tr.add_argument("--out", required=True, help="output folder (checkpoint, loss.csv, figures)")
    tr.add_argument("--sde", choices=tuple(SDES), default="vp", help="forward SDE")
    tr.add_argument(
        "--steps", type=POSITIVE_INT, default=None, help="training steps (default: by data kind)"
    )
    tr.add_argument(
        "--batch-size", type=POSITIVE_INT, default=None, help="batch size (default: by data kind)"
    )
    tr.add_argument(
        "--lr", type=POSITIVE_FLOAT, default=None, help="Adam learning rate (default: by data kind)"
    )
    tr.add_argument(
        "--warmup", type=NONNEGATIVE_INT, default=200, help="linear learning-rate warm-up steps"
    )
    tr.add_argument(
        "--lr-decay",
        choices=("none", "cosine"),
        default="none",
        help="cosine: decay the learning rate to 0 over --steps",
    )
    tr.add_argument(
        "--ema-decay",
        type=float_in(0, 1, hi_open=True),
        default=0.999,
        help="decay of the weights' exponential moving average (sampling uses the EMA)",
    )
    tr.add_argument(
        "--weighting",
        default="sigma2",
        choices=WEIGHTINGS,
        help="DSM loss weighting lambda(t): sigma(t)^2, g(t)^2 (likelihood) or 1",
    )
    tr.add_argument(
        "--parameterization",
        default=None,
        choices=PARAMETERIZATIONS,
        help="what the network predicts (default: eps; v with --net tabular; velocity with "
        "--loss fm)",
    )
    tr.add_argument(
        "--loss",
        default="dsm",
        choices=LOSSES,
        help="dsm: denoising score matching; fm: flow matching on the SDE's Gaussian path "
        "(--sde rf: rectified flow)",
    )
    tr.add_argument(
        "--coupling",
        default="independent",
        choices=tuple(c for c in COUPLINGS if c != "pairs"),
        help="--loss fm: noise independent of the data, or paired by minibatch optimal "
        "transport (ot; Tong et al. 2024)",
    )
    tr.add_argument(
        "--width",
        type=POSITIVE_INT,
        default=None,
        help="MLP hidden width / U-Net base channels / DiT hidden / 4 (default: by data kind)",
    )
    tr.add_argument(
        "--net",
        choices=("auto", "mlp", "tabular", "unet", "dit"),
        default="auto",
        help="network: auto is the residual MLP for vectors and the U-Net for images; dit is "
        "the Diffusion Transformer for images (hidden 4 x --width, patch 2, or 4 from 32x32); "
        "tabular is a wider MLP with dropout (width 512) that implies --standardize, defaults to "
        "--lr 5e-4 and, with --loss dsm, to --parameterization v",
    )
    tr.add_argument(
        "--depth",
        type=POSITIVE_INT,
        default=None,
        help="MLP residual blocks (default 3) / DiT blocks (default 6)",
    )
    # not "--n": torchrun's argument parser would take it for an abbreviation of its own flags
    tr.add_argument(
        "--n-data", type=int_at_least(2), default=100_000, help="how many points of a toy set"
    )
    tr.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional model (needs labels: digits, or --label-key)",
    )
    tr.add_argument(
        "--p-uncond",
        type=float_in(0, 1, hi_open=True),
        default=0.1,
        help="label dropout with --conditional, for classifier-free guidance",
    )
    tr.add_argument(
        "--standardize",
        action="store_true",
        help="train on (x - mean) / std; stored in the checkpoint and undone when sampling",
    )
    add_common_flags(tr)
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CUDA")
    add_speed_flags(tr, "the network's forward and backward")
    tr.add_argument(
        "--log-every", type=POSITIVE_INT, default=100, help="steps between loss.csv rows"
    )
    tr.add_argument(
        "--ckpt-every",
        type=NONNEGATIVE_INT,
        default=1000,
        help="steps between checkpoints (0: only at the end)",
    )
    tr.add_argument(
        "--sample-every",
        type=NONNEGATIVE_INT,
        default=0,
        help="steps between sample figures in --out (0: none)",
    )
    tr.add_argument(
        "--n-plot", type=POSITIVE_INT, default=2000, help="points per sample figure (images: 64)"
    )
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    tr.set_defaults(func=cmd_train)
    return tr
