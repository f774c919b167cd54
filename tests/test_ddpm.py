"""The discrete view: ``ancestral`` and ``ddim`` on VPSDE.discrete_times(N) are DDPM and DDIM.

Three independent references for the same chains:
  * scoresde/ddpm.py, written from Ho et al. 2020 (Alg. 2) and Song, Meng & Ermon 2021 (Eq. 12)
    in the papers' discrete indices, never touching the continuous-time solvers;
  * diffusers' DDPMScheduler / DDIMScheduler, stepped with the same noise (and its
    UniPCMultistepScheduler on the same chain against ``unipc``);
  * the algebraic identity DDIM(eta = 1) = DDPM with the posterior variance (DDIM paper, Sec. 4.1).
The noise prediction at chain index i (time t_i = discrete_times(N)[i]) of an exact score is
eps(x, i) = -sigma(t_i) score(x, t_i); diffusers' timestep k is chain index i = k + 1.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import scoresde as sd
from scoresde.ddpm import ddim_sample, ddpm_sample

F64 = torch.float64
N_TRAIN = 1000
SHAPE = (8, 2)

# The whole DDPM chain: its last time t_N = 1.0034 exceeds the default T = 1 (see discrete_times).
VP = sd.VPSDE(T=float(sd.VPSDE().discrete_times(N_TRAIN)[-1]))
TS = VP.discrete_times(N_TRAIN)  # t_0 = 0 < t_1 < ... < t_N = T
ANGLES = 2 * math.pi * torch.arange(3, dtype=F64) / 3
DATA = sd.GaussianMixture(
    torch.stack([ANGLES.cos(), ANGLES.sin()], 1) * 1.5, [0.1, 0.3, 0.2], weights=[0.5, 0.3, 0.2]
)
SCORE = sd.exact_score(VP, DATA)


def eps_at_index(x: torch.Tensor, i: int) -> torch.Tensor:
    """Exact noise prediction at chain index i: eps = -sigma(t_i) score(x, t_i)."""
    t = TS[i]
    return -VP.marginal(t)[1] * SCORE(x, t)


def draw_x_N(seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """x_N ~ N(0, I) drawn first from a fresh generator, which then drives the chain's noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g, dtype=F64), g


def test_vp_schedule_reproduces_ddpm_alpha_bars():
    # The premise of every test below: alpha(t_i)^2 = prod_{j <= i} (1 - beta_j).
    abar = torch.cumprod(1 - VP.discrete_betas(N_TRAIN), 0)
    assert_close(VP.marginal(TS[1:])[0] ** 2, abar, rtol=1e-13, atol=0)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ancestral_on_discrete_times_is_ddpm_algorithm_2(variance):
    x_N, g_ref = draw_x_N(0)
    expected = ddpm_sample(
        eps_at_index, VP.discrete_betas(N_TRAIN), x_N, generator=g_ref, variance=variance
    )
    x_T, g = draw_x_N(0)
    res = sd.sample(
        VP, SCORE, SHAPE, "ancestral", time_grid=TS.flip(0), x_T=x_T, generator=g, variance=variance
    )
    assert res.nfe == N_TRAIN
    assert_close(res.samples, expected, rtol=0, atol=1e-10)


TAUS_UNIFORM = list(range(N_TRAIN, 0, -20))  # 1000, 980, ..., 20
TAUS_QUADRATIC = sorted({int(round(1 + 999 * (k / 25) ** 2)) for k in range(26)}, reverse=True)


@pytest.mark.parametrize("taus", [TAUS_UNIFORM, TAUS_QUADRATIC], ids=["uniform", "quadratic"])
def test_ddim_eta0_on_discrete_subsequence_is_ddim_eq12(taus):
    x_N, _ = draw_x_N(1)
    expected = ddim_sample(eps_at_index, VP.discrete_betas(N_TRAIN), x_N, timesteps=taus)
    grid = TS[torch.tensor(taus + [0])]
    res = sd.sample(VP, SCORE, SHAPE, "ddim", time_grid=grid, x_T=x_N)
    assert res.nfe == len(taus)
    assert_close(res.samples, expected, rtol=0, atol=1e-13)


