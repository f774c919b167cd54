"""What a network may predict and the conversions between them: the one place they live.

With x_t = alpha x0 + sigma eps (the SDE's marginal, eps ~ N(0, I)) the score, eps, x0 and v are
linear functions of each other given x_t:

    score = -eps / sigma                          (Song et al. 2021, Eq. 7 / Ho et al. 2020)
    x0    = (x + sigma^2 score) / alpha           (Tweedie's formula: E[x0 | x_t]; Efron 2011)
    v     = alpha eps - sigma x0                  (Salimans & Ho 2022, Sec. 4), so with
            r = alpha^2 + sigma^2:  x0 = (alpha x - sigma v) / r,  eps = (sigma x + alpha v) / r,

and the probability-flow ODE's velocity is u = f(t) x - g(t)^2 score / 2 (Song et al. Eq. 13).
A "velocity" network predicts u, the flow-matching target: with alpha' = f alpha and
sigma' = (g^2 + 2 f sigma^2) / (2 sigma) (f = d log alpha/dt, g^2 = d sigma^2/dt - 2 f sigma^2),

    u = alpha' x0 + sigma' eps = f x + g^2 eps / (2 sigma)     (Lipman et al. 2023, Eq. 23)
    score = 2 (f x - u) / g^2,

so the velocity conversions also need f(t) and g(t)^2 (keyword arguments ``f``, ``g2``: float64,
``sde.f(t)``, ``sde.g2(t)`` or ``sde.coeffs(t)``). Where g^2 = 0 (``RectifiedFlow`` at t = 0) a
velocity determines no score: the division gives inf/NaN there, as eps -> score does at sigma = 0;
samplers and losses never evaluate t = 0.
alpha and sigma are 0-d or (batch,) float64 tensors of the marginal at the sample's time
(``sde.marginal``, ``sde.coeffs``), reshaped to broadcast over x's event dims and cast to x's dtype.
"""

from __future__ import annotations

from torch import Tensor

from .sde import SDE, TimeLike, batch_coeff
from .validation import check_choice

#: What ``ScoreModel``'s network may predict.
PARAMETERIZATIONS = ("eps", "score", "x0", "v", "velocity")


def tweedie_x0(x: Tensor, score: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie's x0 = E[x0 | x_t = x] = (x + sigma^2 score) / alpha (Efron 2011, Eq. 2.8).

    sigma^2 is formed in the schedule's float64 before the cast to x's dtype.
    """
    return (x + batch_coeff(sigma**2, x) * score) / batch_coeff(alpha, x)


def velocity(sde: SDE, x: Tensor, t: TimeLike, score: Tensor) -> Tensor:
    """The probability-flow ODE velocity u(x, t) = f(t) x - g(t)^2 score / 2 (Song et al. Eq. 13):
    the field a flow-matching model learns, and d x_t / dt along the exact flow map."""
    return sde.reverse_drift(x, t, score, 0.5)


def _need_f_g2(f: Tensor | None, g2: Tensor | None) -> tuple[Tensor, Tensor]:
    """f(t) and g(t)^2, which the velocity parameterization needs (and the others do not)."""
    if f is None or g2 is None:
        raise ValueError(
            'the "velocity" parameterization needs f and g2 (sde.f(t), sde.g2(t), float64)'
        )
    return f, g2


def _f_g2(f: Tensor | None, g2: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
    """f(t) and g(t)^2 reshaped for x."""
    f, g2 = _need_f_g2(f, g2)
    return batch_coeff(f, x), batch_coeff(g2, x)


def score_from_prediction(
    pred: Tensor,
    parameterization: str,
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    *,
    f: Tensor | None = None,
    g2: Tensor | None = None,
) -> Tensor:
    """The score implied by a network output ``pred`` of the given kind at x_t = x.

    ``f`` and ``g2`` (f(t), g(t)^2) are needed for ``"velocity"`` only: score = 2 (f x - u) / g^2.
    """
    a, s = batch_coeff(alpha, x), batch_coeff(sigma, x)
    if parameterization == "score":
        return pred
    if parameterization == "eps":
        return -pred / s
    if parameterization == "x0":
        return (a * pred - x) / s**2
    if parameterization == "v":
        eps = (s * x + a * pred) / (a**2 + s**2)
        return -eps / s
    if parameterization == "velocity":
        ff, gg = _f_g2(f, g2, x)
        return 2 * (ff * x - pred) / gg
    raise ValueError(
        f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
    )


def prediction_from_score(
    score: Tensor,
    parameterization: str,
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    *,
    f: Tensor | None = None,
    g2: Tensor | None = None,
) -> Tensor:
    """Inverse of ``score_from_prediction``: what a network of that kind should output.

    For ``"velocity"`` (needs ``f``, ``g2``) this is the PF-ODE drift u = f x - g^2 score / 2.
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    a, s = batch_coeff(alpha, x), batch_coeff(sigma, x)
    if parameterization == "score":
        return score
    if parameterization == "velocity":
        ff, gg = _f_g2(f, g2, x)
        return ff * x - 0.5 * gg * score
    eps = -s * score
    if parameterization == "eps":
        return eps
    x0 = tweedie_x0(x, score, alpha, sigma)
    return x0 if parameterization == "x0" else a * eps - s * x0


def velocity_from_prediction(
    pred: Tensor,
    parameterization: str,
    x: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    *,
    f: Tensor,
    g2: Tensor,
) -> Tensor:
    """The PF-ODE velocity u = f x - g^2 score / 2 implied by a network output of any kind (the
    output itself for ``"velocity"``, so no division by g^2): what flow matching regresses."""
    if parameterization == "velocity":
        return pred
    score = score_from_prediction(pred, parameterization, x, alpha, sigma)
    return prediction_from_score(score, "velocity", x, alpha, sigma, f=f, g2=g2)


def regression_target(
    parameterization: str,
    x0: Tensor,
    noise: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    *,
    f: Tensor | None = None,
    g2: Tensor | None = None,
) -> Tensor:
    """The exact prediction for x_t = alpha x0 + sigma noise, given x0 (a DSM regression target).

    For ``"velocity"`` (needs ``f``, ``g2``) the conditional flow-matching target
    u = alpha' x0 + sigma' noise with alpha' = f alpha, sigma' = (g^2 + 2 f sigma^2) / (2 sigma)
    (Lipman et al. 2023, Eq. 23; forward time): d x_t / dt along the pair's path. sigma' is
    0/0 where sigma = g^2 = 0 (``RectifiedFlow`` at t = 0): give t > 0.
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    a, s = batch_coeff(alpha, x0), batch_coeff(sigma, x0)
    if parameterization == "velocity":
        f, g2 = _need_f_g2(f, g2)
        # alpha' and sigma' formed in the schedule's float64, then cast.
        d_alpha = batch_coeff(f * alpha, x0)
        d_sigma = batch_coeff((g2 + 2 * f * sigma**2) / (2 * sigma), x0)
        return d_alpha * x0 + d_sigma * noise
    targets = {"eps": noise, "score": -noise / s, "x0": x0, "v": a * noise - s * x0}
    return targets[parameterization]
