"""Exact-score problems shared by ``benchmarks/samplers.py`` and ``benchmarks/external.py``.

A problem is a Gaussian mixture (whose score is exact under every linear SDE, see
``scoresde.oracle``) plus the helpers both benchmarks need: exact samples of a marginal p_t, a
tight-tolerance probability-flow reference from a given x_T, and the metrics (MMD^2 from
``scoresde.metrics``, the Frechet distance of Gaussian fits, the RMS distance to the reference).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

import scoresde as sd
from scoresde.comparison import (
    aniso256,
    gmm64,
    grid,
    markdown_table,  # noqa: F401  (the benchmarks' P.markdown_table)
    narrow,
    ring,
)
from scoresde.metrics import mmd2, mode_assignment, mode_weight_tv, width_error

F64 = torch.float64


# The problems are the presets of ``scoresde.comparison`` (one source of truth): ``ring``, 8
# Gaussians on a circle of radius 2, std 0.2; ``grid``, 25 on a 5 x 5 grid; ``gmm64``, a seeded
# random 64-D mixture of 8 components; and the hard cases of issue 13: ``narrow``, 7 anisotropic 2-D
# modes with stds 0.02-0.5 and weights 0.02-0.30, and ``aniso256``, 8 anisotropic 256-D modes with
# per-coordinate stds 0.02-0.5 and weights 0.02-0.30.
PROBLEMS = {"ring": ring, "grid": grid, "gmm64": gmm64, "narrow": narrow, "aniso256": aniso256}


def make_sde(name: str, T: float | None = None) -> sd.SDE:
    """Song et al.'s default SDEs: VP and sub-VP with beta in [0.1, 20], VE with sigma in
    [0.01, 50]."""
    if name == "vp":
        return sd.VPSDE(T=T)
    if name == "subvp":
        return sd.SubVPSDE(T=T)
    if name == "ve":
        return sd.VESDE(0.01, 50.0) if T is None else sd.VESDE(0.01, 50.0, T=T)
    raise ValueError(f"unknown sde {name!r}; choose vp, subvp, ve")


SDE_NAMES = ("vp", "subvp", "ve")


def marginal_samples(sde: sd.SDE, data: sd.GaussianMixture, t: float, n: int, seed: int) -> Tensor:
    """n exact samples of p_t = alpha_t data + sigma_t N(0, I), float64 (t = 0 gives the data
    for VP / sub-VP; for VE sigma_0 = sigma_min, see ``VESDE``)."""
    g = torch.Generator().manual_seed(seed)
    x0 = data.sample(n, generator=g)
    if t == 0:
        return x0
    alpha, sigma = sde.marginal(torch.tensor(t, dtype=F64))
    return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)


def prior_noise(n: int, d: int, seed: int) -> Tensor:
    """Standard normal z (float64) shared by every sampler: x_T = prior_std * z (common random
    numbers)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------------------------