def test_ddim_eta1_with_same_noise_is_ddim_eq12_stochastic():
    x_N, g_ref = draw_x_N(2)
    expected = ddim_sample(
        eps_at_index,
        VP.discrete_betas(N_TRAIN),
        x_N,
        timesteps=TAUS_UNIFORM,
        eta=1.0,
        generator=g_ref,
    )
    x_T, g = draw_x_N(2)
    grid = TS[torch.tensor(TAUS_UNIFORM + [0])]
    res = sd.sample(VP, SCORE, SHAPE, "ddim", time_grid=grid, x_T=x_T, generator=g, eta=1.0)
    assert_close(res.samples, expected, rtol=0, atol=1e-11)


def test_ddim_eta1_is_ancestral_with_posterior_variance():
    # DDIM paper Sec. 4.1: eta = 1 makes the forward process Markovian, i.e. DDPM with beta-tilde.
    # On a grid ending at t = 0 both add no noise on the last step, so the chains coincide.
    grid = TS[torch.tensor(TAUS_QUADRATIC + [0])]
    outs = []
    for solver, opts in (("ddim", {"eta": 1.0}), ("ancestral", {"variance": "posterior"})):
        x_T, g = draw_x_N(3)
        outs.append(
            sd.sample(VP, SCORE, SHAPE, solver, time_grid=grid, x_T=x_T, generator=g, **opts)
        )
    assert_close(outs[0].samples, outs[1].samples, rtol=0, atol=1e-11)


# ---------------------------------------------------------------------------------------------
# diffusers, stepped on our trajectory with the same noise stream


def _float64_schedule(scheduler) -> None:
    """Replace diffusers' float32 alphas_cumprod by the float64 chain (the same numbers up to
    float32 rounding, checked in test_diffusers_schedule_is_ours_to_float32_rounding), so the
    comparison below tests the update rule, not float32 round-off (which reaches ~2e-4 relative
    in 1 - alpha_bar at the first index: 1 - fl32(0.9999))."""
    abar = VP.marginal(TS[1:])[0] ** 2
    scheduler.alphas_cumprod = abar
    scheduler.one = torch.tensor(1.0, dtype=F64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=F64)


def _scheduler(kind: str):
    diffusers = pytest.importorskip("diffusers")
    common = dict(
        num_train_timesteps=N_TRAIN,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=False,
    )
    if kind == "ddpm":
        return diffusers.DDPMScheduler(variance_type="fixed_small", **common)
    return diffusers.DDIMScheduler(set_alpha_to_one=True, **common)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_diffusers_schedule_is_ours_to_float32_rounding(kind):
    sched = _scheduler(kind)
    betas = VP.discrete_betas(N_TRAIN)
    # linspace in float32: one rounding (2^-24) plus the linspace arithmetic.
    assert_close(sched.betas.double(), betas, rtol=2**-22, atol=0)
    # cumprod of 1000 float32 factors: at most 1000 roundings of 2^-24 each.
    abar = torch.cumprod(1 - betas, 0)
    assert_close(sched.alphas_cumprod.double(), abar, rtol=N_TRAIN * 2**-24, atol=0)


def _diffusers_step_for_step(sched, res, timesteps, seed, **step_kwargs):
    """Feed our state before each step into diffusers' step with the noise stream ours used."""
    g = torch.Generator().manual_seed(seed)
    torch.randn(SHAPE, generator=g, dtype=F64)  # x_T was drawn first
    worst = 0.0
    for j, k in enumerate(timesteps):
        x = res.trajectory[j]
        eps = eps_at_index(x, k + 1)
        out = sched.step(eps, k, x, generator=g, **step_kwargs).prev_sample
        assert out.dtype == F64
        worst = max(worst, float((out - res.trajectory[j + 1]).abs().max()))
    return worst


