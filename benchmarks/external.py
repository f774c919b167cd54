"""Our samplers against diffusers' schedulers and k-diffusion's samplers, exact score, 10/20 NFE.

The common ground is the discrete VP chain of DDPM (linear betas 1e-4 .. 0.02, 1000 training
steps), which ``scoresde`` embeds in continuous time: ``VPSDE().discrete_times(1000)`` are the times
t_0 = 0 < t_1 < ... < t_1000 at which the continuous marginal (alpha_t, sigma_t) equals the chain's
(sqrt(abar_k), sqrt(1 - abar_k)). Everything runs on S = VPSDE(T = t_1000) (T = 1.0034), so

* diffusers' timestep k (0-based) is the continuous time t_{k+1}; the model it calls returns the
  exact eps = -sigma_t * score(x, t). A fractional timestep (Karras / exponential sigmas) is mapped
  by interpolating log sigma linearly between the integer knots, the inverse of diffusers'
  ``_sigma_to_t``;
* k-diffusion's denoiser D(x, sigma) gets the exact continuous time t(sigma) from
  lambda = -log sigma (no discretisation at all), x_ve = x_vp / alpha;
* our solvers integrate S from T directly.

All start from one x_T = z ~ N(0, I) (x_ve = z * sqrt(1 + sigma_max^2) for the sigma-space
samplers) and all end in data space (diffusers and k-diffusion take their last step to sigma = 0).
Errors at a budget of 10 and 20 score evaluations (NFE, counted):

* RMS per coordinate to the exact probability-flow ODE solution x_0 from the same x_T (float64,
  ``ode_rk45`` rtol = atol = 1e-8, from T down to t = 1e-7), with the median per-sample error and
  the number of samples sent to another mixture component than the exact flow's ("mode
  switches", which dominate the RMS on the 64-D mixture) — deterministic samplers only;
* MMD^2 (``scoresde.metrics.mmd2``) and the Frechet distance to exact data samples, for all.

Samplers with a budget-dependent stage count get the largest step count whose NFE fits the budget.
States are float32 everywhere (diffusers' own arithmetic is float32); the exact score is evaluated
in float64 and cast. Run ``python benchmarks/external.py --help``; the default run (both problems,
n = 2000) takes about 7 minutes on a shared 2-core machine. k-diffusion is optional: its PyPI
package pulls its whole training stack (torchvision, kornia, wandb, ...), so install it with
``pip install --no-deps k-diffusion torchdiffeq``; without it that library is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import math
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as P  # noqa: E402

import scoresde as sd  # noqa: E402

N_TRAIN = 1000
T_REF = 1e-7  # the reference stops here: the PF-ODE moves x by O(beta_min * t) below it


# ----------------------------------------------------------------------------------------------
# the shared problem


class Setup:
    """The continuous VP SDE matching the 1000-step chain, the exact score, x_T, the reference."""

    def __init__(self, problem: str, n: int, n_ref: int, seed: int, floor_draws: int):
        self.problem = problem
        self.data = P.PROBLEMS[problem]()
        base = sd.VPSDE()
        self.times = base.discrete_times(N_TRAIN)  # (1001,) float64, t_0 = 0
        self.sde = sd.VPSDE(T=float(self.times[-1]))
        score = sd.exact_score(self.sde, self.data)
        self.score64 = score

        def score32(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return score(x.double(), torch.as_tensor(t, dtype=torch.float64)).to(x.dtype)

        self.score = score32
        betas = base.discrete_betas(N_TRAIN)
        abar = torch.cumprod(1 - betas, 0)
        self.log_sigmas = 0.5 * torch.log((1 - abar) / abar)  # diffusers' sigma_k = e^this
        # Integer timesteps must land exactly on the chain's times.
        t_k = self.sde.t_from_log_snr(-self.log_sigmas)
        assert float((t_k - self.times[1:]).abs().max()) < 1e-9
        self.sigma_max = float(self.log_sigmas[-1].exp())
        self.sigma_min = float(self.log_sigmas[0].exp())
        d = self.data.dim
        self.z = P.prior_noise(n, d, seed + 1)
        self.n_ref = min(n_ref, n)
        self.ref, self.ref_nfe, self.ref_seconds = P.pf_ode_reference(
            self.sde, score, self.z[: self.n_ref], T_REF
        )
        self.target = self.data.sample(n, torch.Generator().manual_seed(seed + 7)).float()
        self.floor = P.noise_floor(self.sde, self.data, 0.0, self.target, floor_draws, seed)
        # RMS of (TV, width) over exact data sets: their floors (both are positive)
        errs = torch.tensor(
            [
                P.mixture_errors(self.data, P.marginal_samples(self.sde, self.data, 0, n, k))
                for k in range(seed + 2000, seed + 2000 + floor_draws)
            ]
        )
        self.mixture_floor = errs.square().mean(0).sqrt().tolist()
        self.seed = seed
        self.cross_check = ""  # filled by ``cross_check`` when k-diffusion is available

    def t_of_timestep(self, k: float) -> torch.Tensor:
        """Continuous time of diffusers' (possibly fractional) timestep k, float64."""
        k = min(max(float(k), 0.0), N_TRAIN - 1.0)
        lo = min(int(math.floor(k)), N_TRAIN - 2)
        w = k - lo
        log_sigma = (1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]
        if w == 0.0:
            return self.times[lo + 1]
        return self.sde.t_from_log_snr(-log_sigma)


