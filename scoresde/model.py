"""ScoreModel: a network plus the SDE, read as a score function.

A network may predict eps, the score, x0, v or the flow-matching velocity; the conversions between
them are in ``scoresde.parameterization`` (re-exported here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .parameterization import (
    PARAMETERIZATIONS,
    prediction_from_score,
    regression_target,
    score_from_prediction,
    velocity_from_prediction,
)
from .sde import SDE
from .validation import batch_time, check_choice, check_instance, check_times

__all__ = [
    "PARAMETERIZATIONS",
    "ScoreModel",
    "prediction_from_score",
    "regression_target",
    "score_from_prediction",
    "velocity_from_prediction",
]


class ScoreModel(nn.Module):
    """``model(x, t, y=None)`` returns the score of p_t at x, whatever the network predicts.

    Parameters
    ----------
    net
        Module with ``net(x, t, y=None) -> Tensor`` of x's shape; t is ``(batch,)`` in [0, T].
    sde
        The forward SDE, which supplies alpha_t and sigma_t for the conversion.
    parameterization
        What ``net`` predicts: "eps" (default), "score", "x0", "v" or "velocity" (the PF-ODE
        velocity u = f x - g^2 score / 2 that flow matching regresses; its score
        2 (f x - u) / g^2 is undefined where g(t)^2 = 0).
    """

    def __init__(self, net: nn.Module, sde: SDE, parameterization: str = "eps"):
        super().__init__()
        self.net = check_instance("net", net, nn.Module)
        self.sde = check_instance("sde", sde, SDE)
        self.parameterization = check_choice(
            "parameterization", parameterization, PARAMETERIZATIONS
        )

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) in float64 at the (batch,) times t."""
        return self.sde.marginal(t.to(torch.float64))

    def prediction(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The raw network output."""
        t = _batch_time(check_times("t", t, self.sde.T), x)
        return self.net(x, t, y) if y is not None else self.net(x, t)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, *, output: str = "score"
    ) -> Tensor:
        """The score at (x, t), or with ``output="velocity"`` the PF-ODE velocity
        u = f x - g^2 score / 2 (Song et al. Eq. 13) the network implies: its raw output for the
        ``"velocity"`` parameterization (no division by g^2), a conversion for the others. A
        keyword of ``forward`` so that a DDP-wrapped model all-reduces either output's gradients.
        """
        check_choice("output", output, ("score", "velocity"))
        t = _batch_time(check_times("t", t, self.sde.T), x)
        alpha, sigma = self.marginal(t)
        pred = self.prediction(x, t, y)
        if output == "score" and self.parameterization != "velocity":
            return score_from_prediction(pred, self.parameterization, x, alpha, sigma)
        t64 = t.to(torch.float64)
        f, g2 = self.sde.f(t64), self.sde.g2(t64)
        if output == "score":
            return score_from_prediction(pred, "velocity", x, alpha, sigma, f=f, g2=g2)
        return velocity_from_prediction(pred, self.parameterization, x, alpha, sigma, f=f, g2=g2)

    def velocity(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``self(x, t, y, output="velocity")``: the PF-ODE velocity at (x, t)."""
        return self(x, t, y, output="velocity")


def _batch_time(t, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    return batch_time(t, x)
