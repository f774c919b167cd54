"""Bridge to torchsde: integrate our forward or reverse SDEs with any torchsde method."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sde import SDE, ReverseSDE, as_time, batch_coeff

__all__ = ["TorchsdeSDE", "to_torchsde"]


class TorchsdeSDE(torch.nn.Module):
    """An object ``torchsde.sdeint`` accepts (``noise_type="diagonal"``, ``sde_type="ito"``).

    Wraps a forward :class:`~scoresde.sde.SDE` (time runs forward, s = t) or a
    :class:`~scoresde.sde.ReverseSDE`, which torchsde integrates in reversed time s = T - t:
    y(s) = x(T - s) solves dy = -[f - g^2 score](y, T - s) ds + g(T - s) dW_s (Anderson 1982).
    torchsde works on (batch, d) states, so events are flattened and reshaped around each call.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde: SDE | ReverseSDE, event_shape: tuple[int, ...]):
        super().__init__()
        self.target = sde
        self.event_shape = tuple(event_shape)
        self.reverse = isinstance(sde, ReverseSDE)

    def _time(self, s: Tensor) -> Tensor:
        s = as_time(s)
        return self.target.T - s if self.reverse else s

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x = y.reshape(y.shape[0], *self.event_shape)
        drift = self.target.drift(x, self._time(s).to(y.device))
        return (-drift if self.reverse else drift).reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        g = self.target.diffusion(self._time(s)).to(device=y.device)
        return batch_coeff(g, y).expand_as(y).contiguous()


def to_torchsde(sde: SDE | ReverseSDE, event_shape: tuple[int, ...]) -> TorchsdeSDE:
    """Wrap ``sde`` (forward) or ``sde.reverse(score_fn)`` for ``torchsde.sdeint``.

    For a reverse SDE, integrate over s in [0, T - eps] from y(0) = x_T; y(s) approximates x_{T-s}.
    """
    return TorchsdeSDE(sde, event_shape)
