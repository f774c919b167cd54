"""Guidance combinators of score functions: classifier-free, classifier, negative, several
conditions, and guidance rescale. Each returns a plain ``score_fn(x, t)`` (see the package
docstring of ``scoresde.guidance`` for the table of formulas); ``scale`` arguments are numbers
or schedules w(t) (``schedules.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..nets.embeddings import batch_time
from ..sde import ScoreFn, TimeLike
from ..validation import check_callable, check_label_values, check_real
from .schedules import Scale, _check_interval, _check_scale, _is_const, _scale_at

__all__ = [
    "classifier_free_guidance",
    "classifier_guidance",
    "classifier_log_prob",
    "negative_guidance",
    "multi_condition_guidance",
    "guidance_rescale",
]

# ----------------------------------------------------------------------------------------------
# Classifier-free guidance


def _check_rescale(rescale) -> float:
    return check_real("rescale", rescale, 0.0, 1.0)


def _combine(
    s_c: Tensor,
    s_u: Tensor,
    scale: Scale,
    interval: tuple[float, float] | None,
    t,
    x: Tensor,
    rescale: float = 0.0,
) -> Tensor:
    """s_u + w (s_c - s_u) (rescaled towards s_c's std when ``rescale`` > 0); with an interval,
    that for t inside it and s_c outside (a per-sample ``torch.where`` on the device, so a solver
    loop never waits on the host)."""
    guided = s_u + _scale_at(scale, t, x) * (s_c - s_u)
    if rescale != 0.0:
        guided = guidance_rescale(guided, s_c, rescale)
    if interval is None:
        return guided
    tt = batch_time(t, x)
    inside = (tt >= interval[0]) & (tt <= interval[1])
    return torch.where(inside.reshape(-1, *([1] * (x.dim() - 1))), guided, s_c)


def classifier_free_guidance(
    cond_score_fn: ScoreFn,
    uncond_score_fn: ScoreFn,
    scale: Scale = 1.0,
    interval: Sequence[float] | None = None,
    rescale: float = 0.0,
) -> ScoreFn:
    """The guided score s_u + w (s_c - s_u) of two score functions.

    Ho & Salimans 2022, Eq. 6, written for scores: their eps~ = (1 + w') eps_c - w' eps_u is
    scale w = 1 + w' here. w = 0 is the unconditional score, w = 1 the conditional one, and w > 1
    the gradient of log p_t(x | y)^w p_t(x)^(1-w) at each t.

    Parameters
    ----------
    scale
        w, a number or a schedule w(t) (``linear_scale``, ``cosine_scale``, ...; any callable
        from the (batch,) times to a number or a (batch,) tensor).
    interval
        Optional (t_lo, t_hi): guide only for t in [t_lo, t_hi] and use the plain conditional
        score (w = 1) elsewhere, the limited-interval guidance of Kynkäänniemi et al. 2024,
        who find guidance harmful at high noise and useless at low noise. The switch
        is a per-sample ``torch.where``, so no host-device sync happens in a solver loop.
    rescale
        phi in [0, 1]: guidance rescale (``guidance_rescale``, Lin et al. 2024, Alg. 2) of the
        guided score towards the conditional score's per-sample std; 0 (default) is plain CFG.

    Notes
    -----
    Both branches are evaluated on every call (two score evaluations per counted NFE) except at
    w = 1 (conditional only) and w = 0 without interval (unconditional only); for a
    class-conditional network ``cfg_score_fn`` batches the two into one call.
    """
    check_callable("cond_score_fn", cond_score_fn)
    check_callable("uncond_score_fn", uncond_score_fn)
    scale, interval = _check_scale(scale), _check_interval(interval)
    rescale = _check_rescale(rescale)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        if _is_const(scale, 1.0):
            return cond_score_fn(x, t)
        if _is_const(scale, 0.0) and interval is None and rescale == 0.0:
            return uncond_score_fn(x, t)
        s_c, s_u = cond_score_fn(x, t), uncond_score_fn(x, t)
        return _combine(s_c, s_u, scale, interval, t, x, rescale)

    return score_fn


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if n is None:
        n = getattr(getattr(model, "net", None), "num_classes", None)
    return n


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
    score_fn: ScoreFn, log_prob_y_fn: Callable[[Tensor, TimeLike], Tensor], scale: Scale = 1.0
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
    scale
        w, a number or a schedule w(t) (as in ``classifier_free_guidance``).
    """
    check_callable("score_fn", score_fn)
    check_callable("log_prob_y_fn", log_prob_y_fn)
    scale = _check_scale(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        return score_fn(x, t) + _scale_at(scale, t, x) * _grad_log_prob(log_prob_y_fn, x, t)

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


# ----------------------------------------------------------------------------------------------
# Variants: negative conditioning, several conditions, guidance rescale


def negative_guidance(cond_score_fn: ScoreFn, neg_score_fn: ScoreFn, scale: Scale = 1.0) -> ScoreFn:
    """The score s_c + w (s_c - s_neg), guided towards y and away from a negative condition.

    The negative-prompt practice of Stable Diffusion (the negative condition's prediction takes
    the unconditional one's place in CFG; Armandpour et al. 2023, "Re-imagine the Negative Prompt
    Algorithm", Sec. 3): s_neg + w' (s_c - s_neg) is this with w = w' - 1, so w = 0 is the plain
    conditional score. It is the gradient of log p_t(x | y)^(1+w) p_t(x | y_neg)^(-w) at each t.
    To keep the unconditional branch as well, use ``multi_condition_guidance`` with a negative
    weight (Liu et al. 2022's negation).

    Parameters
    ----------
    cond_score_fn, neg_score_fn
        grad log p_t(x | y) and grad log p_t(x | y_neg), e.g. ``exact_class_score`` of two labels.
    scale
        w, a number or a schedule w(t) (as in ``classifier_free_guidance``); at a constant w = 0
        only ``cond_score_fn`` is evaluated.
    """
    check_callable("cond_score_fn", cond_score_fn)
    check_callable("neg_score_fn", neg_score_fn)
    scale = _check_scale(scale)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        s_c = cond_score_fn(x, t)
        if _is_const(scale, 0.0):
            return s_c
        return s_c + _scale_at(scale, t, x) * (s_c - neg_score_fn(x, t))

    return score_fn


def multi_condition_guidance(
    uncond_score_fn: ScoreFn, cond_score_fns: Sequence[ScoreFn], scales: Sequence[Scale]
) -> ScoreFn:
    """The composed score s_u + sum_k w_k (s_k - s_u) of K conditions, each with its own scale.

    Liu et al. 2022 ("Compositional Visual Generation with Composable Diffusion Models",
    Eq. 10, the conjunction c_1 AND ... AND c_K, written for scores); a negative w_k is their
    negation (Eq. 12). K = 1 is ``classifier_free_guidance``. At each t it is the gradient of
    log p_t(x) + sum_k w_k log [p_t(x | c_k) / p_t(x)].

    Parameters
    ----------
    uncond_score_fn
        grad log p_t(x).
    cond_score_fns
        K >= 1 conditional scores grad log p_t(x | c_k).
    scales
        K scales w_k, each a number or a schedule w_k(t).
    """
    check_callable("uncond_score_fn", uncond_score_fn)
    if isinstance(cond_score_fns, str) or not isinstance(cond_score_fns, Sequence):
        raise TypeError("cond_score_fns must be a sequence of score functions")
    if isinstance(scales, str) or not isinstance(scales, Sequence):
        raise TypeError("scales must be a sequence (one scale per condition)")
    if len(cond_score_fns) == 0:
        raise ValueError("cond_score_fns must hold at least one score function")
    if len(scales) != len(cond_score_fns):
        raise ValueError(
            f"got {len(cond_score_fns)} conditions but {len(scales)} scales (one each)"
        )
    fns = [check_callable(f"cond_score_fns[{k}]", f) for k, f in enumerate(cond_score_fns)]
    ws = [_check_scale(w, f"scales[{k}]") for k, w in enumerate(scales)]

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        s_u = uncond_score_fn(x, t)
        out = s_u
        for f, w in zip(fns, ws, strict=True):
            out = out + _scale_at(w, t, x) * (f(x, t) - s_u)
        return out

    return score_fn


def guidance_rescale(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """Rescale a guided prediction towards the conditional one's per-sample std.

    Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Sec. 3.4,
    Alg. 2): with r = std(cond) / std(guided) over the event dims of each sample,
    out = guided (phi r + 1 - phi); phi = 0 is ``guided``, phi = 1 the fully rescaled prediction.
    The ratio r is the same for scores and for noise predictions (eps = -sigma_t s), so rescaling
    scores equals rescaling eps and converting; it is not the same for x0 or v predictions.

    Parameters
    ----------
    guided, cond
        (batch, *event) tensors of the same shape, at least 2 event entries per sample. A
        sample whose ``guided`` is constant over its event (std 0) is returned unchanged.
    phi
        The mixing factor in [0, 1] (Lin et al. use 0.7).
    """
    phi = check_real("phi", phi, 0.0, 1.0)
    if not isinstance(guided, Tensor) or not isinstance(cond, Tensor):
        raise TypeError("guided and cond must be tensors")
    if guided.shape != cond.shape:
        raise ValueError(
            f"guided and cond must have the same shape, got {tuple(guided.shape)} and "
            f"{tuple(cond.shape)}"
        )
    if guided.dim() < 2 or guided[0].numel() < 2:
        raise ValueError(
            "guidance rescale needs a per-sample std: shape (batch, *event) with at least 2 "
            f"event entries, got {tuple(guided.shape)}"
        )
    dims = list(range(1, guided.dim()))
    std_g = guided.std(dim=dims, keepdim=True)
    # A sample whose guided prediction is constant over its event (std 0, e.g. a zero-initialised
    # network) is left as it is instead of becoming 0/0 = NaN (a device-side select, no sync).
    flat = std_g == 0
    ratio = cond.std(dim=dims, keepdim=True) / torch.where(flat, 1.0, std_g)
    return guided * torch.where(flat, 1.0, phi * ratio + (1.0 - phi))
