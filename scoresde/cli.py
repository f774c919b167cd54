"""The ``scoresde`` command: ``train``, ``sample``, ``likelihood``, ``compare``, ``demo``.

Every failure reaches the user as one ``scoresde: ...`` line on stderr: exit status 2 for a bad
command line (argparse), 1 for anything the library or the file system rejects. Set
``SCORESDE_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .cliutil import (
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    THREADS_HINT,
    ArgumentParser,
    HelpFormatter,
    TimeBar,
    check_device,
    float_in,
    int_at_least,
    load_checkpoint_model,
    say,
)
from .compare import add_compare_parser, add_demo_parser, parse_options

SDE_NAMES = ("vp", "subvp", "ve")
#: Training defaults by kind of data, used for each of these flags that is not given. Vectors:
#: the 2-D recipe of benchmarks/training.py; images: its 8x8-digits recipe (docs/training.md), a
#: U-Net that trains in ~12 min on 2 cores where width 128 and batch 256 would take hours.
TRAIN_DEFAULTS = {
    "vectors": {"steps": 5000, "batch_size": 256, "lr": 2e-3, "width": 128},
    "images": {"steps": 4000, "batch_size": 128, "lr": 1e-3, "width": 16},
}
#: Data whose per-coordinate std is outside this range trains badly with the SDEs' defaults
#: (the prior N(0, I) and sigma_max = 50 assume data of scale ~1).
WELL_SCALED = (0.05, 20.0)
#: Image file suffixes ``scoresde sample --out`` writes as a figure (matplotlib picks the format).
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _make_sde(name: str):
    from . import sde

    return {"vp": sde.VPSDE, "subvp": sde.SubVPSDE, "ve": sde.VESDE}[name]()


def _describe_defaults() -> str:
    return "; ".join(
        f"{kind}: {d['steps']} steps, batch {d['batch_size']}, lr {d['lr']:g}, width {d['width']}"
        for kind, d in TRAIN_DEFAULTS.items()
    )


def _data_help() -> str:
    from .data import TOY_DATASETS

    return f"a toy set ({', '.join(TOY_DATASETS)}), 'digits', a .npy/.npz file or an image folder"


def _load_data(name: str, n: int, seed: int, key: str | None = None, label_key: str | None = None):
    """(data, labels or None) for a toy set name, 'digits', a .npy/.npz path or an image folder;
    ``key`` / ``label_key`` name the arrays of a .npz file."""
    import numpy as np
    import torch

    from . import data

    if (key or label_key) and Path(name).suffix != ".npz":
        raise ValueError(f"--data-key and --label-key name arrays of a .npz file, not of {name!r}")
    if name in data.TOY_DATASETS:
        return data.TOY_DATASETS[name](n, generator=torch.Generator().manual_seed(seed)), None
    if name == "digits":
        return data.digits(return_labels=True)
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"no data file {path}")
        with np.load(path, allow_pickle=False) as z:
            names = list(z.keys())
            labels = z[label_key] if label_key in names else None
        if label_key is not None and labels is None:
            raise ValueError(f"--label-key: {path} has no array {label_key!r}; it holds {names}")
        rest = [k for k in names if k != label_key]
        if key is None and len(rest) != 1:
            raise ValueError(f"{path} holds arrays {names}; choose the data with --data-key")
        x = data.load_array(path, key=key or rest[0])
        return x, None if labels is None else _labels(labels, len(x), label_key)
    if path.suffix == ".npy":
        return data.load_array(path), None
    if path.is_dir():
        return data.load_image_folder(path), None
    raise ValueError(f"unknown data {name!r}; valid: {_data_help()}")


def _labels(arr, n: int, key: str):
    """Integer class labels 0..K-1 of shape (n,) from a .npz array."""
    import numpy as np
    import torch

    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise ValueError(
            f"--label-key {key!r}: labels must be {n} non-negative integers (one per item), got "
            f"an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    return torch.from_numpy(arr.astype(np.int64))


def _standardize(x):
    """(mean, std) per coordinate for vectors (N, d), one scalar pair for images."""
    dims = 0 if x.dim() == 2 else tuple(range(x.dim()))
    mean, std = x.double().mean(dims), x.double().std(dims)
    if bool((std == 0).any()):
        raise ValueError("--standardize: a coordinate of the data is constant (std 0)")
    return {"mean": mean.reshape(-1).tolist(), "std": std.reshape(-1).tolist()}


def _transform(meta: dict, x, inverse: bool = False):
    """Apply (or undo) the standardisation a checkpoint was trained with (none: x as is)."""
    import torch

    st = meta.get("standardize")
    if not st:
        return x
    shape = (1, -1) if x.dim() == 2 else (1,) * x.dim()
    mean = torch.tensor(st["mean"], dtype=x.dtype, device=x.device).reshape(shape)
    std = torch.tensor(st["std"], dtype=x.dtype, device=x.device).reshape(shape)
    return x * std + mean if inverse else (x - mean) / std


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
        stats = _standardize(x)
        x = _transform({"standardize": stats}, x)
    elif not WELL_SCALED[0] <= std <= WELL_SCALED[1]:
        say(
            f"scoresde: warning: data {args.data!r} has std {std:.3g}; the SDEs' defaults assume "
            "data of scale ~1 (prior N(0, I)), so it will train poorly. Add --standardize (the "
            "transform is stored in the checkpoint and undone when sampling)"
        )
    return x, num_classes, stats


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .model import ScoreModel
    from .nets import ResidualMLP, UNet
    from .training import TrainConfig, Trainer

    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # before anything is built: the network's initialisation
    x, labels = _load_data(args.data, args.n_data, args.seed, args.data_key, args.label_key)
    x, num_classes, standardize = _check_training_data(args, x, labels)
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

        out = sample(
            sde,
            ema,
            (min(args.n_plot, 64 if x.dim() == 4 else args.n_plot), *x.shape[1:]),
            solver="dpm_solver",
            steps=30,
            order=3,
            generator=torch.Generator().manual_seed(0),
        ).samples
        return _transform({"standardize": standardize}, out, inverse=True)

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


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .plots import save_class_grid, save_samples
    from .sampling import sample
    from .training import event_shape

    out = Path(args.out)
    if out.suffix.lower() not in (".npy", *FIGURE_SUFFIXES):
        raise ValueError(
            f"--out {args.out!r}: the name must end in .npy (the samples as an array) or in one "
            f"of {', '.join(FIGURE_SUFFIXES)} (a figure)"
        )
    check_device(args.device)
    out.parent.mkdir(parents=True, exist_ok=True)  # fails now rather than after sampling
    if args.threads:
        torch.set_num_threads(args.threads)
    options = parse_options(args.option or [], " given to --option")
    fixed = sorted(set(options) & RESERVED_OPTIONS.keys())
    if fixed:
        flags = ", ".join(f"{k} by {RESERVED_OPTIONS[k]}" for k in fixed)
        raise ValueError(f"--option cannot set {', '.join(fixed)}: the command sets {flags}")
    model, meta = load_checkpoint_model(
        args.checkpoint, ema=not args.raw_weights, device=args.device
    )
    model.eval()
    labels = _class_labels(model, args)
    score_fn = _guided_score(model, args, labels)
    shape = (args.n, *event_shape(meta))
    generator = torch.Generator().manual_seed(args.seed)
    steps = {} if args.steps is None else {"steps": args.steps}  # else the solver's default
    with torch.no_grad():
        if args.inpaint_mask is not None:
            res = _inpaint(model, meta, score_fn, shape, args, generator, options)
        else:
            res = sample(
                model.sde,
                score_fn,
                shape,
                solver=args.solver,
                generator=generator,
                device=args.device,
                progress=sys.stderr.isatty(),
                **steps,
                **options,
            )
    x = _transform(meta, res.samples.cpu(), inverse=True)
    if out.suffix.lower() == ".npy":
        np.save(out, x.numpy())
    else:
        title = f"{args.solver}, {res.nfe} NFE"
        if args.label == "all":
            title += f"; classes 0-{int(labels.max())} (rows), guidance w = {args.guidance:g}"
            save_class_grid(x, labels.cpu(), out, title=title)
        else:
            if args.label is not None:
                title += f"; class {args.label}, guidance w = {args.guidance:g}"
            save_samples(x, out, title=title)
    print(f"wrote {args.n} samples to {out} ({res.nfe} score evaluations)")
    return 0


#: Keyword arguments of ``sample`` that ``scoresde sample`` sets itself, and the flag that does.
RESERVED_OPTIONS = {
    "shape": "--n and the checkpoint",
    "solver": "--solver",
    "steps": "--steps",
    "generator": "--seed",
    "seeds": "--seed",
    "device": "--device",
    "progress": "the command (on where stderr is a terminal)",
}


def _class_labels(model, args: argparse.Namespace):
    """None, or the (n,) labels of ``--class K`` / ``--class all`` (n // K of each class)."""
    import torch

    if args.label is None:
        if args.guidance != 1.0:
            raise ValueError("--guidance needs --class (the class to guide towards, or 'all')")
        return None
    classes = getattr(model.net, "config", {}).get("num_classes")
    if classes is None:
        raise ValueError(
            "--class needs a class-conditional checkpoint (train with --conditional); this one "
            "is unconditional"
        )
    if args.label == "all":
        if args.n % classes:
            raise ValueError(
                f"--class all draws the same number of each of the {classes} classes: --n must "
                f"be a multiple of {classes}, got {args.n}"
            )
        return torch.arange(classes).repeat_interleave(args.n // classes)
    label = int(args.label)
    if not 0 <= label < classes:
        raise ValueError(f"--class must be in 0..{classes - 1} or 'all', got {label}")
    return torch.full((args.n,), label)


def _class(text: str) -> str | int:
    """``--class``: a class index or 'all'."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'all', got {text!r}") from None


def _guided_score(model, args: argparse.Namespace, labels):
    """The model itself, or its classifier-free-guided score for ``--class`` / ``--guidance``."""
    from .guidance import cfg_score_fn

    if labels is None:
        return model
    return cfg_score_fn(model, labels.to(args.device), scale=args.guidance)


def _inpaint(model, meta, score_fn, shape, args: argparse.Namespace, generator, options):
    """Inpaint the first ``--n`` items of ``--inpaint-data``: the mask's True part is kept (in the
    model's units: standardised as the checkpoint was trained)."""
    from .cliutil import mask_from_spec
    from .inpainting import inpaint

    if args.steps is None:
        raise ValueError("inpainting needs --steps")
    x, _ = _load_data(args.inpaint_data, args.n, args.seed)
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise ValueError(
            f"--inpaint-data has items of shape {tuple(x.shape[1:])}, the model makes "
            f"{tuple(shape[1:])}"
        )
    if len(x) < args.n:
        raise ValueError(f"--inpaint-data has {len(x)} items, fewer than --n {args.n}")
    mask = mask_from_spec(args.inpaint_mask, shape[1:])
    return inpaint(
        model.sde,
        score_fn,
        _transform(meta, x[: args.n]).to(args.device),
        mask.to(args.device),
        args.inpaint_method,
        args.steps,
        generator=generator,
        progress=sys.stderr.isatty(),
        **options,
    )


def cmd_likelihood(args: argparse.Namespace) -> int:
    import torch

    from .likelihood import bits_per_dim, dequantize, log_likelihood

    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_checkpoint_model(args.checkpoint, device=args.device)
    model.eval()
    x, _ = _load_data(args.data, args.n, args.seed + 1, args.data_key)
    if len(x) < args.n:
        raise ValueError(f"--data has {len(x)} items, fewer than --n {args.n}")
    x = x[: args.n].to(args.device)
    if args.bits:  # 8-bit images stored as k / 127.5 - 1: back to k, then uniform dequantisation
        levels = torch.round((x.double() + 1) * 127.5)
        x = dequantize(levels, generator=torch.Generator().manual_seed(args.seed)).float()
    z = _transform(meta, x)
    # log p_x(x) = log p_z(z) - sum log std: the change of variables of the standardisation
    ones, zeros = torch.ones(1, *x.shape[1:]).double(), torch.zeros(1, *x.shape[1:]).double()
    log_det = float((_transform(meta, ones) - _transform(meta, zeros)).log().sum())
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


def _common(p: argparse.ArgumentParser) -> None:
    """--seed, --device and --threads of train, sample and likelihood."""
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--threads",
        type=NONNEGATIVE_INT,
        default=0,
        help=f"torch CPU threads, 0: torch's default (one per core); {THREADS_HINT}",
    )


def build_parser() -> argparse.ArgumentParser:
    from .sampling import DEFAULT_SOLVER, SOLVERS

    parser = ArgumentParser(
        prog="scoresde",
        description="Continuous-time score-based diffusion toolkit. Run 'scoresde COMMAND --help' "
        "for a command's flags and their defaults.",
        epilog=f"Data sets: {_data_help()}. Solvers: {', '.join(SOLVERS)}.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    solvers = f"solvers: {', '.join(SOLVERS)}"

    def add(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=description or help, formatter_class=HelpFormatter
        )

    tr = add(
        "train",
        "train a score model with denoising score matching",
        "Train a score model with denoising score matching. Vectors (N, d) train a residual "
        "MLP, images (N, C, H, W) a U-Net. --steps, --batch-size, --lr and --width default by "
        f"kind of data: {_describe_defaults()}. The progress bar's time left is the estimate; "
        f"{THREADS_HINT}.",
    )
    tr.add_argument("--data", required=True, help=_data_help())
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
    tr.add_argument("--sde", choices=SDE_NAMES, default="vp", help="forward SDE")
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
        choices=("sigma2", "likelihood", "none"),
        help="DSM loss weighting lambda(t): sigma(t)^2, g(t)^2 (likelihood) or 1",
    )
    tr.add_argument(
        "--parameterization",
        default="eps",
        choices=("eps", "score", "x0", "v"),
        help="what the network predicts",
    )
    tr.add_argument(
        "--width",
        type=POSITIVE_INT,
        default=None,
        help="MLP hidden width / U-Net base channels (default: by data kind)",
    )
    tr.add_argument("--depth", type=POSITIVE_INT, default=3, help="MLP residual blocks")
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
    _common(tr)
    tr.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CUDA")
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

    sa = add("sample", "sample from a trained checkpoint")
    sa.add_argument("--checkpoint", required=True, help="checkpoint path, without suffix")
    sa.add_argument(
        "--solver", default=DEFAULT_SOLVER, choices=SOLVERS, metavar="NAME", help=solvers
    )
    sa.add_argument(
        "--steps",
        type=POSITIVE_INT,
        default=None,
        help="solver steps (default: the solver's own default)",
    )
    sa.add_argument("--n", type=POSITIVE_INT, default=1000, help="how many samples")
    sa.add_argument(
        "--out",
        required=True,
        help=f"file: .npy for the array, {'/'.join(FIGURE_SUFFIXES)} for a figure",
    )
    sa.add_argument(
        "--option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="solver option, e.g. --option order=3 (repeatable; default: none)",
    )
    _common(sa)
    sa.add_argument("--raw-weights", action="store_true", help="use the raw weights, not the EMA")
    sa.add_argument(
        "--class",
        dest="label",
        type=_class,
        default=None,
        help="class to sample, or 'all' for --n / K of each class (one row per class in a "
        "figure); class-conditional checkpoints only (default: unconditional)",
    )
    sa.add_argument(
        "--guidance",
        type=float_in(),
        default=1.0,
        help="classifier-free guidance scale w with --class (0: unconditional, 1: conditional, "
        ">1: stronger)",
    )
    sa.add_argument(
        "--inpaint-mask",
        default=None,
        help="inpaint --inpaint-data: top|bottom|left|right (the known half) or a .npy mask "
        "(default: no inpainting)",
    )
    sa.add_argument(
        "--inpaint-method",
        default="replacement",
        choices=("replacement", "repaint", "smc"),
        help="inpainting method",
    )
    sa.add_argument(
        "--inpaint-data", default="digits", help="data set whose first --n items are inpainted"
    )
    sa.set_defaults(func=cmd_sample)

    li = add(
        "likelihood",
        "PF-ODE log-likelihood of data under a checkpoint",
        "Bits per dimension of data under a checkpoint, by the probability-flow ODE "
        "(instantaneous change of variables, adaptive RK45).",
    )
    li.add_argument("--checkpoint", required=True, help="checkpoint path, without suffix")
    li.add_argument("--data", required=True, help=_data_help())
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
    _common(li)
    li.set_defaults(func=cmd_likelihood)

    add_compare_parser(sub, HelpFormatter)
    add_demo_parser(sub, HelpFormatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        raise SystemExit("scoresde: interrupted") from None
    except Exception as err:  # every failure as one line; SCORESDE_DEBUG=1 shows the traceback
        if os.environ.get("SCORESDE_DEBUG"):
            raise
        raise SystemExit(f"scoresde: {_one_line(err)}") from None


def _one_line(err: Exception) -> str:
    """The error as one line: its message (the type too where it is not a plain bad value)."""
    if isinstance(err, OSError) and err.strerror:  # the file system: which file and why
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}"
    text = " ".join(str(err).split()) or "(no message)"
    if isinstance(err, ValueError | FileNotFoundError) and type(err).__module__ == "builtins":
        return text
    return f"{type(err).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
