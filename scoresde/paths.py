"""Gaussian probability paths x_t = alpha_t x_0 + sigma_t eps as SDEs of the same family.

A path given by any differentiable (alpha_t, sigma_t) is the marginal of the linear SDE
dx = f(t) x dt + g(t) dw with (Song et al. 2021, App. B; Kingma et al. 2021, Eq. 8 ff.)

    f(t)   = d log alpha_t / dt
    g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2 = -2 sigma_t^2 d lambda_t / dt,

lambda_t = log(alpha_t / sigma_t), so g^2 >= 0 exactly where the log-SNR does not increase. The
flow-matching paths are of this kind (Lipman et al. 2023, Sec. 4; Liu et al. 2023, Eq. 1), so
every solver, the oracle and the likelihood take them unchanged. ``GaussianPath`` derives f and
g^2 by forward-mode autograd in float64; ``RectifiedFlow`` is the straight path alpha = 1 - t,
sigma = t in closed form.

Endpoint: at t = 1 the straight path has alpha = 0, so p_1 = N(0, I) exactly, but there the score
is -x whatever the data (it carries no information about them), Tweedie's x0 = (x + sigma^2
score) / alpha is 0/0 and the drift f = -1/(1 - t) is infinite: no score-based solver can take a
step from t = 1. ``RectifiedFlow`` therefore ends time at T = 1 - 1e-3 by default, where Liu et
al.'s code starts sampling (their t = eps = 1e-3 in the reversed convention), with the prior
N(0, sigma_T^2 I): it differs from p_T only by the mean alpha_T E[x0] and the variance
alpha_T^2 Cov[x0], O(1e-3) and O(1e-6). ``RectifiedFlow(T=1.0)`` is allowed (its prior is N(0, I)
exactly, for marginals, scores and training), and ``sample`` and ``log_likelihood`` reject a
start at alpha = 0 with a ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .sde import SDE
from .validation import check_callable, check_int, check_real

PathFn = Callable[[Tensor], Tensor]

#: Bisection steps of ``GaussianPath.t_from_log_snr``: each halves the bracket [0, T], so 64 reach
#: float64's resolution of t (2^-64 T < 1e-19 T).
_BISECTION_STEPS = 64


class GaussianPath(SDE):
    """The SDE whose marginal is x_t = alpha(t) x_0 + sigma(t) eps on [0, T].

    Parameters
    ----------
    alpha_fn, sigma_fn
        Differentiable torch functions of a float64 tensor of times (any shape, elementwise),
        e.g. ``lambda t: torch.cos(t * math.pi / 2)``; alpha > 0 on [0, T) and sigma > 0 on
        (0, T].
    T
        End time; the prior is N(0, sigma(T)^2 I), exact where alpha(T) = 0.
    check_points
        Size of the grid on [0, T] where the path is checked at construction: finite, positive,
        g^2 >= 0 and lambda strictly decreasing (so ``t_from_log_snr`` is a well-defined
        inverse). A ValueError names the first bad time.

    Notes
    -----
    f and g^2 come from forward-mode autograd (``torch.func.jvp``) in float64:
    f = alpha'/alpha, g^2 = 2 sigma sigma' - 2 f sigma^2 (Song et al. 2021, App. B).
    ``t_from_log_snr`` inverts lambda by bisection on [0, T] (vectorised, no host sync); values of
    lambda beyond the ends give 0 or T. A path built from functions has no serialisable
    ``config()``: save a checkpoint with a named SDE (``RectifiedFlow``, ``VPSDE``, ...).

    Examples
    --------
    >>> import torch
    >>> import scoresde as sd
    >>> path = sd.GaussianPath(lambda t: 1 - t, lambda t: t, T=0.999)
    >>> round(float(path.g2(0.5)), 12)  # 2 t / (1 - t)
    2.0
    >>> sd.GaussianPath(lambda t: 1 + 0 * t, lambda t: 1 - t / 2)
    Traceback (most recent call last):
    ...
    ValueError: g^2 = d sigma^2/dt - 2 f sigma^2 < 0 (the log-SNR increases there) at t = 0.001: ...
    """

    name = "path"
    label = "Gaussian path"
    #: sigma(1e-3) = 1e-3 on the straight path: less than VP's sigma(1e-4) = 3e-3.
    sampling_eps = 1e-3

    def __init__(
        self, alpha_fn: PathFn, sigma_fn: PathFn, T: float = 1.0, check_points: int = 1001
    ):
        self.alpha_fn = check_callable("alpha_fn", alpha_fn)
        self.sigma_fn = check_callable("sigma_fn", sigma_fn)
        super().__init__(T)
        self._check_path(check_int("check_points", check_points, 3))
        sigma_T = float(self._value(self.sigma_fn, torch.tensor(self.T, dtype=torch.float64)))
        self.prior_std = sigma_T

    # -- derivatives -----------------------------------------------------------------------
    def _value(self, fn: PathFn, t: Tensor) -> Tensor:
        out = fn(t)
        if not isinstance(out, Tensor) or out.shape != t.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"alpha_fn and sigma_fn must map a float64 tensor of times of shape "
                f"{tuple(t.shape)} to a tensor of that shape, got {got}"
            )
        return out.to(torch.float64)

    def _with_derivative(self, fn: PathFn, t: Tensor) -> tuple[Tensor, Tensor]:
        """(fn(t), d fn / dt) elementwise, by one forward-mode jvp with tangent 1 (float64)."""
        res = torch.func.jvp(lambda s: self._value(fn, s), (t,), (torch.ones_like(t),))
        return res[0], res[1]  # (primal, tangent); jvp's type also allows an aux output

    def _f_g2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        a, da = self._with_derivative(self.alpha_fn, t)
        s, ds = self._with_derivative(self.sigma_fn, t)
        f = da / a
        return f, 2 * s * ds - 2 * f * s**2

    def _check_path(self, n: int) -> None:
        t = torch.linspace(0.0, self.T, n, dtype=torch.float64)
        a, s = self._value(self.alpha_fn, t), self._value(self.sigma_fn, t)
        f, g2 = self._f_g2(t)

        def first(bad: Tensor, what: str) -> None:
            if bool(bad.any()):
                t_bad = float(t[bad.int().argmax()])
                raise ValueError(f"{what} at t = {t_bad:.6g}: {self._describe()}")

        first(~torch.isfinite(a) | ~torch.isfinite(s), "alpha or sigma is not finite")
        first(F.pad(a[:-1] <= 0, (0, 1)), "alpha must be > 0 on [0, T)")
        first(F.pad(a[-1:] < 0, (n - 1, 0)), "alpha must be >= 0 at T")
        first(F.pad(s[:1] < 0, (0, n - 1)), "sigma must be >= 0 at 0")
        first(F.pad(s[1:] <= 0, (1, 0)), "sigma must be > 0 on (0, T]")
        # f, g^2 on (0, T), and at T unless alpha_T = 0 (f = -inf there); at t = 0 a path with
        # sigma ~ sqrt(t) (VP's) has sigma' = inf, and autograd's 0 * inf is NaN: no solver
        # evaluates g^2 at t = 0 (grids end at eps > 0), so t = 0 is left out.
        inner = slice(1, n - 1) if bool(a[-1] == 0) else slice(1, n)
        first(
            F.pad(torch.isnan(g2[inner]) | ~torch.isfinite(f[inner]), (1, n - inner.stop)),
            "f or g^2 is not finite",
        )
        first(
            F.pad(g2[1:] < 0, (1, 0)),
            "g^2 = d sigma^2/dt - 2 f sigma^2 < 0 (the log-SNR increases there)",
        )
        lam = torch.log(a) - torch.log(s)
        first(F.pad(lam.diff() >= 0, (0, 1)), "the log-SNR is not decreasing")

    def _describe(self) -> str:
        return "a GaussianPath needs x_t = alpha_t x0 + sigma_t eps with a decreasing log-SNR"

    # -- primitives (float64) -------------------------------------------------------------
    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.log(self._value(self.alpha_fn, t))

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(self._value(self.sigma_fn, t))

    def _f(self, t: Tensor) -> Tensor:
        return self._f_g2(t)[0]

    def _g2(self, t: Tensor) -> Tensor:
        return self._f_g2(t)[1]

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        # lambda is strictly decreasing on [0, T] (checked at construction): bisect its bracket.
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, self.T)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            above = (self._log_alpha(mid) - self._log_sigma(mid)) > lam  # root lies right of mid
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return torch.where(lam == math.inf, lo, hi)  # lam = +inf: t = 0 (lo never moved)

    def config(self) -> dict:
        raise ValueError(
            "a GaussianPath built from functions has no config (functions are not saved); "
            "use a named SDE (RectifiedFlow, VPSDE, SubVPSDE, VESDE) for checkpoints"
        )


class RectifiedFlow(GaussianPath):
    """The straight path alpha_t = 1 - t, sigma_t = t (Liu et al. 2023, Eq. 1; the OT path of
    Lipman et al. 2023, Eq. 20 with sigma_min = 0), in closed form.

    f(t) = -1/(1 - t), g(t)^2 = 2 t / (1 - t), lambda_t = log((1 - t)/t), t(lambda) =
    sigmoid(-lambda); the PF-ODE velocity is E[eps - x0 | x_t] (Liu et al. Eq. 2). T defaults to
    1 - 1e-3 (see the module docstring: from t = 1 no score-based step exists); the prior is
    N(0, T^2 I), and N(0, I) exactly with ``T=1.0``.

    Examples
    --------
    >>> import scoresde as sd
    >>> sde = sd.RectifiedFlow()
    >>> sde.T, sde.prior_std
    (0.999, 0.999)
    >>> [round(float(c), 12) for c in sde.marginal(0.25)]
    [0.75, 0.25]
    """

    name = "rf"
    label = "RF"

    def __init__(self, T: float = 1.0 - 1e-3):
        T = check_real("T", T, 0.0, 1.0, lo_open=True)
        SDE.__init__(self, T)
        self.prior_std = self.T  # sigma_T = T

    @staticmethod
    def alpha_fn(t: Tensor) -> Tensor:
        return 1 - t

    @staticmethod
    def sigma_fn(t: Tensor) -> Tensor:
        return t

    def _log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)  # -inf at t = 1

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t)

    def _f(self, t: Tensor) -> Tensor:
        return -1 / (1 - t)

    def _g2(self, t: Tensor) -> Tensor:
        return 2 * t / (1 - t)

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam)

    def config(self) -> dict:
        return {"type": "RectifiedFlow", "T": self.T}


def check_start(sde: SDE, t: float | Tensor, what: str = "sampling cannot start") -> None:
    """ValueError if alpha_t = 0 at the time ``t`` (the straight path at t = 1, ``T=1.0``).

    There the score is -x / sigma^2 whatever the data, Tweedie's x0 is 0/0 and the drift
    f = d log alpha/dt is infinite, so no score-based step starts (or ends) there. Checked on the
    host at T first, so SDEs with alpha_T > 0 cost no device sync.
    """
    if not bool(torch.isneginf(sde.log_alpha(sde.T))):
        return
    if isinstance(t, Tensor) and not bool(t >= sde.T):
        return
    raise ValueError(
        f"{what} at t = {sde.T:g}: alpha_t = 0 there, so the score carries no information "
        f"about the data and the drift is infinite; use an SDE with T < 1 (RectifiedFlow() "
        f"ends at T = 1 - 1e-3) or an explicit time_grid that starts below T"
    )
