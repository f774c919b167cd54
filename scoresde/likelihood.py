"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

Along the probability-flow ODE dx/dt = F(x, t) = f(t) x - g(t)^2 score(x, t) / 2 the density obeys
the instantaneous change of variables d log p_t(x_t)/dt = -div F(x_t, t) (Chen et al. 2018, Thm. 1):

    log p_eps(x) = log pi(x_T) + int_eps^T div F(x_t, t) dt,   x_eps = x,

with div F = f(t) d - g(t)^2 / 2 tr(d score / dx). The trace is computed exactly (d backward
passes) or estimated with Hutchinson's v^T (d score / dx) v, E[v v^T] = I (Grathwohl et al. 2019).
The result has two errors: the integration error, and the prior mismatch log p_T - log pi, which no
tolerance removes (pass the exact ``prior_logp`` of p_T to isolate the first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .paths import check_start
from .sde import SDE, ScoreFn, batch_coeff, randn
from .solvers.base import CountingScore
from .solvers.ode import FIXED_STEPS, check_scipy_method, dopri5, scipy_solve
from .validation import (
    batch_time,
    check_callable,
    check_choice,
    check_generator,
    check_instance,
    check_int,
    check_positive,
    check_real,
    check_tensor,
)

DIVERGENCES = ("exact", "hutchinson")
INTEGRATORS = ("rk45", "scipy", *FIXED_STEPS)


@dataclass
class LikelihoodResult:
    """What ``log_likelihood`` returns.

    Attributes
    ----------
    logp
        ``(batch,)`` log p_eps(x) in nats = prior_logp + delta_logp.
    nfe
        Score evaluations (each also costs one or more backward passes).
    x_T
        The ODE's end point.
    eps
        Start time.
    """

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    x_T: Tensor
    nfe: int
    eps: float
    stats: dict[str, Any] = field(default_factory=dict)


def _divergence_fn(sde: SDE, score: CountingScore, event: tuple[int, ...], divergence, probes):
    """Right-hand side of the augmented ODE on y = [x flattened, delta_logp]: (batch, d + 1)."""
    d = math.prod(event)

    def fn(y: Tensor, t: Tensor) -> Tensor:
        t = batch_time(t, y, t.dtype)  # the fixed-step rules and scipy_solve pass a 0-d t
        with torch.enable_grad():
            x = y[:, :d].detach().reshape(-1, *event).requires_grad_(True)
            s = score(x, t)
            if not s.requires_grad:
                raise ValueError(
                    f"divergence={divergence!r} needs a score_fn differentiable in x (autograd), "
                    "but it returned a tensor without a gradient graph"
                )
            if divergence == "exact":
                sf = s.reshape(s.shape[0], -1)
                tr = sum(
                    torch.autograd.grad(sf[:, i].sum(), x, retain_graph=i < d - 1)[0].reshape(
                        s.shape[0], -1
                    )[:, i]
                    for i in range(d)
                )
            else:
                tr = 0.0
                for v in probes:
                    (jv,) = torch.autograd.grad((s * v).sum(), x, retain_graph=True)
                    tr = tr + (jv * v).reshape(s.shape[0], -1).sum(1)
                tr = tr / len(probes)
        f, g2 = sde.f(t), sde.g2(t)
        drift = batch_coeff(f, x) * x.detach() - 0.5 * batch_coeff(g2, x) * s.detach()
        div = (f * d - 0.5 * g2 * tr.detach()).to(y.dtype)
        return torch.cat([drift.reshape(y.shape[0], -1), div[:, None]], dim=1)

    return fn


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    *,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    eps: float = 1e-5,
    integrator: str = "rk45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    method: str = "RK45",
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
) -> LikelihoodResult:
    """log p_eps(x) of the probability-flow ODE model, per sample, in nats.

    Parameters
    ----------
    x
        ``(batch, *event)`` data at time eps.
    divergence
        "exact" (full Jacobian trace: d backward passes per evaluation, for low dimensions) or
        "hutchinson" (``n_probes`` Rademacher or Gaussian probes). The probes are drawn once per
        solve and held fixed along the trajectory, as in Song et al. and FFJORD: the ODE's
        right-hand side must be a deterministic smooth function for an adaptive solver to control
        its error (fresh probes per evaluation would make it noise), and the estimate stays
        unbiased because the trajectory does not depend on the probes, so the expectation passes
        through the integral.
    integrator
        "rk45" (on-device adaptive Dormand–Prince, ``rtol``/``atol``), "scipy" (``solve_ivp``
        with ``method=``), or fixed-step "euler" / "heun" / "rk4" with ``steps``.
    chunk_size
        Solve at most this many samples at a time (bounds memory; results are the same because
        every sample has its own step size).
    prior_logp
        Log density used at T, default ``sde.prior_logp``.
    """
    check_instance("sde", sde, SDE)
    check_callable("score_fn", score_fn)
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("integrator", integrator, INTEGRATORS)
    check_choice("probe", probe, ("rademacher", "gaussian"))
    check_tensor("x", x, min_dim=2, finite=True)
    if x.shape[0] < 1:
        raise ValueError("x must have shape (batch, *event) with batch >= 1")
    eps = check_real("eps", eps, 0.0, sde.T, lo_open=True, hi_open=True)
    check_start(sde, sde.T, "the likelihood's probability-flow ODE cannot end")
    n_probes = check_int("n_probes", n_probes, 1)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if integrator in FIXED_STEPS:
        if steps is None:
            raise ValueError(f"integrator {integrator!r} needs steps (an integer >= 1)")
        steps = check_int("steps", steps, 1)
    if integrator == "scipy":
        check_scipy_method(method)
    check_generator("generator", generator)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    if prior_logp is not None:
        check_callable("prior_logp", prior_logp)

    score = CountingScore(score_fn)
    parts = []
    for xc in x.split(chunk_size or x.shape[0]):
        probes = []
        if divergence == "hutchinson":
            for _ in range(n_probes):
                v = randn(xc.shape, generator, xc.device, xc.dtype)
                probes.append(v.sign() if probe == "rademacher" else v)
        fn = _divergence_fn(sde, score, tuple(xc.shape[1:]), divergence, probes)
        y = torch.cat([xc.reshape(xc.shape[0], -1), xc.new_zeros(xc.shape[0], 1)], dim=1)
        chunk_stats: dict[str, Tensor] = {}
        if integrator == "rk45":
            y, chunk_stats = dopri5(fn, y, eps, sde.T, rtol, atol)
        elif integrator == "scipy":
            y, _ = scipy_solve(fn, y, eps, sde.T, method, rtol, atol)
        else:
            ts = torch.linspace(eps, sde.T, steps + 1, dtype=torch.float64, device=y.device)
            for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
                y = FIXED_STEPS[integrator](fn, y, t0, t1)
        parts.append((y[:, :-1].reshape(xc.shape), y[:, -1], chunk_stats))
    x_T = torch.cat([p[0] for p in parts])
    delta = torch.cat([p[1] for p in parts])
    stats = {key: torch.cat([p[2][key] for p in parts]) for key in parts[0][2]}
    prior = (prior_logp or sde.prior_logp)(x_T)
    return LikelihoodResult(prior + delta, prior, delta, x_T, score.nfe, eps, stats)


