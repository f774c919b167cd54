"""``scoresde sample``: samples of a trained checkpoint, unconditional, class-guided or
inpainted, as an array or a figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cliutil import POSITIVE_INT, float_in, load_checkpoint_model
from ..comparison import parse_options
from .common import add_command, add_common_flags, add_speed_flags, apply_common_flags
from .data import load_data, transform

#: Image file suffixes ``scoresde sample --out`` writes as a figure (matplotlib picks the format).
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..plots import save_class_grid, save_samples
    from ..sampling import sample
    from ..training import event_shape

    out = Path(args.out)
    if out.suffix.lower() not in (".npy", *FIGURE_SUFFIXES):
        raise ValueError(
            f"--out {args.out!r}: the name must end in .npy (the samples as an array) or in one "
            f"of {', '.join(FIGURE_SUFFIXES)} (a figure)"
        )
    apply_common_flags(args)
    out.parent.mkdir(parents=True, exist_ok=True)  # fails now rather than after sampling
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
                compile=args.compile or False,
                cuda_graph=args.cuda_graph,
                **steps,
                **options,
            )
    x = transform(meta, res.samples.cpu(), inverse=True)
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
    "compile": "--compile",
    "cuda_graph": "--cuda-graph",
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
    from ..guidance import cfg_score_fn

    if labels is None:
        return model
    return cfg_score_fn(model, labels.to(args.device), scale=args.guidance)


def _inpaint(model, meta, score_fn, shape, args: argparse.Namespace, generator, options):
    """Inpaint the first ``--n`` items of ``--inpaint-data``: the mask's True part is kept (in the
    model's units: standardised as the checkpoint was trained)."""
    from ..cliutil import mask_from_spec
    from ..compile import CUDAGraphScore, check_cuda_graph, compile_fn
    from ..inpainting import inpaint

    if args.steps is None:
        raise ValueError("inpainting needs --steps")
    x, _ = load_data(args.inpaint_data, args.n, args.seed)
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise ValueError(
            f"--inpaint-data has items of shape {tuple(x.shape[1:])}, the model makes "
            f"{tuple(shape[1:])}"
        )
    if len(x) < args.n:
        raise ValueError(f"--inpaint-data has {len(x)} items, fewer than --n {args.n}")
    mask = mask_from_spec(args.inpaint_mask, shape[1:])
    if args.compile:
        score_fn = compile_fn(score_fn, args.compile, args.device)
    if check_cuda_graph(args.cuda_graph, args.device, "the score function's calls"):
        score_fn = CUDAGraphScore(score_fn)
    return inpaint(
        model.sde,
        score_fn,
        transform(meta, x[: args.n]).to(args.device),
        mask.to(args.device),
        args.inpaint_method,
        args.steps,
        generator=generator,
        progress=sys.stderr.isatty(),
        **options,
    )


def add_sample_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``scoresde sample`` on an argparse subparsers object."""
    from ..sampling import DEFAULT_SOLVER, SOLVERS

    solvers = f"solvers: {', '.join(SOLVERS)}"
    sa = add_command(subparsers, "sample", "sample from a trained checkpoint")
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
    add_common_flags(sa)
    add_speed_flags(sa, "the score network's calls")
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
    return sa
