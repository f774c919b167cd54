"""Bad input at the public API: a clear early error of the right type that names the argument.

The catalogue covers the cases of issue 14 (silent coercions, multi-minute spins, NaN results
without an error) and more: each case asserts the exception type (TypeError for a value of the
wrong kind, ValueError for one out of range) and that the message names the argument. The
property-based tests draw valid and invalid inputs at random over the same entry points.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scoresde as sd
from scoresde import data as sd_data
from scoresde.ddpm import ddim_sample, ddpm_sample
from scoresde.solvers.ode import dopri5

F64 = torch.float64
NAN, INF = float("nan"), float("inf")

SDE = sd.VPSDE()
DATA = sd.GaussianMixture([[-2.0, 0.0], [2.0, 0.0]], stds=0.3)
SCORE = sd.exact_score(SDE, DATA)
X = torch.zeros(3, 2)
BETAS = torch.linspace(1e-4, 0.02, 20, dtype=F64)


class Net(torch.nn.Module):
    def forward(self, x, t, y=None):
        return x


def eps_fn(x, i):
    return torch.zeros_like(x)


def sample(shape=(4, 2), solver="ode_euler", score=SCORE, **kw):
    kw = {"steps": 2, **kw} if solver not in ("ode_rk45", "scipy") else kw
    return sd.sample(SDE, score, shape, solver, **kw)


def normal_score(x, t):
    return -x  # N(0, I) data stay N(0, I) under VP: the exact score for any shape


def inpaint(**kw):
    kw = {"method": "replacement", "steps": 2, **kw}
    return sd.inpaint(SDE, SCORE, torch.zeros(2, 2), torch.tensor([True, False]), **kw)


def likelihood(**kw):
    return sd.log_likelihood(SDE, SCORE, torch.zeros(2, 2, dtype=F64), **kw)


# (id, call, exception type, the argument the message must name)
CASES = [
    # -- SDEs: times outside [0, T] are errors, not extrapolations ----------------------------
    ("marginal-negative-t", lambda: SDE.marginal(-0.1), ValueError, "t"),
    ("marginal-t-beyond-T", lambda: SDE.marginal(1.5), ValueError, "t"),
    ("marginal-nan-t", lambda: SDE.marginal(NAN), ValueError, "t"),
    ("marginal-bool-t", lambda: SDE.marginal(True), TypeError, "t"),
    ("marginal-string-t", lambda: SDE.marginal("0.5"), TypeError, "t"),
    ("marginal-2d-t", lambda: SDE.marginal(torch.zeros(2, 2)), ValueError, "t"),
    (
        "marginal-numpy-t-beyond-T",
        lambda: SDE.marginal(__import__("numpy").float64(2)),
        ValueError,
        "t",
    ),
    ("diffusion-t-beyond-T", lambda: SDE.diffusion(2.0), ValueError, "t"),
    ("drift-negative-t", lambda: SDE.drift(X, -1.0), ValueError, "t"),
    ("drift-x-not-a-tensor", lambda: SDE.drift([[0.0, 0.0]], 0.5), TypeError, "x"),
    ("transition-t-beyond-T", lambda: SDE.transition(0.5, 1.2), ValueError, "t"),
    ("transition-negative-s", lambda: SDE.transition(-0.5, 0.2), ValueError, "s"),
    ("marginal_prob-t-beyond-T", lambda: SDE.marginal_prob(X, 1.1), ValueError, "t"),
    ("beta-t-beyond-T", lambda: SDE.beta(1.5), ValueError, "t"),
    ("log_snr-nan", lambda: SDE.log_snr(NAN), ValueError, "t"),
    ("t_from_log_snr-nan", lambda: SDE.t_from_log_snr(NAN), ValueError, "lam"),
    ("ve-marginal-t-beyond-T", lambda: sd.VESDE().marginal(1.01), ValueError, "t"),
    ("vp-negative-beta_min", lambda: sd.VPSDE(beta_min=-1.0), ValueError, "beta_min"),
    ("vp-nan-beta_min", lambda: sd.VPSDE(beta_min=NAN), ValueError, "beta_min"),
    ("vp-bool-beta_max", lambda: sd.VPSDE(beta_max=True), TypeError, "beta_max"),
    ("vp-beta_max-below-beta_min", lambda: sd.VPSDE(5.0, 1.0), ValueError, "beta_max"),
    ("vp-unknown-schedule", lambda: sd.VPSDE(schedule="cosinus"), ValueError, "schedule"),
    ("ve-sigma_max-below-min", lambda: sd.VESDE(1.0, 0.5), ValueError, "sigma_max"),
    ("ve-zero-T", lambda: sd.VESDE(T=0), ValueError, "T"),
    ("ve-inf-T", lambda: sd.VESDE(T=INF), ValueError, "T"),
    ("discrete_betas-float-n", lambda: SDE.discrete_betas(10.0), TypeError, "n"),
    ("discrete_betas-zero-n", lambda: SDE.discrete_betas(0), ValueError, "n"),
    ("prior_sample-string-shape", lambda: SDE.prior_sample("52"), TypeError, "shape"),
    ("prior_sample-float-dim", lambda: SDE.prior_sample((5, 2.7)), TypeError, "shape"),
    (
        "prior_sample-int-dtype",
        lambda: SDE.prior_sample((5, 2), dtype=torch.int64),
        ValueError,
        "dtype",
    ),
    (
        "prior_sample-bad-generator",
        lambda: SDE.prior_sample((5, 2), generator=0),
        TypeError,
        "generator",
    ),
    (
        "reverse-string-flag",
        lambda: SDE.reverse(SCORE, probability_flow="yes"),
        TypeError,
        "probability_flow",
    ),
    ("reverse-no-score", lambda: SDE.reverse(None), TypeError, "score_fn"),
    (
        "sde_from_config-list",
        lambda: sd.sde_from_config([]),
        TypeError,
        "config",
    ),
    # -- oracle ----------------------------------------------------------------------------------
    ("mixture-nan-means", lambda: sd.GaussianMixture([[NAN, 0.0]], 0.3), ValueError, "means"),
    ("mixture-inf-means", lambda: sd.GaussianMixture([[INF, 0.0]], 0.3), ValueError, "means"),
    ("mixture-1d-means", lambda: sd.GaussianMixture([0.0, 0.0], 0.3), ValueError, "means"),
    ("mixture-bool-means", lambda: sd.GaussianMixture([[True, False]], 0.3), TypeError, "means"),
    ("mixture-negative-std", lambda: sd.GaussianMixture([[0.0, 0.0]], -1.0), ValueError, "stds"),
    (
        "mixture-negative-weight",
        lambda: sd.GaussianMixture([[0.0], [1.0]], 0.3, [-1.0, 2.0]),
        ValueError,
        "weights",
    ),
    ("mixture-sample-float-n", lambda: DATA.sample(2.5), TypeError, "n"),
    ("mixture-sample-zero-n", lambda: DATA.sample(0), ValueError, "n"),
    ("exact_score-list-data", lambda: sd.exact_score(SDE, [[0.0, 0.0]]), TypeError, "data"),
    ("exact_score-string-sde", lambda: sd.exact_score("vp", DATA), TypeError, "sde"),
    ("exact_score-t-beyond-T", lambda: SCORE(X, 1.5), ValueError, "t"),
    ("exact_score-int-x", lambda: SCORE(torch.zeros(3, 2, dtype=torch.long), 0.5), TypeError, "x"),
    ("exact_log_prob-negative-t", lambda: sd.exact_log_prob(SDE, DATA)(X, -0.1), ValueError, "t"),
    ("flow_map-zero-std", lambda: sd.gaussian_flow_map(SDE, [0.0], [0.0]), ValueError, "std"),
    # -- sample(): the front door ------------------------------------------------------------------
    ("sample-string-shape", lambda: sample(shape="52"), TypeError, "shape"),
    ("sample-float-dim", lambda: sample(shape=(5, 2.7)), TypeError, "shape"),
    ("sample-1d-shape", lambda: sample(shape=(5,)), ValueError, "shape"),
    ("sample-zero-dim", lambda: sample(shape=(0, 2)), ValueError, "shape"),
    ("sample-bool-steps", lambda: sample(steps=True), TypeError, "steps"),
    ("sample-float-seeds", lambda: sample(seeds=[0.5, 1.5, 2.5, 3.5]), TypeError, "seeds"),
    ("sample-negative-seed", lambda: sample(seeds=[-1, 0, 1, 2]), ValueError, "seeds"),
    ("sample-string-seeds", lambda: sample(seeds="0123"), TypeError, "seeds"),
    (
        "sample-seeds-and-generator",
        lambda: sample(seeds=[0, 1, 2, 3], generator=torch.Generator()),
        ValueError,
        "generator",
    ),
    ("sample-int-x_T", lambda: sample(x_T=torch.ones(4, 2, dtype=torch.long)), TypeError, "x_T"),
    ("sample-nan-x_T", lambda: sample(x_T=torch.full((4, 2), NAN)), ValueError, "x_T"),
    ("sample-int-dtype", lambda: sample(dtype=torch.int32), ValueError, "dtype"),
    ("sample-string-dtype", lambda: sample(dtype="float32"), TypeError, "dtype"),
    ("sample-bad-device", lambda: sample(device="cpux"), ValueError, "device"),
    ("sample-string-denoise", lambda: sample(denoise="yes"), TypeError, "denoise"),
    (
        "sample-int-return_trajectory",
        lambda: sample(return_trajectory=1),
        TypeError,
        "return_trajectory",
    ),
    ("sample-int-callback", lambda: sample(callback=5), TypeError, "callback"),
    ("sample-nan-eps", lambda: sample(eps=NAN), ValueError, "eps"),
    ("sample-zero-rho", lambda: sample(time_grid="karras", rho=0.0), ValueError, "rho"),
    ("sample-int-time_grid", lambda: sample(time_grid=5), TypeError, "time_grid"),
    ("sample-unknown-time_grid", lambda: sample(time_grid="cosine"), ValueError, "time_grid"),
    ("sample-int-solver", lambda: sample(solver=3), TypeError, "solver"),
    (
        "sample-no-score_fn",
        lambda: sd.sample(SDE, None, (4, 2), "ode_euler", steps=2),
        TypeError,
        "score_fn",
    ),
    (
        "sample-string-sde",
        lambda: sd.sample("vp", SCORE, (4, 2), "ode_euler", steps=2),
        TypeError,
        "sde",
    ),
    (
        "sample_sharded-float-seed",
        lambda: sd.sample_sharded(SDE, SCORE, (4, 2), seed=1.5),
        TypeError,
        "seed",
    ),
    (
        "sample_sharded-string-shape",
        lambda: sd.sample_sharded(SDE, SCORE, "42"),
        TypeError,
        "shape",
    ),
    ("make_time_grid-float-steps", lambda: sd.make_time_grid(SDE, 2.5), TypeError, "steps"),
    # -- solver options ----------------------------------------------------------------------------
    ("dpm-order-True", lambda: sample(solver="dpm_solver", order=True), ValueError, "order"),
    ("dpm-order-float", lambda: sample(solver="dpm_solver", order=2.0), ValueError, "order"),
    ("dpm-order-4", lambda: sample(solver="dpm_solver", order=4), ValueError, "order"),
    (
        "dpm-lower_order_final-no",
        lambda: sample(solver="dpm_solver", lower_order_final="no"),
        TypeError,
        "lower_order_final",
    ),
    (
        "dpm_sde-lower_order_final-int",
        lambda: sample(solver="dpm_solver_sde", lower_order_final=0),
        TypeError,
        "lower_order_final",
    ),
    ("unipc-corrector-int", lambda: sample(solver="unipc", corrector=1), TypeError, "corrector"),
    ("unipc-variant", lambda: sample(solver="unipc", variant="bh3"), ValueError, "variant"),
    ("ddim-eta-5", lambda: sample(solver="ddim", eta=5.0), ValueError, "eta"),
    ("ddim-negative-eta", lambda: sample(solver="ddim", eta=-0.1), ValueError, "eta"),
    ("pc-inf-snr", lambda: sample(solver="pc", snr=INF), ValueError, "snr"),
    ("pc-zero-snr", lambda: sample(solver="pc", snr=0.0), ValueError, "snr"),
    (
        "pc-float-corrector_steps",
        lambda: sample(solver="pc", corrector_steps=1.5),
        TypeError,
        "corrector_steps",
    ),
    (
        "pc-nan-step_size",
        lambda: sample(solver="pc", corrector="ald", step_size=NAN),
        ValueError,
        "step_size",
    ),
    ("rk45-zero-safety", lambda: sample(solver="ode_rk45", safety=0.0), ValueError, "safety"),
    ("rk45-negative-rtol", lambda: sample(solver="ode_rk45", rtol=-1.0), ValueError, "rtol"),
    (
        "rk45-float-max_steps",
        lambda: sample(solver="ode_rk45", max_steps=10.5),
        TypeError,
        "max_steps",
    ),
    (
        "rk45-zero-first_step",
        lambda: sample(solver="ode_rk45", first_step=0.0),
        ValueError,
        "first_step",
    ),
    ("dopri5-inf-atol", lambda: dopri5(lambda y, t: y, X, 0.0, 1.0, atol=INF), ValueError, "atol"),
    (
        "torchsde-negative-rtol",
        lambda: sample(solver="torchsde", adaptive=True, rtol=-1.0),
        ValueError,
        "rtol",
    ),
    (
        "torchsde-unknown-method",
        lambda: sample(solver="torchsde", method="rk4"),
        ValueError,
        "method",
    ),
    (
        "torchsde-string-adaptive",
        lambda: sample(solver="torchsde", adaptive="yes"),
        TypeError,
        "adaptive",
    ),
    ("scipy-unknown-method", lambda: sample(solver="scipy", method="RK99"), ValueError, "method"),
    ("scipy-zero-atol", lambda: sample(solver="scipy", atol=0.0), ValueError, "atol"),
    (
        "ancestral-variance",
        lambda: sample(solver="ancestral", variance="fixed"),
        ValueError,
        "variance",
    ),
    ("unknown-option", lambda: sample(solver="ode_euler", order=2), ValueError, "order"),
    # -- likelihood --------------------------------------------------------------------------------
    (
        "likelihood-int-x",
        lambda: sd.log_likelihood(SDE, SCORE, torch.zeros(2, 2, dtype=torch.long)),
        TypeError,
        "x",
    ),
    ("likelihood-eps-beyond-T", lambda: likelihood(eps=1.5), ValueError, "eps"),
    (
        "likelihood-zero-n_probes",
        lambda: likelihood(divergence="hutchinson", n_probes=0),
        ValueError,
        "n_probes",
    ),
    (
        "likelihood-float-n_probes",
        lambda: likelihood(divergence="hutchinson", n_probes=1.5),
        TypeError,
        "n_probes",
    ),
    ("likelihood-zero-rtol", lambda: likelihood(rtol=0.0), ValueError, "rtol"),
    ("likelihood-zero-chunk_size", lambda: likelihood(chunk_size=0), ValueError, "chunk_size"),
    (
        "likelihood-float-steps",
        lambda: likelihood(integrator="heun", steps=2.5),
        TypeError,
        "steps",
    ),
    ("likelihood-int-prior_logp", lambda: likelihood(prior_logp=3), TypeError, "prior_logp"),
    (
        "likelihood-scipy-method",
        lambda: likelihood(integrator="scipy", method="XX"),
        ValueError,
        "method",
    ),
    ("likelihood-bad-generator", lambda: likelihood(generator=1), TypeError, "generator"),
    ("bits_per_dim-zero-dims", lambda: sd.bits_per_dim(torch.zeros(2), 0), ValueError, "dims"),
    (
        "dequantize-zero-bits",
        lambda: sd.dequantize(torch.zeros(2, 2), n_bits=0),
        ValueError,
        "n_bits",
    ),
    # -- guidance ----------------------------------------------------------------------------------
    (
        "cfg-nan-scale",
        lambda: sd.classifier_free_guidance(SCORE, SCORE, scale=NAN),
        ValueError,
        "scale",
    ),
    (
        "cfg-string-scale",
        lambda: sd.classifier_free_guidance(SCORE, SCORE, scale="2"),
        TypeError,
        "scale",
    ),
    (
        "cfg-reversed-interval",
        lambda: sd.classifier_free_guidance(SCORE, SCORE, 2.0, (0.5, 0.1)),
        ValueError,
        "interval",
    ),
    (
        "cfg-no-uncond",
        lambda: sd.classifier_free_guidance(SCORE, None),
        TypeError,
        "uncond_score_fn",
    ),
    (
        "classifier_guidance-int-fn",
        lambda: sd.classifier_guidance(SCORE, 3),
        TypeError,
        "log_prob_y_fn",
    ),
    (
        "cfg-rescale-above-one",
        lambda: sd.classifier_free_guidance(SCORE, SCORE, 2.0, rescale=1.5),
        ValueError,
        "rescale",
    ),
    ("linear_scale-nan", lambda: sd.linear_scale(NAN, 1.0), ValueError, "w0"),
    ("cosine_scale-zero-T", lambda: sd.cosine_scale(2.0, 1.0, T=0.0), ValueError, "T"),
    ("interval_scale-reversed", lambda: sd.interval_scale(2.0, 0.6, 0.2), ValueError, "interval"),
    ("negative_guidance-inf", lambda: sd.negative_guidance(SCORE, SCORE, INF), ValueError, "scale"),
    (
        "multi_condition-count",
        lambda: sd.multi_condition_guidance(SCORE, [SCORE, SCORE], [1.0]),
        ValueError,
        "scales",
    ),
    (
        "guidance_rescale-phi",
        lambda: sd.guidance_rescale(torch.ones(2, 2), torch.ones(2, 2), 2.0),
        ValueError,
        "phi",
    ),
    ("inpaint-float-steps", lambda: inpaint(steps=2.5), TypeError, "steps"),
    ("inpaint-unknown-method", lambda: inpaint(method="x"), ValueError, "method"),
    ("inpaint-zero-particles", lambda: inpaint(method="smc", particles=0), ValueError, "particles"),
    (
        "inpaint-ess_threshold",
        lambda: inpaint(method="smc", ess_threshold=1.5),
        ValueError,
        "ess_threshold",
    ),
    ("inpaint-string-denoise", lambda: inpaint(denoise="no"), TypeError, "denoise"),
    ("inpaint-bad-generator", lambda: inpaint(generator=1), TypeError, "generator"),
    ("inpaint-inf-snr", lambda: inpaint(snr=INF), ValueError, "snr"),
    # -- model -------------------------------------------------------------------------------------
    (
        "model-parameterization",
        lambda: sd.ScoreModel(Net(), SDE, "noise"),
        ValueError,
        "parameterization",
    ),
    ("model-function-net", lambda: sd.ScoreModel(lambda x, t: x, SDE), TypeError, "net"),
    ("model-string-sde", lambda: sd.ScoreModel(Net(), "vp"), TypeError, "sde"),
    ("model-t-beyond-T", lambda: sd.ScoreModel(Net(), SDE)(X, 1.5), ValueError, "t"),
    # -- data --------------------------------------------------------------------------------------
    ("swiss_roll-negative-n", lambda: sd_data.swiss_roll(-1), ValueError, "n"),
    ("swiss_roll-float-n", lambda: sd_data.swiss_roll(10.0), TypeError, "n"),
    ("two_moons-negative-noise", lambda: sd_data.two_moons(10, noise=-0.1), ValueError, "noise"),
    ("pinwheel-zero-arms", lambda: sd_data.pinwheel(10, arms=0), ValueError, "arms"),
    (
        "eight_gaussians-bad-generator",
        lambda: sd_data.eight_gaussians(10, generator=1),
        TypeError,
        "generator",
    ),
    (
        "image-folder-channels",
        lambda: sd_data.load_image_folder(".", channels=2),
        ValueError,
        "channels",
    ),
    # -- the discrete chains -----------------------------------------------------------------------
    (
        "ddim_sample-float-timesteps",
        lambda: ddim_sample(eps_fn, BETAS, X, [10.5, 3]),
        TypeError,
        "timesteps",
    ),
    ("ddim_sample-eta-2", lambda: ddim_sample(eps_fn, BETAS, X, eta=2.0), ValueError, "eta"),
    (
        "ddpm_sample-variance",
        lambda: ddpm_sample(eps_fn, BETAS, X, variance="x"),
        ValueError,
        "variance",
    ),
]


@pytest.mark.parametrize("call, error, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error_naming_the_argument(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error  # not a subclass that slipped through by accident
    assert re.search(rf"(^|[^\w.]){re.escape(name)}\b", str(info.value)), str(info.value)


def test_the_catalogue_is_large_and_its_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60


# ---------------------------------------------------------------------------------------------
# dopri5: bad cases end within a few steps, counted in score calls, not in seconds


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t, self.calls)


def test_rk45_inf_at_the_starting_step_probe_is_a_nonfinite_error_at_once():
    # Was: d2 = inf made the first step 0, then 100 000 zero-length steps (107 s).
    score = Counting(lambda x, t, n: SCORE(x, t) * (INF if n == 2 else 1.0))
    with pytest.raises(sd.NonFiniteError, match="probe"):
        sd.sample(SDE, score, (8, 2), "ode_rk45", generator=torch.Generator().manual_seed(0))
    assert score.calls == 2  # k1 and the probe


def test_rk45_step_size_underflow_is_an_error_within_a_few_steps():
    # dy/dt = 1/(t - 1/2) has a singularity inside [eps, T]: the steps shrink geometrically
    # towards t = 1/2 until t + h == t. Then the solver stops instead of taking zero-length
    # steps until max_steps (6 x 100 000 calls); measured: 812 calls.
    fn = Counting(lambda y, t, n: (1 / (t - 0.5)).reshape(-1, 1).expand_as(y).to(y.dtype))
    with pytest.raises(RuntimeError, match="step size fell below"):
        dopri5(fn, torch.zeros(4, 2, dtype=F64), 1.0, 1e-3)
    assert fn.calls < 1000


def test_rk45_float16_reaches_the_exact_flow_map():
    # Was: the error norm's squares overflowed float16, every step was rejected, NonFiniteError.
    # A single Gaussian has an exact probability-flow map; float16 carries ~3 significant digits.
    mean, std = 1.0, 0.5
    sde = sd.VPSDE()
    score = sd.exact_score(sde, sd.GaussianMixture([[mean, -mean]], stds=std))
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    res = sd.sample(sde, score, (64, 2), "ode_rk45", x_T=x_T.half(), rtol=1e-3, atol=1e-3)
    assert res.samples.dtype == torch.float16
    exact = sd.gaussian_flow_map(sde, [mean, -mean], [std, std])(
        x_T.double(), 1.0, sde.sampling_eps
    )
    # float16 rounds each of the ~100 accepted steps by 2^-11 relative: 0.02 covers that sum.
    torch.testing.assert_close(res.samples.double(), exact, rtol=0, atol=2e-2)


def test_integer_x_T_is_refused_and_the_denoised_output_is_checked():
    with pytest.raises(TypeError, match="x_T"):
        sd.sample(SDE, SCORE, (4, 2), "ode_euler", steps=2, x_T=torch.ones(4, 2, dtype=torch.int64))
    # A score that is finite on the grid but NaN at the extra denoising call.
    calls = [0]

    def nan_last(x, t):
        calls[0] += 1
        return SCORE(x, t) * (NAN if calls[0] == 3 else 1.0)

    with pytest.raises(sd.NonFiniteError, match="denoised"):
        sd.sample(SDE, nan_last, (4, 2), "ode_euler", steps=2, denoise=True)


# ---------------------------------------------------------------------------------------------
# Property-based tests over the public entry points

FAST = settings(max_examples=50, deadline=None)


@FAST
@given(
    beta_min=st.floats(0.01, 5.0),
    spread=st.floats(0.0, 45.0),
    t=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8),
)
def test_vp_marginal_is_in_range_and_monotone_for_valid_parameters(beta_min, spread, t):
    sde = sd.VPSDE(beta_min, beta_min + spread)
    tt = torch.tensor(sorted(t), dtype=F64)
    alpha, sigma = sde.marginal(tt)
    assert bool(((alpha > 0) & (alpha <= 1) & (sigma >= 0) & (sigma <= 1)).all())
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-12)
    assert bool((alpha.diff() <= 0).all() and (sigma.diff() >= 0).all())


@FAST
@given(sigma_min=st.floats(1e-3, 1.0), ratio=st.floats(1.01, 1e4), t=st.floats(0.0, 1.0))
def test_ve_marginal_std_is_between_sigma_min_and_max(sigma_min, ratio, t):
    sde = sd.VESDE(sigma_min, sigma_min * ratio)
    alpha, sigma = sde.marginal(torch.tensor(t, dtype=F64))
    assert float(alpha) == 1.0
    assert sigma_min * (1 - 1e-12) <= float(sigma) <= sigma_min * ratio * (1 + 1e-12)


BAD_TIMES = st.one_of(
    st.floats(max_value=-1e-12),
    st.floats(min_value=1.0 + 1e-9),
    st.just(NAN),
    st.just(INF),
    st.just(-INF),
)


@FAST
@given(t=BAD_TIMES, method=st.sampled_from(["marginal", "diffusion", "beta", "score", "drift"]))
def test_times_outside_zero_T_are_value_errors_naming_t(t, method):
    calls = {
        "marginal": lambda: SDE.marginal(t),
        "diffusion": lambda: SDE.diffusion(t),
        "beta": lambda: SDE.beta(t),
        "score": lambda: SCORE(X, t),
        "drift": lambda: SDE.drift(X, t),
    }
    with pytest.raises(ValueError, match=r"^t must lie in \[0, T\]"):
        calls[method]()


BAD_POSITIVE = st.one_of(
    st.floats(max_value=0.0), st.just(NAN), st.just(INF), st.booleans(), st.text(max_size=3)
)


@FAST
@given(
    value=BAD_POSITIVE,
    arg=st.sampled_from(["beta_min", "sigma_min", "rtol", "atol", "snr", "eta_neg", "scale"]),
)
def test_bad_numbers_are_rejected_naming_the_argument(value, arg):
    calls = {
        "beta_min": lambda: sd.VPSDE(beta_min=value),
        "sigma_min": lambda: sd.VESDE(sigma_min=value),
        "rtol": lambda: sd.make_solver("ode_rk45", rtol=value),
        "atol": lambda: sd.make_solver("scipy", atol=value),
        "snr": lambda: sd.make_solver("pc", snr=value),
        "eta_neg": lambda: sd.make_solver(
            "ddim", eta=value if isinstance(value, str) else -1 - abs(value)
        ),
        "scale": lambda: sd.classifier_free_guidance(
            SCORE,
            SCORE,
            scale=value if not isinstance(value, float) or not math.isfinite(value) else NAN,
        ),
    }
    name = "eta" if arg == "eta_neg" else arg
    with pytest.raises((TypeError, ValueError), match=f"^{name} "):
        calls[arg]()


@FAST
@given(
    shape=st.one_of(
        st.lists(st.integers(-1, 4), min_size=0, max_size=4),
        st.lists(st.one_of(st.integers(1, 3), st.floats(0.5, 3.5), st.booleans()), max_size=3),
        st.text(max_size=3),
    ),
    as_tuple=st.booleans(),
)
def test_sample_shapes_either_work_exactly_or_raise_naming_shape(shape, as_tuple):
    shape = tuple(shape) if as_tuple and not isinstance(shape, str) else shape
    try:
        res = sample(shape=shape, score=normal_score)
    except (TypeError, ValueError) as err:
        assert str(err).startswith("shape "), str(err)
        return
    # It ran: then the shape was (batch, *event) of positive ints, and is exactly the output's.
    assert all(type(d) is int and d >= 1 for d in shape) and len(shape) >= 2
    assert tuple(res.samples.shape) == tuple(shape)


DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex64,
    torch.uint8,
]


@FAST
@given(dtype=st.sampled_from(DTYPES), via=st.sampled_from(["dtype", "x_T"]))
def test_sample_dtypes_either_work_in_that_dtype_or_raise_naming_it(dtype, via):
    kw = {"dtype": dtype} if via == "dtype" else {"x_T": torch.zeros(4, 2).to(dtype)}
    try:
        res = sample(**kw)
    except (TypeError, ValueError) as err:
        assert str(err).startswith(via), str(err)
        assert not dtype.is_floating_point
        return
    assert dtype.is_floating_point and res.samples.dtype == dtype
    assert bool(torch.isfinite(res.samples.float()).all())


@FAST
@given(order=st.one_of(st.integers(-2, 5), st.booleans(), st.floats(0.0, 4.0), st.text(max_size=2)))
def test_solver_order_is_an_exact_int_or_an_error(order):
    try:
        solver = sd.make_solver("dpm_solver", order=order)
    except ValueError as err:
        assert str(err).startswith("order must be one of (1, 2, 3)")
        assert not (type(order) is int and order in (1, 2, 3))
        return
    assert type(order) is int and solver.order == order


@FAST
@given(
    seeds=st.lists(
        st.one_of(st.integers(-5, 2**64 + 5), st.floats(0, 10), st.booleans()),
        min_size=2,
        max_size=2,
    )
)
def test_seeds_are_nonnegative_64_bit_ints_or_an_error(seeds):
    try:
        res = sample(shape=(2, 2), solver="euler_maruyama", seeds=seeds)
    except (TypeError, ValueError) as err:
        assert str(err).startswith("seeds["), str(err)
        assert not all(type(s) is int and 0 <= s < 2**64 for s in seeds)
        return
    assert all(type(s) is int and 0 <= s < 2**64 for s in seeds)
    assert res.samples.shape == (2, 2)
