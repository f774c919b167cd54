"""What ``compare`` runs a grid on: a ``Problem`` (an SDE, its score, reference sets).

An exact-score Gaussian mixture (``mixture_problem``, the presets in ``PROBLEMS``; reference sets
are exact samples of p_eps) or a trained checkpoint with a data set (``checkpoint_problem``;
reference sets are data).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..oracle import GaussianMixture, exact_score
from ..sde import SDE
from ..sde_names import SDE_CLASSES

F64 = torch.float64


def ring() -> GaussianMixture:
    """8 equal-weight Gaussians on a circle of radius 2, std 0.2 (the classic 2-D toy)."""
    angle = 2 * math.pi * torch.arange(8, dtype=F64) / 8
    return GaussianMixture(2.0 * torch.stack([angle.cos(), angle.sin()], 1), 0.2)


def grid() -> GaussianMixture:
    """25 equal-weight Gaussians on the 5 x 5 grid {-2, -1, 0, 1, 2}^2 (spacing 1), std 0.15."""
    u = torch.arange(-2, 3, dtype=F64)
    means = torch.cartesian_prod(u, u)
    return GaussianMixture(means, 0.15)


def gmm64(seed: int = 0) -> GaussianMixture:
    """A seeded random 64-D mixture: 8 components, means N(0, I) (pairwise distance ~ 11),
    per-coordinate stds U(0.1, 0.5), weights U(0.2, 1) normalised (as ``benchmarks/problems``)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(8, 64, generator=g, dtype=F64)
    stds = 0.1 + 0.4 * torch.rand(8, 64, generator=g, dtype=F64)
    weights = 0.2 + 0.8 * torch.rand(8, generator=g, dtype=F64)
    return GaussianMixture(means, stds, weights=weights)


def narrow() -> GaussianMixture:
    """A hard 2-D mixture: 7 anisotropic modes with per-coordinate stds from 0.02 to 0.5 and
    weights from 0.02 to 0.30 (issue 13). Residual noise sigma(eps) ~ 0.01 at the end of sampling
    visibly widens its narrowest modes, and per-sample Langevin steps blow up on them."""
    means = [
        [-2.0, -2.0],
        [0.0, 1.5],
        [2.0, -1.5],
        [1.5, 1.5],
        [-2.0, 1.0],
        [0.5, -0.5],
        [-0.8, 0.2],
    ]
    stds = [
        [0.5, 0.1],
        [0.02, 0.3],
        [0.2, 0.05],
        [0.05, 0.05],
        [0.3, 0.02],
        [0.1, 0.4],
        [0.02, 0.02],
    ]
    weights = [0.30, 0.22, 0.16, 0.12, 0.10, 0.08, 0.02]
    return GaussianMixture(torch.tensor(means, dtype=F64), torch.tensor(stds, dtype=F64), weights)


