"""How fast is scoresde on a GPU? Sampling, training and likelihood throughput, one table each.

    python benchmarks/gpu.py                  # the first five sections, ~2 minutes on an H100/H200
    python benchmarks/gpu.py --sections sampling --batch 65536
    python benchmarks/gpu.py --sections train_speed,sample_speed    # issue 21, see gpu_speed.py
    python benchmarks/gpu.py --device cpu --smoke   # tiny sizes: checks the script, on a CPU

Sampling: the 64-D, 8-component mixture of ``compare``'s ``gmm64`` preset under the VP SDE, exact
score (a closed-form network stand-in: O(batch x K x d) work per call), float32. For each solver:
wall time of one run, NFE, time per NFE, and the *solver overhead*: the run's time minus NFE x the
time of one bare score call, as a share of the run. It measures what the sampling loop adds
around the model; with no host-device sync per step it is a few kernel launches per step.
A second table times a U-Net score model (3x32x32, float32 vs bfloat16 autocast).
Training: optimisation steps per second of ``Trainer`` for an MLP on 2-D data and U-Nets on
8x8 and 32x32 images, float32 vs bfloat16 autocast.
Likelihood: PF-ODE log-likelihood of 64-D data, exact trace vs Hutchinson, adaptive RK45.

Times are medians of ``--repeats`` runs after one warm-up run, bracketed by
``torch.cuda.synchronize()``. Absolute times are only meaningful on the GPU they were taken on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from gpu_speed import COMPILE_SECTIONS, sample_speed, table, train_speed

import scoresde as sd
from scoresde.comparison import gmm64
from scoresde.nets import ResidualMLP, UNet
from scoresde.training import TrainConfig, Trainer

SOLVER_RUNS = [
    ("euler_maruyama", 50, {}),
    ("ancestral", 50, {}),
    ("pc", 50, {}),
    ("ode_euler", 50, {}),
    ("ode_heun", 25, {}),
    ("ode_rk4", 13, {}),
    ("ddim", 50, {}),
    ("dpm_solver", 50, {"order": 3}),
    ("dpm_solver", 10, {"order": 3}),
    ("dpm_solver_sde", 50, {"order": 2}),
    ("unipc", 50, {}),
    ("ode_rk45", None, {"rtol": 1e-5, "atol": 1e-5}),
    ("torchsde", 50, {"method": "euler"}),
]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls after one warm-up; and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def sampling(batch: int, repeats: int) -> str:
    sde = sd.VPSDE()
    score = sd.exact_score(sde, gmm64().to(device="cuda", dtype=torch.float32))
    x = torch.randn(batch, 64, device="cuda")
    t = torch.full((batch,), 0.5, device="cuda")
    # Back-to-back calls, as in a sampling loop: the per-call cost without a sync after each.
    calls = 50
    t_score = timed(lambda: [score(x, t) for _ in range(calls)], 3)[0] / calls
    rows = []
    for solver, steps, options in SOLVER_RUNS:
        g = torch.Generator(device="cuda")

        def run(solver=solver, steps=steps, options=options, g=g):
            g.manual_seed(0)
            return sd.sample(
                sde, score, (batch, 64), solver, steps=steps, device="cuda", generator=g, **options
            )

        seconds, res = timed(run, repeats)
        overhead = (seconds - res.nfe * t_score) / seconds
        label = solver + "".join(f" {k}={v}" for k, v in options.items())
        rows.append(
            [
                label,
                "adaptive" if steps is None else str(steps),
                str(res.nfe),
                f"{seconds * 1e3:.1f}",
                f"{seconds / res.nfe * 1e6:.0f}",
                f"{overhead:.0%}",
                f"{batch / seconds:.3g}",
            ]
        )
    header = ["solver", "steps", "NFE", "ms / run", "µs / NFE", "solver overhead", "samples / s"]
    note = (
        f"gmm64, VP, float32, batch {batch}; one bare score call: {t_score * 1e6:.0f} µs "
        f"(the overhead column subtracts NFE x this)."
    )
    return note + "\n\n" + table(header, rows)


def against_diffusers(batch: int, repeats: int) -> str:
    """Wall time of the same multistep DPM-Solver loop in diffusers and here, same score."""
    import diffusers

    sde = sd.VPSDE()
    score = sd.exact_score(sde, gmm64().to(device="cuda", dtype=torch.float32))
    # diffusers' integer timestep k is the 1000-step chain's continuous time discrete_times[k + 1].
    times = sde.discrete_times(1000)[1:].to(device="cuda", dtype=torch.float32)
    sigmas = sde.marginal(times)[1]

    def eps_model(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        t, sigma = times[k].expand(x.shape[0]), sigmas[k]
        return -sigma * score(x, t)

    rows = []
    for order, prediction in ((2, "data"), (3, "data"), (3, "noise")):
        algorithm = "dpmsolver++" if prediction == "data" else "dpmsolver"
        for steps in (10, 50):
            sched = diffusers.DPMSolverMultistepScheduler(
                num_train_timesteps=1000,
                beta_schedule="linear",
                solver_order=order,
                algorithm_type=algorithm,
                final_sigmas_type="sigma_min",
            )
            sched.set_timesteps(steps, device="cuda")

            def ours(order=order, prediction=prediction, steps=steps):
                g = torch.Generator(device="cuda").manual_seed(0)
                return sd.sample(
                    sde,
                    score,
                    (batch, 64),
                    "dpm_solver",
                    steps=steps,
                    device="cuda",
                    generator=g,
                    order=order,
                    prediction=prediction,
                ).samples

            def theirs(sched=sched, steps=steps):
                sched.set_timesteps(steps, device="cuda")
                g = torch.Generator(device="cuda").manual_seed(0)
                x = torch.randn(batch, 64, 1, 1, generator=g, device="cuda")
                for k in sched.timesteps:
                    eps = eps_model(x.view(batch, 64), k).view_as(x)
                    x = sched.step(eps, k, x).prev_sample
                return x

            t_ours, _ = timed(ours, repeats)
            t_theirs, _ = timed(theirs, repeats)
            rows.append(
                [
                    f"order {order}, {prediction} prediction",
                    str(steps),
                    f"{t_ours * 1e3:.1f}",
                    f"{t_theirs * 1e3:.1f}",
                    f"{t_theirs / t_ours:.2f}",
                ]
            )
    header = ["multistep DPM-Solver", "steps", "scoresde ms", "diffusers ms", "diffusers / ours"]
    note = (
        f"gmm64 exact score (as eps = -sigma score), VP, float32, batch {batch}; "
        f"diffusers {diffusers.__version__} DPMSolverMultistepScheduler, timesteps on the GPU."
    )
    return note + "\n\n" + table(header, rows)


def unet(channels: int, image_size: int, in_channels: int) -> UNet:
    return UNet(
        in_channels=in_channels,
        channels=channels,
        channel_mults=(1, 2, 2),
        num_res_blocks=2,
        image_size=image_size,
        attention_resolutions=(image_size // 4,),
    )


def unet_sampling(batch: int, repeats: int) -> str:
    sde = sd.VPSDE()
    torch.manual_seed(0)
    model = sd.ScoreModel(unet(64, 32, 3), sde).cuda().eval()
    rows = []
    for precision in ("float32", "bfloat16"):
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bfloat16")

        def run(autocast=autocast):
            with torch.no_grad(), autocast:
                return sd.sample(
                    sde,
                    model,
                    (batch, 3, 32, 32),
                    "dpm_solver",
                    steps=20,
                    device="cuda",
                    generator=torch.Generator(device="cuda").manual_seed(0),
                )

        seconds, res = timed(run, repeats)
        finite = bool(torch.isfinite(res.samples).all())
        rows.append(
            [
                precision,
                str(res.nfe),
                f"{seconds * 1e3:.0f}",
                f"{seconds / res.nfe * 1e3:.1f}",
                f"{batch / seconds:.3g}",
                str(finite),
            ]
        )
    n_params = sum(p.numel() for p in model.parameters())
    header = ["precision", "NFE", "ms / run", "ms / NFE", "images / s", "finite"]
    note = (
        f"Untrained U-Net (channels 64, mults 1-2-2, attention at 8x8, {n_params / 1e6:.1f} M "
        f"parameters), 3x32x32, batch {batch}, dpm_solver order 3, 20 steps."
    )
    return note + "\n\n" + table(header, rows)


def training(repeats: int, steps: int) -> str:
    sde = sd.VPSDE()
    g = torch.Generator().manual_seed(0)
    cases = [
        ("MLP, 2-D", lambda: ResidualMLP(2, hidden=256, depth=4), (2,), 4096),
        ("U-Net, 1x8x8", lambda: unet(32, 8, 1), (1, 8, 8), 512),
        ("U-Net, 3x32x32", lambda: unet(64, 32, 3), (3, 32, 32), 128),
    ]
    rows = []
    for label, make, event, batch in cases:
        data = torch.randn(8192, *event, generator=g).cuda()
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = sd.ScoreModel(make(), sde)
            trainer = Trainer(
                model,
                data,
                TrainConfig(batch_size=batch, bf16=bf16, log_every=steps),
                device="cuda",
            )
            seconds, losses = timed(lambda trainer=trainer: trainer.train(steps, False), repeats)
            rows.append(
                [
                    label,
                    str(batch),
                    "bf16 autocast" if bf16 else "float32",
                    f"{steps / seconds:.0f}",
                    f"{steps * batch / seconds:.3g}",
                    f"{losses[-1]:.3f}",
                ]
            )
    header = ["model", "batch", "precision", "steps / s", "examples / s", "last loss"]
    return f"Trainer (Adam, EMA, grad clipping), {steps} steps per timing.\n\n" + table(
        header, rows
    )


def likelihood(batch: int, repeats: int) -> str:
    sde = sd.VPSDE()
    data = gmm64().to(device="cuda")
    score = sd.exact_score(sde, data)
    exact = sd.exact_log_prob(sde, data)
    x = data.sample(batch, generator=torch.Generator(device="cuda").manual_seed(0))
    rows = []
    for divergence in ("exact", "hutchinson"):

        def run(divergence=divergence):
            return sd.log_likelihood(
                sde,
                score,
                x,
                divergence=divergence,
                generator=torch.Generator(device="cuda").manual_seed(1),
            )

        seconds, out = timed(run, repeats)
        err = (out.logp - exact(x, out.eps)).abs().mean()
        rows.append(
            [
                divergence,
                str(out.nfe),
                f"{seconds:.2f}",
                f"{batch / seconds:.3g}",
                f"{float(err):.2e}",
            ]
        )
    header = ["divergence", "NFE", "s / run", "samples / s", "mean abs error (nats)"]
    note = (
        f"gmm64 (64-D), VP, float64, batch {batch}, RK45 at rtol = atol = 1e-5; error against "
        "exact_log_prob (includes the prior mismatch log p_T - log pi)."
    )
    return note + "\n\n" + table(header, rows)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sections",
        default=None,
        help="comma-separated, of sampling,diffusers,unet,training,likelihood,train_speed,"
        "sample_speed (default: the first five; with --smoke: the last two)",
    )
    p.add_argument("--batch", type=int, default=16384, help="samples per run (gmm64 sampling)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 3; smoke: 1)")
    p.add_argument(
        "--train-steps", type=int, default=None, help="steps per timing (default 200; smoke: 3)"
    )
    p.add_argument("--device", default="cuda", help="cuda, or cpu for train_speed/sample_speed")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--smoke", action="store_true", help="tiny nets and batches: check, not measure")
    p.add_argument("--modes", default="eager,compiled,graphed", help="speed sections' modes")
    p.add_argument("--train-batches", type=_ints, default=[128, 512], help="train_speed batches")
    p.add_argument("--sample-batch", type=int, default=256, help="sample_speed batch")
    p.add_argument("--sample-steps", type=_ints, default=[10, 20, 50], help="sample_speed steps")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:  # before anything compiles: inductor's CPU kernels use this many threads
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in ("eager", "compiled", "graphed"):
            p.error(f"unknown mode {mode!r}; valid modes are eager, compiled, graphed")
    if args.sections is None:
        smoke_default = ",".join(COMPILE_SECTIONS)
        args.sections = (
            smoke_default if args.smoke else "sampling,diffusers,unet,training,likelihood"
        )
    names = args.sections.split(",")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA device (or --device cpu --smoke)", file=sys.stderr)
        return 1
    if device.type != "cuda" and set(names) - set(COMPILE_SECTIONS):
        p.error(f"--device {args.device} runs only the sections {COMPILE_SECTIONS}")
    if args.smoke:
        args.train_batches, args.sample_batch, args.sample_steps = [8], 4, [2]
    args.train_steps = args.train_steps or (3 if args.smoke else 200)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    else:
        print(f"# {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("Command: python benchmarks/gpu.py " + " ".join(argv or sys.argv[1:]) + "\n")
    reps, steps, smoke = args.repeats, args.train_steps, args.smoke
    sections = {
        "sampling": lambda: sampling(args.batch, reps),
        "unet": lambda: unet_sampling(256, reps),
        "training": lambda: training(reps, steps),
        "likelihood": lambda: likelihood(1024, 1),
        "diffusers": lambda: against_diffusers(args.batch, reps),
        "train_speed": lambda: train_speed(device, args.train_batches, modes, steps, reps, smoke),
        "sample_speed": lambda: sample_speed(
            device, args.sample_batch, args.sample_steps, modes, reps, smoke
        ),
    }
    for name in names:
        if name not in sections:
            p.error(f"unknown section {name!r}; valid sections are {tuple(sections)}")
        start = time.perf_counter()
        print(f"## {name}\n\n{sections[name]()}\n\n({time.perf_counter() - start:.0f} s)\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
