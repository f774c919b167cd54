"""``benchmarks/gpu.py``'s speed sections (issue 21): eager vs compiled vs CUDA-graphed training
and sampling of real networks, and sampling against diffusers at equal NFE.

train_speed: ``Trainer`` steps/s of the 32x32 U-Net (the 6.9 M-parameter one of gpu.py's
training section) and the DiT ``32x32`` preset, at each batch of ``--train-batches``, float32 and
bfloat16 autocast, each run eager, with ``compile=True`` and with ``cuda_graph=True`` (torch.compile
"reduce-overhead": forward and backward as CUDA graphs).
sample_speed: images/s of one randomly initialised diffusers ``UNet2DModel`` (about the U-Net's
size) sampled by our ``ddim`` and ``dpm_solver`` (order 2, data prediction) through
``sd.from_diffusers``, eager / compiled / graphed, and by diffusers' own loops (DDIMPipeline's
``scheduler.step`` loop, eta = 0, and ``DPMSolverMultistepScheduler``, order 2, dpmsolver++),
eager and with the UNet compiled, at each of ``--sample-steps``. "overhead" is the run's time
minus NFE x one bare network call of the same mode (eager, compiled or graphed), as a share of
the network's time: what the solver loop adds around the network.

``--smoke`` swaps in tiny networks and batches (seconds on a CPU), to check the script, not to
measure. The first run of each compiled configuration compiles; the tables report medians of the
timed runs after it, and the warm-up (compile) time separately.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

import scoresde as sd
from scoresde.compile import CUDAGraphScore
from scoresde.nets import DiT, UNet
from scoresde.training import TrainConfig, Trainer

#: The sections of this module, which also run on a CPU (``--device cpu``).
COMPILE_SECTIONS: tuple[str, ...] = ("train_speed", "sample_speed")
#: How each mode is asked for, in ``sample()`` and in ``TrainConfig``.
MODES: dict[str, dict] = {
    "eager": {},
    "compiled": {"compile": True},
    "graphed": {"cuda_graph": True},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float, object]:
    """(median seconds of ``repeats`` calls, seconds of the warm-up call, last result)."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), warmup, out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _modes(modes: list[str], device: torch.device) -> list[str]:
    """The modes that run on ``device``: CUDA graphs only on CUDA."""
    return [m for m in modes if m != "graphed" or device.type == "cuda"]


def _params(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


# -- training ---------------------------------------------------------------------------------


def train_nets(smoke: bool) -> dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]]:
    """name -> (constructor, event shape): the 32x32 U-Net and DiT, or tiny stand-ins."""
    if smoke:
        return {
            "U-Net (smoke)": (lambda: UNet(in_channels=1, channels=8, image_size=8), (1, 8, 8)),
            "DiT (smoke)": (lambda: DiT.preset("digits", hidden=16, depth=1), (1, 8, 8)),
        }

    def unet32() -> UNet:  # gpu.py's training U-Net: channels 64, mults 1-2-2, attention at 8x8
        return UNet(
            in_channels=3,
            channels=64,
            channel_mults=(1, 2, 2),
            num_res_blocks=2,
            image_size=32,
            attention_resolutions=(8,),
        )

    return {
        "U-Net 3x32x32": (unet32, (3, 32, 32)),
        "DiT 32x32": (lambda: DiT.preset("32x32"), (3, 32, 32)),
    }


def train_speed(
    device: torch.device,
    batches: list[int],
    modes: list[str],
    steps: int,
    repeats: int,
    smoke: bool,
) -> str:
    sde = sd.VPSDE()
    precisions = (False, True) if device.type == "cuda" else (False,)  # autocast: CUDA only
    rows = []
    for name, (make, event) in train_nets(smoke).items():
        for batch in batches:
            data = torch.randn(4 * batch, *event, generator=torch.Generator().manual_seed(0))
            data = data.to(device)
            for bf16 in precisions:
                eager_rate = None
                for mode in _modes(modes, device):
                    torch.manual_seed(0)
                    model = sd.ScoreModel(make(), sde)
                    cfg = TrainConfig(batch_size=batch, bf16=bf16, log_every=steps, **MODES[mode])
                    trainer = Trainer(model, data, cfg, device=device)
                    run = lambda trainer=trainer: trainer.train(steps, progress=False)  # noqa: E731
                    seconds, warmup, losses = timed(run, repeats, device)
                    rate = steps / seconds
                    eager_rate = rate if mode == "eager" else eager_rate
                    rows.append(
                        [
                            f"{name} ({_params(model)})",
                            str(batch),
                            "bf16 autocast" if bf16 else "float32",
                            mode,
                            f"{rate:.1f}",
                            f"{rate / eager_rate:.2f}" if eager_rate else "-",
                            f"{warmup:.1f}",
                            f"{losses[-1]:.3f}",
                        ]
                    )
    header = ["model", "batch", "precision", "mode", "steps / s", "vs eager", "warm-up s", "loss"]
    note = (
        f"Trainer (Adam, EMA, grad clipping) on {device.type}, {steps} steps per timing, median "
        f"of {repeats}; graphed = cuda_graph=True (torch.compile 'reduce-overhead')."
    )
    return note + "\n\n" + table(header, rows)