# metrics


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) between Gaussian fits of two sample
    sets (Dowson & Landau 1982; the FID formula of Heusel et al. 2017, Eq. 6), in float64."""
    xs = x.reshape(x.shape[0], -1).to(F64).numpy()
    ys = y.reshape(y.shape[0], -1).to(F64).numpy()
    mx, my = xs.mean(0), ys.mean(0)
    sx = np.atleast_2d(np.cov(xs, rowvar=False))
    sy = np.atleast_2d(np.cov(ys, rowvar=False))
    covmean = scipy.linalg.sqrtm(sx @ sy)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mx - my) ** 2).sum() + np.trace(sx + sy - 2 * covmean))


def rms(x: Tensor, ref: Tensor) -> float:
    """Root-mean-square distance per coordinate, sqrt(mean((x - ref)^2)), in float64."""
    return float((x.to(F64) - ref.to(F64)).pow(2).mean().sqrt())


@dataclass
class PathError:
    """Distance of deterministic samples to the reference, per sample e_i = RMS over coordinates.

    rms = sqrt(mean e_i^2) is dominated on well-separated multimodal data by the few samples that
    the solver sends to a different mode than the exact flow (one such sample in 1000 on the 64-D
    mixture weighs as much as a median error of 0.03 everywhere), so the median e_i and the count
    of samples whose most likely component differs from the reference's are reported with it.
    """

    rms: float
    median: float
    switches: int


def path_error(data: sd.GaussianMixture, x: Tensor, ref: Tensor) -> PathError:
    x64, r64 = x.reshape(x.shape[0], -1).to(F64), ref.reshape(ref.shape[0], -1).to(F64)
    if not bool(torch.isfinite(x64).all()):
        return PathError(float("nan"), float("nan"), -1)
    e = (x64 - r64).pow(2).mean(1)
    switches = int((component(data, x64) != component(data, r64)).sum())
    return PathError(float(e.mean().sqrt()), float(e.median().sqrt()), switches)


def component(data: sd.GaussianMixture, x: Tensor) -> Tensor:
    """Index of the most likely mixture component of each sample (argmax_k w_k N(x; m_k, s_k))."""
    return mode_assignment(x, data)


def safe_mmd2(x: Tensor, y: Tensor) -> float:
    """``scoresde.metrics.mmd2`` (kernel scales from y), NaN for samples that are not finite."""
    if not bool(torch.isfinite(x).all()):
        return float("nan")
    return mmd2(x, y)


def mixture_errors(data: sd.GaussianMixture, x: Tensor) -> tuple[float, float]:
    """(mode-weight TV, width error) of samples x against the mixture (``scoresde.metrics``),
    NaN for samples that are not finite."""
    if not bool(torch.isfinite(x).all()):
        return float("nan"), float("nan")
    return mode_weight_tv(x, data), width_error(x, data)


def safe_frechet(x: Tensor, y: Tensor) -> float:
    if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > 1e6:
        return float("nan")
    return frechet_distance(x, y)


@dataclass
class Floor:
    """Spread of a metric between independent exact sample sets and the fixed target set."""

    mmd_mean: float
    mmd_std: float
    fd_mean: float
    fd_std: float
    draws: int


def noise_floor(
    sde: sd.SDE, data: sd.GaussianMixture, t: float, target: Tensor, draws: int, seed: int
) -> Floor:
    """MMD^2 and Frechet distance of ``draws`` fresh exact sets of p_t against ``target``."""
    n = target.shape[0]
    mm, fd = [], []
    for k in range(draws):
        x = marginal_samples(sde, data, t, n, seed + 1000 + k).float()
        mm.append(mmd2(x, target))
        fd.append(frechet_distance(x, target))
    mm_a, fd_a = np.array(mm), np.array(fd)
    return Floor(mm_a.mean(), mm_a.std(ddof=1), fd_a.mean(), fd_a.std(ddof=1), draws)


# ----------------------------------------------------------------------------------------------
# reference


def pf_ode_reference(
    sde: sd.SDE, score_fn, x_T: Tensor, t_end: float, rtol: float = 1e-8
) -> tuple[Tensor, int, float]:
    """The probability-flow ODE solution from (T, x_T) to t_end in float64 with ``ode_rk45`` at
    rtol = atol = ``rtol``. Returns (x, nfe, seconds)."""
    t0 = time.perf_counter()
    res = sd.sample(
        sde,
        score_fn,
        tuple(x_T.shape),
        solver="ode_rk45",
        rtol=rtol,
        atol=rtol,
        eps=t_end,
        x_T=x_T.to(F64),
    )
    return res.samples, res.nfe, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# formatting


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.{digits - 1}e}"


def command_line() -> str:
    args = " ".join(sys.argv[1:])
    script = os.path.relpath(sys.argv[0]) if sys.argv[0] else "python"
    return f"python {script} {args}".rstrip()


def environment_line() -> str:
    import platform

    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
