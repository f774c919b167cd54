"""Probability-flow ODE solvers: dx/dt = f(t) x - g(t)^2 score(x, t) / 2 (Song et al. Eq. 13)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..validation import check_choice, check_int, check_positive, check_real
from .base import Context, NonFiniteError, Solver

Drift = Callable[[Tensor, Tensor], Tensor]


def euler_step(fn: Drift, y: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    """One explicit Euler step of dy/dt = fn(y, t): y1 = y + (t1 - t0) fn(y, t0). Order 1.

    The fixed-step rules take 0-d time tensors (so h = t1 - t0 broadcasts over y), pass them to
    ``fn`` unchanged, and call it once per stage.
    """
    return y + (t1 - t0) * fn(y, t0)


def heun_step(fn: Drift, y: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    """Heun's method (explicit trapezoidal rule; Karras et al. 2022, Alg. 1).

    d0 = fn(y, t0); y1 = y + h (d0 + fn(y + h d0, t1)) / 2 with h = t1 - t0. Order 2.
    """
    h = t1 - t0
    d0 = fn(y, t0)
    return y + 0.5 * h * (d0 + fn(y + h * d0, t1))


def rk4_step(fn: Drift, y: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    """The classical fourth-order Runge–Kutta step (Kutta 1901; Hairer et al. I, II.1). Order 4."""
    h = t1 - t0
    tm = t0 + 0.5 * h
    k1 = fn(y, t0)
    k2 = fn(y + 0.5 * h * k1, tm)
    k3 = fn(y + 0.5 * h * k2, tm)
    k4 = fn(y + h * k3, t1)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


#: The fixed-step rules by name, as ``log_likelihood``'s ``integrator`` spells them.
FIXED_STEPS = {"euler": euler_step, "heun": heun_step, "rk4": rk4_step}


class ODEEuler(Solver):
    """Explicit Euler (``euler_step``) on the PF-ODE drift: order 1, one score call per step.

    End: returns x at the grid's last time, eps by default, where it still carries the residual
    noise sigma(eps) (see ``SDE.sampling_eps``); ``denoise=True`` adds Tweedie's step there.
    """

    name = "ode_euler"
    order = 1
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 500
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "karras"

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        return euler_step(ctx.pf_drift, x, t0, t1), state


class ODEHeun(Solver):
    """Heun's method (``heun_step``) on the PF-ODE drift: order 2, two score calls per step.

    End: returns x at the grid's last time (eps by default), like ``ode_euler``; on a grid
    ending at t = 0 its last stage evaluates the score at t = 0.
    """

    name = "ode_heun"
    order, nfe_per_step = 2, 2
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 100
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "quadratic"

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        return heun_step(ctx.pf_drift, x, t0, t1), state


class ODERK4(Solver):
    """Classical RK4 (``rk4_step``) on the PF-ODE drift: order 4, four score calls per step.

    End: returns x at the grid's last time (eps by default), like ``ode_heun``.
    """

    name = "ode_rk4"
    order, nfe_per_step = 4, 4
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 50

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        return rk4_step(ctx.pf_drift, x, t0, t1), state


# Dormand & Prince 1980, RK5(4)7M: nodes, stage matrix, 5th-order weights, error weights b - b*.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _rms(v: Tensor, scale: Tensor) -> Tensor:
    # In at least float32: squares of float16 errors overflow (65504) and every step was rejected.
    dt = torch.promote_types(v.dtype, torch.float32)
    return (v.to(dt) / scale.to(dt)).flatten(1).pow(2).mean(1).sqrt()


def check_dopri5_options(
    rtol: float, atol: float, safety: float, max_steps: int, first_step: float | None
) -> None:
    """Raise unless the controller's options are in range: a safety factor of 0 or a negative
    tolerance made the controller shrink every step and spin until ``max_steps``."""
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_real("safety", safety, 0.0, 1.0, lo_open=True)
    check_int("max_steps", max_steps, 1)
    if first_step is not None:
        check_positive("first_step", first_step)


def dopri5(
    fn: Drift,
    y: Tensor,
    t0: float,
    t1: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    safety: float = 0.9,
    max_steps: int = 100_000,
    first_step: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Solve dy/dt = fn(y, t) from t0 to t1 (either direction) with Dormand–Prince RK5(4).

    Batched with per-sample time and step size: row b of y (shape (batch, ...)) is an independent
    ODE whose result does not depend on the rest of the batch; all rows share one ``fn`` call per
    stage (t is passed as a (batch,) float64 tensor) and a row that has arrived is frozen.
    Error: per-row RMS of err / (atol + rtol max(|y0|, |y1|)) (Hairer et al. I, II.4), accepted
    when <= 1. PI controller h <- h safety err^-(0.7/5) err_prev^(0.4/5), growth in [0.2, 10], no
    growth right after a rejection. FSAL: an accepted step's last stage is the next one's first.
    The loop checks on the host once per step whether all rows have arrived (adaptive stepping
    needs that sync), whether ``fn`` returned NaN/inf (raised as ``NonFiniteError``, also at the
    starting-step probe) and whether a step has become too small to move t (``RuntimeError``, as
    scipy's solvers do, instead of taking zero-length steps until ``max_steps``).
    Returns y(t1) and per-row ``accepted_steps`` / ``rejected_steps``.
    """
    check_dopri5_options(rtol, atol, safety, max_steps, first_step)
    b = y.shape[0]
    direction = 1.0 if t1 >= t0 else -1.0
    t = torch.full((b,), t0, dtype=torch.float64, device=y.device)
    t_end = torch.full_like(t, t1)
    remaining = (t_end - t) * direction
    k1 = fn(y, t)
    if first_step is not None:
        size = torch.full_like(t, first_step).minimum(remaining)
    else:
        # Hairer, Norsett & Wanner I, II.4, "Starting step size"; one extra evaluation.
        scale = atol + rtol * y.abs()
        d0, d1 = _rms(y, scale).to(t.dtype), _rms(k1, scale).to(t.dtype)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1).minimum(remaining)
        k_probe = fn(y + _bc(direction * h0, y) * k1, t + direction * h0)
        # A NaN/inf probe made d2 = inf and the first step 0: 100 000 zero-length steps followed.
        probe_bad = ~torch.isfinite(k_probe).flatten(1).all(1)
        if bool(probe_bad.any()):
            bad_t = float((t + direction * h0)[probe_bad][0])
            raise NonFiniteError(
                f"non-finite values (NaN or inf) appeared at t = {bad_t:.6g} (starting-step probe)"
            )
        d2 = _rms(k_probe - k1, scale).to(t.dtype) / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / dmax) ** 0.2)
        size = torch.minimum(torch.minimum(100 * h0, h1), remaining)
    err_prev = torch.ones_like(t)
    accepted = torch.zeros(b, dtype=torch.long, device=y.device)
    rejected = torch.zeros_like(accepted)
    just_rejected = torch.zeros_like(t, dtype=torch.bool)
    active = remaining > 0
    nonfinite = ~torch.isfinite(k1).flatten(1).all(1)
    for _ in range(max_steps):
        # A step that no longer moves t (t + h == t in float64) would repeat forever.
        stuck = active & (t + direction * size == t)
        flags = torch.stack([active.any(), nonfinite.any(), stuck.any()]).tolist()
        any_active, any_nonfinite, any_stuck = flags
        if any_nonfinite:  # fn returned NaN/inf: a rejection cannot cure that
            bad_t = float(t[nonfinite][0])
            raise NonFiniteError(f"non-finite values (NaN or inf) appeared at t = {bad_t:.6g}")
        if any_stuck:
            raise RuntimeError(
                f"dopri5: the step size fell below the spacing of float64 times at "
                f"t = {float(t[stuck][0]):.6g} (a singularity, or too stiff for "
                f"rtol={rtol}, atol={atol})"
            )
        if not any_active:
            break
        size = torch.where(active, torch.minimum(size, remaining), torch.zeros_like(size))
        h = direction * size
        ks = [k1]
        for c, row in zip(_DP_C[1:], _DP_A[1:], strict=True):
            yi = y + _bc(h, y) * sum(a * k for a, k in zip(row, ks, strict=False) if a != 0.0)
            ks.append(fn(yi, t + c * h))
        nonfinite = active & ~torch.isfinite(torch.stack(ks, 1)).flatten(1).all(1)
        y_new = yi  # the last stage is evaluated at the 5th-order solution (FSAL)
        err = _bc(h, y) * sum(e * k for e, k in zip(_DP_E, ks, strict=True) if e != 0.0)
        err_norm = _rms(err, atol + rtol * torch.maximum(y.abs(), y_new.abs())).to(t.dtype)
        # A non-finite trial step is a rejection (shrink and retry), never a NaN step size.
        err_norm = torch.nan_to_num(err_norm, nan=torch.inf)
        ok = active & (err_norm <= 1.0)
        bad = active & ~ok
        y = torch.where(_bc(ok, y), y_new, y)
        k1 = torch.where(_bc(ok, y), ks[-1], k1)
        t = torch.where(ok, torch.where(size >= remaining, t_end, t + h), t)
        safe_err = err_norm.clamp_min(1e-10)
        grow = (safety * safe_err ** (-0.7 / 5) * err_prev ** (0.4 / 5)).clamp(0.2, 10.0)
        grow = torch.where(just_rejected, grow.clamp(max=1.0), grow)
        shrink = (safety * safe_err ** (-1 / 5)).clamp(0.2, 1.0)
        size = torch.where(ok, size * grow, torch.where(bad, size * shrink, size))
        err_prev = torch.where(ok, safe_err, err_prev)
        just_rejected = bad
        accepted += ok.long()
        rejected += bad.long()
        remaining = (t_end - t) * direction
        active = remaining > 0
    else:
        if bool(active.any()):
            raise RuntimeError(
                f"dopri5 did not reach t = {t1:g} in max_steps={max_steps} steps (a row is at "
                f"t = {float(t[active][0]):.6g}); raise max_steps or loosen rtol/atol"
            )
    return y, {"accepted_steps": accepted, "rejected_steps": rejected}