def dequantize(
    x: Tensor, n_bits: int = 8, scale: str = "[-1,1]", generator: torch.Generator | None = None
) -> Tensor:
    """Uniform dequantisation of integer data in {0, ..., 2^n_bits - 1} to continuous values.

    u = (x + U) / 2^n_bits with U ~ Uniform[0, 1)^D lies in [0, 1]^D; ``scale="[-1,1]"`` maps it
    to y = 2u - 1 (the convention of Song et al. / Ho et al.), ``"[0,1]"`` keeps u.
    """
    check_choice("scale", scale, ("[-1,1]", "[0,1]"))
    check_tensor("x", x, floating=False)
    n_bits = check_int("n_bits", n_bits, 1)
    check_generator("generator", generator)
    dev = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=dev, dtype=torch.float64).to(x.device)
    u = (x.to(torch.float64) + noise) / 2**n_bits
    return 2 * u - 1 if scale == "[-1,1]" else u


def bits_per_dim(logp: Tensor, dims: int, n_bits: int = 8, scale: str = "[-1,1]") -> Tensor:
    """Bits per dimension of n_bits-bit data from the log density of its dequantised, rescaled copy.

    Derivation: with u = (x + U)/K, K = 2^n_bits, the discrete probability is
    P(x) = int_{[0,1)^D} p_u((x + U)/K) K^-D dU >= K^-D exp(E_U log p_u) (Jensen), so
    -log2 P(x) <= -E_U log p_u / ln 2 + D n_bits (Theis et al. 2016).
    If the model is on y = a u + b (``"[-1,1]"``: a = 2), p_u(u) = p_y(y) a^D, hence
        bits/dim = -log p_y(y) / (D ln 2) - log2(a) + n_bits.
    ``logp`` is log p_y (nats) per sample, e.g. ``log_likelihood(...).logp`` on dequantised data.
    """
    check_choice("scale", scale, ("[-1,1]", "[0,1]"))
    dims = check_int("dims", dims, 1)
    n_bits = check_int("n_bits", n_bits, 1)
    log2_a = 1.0 if scale == "[-1,1]" else 0.0
    return -logp / (dims * math.log(2)) - log2_a + n_bits
