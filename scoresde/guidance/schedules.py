"""Guidance scales: a number or a schedule w(t), and the common schedules.

Every ``scale`` of the guidance combinators may be a number or a callable from the (batch,)
times to a number or a (batch,) tensor, evaluated on the device once per call:

    constant_scale(w)                 w                                   (bit-identical to w)
    linear_scale(w0, w1, T)           w0 + (w1 - w0) t / T                 (Wang et al. 2024)
    cosine_scale(w0, w1, T)           w1 + (w0 - w1) (1 + cos(pi t / T)) / 2   (Wang et al. 2024)
    interval_scale(w, t_lo, t_hi)     w inside [t_lo, t_hi], 1 outside    (Kynkäänniemi et al. 2024)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..nets.embeddings import batch_time
from ..validation import check_real

__all__ = ["Scale", "constant_scale", "linear_scale", "cosine_scale", "interval_scale"]

#: A guidance scale: a number, or a schedule ``w(t)`` from the (batch,) times (in x's dtype and
#: device) to a number or a (batch,) / 0-d tensor.
Scale = float | Callable[[Tensor], Tensor | float]


def _check_scale(scale, name: str = "scale") -> Scale:
    """A number (checked finite) or a schedule w(t) (checked callable; its values are not
    checked per call, which would need a host sync)."""
    if callable(scale) and not isinstance(scale, Tensor):
        return scale
    return check_real(name, scale)


def _scale_at(scale: Scale, t, x: Tensor) -> float | Tensor:
    """The scale at time t: a number as is, a schedule's (batch,) values shaped to broadcast
    over x's event dims (shape checks only, no sync)."""
    if not callable(scale):
        return scale
    w = scale(batch_time(t, x))
    if isinstance(w, Tensor):
        if w.dim() == 0:
            return w.to(device=x.device, dtype=x.dtype)
        if w.shape != (x.shape[0],):
            raise ValueError(
                f"a guidance schedule w(t) must return a number or a 0-d or ({x.shape[0]},) "
                f"tensor, got shape {tuple(w.shape)}"
            )
        return w.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return check_real("w(t)", w)


def _is_const(scale: Scale, value: float) -> bool:
    return not callable(scale) and scale == value


# -- schedules w(t) ----------------------------------------------------------------------------


def constant_scale(w: float) -> Callable[[Tensor], float]:
    """The schedule w(t) = w; guidance with it equals guidance with ``scale=w`` bit for bit."""
    w = check_real("w", w)

    def schedule(t: Tensor) -> float:
        return w

    return schedule


def _check_T(T) -> float:
    return check_real("T", T, 0.0, lo_open=True)


def linear_scale(w0: float, w1: float, T: float = 1.0) -> Callable[[Tensor], Tensor]:
    """w(t) = w0 + (w1 - w0) t / T: w0 at the data end (t = 0), w1 at the prior end (t = T).

    Wang et al. 2024 ("Analysis of Classifier-Free Guidance Weight Schedulers", Sec. 4) find that
    guidance growing as sampling proceeds (small w at high noise, large near the data: w0 > w1)
    beats a constant scale of the same mean.
    """
    w0, w1, T = check_real("w0", w0), check_real("w1", w1), _check_T(T)

    def schedule(t: Tensor) -> Tensor:
        return w0 + (w1 - w0) * (t / T)

    return schedule


def cosine_scale(w0: float, w1: float, T: float = 1.0) -> Callable[[Tensor], Tensor]:
    """w(t) = w1 + (w0 - w1) (1 + cos(pi t / T)) / 2: w0 at t = 0, w1 at t = T, flat at both ends.

    The cosine schedule of Wang et al. 2024 (Sec. 4), with the same convention as
    ``linear_scale``.
    """
    w0, w1, T = check_real("w0", w0), check_real("w1", w1), _check_T(T)

    def schedule(t: Tensor) -> Tensor:
        return w1 + (w0 - w1) * (0.5 * (1.0 + torch.cos((math.pi / T) * t)))

    return schedule


def interval_scale(
    w: float, t_lo: float, t_hi: float, outside: float = 1.0
) -> Callable[[Tensor], Tensor]:
    """w(t) = w for t in [t_lo, t_hi], ``outside`` elsewhere (a per-sample ``torch.where``).

    Limited-interval guidance (Kynkäänniemi et al. 2024, Sec. 3): guide only at medium noise
    levels; ``outside = 1`` gives s_u + (s_c - s_u) there, the conditional score up to round-off
    (``interval=`` of ``classifier_free_guidance`` returns s_c itself).
    """
    w, outside = check_real("w", w), check_real("outside", outside)
    checked = _check_interval((t_lo, t_hi))
    assert checked is not None
    lo, hi = checked

    def schedule(t: Tensor) -> Tensor:
        inside = (t >= lo) & (t <= hi)
        return torch.where(inside, torch.full_like(t, w), torch.full_like(t, outside))

    return schedule


def _check_interval(interval) -> tuple[float, float] | None:
    if interval is None:
        return None
    if isinstance(interval, str) or not hasattr(interval, "__len__") or len(interval) != 2:
        raise TypeError(f"interval must be None or (t_lo, t_hi), got {interval!r}")
    lo, hi = (check_real("interval", v) for v in interval)
    if not 0 <= lo <= hi:
        raise ValueError(f"interval must satisfy 0 <= t_lo <= t_hi, got {interval!r}")
    return lo, hi
