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

import functools
import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from ..validation import check_bool, check_choice, check_real
from .base import Context, Solver, affine_step


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


def _intervals(ctx: Context, ts: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(alpha_0, sigma_0, alpha_1, sigma_1, lambda) for the grid intervals t0 > t1 and lambda at
    every grid time, float64, once per solve; the steps are h = lambda.diff() (+inf on a last
    interval ending at sigma = 0). ``sde.coeffs``' values, without its f and g^2, which these
    solvers do not use (a short call's set-up is a few dozen such small ops)."""
    log_alpha, log_sigma = ctx.sde.log_alpha(ts), ctx.sde.log_sigma(ts)
    alpha, sigma = torch.exp(log_alpha), torch.exp(log_sigma)
    return alpha[:-1], sigma[:-1], alpha[1:], sigma[1:], log_alpha - log_sigma


def _end_at_zero(
    orders: list[int], ratio: Tensor, w: Tensor, data: bool, a0: Tensor, s0: Tensor, a1: Tensor
) -> None:
    """A grid ending at t = 0 (``orders[-1] == 0``, see ``_orders``): its last step is the limit
    h -> inf of every order, x_1 = alpha_1 x0_hat with x0_hat = m0 (data form) or
    (x - sigma_0 m0) / alpha_0 (noise form), an order-1 step x_1 = ratio x + w m0 (in place)."""
    if orders[-1] == 0:
        orders[-1] = 1
        w[-1] = 0.0
        if data:
            ratio[-1], w[-1, 0] = 0.0, a1[-1]
        else:
            w[-1, 0] = -a1[-1] * s0[-1] / a0[-1]


def _multistep_weights(
    h: Tensor, phis: tuple[Tensor, Tensor, Tensor], orders: list[int], midpoint: bool
) -> Tensor:
    """(steps, 3) weights w with sum_j w_j m_{i-j} = phi_1 m0 + phi_2 D1 + phi_3 D2 at step i.

    D1 ~ h m' and D2 ~ h^2 m'' are the divided differences of the last ``orders[i]`` model
    outputs (order 2: Lu et al. 2022b, Alg. 2; order 3: their code's third-order multistep
    update), with r0 = h_{i-1} / h_i, r1 = h_{i-2} / h_i:
        D1_0 = (m0 - m1) / r0,  D1_1 = (m1 - m2) / r1,
        order 2: D1 = D1_0;  order 3: D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
                             D2 = 2 (D1_0 - D1_1) / (r0 + r1).
    (D1_0 - D1_1) / (r0 + r1) estimates h^2 m'' / 2 and the Taylor weight phi_3 multiplies
    h^2 m'', hence the 2 that the reference code and diffusers omit. Being linear in the m's, the
    step is a fixed combination of them: computed for the whole grid here, so a step launches
    only the tensor updates. ``midpoint`` replaces phi_2 by phi_1 / 2 at order 2.
    """
    p1, p2, p3 = phis
    # Only the orders the grid uses (a 2-step grid has only first-order steps); a row of order 0
    # (a last step to t = 0) is overwritten by ``_end_at_zero``, so any row does there.
    used = sorted({max(k, 1) for k in orders})
    by_order = {}
    zero = torch.zeros_like(h)
    if 1 in used:
        by_order[1] = torch.stack([p1, zero, zero], 1)
    if used[-1] > 1:
        ones = torch.ones_like(h[:2])
        r0 = torch.cat([ones[:1], h[:-1]]) / h  # entries a step's order does not use are unused
        if 2 in used:
            q = (0.5 * p1 if midpoint else p2) / r0
            by_order[2] = torch.stack([p1 + q, -q, zero], 1)
        if 3 in used:
            r1 = torch.cat([ones, h[:-2]]) / h
            a = (p2 * (1 + r0 / (r0 + r1)) + 2 * p3 / (r0 + r1)) / r0  # weight of D1_0 / r0 ...
            b = -(p2 * r0 / (r0 + r1) + 2 * p3 / (r0 + r1)) / r1  # ... and of D1_1 / r1
            by_order[3] = torch.stack([p1 + a, b - a, -b], 1)
    w = by_order[used[-1]]
    if len(used) > 1:
        k = torch.tensor(orders, device=h.device)[:, None]
        for o in used[-2::-1]:
            w = torch.where(k == o, by_order[o], w)
    return w


def _orders(order: int, ts: Tensor, lower_order_final: bool) -> list[int]:
    """Each step's order: warm up with lower orders (not enough history yet) and, on short grids,
    finish with lower orders too: higher-order steps near t = 0 cause artifacts (Lu et al. 2022b,
    Sec. 5). A grid ending at t = 0 (sigma = 0, lambda = +inf) gets order 0 for its last step, the
    marker of the limit h -> inf that each solver handles (decided once, here, with one sync)."""
    steps = ts.numel() - 1
    orders = [
        min(order, i + 1, steps - i if lower_order_final and steps < 15 else order)
        for i in range(steps)
    ]
    if bool(ts[-1] <= 0):
        orders[-1] = 0
    return orders


def _push_output(ctx: Context, i: int, t0: Tensor, x: Tensor, state: dict, keep: int) -> None:
    """Append the model output m = m_x x + m_score score (m_x None: m_score score) at (x, t0) to
    the history ``state["ms"]`` of the last ``keep`` outputs. One score call."""
    score = ctx.score(x, t0)
    if state["m_x"] is None:
        m = state["m_score"][i] * score
    else:
        m = torch.addcmul(state["m_x"][i] * x, state["m_score"][i], score)
    ms = state["ms"]
    ms.append(m)
    del ms[:-keep]


def _combine(ratio: Tensor, x: Tensor, w: Tensor, ms: list[Tensor], n: int) -> Tensor:
    """ratio x + sum_{j < n} w_j m_{-1-j} over the newest outputs: one ``addcmul`` per term (0-d
    weights on the device, no sync)."""
    x1 = ratio * x
    for j in range(n):
        x1 = torch.addcmul(x1, w[j], ms[-1 - j])
    return x1


def _multistep(ctx: Context, i: int, t0: Tensor, x: Tensor, state: dict, keep: int) -> Tensor:
    """One step x_1 = ratio x + sum_j w_j m_{i-j}, after appending this step's output."""
    _push_output(ctx, i, t0, x, state, keep)
    return _combine(state["ratio"][i], x, state["w"][i], state["ms"], state["orders"][i])


class DDIM(Solver):
    """DDIM (Song, Meng & Ermon 2021, Eq. 12) written with (alpha, sigma) of any linear SDE.

    x0_hat = (x + sigma_0^2 score) / alpha_0, eps_hat = -sigma_0 score, and with
    sigma_eta^2 = eta^2 (sigma_1^2 / sigma_0^2) v, v = sigma_0^2 - (alpha_0/alpha_1)^2 sigma_1^2
    (the posterior variance times eta^2):
        x_1 = alpha_1 x0_hat + sqrt(sigma_1^2 - sigma_eta^2) eps_hat + sigma_eta z.
    eta = 0 is the first-order exponential step of the probability-flow ODE (= DPM-Solver-1);
    eta = 1 is DDPM's ancestral step with the posterior variance. eta must lie in [0, 1]: then
    sigma_eta <= sigma_1 on every grid (v <= sigma_0^2), and beyond it the square root of
    sigma_1^2 - sigma_eta^2 turns NaN on some grids.
    End: returns x at the grid's last time (eps by default, carrying sigma(eps)); a VP grid
    ending at t = 0 (alpha = 1, sigma = 0) makes the last step x0_hat, Tweedie's denoiser.
    """

    name = "ddim"
    order = 1
    stochastic = False  # eta = 0; __init__ sets eta > 0
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 500

    def __init__(self, eta: float = 0.0):
        self.eta = check_real("eta", eta, 0.0, 1.0)
        self.stochastic = self.eta > 0

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict[str, Tensor]:
        # x_1 = (alpha_1/alpha_0) x + (alpha_1 sigma_0^2/alpha_0 - c sigma_0) score + sigma_eta z
        # with c = sqrt(sigma_1^2 - sigma_eta^2): per-step scalars, computed once for the grid.
        a0, s0, a1, s1, _ = _intervals(ctx, ts)
        if self.eta > 0:
            var_eta = self.eta**2 * ctx.sde.transition(ts[1:], ts[:-1])[1] * (s1 / s0) ** 2
        else:  # 0 * v, exactly: v is finite on every grid (s0 > 0), and the transition costs
            var_eta = torch.zeros_like(s1)  # as much as the rest of init
        c = torch.sqrt(s1**2 - var_eta)
        return {"x": a1 / a0, "score": a1 * s0**2 / a0 - c * s0, "noise": torch.sqrt(var_eta)}

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        noise = ctx.noise(t0, t1) if self.eta > 0 else None
        return affine_step(state, i, x, ctx.score(x, t0), noise), state


class DPMSolver(Solver):
    """Multistep DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b), orders 1-3.

    ``prediction="data"`` is DPM-Solver++ (integrates the data prediction x0_hat), ``"noise"`` the
    original DPM-Solver (eps_hat). One score call per step; the evaluation at the final time is
    skipped. Order k uses the Taylor expansion of the prediction to degree k - 1:
        data:  x_1 = (sigma_1/sigma_0) x + alpha_1 (phi_1 m0 + phi_2 D1 + phi_3 D2)
        noise: x_1 = (alpha_1/alpha_0) x - sigma_1 (phi_1 m0 + phi_2 D1 + phi_3 D2)
    with D1 ~ h m', D2 ~ h^2 m'' from divided differences. ``solver_type="midpoint"`` replaces
    phi_2 by phi_1 / 2 at order 2 (the "dpmsolver" variant of the reference code and diffusers).

    End: returns x at the grid's last time, eps by default (``SDE.sampling_eps``, chosen by
    benchmarks/endpoint.py). A grid ending at t = 0 makes the last step the limit h -> inf,
    x0_hat at the previous time (first order; for VE too, although VE's own sigma(0) is
    sigma_min): the same as ``denoise=True`` at that time, which narrows modes by as much as
    stopping widens them (docs/samplers.md, "Where sampling ends").
    """

    name = "dpm_solver"
    order = 3  # the option's default; __init__ sets the instance's
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 100

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
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict:
        a0, s0, a1, s1, lam = _intervals(ctx, ts)
        h = lam.diff()
        orders = _orders(self.order, ts, self.lower_order_final)
        data = self.prediction == "data"
        w = _multistep_weights(
            h, _phis(h, -1 if data else 1), orders, self.solver_type == "midpoint"
        )
        ratio = s1 / s0 if data else a1 / a0
        w = w * (a1 if data else -s1)[:, None]
        _end_at_zero(orders, ratio, w, data, a0, s0, a1)
        # The model output m: data form (x + sigma^2 score) / alpha, noise form -sigma score.
        m_x, m_score = (1 / a0, s0**2 / a0) if data else (None, -s0)
        return {"ms": [], "orders": orders, "ratio": ratio, "w": w, "m_x": m_x, "m_score": m_score}

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        return _multistep(ctx, i, t0, x, state, self.order), state


class DPMSolverSDE(Solver):
    """SDE-DPM-Solver++ multistep (Lu et al. 2022b, App. D; Gonzalez et al. 2023), orders 1-2.

    The reverse SDE in data form is solved exactly in its linear part:
        x_1 = (sigma_1/sigma_0) e^{-h} x + alpha_1 int_0^h 2 e^{-2(h-u)} x0_hat(u) du
              + sigma_1 sqrt(1 - e^{-2h}) z,
    the integral by the Taylor polynomial of x0_hat as in ``dpm_solver`` (weights with 2h).
    End: noise on the last step too, x at eps; on a grid ending at t = 0 the last step is
    x0_hat without noise (see ``dpm_solver``).
    """

    name = "dpm_solver_sde"
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 200
    order = 1  # strong, additive noise, for both multistep orders
    stochastic = True
    #: Chosen by benchmarks/samplers.py (error per NFE at 10-50 steps); see docs/samplers.md.
    default_time_grid = "quadratic"

    def __init__(self, order: int = 2, solver_type: str = "taylor", lower_order_final: bool = True):
        # The Taylor order of the data-prediction integral; the strong order stays 1 (``order``)
        # as the noise term uses one Gaussian per step (measured in tests/test_noise.py).
        self.multistep_order = check_choice("order", order, (1, 2))
        self.solver_type = check_choice("solver_type", solver_type, ("taylor", "midpoint"))
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict:
        a0, s0, a1, s1, lam = _intervals(ctx, ts)
        h = lam.diff()
        # int_0^h 2 e^{-2(h-u)} u^k/k! du = (2h)^k phi_{k+1}(2h) / 2^k: substitute w = 2u.
        p1, p2, _ = _phis(2 * h, -1)
        orders = _orders(self.multistep_order, ts, self.lower_order_final)
        phis = (p1, p2, torch.zeros_like(p1))
        w = _multistep_weights(h, phis, orders, self.solver_type == "midpoint") * a1[:, None]
        ratio, noise = (s1 / s0) * torch.exp(-h), s1 * torch.sqrt(p1)
        if orders[-1] == 0:  # ending at sigma_1 = 0: no noise, x_1 = alpha_1 x0_hat
            noise[-1] = 0.0
        _end_at_zero(orders, ratio, w, True, a0, s0, a1)
        return {
            "ms": [],
            "orders": orders,
            "ratio": ratio,
            "w": w,
            "m_x": 1 / a0,
            "m_score": s0**2 / a0,
            "noise": noise,
        }

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        x1 = _multistep(ctx, i, t0, x, state, self.multistep_order)
        return torch.addcmul(x1, state["noise"][i], ctx.noise(t0, t1)), state


def _unipc_weights(
    lam: list[float], s: int, nodes: Iterable[int], new: bool, data: bool, bh: str
) -> tuple[float, dict[int, float]]:
    """Weights of the UniPC update over interval s (lambda_s -> lambda_{s+1}) as (w_s, {j: w_j}).

    The update (Zhao et al. 2023, Sec. 3, multistep form with B(h); data form shown: hh = -h; the
    noise form has hh = h, alpha_1/alpha_0 for the ratio and sigma for alpha) is
        x_{s+1} = (sigma_{s+1}/sigma_s) x_s - alpha_{s+1} [(e^hh - 1) m_s
                  + B(h) sum_k rho_k (m_{j_k} - m_s) / r_k],   r_k = (lambda_{j_k} - lambda_s) / h,
    over the earlier outputs j_k in ``nodes`` and, for the corrector (``new``), the output
    m_{s+1} at the predicted point (r = 1). rho solves the order conditions R rho = b with
    R_{pk} = r_k^(p-1) and b_p = hh phi_{p+1}(hh) p! / B(h) (a predictor drops the last row and
    column; rho = 1/2 for a lone difference, as their reference code does).
    Returned are the scalar multipliers of -alpha_{s+1} m (or -sigma_{s+1} m): the update is
    linear in the m's, so it is computed once per grid.
    """
    h = lam[s + 1] - lam[s]
    hh = -h if data else h
    idx = [*nodes, s + 1] if new else list(nodes)
    r = [(lam[j] - lam[s]) / h for j in idx]
    if not r:
        return math.expm1(hh), {}
    order = len(r) + (0 if new else 1)  # rows of R: the points used plus, for UniP, r = 1
    b_h = hh if bh == "bh1" else math.expm1(hh)
    phi, fact, b = math.expm1(hh) / hh - 1, 1, []
    for p in range(1, order + 1):
        b.append(phi * fact / b_h)
        fact *= p + 1
        phi = phi / hh - 1 / fact
    if len(r) == 1:
        rho = [0.5]
    else:
        nodes_r = r if new else [*r, 1.0]
        R = np.array([[x ** (p - 1) for x in nodes_r] for p in range(1, order + 1)])
        rho = np.linalg.solve(R if new else R[:-1, :-1], b if new else b[:-1]).tolist()
    w = {j: b_h * rho_k / r_k for j, rho_k, r_k in zip(idx, rho, r, strict=True)}
    return math.expm1(hh) - sum(w.values()), w


@functools.lru_cache(maxsize=32)
def _unipc_tables(
    lams: tuple[float, ...],
    orders: tuple[int, ...],
    keep: int,
    data: bool,
    bh: str,
    corrector: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(predictor, corrector) weights of every step, (steps, keep) each, from the grid's
    lambdas (``_unipc_weights``). A pure function of host floats, so cached: the per-step linear
    solves took most of a UniPC call's set-up (about 40 us a step on a CPU), and repeated calls
    on one grid (a batch after another) need them once. Read-only: callers copy."""
    steps = len(orders)
    pred_w = np.zeros((steps, keep))  # numpy while filled element by element: cheaper
    corr_w = np.zeros((steps, keep))  # the corrector applied at step i
    lam = list(lams)
    for s, p in enumerate(orders):
        if p > 0:  # p == 0: the last step ends at sigma = 0, see _end_at_zero
            ws, w = _unipc_weights(lam, s, range(s - 1, s - p, -1), False, data, bh)
            pred_w[s, 0] = ws
            for j, wj in w.items():
                pred_w[s, s - j] = wj
        if corrector and s > 0:  # correct x~_s with the output at it (offset 0)
            q = orders[s - 1]
            ws, w = _unipc_weights(lam, s - 1, range(s - 2, s - 1 - q, -1), True, data, bh)
            corr_w[s, 1] = ws
            for j, wj in w.items():
                corr_w[s, s - j] = wj
    pred_w.flags.writeable = corr_w.flags.writeable = False
    return pred_w, corr_w


class UniPC(Solver):
    """UniPC multistep (Zhao et al. 2023), orders 1-3: UniP predictor plus UniC corrector.

    Step i evaluates the model once, at the predicted point x~_i; the corrector then replaces x~_i
    by a higher-order update from x_{i-1} that includes this output, and the predictor takes the
    next step from the corrected x_i with the same output, so the corrector costs no evaluation
    (none after the last step). UniP-p has order p, UniC raises it to p + 1 (their Cor. 3.2 and
    Thm. 3.1; tested through the local error on Gaussian data, and step for step against diffusers'
    UniPCMultistepScheduler).

    ``prediction`` picks the data (x0_hat) or noise (eps_hat) form, ``variant`` B(h) = hh ("bh1")
    or e^hh - 1 ("bh2") with hh = -h (data) or h (noise), by default the one that does not grow
    exponentially in that form (data: bh2, diffusers' default; noise: bh1); ``corrector=False``
    leaves UniP alone. The defaults (order 3, noise form, quadratic grid) are the benchmark's best
    (docs/samplers.md). Under strong classifier-free guidance use ``prediction="data"`` (measured
    at order 2): the noise form diverged at w = 8 with exact scores (docs/choosing.md, Guidance).
    End: as ``dpm_solver`` (x at eps; x0_hat on a grid ending at t = 0; no corrector after the
    last step).
    """

    name = "unipc"
    order = 4  # UniP-3 + UniC; __init__ sets the instance's (order option + corrector)
    #: Steps when none are given (issue 20); what they reach on the hard mixtures is measured by
    #: benchmarks/defaults.py (docs/samplers.md, "Defaults measured on hard data").
    default_steps = 100
    #: Chosen by benchmarks/samplers.py (error per NFE at 5-20 steps); see docs/samplers.md.
    default_time_grid = "quadratic"

    def __init__(
        self,
        order: int = 3,
        prediction: str = "noise",
        variant: str | None = None,
        corrector: bool = True,
        lower_order_final: bool = True,
    ):
        # UniP-p has order p, UniC raises it to p + 1 (``order`` is the metadata of the pair).
        self.predictor_order = check_choice("order", order, (1, 2, 3))
        self.prediction = check_choice("prediction", prediction, ("data", "noise"))
        # B(h) with hh = -h (data) or +h (noise): bh2 = e^hh - 1 is bounded in the data form but
        # grows like e^h in the noise form; bh1 = hh grows only linearly. Benchmarked
        # (docs/samplers.md): at 5 steps each form is 3-5x worse with the other's choice, within
        # 1.25x from 10 steps on (geometric mean over six cases).
        variant = variant or ("bh2" if prediction == "data" else "bh1")
        self.variant = check_choice("variant", variant, ("bh1", "bh2"))
        self.corrector = check_bool("corrector", corrector)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.order = self.predictor_order + self.corrector

    def init(self, ctx: Context, x: Tensor, ts: Tensor) -> dict:
        a0, s0, a1, s1, lam = _intervals(ctx, ts)
        orders = _orders(self.predictor_order, ts, self.lower_order_final)
        data = self.prediction == "data"
        # The weights come from small per-step linear solves: on the host, in float64, once.
        pred_w, corr_w = _unipc_tables(
            tuple(lam.cpu().tolist()),
            tuple(orders),
            self.predictor_order + 1,
            data,
            self.variant,
            self.corrector,
        )
        scale = (a1 if data else s1).cpu()
        pred = (-scale[:, None] * torch.tensor(pred_w)).to(x.device)  # copies: the tables are
        corr = torch.tensor(corr_w)  # cached (read-only)
        corr[1:] *= -scale[:-1, None]
        ratio = s1 / s0 if data else a1 / a0
        _end_at_zero(orders, ratio, pred, data, a0, s0, a1)
        m_x, m_score = (1 / a0, s0**2 / a0) if data else (None, -s0)
        return {
            "ms": [],
            "x_prev": None,
            "orders": orders,
            "ratio": ratio,
            "pred": pred,
            "corr": corr.to(x.device),
            "m_x": m_x,
            "m_score": m_score,
        }

    def step(self, ctx: Context, i: int, t0: Tensor, t1: Tensor, x: Tensor, state):
        _push_output(ctx, i, t0, x, state, self.predictor_order + 1)
        ms, orders = state["ms"], state["orders"]
        if self.corrector and state["x_prev"] is not None:  # x_i from x_{i-1}, m_i, m_{i-1}, ...
            x = _combine(
                state["ratio"][i - 1], state["x_prev"], state["corr"][i], ms, orders[i - 1] + 1
            )
        state["x_prev"] = x
        return _combine(state["ratio"][i], x, state["pred"][i], ms, orders[i]), state
