"""ScoreModel: a network plus the SDE, read as a score function.

A network may predict eps, the score, x0 or v; the conversions between them are in
``scoresde.parameterization`` (re-exported here).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .parameterization import (
    PARAMETERIZATIONS,
    prediction_from_score,
    regression_target,
    score_from_prediction,
)
from .sde import SDE
from .validation import batch_time, check_choice, check_instance, check_times

__all__ = [
    "PARAMETERIZATIONS",
    "ScoreModel",
    "prediction_from_score",
    "regression_target",
    "score_from_prediction",
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
        """(alpha_t, sigma_t) in float64 at the (batch,) times t."""
        return self.sde.marginal(t.to(torch.float64))

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
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    return batch_time(t, x)