class Counter:
    def __init__(self, fn: Callable):
        self.fn, self.nfe = fn, 0

    def __call__(self, *args):
        self.nfe += 1
        return self.fn(*args)


# ----------------------------------------------------------------------------------------------
# samplers: each entry is (family, label, deterministic, run(setup, budget, x_T, n) -> (x, nfe))


@dataclass
class Entry:
    family: str
    label: str
    deterministic: bool
    run: Callable = field(repr=False)


def fit_budget(count: Callable[[int], int], budget: int) -> int | None:
    """Largest step count whose measured NFE fits the budget."""
    for steps in range(budget, 0, -1):
        try:
            if count(steps) <= budget:
                return steps
        except Exception:  # a step count the sampler rejects
            continue
    return None


# -- ours ---------------------------------------------------------------------------------------


def ours_entry(label, solver, options, grid, denoise, eps=None) -> Entry:
    algo = sd.make_solver(solver, **options)
    det = not algo.stochastic

    def run(s: Setup, budget: int, z: torch.Tensor):
        steps = (budget - int(denoise)) // algo.nfe_per_step  # the solver's declared count
        if steps < 1:
            return None, 0
        gen = torch.Generator().manual_seed(s.seed + 2)
        res = sd.sample(
            s.sde,
            s.score,
            tuple(z.shape),
            solver=solver,
            steps=steps,
            time_grid=grid,
            eps=eps,
            denoise=denoise,
            x_T=z.float(),
            generator=gen,
            **options,
        )
        return res.samples, res.nfe

    return Entry("scoresde", label, det, run)


def our_entries() -> list[Entry]:
    out = [ours_entry("dpm_solver (package defaults)", "dpm_solver", {}, None, False)]
    for order, solver_type in ((2, "taylor"), (2, "midpoint"), (3, "taylor")):
        for pred in ("data", "noise"):
            for grid in ("logsnr", "quadratic", "karras"):
                for denoise in (True, False):
                    opts = {"order": order, "prediction": pred}
                    tag = f"order={order},{pred}"
                    if solver_type == "midpoint":
                        opts["solver_type"] = "midpoint"
                        tag += ",midpoint"
                    name = f"dpm_solver({tag}) {grid}" + (" +denoise" if denoise else "")
                    out.append(ours_entry(name, "dpm_solver", opts, grid, denoise))
    out.append(ours_entry("unipc (package defaults)", "unipc", {}, None, False))
    for order in (2, 3):
        for pred in ("data", "noise"):
            for grid in ("logsnr", "quadratic", "karras"):
                for denoise in (True, False):
                    name = f"unipc(order={order},{pred}) {grid}" + (" +denoise" if denoise else "")
                    opts = {"order": order, "prediction": pred}
                    out.append(ours_entry(name, "unipc", opts, grid, denoise))
    out += [
        ours_entry("ddim(eta=0) quadratic", "ddim", {"eta": 0.0}, "quadratic", False),
        ours_entry("ode_heun quadratic", "ode_heun", {}, "quadratic", False),
        ours_entry("ode_heun logsnr", "ode_heun", {}, "logsnr", False),
        ours_entry("ode_rk4 quadratic", "ode_rk4", {}, "quadratic", False),
        ours_entry("ddim(eta=1) quadratic", "ddim", {"eta": 1.0}, "quadratic", False),
        ours_entry(
            "dpm_solver_sde(order=2) logsnr +denoise",
            "dpm_solver_sde",
            {"order": 2},
            "logsnr",
            True,
        ),
        ours_entry(
            "dpm_solver_sde(order=2) quadratic", "dpm_solver_sde", {"order": 2}, "quadratic", False
        ),
        ours_entry("ancestral quadratic", "ancestral", {}, "quadratic", False),
    ]
    return out


