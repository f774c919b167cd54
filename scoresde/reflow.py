"""Reflow (Liu et al. 2023, "Flow Straight and Fast", Sec. 2.3) and the straightness of a flow.

A trained flow's ODE maps each noise draw to a sample deterministically; the pairs
(noise, sample) are a coupling of the prior and the model's distribution. Training a second flow by
flow matching on those fixed pairs (``flow_matching_loss(..., coupling="pairs")``; the Trainer's
``noise=`` argument) gives the "2-rectified" flow, whose paths cross less and are straighter, so
that few Euler steps suffice. ``straightness`` measures how far a trajectory is from the straight
line between its ends (Liu et al., Sec. 2.2, S(Z)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sampling import make_solver, sample
from .sde import SDE, ScoreFn, randn
from .solvers.base import Solver
from .validation import check_callable, check_generator, check_instance, check_int, check_tensor

#: reflow_pairs' default integrator: adaptive Dormand-Prince (``ode_rk45``) at its default
#: tolerances, so the pairs are the ODE's solution and not a few-step approximation of it.
REFLOW_SOLVER = "ode_rk45"


def reflow_pairs(
    sde: SDE,
    score_fn: ScoreFn,
    n: int,
    event_shape: tuple[int, ...],
    *,
    solver: str | Solver = REFLOW_SOLVER,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **options,
) -> tuple[Tensor, Tensor]:
    """(noise, samples): ``n`` draws eps ~ N(0, I) and the probability-flow ODE's image of each.

    Each eps starts the ODE at x_T = prior_std * eps (so eps is the noise of the path
    x_T = alpha_T x0 + sigma_T eps up to alpha_T x0, exactly for ``RectifiedFlow(T=1.0)``) and is
    integrated by ``sample`` down to its ``eps`` time. Training on the pairs with
    ``flow_matching_loss(sde, model, samples, coupling="pairs", noise=noise)`` is one reflow
    (Liu et al. 2023, Algorithm 1: Z^{k+1} = RectFlow((Z_0^k, Z_1^k))).

    Parameters
    ----------
    score_fn
        The trained flow: a ``ScoreModel`` (any parameterization) or any score function.
    n, event_shape
        How many pairs, and the shape of one sample, e.g. ``(2,)``.
    solver
        A deterministic solver (the ODE's map; a stochastic one is a ValueError), default
        ``ode_rk45``; ``options`` go to ``sample`` (``steps``, ``rtol``, ``eps``, ``time_grid``...).
    batch_size
        Integrate this many at a time (default: all n at once).

    Returns
    -------
    noise, samples
        Two ``(n, *event_shape)`` tensors; noise[i] is coupled to samples[i].
    """
    check_instance("sde", sde, SDE)
    check_callable("score_fn", score_fn)
    n = check_int("n", n, 1)
    batch_size = n if batch_size is None else check_int("batch_size", batch_size, 1)
    generator = check_generator("generator", generator)
    algo = solver if isinstance(solver, Solver) else make_solver(solver)
    if algo.stochastic:
        raise ValueError(
            f"reflow_pairs needs a deterministic ODE solver (the flow's map), got {algo.name!r}"
        )
    shape = (n, *tuple(event_shape))
    noise = randn(shape, generator, device, dtype or torch.get_default_dtype())
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            z = noise[start : start + batch_size]
            res = sample(sde, score_fn, tuple(z.shape), solver, x_T=sde.prior_std * z, **options)
            out.append(res.samples)
    return noise, torch.cat(out)


def straightness(trajectory: Tensor, times: Tensor | None = None) -> Tensor:
    """Per-sample straightness S = int_0^1 ||(Z_1 - Z_0) - dZ_s/ds||^2 ds of trajectories
    (Liu et al. 2023, Sec. 2.2, Eq. for S(Z); 0 exactly for straight paths at constant speed).

    ``trajectory`` is ``(K + 1, n, *event)``: states on a grid from the noise end Z_0 to the sample
    Z_1, e.g. ``sample(..., return_trajectory=True).trajectory``. ``times`` ((K + 1,), the grid,
    ``res.times``) sets the rescaled time s_k = (t_0 - t_k) / (t_0 - t_K) in [0, 1]; default a
    uniform grid. The trajectory is read as piecewise linear between grid points, so dZ/ds is the
    difference quotient on each step and the integral is exact for it (error O(h^2) for a smooth
    path). Returns ``(n,)`` float64.
    """
    check_tensor("trajectory", trajectory, min_dim=2, floating=True)
    k = trajectory.shape[0] - 1
    if k < 1:
        raise ValueError(f"trajectory needs at least 2 states, got {trajectory.shape[0]}")
    z = trajectory.to(torch.float64).reshape(k + 1, trajectory.shape[1], -1)
    if times is None:
        ds = torch.full((k,), 1.0 / k, dtype=torch.float64, device=z.device)
    else:
        check_tensor("times", times, floating=True)
        if times.shape != (k + 1,):
            raise ValueError(f"times must have shape ({k + 1},), got {tuple(times.shape)}")
        t = times.to(device=z.device, dtype=torch.float64)
        s = (t[0] - t) / (t[0] - t[-1])
        ds = s.diff()
        if not bool((ds > 0).all()):
            raise ValueError("times must be strictly monotone")
    chord = z[-1] - z[0]  # (n, d)
    speed = z.diff(dim=0) / ds.reshape(-1, 1, 1)  # (K, n, d)
    return ((chord - speed).pow(2).sum(-1) * ds.reshape(-1, 1)).sum(0)