# -- sampling against diffusers ---------------------------------------------------------------


def diffusers_unet(smoke: bool):
    """A randomly initialised ``UNet2DModel``: 3x32x32 at about the U-Net's size (smoke: 8x8)."""
    import diffusers

    torch.manual_seed(0)
    if smoke:
        return diffusers.UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        )
    return diffusers.UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )


def _diffusers_loop(net, sched, x: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """DDIMPipeline's / the DPM-Solver pipelines' loop: one ``net`` call and one
    ``scheduler.step`` per timestep (no final clamp or image conversion)."""
    sched.set_timesteps(steps, device=device)
    extra = {"eta": 0.0} if type(sched).__name__ == "DDIMScheduler" else {}
    for k in sched.timesteps:
        x = sched.step(net(x, k).sample, k, x, **extra).prev_sample
    return x


def sample_speed(
    device: torch.device,
    batch: int,
    steps_list: list[int],
    modes: list[str],
    repeats: int,
    smoke: bool,
) -> str:
    import diffusers

    unet = diffusers_unet(smoke).to(device).eval()
    size = unet.config.sample_size
    shape = (batch, 3, size, size)
    common = dict(num_train_timesteps=1000, beta_schedule="linear")
    scheds = {
        "ddim": diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common),
        "dpm_solver": diffusers.DPMSolverMultistepScheduler(
            solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min", **common
        ),
    }
    bridge = sd.from_diffusers(unet, scheds["ddim"])
    # Captured once per shape and reused by every run (sample(cuda_graph=True) does not wrap a
    # CUDAGraphScore again), as a user sampling one shape repeatedly would.
    scores = {"eager": bridge.score_fn, "compiled": bridge.score_fn}
    if device.type == "cuda":
        scores["graphed"] = CUDAGraphScore(bridge.score_fn)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    k = torch.full((batch,), 500, device=device)
    modes = _modes(modes, device)
    compiled_unet = torch.compile(unet) if "compiled" in modes else None
    bare = {
        "eager": lambda x, k: unet(x, k).sample,
        "compiled": lambda x, k: compiled_unet(x, k).sample,
        "graphed": CUDAGraphScore(lambda x, k: unet(x, k).sample),
    }
    # One bare network call per mode, back to back as in a sampling loop.
    calls = 3 if smoke else 20
    t_net = {}
    with torch.no_grad():
        for mode in modes:
            fn = bare[mode]
            t_net[mode] = (
                timed(lambda fn=fn: [fn(x, k) for _ in range(calls)], 2, device)[0] / calls
            )
    rows = []

    def row(label: str, mode: str, steps: int, nfe: int, seconds: float, warmup: float) -> None:
        overhead = (seconds - nfe * t_net[mode]) / (nfe * t_net[mode])
        rows.append(
            [label, mode, str(steps), str(nfe), f"{seconds * 1e3:.1f}", f"{batch / seconds:.3g}"]
            + [f"{overhead:+.1%}", f"{warmup:.1f}"]
        )

    with torch.no_grad():
        for steps in steps_list:
            for solver, sched in scheds.items():
                options = {"order": 2, "prediction": "data"} if solver == "dpm_solver" else {}
                if solver == "ddim":  # DDIM on the scheduler's own timesteps, as in the pipeline
                    sched.set_timesteps(steps)
                    options["time_grid"] = bridge.timesteps_grid(sched.timesteps)
                else:
                    options["steps"] = steps
                for mode in modes:

                    def ours(mode=mode, options=options, solver=solver):
                        g = torch.Generator(device=device).manual_seed(0)
                        run = sd.sample(
                            bridge.sde, scores[mode], shape, solver, device=device,
                            generator=g, **options, **MODES[mode],
                        )  # fmt: skip
                        return run.nfe

                    seconds, warmup, nfe = timed(ours, repeats, device)
                    row(f"scoresde {solver}", mode, steps, nfe, seconds, warmup)
                for mode in [m for m in modes if m != "graphed"]:
                    net = unet if mode == "eager" else compiled_unet

                    def theirs(net=net, sched=sched, steps=steps):
                        return _diffusers_loop(net, sched, x.clone(), steps, device)

                    seconds, warmup, _ = timed(theirs, repeats, device)
                    row(f"diffusers {type(sched).__name__}", mode, steps, steps, seconds, warmup)
    header = ["sampler", "mode", "steps", "NFE", "ms / run", "images / s", "overhead", "warm-up s"]
    bare_ms = ", ".join(f"{m} {t * 1e3:.2f} ms" for m, t in t_net.items())
    note = (
        f"Randomly initialised diffusers {diffusers.__version__} UNet2DModel ({_params(unet)}), "
        f"3x{size}x{size}, batch {batch}, float32, on {device.type}; one bare network call: "
        f"{bare_ms}. overhead = (run - NFE x bare call) / (NFE x bare call)."
    )
    return note + "\n\n" + table(header, rows)
