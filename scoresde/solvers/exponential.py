"""Exponential integrators in log-SNR time: DDIM, DPM-Solver(++) multistep, SDE-DPM-Solver++.

All of them use only the marginal (alpha_t, sigma_t) and lambda_t = log(alpha_t / sigma_t), so
they work for VP, sub-VP and VE alike (for VE alpha = 1, lambda = -log sigma). With
h = lambda_1 - lambda_0 and u = lambda - lambda_0, the probability-flow ODE has the exact solutions
(Lu et al. 2022a Eq. 3.4, 2022b Eq. 9)
    noise form:  x_1 = (alpha_1/alpha_0) x_0 - sigma_1 int_0^h e^{h-u} eps_hat(u) du
    data form:   x_1 = (sigma_1/sigma_0) x_0 + alpha_1 int_0^h e^{-(h-u)} x0_hat(u) du
and a k-th order method replaces the prediction by its Taylor polynomial in u, with derivatives
estimated by divided differences of earlier evaluations (multistep).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Context, Solver, check_choice


def _phis(h: Tensor, sign: int) -> tuple[Tensor, Tensor, Tensor]:
    """Weights of int_0^h e^{sign (h - u)} u^k / k! du = h^k * phi_{k+1}, k = 0, 1, 2, in float64.

    sign = +1 (noise form):  phi_1 = e^h - 1,  phi_2 = phi_1/h - 1,  phi_3 = phi_2/h - 1/2.
    sign = -1 (data form):   phi_1 = 1 - e^-h, phi_2 = 1 - phi_1/h,  phi_3 = 1/2 - phi_2/h.
    """
    if sign > 0:
        p1 = torch.expm1(h)
        p2 = p1 / h - 1
        return p1, p2, p2 / h - 0.5
    p1 = -torch.expm1(-h)
    p2 = 1 - p1 / h
    return p1, p2, 0.5 - p2 / h


def _taylor_terms(lams: list[Tensor], ms: list[Tensor], lam1: Tensor, order: int):
    """Divided-difference estimates (m0, h m', h^2 m'') at lambda_0 = lams[-1] from the last
    ``order`` evaluations (Lu et al. 2022b, Alg. 2 and App. B), with h = lam1 - lambda_0."""
    h = lam1 - lams[-1]
    m0 = ms[-1]
    if order == 1:
        return h, (m0,)
    r0 = (lams[-1] - lams[-2]) / h
    d1_0 = (m0 - ms[-2]) / r0
    if order == 2:
        return h, (m0, d1_0)
    r1 = (lams[-2] - lams[-3]) / h
    d1_1 = (ms[-2] - ms[-3]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    # (d1_0 - d1_1) / (r0 + r1) estimates h^2 m'' / 2; the Taylor weight phi_3 multiplies h^2 m''.
    d2 = 2 * (d1_0 - d1_1) / (r0 + r1)
    return h, (m0, d1, d2)


def _order_at(order: int, i: int, steps: int, lower_order_final: bool) -> int:
    """Warm up with lower orders (not enough history yet) and, on short grids, finish with lower
    orders too: higher-order steps near t = 0 cause artifacts (Lu et al. 2022b, Sec. 5)."""
    k = min(order, i + 1)
    if lower_order_final and steps < 15:
        k = min(k, steps - i)
    return k


class DDIM(Solver):
    """DDIM (Song, Meng & Ermon 2021, Eq. 12) written with (alpha, sigma) of any linear SDE.

    x0_hat = (x + sigma_0^2 score) / alpha_0, eps_hat = -sigma_0 score, and with
    sigma_eta^2 = eta^2 (sigma_1^2 / sigma_0^2) v, v = sigma_0^2 - (alpha_0/alpha_1)^2 sigma_1^2
    (the posterior variance times eta^2):
        x_1 = alpha_1 x0_hat + sqrt(sigma_1^2 - sigma_eta^2) eps_hat + sigma_eta z.
    eta = 0 is the first-order exponential step of the probability-flow ODE (= DPM-Solver-1);
    eta = 1 is DDPM's ancestral step with the posterior variance.
    """

    name = "ddim"

    def __init__(self, eta: float = 0.0):
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        self.eta = float(eta)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        score = ctx.score(x, t0)
        alpha0, sigma0 = ctx.coeffs(t0)
        alpha1, sigma1 = ctx.coeffs(t1)
        x0_hat = (x + sigma0**2 * score) / alpha0
        eps_hat = -sigma0 * score
        if self.eta == 0:
            return alpha1 * x0_hat + sigma1 * eps_hat, state
        v = ctx.sde.transition(t1, t0)[1]
        var_eta = self.eta**2 * v * (sigma1 / sigma0) ** 2
        x1 = alpha1 * x0_hat + torch.sqrt(sigma1**2 - var_eta) * eps_hat
        return x1 + torch.sqrt(var_eta) * ctx.noise(), state


class DPMSolver(Solver):
    """Multistep DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b), orders 1-3.

    ``prediction="data"`` is DPM-Solver++ (integrates the data prediction x0_hat), ``"noise"`` the
    original DPM-Solver (eps_hat). One score call per step; the evaluation at the final time is
    skipped. Order k uses the Taylor expansion of the prediction to degree k - 1:
        data:  x_1 = (sigma_1/sigma_0) x + alpha_1 (phi_1 m0 + phi_2 D1 + phi_3 D2)
        noise: x_1 = (alpha_1/alpha_0) x - sigma_1 (phi_1 m0 + phi_2 D1 + phi_3 D2)
    with D1 ~ h m', D2 ~ h^2 m'' from divided differences. ``solver_type="midpoint"`` replaces
    phi_2 by phi_1 / 2 at order 2 (the "dpmsolver" variant of the reference code and diffusers).
    """

    name = "dpm_solver"

    def __init__(
        self,
        order: int = 3,
        prediction: str = "noise",
        solver_type: str = "taylor",
        lower_order_final: bool = True,
    ):
        self.order = check_choice("order", order, (1, 2, 3))
        self.prediction = check_choice("prediction", prediction, ("data", "noise"))
        # Defaults chosen by benchmarks/samplers.py and external.py (docs/samplers.md): the
        # noise form of order 3 on a log-SNR grid had the smallest error at 10-20 NFE in every
        # case; the data form (DPM-Solver++, steadier under strong guidance) prefers quadratic.
        self.default_time_grid = "logsnr" if prediction == "noise" else "quadratic"
        self.solver_type = check_choice("solver_type", solver_type, ("taylor", "midpoint"))
        self.lower_order_final = lower_order_final

    def init(self, ctx: Context, x: Tensor, ts: Tensor):
        # An explicit grid may end at t = 0 (sigma = 0, lambda = +inf): the last step is then the
        # limit h -> inf of every order, x_1 = alpha_1 x0_hat (decided once here, not per step).
        return {
            "lams": [],
            "ms": [],
            "lam_grid": ctx.sde._log_alpha(ts) - ctx.sde._log_sigma(ts),
            "zero_end": bool(ts[-1] <= 0),
        }

    def _model(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor:
        score = ctx.score(x, t)
        if self.prediction == "data":
            return ctx.data_pred(x, t, score)
        return -ctx.coeffs(t)[1] * score

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        lams, ms = state["lams"], state["ms"]
        lams.append(state["lam_grid"][i])
        ms.append(self._model(ctx, x, t0))
        del lams[: -self.order], ms[: -self.order]
        alpha0, sigma0 = ctx.coeffs(t0)
        alpha1, sigma1 = ctx.coeffs(t1)
        if state["zero_end"] and i == ctx.steps - 1:
            x0_hat = ms[-1] if self.prediction == "data" else (x - sigma0 * ms[-1]) / alpha0
            return alpha1 * x0_hat, state
        k = _order_at(self.order, i, ctx.steps, self.lower_order_final)
        h, terms = _taylor_terms(lams, ms, state["lam_grid"][i + 1], k)
        sign = -1 if self.prediction == "data" else 1
        phis = list(_phis(h, sign))
        if k == 2 and self.solver_type == "midpoint":
            phis[1] = 0.5 * phis[0]
        acc = sum(p * m for p, m in zip(phis, terms, strict=False))
        if self.prediction == "data":
            return (sigma1 / sigma0) * x + alpha1 * acc, state
        return (alpha1 / alpha0) * x - sigma1 * acc, state


class DPMSolverSDE(Solver):
    """SDE-DPM-Solver++ multistep (Lu et al. 2022b, App. D; Gonzalez et al. 2023), orders 1-2.

    The reverse SDE in data form is solved exactly in its linear part:
        x_1 = (sigma_1/sigma_0) e^{-h} x + alpha_1 int_0^h 2 e^{-2(h-u)} x0_hat(u) du
              + sigma_1 sqrt(1 - e^{-2h}) z,
    the integral by the Taylor polynomial of x0_hat as in ``dpm_solver`` (weights with 2h).
    """

    name = "dpm_solver_sde"
    stochastic = True
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "quadratic"

    def __init__(self, order: int = 2, solver_type: str = "taylor", lower_order_final: bool = True):
        self.order = check_choice("order", order, (1, 2))
        self.solver_type = check_choice("solver_type", solver_type, ("taylor", "midpoint"))
        self.lower_order_final = lower_order_final

    init = DPMSolver.init

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        lams, ms = state["lams"], state["ms"]
        lams.append(state["lam_grid"][i])
        ms.append(ctx.data_pred(x, t0, ctx.score(x, t0)))
        del lams[: -self.order], ms[: -self.order]
        _, sigma0 = ctx.coeffs(t0)
        alpha1, sigma1 = ctx.coeffs(t1)
        if state["zero_end"] and i == ctx.steps - 1:  # sigma_1 = 0: no noise, x_1 = alpha_1 x0_hat
            return alpha1 * ms[-1], state
        k = _order_at(self.order, i, ctx.steps, self.lower_order_final)
        h, terms = _taylor_terms(lams, ms, state["lam_grid"][i + 1], k)
        # int_0^h 2 e^{-2(h-u)} u^k/k! du = (2h)^k phi_{k+1}(2h) / 2^k: substitute w = 2u.
        p1, p2, _ = _phis(2 * h, -1)
        acc = p1 * terms[0]
        if k == 2:
            acc = acc + (0.5 * p1 if self.solver_type == "midpoint" else p2) * terms[1]
        x1 = (sigma1 / sigma0) * torch.exp(-h) * x + alpha1 * acc
        return x1 + sigma1 * torch.sqrt(p1) * ctx.noise(), state
