"""Conditional flow matching on the SDE's Gaussian path, with independent, minibatch-OT or given
(reflow) couplings of noise and data.

Every SDE here defines the path x_t = alpha_t x0 + sigma_t eps. Flow matching regresses a velocity
field on the path's time derivative d x_t / dt = alpha'_t x0 + sigma'_t eps (Lipman et al. 2023,
"Flow Matching for Generative Modeling", Eq. 23, written in the forward-time convention of this
package: t = 0 is data, t = T noise). Its minimiser is E[alpha' x0 + sigma' eps | x_t], which for
the independent coupling is the probability-flow ODE's velocity f x - g^2 score / 2 (Song et al.
2021, Eq. 13), so a model trained this way samples with every ODE solver.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from .losses import TIME_SAMPLING, TRAIN_EPS, loss_times
from .model import ScoreModel
from .parameterization import regression_target
from .sde import SDE, batch_coeff, randn
from .validation import check_choice, check_instance, check_tensor

#: How noise is paired with data in ``flow_matching_loss``.
COUPLINGS = ("independent", "ot", "pairs")


def ot_permutation(x0: Tensor, noise: Tensor) -> Tensor:
    """The permutation ``perm`` for which pairing x0[i] with noise[perm[i]] minimises
    sum_i ||x0[i] - noise[perm[i]]||^2: the minibatch optimal-transport coupling of Tong et al.
    2024 ("Improving and generalizing flow-based generative models with minibatch optimal
    transport", Sec. 3.2, exact OT on the batch), solved by ``scipy.optimize.linear_sum_assignment``
    on the (batch, batch) squared-distance cost, in float64 on the host (one sync per call).

    The optimal permutation is the same for noise scaled by any c > 0 (the sum of ||noise||^2 over
    a permutation is constant, so only -2 c <x0_i, noise_perm(i)> matters): pairing the data with
    eps or with the prior draw sigma_T eps is the same coupling.
    """
    check_tensor("x0", x0, min_dim=1)
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    b = x0.shape[0]
    cost = torch.cdist(
        x0.detach().reshape(b, -1).to(torch.float64), noise.detach().reshape(b, -1).double()
    ).pow(2)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    perm = np.empty(b, dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm).to(x0.device)


def flow_matching_loss(
    sde: SDE,
    model: ScoreModel | DistributedDataParallel,
    x0: Tensor,
    coupling: str = "independent",
    eps: float = TRAIN_EPS,
    time_sampling: str = "uniform",
    reduction: str = "mean",
    y: Tensor | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Conditional flow matching (Lipman et al. 2023, Eq. 23) on the SDE's Gaussian path.

    With t ~ U(eps, T) (or ``time_sampling`` as in ``dsm_loss``), eps ~ N(0, I) paired with x0 by
    ``coupling``, and x_t = alpha_t x0 + sigma_t eps, the per-sample loss is

        || u_theta(x_t, t) - (alpha'_t x0 + sigma'_t eps) ||^2,
        alpha' = f alpha,  sigma' = (g^2 + 2 f sigma^2) / (2 sigma),

    summed over the event dims. u_theta is the velocity the model implies
    (``model(x, t, y, output="velocity")``): the network's output for the ``"velocity"``
    parameterization (the natural one; Lipman et al.), a conversion of it for the others, so any
    parameterization trains. For ``RectifiedFlow`` (alpha = 1 - t, sigma = t) the target is
    eps - x0 (Liu et al. 2023, Eq. 1).

    Parameters
    ----------
    coupling
        ``"independent"``: eps ~ N(0, I) independent of x0. ``"ot"``: the noise batch permuted to
        the exact optimal-transport pairing with the data batch (``ot_permutation``; Tong et al.
        2024), one host sync per call. ``"pairs"``: ``noise`` given, noise[i] coupled to x0[i]
        (reflow: ``reflow_pairs``; Liu et al. 2023, Sec. 2.3).
    t
        (batch,) or 0-d times in (0, T] to fix the draw (t = 0 is excluded: sigma'_0 is 0/0 or
        infinite there); else drawn in [eps, T].
    noise
        x0's shape; drawn from ``generator`` when None (not allowed for ``"pairs"``).
    reduction
        ``"mean"`` (scalar) or ``"none"`` ((batch,) per-sample losses).
    """
    check_instance("sde", sde, SDE)
    # A DDP-wrapped ScoreModel (the Trainer's) keeps it in .module; the velocity is a forward
    # keyword so that DDP all-reduces its gradients.
    # torch.compile's wrapper (Trainer's compile=) keeps the module it compiled in ._orig_mod.
    inner = getattr(model, "_orig_mod", model)
    if not isinstance(getattr(inner, "module", inner), ScoreModel):
        raise TypeError(
            "model must be a ScoreModel (its velocity is model(x, t, y, output='velocity')), "
            f"got {type(model).__name__}"
        )
    check_choice("coupling", coupling, COUPLINGS)
    check_choice("time_sampling", time_sampling, TIME_SAMPLING)
    check_choice("reduction", reduction, ("mean", "none"))
    check_tensor("x0", x0, min_dim=1)
    b = x0.shape[0]
    if coupling == "pairs" and noise is None:
        raise ValueError('coupling="pairs" needs the coupled noise: pass noise= (x0\'s shape)')
    t = loss_times(sde, b, t, eps, time_sampling, generator, x0.device, positive=True)
    if noise is None:
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    if coupling == "ot":
        noise = noise[ot_permutation(x0, noise)]
    c = sde.coeffs(t)
    x_t = batch_coeff(c.alpha, x0) * x0 + batch_coeff(c.sigma, x0) * noise
    target = regression_target("velocity", x0, noise, c.alpha, c.sigma, f=c.f, g2=c.g2)
    u = model(x_t, t.to(x0.dtype), y, output="velocity")
    losses = (u - target).reshape(b, -1).pow(2).sum(1)
    return losses.mean() if reduction == "mean" else losses
