"""Controllable generation: classifier-free guidance, classifier guidance and inpainting.

Every guidance combinator returns a plain ``score_fn(x, t)``, so every solver of ``sample`` runs
guided sampling unchanged. Inpainting needs its own loop (the known coordinates are re-imposed
between steps, or particles are reweighted), built from the solvers' step pieces: the predictor
and corrector steps of ``solvers/``, the front door's time grids, counted score evaluations and
noise source.

    classifier_free_guidance(s_c, s_u, scale=w)    s_u + w (s_c - s_u)     (Ho & Salimans 2022)
    cfg_score_fn(model, y, scale=w)                 the same, one batched call to a conditional net
    classifier_guidance(s, log p_t(y|x), scale=w)   s + w grad_x log p_t(y | x)  (Song et al. 2021)
    inpaint(sde, s, known, mask, method=...)        "replacement" (Song et al. 2021, App. I.2),
                                                    "repaint" (Lugmayr et al. 2022),
                                                    "smc" (twisted SMC, Wu et al. 2023)

With w > 1 neither guidance samples p(x | y)^w p(x)^(1-w): the guided score is the gradient of
p_t(x | y)^w p_t(x)^(1-w) at every t, but that family is not the diffusion of its t = 0 member
(docs/guidance.md measures how far the samples land from the tilted density).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .losses import TRAIN_EPS, sample_times
from .nets.embeddings import ConditionEmbedding, batch_time
from .nets.mlp import ResidualBlock
from .oracle import _check_label_values
from .sampling import NonFiniteError, make_solver, make_time_grid
from .sde import SDE, ScoreFn, TimeLike, batch_coeff
from .solvers.base import Context, CountingScore, NoiseSource
from .solvers.pc import PredictorCorrector
from .validation import (
    check_bool,
    check_callable,
    check_generator,
    check_instance,
    check_int,
    check_positive,
    check_real,
    check_tensor,
)

__all__ = [
    "classifier_free_guidance",
    "cfg_score_fn",
    "classifier_guidance",
    "NoisyClassifier",
    "train_classifier",
    "classifier_log_prob",
    "inpaint",
    "InpaintResult",
    "INPAINT_METHODS",
    "repaint_schedule",
    "mask_from_spec",
]


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance


def _check_scale(scale) -> float:
    return check_real("scale", scale)


def _check_interval(interval) -> tuple[float, float] | None:
    if interval is None:
        return None
    if isinstance(interval, str) or not hasattr(interval, "__len__") or len(interval) != 2:
        raise TypeError(f"interval must be None or (t_lo, t_hi), got {interval!r}")
    lo, hi = (check_real("interval", v) for v in interval)
    if not 0 <= lo <= hi:
        raise ValueError(f"interval must satisfy 0 <= t_lo <= t_hi, got {interval!r}")
    return lo, hi


def _combine(
    s_c: Tensor, s_u: Tensor, scale: float, interval: tuple[float, float] | None, t, x: Tensor
) -> Tensor:
    """s_u + w (s_c - s_u); with an interval, that for t inside it and s_c outside (a per-sample
    ``torch.where`` on the device, so a solver loop never waits on the host)."""
    guided = s_u + scale * (s_c - s_u)
    if interval is None:
        return guided
    tt = batch_time(t, x)
    inside = (tt >= interval[0]) & (tt <= interval[1])
    return torch.where(inside.reshape(-1, *([1] * (x.dim() - 1))), guided, s_c)


def classifier_free_guidance(
    cond_score_fn: ScoreFn,
    uncond_score_fn: ScoreFn,
    scale: float = 1.0,
    interval: Sequence[float] | None = None,
) -> ScoreFn:
    """The guided score s_u + w (s_c - s_u) of two score functions.

    Ho & Salimans 2022, Eq. 6, written for scores: their eps~ = (1 + w') eps_c - w' eps_u is
    scale w = 1 + w' here. w = 0 is the unconditional score, w = 1 the conditional one, and w > 1
    the gradient of log p_t(x | y)^w p_t(x)^(1-w) at each t.

    Parameters
    ----------
    interval
        Optional (t_lo, t_hi): guide only for t in [t_lo, t_hi] and use the plain conditional
        score (w = 1) elsewhere, the limited-interval guidance of Kynkäänniemi et al. 2024,
        who find guidance harmful at high noise and useless at low noise. The switch
        is a per-sample ``torch.where``, so no host-device sync happens in a solver loop.

    Notes
    -----
    Both branches are evaluated on every call (two score evaluations per counted NFE) except at
    w = 1 (conditional only) and w = 0 without interval (unconditional only); for a
    class-conditional network ``cfg_score_fn`` batches the two into one call.
    """
    check_callable("cond_score_fn", cond_score_fn)
    check_callable("uncond_score_fn", uncond_score_fn)
    scale, interval = _check_scale(scale), _check_interval(interval)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        if scale == 1.0:
            return cond_score_fn(x, t)
        if scale == 0.0 and interval is None:
            return uncond_score_fn(x, t)
        return _combine(cond_score_fn(x, t), uncond_score_fn(x, t), scale, interval, t, x)

    return score_fn


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if n is None:
        n = getattr(getattr(model, "net", None), "num_classes", None)
    return n


def cfg_score_fn(
    model: nn.Module,
    y: int | Tensor,
    scale: float = 1.0,
    interval: Sequence[float] | None = None,
) -> ScoreFn:
    """Classifier-free guidance for a class-conditional ``ScoreModel``, one network call per NFE.

    ``model(x, t, y)`` returns the score of p_t(x | y), and of p_t(x) for the null label
    ``num_classes`` (how ``ResidualMLP``/``UNet`` learn both when trained with ``p_uncond > 0``,
    Ho & Salimans 2022, Alg. 1). Both branches run as one batch: x is concatenated with itself
    and the labels are [y, null]. At scale 1 only the conditional branch runs, at scale 0 (no
    interval) only the unconditional one.

    Parameters
    ----------
    y
        A class (int) or ``(batch,)`` labels in [0, num_classes); checked once, here.
    scale
        As in ``classifier_free_guidance``.
    interval
        As in ``classifier_free_guidance``.
    """
    num_classes = _num_classes(model)
    if num_classes is None:
        raise ValueError(
            "classifier-free guidance needs a class-conditional model: its network was built "
            "with num_classes=None (train with --conditional / num_classes=K and p_uncond > 0)"
        )
    _check_label_values(y, num_classes)
    scale, interval = _check_scale(scale), _check_interval(interval)

    def score_fn(x: Tensor, t: TimeLike) -> Tensor:
        b = x.shape[0]
        tt = batch_time(t, x)
        if isinstance(y, Tensor):
            if y.shape != (b,):
                raise ValueError(f"y has shape {tuple(y.shape)} but the batch size is {b}")
            labels = y.to(device=x.device, dtype=torch.long)
        else:
            labels = torch.full((b,), y, dtype=torch.long, device=x.device)
        null = torch.full_like(labels, num_classes)
        if scale == 1.0:
            return model(x, tt, labels)
        if scale == 0.0 and interval is None:
            return model(x, tt, null)
        out = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
        return _combine(out[:b], out[b:], scale, interval, tt, x)

    return score_fn


# ----------------------------------------------------------------------------------------------
# Classifier guidance


def _grad_log_prob(log_prob_fn: Callable[[Tensor, TimeLike], Tensor], x: Tensor, t) -> Tensor:
    """grad_x of ``log_prob_fn(x, t)`` (batch,), by autograd even under a caller's no_grad."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_prob_fn(xg, t)
        if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
            got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise ValueError(f"log_prob_y_fn must return a ({x.shape[0]},) tensor, got {got}")
        if not lp.requires_grad:
            raise ValueError("log_prob_y_fn(x, t) does not depend on x through autograd")
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    return grad


def classifier_guidance(
    score_fn: ScoreFn, log_prob_y_fn: Callable[[Tensor, TimeLike], Tensor], scale: float = 1.0
) -> ScoreFn:
    """The guided score s(x, t) + w grad_x log p_t(y | x).

    Song et al. 2021, Eq. 49 (grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x));
    Dhariwal & Nichol 2021, Sec. 4, with their gradient scale w. With the exact noisy classifier
    (``exact_classifier``) and w = 1 it is the exact conditional score.

    Parameters
    ----------
    log_prob_y_fn
        ``(x, t) -> (batch,)`` log p_t(y | x) for the wanted labels (e.g.
        ``classifier_log_prob(classifier, y)``); differentiated by autograd inside, so the guided
        score also works under a caller's ``torch.no_grad()``. The gradient is detached.
    """
    check_callable("score_fn", score_fn)
    check_callable("log_prob_y_fn", log_prob_y_fn)
    scale = _check_scale(scale)

    def guided(x: Tensor, t: TimeLike) -> Tensor:
        return score_fn(x, t) + scale * _grad_log_prob(log_prob_y_fn, x, t)

    return guided


class NoisyClassifier(nn.Module):
    """A time-conditioned classifier p_phi(y | x_t, t) for classifier guidance: logits.

    The input is flattened, so it serves vectors and small images (8x8 digits) alike: Linear ->
    ``depth`` residual blocks with FiLM conditioning on the time embedding (the blocks of
    ``ResidualMLP``) -> LayerNorm -> SiLU -> Linear to ``num_classes`` logits. Trained on the
    SDE's own perturbations x_t = alpha_t x_0 + sigma_t z by ``train_classifier``
    (Dhariwal & Nichol 2021, Sec. 4; Song et al. 2021, App. I.1).

    Shapes: x (batch, *in_shape), t (batch,) or scalar -> (batch, num_classes).
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        num_classes: int,
        hidden: int = 256,
        depth: int = 3,
        time_embed: str = "fourier",
        embed_dim: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
        self.in_shape = in_shape
        self.num_classes = check_int("num_classes", num_classes, 2)
        dim = math.prod(in_shape)
        self.config = dict(
            in_shape=list(in_shape),
            num_classes=num_classes,
            hidden=check_int("hidden", hidden),
            depth=check_int("depth", depth),
            time_embed=time_embed,
            embed_dim=embed_dim,
            dropout=dropout,
        )
        self.cond = ConditionEmbedding(time_embed, embed_dim, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, hidden, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"x must have shape (batch, *{self.in_shape}), got {tuple(x.shape)}")
        c = self.cond(batch_time(t, x))
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(nn.functional.silu(self.out_norm(h)))


def train_classifier(
    sde: SDE,
    classifier: NoisyClassifier,
    data: Tensor,
    labels: Tensor,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    eps: float = TRAIN_EPS,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[float]:
    """Train ``classifier`` by cross-entropy on perturbed data; returns the per-step losses.

    Each step draws a batch (x_0, y), t ~ U(eps, T) and x_t = alpha_t x_0 + sigma_t z from the
    same SDE the score model uses, and minimises -log p_phi(y | x_t, t) with Adam (Dhariwal &
    Nichol 2021, Sec. 4: a classifier on noisy images). Runs on ``data``'s device.
    """
    check_instance("sde", sde, SDE)
    check_tensor("data", data, min_dim=2)
    check_tensor("labels", labels, floating=False)
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_positive("lr", lr)
    check_real("eps", eps, 0.0, sde.T, lo_open=True, hi_open=True)
    check_generator("generator", generator)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"labels must have shape ({data.shape[0]},), got {tuple(labels.shape)}")
    _check_label_values(labels, classifier.num_classes)
    dev = data.device
    g_dev = generator.device if generator is not None else dev
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc="classifier", leave=False):
        idx = torch.randint(data.shape[0], (batch_size,), generator=generator, device=g_dev)
        x0, y = data[idx.to(dev)], labels[idx.to(dev)].to(dev)
        t = sample_times(batch_size, sde.T, eps, generator=generator, device=dev)
        z = torch.randn(x0.shape, generator=generator, device=g_dev, dtype=x0.dtype).to(dev)
        alpha, sigma = torch.exp(sde._log_alpha(t)), torch.exp(sde._log_sigma(t))
        x_t = batch_coeff(alpha, x0) * x0 + batch_coeff(sigma, x0) * z
        loss = nn.functional.cross_entropy(classifier(x_t, t.to(x0.dtype)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    classifier.eval()
    return [float(v) for v in torch.stack(losses)]


def classifier_log_prob(
    classifier: nn.Module, y: int | Tensor
) -> Callable[[Tensor, TimeLike], Tensor]:
    """(x, t) -> log p_phi(y | x, t), (batch,), the log-softmax of a classifier's logits.

    Parameters
    ----------
    y
        A class (int) or ``(batch,)`` labels in [0, classifier.num_classes), checked once here.
    """
    num_classes = _num_classes(classifier)
    if num_classes is None:
        raise ValueError("the classifier must have a num_classes attribute")
    _check_label_values(y, num_classes)

    def log_prob_y(x: Tensor, t: TimeLike) -> Tensor:
        logp = torch.log_softmax(classifier(x, batch_time(t, x)), dim=-1)
        if isinstance(y, Tensor):
            return logp.gather(1, y.to(x.device).reshape(-1, 1))[:, 0]
        return logp[:, y]

    return log_prob_y


# ----------------------------------------------------------------------------------------------
# Inpainting

#: Names accepted by ``inpaint(method=...)``.
INPAINT_METHODS: tuple[str, ...] = ("replacement", "repaint", "smc")

_PC_OPTIONS = {
    "predictor": "reverse_diffusion",
    "corrector": "langevin",
    "snr": 0.16,
    "corrector_steps": 1,
    "step_size": 0.1,
    "step_norm": "sample",
}
#: Each method's options and their defaults: replacement follows Song et al.'s PC inpainter
#: (reverse diffusion + one Langevin step, snr 0.16), repaint Lugmayr et al.'s 250-step setting
#: (j = 10, r = 10, no corrector), smc Wu et al.'s TDS (16 particles, resampling when the ESS
#: falls below half of them; ``twist_var_floor`` is added to the twist's variance, see ``_smc``).
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "replacement": {**_PC_OPTIONS, "denoise": False},
    "repaint": {
        **_PC_OPTIONS,
        "corrector": "none",
        "jump_length": 10,
        "repeats": 10,
        "denoise": False,
    },
    "smc": {"particles": 16, "ess_threshold": 0.5, "twist_var_floor": 0.0},
}

#: Default time grid per method (``benchmarks/inpainting.py``: on the uniform grid smc's last
#: step from sigma ~ 0.05 to 0.01 leaves the final weights degenerate; logsnr steps evenly in
#: log sigma near the data).
METHOD_TIME_GRIDS = {"replacement": "uniform", "repaint": "uniform", "smc": "logsnr"}


@dataclass
class InpaintResult:
    """What ``inpaint`` returns.

    Attributes
    ----------
    samples
        ``(B, *event)``; the known coordinates equal ``known`` exactly.
    nfe
        Score-function calls actually made (counted). For smc each call evaluates
        B * particles rows and is followed by one vector-Jacobian product (the twist's gradient).
    times
        The time grid (float64, T -> eps).
    particles
        smc only: ``(B, K, *event)`` final particles.
    weights
        smc only: ``(B, K)`` normalised final weights (``samples`` is one particle per row drawn
        from them).
    log_weights
        smc only: their unnormalised logs.
    ess
        smc only: ``(steps, B)`` effective sample size before each step's resampling decision.
    final_ess
        smc only: ``(B,)`` effective sample size after the last step.
    resampled
        smc only: ``(steps, B)`` bool.
    log_evidence
        smc only: ``(B,)`` the SMC estimate of log p_eps(x_known) (unbiased in exp).
    stats
        Extra counters (e.g. ``down_steps``/``up_steps`` of repaint).
    """

    samples: Tensor
    nfe: int
    times: Tensor
    particles: Tensor | None = None
    weights: Tensor | None = None
    log_weights: Tensor | None = None
    ess: Tensor | None = None
    final_ess: Tensor | None = None
    resampled: Tensor | None = None
    log_evidence: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def _check_known_mask(known: Tensor, mask: Tensor) -> Tensor:
    if not isinstance(known, Tensor) or not known.is_floating_point() or known.dim() < 2:
        raise ValueError("known must be a floating tensor of shape (batch, *event)")
    if not isinstance(mask, Tensor):
        raise ValueError("mask must be a bool tensor (True = known coordinate)")
    if mask.shape not in (known.shape, known.shape[1:]):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}; it must match known {tuple(known.shape)} or "
            f"its event shape {tuple(known.shape[1:])}"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise ValueError(f"mask must be a bool tensor (True = known), got {mask.dtype}")
        mask = mask != 0
    return mask.to(known.device).expand(known.shape)


def _method_options(method: str, options: dict) -> dict:
    if method not in INPAINT_METHODS:
        raise ValueError(
            f"unknown inpainting method {method!r}; valid methods are {INPAINT_METHODS}"
        )
    accepted = METHOD_OPTIONS[method]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"inpainting method {method!r} got unknown option(s) {unknown}; it accepts "
            f"{sorted(accepted)}"
        )
    return {**accepted, **options}


def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    known: Tensor,
    mask: Tensor,
    method: str = "replacement",
    steps: int | None = None,
    *,
    eps: float | None = None,
    time_grid: str | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    **options,
) -> InpaintResult:
    """Sample p(x_missing | x_known) with an unconditional score, by one of ``INPAINT_METHODS``.

    Parameters
    ----------
    sde
        The forward SDE.
    score_fn
        The (unconditional) score of its marginals.
    known
        ``(B, *event)`` values; only the entries where ``mask`` is True are read.
    mask
        Bool, True = known coordinate; shape ``(B, *event)`` or ``(*event)`` shared by all rows.
    method
        "replacement" (Song et al. 2021, App. I.2: the predictor-corrector sampler with the
        known coordinates replaced by a forward-diffused copy of ``known`` after every update);
        "repaint" (Lugmayr et al. 2022, Alg. 1: the same replacement plus resampling — after
        every ``jump_length`` reverse steps the state is re-noised ``jump_length`` steps forward,
        ``repeats`` times per segment); "smc" (the Twisted Diffusion Sampler of Wu et al. 2023,
        Alg. 1: ``particles`` weighted particles per row, see ``_smc``).
    steps
        Number of grid intervals (required). For repaint, the grid's reverse steps are
        traversed ``repeats`` times per segment, so NFE ~ steps * repeats.
    eps
        End time (default ``sde.sampling_eps``), as in ``sample``.
    time_grid
        Grid kind, as in ``sample``; default ``METHOD_TIME_GRIDS[method]``: uniform for
        replacement and repaint (as in their papers), logsnr for smc (its last step must be
        short relative to sigma, see ``_smc``).
    generator
        Randomness (the samples' device is known's device).
    **options
        Per method, see ``METHOD_OPTIONS``: predictor/corrector/snr/corrector_steps/
        step_size/step_norm/denoise (replacement, repaint), jump_length/repeats (repaint),
        particles/ess_threshold/twist_var_floor (smc). Unknown options are errors.

    Notes
    -----
    Unlike the reference inpainter the known coordinates of the result are ``known`` exactly,
    and no unknown coordinate carries the last step's noise when ``denoise`` is asked for (the
    reference code's ``x_mean`` mixed the noisy state back in); the known coordinates at T are a
    forward-diffused copy of ``known``, not ``known`` itself.
    """
    check_instance("sde", sde, SDE)
    check_callable("score_fn", score_fn)
    check_generator("generator", generator)
    opts = _method_options(method, options)
    mask = _check_known_mask(known, mask)
    # Unknown entries are never read (they may be NaN, as in missing data): zero them, so not
    # even a multiplication by a zero gradient can carry a NaN into the samples.
    known = torch.where(mask, known, torch.zeros((), dtype=known.dtype, device=known.device))
    if steps is None:
        raise ValueError("inpaint needs steps (an integer >= 1)")
    steps = check_int("steps", steps, 1)
    device, dtype = known.device, known.dtype
    ts = make_time_grid(sde, steps, eps, time_grid or METHOD_TIME_GRIDS[method], device=device)
    if method == "smc":
        return _smc(sde, score_fn, known, mask, ts, generator, progress, **opts)
    denoise = check_bool("denoise", opts.pop("denoise"))
    jump_length, repeats = opts.pop("jump_length", 1), opts.pop("repeats", 1)
    if opts["predictor"] == "none":
        raise ValueError("inpainting needs a predictor; choose one of the pc predictors")
    algo = make_solver("pc", **opts)
    assert isinstance(algo, PredictorCorrector)
    algo.check(sde, steps)
    ctx = Context(
        sde, CountingScore(score_fn), NoiseSource(known.shape, device, dtype, generator), steps
    )
    if method == "replacement":
        path = list(range(steps + 1))
    else:
        path = repaint_schedule(steps, jump_length, repeats)
    x = _replacement_loop(ctx, algo, known, mask, ts, path, progress)
    if denoise:
        x = ctx.data_pred(x, ts[-1], ctx.score(x, ts[-1]))
    x = torch.where(mask, known, x)
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"non-finite values (NaN or inf) appeared in the {method} samples")
    down = sum(b > a for a, b in zip(path[:-1], path[1:], strict=True))
    stats = {"down_steps": down, "up_steps": len(path) - 1 - down}
    return InpaintResult(samples=x, nfe=ctx.score.nfe, times=ts, stats=stats)


def repaint_schedule(steps: int, jump_length: int, repeats: int) -> list[int]:
    """The grid indices RePaint visits (0 = T, ``steps`` = eps), Lugmayr et al. 2022, Sec. 4.

    Going down one index is a reverse step; going up one is a forward (re-noising) step. After
    reaching each index i with steps - i a multiple of ``jump_length`` (below the first segment),
    the path jumps back up ``jump_length`` indices, ``repeats - 1`` times, so every segment of
    the grid is traversed ``repeats`` times (RePaint's ``get_schedule_jump``, in our indexing).
    ``repeats=1`` is plain replacement.
    """
    check_int("steps", steps, 1)
    check_int("jump_length", jump_length, 1)
    check_int("repeats", repeats, 1)
    remaining_jumps = {r: repeats - 1 for r in range(0, steps - jump_length, jump_length)}
    r, path = steps, [0]  # r = steps - index: reverse steps still to go
    while r >= 1:
        r -= 1
        path.append(steps - r)
        if remaining_jumps.get(r, 0) > 0:
            remaining_jumps[r] -= 1
            for _ in range(jump_length):
                r += 1
                path.append(steps - r)
    return path


def _replacement_loop(
    ctx: Context,
    algo: PredictorCorrector,
    known: Tensor,
    mask: Tensor,
    ts: Tensor,
    path: list[int],
    progress: bool,
) -> Tensor:
    """Walk ``path`` over the grid: reverse (corrector + predictor) steps down, forward
    transitions up, re-imposing a fresh forward-diffused copy of ``known`` after each update."""

    def diffused_known(t: Tensor) -> Tensor:
        alpha, sigma = ctx.coeffs(t)
        return batch_coeff(alpha, known) * known + batch_coeff(sigma, known) * ctx.noise()

    def replace(x: Tensor, t: Tensor) -> Tensor:
        return torch.where(mask, diffused_known(t), x)

    x = replace(ctx.noise() * ctx.sde.prior_std, ts[path[0]])
    state = algo.init(ctx, x, ts)
    pairs = list(zip(path[:-1], path[1:], strict=True))
    for a, b in tqdm(pairs, disable=not progress, desc="inpaint", leave=False):
        if b == a + 1:  # reverse step t_a -> t_b < t_a
            if algo.corrector is not None:
                x = replace(algo.corrector(ctx, x, ts[a], ts[b], ts[a]), ts[a])
            x, state = algo.predictor.step(ctx, a, ts[a], ts[b], x, state)
            x = replace(x, ts[b])
        else:  # forward step t_a -> t_b > t_a: x_b = a x_a + sqrt(v) z (RePaint Alg. 1, line 10)
            coef, var = ctx.sde.transition(ts[a], ts[b])
            x = batch_coeff(coef, x) * x + batch_coeff(torch.sqrt(var), x) * ctx.noise()
    return x


def _systematic_resample(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """(B, K) indices: systematic resampling of each row's normalised weights.

    One uniform u per row, points (u + k) / K, k = 0..K-1, mapped through the row's CDF
    (Kitagawa 1996; Douc, Cappé & Moulines 2005): the lowest-variance of the standard schemes.
    """
    b, k = weights.shape
    dev = generator.device if generator is not None else weights.device
    u = torch.rand(b, 1, generator=generator, device=dev, dtype=weights.dtype).to(weights.device)
    points = (u + torch.arange(k, device=weights.device, dtype=weights.dtype)) / k
    cdf = weights.cumsum(1)
    cdf[:, -1] = 1.0  # guard against round-off leaving the last point above the total
    return torch.searchsorted(cdf, points).clamp_(max=k - 1)


def _smc(
    sde: SDE,
    score_fn: ScoreFn,
    known: Tensor,
    mask: Tensor,
    ts: Tensor,
    generator: torch.Generator | None,
    progress: bool,
    particles: int,
    ess_threshold: float,
    twist_var_floor: float,
) -> InpaintResult:
    """The Twisted Diffusion Sampler for inpainting (Wu et al. 2023, Alg. 1 and Sec. 3.3).

    K particles per row start from the prior. With Tweedie's x0_hat(x_t) = (x_t + sigma_t^2 s) /
    alpha_t the twisting function is the Gaussian likelihood of the known coordinates y,
        psi_t(x_t) = N(y; x0_hat(x_t)_M, tau_t^2 I),
        tau_t^2 = sigma_t^2 / alpha_t^2 - sigma_eps^2 / alpha_eps^2  (+ ``twist_var_floor``).
    The authors' code uses sigma_t^2 / alpha_t^2, the spread of x_0 given x_t when the data are
    locally flat; their DDPM chain ends at sigma = 0, ours at eps > 0, so we subtract the noise
    still present at eps. Then tau^2 at the last twisted step matches the last kernel's variance
    and the final weights do not collapse (without it: ESS 3 of 32 at the end, 22 with it, on
    the 8-D benchmark of ``benchmarks/inpainting.py``). The reverse kernel is the DDPM posterior
    step p(x_s | x_t) = N((x_t + v s(x_t)) / a, v sigma_s^2 / sigma_t^2) of the grid interval
    (a, v from ``sde.transition``; Ho et al. 2020, Eqs. 6-7, exact for any linear SDE given
    x0_hat). The proposal is the same step with the twisted score s + grad log psi_t, and the
    incremental weight of step t -> s is
        w = p(x_s | x_t) psi_s(x_s) / (q(x_s | x_t) psi_t(x_t)).
    At the last step the unknown coordinates come from the untwisted kernel, the known ones are
    set to y, and w = p(y | x_t) / psi_t(x_t) (the kernel's density of y on the known
    coordinates). Before each step a row whose effective sample size is below
    ``ess_threshold * K`` is resampled systematically; the decision is a device-side select.
    As K grows the weighted particles converge to the model's exact conditional.
    """
    check_int("particles", particles, 1)
    check_real("ess_threshold", ess_threshold, 0.0, 1.0)
    check_real("twist_var_floor", twist_var_floor, 0.0)
    b, k, steps = known.shape[0], particles, ts.numel() - 1
    event = known.shape[1:]
    dev, dtype = known.device, known.dtype
    shape = (b * k, *event)
    y = known.repeat_interleave(k, 0)
    m = mask.repeat_interleave(k, 0)
    ctx = Context(sde, CountingScore(score_fn), NoiseSource(shape, dev, dtype, generator), steps)
    sum_event = tuple(range(1, len(shape)))

    alpha_end, sigma_end = ctx.coeffs(ts[-1])
    noise_end = (sigma_end / alpha_end) ** 2

    def twist(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log psi_t(x), grad_x log psi_t(x), score) with one score call and one VJP."""
        alpha, sigma = ctx.coeffs(t)
        tau2 = (sigma / alpha) ** 2 - noise_end + twist_var_floor
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = ctx.score(xg, t)
            x0 = (xg + sigma.to(dtype) ** 2 * s) / alpha.to(dtype)
            sq = torch.where(m, (y - x0) ** 2, 0.0).sum(sum_event)
            n_known = m.sum(sum_event)
            log_psi = -0.5 * sq / tau2.to(dtype) - 0.5 * n_known * torch.log(2 * math.pi * tau2)
            if not log_psi.requires_grad:
                raise ValueError("smc needs a score_fn that autograd can differentiate in x")
            (grad,) = torch.autograd.grad(log_psi.sum(), xg)
        return log_psi.detach().to(dtype), grad, s.detach()

    x = ctx.noise() * sde.prior_std
    log_psi, grad, s = twist(x, ts[0])
    log_w = log_psi.reshape(b, k)  # x_T ~ prior: the first weight is psi_T
    log_z = torch.zeros(b, dtype=dtype, device=dev)
    offsets = (torch.arange(b, device=dev) * k).reshape(b, 1)
    same = torch.arange(k, device=dev).expand(b, k)
    ess_hist, resampled_hist = [], []
    for i in tqdm(range(steps), disable=not progress, desc="smc", leave=False):
        t0, t1 = ts[i], ts[i + 1]
        # ESS-triggered systematic resampling, per row, without a host sync.
        weights = torch.softmax(log_w, 1)
        ess = 1.0 / (weights**2).sum(1)
        need = ess < ess_threshold * k
        idx = torch.where(need.unsqueeze(1), _systematic_resample(weights, generator), same)
        log_z = log_z + torch.where(need, torch.logsumexp(log_w, 1) - math.log(k), 0.0)
        log_w = torch.where(need.unsqueeze(1), torch.zeros_like(log_w), log_w)
        flat = (idx + offsets).reshape(-1)
        x, s, grad, log_psi = x[flat], s[flat], grad[flat], log_psi[flat]
        ess_hist.append(ess)
        resampled_hist.append(need)
        # Reverse kernel of [t1, t0] with the untwisted and the twisted score.
        a, v = sde.transition(t1, t0)
        var = v * torch.exp(2 * (sde._log_sigma(t1) - sde._log_sigma(t0)))
        a, v, c = a.to(dtype), v.to(dtype), torch.sqrt(var).to(dtype)
        mean_u = (x + v * s) / a
        shift = v / a * grad  # twisted mean - untwisted mean
        z = ctx.noise()
        if i < steps - 1:
            x_new = mean_u + shift + c * z
            log_psi_new, grad, s = twist(x_new, t1)
            # log N(x; mean_u, c^2) - log N(x; mean_u + shift, c^2) at x = mean_u + shift + c z
            log_ratio = (-(z * shift) / c - 0.5 * (shift / c) ** 2).sum(sum_event)
            log_inc = log_ratio + log_psi_new - log_psi
            log_psi = log_psi_new
        else:
            x_new = torch.where(m, y, mean_u + c * z)
            log_py = -0.5 * ((y - mean_u) / c) ** 2 - torch.log(c) - 0.5 * math.log(2 * math.pi)
            log_inc = torch.where(m, log_py, 0.0).sum(sum_event) - log_psi
        x = x_new
        log_w = log_w + log_inc.reshape(b, k)
    log_z = log_z + torch.logsumexp(log_w, 1) - math.log(k)
    weights = torch.softmax(log_w, 1)
    g_dev = generator.device if generator is not None else dev
    pick = torch.multinomial(weights.to(g_dev), 1, generator=generator).to(dev)[:, 0]
    parts = x.reshape(b, k, *event)
    samples = parts[torch.arange(b, device=dev), pick]
    if not bool(torch.isfinite(samples).all() & torch.isfinite(log_w).any(1).all()):
        raise NonFiniteError("non-finite samples or weights appeared in the smc inpainter")
    return InpaintResult(
        samples=samples,
        nfe=ctx.score.nfe,
        times=ts,
        particles=parts,
        weights=weights,
        log_weights=log_w,
        ess=torch.stack(ess_hist),
        final_ess=1.0 / (weights**2).sum(1),
        resampled=torch.stack(resampled_hist),
        log_evidence=log_z,
        stats={"particles": k, "resample_count": torch.stack(resampled_hist).sum(0)},
    )


def mask_from_spec(spec: str, event_shape: Sequence[int]) -> Tensor:
    """A bool mask (True = known) of ``event_shape`` from a CLI spec.

    "top" / "bottom" / "left" / "right": that half of an image (the last two dims) is known;
    a path to a ``.npy`` file: a 0/1 or bool array of ``event_shape``.
    """
    event_shape = tuple(event_shape)
    halves = ("top", "bottom", "left", "right")
    if spec in halves:
        if len(event_shape) < 2:
            raise ValueError(f"mask {spec!r} needs image data (..., H, W), got {event_shape}")
        h, w = event_shape[-2:]
        rows = torch.arange(h).reshape(h, 1).expand(h, w)
        cols = torch.arange(w).reshape(1, w).expand(h, w)
        half = {
            "top": rows < h // 2,
            "bottom": rows >= h // 2,
            "left": cols < w // 2,
            "right": cols >= w // 2,
        }[spec]
        return half.expand(event_shape).clone()
    path = Path(spec)
    if path.suffix != ".npy" or not path.exists():
        raise ValueError(
            f"inpaint mask must be one of {halves} or an existing .npy file, got {spec!r}"
        )
    import numpy as np

    arr = torch.from_numpy(np.load(path, allow_pickle=False))
    if tuple(arr.shape) != event_shape:
        raise ValueError(f"mask file {spec} has shape {tuple(arr.shape)}, expected {event_shape}")
    return arr != 0
