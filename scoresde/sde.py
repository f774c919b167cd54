"""Forward SDEs of score-based diffusion and their reverse-time counterparts.

Every SDE here is linear, dx = f(t) x dt + g(t) dw, so its transition kernel from x0 is Gaussian,
p_0t(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", Eqs. 29, 33 and Appendix B). The two functions
``log alpha_t`` and ``sigma_t`` determine everything else:

    f(t)   = d log alpha_t / dt
    g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2

Schedule arithmetic runs in float64 and is cast to the caller's dtype at the end, so a float32
caller gets no round-off from the schedule itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# CosineSchedule and LinearSchedule are re-exported: they lived here before schedules.py.
from .schedules import CosineSchedule, LinearSchedule, ScheduleCoeffs, make_schedule  # noqa: F401
from .validation import (
    batch_time,
    check_bool,
    check_callable,
    check_device,
    check_float_dtype,
    check_generator,
    check_int,
    check_positive,
    check_real,
    check_shape,
    check_tensor,
    check_times,
)

ScoreFn = Callable[[Tensor, Tensor], Tensor]
TimeLike = float | Tensor


def _schedule_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everything else computes schedules in float64.
    return torch.float32 if device.type == "mps" else torch.float64


def as_time(t: TimeLike, device: torch.device | str | None = None) -> Tensor:
    """Return ``t`` as a float64 tensor (0-d or (batch,)) on ``device`` (default: t's own)."""
    if isinstance(t, Tensor):
        dev = torch.device(device) if device is not None else t.device
        if t.dim() > 1:
            raise ValueError(f"t must be a scalar or a (batch,) tensor, got shape {tuple(t.shape)}")
        return t.to(device=dev, dtype=_schedule_dtype(dev))
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.tensor(float(t), dtype=_schedule_dtype(dev), device=dev)


def _out_dtype(*tensors) -> torch.dtype:
    for a in tensors:
        if isinstance(a, Tensor) and a.is_floating_point():
            return a.dtype
    return torch.get_default_dtype()


def randn(
    shape, generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None
) -> Tensor:
    """Standard normal draws on ``device``, drawn on the generator's own device and moved there
    (a CPU generator cannot draw on CUDA), so one generator gives the same numbers anywhere."""
    dev = generator.device if generator is not None else device
    z = torch.randn(shape, generator=generator, device=dev, dtype=dtype)
    return z if device is None else z.to(device)


def batch_coeff(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a 0-d or (batch,) coefficient so it broadcasts over x's event dimensions."""
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(-1, *([1] * (x.dim() - 1))) if c.dim() == 1 else c


class SDE:
    """Base class of linear forward SDEs dx = f(t) x dt + g(t) dw on [0, T].

    Subclasses implement ``_log_alpha(t)``, ``_log_sigma(t)``, ``_f(t)``, ``_g2(t)`` and
    ``_t_from_log_snr(lam)`` on float64 tensors of checked times. Everything else uses the public
    primitives ``log_alpha``, ``log_sigma``, ``f``, ``g2`` and ``coeffs`` (all of them for a grid),
    float64, and ``log_snr``, ``t_from_log_snr`` (computed in float64, returned in the dtype of
    their argument), which check t and handle its device.
    """

    #: Short name (``SDE_CLASSES``, the command line's ``--sde``) and the label in tables/plots.
    name: str = ""
    label: str = ""

    #: Which discrete chain the ``ancestral`` solver follows: "ddpm", "smld" or None.
    ancestral_rule: str | None = None
    prior_std: float = 1.0
    #: Default time where sampling stops (Song et al.'s code: 1e-3 for VP/sub-VP, 1e-5 for VE).
    sampling_eps: float = 1e-3

    def __init__(self, T: float = 1.0):
        self.T = check_positive("T", T)

    def schedule_time(self, t: TimeLike, device=None, name: str = "t") -> Tensor:
        """``t`` checked (see ``check_times``) as a float64 tensor on ``device`` (default: t's).

        Numbers outside [0, T] are errors, not extrapolations of the schedule; tensors are checked
        for kind and shape only (no host sync), and a float64 tensor is returned as it is.
        """
        return as_time(check_times(name, t, self.T), device)

    # -- primitives (float64) -------------------------------------------------------------
    def _log_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _log_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _f(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _g2(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        raise NotImplementedError

    # -- public float64 primitives -------------------------------------------------------------
    def log_alpha(self, t: TimeLike) -> Tensor:
        """log alpha_t, float64 (Song et al. 2021, Eq. 29: the mean coefficient of p_0t)."""
        return self._log_alpha(self.schedule_time(t))

    def log_sigma(self, t: TimeLike) -> Tensor:
        """log sigma_t, float64 (the std of p_0t)."""
        return self._log_sigma(self.schedule_time(t))

    def f(self, t: TimeLike) -> Tensor:
        """f(t) = d log alpha_t / dt, float64: the drift is f(t) x."""
        return self._f(self.schedule_time(t))

    def g2(self, t: TimeLike) -> Tensor:
        """g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2, float64."""
        return self._g2(self.schedule_time(t))

    def coeffs(self, t: TimeLike) -> ScheduleCoeffs:
        """Every schedule quantity at the times ``t`` (e.g. a sampling grid), float64, once."""
        tt = self.schedule_time(t)
        log_alpha, log_sigma = self._log_alpha(tt), self._log_sigma(tt)
        return ScheduleCoeffs(
            t=tt,
            log_alpha=log_alpha,
            log_sigma=log_sigma,
            alpha=torch.exp(log_alpha),
            sigma=torch.exp(log_sigma),
            log_snr=log_alpha - log_sigma,
            f=self._f(tt),
            g2=self._g2(tt),
        )

    # -- public --------------------------------------------------------------------------------
    def marginal(self, t: TimeLike) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t): x_t = alpha_t x_0 + sigma_t z, z ~ N(0, I) (Song et al. Eq. 29).

        In t's floating dtype (a float64 tensor gives the float64 primitives exactly); a Python
        number gives torch's default dtype.
        """
        tt = self.schedule_time(t)
        dt = _out_dtype(t)
        return torch.exp(self._log_alpha(tt)).to(dt), torch.exp(self._log_sigma(tt)).to(dt)

    def marginal_prob(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean and std of p_0t(x_t | x_0); std is shaped to broadcast against x0."""
        check_tensor("x0", x0, min_dim=1)
        alpha, sigma = self.marginal(self.schedule_time(t, x0.device))
        return batch_coeff(alpha, x0) * x0, batch_coeff(sigma, x0)

    def log_snr(self, t: TimeLike) -> Tensor:
        """lambda_t = log(alpha_t / sigma_t), half the log-SNR (Lu et al. 2022, Sec. 3.1)."""
        tt = self.schedule_time(t)
        return (self._log_alpha(tt) - self._log_sigma(tt)).to(_out_dtype(t))

    def t_from_log_snr(self, lam: TimeLike) -> Tensor:
        """Inverse of ``log_snr``: the time t with lambda_t = lam (closed form)."""
        if not isinstance(lam, Tensor):
            check_real("lam", lam, finite=False)  # lam = +-inf are t = 0 and the limit t -> inf
        lt = as_time(lam)
        return self._t_from_log_snr(lt).to(_out_dtype(lam))

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        """f(x, t) = f(t) x."""
        check_tensor("x", x, min_dim=1)
        return batch_coeff(self._f(self.schedule_time(t, x.device)), x) * x

    def reverse_drift(self, x: Tensor, t: TimeLike, score: Tensor, c: float = 1.0) -> Tensor:
        """f(t) x - c g(t)^2 score: c = 1 is the reverse-time SDE's drift (Song et al. Eq. 6),
        c = 1/2 the probability-flow ODE's velocity (Eq. 13). ``score`` is x's shape."""
        tt = self.schedule_time(t, x.device)
        return batch_coeff(self._f(tt), x) * x - c * batch_coeff(self._g2(tt), x) * score

    def diffusion(self, t: TimeLike) -> Tensor:
        """g(t)."""
        tt = self.schedule_time(t)
        return torch.sqrt(self._g2(tt)).to(_out_dtype(t))

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw from the prior N(0, prior_std^2 I)."""
        shape = check_shape("shape", shape)
        generator = check_generator("generator", generator)
        device = check_device("device", device)
        dtype = check_float_dtype("dtype", dtype) or torch.get_default_dtype()
        return self.prior_std * randn(shape, generator, device, dtype)

    def prior_logp(self, z: Tensor) -> Tensor:
        """(batch,) log density of N(0, prior_std^2 I) at z."""
        check_tensor("z", z, min_dim=1)
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(-1)
        return -0.5 * d * math.log(2 * math.pi * self.prior_std**2) - 0.5 * sq / self.prior_std**2

    def transition(self, s: TimeLike, t: TimeLike) -> tuple[Tensor, Tensor]:
        """(a, v) of the forward transition x_t = a x_s + sqrt(v) z for s <= t (float64).

        a = alpha_t / alpha_s and v = sigma_t^2 - a^2 sigma_s^2, computed with expm1 so a small step
        keeps its relative accuracy.
        """
        ss, tt = self.schedule_time(s, name="s"), self.schedule_time(t)
        log_a = self._log_alpha(tt) - self._log_alpha(ss)
        ls_s, ls_t = self._log_sigma(ss), self._log_sigma(tt)
        # v = sigma_t^2 (1 - exp(2 (log_a + log sigma_s - log sigma_t)))
        v = torch.exp(2 * ls_t) * -torch.expm1(2 * (log_a + ls_s - ls_t))
        return torch.exp(log_a), v

    def discretize(self, x: Tensor, t: TimeLike, dt: TimeLike) -> tuple[Tensor, Tensor]:
        """Discrete forward step x_t = x_{t-dt} + f_d + G z, as ``f_d, G`` (Song et al. App. E).

        Uses the exact Gaussian transition from t - dt to t: f_d = (a - 1) x and G = sqrt(v), which
        for VP gives Ho et al.'s sqrt(1 - beta_i) x - x and sqrt(beta_i), and for VE the SMLD
        increments sqrt(sigma_i^2 - sigma_{i-1}^2).
        """
        check_tensor("x", x, min_dim=1)
        tt = self.schedule_time(t, x.device)
        a, v = self.transition(tt - as_time(check_times("dt", dt, self.T), x.device), tt)
        return (batch_coeff(a, x) - 1) * x, batch_coeff(torch.sqrt(v), x)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """Reverse-time SDE (Anderson 1982; Song et al. Eq. 6) or probability-flow ODE (Eq. 13)."""
        check_callable("score_fn", score_fn)
        return ReverseSDE(self, score_fn, check_bool("probability_flow", probability_flow))

    def config(self) -> dict:
        raise NotImplementedError


@dataclass
class ReverseSDE:
    """dx = [f(x,t) - c g(t)^2 score(x,t)] dt + [c == 1] g(t) dw-bar, run backwards from T.

    c = 1 gives the reverse-time SDE (Song et al. Eq. 6), c = 1/2 and zero diffusion the
    probability-flow ODE (Eq. 13). Time still runs forward in the formulas: a solver steps with
    negative dt.
    """

    sde: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.sde.T

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        tt = self.sde.schedule_time(t, x.device)
        c = 0.5 if self.probability_flow else 1.0
        return self.sde.reverse_drift(x, tt, self.score_fn(x, batch_time(tt, x)), c)

    def diffusion(self, t: TimeLike) -> Tensor:
        g = self.sde.diffusion(t)
        return torch.zeros_like(g) if self.probability_flow else g


class _BetaSDE(SDE):
    """Shared parts of VP and sub-VP: a beta schedule with B(t) = int_0^t beta, log alpha = -B/2."""

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        schedule: str = "linear",
        T: float | None = None,
        **schedule_options,
    ):
        self.schedule = make_schedule(schedule, beta_min, beta_max, **schedule_options)
        super().__init__(self.schedule.T if T is None else T)
        if self.T > self.schedule.t_max:
            raise ValueError(f"T must be <= {self.schedule.t_max} for the {schedule} schedule")

    @property
    def beta_min(self) -> float:
        t0 = torch.tensor(0.0, dtype=torch.float64)
        return getattr(self.schedule, "beta_min", float(self.schedule.beta(t0)))

    @property
    def beta_max(self) -> float:
        t1 = torch.tensor(self.T, dtype=torch.float64)
        return getattr(self.schedule, "beta_max", float(self.schedule.beta(t1)))

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.integral(t)

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def beta(self, t: TimeLike) -> Tensor:
        """beta(t) of the schedule."""
        return self.schedule.beta(self.schedule_time(t)).to(_out_dtype(t))

    def config(self) -> dict:
        return {"type": type(self).__name__, "T": self.T, **self.schedule.config()}


class VPSDE(_BetaSDE):
    r"""Variance-preserving SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw (Song et al. Eq. 11).

    alpha_t = exp(-B(t)/2), sigma_t^2 = 1 - alpha_t^2 with B(t) = \int_0^t beta. The continuous
    limit of DDPM (Ho et al. 2020); ``discrete_betas(N)`` gives the N-step chain. ``schedule``
    names a beta schedule of ``schedules.py`` with its options, e.g. ``schedule="polynomial",
    power=2`` or ``schedule="sigmoid", start=-3, end=3, tau=1``.
    """

    name = "vp"
    label = "VP"
    ancestral_rule = "ddpm"
    #: 1e-4, not Song et al.'s 1e-3: sigma(1e-3) = 0.01 is left in the samples and widens modes
    #: narrower than ~0.1 (width error 0.043 vs a floor of 0.015 on the narrow mixture at 200
    #: steps, 0.022 at 1e-4); a trained checkerboard model is no worse at 1e-4
    #: (benchmarks/endpoint.py; docs/samplers.md, "Where sampling ends"). Sub-VP keeps 1e-3:
    #: its sigma(1e-3) is ~1e-4.
    sampling_eps = 1e-4

    def _log_sigma(self, t: Tensor) -> Tensor:
        # sigma^2 = 1 - exp(-B) = -expm1(-B): exact for small t, where 1 - alpha^2 cancels.
        return 0.5 * torch.log(-torch.expm1(-self.schedule.integral(t)))

    def _g2(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t)

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        # alpha^2 = sigmoid(2 lam)  =>  B = -log alpha^2 = softplus(-2 lam).
        return self.schedule.inverse_integral(torch.nn.functional.softplus(-2 * lam))

    def discrete_betas(self, n: int) -> Tensor:
        """Betas of the N-step DDPM chain (float64); N = 1000 gives linspace(1e-4, 0.02, 1000).

        Examples
        --------
        >>> import torch
        >>> import scoresde as sd
        >>> betas = sd.VPSDE().discrete_betas(1000)
        >>> torch.allclose(betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
        True
        """
        n = check_int("n", n, 1)
        betas = self.schedule.discrete_betas(n)
        if not bool((betas < 1).all()):  # linear: beta_max / n >= 1 is no Markov chain (NaN times)
            raise ValueError(f"n = {n} is too few steps: the betas reach {float(betas.max()):.3g}")
        return betas

    def discrete_times(self, n: int) -> Tensor:
        """Times 0 = t_0 < ... < t_N (float64) where the continuous marginal matches the chain.

        alpha(t_i)^2 = prod_{j<=i} (1 - beta_j) for the betas of ``discrete_betas(n)``, so sampling
        on ``discrete_times(n).flip(0)`` with the ``ancestral`` solver is exactly DDPM. The chain
        decays slightly faster than exp(-B(t)), so t_N exceeds 1 by O(sum beta_i^2) (1.0034 for
        N = 1000): with the linear schedule use ``VPSDE(..., T=float(discrete_times(n)[-1]))`` to
        run the whole chain. The cosine schedule's last times lie beyond its clipped T = 0.998 (its
        chain clips beta at 0.999 instead), so only the steps up to T can be run in continuous time.
        """
        b = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.log1p(-self.discrete_betas(n))])
        return self.schedule.inverse_integral(torch.cumsum(b, 0))


class SubVPSDE(_BetaSDE):
    r"""Sub-VP SDE dx = -1/2 beta x dt + sqrt(beta (1 - exp(-2 B(t)))) dw (Song et al. Eq. 12).

    alpha_t = exp(-B/2) as for VP, sigma_t = 1 - alpha_t^2 (not its square root), so its variance is
    bounded by the VP one.
    """

    name = "subvp"
    label = "sub-VP"

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(-torch.expm1(-self.schedule.integral(t)))

    def _g2(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t) * -torch.expm1(-2 * self.schedule.integral(t))

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        # lam = log r - log(1 - r^2) with r = alpha: e^lam r^2 + r - e^lam = 0, positive root
        # r = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam})), then B = -2 log r.
        log_r = math.log(2) + lam - torch.log1p(torch.sqrt(1 + 4 * torch.exp(2 * lam)))
        # lam = +inf is t = 0 (r = 1); the formula gives inf - inf there.
        log_r = torch.where(torch.isposinf(lam), 0.0, log_r)
        return self.schedule.inverse_integral(-2 * log_r)


class VESDE(SDE):
    r"""Variance-exploding SDE dx = sqrt(d sigma^2/dt) dw (Song et al. Eq. 9; SMLD's limit).

    sigma(t) = sigma_min (sigma_max / sigma_min)^(t/T) and alpha_t = 1. Following Song et al., the
    marginal std is sigma(t) itself, i.e. p_0 is the data smoothed by N(0, sigma_min^2).
    """

    name = "ve"
    label = "VE"
    ancestral_rule = "smld"
    sampling_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        super().__init__(T)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return 0.0 * t  # not zeros_like: keeps the autograd graph to t, so d alpha/dt = 0 works

    def _log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + (t / self.T) * self._log_ratio

    def _f(self, t: Tensor) -> Tensor:
        return 0.0 * t

    def _g2(self, t: Tensor) -> Tensor:
        return 2 * self._log_ratio / self.T * torch.exp(2 * self._log_sigma(t))

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        return (-lam - math.log(self.sigma_min)) / self._log_ratio * self.T

    def config(self) -> dict:
        return {
            "type": "VESDE",
            "T": self.T,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
        }
