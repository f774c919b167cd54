"""Guidance for a class-conditional network, with every branch in one batched network call.

A class-conditional ``ScoreModel`` trained with label dropout (``p_uncond > 0``, Ho & Salimans
2022, Alg. 1) gives the score of p_t(x | y) for a class y and of p_t(x) for the null label
``num_classes``. The combinators of ``combinators.py`` call one score function per branch; the
functions here run all their branches as one batch (x repeated, labels concatenated) and combine
the slices with the same formula, so a guided NFE costs one network call:

    cfg_score_fn(model, y, w)                   [y, null]           s_u + w (s_y - s_u)
    negative_score_fn(model, y, y_neg, w)       [y, y_neg]          s_y + w (s_y - s_neg)
    multi_condition_score_fn(model, [y_k], [w_k])  [null, y_1..y_K]  s_u + sum_k w_k (s_k - s_u)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nets.embeddings import batch_time
from ..sde import ScoreFn, TimeLike
from ..validation import check_label_values
from .combinators import _check_rescale, _combine, _num_classes
from .schedules import Scale, _check_interval, _check_scale, _is_const, _scale_at

__all__ = ["cfg_score_fn", "negative_score_fn", "multi_condition_score_fn"]


def _conditional_classes(model: nn.Module) -> int:
    """The model's number of classes (its null label), or a ValueError for an unconditional one."""
    num_classes = _num_classes(model)
    if num_classes is None:
        raise ValueError(
            "classifier-free guidance needs a class-conditional model: its network was built "
            "with num_classes=None (train with --conditional / num_classes=K and p_uncond > 0)"
        )
    return num_classes


def _batch_labels(y: int | Tensor, x: Tensor) -> Tensor:
    """(batch,) long labels on x's device from a class (int) or a (batch,) tensor."""
    b = x.shape[0]
    if isinstance(y, Tensor):
        if y.shape != (b,):
            raise ValueError(f"y has shape {tuple(y.shape)} but the batch size is {b}")
        return y.to(device=x.device, dtype=torch.long)
    return torch.full((b,), y, dtype=torch.long, device=x.device)


def _branches(model: nn.Module, x: Tensor, tt: Tensor, labels: Sequence[Tensor]) -> list[Tensor]:
    """model(x, t, labels[k]) for every k, as one call on the concatenated batch, split back."""
    n = len(labels)
    out = model(torch.cat([x] * n), torch.cat([tt] * n), torch.cat(list(labels)))
    return list(out.split(x.shape[0]))


def cfg_score_fn(
    model: nn.Module,
    y: int | Tensor,
    scale: Scale = 1.0,
    interval: Sequence[float] | None = None,
    rescale: float = 0.0,
) -> ScoreFn:
    """Classifier-free guidance for a class-conditional ``ScoreModel``, one network call per NFE.

    ``model(x, t, y)`` returns the score of p_t(x | y), and of p_t(x) for the null label
    ``num_classes`` (how ``ResidualMLP``/``UNet`` learn both when trained with ``p_uncond > 0``,
    Ho & Salimans 2022, Alg. 1). Both branches run as one batch: x is concatenated with itself
    and the labels are [y, null]. At scale 1 only the conditional branch runs, at scale 0 (no
    interval) only the unconditional one.

    Parameters
    ----------
    y
        A class (int) or ``(batch,)`` labels in [0, num_classes); checked once, here.
    scale
        As in ``classifier_free_guidance``.
    interval, rescale
        As in ``classifier_free_guidance``.
    """
    num_classes = _conditional_classes(model)
    check_label_values(y, num_classes)
    scale, interval = _check_scale(scale), _check_interval(interval)
    rescale = _check_rescale(rescale)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        tt = batch_time(t, x)
        labels = _batch_labels(y, x)
        null = torch.full_like(labels, num_classes)
        if _is_const(scale, 1.0):
            return model(x, tt, labels)
        if _is_const(scale, 0.0) and interval is None and rescale == 0.0:
            return model(x, tt, null)
        s_c, s_u = _branches(model, x, tt, [labels, null])
        return _combine(s_c, s_u, scale, interval, tt, x, rescale)

    return score_fn


def negative_score_fn(
    model: nn.Module, y: int | Tensor, y_neg: int | Tensor, scale: Scale = 1.0
) -> ScoreFn:
    """Negative guidance s_y + w (s_y - s_neg) of a class-conditional model, one call per NFE.

    ``negative_guidance(s_y, s_neg, w)`` (the negative-prompt rule; Armandpour et al. 2023,
    Sec. 3) with both branches, labels [y, y_neg], run as one batch of twice the size. At a
    constant w = 0 only the conditional branch runs.

    Parameters
    ----------
    y, y_neg
        The class to guide towards and the one to guide away from: each an int or ``(batch,)``
        labels in [0, num_classes), checked once, here.
    scale
        w, a number or a schedule w(t) (as in ``classifier_free_guidance``).
    """
    num_classes = _conditional_classes(model)
    check_label_values(y, num_classes)
    check_label_values(y_neg, num_classes)
    scale = _check_scale(scale)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        tt = batch_time(t, x)
        labels = _batch_labels(y, x)
        if _is_const(scale, 0.0):
            return model(x, tt, labels)
        s_c, s_n = _branches(model, x, tt, [labels, _batch_labels(y_neg, x)])
        return s_c + _scale_at(scale, tt, x) * (s_c - s_n)

    return score_fn


def multi_condition_score_fn(
    model: nn.Module, ys: Sequence[int | Tensor], scales: Sequence[Scale]
) -> ScoreFn:
    """Composed guidance s_u + sum_k w_k (s_k - s_u) of a class-conditional model, one call per
    NFE.

    ``multi_condition_guidance`` (Liu et al. 2022, Eq. 10; a negative w_k is their negation,
    Eq. 12) with its K + 1 branches, labels [null, y_1, ..., y_K], run as one batch of K + 1
    times the size.

    Parameters
    ----------
    ys
        K >= 1 conditions, each a class (int) or ``(batch,)`` labels in [0, num_classes),
        checked once, here.
    scales
        K scales w_k, each a number or a schedule w_k(t).
    """
    num_classes = _conditional_classes(model)
    if isinstance(ys, (str, Tensor)) or not isinstance(ys, Sequence):
        raise TypeError(
            "ys must be a sequence of labels (one int or (batch,) tensor per condition)"
        )
    if isinstance(scales, str) or not isinstance(scales, Sequence):
        raise TypeError("scales must be a sequence (one scale per condition)")
    if len(ys) == 0:
        raise ValueError("ys must hold at least one condition")
    if len(scales) != len(ys):
        raise ValueError(f"got {len(ys)} conditions but {len(scales)} scales (one each)")
    for y in ys:
        check_label_values(y, num_classes)
    ws = [_check_scale(w, f"scales[{k}]") for k, w in enumerate(scales)]

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        tt = batch_time(t, x)
        null = torch.full((x.shape[0],), num_classes, dtype=torch.long, device=x.device)
        s_u, *s_k = _branches(model, x, tt, [null] + [_batch_labels(y, x) for y in ys])
        out = s_u
        for s, w in zip(s_k, ws, strict=True):
            out = out + _scale_at(w, tt, x) * (s - s_u)
        return out

    return score_fn