def aniso256(seed: int = 0) -> GaussianMixture:
    """A hard seeded 256-D mixture: 8 components, means N(0, I), per-coordinate stds log-uniform
    in [0.02, 0.5] (a 25x spread within each mode), weights 0.30 down to 0.02."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(8, 256, generator=g, dtype=F64)
    stds = 0.02 * 25.0 ** torch.rand(8, 256, generator=g, dtype=F64)
    weights = torch.tensor([0.30, 0.20, 0.15, 0.12, 0.09, 0.07, 0.05, 0.02], dtype=F64)
    return GaussianMixture(means, stds, weights=weights)


#: Exact-score presets: name -> function returning the data distribution (a GaussianMixture).
#: ``narrow`` and ``aniso256`` are the hard cases (fine structure, unequal weights).
PROBLEMS: dict[str, Callable[[], GaussianMixture]] = {
    "ring": ring,
    "grid": grid,
    "gmm64": gmm64,
    "narrow": narrow,
    "aniso256": aniso256,
}
#: SDE names accepted by ``compare(sde=...)``, built with default settings: ``SDE_CLASSES``.
SDES = SDE_CLASSES
#: Independent exact pairs behind each noise floor (design.md: the spread over several draws).
FLOOR_PAIRS = 5


#: Kinds of reference set a ``Problem`` draws (``Problem.target``) and what they are.
TARGETS: dict[str, str] = {
    "exact": "exact samples of p_eps (exact score: the metrics measure the solver alone)",
    "data": "data samples (learned score: the metrics include the model's own error)",
}


@dataclass
class Problem:
    """What ``compare`` runs a grid on: an SDE, its score, the event shape and reference sets.

    Attributes
    ----------
    name
        Shown in tables and plot titles.
    sde
        The forward SDE that ``score_fn`` belongs to.
    score_fn
        ``score_fn(x, t)`` for x of shape ``(batch, *event_shape)`` on ``device``.
    event_shape
        The shape of one sample: ``(d,)`` for vectors, ``(C, H, W)`` for images.
    draw
        ``draw(n, k)``: the k-th independent reference set of n samples, float64 on the CPU, of
        shape ``(n, *event_shape)``. ``compare`` scores against k = 0 and takes the noise floor
        from k = 1 .. 2 * FLOOR_PAIRS.
    target
        A key of ``TARGETS``: ``"exact"`` (samples of p_eps, for mixtures) or ``"data"`` (the data
        distribution, for checkpoints).
    eps
        The final time at which the reference sets are exact (mixtures); None where they do not
        depend on it. ``compare`` takes it as its ``eps``.
    reference_score_fn
        The score for the float64 reference solve behind ``ref_rms`` (default: ``score_fn``, which
        must then accept float64 x).
    device
        Where ``score_fn`` runs; x_T and the runs live there.
    mixture
        For exact-score problems, p_eps itself as a ``GaussianMixture`` (the target of the
        reference sets): the ``mode_tv`` and ``width`` metrics are computed against it.
    info
        Extra entries for the table's meta (a checkpoint's path, the data set).
    """

    name: str
    sde: SDE
    score_fn: Callable[[Tensor, Tensor], Tensor]
    event_shape: tuple[int, ...]
    draw: Callable[[int, int], Tensor]
    target: str
    eps: float | None = None
    reference_score_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mixture: GaussianMixture | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; valid targets are {tuple(TARGETS)}")
        self.event_shape = tuple(int(s) for s in self.event_shape)
        self.device = torch.device(self.device)


def mixture_problem(
    data: GaussianMixture,
    sde: str | SDE = "vp",
    *,
    eps: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    name: str = "custom",
) -> Problem:
    """A Gaussian mixture under ``sde`` with its exact score (``exact_score``).

    Reference set k is n exact samples of p_eps, x_eps = alpha_eps x_0 + sigma_eps z, drawn with
    seed ``seed + 1000 + k``; ``eps`` defaults to ``sde.sampling_eps``. ``Problem.mixture`` is
    p_eps, the mixture with means alpha_eps m_k and stds sqrt(alpha_eps^2 s_k^2 + sigma_eps^2).
    """
    _, sde_obj = resolve_sde(sde)
    eps = sde_obj.sampling_eps if eps is None else float(eps)
    device = torch.device(device) if device is not None else torch.device("cpu")
    alpha, sigma = sde_obj.marginal(torch.tensor(eps, dtype=F64))

    def draw(n: int, k: int) -> Tensor:
        g = torch.Generator().manual_seed(seed + 1000 + k)
        x0 = data.sample(n, generator=g)
        return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)

    return Problem(
        name,
        sde_obj,
        exact_score(sde_obj, data.to(device=device)),
        (data.dim,),
        draw,
        "exact",
        eps=eps,
        device=device,
        mixture=GaussianMixture(
            alpha * data.means, torch.sqrt((alpha * data.stds) ** 2 + sigma**2), data.weights
        ),
    )


def _no_grad(model: torch.nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x, t)

    return score_fn


def checkpoint_problem(
    path: str | Path,
    data: str | Path | Tensor,
    *,
    ema: bool = True,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> Problem:
    """A trained checkpoint (``checkpoint.load_model``: safetensors + JSON, nothing unpickled) with
    a reference data set; the target is the data distribution.

    ``score_fn`` is the model (EMA weights unless ``ema=False``) under ``torch.no_grad()``; the
    SDE is the checkpoint's. ``data`` is a set name of ``scoresde.data.TOY_DATASETS`` or
    ``TABULAR_DATASETS`` (set k is a fresh draw seeded ``seed + 1000 + k``), ``"digits"``, a
    ``.npy`` / ``.npz`` path, an image folder or an ``(N, *event)`` tensor (set k is the k-th
    block of n items of one seeded permutation: the sets are disjoint, so ``compare`` needs
    ``(1 + 2 * FLOOR_PAIRS) * n`` items).
    The reference solve uses a float64 copy of the model (see ``compare``).
    """
    from ..training import event_shape, load_model

    model, meta = load_model(path, ema=ema, device=device)
    model.eval()
    event = event_shape(meta)
    data_name, draw = _data_sets(data, event, seed)
    return Problem(
        f"{'/'.join(Path(path).parts[-2:])} ({data_name})",  # the full path is in info
        model.sde,
        _no_grad(model),
        event,
        draw,
        "data",
        reference_score_fn=_no_grad(copy.deepcopy(model).to(F64)),
        device=torch.device(device) if device is not None else torch.device("cpu"),
        info={"checkpoint": str(path), "data": data_name, "ema": ema, "step": meta.get("step")},
    )


def _data_sets(
    data: str | Path | Tensor, event: tuple[int, ...], seed: int
) -> tuple[str, Callable[[int, int], Tensor]]:
    """(name, draw) of a reference data set; its items must have shape ``event``."""
    from .. import data as D

    generated = {**D.TOY_DATASETS, **D.TABULAR_DATASETS}
    if not isinstance(data, Tensor) and str(data) in generated:
        name, gen = str(data), generated[str(data)]

        def draw(n: int, k: int) -> Tensor:
            return gen(n, generator=torch.Generator().manual_seed(seed + 1000 + k)).to(F64)

        shape = tuple(draw(1, 0).shape[1:])
    else:
        if isinstance(data, Tensor):
            name, x = "tensor", data
        elif str(data) == "digits":
            name, x = "digits", D.digits()
        elif Path(data).suffix in (".npy", ".npz"):
            name, x = str(data), D.load_array(data)
        elif Path(data).is_dir():
            name, x = str(data), D.load_image_folder(data, channels=event[0])
        else:
            valid = [*generated, "digits", "<file.npy|file.npz>", "<image folder>"]
            raise ValueError(
                f"unknown data {data!r}; valid: {', '.join(valid)} or an (N, *event) tensor"
            )
        if x.dim() < 2:
            raise ValueError(f"data must have shape (N, *event), got {tuple(x.shape)}")
        x = x.detach().to("cpu", F64)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1000))

        def draw(n: int, k: int) -> Tensor:
            sets = max(k + 1, 1 + 2 * FLOOR_PAIRS)
            if sets * n > len(x):
                raise ValueError(
                    f"data {name!r} has {len(x)} items, too few for {sets} disjoint reference "
                    f"sets of n = {n} (compare draws 1 + 2 * FLOOR_PAIRS: a target and the noise "
                    f"floor's pairs): it needs {sets * n} items; use n <= {len(x) // sets}"
                )
            return x[perm[k * n : (k + 1) * n]]

        shape = tuple(x.shape[1:])
    if shape != tuple(event):
        raise ValueError(
            f"data {name!r} has items of shape {shape}, but the checkpoint's model takes "
            f"{tuple(event)}"
        )
    return name, draw


def resolve_problem(
    problem: str | GaussianMixture | Problem, sde: str | SDE | None, eps, seed, device
) -> Problem:
    """The ``Problem`` that ``compare(problem, sde, eps=..., seed=..., device=...)`` runs on: a
    preset name or a mixture under ``sde`` (default ``"vp"``), or a ``Problem`` checked against
    the other arguments (it carries its own SDE, eps and device)."""
    if isinstance(problem, Problem):
        if sde is not None and not _same_sde(resolve_sde(sde)[1], problem.sde):
            raise ValueError(
                f"sde={sde!r} differs from the problem's own {type(problem.sde).__name__}; a "
                "Problem carries its SDE, so leave sde=None"
            )
        if eps is not None and problem.eps is not None and float(eps) != problem.eps:
            raise ValueError(
                f"eps={eps} differs from the problem's eps={problem.eps}, at which its reference "
                "sets are exact; leave eps=None"
            )
        if device is not None and torch.device(device) != problem.device:
            raise ValueError(
                f"device={device!r} differs from the problem's device {problem.device}"
            )
        return problem
    sde = "vp" if sde is None else sde
    if isinstance(problem, GaussianMixture):
        return mixture_problem(problem, sde, eps=eps, seed=seed, device=device)
    if problem not in PROBLEMS:
        raise ValueError(
            f"unknown problem {problem!r}; valid problems are {tuple(PROBLEMS)}, a "
            "GaussianMixture or a Problem"
        )
    return mixture_problem(
        PROBLEMS[problem](), sde, eps=eps, seed=seed, device=device, name=problem
    )


def resolve_sde(sde: str | SDE) -> tuple[str, SDE]:
    """(name, SDE) of a name in ``SDES`` or an ``SDE`` object (named by its class)."""
    if isinstance(sde, SDE):
        return type(sde).__name__, sde
    if sde not in SDES:
        raise ValueError(f"unknown sde {sde!r}; valid SDEs are {tuple(SDES)}")
    return sde, SDES[sde]()


def _same_sde(a: SDE, b: SDE) -> bool:
    try:
        return a is b or (type(a) is type(b) and a.config() == b.config())
    except NotImplementedError:
        return False
