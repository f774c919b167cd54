"""What the ``scoresde`` subcommands share: registering a command, the --seed, --device and
--threads flags of train, sample and likelihood, and the --compile / --cuda-graph flags of train
and sample."""

from __future__ import annotations

import argparse

from ..cliutil import NONNEGATIVE_INT, THREADS_HINT, HelpFormatter, check_device


def add_command(subparsers, name: str, help: str, description: str = "") -> argparse.ArgumentParser:
    """A subcommand's parser on ``subparsers``, its help showing the defaults."""
    return subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """--seed, --device and --threads of train, sample and likelihood."""
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--threads",
        type=NONNEGATIVE_INT,
        default=0,
        help=f"torch CPU threads, 0: torch's default (one per core); {THREADS_HINT}",
    )


def apply_common_flags(args: argparse.Namespace) -> None:
    """Check --device (before any work) and apply --threads."""
    import torch

    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)


def add_speed_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--compile [MODE] and --cuda-graph of train and sample (``scoresde.compile``)."""
    from ..compile import COMPILE_MODES

    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help=f"torch.compile {what}; MODE is one of {', '.join(COMPILE_MODES)} (default "
        "without MODE: default; reduce-overhead and max-autotune need CUDA)",
    )
    p.add_argument(
        "--cuda-graph",
        action="store_true",
        help=f"replay {what} as CUDA graphs (CUDA only)",
    )
