"""Guidance: classifier-free and classifier guidance as score combinators.

Every guidance combinator returns a plain ``score_fn(x, t)``, so every solver of ``sample`` runs
guided sampling unchanged. (Inpainting is in ``inpainting.py`` and ``smc.py``; the noisy
classifier is ``nets.NoisyClassifier``, trained by ``training.train_classifier``.)

    classifier_free_guidance(s_c, s_u, scale=w)    s_u + w (s_c - s_u)     (Ho & Salimans 2022)
    cfg_score_fn(model, y, scale=w)                 the same, one batched call to a conditional net
    classifier_guidance(s, log p_t(y|x), scale=w)   s + w grad_x log p_t(y | x)  (Song et al. 2021)
    classifier_log_prob(classifier, y)              log p_phi(y | x, t) for classifier_guidance

With w > 1 neither guidance samples p(x | y)^w p(x)^(1-w): the guided score is the gradient of
p_t(x | y)^w p_t(x)^(1-w) at every t, but that family is not the diffusion of its t = 0 member
(docs/guidance.md measures how far the samples land from the tilted density).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .nets.embeddings import batch_time
from .sde import ScoreFn, TimeLike
from .validation import check_callable, check_label_values, check_real

__all__ = [
    "classifier_free_guidance",
    "cfg_score_fn",
    "classifier_guidance",
    "classifier_log_prob",
]


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance


def _check_scale(scale) -> float:
    return check_real("scale", scale)


def _check_interval(interval) -> tuple[float, float] | None:
    if interval is None:
        return None
    if isinstance(interval, str) or not hasattr(interval, "__len__") or len(interval) != 2:
        raise TypeError(f"interval must be None or (t_lo, t_hi), got {interval!r}")
    lo, hi = (check_real("interval", v) for v in interval)
    if not 0 <= lo <= hi:
        raise ValueError(f"interval must satisfy 0 <= t_lo <= t_hi, got {interval!r}")
    return lo, hi


def _combine(
    s_c: Tensor, s_u: Tensor, scale: float, interval: tuple[float, float] | None, t, x: Tensor
) -> Tensor:
    """s_u + w (s_c - s_u); with an interval, that for t inside it and s_c outside (a per-sample
    ``torch.where`` on the device, so a solver loop never waits on the host)."""
    guided = s_u + scale * (s_c - s_u)
    if interval is None:
        return guided
    tt = batch_time(t, x)
    inside = (tt >= interval[0]) & (tt <= interval[1])
    return torch.where(inside.reshape(-1, *([1] * (x.dim() - 1))), guided, s_c)


def classifier_free_guidance(
    cond_score_fn: ScoreFn,
    uncond_score_fn: ScoreFn,
    scale: float = 1.0,
    interval: Sequence[float] | None = None,
) -> ScoreFn:
    """The guided score s_u + w (s_c - s_u) of two score functions.

    Ho & Salimans 2022, Eq. 6, written for scores: their eps~ = (1 + w') eps_c - w' eps_u is
    scale w = 1 + w' here. w = 0 is the unconditional score, w = 1 the conditional one, and w > 1
    the gradient of log p_t(x | y)^w p_t(x)^(1-w) at each t.

    Parameters
    ----------
    interval
        Optional (t_lo, t_hi): guide only for t in [t_lo, t_hi] and use the plain conditional
        score (w = 1) elsewhere, the limited-interval guidance of Kynkäänniemi et al. 2024,
        who find guidance harmful at high noise and useless at low noise. The switch
        is a per-sample ``torch.where``, so no host-device sync happens in a solver loop.

    Notes
    -----
    Both branches are evaluated on every call (two score evaluations per counted NFE) except at
    w = 1 (conditional only) and w = 0 without interval (unconditional only); for a
    class-conditional network ``cfg_score_fn`` batches the two into one call.
    """
    check_callable("cond_score_fn", cond_score_fn)
    check_callable("uncond_score_fn", uncond_score_fn)
    scale, interval = _check_scale(scale), _check_interval(interval)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        if scale == 1.0:
            return cond_score_fn(x, t)
        if scale == 0.0 and interval is None:
            return uncond_score_fn(x, t)
        return _combine(cond_score_fn(x, t), uncond_score_fn(x, t), scale, interval, t, x)

    return score_fn


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if n is None:
        n = getattr(getattr(model, "net", None), "num_classes", None)
    return n


def cfg_score_fn(
    model: nn.Module,
    y: int | Tensor,
    scale: float = 1.0,
    interval: Sequence[float] | None = None,
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
    interval
        As in ``classifier_free_guidance``.
    """
    num_classes = _num_classes(model)
    if num_classes is None:
        raise ValueError(
            "classifier-free guidance needs a class-conditional model: its network was built "
            "with num_classes=None (train with --conditional / num_classes=K and p_uncond > 0)"
        )
    check_label_values(y, num_classes)
    scale, interval = _check_scale(scale), _check_interval(interval)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        b = x.shape[0]
        tt = batch_time(t, x)
        if isinstance(y, Tensor):
            if y.shape != (b,):
                raise ValueError(f"y has shape {tuple(y.shape)} but the batch size is {b}")
            labels = y.to(device=x.device, dtype=torch.long)
        else:
            labels = torch.full((b,), y, dtype=torch.long, device=x.device)
        null = torch.full_like(labels, num_classes)
        if scale == 1.0:
            return model(x, tt, labels)
        if scale == 0.0 and interval is None:
            return model(x, tt, null)
        out = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
        return _combine(out[:b], out[b:], scale, interval, tt, x)

    return score_fn


# ----------------------------------------------------------------------------------------------
# Classifier guidance


def _grad_log_prob(log_prob_fn: Callable[[Tensor, TimeLike], Tensor], x: Tensor, t) -> Tensor:
    """grad_x of ``log_prob_fn(x, t)`` (batch,), by autograd even under a caller's no_grad."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_prob_fn(xg, t)
        if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
            got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise ValueError(f"log_prob_y_fn must return a ({x.shape[0]},) tensor, got {got}")
        if not lp.requires_grad:
            raise ValueError("log_prob_y_fn(x, t) does not depend on x through autograd")
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    return grad


def classifier_guidance(
    score_fn: ScoreFn, log_prob_y_fn: Callable[[Tensor, TimeLike], Tensor], scale: float = 1.0
) -> ScoreFn:
    """The guided score s(x, t) + w grad_x log p_t(y | x).

    Song et al. 2021, Eq. 49 (grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x));
    Dhariwal & Nichol 2021, Sec. 4, with their gradient scale w. With the exact noisy classifier
    (``exact_classifier``) and w = 1 it is the exact conditional score.

    Parameters
    ----------
    log_prob_y_fn
        ``(x, t) -> (batch,)`` log p_t(y | x) for the wanted labels (e.g.
        ``classifier_log_prob(classifier, y)``); differentiated by autograd inside, so the guided
        score also works under a caller's ``torch.no_grad()``. The gradient is detached.
    """
    check_callable("score_fn", score_fn)
    check_callable("log_prob_y_fn", log_prob_y_fn)
    scale = _check_scale(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        return score_fn(x, t) + scale * _grad_log_prob(log_prob_y_fn, x, t)

    return guided


def classifier_log_prob(
    classifier: nn.Module, y: int | Tensor
) -> Callable[[Tensor, TimeLike], Tensor]:
    """(x, t) -> log p_phi(y | x, t), (batch,), the log-softmax of a classifier's logits.

    Parameters
    ----------
    y
        A class (int) or ``(batch,)`` labels in [0, classifier.num_classes), checked once here.
    """
    num_classes = _num_classes(classifier)
    if num_classes is None:
        raise ValueError("the classifier must have a num_classes attribute")
    check_label_values(y, num_classes)

    def log_prob_y(x: Tensor, t: TimeLike) -> Tensor:
        logp = torch.log_softmax(classifier(x, batch_time(t, x)), dim=-1)
        if isinstance(y, Tensor):
            return logp.gather(1, y.to(x.device).reshape(-1, 1))[:, 0]
        return logp[:, y]

    return log_prob_y
