"""Reverse-SDE solvers (solvers/sde.py, correctors.py, pc.py): step rules and convergence orders.

Step rules are checked against transcriptions of the papers' updates driven by the same noise.
Convergence is checked on Gaussian data, where the reverse SDE with the exact score is linear and
its terminal law is N(alpha_t m, alpha_t^2 s^2 + sigma_t^2):

* Strong order: the solver's own ``step`` is driven by one Brownian path, sampled on a fine grid
  and summed into the increments of each coarser grid (noise z = dW / sqrt(h)); the reference is
  the same solver on the fine grid (32x finer than the finest tested grid). Additive noise makes
  Euler-Maruyama strong order 1.
* Weak order: E[|X_N|^2] - E[|X_ref|^2], the mean over the same coupled paths. Without coupling,
  the Monte-Carlo error of E|X_N|^2 (~ 1/sqrt(paths), whatever h) would swamp a weak error ~h at
  fine steps; with coupling, the per-path differences are of the size of the strong error (~h),
  so their mean's standard error is ~h / sqrt(paths), below the weak error at every h. The test
  asserts each difference exceeds 5 of its standard errors, so the fitted slope is not noise.
  The reference itself is checked against the exact terminal law within its standard errors, so
  "weak error against the reference" is "against the exact law" up to the reference's own
  O(h_fine) bias, 1/32 of the finest tested one. (The closed-form covariance recursion of EM for
  this linear SDE would test the recursion, not the code.)
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import F64, fitted_slope
from torch.testing import assert_close

import scoresde as sd
from scoresde.solvers.base import Context, CountingScore

MEAN = torch.tensor([[1.0, -0.5]], dtype=F64)
STD = torch.tensor([[0.5, 1.5]], dtype=F64)
DATA = sd.GaussianMixture(MEAN, STD)
ANGLES = 2 * math.pi * torch.arange(4, dtype=F64) / 4
MIXTURE = sd.GaussianMixture(
    2 * torch.stack([ANGLES.cos(), ANGLES.sin()], 1), [0.2, 0.3, 0.2, 0.4], [1, 2, 3, 4]
)


class GivenNoise:
    """A noise source that returns whatever the driver put in ``z`` (same value until reset)."""

    def __init__(self):
        self.z = None
        self.calls = 0

    def normal(self) -> torch.Tensor:
        self.calls += 1
        return self.z

    def __call__(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return self.normal()


def drive(sde, data, solver_name, x, ts, zs, **options) -> torch.Tensor:
    """Run ``solver.step`` over the grid ``ts`` with noise zs[i] at step i (one draw per step)."""
    solver = sd.make_solver(solver_name, **options)
    noise = GivenNoise()
    ctx = Context(sde, CountingScore(sd.exact_score(sde, data)), noise, len(ts) - 1)
    state = solver.init(ctx, x, ts)
    for i in range(len(ts) - 1):
        noise.z = zs[i]
        x, state = solver.step(ctx, i, ts[i], ts[i + 1], x, state)
    return x


# ---------------------------------------------------------------------------------------------
# strong and weak order from one Brownian path

PATHS = 4096
FINE = 1024
LEVELS = [8, 16, 32]
INTERVALS = {
    "vp": (sd.VPSDE(), 0.5, 0.1),
    "subvp": (sd.SubVPSDE(), 0.5, 0.1),
    "ve": (sd.VESDE(), 0.6, 0.3),
}


def coupled_runs(name: str, solver: str, seed: int = 0):
    """Terminal states on each level grid and on the fine grid, all on one Brownian path."""
    sde, t_a, t_b = INTERVALS[name]
    g = torch.Generator().manual_seed(seed)
    alpha, sigma = sde.marginal(torch.tensor(t_a, dtype=F64))
    x_a = alpha * DATA.sample(PATHS, generator=g) + sigma * torch.randn(
        PATHS, 2, generator=g, dtype=F64
    )
    dW = torch.randn(FINE, PATHS, 2, generator=g, dtype=F64) * math.sqrt((t_a - t_b) / FINE)
    out = {}
    for n in LEVELS + [FINE]:
        ts = torch.linspace(t_a, t_b, n + 1, dtype=F64)
        zs = dW.reshape(n, FINE // n, PATHS, 2).sum(1) / math.sqrt((t_a - t_b) / n)
        out[n] = drive(sde, DATA, solver, x_a, ts, zs)
    return sde, t_b, out


@pytest.mark.parametrize("solver", ["euler_maruyama", "reverse_diffusion"])
@pytest.mark.parametrize("name", list(INTERVALS))
def test_strong_order_one_for_additive_noise(name, solver):
    _, _, out = coupled_runs(name, solver)
    ref = out[FINE]
    errors = [float((out[n] - ref).pow(2).sum(1).mean().sqrt()) for n in LEVELS]
    slope = fitted_slope([1 / n for n in LEVELS], errors)
    assert abs(slope - 1) <= 0.25, (slope, errors)


# VE is left out: on its intervals E|X|^2's weak error changes sign at these step sizes (it is
# pre-asymptotic there), so a fitted slope would be meaningless.
@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_euler_maruyama_weak_order_one(name):
    sde, t_b, out = coupled_runs(name, "euler_maruyama", seed=1)
    ref = out[FINE]
    # The fine reference has the exact terminal law (within its standard errors).
    alpha, sigma = sde.marginal(torch.tensor(t_b, dtype=F64))
    mean, var = alpha * MEAN[0], (alpha * STD[0]) ** 2 + sigma**2
    mean_se = (var / PATHS).sqrt()
    var_se = var * math.sqrt(2 / (PATHS - 1))
    assert bool(((ref.mean(0) - mean).abs() <= 4 * mean_se).all()), (ref.mean(0), mean)
    assert bool(((ref.var(0) - var).abs() <= 4 * var_se).all()), (ref.var(0), var)
    # Weak errors of E|X|^2 and their Monte-Carlo standard errors.
    errors, ses = [], []
    for n in LEVELS:
        diff = out[n].pow(2).sum(1) - ref.pow(2).sum(1)
        errors.append(abs(float(diff.mean())))
        ses.append(float(diff.std() / math.sqrt(PATHS)))
    assert all(e >= 5 * s for e, s in zip(errors, ses, strict=True)), (errors, ses)
    slope = fitted_slope([1 / n for n in LEVELS], errors)
    assert abs(slope - 1) <= 0.25, (slope, errors)


# ---------------------------------------------------------------------------------------------
# step rules, transcribed from the papers, with the same noise


def stochastic_grid_run(sde, solver, grid, seed, **options):
    """Run through the front door with x_T given and a seeded generator; return (result, g)."""
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(seed), dtype=F64)
    g = torch.Generator().manual_seed(seed + 1)
    res = sd.sample(
        sde,
        sd.exact_score(sde, MIXTURE),
        x_T.shape,
        solver,
        time_grid=grid,
        x_T=x_T,
        generator=g,
        **options,
    )
    return x_T, res


GRID_VP = sd.make_time_grid(sd.VPSDE(), 30, kind="quadratic")
GRID_VE = sd.make_time_grid(sd.VESDE(), 30, kind="quadratic")


@pytest.mark.parametrize(
    "sde, grid", [(sd.VPSDE(), GRID_VP), (sd.VESDE(), GRID_VE)], ids=["vp", "ve"]
)
def test_euler_maruyama_is_the_transcribed_em_step(sde, grid):
    # Song et al. 2021, Eq. 6 discretised: x <- x - [f - g^2 score] h + g sqrt(h) z, h = t0 - t1.
    x, res = stochastic_grid_run(sde, "euler_maruyama", grid, seed=10)
    g = torch.Generator().manual_seed(11)
    score = sd.exact_score(sde, MIXTURE)
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        h = t0 - t1
        drift = sde.drift(x, t0) - sde.diffusion(t0) ** 2 * score(x, t0)
        z = torch.randn(x.shape, generator=g, dtype=F64)
        x = x - drift * h + sde.diffusion(t0) * h.sqrt() * z
    assert_close(res.samples, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "sde, grid", [(sd.VPSDE(), GRID_VP), (sd.VESDE(), GRID_VE)], ids=["vp", "ve"]
)
def test_reverse_diffusion_is_song_et_al_eq_46(sde, grid):
    # x <- x - f_i + G_i^2 score(x, t0) + G_i z with the discrete forward step t1 -> t0:
    # VP (DDPM): f_i = (sqrt(1 - beta_i) - 1) x, G_i^2 = beta_i = 1 - alpha_0^2 / alpha_1^2;
    # VE (SMLD): f_i = 0, G_i^2 = sigma_0^2 - sigma_1^2.
    x, res = stochastic_grid_run(sde, "reverse_diffusion", grid, seed=12)
    g = torch.Generator().manual_seed(13)
    score = sd.exact_score(sde, MIXTURE)
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        (a0, s0), (a1, s1) = sde.marginal(t0), sde.marginal(t1)
        if isinstance(sde, sd.VPSDE):
            beta = 1 - (a0 / a1) ** 2
            f, G2 = (torch.sqrt(1 - beta) - 1) * x, beta
        else:
            f, G2 = 0 * x, s0**2 - s1**2
        z = torch.randn(x.shape, generator=g, dtype=F64)
        x = x - f + G2 * score(x, t0) + G2.sqrt() * z
    assert_close(res.samples, x, rtol=1e-10, atol=1e-10)


def test_ancestral_ve_is_smld_ancestral_sampling():
    # Song et al. 2021, App. F (Eq. 47): x <- x + (s0^2 - s1^2) score(x, s0)
    #   + sqrt(s1^2 (s0^2 - s1^2) / s0^2) z, with no noise on the final step (as for DDPM).
    sde = sd.VESDE()
    x, res = stochastic_grid_run(sde, "ancestral", GRID_VE, seed=14)
    g = torch.Generator().manual_seed(15)
    score = sd.exact_score(sde, MIXTURE)
    steps = len(GRID_VE) - 1
    for i, (t0, t1) in enumerate(zip(GRID_VE[:-1], GRID_VE[1:], strict=True)):
        s0, s1 = sde.marginal(t0)[1], sde.marginal(t1)[1]
        x = x + (s0**2 - s1**2) * score(x, t0)
        if i < steps - 1:
            z = torch.randn(x.shape, generator=g, dtype=F64)
            x = x + torch.sqrt(s1**2 * (s0**2 - s1**2) / s0**2) * z
    assert_close(res.samples, x, rtol=1e-10, atol=1e-10)


def test_ancestral_rejects_sub_vp_and_names_alternatives():
    sde = sd.SubVPSDE()
    score = sd.exact_score(sde, MIXTURE)
    for solver, options in (("ancestral", {}), ("pc", {"predictor": "ancestral"})):
        with pytest.raises(ValueError, match="reverse_diffusion"):
            sd.sample(sde, score, (4, 2), solver, steps=5, **options)


# ---------------------------------------------------------------------------------------------
# correctors and predictor-corrector


@pytest.mark.parametrize("step_norm", ["sample", "batch"])
def test_langevin_corrector_step_is_song_et_al_algorithm_4(step_norm):
    # eps = 2 alpha (snr ||z|| / ||score||)^2, x <- x + eps score + sqrt(2 eps) z with
    # alpha = 1 - beta_i; norms per sample ("sample") or averaged over the batch ("batch", the
    # reference code's rule).
    sde = sd.VPSDE()
    t0, t1 = torch.tensor(0.5, dtype=F64), torch.tensor(0.48, dtype=F64)
    g = torch.Generator().manual_seed(16)
    x = torch.randn(16, 2, generator=g, dtype=F64)
    z = torch.randn(16, 2, generator=g, dtype=F64)
    out = drive(
        sde,
        MIXTURE,
        "pc",
        x,
        torch.stack([t0, t1]),
        [z],
        predictor="none",
        snr=0.16,
        step_norm=step_norm,
    )
    score = sd.exact_score(sde, MIXTURE)(x, t0)
    alpha = (sde.marginal(t0)[0] / sde.marginal(t1)[0]) ** 2  # 1 - beta_i, alpha_t0 < alpha_t1
    grad_norm, noise_norm = score.norm(dim=1), z.norm(dim=1)
    if step_norm == "batch":
        grad_norm, noise_norm = grad_norm.mean(), noise_norm.mean()
    eps = (2 * alpha * (0.16 * noise_norm / grad_norm) ** 2).reshape(-1, 1)
    assert_close(out, x + eps * score + torch.sqrt(2 * eps) * z, rtol=1e-12, atol=1e-12)


def test_annealed_langevin_step_is_ncsn_algorithm_1():
    # eps_t = step_size sigma_t^2;  x <- x + eps_t / 2 score + sqrt(eps_t) z (Song & Ermon 2019).
    sde = sd.VESDE()
    t0, t1 = torch.tensor(0.5, dtype=F64), torch.tensor(0.48, dtype=F64)
    g = torch.Generator().manual_seed(17)
    x = 3 * torch.randn(16, 2, generator=g, dtype=F64)
    z = torch.randn(16, 2, generator=g, dtype=F64)
    out = drive(sde, MIXTURE, "langevin", x, torch.stack([t0, t1]), [z], corrector="ald")
    # The langevin solver anneals towards the grid's later time t1.
    eps = 0.1 * sde.marginal(t1)[1] ** 2
    expected = x + 0.5 * eps * sd.exact_score(sde, MIXTURE)(x, t1) + eps.sqrt() * z
    assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama", "ancestral"])
def test_pc_without_corrector_is_its_predictor(predictor):
    sde = sd.VPSDE()
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(18), dtype=F64)
    score = sd.exact_score(sde, MIXTURE)
    runs = [
        sd.sample(
            sde,
            score,
            x_T.shape,
            solver,
            steps=20,
            x_T=x_T,
            generator=torch.Generator().manual_seed(19),
            time_grid="uniform",
            **options,
        )
        for solver, options in (
            (predictor, {}),
            ("pc", {"predictor": predictor, "corrector": "none"}),
            ("pc", {"predictor": predictor, "corrector_steps": 0}),
        )
    ]
    for other in runs[1:]:
        assert torch.equal(other.samples, runs[0].samples)
        assert other.nfe == runs[0].nfe == 20


def recorded_times(sde, solver, steps, **options) -> tuple[list[float], torch.Tensor]:
    times = []
    score = sd.exact_score(sde, MIXTURE)

    def recording(x, t):
        times.append(float(t[0]))
        return score(x, t)

    res = sd.sample(
        sde,
        recording,
        (4, 2),
        solver,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
        **options,
    )
    assert res.nfe == len(times)
    return times, res.times


@pytest.mark.parametrize("corrector_steps", [1, 3])
def test_pc_corrects_at_each_grid_time_before_predicting(corrector_steps):
    times, ts = recorded_times(
        sd.VPSDE(), "pc", 6, corrector_steps=corrector_steps, step_norm="batch"
    )
    expected = [float(t) for t in ts[:-1] for _ in range(corrector_steps + 1)]
    assert times == expected


@pytest.mark.parametrize("corrector", ["langevin", "ald"])
def test_langevin_sampler_anneals_to_the_final_grid_time(corrector):
    times, ts = recorded_times(sd.VESDE(), "langevin", 6, corrector=corrector, corrector_steps=2)
    assert times == [float(t) for t in ts[1:] for _ in range(2)]


def test_corrector_options_are_validated():
    for options in (
        {"snr": 0.0},
        {"snr": -1.0},
        {"corrector_steps": -1},
        {"step_size": 0.0},
        {"step_norm": "global"},
        {"corrector": "hmc"},
        {"predictor": "heun"},
    ):
        opts = {**options}
        if "step_size" in opts:
            opts["corrector"] = "ald"
        with pytest.raises(ValueError):
            sd.make_solver("pc", **opts)
    with pytest.raises(ValueError, match="both be 'none'"):
        sd.make_solver("pc", predictor="none", corrector="none")