@pytest.mark.parametrize("num_steps", [1000, 50])
def test_ancestral_matches_diffusers_ddpm_scheduler_step_for_step(num_steps):
    sched = _scheduler("ddpm")
    sched.set_timesteps(num_steps)
    _float64_schedule(sched)
    timesteps = [int(k) for k in sched.timesteps]
    # diffusers' step from timestep k goes to previous_timestep(k); -1 means x_0 (t = 0).
    grid_index = [k + 1 for k in timesteps] + [0]
    assert [int(sched.previous_timestep(k)) + 1 for k in timesteps] == grid_index[1:]
    x_T, g = draw_x_N(4)
    res = sd.sample(
        VP,
        SCORE,
        SHAPE,
        "ancestral",
        time_grid=TS[torch.tensor(grid_index)],
        x_T=x_T,
        generator=g,
        variance="posterior",
        return_trajectory=True,
    )
    assert _diffusers_step_for_step(sched, res, timesteps, seed=4) <= 1e-12


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers_ddim_scheduler_step_for_step(eta):
    sched = _scheduler("ddim")
    sched.set_timesteps(50)
    _float64_schedule(sched)
    timesteps = [int(k) for k in sched.timesteps]  # 980, 960, ..., 0 ("leading" spacing)
    stride = N_TRAIN // 50
    grid_index = [k + 1 for k in timesteps] + [0]
    assert grid_index[-2] - stride < 1  # diffusers' last step goes to alpha_bar = 1 (t = 0)
    x_T, g = draw_x_N(5)
    res = sd.sample(
        VP,
        SCORE,
        SHAPE,
        "ddim",
        time_grid=TS[torch.tensor(grid_index)],
        x_T=x_T,
        generator=g,
        eta=eta,
        return_trajectory=True,
    )
    assert _diffusers_step_for_step(sched, res, timesteps, seed=5, eta=eta) <= 1e-12


# diffusers' set_timesteps hands a torch tensor to numpy (a DeprecationWarning in numpy 2)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "steps, order, prediction, variant, final, corrector",
    [
        (10, 3, "data", "bh2", "zero", True),
        (10, 2, "data", "bh2", "zero", True),
        (10, 1, "data", "bh2", "zero", True),
        (12, 3, "noise", "bh2", "sigma_min", True),
        (10, 3, "data", "bh1", "sigma_min", True),
        (10, 2, "noise", "bh1", "sigma_min", True),
        (10, 3, "data", "bh2", "zero", False),
    ],
)
def test_unipc_matches_diffusers(steps, order, prediction, variant, final, corrector):
    # diffusers' UniPCMultistepScheduler is the reference code's algorithm (Zhao et al. 2023)
    # written independently of ours: per-step linear solves for rho, the corrector applied at the
    # start of the next step. Its sigmas are float32; given the float64 ones of our grid, the two
    # trajectories agree to float64 round-off at every step.
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=N_TRAIN,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        solver_order=order,
        predict_x0=prediction == "data",
        solver_type=variant,
        final_sigmas_type=final,
        disable_corrector=[] if corrector else list(range(steps)),
    )
    sched.set_timesteps(steps)
    timesteps = [int(k) for k in sched.timesteps]
    end = 0 if final == "zero" else 1  # "sigma_min": diffusers' last step ends at timestep 0
    grid = TS[torch.tensor([k + 1 for k in timesteps] + [end])]
    alpha, sigma = VP.marginal(grid)
    # the same grid up to float32 rounding (2e-4 relative in 1 - alpha_bar at timestep 0)
    assert_close(sched.sigmas.double(), sigma / alpha, rtol=2e-4, atol=0)
    sched.sigmas = sigma / alpha
    x_T, _ = draw_x_N(6)
    res = sd.sample(
        VP,
        SCORE,
        SHAPE,
        "unipc",
        time_grid=grid,
        x_T=x_T,
        order=order,
        prediction=prediction,
        variant=variant,
        corrector=corrector,
        return_trajectory=True,
    )
    x, worst = x_T, 0.0
    for j, k in enumerate(timesteps):
        x = sched.step(eps_at_index(x, k + 1), k, x).prev_sample
        worst = max(worst, float((x - res.trajectory[j + 1]).abs().max()))
    assert worst <= 1e-12
