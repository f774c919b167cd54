"""Guidance: classifier-free, classifier and composed guidance as score combinators.

Every guidance combinator returns a plain ``score_fn(x, t)``, so every solver of ``sample`` runs
guided sampling unchanged. (Inpainting is in ``inpainting.py`` and ``smc.py``; the noisy
classifier is ``nets.NoisyClassifier``, trained by ``training.train_classifier``.)

Of score functions (``combinators.py``), one call per branch:

    classifier_free_guidance(s_c, s_u, scale=w)    s_u + w (s_c - s_u)     (Ho & Salimans 2022)
    classifier_guidance(s, log p_t(y|x), scale=w)   s + w grad_x log p_t(y | x)  (Song et al. 2021)
    classifier_log_prob(classifier, y)              log p_phi(y | x, t) for classifier_guidance
    negative_guidance(s_c, s_neg, scale=w)          s_c + w (s_c - s_neg)   (negative prompts)
    multi_condition_guidance(s_u, [s_k], [w_k])     s_u + sum_k w_k (s_k - s_u)  (Liu et al. 2022)
    guidance_rescale(guided, cond, phi)             rescale to cond's std  (Lin et al. 2024)

Of a class-conditional network (``conditional.py``), all branches in one batched call:

    cfg_score_fn(model, y, scale=w)                 classifier_free_guidance, labels [y, null]
    negative_score_fn(model, y, y_neg, scale=w)     negative_guidance, labels [y, y_neg]
    multi_condition_score_fn(model, [y_k], [w_k])   multi_condition_guidance, [null, y_1..y_K]

Every ``scale`` may be a number or a schedule w(t) (``schedules.py``): a callable from the
(batch,) times to a number or a (batch,) tensor (``constant_scale``, ``linear_scale``,
``cosine_scale``, ``interval_scale`` build the common ones). It is evaluated on the device, once
per call.

With w > 1 neither guidance samples p(x | y)^w p(x)^(1-w): the guided score is the gradient of
p_t(x | y)^w p_t(x)^(1-w) at every t, but that family is not the diffusion of its t = 0 member
(docs/guidance.md measures how far the samples land from the tilted density).
"""

from .combinators import (
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob,
    guidance_rescale,
    multi_condition_guidance,
    negative_guidance,
)
from .conditional import cfg_score_fn, multi_condition_score_fn, negative_score_fn
from .schedules import Scale, constant_scale, cosine_scale, interval_scale, linear_scale

__all__ = [
    "Scale",
    "constant_scale",
    "linear_scale",
    "cosine_scale",
    "interval_scale",
    "classifier_free_guidance",
    "cfg_score_fn",
    "classifier_guidance",
    "classifier_log_prob",
    "negative_guidance",
    "multi_condition_guidance",
    "negative_score_fn",
    "multi_condition_score_fn",
    "guidance_rescale",
]
