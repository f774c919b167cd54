"""Beta schedules of the VP and sub-VP SDEs (beta(t), its integral B(t), the inverse of B), and
``ScheduleCoeffs``, every schedule quantity of an SDE at a grid of times (``SDE.coeffs``).

``VPSDE`` and ``SubVPSDE`` take ``schedule="linear"`` (Song et al. 2021, Eq. 32),
``"scaled_linear"`` (linear in sqrt(beta), Stable Diffusion's), ``"cosine"``
(Nichol & Dhariwal 2021, Eq. 17), ``"polynomial"`` (Hoogeboom et al. 2022) or ``"sigmoid"``
(Chen 2023; Jabri et al. 2023); each schedule works on float64 tensors and also gives the betas
of its N-step discrete chain. Re-exported from ``scoresde.sde`` and ``scoresde``.

The last three have alpha_bar(1) = 0 (beta -> inf at t = 1). Their discrete chains clip beta at
0.999 (Nichol & Dhariwal's ``betas_for_alpha_bar``); in continuous time they end at T where
beta(T) = 0.999 * n_train (999), the continuous analogue of the clip (as Lu et al.'s DPM-Solver
code does for the cosine schedule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import check_choice, check_int, check_positive, check_real

SCHEDULES = ("linear", "scaled_linear", "cosine", "polynomial", "sigmoid")
#: Options each schedule takes through ``VPSDE(schedule=..., **options)`` (besides the betas).
SCHEDULE_OPTIONS = {
    "linear": (),
    "scaled_linear": (),
    "cosine": ("s", "beta_clip"),
    "polynomial": ("power", "beta_clip"),
    "sigmoid": ("start", "end", "tau", "beta_clip"),
}


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


def check_beta_range(beta_min: float, beta_max: float) -> tuple[float, float]:
    """(beta_min, beta_max), both > 0 and beta_min <= beta_max, else a ValueError."""
    lo, hi = check_positive("beta_min", beta_min), check_positive("beta_max", beta_max)
    if hi < lo:
        raise ValueError(
            f"beta_max must be >= beta_min, got beta_min={beta_min}, beta_max={beta_max}"
        )
    return lo, hi


class LinearSchedule:
    r"""beta(t) = beta_min + t (beta_max - beta_min) on [0, 1] (Song et al. 2021, Eq. 32).

    ``integral(t)`` is B(t) = \int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = check_beta_range(beta_min, beta_max)
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


