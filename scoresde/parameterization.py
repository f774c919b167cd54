"""What a network may predict and the conversions between them: the one place they live.

With x_t = alpha x0 + sigma eps (the SDE's marginal, eps ~ N(0, I)) the score, eps, x0 and v are
linear functions of each other given x_t:

    score = -eps / sigma                          (Song et al. 2021, Eq. 7 / Ho et al. 2020)
    x0    = (x + sigma^2 score) / alpha           (Tweedie's formula: E[x0 | x_t]; Efron 2011)
    v     = alpha eps - sigma x0                  (Salimans & Ho 2022, Sec. 4), so with
            r = alpha^2 + sigma^2:  x0 = (alpha x - sigma v) / r,  eps = (sigma x + alpha v) / r,

and the probability-flow ODE's velocity is u = f(t) x - g(t)^2 score / 2 (Song et al. Eq. 13).
alpha and sigma are 0-d or (batch,) float64 tensors of the marginal at the sample's time
(``sde.marginal``, ``sde.coeffs``), reshaped to broadcast over x's event dims and cast to x's dtype.
"""

from __future__ import annotations

from torch import Tensor

from .sde import SDE, TimeLike, batch_coeff
from .validation import check_choice

#: What ``ScoreModel``'s network may predict.
PARAMETERIZATIONS = ("eps", "score", "x0", "v")


def tweedie_x0(x: Tensor, score: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie's x0 = E[x0 | x_t = x] = (x + sigma^2 score) / alpha (Efron 2011, Eq. 2.8).

    sigma^2 is formed in the schedule's float64 before the cast to x's dtype.
    """
    return (x + batch_coeff(sigma**2, x) * score) / batch_coeff(alpha, x)


def velocity(sde: SDE, x: Tensor, t: TimeLike, score: Tensor) -> Tensor:
    """The probability-flow ODE velocity u(x, t) = f(t) x - g(t)^2 score / 2 (Song et al. Eq. 13):
    the field a flow-matching model learns, and d x_t / dt along the exact flow map."""
    return sde.reverse_drift(x, t, score, 0.5)


def score_from_prediction(
    pred: Tensor, parameterization: str, x: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """The score implied by a network output ``pred`` of the given kind at x_t = x."""
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
    raise ValueError(
        f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
    )


def prediction_from_score(
    score: Tensor, parameterization: str, x: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """Inverse of ``score_from_prediction``: what a network of that kind should output."""
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    a, s = batch_coeff(alpha, x), batch_coeff(sigma, x)
    if parameterization == "score":
        return score
    eps = -s * score
    if parameterization == "eps":
        return eps
    x0 = tweedie_x0(x, score, alpha, sigma)
    return x0 if parameterization == "x0" else a * eps - s * x0


def regression_target(
    parameterization: str, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """The exact prediction for x_t = alpha x0 + sigma noise, given x0 (a DSM regression target)."""
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    a, s = batch_coeff(alpha, x0), batch_coeff(sigma, x0)
    targets = {"eps": noise, "score": -noise / s, "x0": x0, "v": a * noise - s * x0}
    return targets[parameterization]
