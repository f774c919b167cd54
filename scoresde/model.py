"""ScoreModel: a network plus the SDE, read as a score function.

A network may predict eps, the score, x0 or v. With x_t = alpha x0 + sigma eps (the SDE's marginal),
the four are linear functions of each other given x_t — the one place those identities live:

    score = -eps / sigma                          (Song et al. 2021, Eq. 7 / Ho et al. 2020)
    score = (alpha x0 - x) / sigma^2              (Tweedie's formula)
    v     = alpha eps - sigma x0                  (Salimans & Ho 2022, Sec. 4), so with
            r = alpha^2 + sigma^2:  x0 = (alpha x - sigma v) / r,  eps = (sigma x + alpha v) / r.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .sde import SDE, batch_coeff
from .validation import check_choice, check_instance, check_times

PARAMETERIZATIONS = ("eps", "score", "x0", "v")


def score_from_prediction(
    pred: Tensor, parameterization: str, x: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """The score implied by a network output ``pred`` of the given kind at x_t = x.

    alpha and sigma are 0-d or (batch,) tensors of the marginal at the sample's time.
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
    raise ValueError(
        f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
    )


def prediction_from_score(
    score: Tensor, parameterization: str, x: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """Inverse of ``score_from_prediction``: what a network of that kind should output."""
    a, s = batch_coeff(alpha, x), batch_coeff(sigma, x)
    eps = -s * score
    x0 = (x + s**2 * score) / a
    preds = {"score": score, "eps": eps, "x0": x0, "v": a * eps - s * x0}
    if parameterization not in preds:
        raise ValueError(
            f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
        )
    return preds[parameterization]


def regression_target(
    parameterization: str, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor
) -> Tensor:
    """The exact prediction for x_t = alpha x0 + sigma noise, given x0 (a DSM regression target)."""
    a, s = batch_coeff(alpha, x0), batch_coeff(sigma, x0)
    targets = {"eps": noise, "score": -noise / s, "x0": x0, "v": a * noise - s * x0}
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    return targets[parameterization]


class ScoreModel(nn.Module):
    """``model(x, t, y=None)`` returns the score of p_t at x, whatever the network predicts.

    Parameters
    ----------
    net
        Module with ``net(x, t, y=None) -> Tensor`` of x's shape; t is ``(batch,)`` in [0, T].
    sde
        The forward SDE, which supplies alpha_t and sigma_t for the conversion.
    parameterization
        What ``net`` predicts: "eps" (default), "score", "x0" or "v".
    """

    def __init__(self, net: nn.Module, sde: SDE, parameterization: str = "eps"):
        super().__init__()
        self.net = check_instance("net", net, nn.Module)
        self.sde = check_instance("sde", sde, SDE)
        self.parameterization = check_choice(
            "parameterization", parameterization, PARAMETERIZATIONS
        )

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        tt = t.to(torch.float64)
        return torch.exp(self.sde._log_alpha(tt)), torch.exp(self.sde._log_sigma(tt))

    def prediction(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The raw network output."""
        t = _batch_time(check_times("t", t, self.sde.T), x)
        return self.net(x, t, y) if y is not None else self.net(x, t)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = _batch_time(check_times("t", t, self.sde.T), x)
        alpha, sigma = self.marginal(t)
        return score_from_prediction(
            self.prediction(x, t, y), self.parameterization, x, alpha, sigma
        )


def _batch_time(t, x: Tensor) -> Tensor:
    # A Python float goes straight to x's dtype (as_tensor would round it through float32).
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    t = torch.tensor(float(t), dtype=x.dtype) if not isinstance(t, Tensor) else t
    t = t.to(device=x.device)
    t = t.expand(x.shape[0]) if t.dim() == 0 else t
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.to(x.dtype)