class RK45(Solver):
    """Adaptive Dormand–Prince RK5(4) on the probability-flow ODE, entirely in torch (``dopri5``).

    Every sample has its own step size, so its result does not depend on its batch.
    ``SampleResult.stats`` gets per-sample ``accepted_steps`` and ``rejected_steps``.
    End: integrates exactly to eps and returns x_eps (``denoise=True`` adds Tweedie's step).
    """

    name = "ode_rk45"
    fixed_grid = False
    nfe_per_step = None  # adaptive: 6 calls per attempted step, plus 2 to start

    def __init__(
        self,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        safety: float = 0.9,
        max_steps: int = 100_000,
        first_step: float | None = None,
    ):
        check_dopri5_options(rtol, atol, safety, max_steps, first_step)
        self.rtol, self.atol, self.safety = rtol, atol, safety
        self.max_steps = max_steps
        self.first_step = first_step

    def integrate(self, ctx: Context, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        x, stats = dopri5(
            ctx.pf_drift,
            x,
            float(t0),
            float(t1),
            self.rtol,
            self.atol,
            self.safety,
            self.max_steps,
            self.first_step,
        )
        ctx.stats.update(stats)
        return x


def _bc(c: Tensor, x: Tensor) -> Tensor:
    """Per-sample (batch,) tensor -> broadcastable over x's event dims, in x's dtype if float."""
    c = c.reshape(-1, *([1] * (x.dim() - 1)))
    return c.to(x.dtype) if c.is_floating_point() else c


#: The methods of ``scipy.integrate.solve_ivp`` (an ``OdeSolver`` subclass is accepted too).
SCIPY_METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")


def check_scipy_method(method):
    if isinstance(method, type):
        from scipy.integrate import OdeSolver

        if issubclass(method, OdeSolver):
            return method
    return check_choice("method", method, SCIPY_METHODS)


def scipy_solve(
    fn: Drift,
    y0: Tensor,
    t0: float,
    t1: float,
    method: str = "RK45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[Tensor, dict[str, int]]:
    """Solve dy/dt = fn(y, t) from t0 to t1 with ``scipy.integrate.solve_ivp`` on the flat batch.

    Runs in float64 numpy; each evaluation moves the state to y0's device and back (t is a 0-d
    float64 tensor; autograd off), and one error norm covers the whole batch, as in Song et al.'s
    reference code. Raises ``NonFiniteError`` if ``fn`` returns NaN/inf and ``RuntimeError`` if
    solve_ivp fails. Returns y(t1) in y0's dtype, and ``scipy_nfev`` / ``scipy_status``.
    """
    from scipy.integrate import solve_ivp

    check_scipy_method(method)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    shape, dtype, device = y0.shape, y0.dtype, y0.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        yt = torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape)
        tt = torch.tensor(t, dtype=torch.float64, device=device)
        with torch.no_grad():
            out = fn(yt, tt).reshape(-1).double().cpu().numpy()
        if not np.isfinite(out).all():
            raise NonFiniteError(f"non-finite values (NaN or inf) appeared at t = {t:.6g}")
        return out

    y0_np = y0.detach().reshape(-1).double().cpu().numpy()
    sol = solve_ivp(rhs, (t0, t1), y0_np, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"scipy solve_ivp ({method}) failed: {sol.message}")
    y1 = torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=dtype).reshape(shape)
    return y1, {"scipy_nfev": int(sol.nfev), "scipy_status": int(sol.status)}


class Scipy(Solver):
    """``scipy_solve`` on the PF-ODE of the flattened batch (Song et al.'s reference approach).

    Any ``method=`` of solve_ivp ("RK45", "DOP853", "Radau", "LSODA", ...). A reference, not a
    fast path: every right-hand-side evaluation moves the state to the device and back.
    End: integrates exactly to eps and returns x_eps, like ``ode_rk45``.
    """

    name = "scipy"
    fixed_grid = False
    nfe_per_step = None  # adaptive, in solve_ivp
    per_sample_seeds = False  # one error norm for the whole batch: a sample depends on it

    def __init__(self, method: str = "RK45", rtol: float = 1e-5, atol: float = 1e-5):
        self.method = check_scipy_method(method)
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)

    def integrate(self, ctx: Context, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        x, stats = scipy_solve(
            ctx.pf_drift, x, float(t0), float(t1), self.method, self.rtol, self.atol
        )
        ctx.stats.update(stats)
        return x