# -- diffusers ----------------------------------------------------------------------------------

CHAIN = {
    "num_train_timesteps": N_TRAIN,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}


def diffusers_specs() -> list[tuple[str, str, dict, bool]]:
    """(scheduler class, label, config, deterministic); clip_sample=False where the scheduler has
    it (its default True clips x0 to [-1, 1], an image-range assumption that would cut the ring)."""
    dpm = "DPMSolverMultistepScheduler"
    specs = []
    for order in (2, 3):
        for extra, tag in (
            ({}, "default"),
            ({"use_karras_sigmas": True}, "karras"),
            ({"use_lu_lambdas": True}, "lu_lambdas"),
            ({"use_exponential_sigmas": True}, "exponential"),
            ({"timestep_spacing": "trailing"}, "trailing"),
        ):
            specs.append((dpm, f"DPM++ {order}M {tag}", {"solver_order": order, **extra}, True))
    # diffusers refuses final_sigmas_type="zero" for the noise form: it stops at sigma_min.
    for extra, tag in (
        ({}, "default"),
        ({"use_karras_sigmas": True}, "karras"),
        ({"use_lu_lambdas": True}, "lu_lambdas"),
    ):
        specs.append(
            (
                dpm,
                f"DPM-Solver 2M (noise) {tag}",
                {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", **extra},
                True,
            )
        )
    specs.append(
        (
            dpm,
            "SDE-DPM++ 2M karras",
            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
            False,
        )
    )
    for order in (2, 3):
        for extra, tag in (
            ({}, "default"),
            ({"use_karras_sigmas": True}, "karras"),
            ({"use_exponential_sigmas": True}, "exponential"),
        ):
            specs.append(
                (
                    "UniPCMultistepScheduler",
                    f"UniPC bh2 order {order} {tag}",
                    {"solver_order": order, **extra},
                    True,
                )
            )
    specs.append(
        (
            "UniPCMultistepScheduler",
            "UniPC bh1 order 3 karras",
            {"solver_order": 3, "solver_type": "bh1", "use_karras_sigmas": True},
            True,
        )
    )
    for order in (2, 3):
        for extra, tag in (({}, "default"), ({"use_karras_sigmas": True}, "karras")):
            specs.append(
                (
                    "DPMSolverSinglestepScheduler",
                    f"DPM++ {order}S {tag}",
                    {"solver_order": order, **extra},
                    True,
                )
            )
    for extra, tag in (({}, "default"), ({"use_karras_sigmas": True}, "karras")):
        specs.append(
            ("DEISMultistepScheduler", f"DEIS order 3 {tag}", {"solver_order": 3, **extra}, True)
        )
    specs.append(("DDIMScheduler", "DDIM default (leading)", {"clip_sample": False}, True))
    specs.append(
        (
            "DDIMScheduler",
            "DDIM trailing",
            {"clip_sample": False, "timestep_spacing": "trailing"},
            True,
        )
    )
    for cls, name in (
        ("EulerDiscreteScheduler", "Euler"),
        ("HeunDiscreteScheduler", "Heun"),
        ("KDPM2DiscreteScheduler", "KDPM2"),
        ("LMSDiscreteScheduler", "LMS"),
    ):
        for extra, tag in (({}, "default"), ({"use_karras_sigmas": True}, "karras")):
            specs.append((cls, f"{name} {tag}", dict(extra), True))
    specs.append(("PNDMScheduler", "PLMS (PNDM skip_prk_steps)", {"skip_prk_steps": True}, True))
    specs.append(("EulerAncestralDiscreteScheduler", "Euler ancestral", {}, False))
    specs.append(("DDPMScheduler", "DDPM", {"clip_sample": False}, False))
    specs.append(
        (
            "DPMSolverSDEScheduler",
            "DPM++ SDE karras",
            {"use_karras_sigmas": True, "noise_sampler_seed": 0},
            False,
        )
    )
    return specs


def diffusers_entry(cls_name: str, label: str, config: dict, det: bool) -> Entry:
    import diffusers

    cls = getattr(diffusers, cls_name)

    def make(steps: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = cls(**CHAIN, **config)
            sched.set_timesteps(steps)
        return sched

    def loop(s: Setup, sched, z: torch.Tensor, model: Callable):
        shape = z.shape
        x = (z.float() * sched.init_noise_sigma).reshape(shape[0], shape[1], 1, 1)
        kwargs = {}
        if "generator" in inspect.signature(sched.step).parameters:
            kwargs["generator"] = torch.Generator().manual_seed(s.seed + 2)
        for t in sched.timesteps:
            x_in = sched.scale_model_input(x, t)
            eps = model(x_in.reshape(shape), t).reshape(x.shape)
            x = sched.step(eps, t, x, **kwargs).prev_sample
        return x.reshape(shape)

    def eps_model(s: Setup):
        def model(x: torch.Tensor, k) -> torch.Tensor:
            t = s.t_of_timestep(float(k))
            sigma = s.sde.marginal(t)[1]
            return (-sigma * s.score64(x.double(), t)).to(x.dtype)

        return model

    def count(s: Setup, steps: int) -> int:
        c = Counter(eps_model(s))
        loop(s, make(steps), s.z[:2], c)
        return c.nfe

    def run(s: Setup, budget: int, z: torch.Tensor):
        steps = fit_budget(lambda k: count(s, k), budget)
        if steps is None:
            return None, 0
        c = Counter(eps_model(s))
        return loop(s, make(steps), z, c), c.nfe

    return Entry("diffusers", label, det, run)


# -- k-diffusion --------------------------------------------------------------------------------


def load_k_diffusion() -> tuple[types.ModuleType | None, str]:
    """k_diffusion.sampling, or None and why. ``import k_diffusion`` pulls its training stack
    (torchvision, kornia, wandb, clean-fid, ...); the samplers need only torch, scipy, torchsde,
    torchdiffeq and ``utils.append_dims``, so with a ``pip install --no-deps k-diffusion`` the file
    sampling.py is loaded on its own with that one helper."""
    try:
        return importlib.import_module("k_diffusion.sampling"), "k_diffusion (full install)"
    except Exception:
        pass
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion is not installed (pip install --no-deps k-diffusion torchdiffeq)"
    root = Path(list(spec.submodule_search_locations)[0])
    try:
        from importlib.metadata import version

        ver = version("k-diffusion")
    except Exception:
        ver = "?"
    pkg = types.ModuleType("_kdiffusion")
    pkg.__path__ = [str(root)]
    utils = types.ModuleType("_kdiffusion.utils")

    def append_dims(x, target_dims):  # k_diffusion.utils.append_dims, verbatim
        dims_to_append = target_dims - x.ndim
        if dims_to_append < 0:
            raise ValueError(
                f"input has {x.ndim} dims but target_dims is {target_dims}, which is less"
            )
        return x[(...,) + (None,) * dims_to_append]

    utils.append_dims = append_dims
    sys.modules["_kdiffusion"], sys.modules["_kdiffusion.utils"] = pkg, utils
    pkg.utils = utils
    try:
        sspec = importlib.util.spec_from_file_location("_kdiffusion.sampling", root / "sampling.py")
        mod = importlib.util.module_from_spec(sspec)
        sys.modules["_kdiffusion.sampling"] = mod
        sspec.loader.exec_module(mod)
    except Exception as err:  # e.g. torchdiffeq missing
        return None, f"k_diffusion/sampling.py could not be loaded: {err!r}"
    return mod, f"k-diffusion {ver} (sampling.py loaded without the training stack)"


KD_SAMPLERS = [
    # (function, label, deterministic, kwargs)
    ("sample_euler", "euler", True, {}),
    ("sample_heun", "heun", True, {}),
    ("sample_dpm_2", "dpm_2", True, {}),
    ("sample_lms", "lms", True, {}),
    ("sample_dpmpp_2m", "dpmpp_2m", True, {}),
    ("sample_dpmpp_2s_ancestral", "dpmpp_2s (eta=0)", True, {"eta": 0.0}),
    ("sample_euler_ancestral", "euler_ancestral", False, {}),
    ("sample_dpm_2_ancestral", "dpm_2_ancestral", False, {}),
    ("sample_dpmpp_2s_ancestral", "dpmpp_2s_ancestral", False, {}),
    ("sample_dpmpp_sde", "dpmpp_sde", False, {}),
    ("sample_dpmpp_2m_sde", "dpmpp_2m_sde", False, {}),
    ("sample_dpmpp_3m_sde", "dpmpp_3m_sde", False, {}),
]


def kd_entries(kd: types.ModuleType) -> list[Entry]:
    def denoiser(s: Setup):
        def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            sig = sigma.double().clamp_min(1e-12)
            t = s.sde.t_from_log_snr(-torch.log(sig))
            alpha = 1 / torch.sqrt(1 + sig**2)
            x_vp = x.double() * alpha[:, None]
            score = s.score64(x_vp, t)
            sigma_t = sig * alpha
            return ((x_vp + sigma_t[:, None] ** 2 * score) / alpha[:, None]).to(x.dtype)

        return model

    def sigmas(s: Setup, kind: str, n: int) -> torch.Tensor:
        if kind == "karras":
            return kd.get_sigmas_karras(n, s.sigma_min, s.sigma_max)
        return kd.get_sigmas_exponential(n, s.sigma_min, s.sigma_max)

    out = []
    for fn_name, name, det, kwargs in KD_SAMPLERS:
        for kind in ("karras", "exponential"):

            def run(
                s: Setup, budget: int, z: torch.Tensor, fn_name=fn_name, kind=kind, kwargs=kwargs
            ):
                fn = getattr(kd, fn_name)

                def go(zz, n):
                    c = Counter(denoiser(s))
                    sig = sigmas(s, kind, n)
                    torch.manual_seed(s.seed + 2)
                    x = zz.float() * math.sqrt(1 + s.sigma_max**2)
                    out = fn(c, x, sig, disable=True, **kwargs)
                    return out, c.nfe

                n = fit_budget(lambda k: go(s.z[:2], k)[1], budget)
                if n is None:
                    return None, 0
                return go(z, n)

            out.append(Entry("k-diffusion", f"{name} {kind}", det, run))

    def run_fast(s: Setup, budget: int, z: torch.Tensor):
        c = Counter(denoiser(s))
        x = z.float() * math.sqrt(1 + s.sigma_max**2)
        out = kd.sample_dpm_fast(c, x, s.sigma_min, s.sigma_max, budget, disable=True)
        return out, c.nfe

    out.append(Entry("k-diffusion", "dpm_fast (eta=0)", True, run_fast))
    return out


def cross_check(s: Setup, kd: types.ModuleType, steps: int = 9) -> str:
    """Our DPM-Solver++(2M) in k-diffusion's form (midpoint weights, second order up to the last
    grid step, uniform log-SNR grid down to sigma_min, then the Tweedie step to sigma = 0) against
    k-diffusion's sample_dpmpp_2m on the same exponential sigmas: they must agree to round-off."""
    z = s.z[: s.n_ref]
    ours = sd.sample(
        s.sde,
        s.score,
        tuple(z.shape),
        solver="dpm_solver",
        steps=steps,
        time_grid="logsnr",
        eps=float(s.times[1]),
        denoise=True,
        x_T=z.float(),
        order=2,
        prediction="data",
        solver_type="midpoint",
        lower_order_final=False,
    )
    entry = next(e for e in kd_entries(kd) if e.label == "dpmpp_2m exponential")
    with torch.no_grad():
        theirs, nfe = entry.run(s, steps + 1, z)
    return (
        f"Cross-check: scoresde dpm_solver(order=2, data, midpoint, lower_order_final=False) "
        f"logsnr {steps} steps + denoise ({ours.nfe} NFE) vs k-diffusion sample_dpmpp_2m "
        f"exponential ({nfe} NFE): RMS difference {P.fmt(P.rms(ours.samples, theirs))} "
        f"(their RMS to the reference {P.fmt(P.rms(theirs, s.ref))})."
    )


# ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    problem: str
    budget: int
    entry: Entry
    nfe: int
    rms: float | None
    median: float | None
    switches: int | None
    mmd2: float | None
    fd: float | None
    seconds: float
    note: str = ""
    tv: float | None = None
    width: float | None = None


def evaluate(s: Setup, e: Entry, budget: int) -> Result:
    t0 = time.perf_counter()
    note = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                x, nfe = e.run(s, budget, s.z)
    except Exception as err:  # report, do not stop the comparison
        x, nfe, note = None, 0, f"{type(err).__name__}: {str(err)[:60]}"
    seconds = time.perf_counter() - t0
    if x is None:
        return Result(
            s.problem, budget, e, nfe, None, None, None, None, None, seconds, note or "no fit"
        )
    x = x.reshape(s.z.shape)
    pe = P.path_error(s.data, x[: s.n_ref], s.ref) if e.deterministic else None
    return Result(
        s.problem,
        budget,
        e,
        nfe,
        pe.rms if pe else None,
        pe.median if pe else None,
        pe.switches if pe else None,
        P.safe_mmd2(x, s.target),
        P.safe_frechet(x, s.target),
        seconds,
        note,
        *P.mixture_errors(s.data, x),
    )


def report(results: list[Result], setups: dict[str, Setup], budgets) -> list[str]:
    lines = []
    for problem, s in setups.items():
        f = s.floor
        lines += [
            f"### {problem}",
            "",
            f"Reference: ode_rk45 float64 rtol = atol = 1e-8 from T = {s.sde.T:.6g} to "
            f"{T_REF:g} on the first {s.n_ref} samples ({s.ref_nfe} NFE, "
            f"{s.ref_seconds:.0f} s). Noise floor vs the data: MMD² {P.fmt(f.mmd_mean)} ± "
            f"{P.fmt(f.mmd_std)}, Fréchet {P.fmt(f.fd_mean)} ± {P.fmt(f.fd_std)} "
            f"({f.draws} draws); mode TV {P.fmt(s.mixture_floor[0])}, width error "
            f"{P.fmt(s.mixture_floor[1])} (RMS over {f.draws} exact sets).",
            "",
        ]
        if s.cross_check:
            lines += [s.cross_check, ""]
        for budget in budgets:
            rs = [r for r in results if r.problem == problem and r.budget == budget]
            det = sorted(
                (r for r in rs if r.rms is not None and not math.isnan(r.rms)), key=lambda r: r.rms
            )
            by_median = sorted(det, key=lambda r: r.median)
            body = []
            for rank, r in enumerate(det, 1):
                body.append(
                    [
                        str(rank),
                        str(by_median.index(r) + 1),
                        r.entry.family,
                        r.entry.label,
                        str(r.nfe),
                        P.fmt(r.rms),
                        P.fmt(r.median),
                        str(r.switches),
                        P.fmt(r.mmd2),
                        P.fmt(r.fd),
                        P.fmt(r.tv),
                        P.fmt(r.width),
                        f"{r.seconds:.2f}",
                    ]
                )
            lines += [
                f"#### {problem}, NFE ≤ {budget}: deterministic samplers, ranked by RMS "
                "to the exact PF-ODE solution",
                "",
                P.markdown_table(
                    [
                        "rank (RMS)",
                        "rank (median)",
                        "library",
                        "sampler",
                        "NFE",
                        "RMS vs ref",
                        "median err",
                        "mode switches",
                        "MMD²",
                        "Fréchet",
                        "mode TV",
                        "width err",
                        "wall (s)",
                    ],
                    body,
                ),
                "",
            ]
            sto = sorted(
                (r for r in rs if r.rms is None and r.mmd2 is not None),
                key=lambda r: (math.isnan(r.mmd2), r.mmd2),
            )
            body = [
                [
                    r.entry.family,
                    r.entry.label,
                    str(r.nfe),
                    P.fmt(r.mmd2),
                    P.fmt(r.fd),
                    P.fmt(r.tv),
                    P.fmt(r.width),
                    f"{r.seconds:.2f}",
                ]
                for r in sto
            ]
            lines += [
                f"#### {problem}, NFE ≤ {budget}: stochastic samplers, by MMD²",
                "",
                P.markdown_table(
                    ["library", "sampler", "NFE", "MMD²", "Fréchet", "mode TV", "width err"]
                    + ["wall (s)"],
                    body,
                ),
                "",
            ]
            failed = [r for r in rs if r.mmd2 is None]
            if failed:
                lines += [
                    "Not run: "
                    + "; ".join(f"{r.entry.family} {r.entry.label} ({r.note})" for r in failed),
                    "",
                ]
            for key, ranked in (("RMS", det), ("median", by_median)):
                best = {}
                for r in ranked:
                    best.setdefault(r.entry.family, r)
                lines += [
                    f"Best deterministic per library by {key} at NFE ≤ {budget} ({problem}): "
                    + "; ".join(
                        f"{fam}: {r.entry.label} — RMS {P.fmt(r.rms)}, median "
                        f"{P.fmt(r.median)}, {r.switches} mode switches "
                        f"(rank {ranked.index(r) + 1})"
                        for fam, r in best.items()
                    ),
                    "",
                ]
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", default="ring,gmm64")
    p.add_argument("--budgets", default="10,20", help="NFE budgets")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-ref", type=int, default=1000)
    p.add_argument("--floor-draws", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--libraries", default="scoresde,diffusers,k-diffusion")
    p.add_argument("--only", default=None, help="substring filter on sampler labels")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine two OpenMP threads "
        "per process oversubscribe the cores and run up to 20x slower)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",")]
    libs = args.libraries.split(",")
    started = time.perf_counter()
    import diffusers

    kd, kd_note = load_k_diffusion()
    lines = [
        f"`{P.command_line()}`",
        "",
        f"{P.environment_line()}; diffusers {diffusers.__version__}; {kd_note}; n = {args.n}, "
        f"seed {args.seed}; float32 states, exact score in float64.",
        "",
    ]
    for line in lines:
        print(line, flush=True)
    entries = []
    if "scoresde" in libs:
        entries += our_entries()
    if "diffusers" in libs:
        entries += [diffusers_entry(*spec) for spec in diffusers_specs()]
    if "k-diffusion" in libs and kd is not None:
        entries += kd_entries(kd)
    if args.only:
        entries = [e for e in entries if args.only in e.label]
    setups, results = {}, []
    for problem in args.problems.split(","):
        s = Setup(problem, args.n, args.n_ref, args.seed, args.floor_draws)
        s.cross_check = cross_check(s, kd) if kd is not None else ""
        print(f"<!-- {s.cross_check} -->", file=sys.stderr, flush=True)
        setups[problem] = s
        for budget in budgets:
            for e in entries:
                r = evaluate(s, e, budget)
                results.append(r)
                print(
                    f"<!-- {problem} {budget} {e.family} {e.label}: nfe {r.nfe} rms "
                    f"{P.fmt(r.rms)} mmd {P.fmt(r.mmd2)} {r.note} -->",
                    file=sys.stderr,
                    flush=True,
                )
    body = report(results, setups, budgets)
    body.append(f"Total wall time: {time.perf_counter() - started:.0f} s.")
    for line in body:
        print(line, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines + body) + "\n")


if __name__ == "__main__":
    main()