class ScaledLinearSchedule:
    r"""beta(t) = (sqrt(beta_min) + t (sqrt(beta_max) - sqrt(beta_min)))^2: linear in sqrt(beta).

    The continuous-time form of the "scaled_linear" betas of Stable Diffusion (Rombach et al.
    2022; diffusers' ``betas = linspace(sqrt(beta_start), sqrt(beta_end), N)**2``): with
    beta_min = N beta_start and beta_max = N beta_end, ``discrete_betas(N)`` is that chain, as
    ``LinearSchedule``'s is DDPM's. With a = sqrt(beta_min), d = sqrt(beta_max) - a,
    B(t) = \int_0^t beta = ((a + d t)^3 - a^3) / (3 d) = t (a^2 + a d t + d^2 t^2 / 3).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = check_beta_range(beta_min, beta_max)
        self._a = math.sqrt(self.beta_min)
        self._d = math.sqrt(self.beta_max) - self._a
        self.T = 1.0  # the default horizon; beta(t) stays defined beyond it
        self.t_max = math.inf

    def beta(self, t: Tensor) -> Tensor:
        return (self._a + self._d * t) ** 2

    def integral(self, t: Tensor) -> Tensor:
        a, d = self._a, self._d
        return t * (a * a + a * d * t + (d * d / 3.0) * t**2)

    def inverse_integral(self, b: Tensor) -> Tensor:
        # (a + d t)^3 = a^3 + 3 d b; with u = cbrt(a^3 + 3 d b), t = (u - a) / d written as
        # 3 b / (u^2 + u a + a^2) (u^3 - a^3 factored): no cancellation at small b, and d = 0 works.
        a = self._a
        u = torch.pow(a**3 + 3.0 * self._d * b, 1.0 / 3.0)
        return 3.0 * b / (u * u + u * a + a * a)

    def discrete_betas(self, n: int) -> Tensor:
        # Stable Diffusion's chain: beta_i = linspace(sqrt(beta_min / N), sqrt(beta_max / N), N)^2.
        lo, hi = math.sqrt(self.beta_min / n), math.sqrt(self.beta_max / n)
        return torch.linspace(lo, hi, n, dtype=torch.float64) ** 2

    def config(self) -> dict:
        return {"schedule": "scaled_linear", "beta_min": self.beta_min, "beta_max": self.beta_max}


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


def _clipped_betas(log_alpha_bar: Tensor, beta_clip: float) -> Tensor:
    """beta_i = 1 - alpha_bar(i/n) / alpha_bar((i-1)/n), clipped at ``beta_clip`` (Nichol &
    Dhariwal 2021, Eq. 17; their ``betas_for_alpha_bar``), from log alpha_bar at i/n, i = 0..n."""
    return (-torch.expm1(log_alpha_bar[1:] - log_alpha_bar[:-1])).clamp(max=beta_clip)


def _time_where_beta_reaches(beta, value: float) -> float:
    """The t in (0, 1) with beta(t) = value, for a beta increasing to +inf at t = 1 (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (
            (mid, hi) if float(beta(torch.tensor(mid, dtype=torch.float64))) < value else (lo, mid)
        )
    return lo


class PolynomialSchedule:
    r"""alpha_bar(t) = (1 - t^p)^2: the polynomial schedule of Hoogeboom et al. 2022 ("Equivariant
    Diffusion for Molecule Generation in 3D"; their code's ``polynomial_schedule``, alphas2 =
    (1 - x^power)^2 with the step ratio clipped at 0.001, used as "polynomial_2"), in continuous
    time and without their precision shift alpha_bar -> (1 - 2s) alpha_bar + s, so that
    alpha_bar(0) = 1 as an SDE's marginal needs.

    B(t) = -log alpha_bar = -2 log(1 - t^p), beta(t) = 2 p t^(p-1) / (1 - t^p) (p >= 1 keeps beta
    finite at 0), B^-1(b) = (1 - e^(-b/2))^(1/p). T ends where beta(T) = 999 (see the module).
    """

    def __init__(self, power: float = 2.0, beta_clip: float = 0.999, n_train: int = 1000):
        self.power = check_real("power", power, 1.0, 10.0)
        self.beta_clip = check_real("beta_clip", beta_clip, 0, 1, lo_open=True, hi_open=True)
        self.n_train = check_int("n_train", n_train, 1)
        self.T = self.t_max = _time_where_beta_reaches(self.beta, self.beta_clip * self.n_train)

    def beta(self, t: Tensor) -> Tensor:
        p = self.power
        return 2 * p * t ** (p - 1) / -torch.expm1(p * torch.log(t)) if p != 1 else 2 / (1 - t)

    def integral(self, t: Tensor) -> Tensor:
        # log(1 - t^p): log1p(-t^p) where t^p is small, log(-expm1(p log t)) near t = 1.
        tp = t**self.power
        near_one = torch.log(-torch.expm1(self.power * torch.log(t.clamp(min=0.5))))
        return -2 * torch.where(tp < 0.5, torch.log1p(-tp), near_one)

    def inverse_integral(self, b: Tensor) -> Tensor:
        return (-torch.expm1(-0.5 * b)) ** (1 / self.power)

    def discrete_betas(self, n: int) -> Tensor:
        t = torch.arange(n + 1, dtype=torch.float64) / n
        return _clipped_betas(-self.integral(t), self.beta_clip)

    def config(self) -> dict:
        return {"schedule": "polynomial", "power": self.power, "beta_clip": self.beta_clip}


class SigmoidSchedule:
    r"""The sigmoid schedule of Chen 2023 ("On the importance of noise scheduling for diffusion
    models", Alg. 1; used by Jabri, Fleet & Chen 2023, RIN), alpha_bar(t) = gamma(t) with
    v(t) = sigmoid((t (end - start) + start) / tau),
    gamma(t) = (v(1) - v(t)) / (v(1) - v(0)).

    B(t) = -log gamma = -log1p(-(v(t) - v(0)) / (v(1) - v(0))) and
    beta(t) = v (1 - v) k / (v(1) - v) with k = (end - start)/tau; differences of sigmoids are
    formed as sinh(d/2) / (2 cosh(a/2) cosh(b/2)) (exact: no cancellation near t = 0 or 1).
    Chen's clip gamma >= 1e-9 is replaced by the end T where beta(T) = 999 (see the module),
    gamma(T) ~ 3e-4 with the defaults
    (start, end, tau) = (-3, 3, 1), the paper's.
    """

    def __init__(
        self,
        start: float = -3.0,
        end: float = 3.0,
        tau: float = 1.0,
        beta_clip: float = 0.999,
        n_train: int = 1000,
    ):
        self.start, self.end = check_real("start", start), check_real("end", end)
        if self.end <= self.start:
            raise ValueError(f"end must be > start, got start={start}, end={end}")
        self.tau = check_positive("tau", tau)
        self.beta_clip = check_real("beta_clip", beta_clip, 0, 1, lo_open=True, hi_open=True)
        self.n_train = check_int("n_train", n_train, 1)
        self._u0, self._u1 = self.start / self.tau, self.end / self.tau
        self._k = self._u1 - self._u0
        self._v0 = 1 / (1 + math.exp(-self._u0))
        self._range = _sigmoid_difference(self._k, self._u1, self._u0)  # v(1) - v(0)
        self.T = self.t_max = _time_where_beta_reaches(self.beta, self.beta_clip * self.n_train)

    def _u(self, t: Tensor) -> Tensor:
        return self._u0 + t * self._k

    def beta(self, t: Tensor) -> Tensor:
        u = self._u(t)
        v = torch.sigmoid(u)
        return v * (1 - v) * self._k / _sigmoid_difference((1 - t) * self._k, self._u1, u)

    def integral(self, t: Tensor) -> Tensor:
        rise = _sigmoid_difference(t * self._k, self._u(t), self._u0)  # v(t) - v(0)
        return -torch.log1p(-rise / self._range)

    def inverse_integral(self, b: Tensor) -> Tensor:
        # v(t) - v(0) = D = (1 - e^-b)(v(1) - v(0)); u - u0 = logit(v0 + D) - logit(v0), written
        # as log1p(D / v0) - log1p(-D / (1 - v0)) so that b -> 0 gives t -> 0 without cancellation.
        d = -torch.expm1(-b) * self._range
        return (torch.log1p(d / self._v0) - torch.log1p(-d / (1 - self._v0))) / self._k

    def discrete_betas(self, n: int) -> Tensor:
        t = torch.arange(n + 1, dtype=torch.float64) / n
        return _clipped_betas(-self.integral(t), self.beta_clip)

    def config(self) -> dict:
        return {
            "schedule": "sigmoid",
            "start": self.start,
            "end": self.end,
            "tau": self.tau,
            "beta_clip": self.beta_clip,
        }


def _sigmoid_difference(d, a, b):
    """sigmoid(a) - sigmoid(b) for d = a - b: sinh(d/2) / (2 cosh(a/2) cosh(b/2)), exact."""
    if isinstance(d, Tensor) or isinstance(a, Tensor) or isinstance(b, Tensor):
        d, a, b = (torch.as_tensor(z, dtype=torch.float64) for z in (d, a, b))
        return torch.sinh(d / 2) / (2 * torch.cosh(a / 2) * torch.cosh(b / 2))
    return math.sinh(d / 2) / (2 * math.cosh(a / 2) * math.cosh(b / 2))


def make_schedule(
    schedule: str, beta_min: float, beta_max: float, **options
) -> LinearSchedule | ScaledLinearSchedule | CosineSchedule | PolynomialSchedule | SigmoidSchedule:
    """The schedule named ``schedule`` (one of ``SCHEDULES``) with its ``SCHEDULE_OPTIONS``; only
    the linear and scaled-linear ones take the betas."""
    check_choice("schedule", schedule, SCHEDULES)
    unknown = sorted(set(options) - set(SCHEDULE_OPTIONS[schedule]))
    if unknown:
        raise ValueError(
            f"schedule {schedule!r} got unknown option(s) {unknown}; "
            f"it accepts {list(SCHEDULE_OPTIONS[schedule]) or 'no options'}"
        )
    if schedule == "linear":
        return LinearSchedule(beta_min, beta_max)
    if schedule == "scaled_linear":
        return ScaledLinearSchedule(beta_min, beta_max)
    cls = {"cosine": CosineSchedule, "polynomial": PolynomialSchedule, "sigmoid": SigmoidSchedule}
    return cls[schedule](**options)
