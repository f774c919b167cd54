"""What the ``scoresde`` subcommands share: registering a command, and the --seed, --device and
--threads flags of train, sample and likelihood."""

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
