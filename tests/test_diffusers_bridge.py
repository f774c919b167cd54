"""``sd.from_diffusers``: scoresde's solvers on a diffusers UNet equal diffusers' own samplers.

No downloads: a tiny randomly initialised ``UNet2DModel`` (fixed seed), saved and reloaded.
Equalities are float32 round-off (~1e-5 after 20-50 steps): the schedule agrees with diffusers'
float32 ``alphas_cumprod`` to ~6e-7 relative and each step rounds in float32.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch

import scoresde as sd

diffusers = pytest.importorskip("diffusers")

SHAPE = (2, 3, 8, 8)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    torch.manual_seed(0)
    net = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    path = tmp_path_factory.mktemp("unet")
    net.save_pretrained(path)
    return diffusers.UNet2DModel.from_pretrained(path).eval()


def _scheduler(cls, n, beta_schedule="linear", **kw):
    return cls(num_train_timesteps=n, beta_schedule=beta_schedule, clip_sample=False, **kw)


#: Stable Diffusion's scheduler betas (scaled_linear, sqrt-linear from 0.00085 to 0.012).
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012}


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("n", [1000, 50])
def test_sde_alphas_cumprod_equal_scheduler(kind, n):
    sched = diffusers.DDPMScheduler(num_train_timesteps=n, beta_schedule=kind)
    if kind == "scaled_linear":  # also at Stable Diffusion's own betas
        sd_sched = diffusers.DDPMScheduler(num_train_timesteps=n, beta_schedule=kind, **SD_BETAS)
        sd_bridge = sd.from_diffusers(None, sd_sched)
        t = sd_bridge.t_of(torch.arange(n))
        abar = torch.exp(2 * sd_bridge.sde.log_alpha(t))
        assert torch.allclose(abar, sd_sched.alphas_cumprod.double(), rtol=2e-6, atol=0)
    bridge = sd.from_diffusers(None, sched)
    k = torch.arange(n)
    t = bridge.t_of(k)
    abar = torch.exp(2 * bridge.sde.log_alpha(t[t <= bridge.sde.T]))
    ref = sched.alphas_cumprod.double()[: abar.numel()]
    assert torch.allclose(abar, ref, rtol=2e-6, atol=0)
    assert torch.equal(bridge.k_of(t), k.double())
    assert bridge.t_of(-1) == 0


def test_unsupported_schedule_raises():
    # diffusers' "sigmoid" betas (a sigmoid of linspace(-6, 6)) have no continuous VPSDE here.
    sched = diffusers.DDPMScheduler(beta_schedule="sigmoid")
    match = r"beta_schedule must be one of \('linear', 'scaled_linear', 'squaredcos_cap_v2'\)"
    with pytest.raises(ValueError, match=match):
        sd.from_diffusers(None, sched)
    sched = diffusers.DDPMScheduler(prediction_type="bogus")
    with pytest.raises(ValueError, match="prediction_type"):
        sd.from_diffusers(None, sched)


def _ddim_loop(unet, sched, x):
    """DDIMPipeline's loop without its final clamp / [0, 1] map: scheduler.step, eta = 0."""
    for k in sched.timesteps:
        x = sched.step(unet(x, k).sample, k, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize(
    "n, steps, beta_schedule, betas",
    [
        (1000, 20, "linear", {}),
        (50, 10, "linear", {}),
        (1000, 20, "scaled_linear", SD_BETAS),  # Stable Diffusion's scheduler
        (50, 10, "scaled_linear", {}),
        (1000, 20, "squaredcos_cap_v2", {}),  # timesteps 950..0: inside the clipped T
        (50, 10, "squaredcos_cap_v2", {}),
    ],
)
def test_ddim_eta0_equals_DDIMPipeline(unet, n, steps, beta_schedule, betas):
    sched = _scheduler(diffusers.DDIMScheduler, n, beta_schedule, set_alpha_to_one=True, **betas)
    sched.set_timesteps(steps)
    bridge = sd.from_diffusers(unet, sched)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    grid = bridge.timesteps_grid(sched.timesteps)
    with torch.no_grad():
        ours = sd.sample(bridge.sde, bridge.score_fn, SHAPE, "ddim", x_T=x_T, time_grid=grid)
        ref = _ddim_loop(unet, sched, x_T.clone())
        pipe = diffusers.DDIMPipeline(unet, sched).to("cpu")
        pipe.set_progress_bar_config(disable=True)
        img = pipe(
            batch_size=SHAPE[0],
            generator=torch.Generator().manual_seed(0),
            eta=0.0,
            num_inference_steps=steps,
            output_type="np",
        ).images
    assert ours.nfe == steps
    # Relative to the largest entry: an untrained UNet's x0 estimates reach ~100.
    rel = float((ours.samples - ref).abs().max() / ref.abs().max())
    assert rel < RTOL[torch.float32]
    # The pipeline draws the same x_T, then clamps (x / 2 + 0.5) to [0, 1] in NHWC order.
    post = (ours.samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(post - img).max() < 1e-5


def _float64(unet, sched, bridge):
    """The UNet in float64 and diffusers' float32 alphas_cumprod replaced by the float64 chain
    (equal to float32 rounding, test_sde_alphas_cumprod_equal_scheduler): then the two samplers
    agree to float64 round-off, so the float32 gap is round-off only."""
    sched.alphas_cumprod = torch.exp(2 * bridge.sde.log_alpha(bridge.times[1:]))
    return copy.deepcopy(unet).to(torch.float64)


#: max |ours - diffusers| / max |diffusers|. float32: round-off of ~1e-7 per step, amplified by
#: the untrained UNet over 50-1000 steps (measured <= 1.5e-5); float64: measured <= 1e-13.
RTOL = {torch.float32: 5e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1000, 50])
def test_ancestral_equals_DDPMPipeline(unet, n, dtype):
    """DDPMPipeline(num_inference_steps=N) draws x_T then one randn per step with t > 0 from
    its generator; ``sample(generator=...)`` draws x_T then one per step but the last: the same
    stream. Compared before the pipeline's clamp, and after it."""
    sched = _scheduler(diffusers.DDPMScheduler, n, variance_type="fixed_small")
    bridge = sd.from_diffusers(unet, sched)
    if dtype == torch.float64:
        unet = bridge.unet = _float64(unet, sched, bridge)
    grid = bridge.times.flip(0)
    with torch.no_grad():
        ours = sd.sample(
            bridge.sde,
            bridge.score_fn,
            SHAPE,
            "ancestral",
            time_grid=grid,
            dtype=dtype,
            generator=torch.Generator().manual_seed(1),
        )
        pipe = diffusers.DDPMPipeline(unet, sched).to("cpu")
        pipe.set_progress_bar_config(disable=True)
        img = pipe(
            batch_size=SHAPE[0],
            generator=torch.Generator().manual_seed(1),
            num_inference_steps=n,
            output_type="np",
        ).images
        gen = torch.Generator().manual_seed(1)  # the pipeline's loop without its clamp
        ref = torch.randn(SHAPE, generator=gen, dtype=dtype)
        for k in sched.timesteps:
            ref = sched.step(unet(ref, k).sample, k, ref, generator=gen).prev_sample
    rel = float((ours.samples - ref).abs().max() / ref.abs().max())
    assert rel < RTOL[dtype]
    if dtype == torch.float32:  # clamped to [0, 1]: mostly saturated for an untrained UNet
        post = (ours.samples / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        assert abs(post - img).max() < 1e-5


class _OracleUNet:
    """A fake UNet returning the exact eps / v / x0 of a Gaussian mixture at timestep k."""

    dtype = torch.float64

    def __init__(self, bridge, score, kind):
        self.bridge, self.score, self.kind = bridge, score, kind

    def __call__(self, x, k, scale=1.0):
        t = self.bridge.t_of(k)
        alpha, sigma = self.bridge.sde.marginal(t)
        score = self.score(x.flatten(1), t).reshape(x.shape) * scale
        pred = sd.parameterization.prediction_from_score(score, self.kind, x, alpha, sigma)
        return types.SimpleNamespace(sample=pred)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_give_the_exact_score(prediction_type):
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    bridge = sd.from_diffusers(None, sched)
    data = sd.GaussianMixture([[1.0, -1.0, 0.5, 2.0], [-2.0, 0.0, 1.0, -0.5]], [0.3, 0.5])
    score = sd.exact_score(bridge.sde, data)
    kind = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[prediction_type]
    bridge.unet = _OracleUNet(bridge, score, kind)
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 0.4, 0.7, 0.99], dtype=torch.float64)
    ref = score(x.flatten(1), t).reshape(x.shape)
    torch.testing.assert_close(bridge.score_fn(x, t), ref, rtol=1e-10, atol=1e-10)
    # conditioning kwargs reach the UNet: per call, and from from_diffusers(..., **kwargs)
    torch.testing.assert_close(bridge.score_fn(x, t, scale=2.0), 2 * ref, rtol=1e-10, atol=1e-10)
    bridge.unet_kwargs = {"scale": 3.0}
    torch.testing.assert_close(bridge.score_fn(x, t), 3 * ref, rtol=1e-10, atol=1e-10)


