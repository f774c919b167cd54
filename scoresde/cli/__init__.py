"""The ``scoresde`` command: ``train``, ``sample``, ``likelihood``, ``compare``, ``demo``, one
module per command (each with its ``cmd_*`` function and its ``add_*_parser``).

Every failure reaches the user as one ``scoresde: ...`` line on stderr: exit status 2 for a bad
command line (argparse), 1 for anything the library or the file system rejects. Set
``SCORESDE_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from .. import __version__
from ..cliutil import ArgumentParser, HelpFormatter
from .compare import add_compare_parser, add_demo_parser
from .data import data_help
from .likelihood import add_likelihood_parser
from .sample import add_sample_parser
from .train import add_train_parser


def build_parser() -> argparse.ArgumentParser:
    """The ``scoresde`` parser with every subcommand."""
    from ..sampling import SOLVERS

    parser = ArgumentParser(
        prog="scoresde",
        description="Continuous-time score-based diffusion toolkit. Run 'scoresde COMMAND --help' "
        "for a command's flags and their defaults.",
        epilog=f"Data sets: {data_help()}. Solvers: {', '.join(SOLVERS)}.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(sub)
    add_sample_parser(sub)
    add_likelihood_parser(sub)
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
