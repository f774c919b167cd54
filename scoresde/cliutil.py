"""Pieces shared by the ``scoresde`` subcommands: argument types that reject bad values with a
message naming the allowed range, a help formatter that shows defaults, an argument parser whose
usage errors are one ``scoresde: ...`` line, and progress bars for adaptive solves."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

#: Said wherever a long run starts: on a 2-core machine shared with other jobs, torch's default
#: (one thread per core) oversubscribes the cores and runs slow by 10-25x.
THREADS_HINT = "on a machine shared with other jobs, --threads 1 is often much faster"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to each flag's help, except where the default is None or False
    (a switch, or a default the help text states in words) or the flag is required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"scoresde: {message} (see '{self.prog} --help')\n")


def _number(text: str, cast: Callable[[str], float | int], what: str):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: an integer >= lo."""

    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {value}")
        return value

    parse.__name__ = f"integer >= {lo}"  # what argparse names in its own messages
    return parse


def float_in(
    lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite float in the interval [lo, hi] (ends open as asked)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def list_of(item: Callable[[str], float | int]) -> Callable[[str], list]:
    """An argparse type: a comma-separated, non-empty list of ``item``s."""

    def parse(text: str) -> list:
        values = [item(s.strip()) for s in text.split(",") if s.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return values

    parse.__name__ = "comma-separated list"
    return parse


POSITIVE_INT = int_at_least(1)
NONNEGATIVE_INT = int_at_least(0)
POSITIVE_FLOAT = float_in(0.0, lo_open=True)


def say(message: str) -> None:
    """A status line on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


class TimeBar:
    """A progress bar over [t_end, t_start] for an adaptive solve whose steps are unknown ahead:
    wraps ``score_fn`` and moves the bar to each new time it is evaluated at, showing the NFE.

    Shown only where stderr is a terminal (tqdm's ``disable=None``); ``close`` returns the
    elapsed seconds. Reading t costs one host sync per evaluation, which is why this lives in the
    command line and not in the library's solvers.
    """

    def __init__(self, score_fn, t_start: float, t_end: float, desc: str):
        self.score_fn, self.t_start, self.t_end = score_fn, float(t_start), float(t_end)
        self.nfe, self.start = 0, time.perf_counter()
        self.bar = tqdm(total=1000, desc=desc, disable=None, leave=False, unit="‰")

    def __call__(self, x, t, *args, **kwargs):
        self.nfe += 1
        if not self.bar.disable:
            now = float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t)
            done = abs(now - self.t_start) / max(abs(self.t_end - self.t_start), 1e-12)
            self.bar.update(max(0, round(1000 * min(done, 1.0)) - self.bar.n))
            self.bar.set_postfix(t=f"{now:.3g}", nfe=self.nfe, refresh=False)
        return self.score_fn(x, t, *args, **kwargs)

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.start


def check_device(name: str | None) -> None:
    """A clear error for a ``--device`` that does not exist here (None: the default)."""
    import torch

    if name is None:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {name!r} is not a torch device; use cpu, cuda, cuda:K or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use cpu")


def load_checkpoint_model(path: str, **kwargs):
    """``checkpoint.load_model`` with every failure to read the files naming the checkpoint."""
    from .training import load_model

    try:
        return load_model(path, **kwargs)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # a truncated or foreign file: safetensors' own errors
        message = " ".join(str(err).split())
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {message}") from err


def mask_from_spec(spec: str, event_shape: Sequence[int]) -> Tensor:
    """A bool mask (True = known) of ``event_shape`` from a CLI spec.

    "top" / "bottom" / "left" / "right": that half of an image (the last two dims) is known;
    a path to a ``.npy`` file: a 0/1 or bool array of ``event_shape``.
    """
    event_shape = tuple(event_shape)
    halves = ("top", "bottom", "left", "right")
    if spec in halves:
        if len(event_shape) < 2:
            raise ValueError(f"mask {spec!r} needs image data (..., H, W), got {event_shape}")
        h, w = event_shape[-2:]
        rows = torch.arange(h).reshape(h, 1).expand(h, w)
        cols = torch.arange(w).reshape(1, w).expand(h, w)
        half = {
            "top": rows < h // 2,
            "bottom": rows >= h // 2,
            "left": cols < w // 2,
            "right": cols >= w // 2,
        }[spec]
        return half.expand(event_shape).clone()
    path = Path(spec)
    if path.suffix != ".npy" or not path.exists():
        raise ValueError(
            f"inpaint mask must be one of {halves} or an existing .npy file, got {spec!r}"
        )
    arr = torch.from_numpy(np.load(path, allow_pickle=False))
    if tuple(arr.shape) != event_shape:
        raise ValueError(f"mask file {spec} has shape {tuple(arr.shape)}, expected {event_shape}")
    return arr != 0