def test_condition_unet_ddim_equals_scheduler_loop():
    """A ``UNet2DConditionModel`` with ``encoder_hidden_states`` given to ``from_diffusers``:
    ``ddim`` equals the scheduler.step loop with the same conditioning (float32 round-off)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=8,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()
    cond = torch.randn(SHAPE[0], 5, 8, generator=torch.Generator().manual_seed(2))
    sched = _scheduler(diffusers.DDIMScheduler, 1000, set_alpha_to_one=True)
    sched.set_timesteps(10)
    bridge = sd.from_diffusers(unet, sched, encoder_hidden_states=cond)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    grid = bridge.timesteps_grid(sched.timesteps)
    with torch.no_grad():
        ours = sd.sample(bridge.sde, bridge.score_fn, SHAPE, "ddim", x_T=x_T, time_grid=grid)
        ref = x_T.clone()
        for k in sched.timesteps:
            pred = unet(ref, k, encoder_hidden_states=cond).sample
            ref = sched.step(pred, k, ref, eta=0.0).prev_sample
        other = bridge.score_fn(x_T, grid[:2], encoder_hidden_states=torch.zeros_like(cond))
    rel = float((ours.samples - ref).abs().max() / ref.abs().max())
    assert rel < RTOL[torch.float32]
    assert not torch.allclose(other, bridge.score_fn(x_T, grid[:2]))  # per-call kwargs override


def test_time_map_rejects_out_of_range():
    bridge = sd.from_diffusers(None, diffusers.DDPMScheduler(num_train_timesteps=50))
    with pytest.raises(ValueError, match="k must lie"):
        bridge.t_of(50)
    with pytest.raises(ValueError, match="t must lie"):
        bridge.k_of(1.1)
    with pytest.raises(ValueError, match="t must lie"):
        bridge.k_of(-0.1)
    # fractional timesteps interpolate linearly between the chain's times
    t = bridge.t_of(torch.tensor([2.25]))
    assert torch.allclose(t, 0.75 * bridge.times[3] + 0.25 * bridge.times[4])
    assert torch.allclose(bridge.k_of(t), torch.tensor([2.25], dtype=torch.float64))
