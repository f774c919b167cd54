"""Inpainting (scoresde/inpainting.py, scoresde/smc.py) and the step hook of ``sample`` it runs
on, against closed forms: exact conditionals of Gaussian mixtures, binomial standard errors, the
exact SMC evidence, counted score calls.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_guidance import F64, SDES, eight_d, gm
from torch.testing import assert_close

import scoresde as sd
from scoresde.cliutil import mask_from_spec
from scoresde.inpainting import INPAINT_METHODS, Replacement, inpaint, repaint_schedule
from scoresde.sampling import StepHook
from scoresde.smc import TwistedSMC


def test_repaint_schedule_traverses_every_segment_repeats_times():
    path = repaint_schedule(20, 5, 3)
    assert path[0] == 0 and path[-1] == 20
    assert all(abs(b - a) == 1 for a, b in zip(path[:-1], path[1:], strict=True))
    down = [a for a, b in zip(path[:-1], path[1:], strict=True) if b == a + 1]
    counts = torch.bincount(torch.tensor(down), minlength=20)
    # RePaint's get_schedule_jump: the first segment (next to T) once, the others `repeats` times.
    assert counts[:5].tolist() == [1] * 5 and counts[5:].tolist() == [3] * 15
    assert repaint_schedule(7, 3, 1) == list(range(8))


def inpaint_eight_d(method: str, steps: int, particles: int, device: str = "cpu"):
    """Six rows of ``eight_d`` with every other coordinate known, inpainted by ``method``; the
    known coordinates must come back exactly and every sample must be finite."""
    sde, data = SDES["vp"], eight_d().to(device=device)
    known = data.sample(6, torch.Generator(device=device).manual_seed(0))
    mask = torch.tensor([True, False] * 4, device=device)
    options = {"smc": {"particles": particles}, "repaint": {"jump_length": 2, "repeats": 2}}
    res = inpaint(
        sde,
        sd.exact_score(sde, data),
        known,
        mask,
        method,
        steps=steps,
        generator=torch.Generator(device=device).manual_seed(1),
        **options.get(method, {}),
    )
    assert torch.equal(res.samples[:, mask], known[:, mask])
    assert torch.isfinite(res.samples).all()
    return known, res


@pytest.mark.parametrize("method", INPAINT_METHODS)
def test_inpaint_keeps_known_exactly_and_counts_nfe(method):
    known, res = inpaint_eight_d(method, steps=8, particles=3)
    assert res.samples.shape == known.shape and res.samples.dtype == F64
    path = repaint_schedule(8, 2, 2)
    expected_nfe = {
        "replacement": 2 * 8,  # one Langevin corrector + one predictor step per interval
        "repaint": sum(b == a + 1 for a, b in zip(path[:-1], path[1:], strict=True)),  # 14
        "smc": 8,  # one score call (and one VJP) per grid time T .. t_{N-1}
    }[method]
    assert res.nfe == expected_nfe
    if method == "smc":
        assert res.weights.shape == (6, 3) and res.particles.shape == (6, 3, 8)
        assert_close(res.weights.sum(1), torch.ones(6, dtype=F64))
        assert torch.all((res.final_ess >= 1 - 1e-9) & (res.final_ess <= 3 + 1e-9))
        assert res.ess.shape == (8, 6) and res.resampled.shape == (8, 6)


def test_inpaint_denoise_costs_one_evaluation_and_keeps_known():
    sde, data = SDES["vp"], eight_d()
    known = data.sample(4, torch.Generator().manual_seed(0))
    mask = torch.tensor([True] * 4 + [False] * 4)
    score = sd.exact_score(sde, data)
    res = inpaint(sde, score, known, mask, steps=5, corrector="none", denoise=True)
    assert res.nfe == 6 and torch.equal(res.samples[:, :4], known[:, :4])


def test_inpaint_is_seeded_and_works_in_float32_under_no_grad():
    sde, data = SDES["vp"], eight_d()
    known = data.sample(4, torch.Generator().manual_seed(0)).float()
    mask = torch.tensor([True] * 4 + [False] * 4)
    score = sd.exact_score(sde, data.to(dtype=torch.float32))
    known[:, 4:] = float("nan")  # unknown entries are never read (missing data)
    for method in INPAINT_METHODS:
        with torch.no_grad():
            a, b = (
                inpaint(
                    sde, score, known, mask, method, 6, generator=torch.Generator().manual_seed(3)
                )
                for _ in range(2)
            )
        assert a.samples.dtype == torch.float32 and torch.equal(a.samples, b.samples)
        assert torch.isfinite(a.samples).all() and torch.equal(a.samples[:, :4], known[:, :4])


def test_smc_with_one_particle_has_unit_weights():
    sde, data = SDES["vp"], eight_d()
    known = data.sample(3, torch.Generator().manual_seed(0))
    res = inpaint(
        sde,
        sd.exact_score(sde, data),
        known,
        torch.tensor([True] * 4 + [False] * 4),
        "smc",
        5,
        particles=1,
    )
    assert torch.equal(res.weights, torch.ones(3, 1, dtype=F64))


def bimodal() -> sd.GaussianMixture:
    """2-D: blobs at (-1, -2) (weight 0.8) and (1, 2) (weight 0.2), stds (1, 0.6). Given x_1 = 0
    both are equally likely, so p(x_2 > 0 | x_1 = 0) = 0.2 up to the blobs' tails (3e-4). x_1 = 0
    is one std from both centres, where N(0; +-1, s^2) is stationary in s: the evidence does not
    feel, to first order, the slight under-dispersion of a 100-step sampler."""
    return gm([[-1.0, -2.0], [1.0, 2.0]], [[1.0, 0.6], [1.0, 0.6]], weights=[0.8, 0.2])


def test_smc_samples_the_exact_conditional_and_estimates_the_evidence():
    # Twisted SMC is asymptotically exact: with 32 particles and the exact score the fraction of
    # samples in the minor mode and the mean of the evidence estimate must match the closed form
    # within their standard errors (plus the O(1/K) bias of SMC, which is small here).
    sde, data, n = SDES["vp"], bimodal(), 600
    known = torch.zeros(n, 2, dtype=F64)
    mask = torch.tensor([True, False])
    cond = data.condition(known[:1], mask)
    exact_draws = data.condition(known, mask).sample(torch.Generator().manual_seed(9))
    p_exact = float((exact_draws[:, 1] > 0).double().mean())
    p_minor = float(cond.log_weights[0, 1].exp())  # 0.2: equal likelihoods, prior weights
    assert abs(p_minor - 0.2) < 1e-12
    res = inpaint(
        sde,
        sd.exact_score(sde, data),
        known,
        mask,
        "smc",
        steps=100,
        particles=32,
        generator=torch.Generator().manual_seed(0),
    )
    frac = float((res.samples[:, 1] > 0).double().mean())
    se = math.sqrt(p_minor * (1 - p_minor) / n)
    assert abs(frac - p_minor) < 4 * se, (frac, p_minor, p_exact)
    # Evidence: E[Z_hat] = p(x_known); the estimates' mean against the exact value.
    z = res.log_evidence.exp()
    z_exact = float(cond.log_evidence.exp())
    assert abs(float(z.mean()) - z_exact) < 4 * float(z.std()) / math.sqrt(n) + 0.02 * z_exact


def test_replacement_is_biased_even_with_the_exact_score():
    # The teaching point of docs/guidance.md: replacing the known coordinates by a forward-diffused
    # copy does not sample p(x_missing | x_known). Here it puts ~35-40 % of the samples in the
    # mode that has 20 % of the conditional mass, far outside the binomial error (1.6 %).
    sde, data, n = SDES["vp"], bimodal(), 600
    known, mask = torch.zeros(n, 2, dtype=F64), torch.tensor([True, False])
    res = inpaint(
        sde,
        sd.exact_score(sde, data),
        known,
        mask,
        "replacement",
        steps=100,
        generator=torch.Generator().manual_seed(0),
    )
    frac = float((res.samples[:, 1] > 0).double().mean())
    assert frac - 0.2 > 6 * math.sqrt(0.2 * 0.8 / n)


# ----------------------------------------------------------------------------------------------
# The step hook of sample()


class Recorder(StepHook):
    """Records what ``sample`` hands a hook; ``score_calls`` extra counted score calls per step."""

    def __init__(self, score_calls: int = 0):
        self.score_calls, self.seen = score_calls, []

    def start(self, ctx, x, ts):
        self.ts = ts
        return x

    def __call__(self, ctx, i, t0, t1, x):
        self.seen.append((i, float(t0), float(t1)))
        for _ in range(self.score_calls):
            ctx.score(x, t1)
        return x


@pytest.mark.parametrize("solver", ["pc", "dpm_solver", "euler_maruyama"])
def test_step_hook_sees_every_step_and_a_neutral_hook_changes_nothing(solver):
    sde, data = SDES["vp"], eight_d()
    score = sd.exact_score(sde, data)

    def run(hook):
        g = torch.Generator().manual_seed(4)
        return sd.sample(sde, score, (16, 8), solver, 6, generator=g, dtype=F64, step_hook=hook)

    plain, hook = run(None), Recorder(score_calls=2)
    hooked = run(hook)
    assert torch.equal(hooked.samples, plain.samples)
    ts = hook.ts.tolist()
    assert hook.seen == [(i, ts[i], ts[i + 1]) for i in range(6)]
    assert hooked.nfe == plain.nfe + 2 * 6  # the hook's score calls are counted


def test_step_hook_state_is_checked_for_non_finite_values_and_needs_a_fixed_grid():
    class Poison(StepHook):
        def __call__(self, ctx, i, t0, t1, x):
            return x / 0 if i == 2 else x  # Python int branch: no host sync

    sde = SDES["vp"]
    score = sd.exact_score(sde, eight_d())
    with pytest.raises(sd.NonFiniteError, match="at step 2"):
        sd.sample(sde, score, (4, 8), "pc", 5, dtype=F64, step_hook=Poison())
    with pytest.raises(ValueError, match="fixed-step"):
        sd.sample(sde, score, (4, 8), "ode_rk45", dtype=F64, step_hook=Poison())
    with pytest.raises(TypeError, match="step_hook must be a StepHook"):
        sd.sample(sde, score, (4, 8), "pc", 5, step_hook=lambda ctx, i, t0, t1, x: x)


def test_replacement_hook_pins_the_known_coordinates_to_the_forward_marginal():
    # With any fixed-step solver the hook re-imposes x_M = alpha_t known + sigma_t z at every grid
    # time, so at eps the known coordinates are N(alpha_eps known, sigma_eps^2) draws: their
    # standardised residuals have mean 0 and variance 1 within the standard errors.
    sde, data, n = SDES["vp"], eight_d(), 2000
    known = data.sample(n, torch.Generator().manual_seed(0))
    mask = torch.tensor([True] * 4 + [False] * 4)
    res = sd.sample(sde, sd.exact_score(sde, data), known.shape, "dpm_solver", 10,
                    generator=torch.Generator().manual_seed(1), dtype=F64,
                    step_hook=Replacement(known, mask, sd.make_solver("dpm_solver")))  # fmt: skip
    alpha, sigma = sde.marginal(res.times[-1])
    r = ((res.samples[:, :4] - alpha * known[:, :4]) / sigma).flatten()
    assert abs(float(r.mean())) < 4 / math.sqrt(r.numel())
    assert abs(float(r.var()) - 1) < 4 * math.sqrt(2 / r.numel())


def test_bad_inpainting_arguments_are_rejected():
    sde, data = SDES["vp"], eight_d()
    score = sd.exact_score(sde, data)
    known = torch.zeros(4, 8, dtype=F64)
    mask = torch.ones(8, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"valid methods are \('replacement', 'repaint', 'smc'\)"):
        inpaint(sde, score, known, mask, "dps", steps=5)
    with pytest.raises(ValueError, match="mask has shape"):
        inpaint(sde, score, known, torch.ones(4, 7, dtype=torch.bool), steps=5)
    with pytest.raises(ValueError, match="mask has shape"):
        inpaint(sde, score, known, torch.ones(8, 1, dtype=torch.bool), steps=5)
    with pytest.raises(ValueError, match="bool"):
        inpaint(sde, score, known, torch.ones(8), steps=5)
    with pytest.raises(ValueError, match="unknown option"):
        inpaint(sde, score, known, mask, "replacement", steps=5, particles=4)
    with pytest.raises(ValueError, match="steps"):
        inpaint(sde, score, known, mask, "replacement")


def test_mask_from_spec_halves():
    top = mask_from_spec("top", (1, 8, 8))
    assert top.shape == (1, 8, 8) and top[0, :4].all() and not top[0, 4:].any()
    left = mask_from_spec("left", (1, 8, 8))
    assert left[0, :, :4].all() and not left[0, :, 4:].any()
    with pytest.raises(ValueError, match="top"):
        mask_from_spec("middle", (1, 8, 8))


@pytest.mark.gpu
@pytest.mark.parametrize("method", INPAINT_METHODS)
def test_inpaint_runs_on_cuda_with_a_cuda_generator(method):
    # Every draw (noise, RePaint's re-noising, SMC's resampling) must happen on the data's device.
    _, res = inpaint_eight_d(method, steps=20, particles=4, device="cuda")
    assert res.samples.device.type == "cuda"


def test_smc_runs_on_the_brownian_tree_and_rejects_per_sample_seeds():
    # Its resampling draws from the noise source's generator: the Brownian tree's (the Gaussian
    # source it wraps) must give the same reproducible run, and per-sample seeds, which cannot
    # make a particle depend on its own seed alone, are refused.
    sde, data = SDES["vp"], eight_d()
    known = data.sample(2, torch.Generator().manual_seed(0))
    mask = torch.tensor([True] * 4 + [False] * 4)
    score = sd.exact_score(sde, data)

    def run(**kw):
        smc = TwistedSMC(known, mask.expand_as(known), particles=4)
        return sd.sample(sde, score, (8, 8), smc, steps=6, dtype=F64, **kw).samples

    a = run(noise="brownian", generator=torch.Generator().manual_seed(3))
    b = run(noise="brownian", generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(a).all() and torch.equal(a, b)
    with pytest.raises(ValueError, match="seeds"):
        run(seeds=list(range(8)))
