"""Run scoresde's solvers on a Hugging Face ``diffusers`` UNet and noise scheduler.

``from_diffusers(unet, scheduler)`` returns a ``DiffusersScore``: a ``VPSDE`` whose DDPM
discretisation is the scheduler's beta chain, the explicit map between continuous time t and the
scheduler's timestep k, and ``score_fn(x, t)`` that calls the UNet and turns its output (eps, v or
x0, per ``scheduler.config.prediction_type``) into a score. Convention (as in tests/test_ddpm.py):
diffusers' timestep k = 0..N-1 is the chain index i = k + 1 of Ho et al. 2020, so
``alphas_cumprod[k] = alpha(t_of(k))^2`` with t_of(k) = ``VPSDE.discrete_times(N)[k + 1]``.
``diffusers`` is imported by nothing here: any object with the attributes used works.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .parameterization import score_from_prediction
from .sde import VPSDE, as_time

#: diffusers ``prediction_type`` -> scoresde parameterisation name.
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
#: diffusers ``beta_schedule`` values with an exact continuous-time VPSDE.
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def sde_from_scheduler(scheduler: Any) -> VPSDE:
    """The VPSDE whose N-step chain (``discrete_betas(N)``) is the scheduler's betas.

    linear: beta_i = linspace(beta_start, beta_end, N) = linspace(beta_min / N, beta_max / N, N),
    so beta_min = N beta_start, beta_max = N beta_end (Ho et al. 2020). scaled_linear (Stable
    Diffusion): beta_i = linspace(sqrt(beta_start), sqrt(beta_end), N)^2, the chain of
    ``schedule="scaled_linear"`` with the same beta_min, beta_max. squaredcos_cap_v2: the
    cosine schedule of Nichol & Dhariwal 2021, Eq. 17 (betas clipped at 0.999).
    """
    config = scheduler.config
    kind = config.beta_schedule
    n = int(config.num_train_timesteps)
    if getattr(config, "trained_betas", None) is not None:
        raise ValueError("schedulers with trained_betas are not supported (no continuous SDE)")
    if kind in ("linear", "scaled_linear"):
        beta_min, beta_max = n * float(config.beta_start), n * float(config.beta_end)
        sde = VPSDE(beta_min, beta_max, schedule=kind)
        # The chain decays slightly faster than exp(-B(t)): its last time is just above 1.
        return VPSDE(beta_min, beta_max, schedule=kind, T=float(sde.discrete_times(n)[-1]))
    if kind == "squaredcos_cap_v2":
        return VPSDE(schedule="cosine")
    raise ValueError(
        f"beta_schedule must be one of {BETA_SCHEDULES} (the schedules with an exact continuous-"
        f"time VPSDE), got {kind!r}"
    )


class DiffusersScore:
    """A diffusers UNet + scheduler seen as a score model of a VPSDE.

    Attributes
    ----------
    sde
        ``VPSDE`` with alpha(t_of(k))^2 = ``scheduler.alphas_cumprod[k]`` (checked at construction
        to float32 rounding, rtol ``rtol``).
    times
        ``(N + 1,)`` float64, ``sde.discrete_times(N)``: t_0 = 0 < t_1 < ... < t_N.
    """

    def __init__(self, unet: Any, scheduler: Any, rtol: float = 2e-6, **unet_kwargs: Any):
        prediction = scheduler.config.prediction_type
        if prediction not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {tuple(PREDICTION_TYPES)}, got {prediction!r}"
            )
        self.unet = unet
        self.scheduler = scheduler
        self.parameterization = PREDICTION_TYPES[prediction]
        self.unet_kwargs = unet_kwargs
        self.sde = sde_from_scheduler(scheduler)
        self.num_train_timesteps = n = int(scheduler.config.num_train_timesteps)
        self.times = self.sde.discrete_times(n)
        self._times_on: dict[torch.device, Tensor] = {}
        abar = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
        ts = self.times[1:]
        inside = ts <= self.sde.T  # the cosine chain's last times lie beyond its clipped T
        ours = torch.exp(2 * self.sde.log_alpha(ts[inside]).to(torch.float64))
        err = ((ours - abar[inside]).abs() / abar[inside]).max()
        if not bool(err <= rtol):
            raise ValueError(
                f"the VPSDE's alpha_bar differs from scheduler.alphas_cumprod by {float(err):.3g}"
                f" (relative) > rtol = {rtol}: unsupported scheduler configuration"
            )
        self.max_relative_error = float(err)

    def t_of(self, k: Tensor | float) -> Tensor:
        """Continuous time of (fractional) timestep k in [-1, N - 1]: linear interpolation of
        ``times`` at chain index i = k + 1 (exact at integers). float64."""
        i = torch.as_tensor(k, dtype=torch.float64) + 1
        if bool(((i < 0) | (i > self.num_train_timesteps)).any()):
            raise ValueError(f"k must lie in [-1, {self.num_train_timesteps - 1}]")
        times = self.times.to(i.device)
        lo = i.floor().clamp(max=self.num_train_timesteps - 1).long()
        w = i - lo
        return times[lo] + w * (times[lo + 1] - times[lo])

    def k_of(self, t: Tensor | float) -> Tensor:
        """Inverse of ``t_of``: fractional timestep k of time t in [0, t_N]. float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        times = self.times.to(t.device)
        # Solvers may pass t rounded to float32 (relative 6e-8): accept and clamp that much.
        if bool(((t < 0) | (t > times[-1] * (1 + 1e-6))).any()):
            raise ValueError(f"t must lie in [0, {float(times[-1])}]")
        return self._k_of(t)

    def _k_of(self, t: Tensor) -> Tensor:
        # k_of without the range check (a host sync): for score_fn inside the solvers' loops.
        if t.device not in self._times_on:  # one host-to-device copy, not one per step
            self._times_on[t.device] = self.times.to(t.device)
        times = self._times_on[t.device]
        t = t.clamp(min=torch.zeros_like(times[-1]), max=times[-1])
        hi = torch.searchsorted(times, t).clamp(1, self.num_train_timesteps)
        w = (t - times[hi - 1]) / (times[hi] - times[hi - 1])
        return hi - 1 + w - 1

    def timesteps_grid(self, timesteps: Tensor, end: float = 0.0) -> Tensor:
        """Decreasing time grid [t_of(k) for k in timesteps] + [end] for ``sample(time_grid=...)``.

        ``end = 0`` matches DDIM's ``set_alpha_to_one=True`` (final alpha_bar = 1)."""
        ts = self.t_of(torch.as_tensor(timesteps).to(torch.float64).cpu())
        return torch.cat([ts, torch.tensor([end], dtype=torch.float64)])

    def prediction(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        """The UNet output at x_t = x, ``unet(x, k_of(t), **kwargs).sample``; x's dtype."""
        k = self._k_of(as_time(t, x.device).to(torch.float64).expand(x.shape[0]))
        dtype = getattr(self.unet, "dtype", x.dtype)
        out = self.unet(x.to(dtype), k.to(dtype), **{**self.unet_kwargs, **kwargs})
        out = getattr(out, "sample", out)
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: the first half is the mean output
            out = out[:, : x.shape[1]]
        return out.to(x.dtype)

    def score_fn(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        """Score at (x, t) from the UNet's eps / v / x0 prediction; x: (B, C, H, W), t: (B,)."""
        alpha, sigma = self.sde.marginal(as_time(t, x.device).expand(x.shape[0]))
        pred = self.prediction(x, t, **kwargs)
        return score_from_prediction(
            pred, self.parameterization, x, alpha.to(x.dtype), sigma.to(x.dtype)
        )

    __call__ = score_fn


def from_diffusers(unet: Any, scheduler: Any, **unet_kwargs: Any) -> DiffusersScore:
    """Wrap a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` and a DDPM/DDIM scheduler.

    ``unet_kwargs`` (e.g. ``encoder_hidden_states=...``) are passed to every UNet call; per-call
    kwargs of ``score_fn`` override them.
    """
    return DiffusersScore(unet, scheduler, **unet_kwargs)
