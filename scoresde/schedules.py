"""Beta schedules of the VP and sub-VP SDEs (beta(t), its integral B(t), the inverse of B), and
``ScheduleCoeffs``, every schedule quantity of an SDE at a grid of times (``SDE.coeffs``).

``VPSDE`` and ``SubVPSDE`` take ``schedule="linear"`` (Song et al. 2021, Eq. 32) or ``"cosine"``
(Nichol & Dhariwal 2021, Eq. 17); each schedule works on float64 tensors and also gives the betas
of its N-step discrete chain. Re-exported from ``scoresde.sde`` and ``scoresde``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import check_choice, check_int, check_positive, check_real

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True, eq=False)  # tensors: == would be elementwise
class ScheduleCoeffs:
    """Every schedule quantity at the times ``t`` (float64, t's shape): see ``SDE.coeffs``.

    alpha = exp(log_alpha), sigma = exp(log_sigma), log_snr = log_alpha - log_sigma (lambda_t of
    Lu et al. 2022), and the SDE's f(t) and g(t)^2.
    """

    t: Tensor
    log_alpha: Tensor
    log_sigma: Tensor
    alpha: Tensor
    sigma: Tensor
    log_snr: Tensor
    f: Tensor
    g2: Tensor


class LinearSchedule:
    r"""beta(t) = beta_min + t (beta_max - beta_min) on [0, 1] (Song et al. 2021, Eq. 32).

    ``integral(t)`` is B(t) = \int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(
                f"beta_max must be >= beta_min, got beta_min={beta_min}, beta_max={beta_max}"
            )
        self.T = 1.0  # the default horizon; beta(t) stays defined (linear) beyond it
        self.t_max = math.inf

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def inverse_integral(self, b: Tensor) -> Tensor:
        # Root of (d/2) t^2 + beta_min t - b = 0, written without cancellation.
        d = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * b))

    def discrete_betas(self, n: int) -> Tensor:
        # DDPM's N-step discretisation: beta_i = beta(t_i) / N at t_i = i/(N-1) (Ho et al. 2020).
        return torch.linspace(self.beta_min / n, self.beta_max / n, n, dtype=torch.float64)

    def config(self) -> dict:
        return {"schedule": "linear", "beta_min": self.beta_min, "beta_max": self.beta_max}


class CosineSchedule:
    r"""The cosine schedule of Nichol & Dhariwal 2021 (Eq. 17), in continuous time.

    alpha_bar(t) = f(t) / f(0) with f(t) = cos^2(((t + s)/(1 + s)) pi/2), so the marginal matches
    the paper's alpha_bar exactly;
    beta(t) = -d log alpha_bar / dt = pi/(1+s) tan(((t+s)/(1+s)) pi/2).
    The paper clips the discrete beta_t at 0.999 to avoid the singularity at t = 1; the continuous
    analogue (as in Lu et al.'s DPM-Solver code) ends time at T where beta(T) = 1000 * 0.999, i.e.
    T ~ 0.998, so beta never exceeds the clipped value.
    """

    def __init__(self, s: float = 0.008, beta_clip: float = 0.999, n_train: int = 1000):
        self.s = s = check_positive("s", s)
        self.beta_clip = beta_clip = check_real(
            "beta_clip", beta_clip, 0, 1, lo_open=True, hi_open=True
        )
        self.n_train = n_train = check_int("n_train", n_train, 1)
        beta_max = beta_clip * n_train
        self.T = math.atan(beta_max * (1 + s) / math.pi) * 2 * (1 + s) / math.pi - s
        self.t_max = self.T
        self._a0 = s / (1 + s) * math.pi / 2
        self._tan_a0 = math.tan(self._a0)

    def _angle(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def beta(self, t: Tensor) -> Tensor:
        return math.pi / (1 + self.s) * torch.tan(self._angle(t))

    def integral(self, t: Tensor) -> Tensor:
        # B(t) = -2 log(cos(a0 + d) / cos(a0)) with d = a(t) - a0, and
        # cos(a0 + d) / cos(a0) = 1 - 2 sin^2(d/2) - tan(a0) sin(d): B(0) = 0 exactly (a difference
        # of logs rounds to -1e-17 there, and sigma = sqrt(-expm1(-B)) became NaN).
        d = t / (1 + self.s) * (math.pi / 2)
        return -2 * torch.log1p(-2 * torch.sin(d / 2) ** 2 - self._tan_a0 * torch.sin(d))

    def inverse_integral(self, b: Tensor) -> Tensor:
        # d = arccos(c r) - arccos(c) with c = cos(a0), r = exp(-b/2), in the cancellation-free form
        # d = arcsin(c (1 - r^2) / (sqrt(1 - c^2 r^2) + r sin(a0))): inverse_integral(0) = 0 exactly
        # (arccos(...) - s gave t = -2e-15, a negative time where sigma is NaN).
        c, sin_a0 = math.cos(self._a0), math.sin(self._a0)
        r = torch.exp(-0.5 * b)
        d = torch.arcsin(c * -torch.expm1(-b) / (torch.sqrt(1 - (c * r) ** 2) + r * sin_a0))
        return d * (2 * (1 + self.s) / math.pi)

    def discrete_betas(self, n: int) -> Tensor:
        # Nichol & Dhariwal Eq. 17: beta_i = 1 - alpha_bar(i/n) / alpha_bar((i-1)/n), clipped.
        t = torch.arange(n + 1, dtype=torch.float64) / n
        log_f = 2 * torch.log(torch.cos(self._angle(t)))
        betas = -torch.expm1(log_f[1:] - log_f[:-1])
        return betas.clamp(max=self.beta_clip)

    def config(self) -> dict:
        return {"schedule": "cosine", "s": self.s, "beta_clip": self.beta_clip}


def make_schedule(
    schedule: str, beta_min: float, beta_max: float
) -> LinearSchedule | CosineSchedule:
    """The schedule named ``schedule`` (one of ``SCHEDULES``); the cosine one takes no betas."""
    if check_choice("schedule", schedule, SCHEDULES) == "linear":
        return LinearSchedule(beta_min, beta_max)
    return CosineSchedule()
