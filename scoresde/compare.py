"""Compare samplers numerically: a solver x steps grid on a ``Problem``.

``compare`` runs every (solver, step count) pair from one shared x_T and one noise seed (common
random numbers), measures NFE (counted by ``sample``) and wall time, scores the samples against a
reference set with the metrics of ``scoresde.metrics``, reports the two-sample noise floor of each
metric, and for deterministic solvers the RMS distance to a tight-tolerance solution of the same
probability-flow ODE from the same x_T. A ``Problem`` is an exact-score Gaussian mixture
(``mixture_problem``, the presets in ``PROBLEMS``; reference sets are exact samples of p_eps) or a
trained checkpoint with a data set (``checkpoint_problem``; reference sets are data).
``add_compare_parser`` / ``add_demo_parser`` register the ``scoresde compare`` and ``scoresde
demo`` commands.
"""

from __future__ import annotations

import argparse
import copy
import csv
import inspect
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import metrics as M
from .cliutil import (
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    THREADS_HINT,
    TimeBar,
    check_device,
    int_at_least,
    list_of,
    load_checkpoint_model,
    say,
)
from .oracle import GaussianMixture, exact_score
from .sampling import SOLVERS, make_solver, sample
from .sde import SDE, VESDE, VPSDE, SubVPSDE

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# problems


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
#: SDE names accepted by ``compare(sde=...)``: Song et al.'s defaults (beta in [0.1, 20],
#: sigma in [0.01, 50]).
SDES: dict[str, Callable[[], SDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
#: Metric names accepted by ``compare(metrics=...)``; each is computed against the reference set,
#: except ``mode_tv`` and ``width`` (``metrics.mode_weight_tv`` / ``metrics.width_error``), which
#: need the problem's mixture (``Problem.mixture``) and are computed against it.
METRICS: tuple[str, ...] = ("mmd2", "frechet", "sliced_w2", "energy", "mode_tv", "width")
#: Metrics that need ``Problem.mixture``; ``compare`` adds them by default where it has one.
MIXTURE_METRICS: tuple[str, ...] = ("mode_tv", "width")
#: Tolerances (rtol = atol) at which adaptive solvers (ode_rk45, scipy, torchsde adaptive=True)
#: are run when their options give none: they take tolerances, not step counts.
DEFAULT_RTOLS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
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
    _, sde_obj = _sde(sde)
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
    """A trained checkpoint (``training.load_model``: safetensors + JSON, nothing unpickled) with
    a reference data set; the target is the data distribution.

    ``score_fn`` is the model (EMA weights unless ``ema=False``) under ``torch.no_grad()``; the
    SDE is the checkpoint's. ``data`` is a toy set name of ``scoresde.data.TOY_DATASETS`` (set k
    is a fresh draw seeded ``seed + 1000 + k``), ``"digits"``, a ``.npy`` / ``.npz`` path, an
    image folder or an ``(N, *event)`` tensor (set k is the k-th block of n items of one seeded
    permutation: the sets are disjoint, so ``compare`` needs ``(1 + 2 * FLOOR_PAIRS) * n`` items).
    The reference solve uses a float64 copy of the model (see ``compare``).
    """
    from .training import event_shape, load_model

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
    from . import data as D

    if not isinstance(data, Tensor) and str(data) in D.TOY_DATASETS:
        name, gen = str(data), D.TOY_DATASETS[str(data)]

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
            valid = [*D.TOY_DATASETS, "digits", "<file.npy|file.npz>", "<image folder>"]
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


def _problem(
    problem: str | GaussianMixture | Problem, sde: str | SDE | None, eps, seed, device
) -> Problem:
    if isinstance(problem, Problem):
        if sde is not None and not _same_sde(_sde(sde)[1], problem.sde):
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


def _sde(sde: str | SDE) -> tuple[str, SDE]:
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


# ----------------------------------------------------------------------------------------------
# solver specifications


def _parse_value(v: str) -> Any:
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'none' -> None, anything else a string."""
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v.strip()


def parse_options(items: Iterable[str], context: str = "") -> dict[str, Any]:
    """``["key=val", ...]`` -> ``{key: value}``, values parsed as numbers, booleans or None."""
    options = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"option {item!r}{context} is not key=value")
        options[key.strip()] = _parse_value(val)
    return options


def parse_solver(spec: str | tuple[str, dict] | Sequence) -> tuple[str, dict[str, Any]]:
    """``"name"``, ``("name", {options})`` or ``"name:key=val,key=val"`` -> (name, options).

    Examples
    --------
    >>> parse_solver("dpm_solver:order=2,prediction=data")
    ('dpm_solver', {'order': 2, 'prediction': 'data'})
    >>> parse_solver(("ddim", {"eta": 1.0}))
    ('ddim', {'eta': 1.0})
    """
    if isinstance(spec, str):
        name, _, rest = spec.partition(":")
        items = filter(None, (s.strip() for s in rest.split(",")))
        options = parse_options(items, f" in solver spec {spec!r}")
        name = name.strip()
    else:
        name, options = spec
        options = dict(options)
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers are {SOLVERS}")
    return name, options


def split_solvers(text: str) -> list[str]:
    """Split the command line's ``a,b:k=v,k2=v2,c`` into specs: a comma-separated item holding
    '=' but no ':' is another option of the preceding solver."""
    out: list[str] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" in item and ":" not in item and out:
            out[-1] += ("," if ":" in out[-1] else ":") + item
        else:
            out.append(item)
    return out


def solver_label(name: str, options: dict[str, Any]) -> str:
    """'dpm_solver(order=3)': the name plus options, tolerances left to their own column."""
    shown = {k: v for k, v in options.items() if k not in ("rtol", "atol")}
    if not shown:
        return name
    return name + "(" + ",".join(f"{k}={v}" for k, v in shown.items()) + ")"


def _is_adaptive(name: str, options: dict[str, Any]) -> bool:
    if name in ("ode_rk45", "scipy"):
        return True
    return name == "torchsde" and bool(options.get("adaptive", False))


#: Options of a solver spec that go to ``sample`` itself (time_grid, rho, denoise, ...).
_SAMPLE_KEYWORDS = frozenset(
    p.name for p in inspect.signature(sample).parameters.values() if p.kind is p.KEYWORD_ONLY
)


def _is_deterministic(name: str, options: dict[str, Any]) -> bool | None:
    """Whether the solver integrates the PF-ODE (None when its options are invalid)."""
    try:
        solver_options = {k: v for k, v in options.items() if k not in _SAMPLE_KEYWORDS}
        return not make_solver(name, **solver_options).stochastic
    except (ValueError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------
# the table


class ComparisonTable:
    """The result of ``compare``: ``rows`` (one dict per run), the noise floor and the set-up.

    Each row: solver (label), name, options, steps (None for adaptive runs), rtol (adaptive runs),
    nfe (counted), seconds (wall), deterministic, one value per metric, ref_rms and ref_median
    (deterministic solvers: the RMS over samples, and the median, of each sample's RMS distance
    per coordinate to the reference PF-ODE solution; a few samples that end in another mode
    dominate the RMS, the median shows the typical accuracy), error (why it did not run).
    ``noise_floor[metric] = (mean, std)`` of the metric between independent reference sets.
    ``samples[(label, steps or rtol)]`` holds the samples, ``target`` the reference set and
    ``problem`` the ``Problem`` (none of them saved to CSV/JSON).
    """

    def __init__(
        self,
        rows: list[dict[str, Any]],
        noise_floor: dict[str, tuple[float, float]],
        metrics: Sequence[str],
        meta: dict[str, Any],
        samples: dict[tuple, Tensor] | None = None,
        target: Tensor | None = None,
        problem: Problem | None = None,
    ):
        self.rows = rows
        self.noise_floor = noise_floor
        self.metrics = tuple(metrics)
        self.meta = meta
        self.samples = samples or {}
        self.target = target
        self.problem = problem

    @property
    def solvers(self) -> list[str]:
        """Solver labels in first-seen order."""
        return list(dict.fromkeys(r["solver"] for r in self.rows))

    #: A row is at the noise floor (``*`` in the table, the grey band in the plots) when its
    #: metric is at most the floor's mean + floor_stds standard deviations.
    floor_stds = 3.0

    def at_floor(self, row: dict[str, Any], metric: str, k: float | None = None) -> bool:
        """Whether the row's metric is at most k (default ``floor_stds``) noise-floor stds above
        the floor's mean."""
        v = row.get(metric)
        mean, std = self.noise_floor[metric]
        k = self.floor_stds if k is None else k
        return v is not None and math.isfinite(v) and v <= mean + k * std

    @property
    def has_errors(self) -> bool:
        """Whether some run failed (only then do the table and CSV get an ``error`` column)."""
        return any(r.get("error") for r in self.rows)

    def columns(self) -> list[str]:
        return [
            "solver",
            "steps",
            "rtol",
            "nfe",
            "seconds",
            *self.metrics,
            "ref_rms",
            "ref_median",
            *(["error"] if self.has_errors else []),
        ]

    def to_markdown(self) -> str:
        head = [
            "solver",
            "steps",
            "rtol",
            "NFE",
            "time [s]",
            *self.metrics,
            "ref RMS",
            "ref median",
            *(["error"] if self.has_errors else []),
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows:
            cells = [
                r["solver"],
                _fmt(r["steps"]),
                _fmt(r["rtol"]),
                _fmt(r["nfe"]),
                _fmt(r["seconds"], 2),
                *(_fmt(r[m]) + ("*" if self.at_floor(r, m) else "") for m in self.metrics),
                _fmt(r["ref_rms"]),
                _fmt(r["ref_median"]),
                *([(r["error"] or "").replace("|", "/")[:80]] if self.has_errors else []),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        floor = ", ".join(
            f"{m} {_fmt(mu)} ± {_fmt(sd)}" for m, (mu, sd) in self.noise_floor.items()
        )
        me = self.meta
        if "checkpoint" in me:
            what = f"checkpoint {me['checkpoint']}, data {me['data']}"
        else:
            what = f"problem {me['problem']}"
        lines += [
            "",
            f"{what}, sde {me['sde']}, n = {me['n']}, seed {me['seed']}, "
            f"eps = {_fmt(me['eps'])}; metrics against {TARGETS[me.get('target', 'exact')]}; "
            f"reference: ode_rk45 rtol = atol = {_fmt(me['reference_tol'])} in float64 "
            f"({me['reference_nfe']} NFE).",
            f"Noise floor (mean ± std over {me['floor_pairs']} pairs of reference sets): {floor}. "
            f"* = at most {self.floor_stds:g} std above the floor's mean.",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _flat_rows(self) -> list[dict[str, Any]]:
        return [
            {**{c: r[c] for c in self.columns()}, "options": json.dumps(r["options"])}
            for r in self.rows
        ]

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*self.columns(), "options"])
            w.writeheader()
            for r in self._flat_rows():
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return path

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: v for k, v in r.items()} for r in self.rows]
        floor = {m: {"mean": mu, "std": sd} for m, (mu, sd) in self.noise_floor.items()}
        return {"meta": self.meta, "noise_floor": floor, "rows": _json_safe(rows)}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool | int):
        return str(v)
    if not math.isfinite(v):
        return "nan"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.{digits - 1}e}"


# ----------------------------------------------------------------------------------------------
# compare


def _metric_fns(
    names: Sequence[str], target: Tensor, seed: int, mixture: GaussianMixture | None = None
) -> dict[str, Callable[[Tensor, Tensor], float]]:
    """metric(x, y) functions; MMD's kernel scale and the sliced projections are fixed once, so
    every solver (and the noise floor) is scored by the same statistic. The mixture metrics
    ignore y: they compare x with ``mixture``."""
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; valid metrics are {METRICS}")
    if mixture is None and any(m in MIXTURE_METRICS for m in names):
        raise ValueError(
            f"metrics {MIXTURE_METRICS} need a problem with a known mixture (an exact-score "
            "preset or GaussianMixture), not a checkpoint"
        )
    bandwidth = 2 * M.median_distance(target)
    fns: dict[str, Callable[[Tensor, Tensor], float]] = {}
    for m in names:
        if m == "mmd2":
            fns[m] = lambda x, y: M.mmd2(x, y, bandwidth=bandwidth)
        elif m == "frechet":
            fns[m] = M.frechet_distance
        elif m == "sliced_w2":
            fns[m] = lambda x, y: M.sliced_wasserstein(
                x, y, generator=torch.Generator().manual_seed(seed + 3)
            )
        elif m == "energy":
            fns[m] = M.energy_distance
        elif m == "mode_tv":
            fns[m] = lambda x, y: M.mode_weight_tv(x, mixture)
        else:
            fns[m] = lambda x, y: M.width_error(x, mixture)
    return fns


def compare(
    problem: str | GaussianMixture | Problem = "ring",
    sde: str | SDE | None = None,
    solvers: Sequence = ("ode_heun", "dpm_solver", "pc"),
    steps: Sequence[int] = (5, 10, 20, 50),
    n: int = 4000,
    seed: int = 0,
    reference_tol: float = 1e-7,
    metrics: Sequence[str] | None = None,
    rtols: Sequence[float] = DEFAULT_RTOLS,
    eps: float | None = None,
    n_ref: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    keep_samples: bool = True,
    progress: bool = False,
) -> ComparisonTable:
    """Run every solver at every step count on one problem and tabulate the errors.

    ``compare("ring", "vp", ["ode_heun", "dpm_solver:order=3"], [5, 10, 20])`` runs the grid on
    an exact-score preset, against exact samples of p_eps. For a trained model, build the problem
    from its checkpoint and a data set, ``p = checkpoint_problem("results/cb/checkpoint",
    "checkerboard")``, and run ``compare(p, solvers=..., steps=..., n=2000)``: the metrics are then
    taken against data (they include the model's own error, so a solver can plateau above the
    floor), ``ref_rms`` still measures the solver alone against the model's own PF-ODE, and the
    noise floor is the spread between independent data sets. The command line is ``scoresde
    compare --checkpoint results/cb/checkpoint --data checkerboard``.

    Parameters
    ----------
    problem
        A name in ``PROBLEMS``, a ``GaussianMixture`` or a ``Problem`` (``mixture_problem``,
        ``checkpoint_problem`` or your own).
    sde
        A name in ``SDES`` or an ``SDE`` for a mixture (default ``"vp"``). A ``Problem`` carries
        its SDE: leave ``sde`` None (a different one is an error).
    solvers
        Each a name, ``(name, {options})`` or ``"name:key=val,key=val"``.
    steps
        Step counts for fixed-step solvers. Adaptive solvers (``ode_rk45``, ``scipy``,
        ``torchsde`` with ``adaptive=True``) take tolerances instead: they run once at their own
        ``rtol`` if the options give one, else once per value of ``rtols`` (rtol = atol).
    n
        Samples per run.
    seed
        x_T, the noise and the projections derive from it, and for names and mixtures the
        reference sets (a ``Problem``'s own ``draw`` fixes those of other problems).
    reference_tol
        rtol = atol of the float64 ``ode_rk45`` reference for ``ref_rms``.
    metrics
        Names in ``METRICS``, each computed on the flattened samples against the problem's
        reference set ``draw(n, 0)`` (``mode_tv`` and ``width``: against ``Problem.mixture``).
        Default: mmd2 and frechet, plus mode_tv and width where the problem has a mixture.
    eps
        Final time (default the problem's ``eps``, else ``sde.sampling_eps``); a mixture's exact
        target is p_eps, not p_0.
    n_ref
        How many of the n samples get a reference solution (default all); it bounds the cost of
        the reference for a network.
    device, dtype
        Where and in which dtype the runs are made (a ``Problem`` fixes its device; a checkpoint's
        model takes its own dtype, float32).
    keep_samples
        Keep each run's samples in the table (for the sample figure).
    progress
        Status lines on stderr, and where stderr is a terminal, progress bars for the reference
        solve and the grid.

    Notes
    -----
    Common random numbers: every run starts from the same x_T of shape ``(n, *event_shape)``
    (float64 draw cast to ``dtype``) and gets a fresh generator seeded identically, so
    deterministic rows are reproducible and stochastic rows differ only by the solver. A run that
    fails (an impossible step count, an invalid option, non-finite values) is a row with its
    ``error``; the grid goes on.

    The reference solve runs in float64. For a network that means a float64 copy of the model
    (``Problem.reference_score_fn``): it is the same function up to float32 round-off (~1e-7
    relative), whereas the float32 model's round-off noise would swamp an adaptive step control at
    a 1e-7 tolerance, so the copy gives the tight solution of the model's own PF-ODE.
    """
    prob = _problem(problem, sde, eps, seed, device)
    sde_name = sde if isinstance(sde, str) else type(prob.sde).__name__
    specs = [parse_solver(s) for s in solvers]
    steps = list(steps)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    eps = prob.eps if eps is None else float(eps)
    eps = prob.sde.sampling_eps if eps is None else eps
    device, shape = prob.device, (n, *prob.event_shape)

    def reference_set(k: int) -> Tensor:  # flattened, on device, in dtype
        x = prob.draw(n, k)
        if tuple(x.shape) != shape:
            raise ValueError(f"{prob.name}: draw({n}, {k}) has shape {tuple(x.shape)}, not {shape}")
        return x.to(device).to(dtype).reshape(n, -1)

    target = reference_set(0)
    if metrics is None:
        metrics = ("mmd2", "frechet") + (MIXTURE_METRICS if prob.mixture is not None else ())
    fns = _metric_fns(metrics, target, seed, prob.mixture)
    floor_sets = [reference_set(k) for k in range(1, 2 * FLOOR_PAIRS + 1)]
    floor = {m: M.noise_floor(iter(floor_sets).__next__, fn, FLOOR_PAIRS) for m, fn in fns.items()}

    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    x_T64 = (z * prob.sde.prior_std).to(device)
    x_T = x_T64.to(dtype)
    n_ref = n if n_ref is None else min(int(n_ref), n)
    if progress:
        say(
            f"compare: reference solve of {n_ref} samples (float64 ode_rk45, rtol = atol = "
            f"{reference_tol:g}): the slow part; {THREADS_HINT}"
        )
    score_ref = prob.reference_score_fn or prob.score_fn
    bar = TimeBar(score_ref, prob.sde.T, eps, "reference") if progress else None
    t_ref = time.perf_counter()
    try:
        ref_res = sample(
            prob.sde,
            bar or score_ref,
            (n_ref, *prob.event_shape),
            solver="ode_rk45",
            rtol=reference_tol,
            atol=reference_tol,
            eps=eps,
            x_T=x_T64[:n_ref],
        )
    finally:
        if bar is not None:
            bar.close()
    ref_seconds = time.perf_counter() - t_ref
    ref, ref_nfe = ref_res.samples, ref_res.nfe

    runs = []
    for name, options in specs:
        if _is_adaptive(name, options):
            opts = (
                [options]
                if "rtol" in options
                else [{**options, "rtol": r, "atol": r} for r in rtols]
            )
            runs += [(name, None, o) for o in opts]
        else:
            runs += [(name, s, options) for s in steps]
    if progress:
        say(f"compare: reference done in {ref_seconds:.1f} s ({ref_nfe} NFE); {len(runs)} runs")
    rows, kept = [], {}
    for name, s, opts in tqdm(runs, desc="runs", disable=None if progress else True, leave=False):
        label = solver_label(name, opts)
        row, x = _run_one(prob.sde, prob.score_fn, name, opts, s, eps, x_T, seed, fns, target, ref)
        rows.append({"solver": label, "name": name, "options": opts, **row})
        if keep_samples and x is not None:
            kept[(label, s if s is not None else opts["rtol"])] = x
    meta = {
        "problem": prob.name,
        "target": prob.target,
        **prob.info,
        "sde": sde_name,
        "n": n,
        "dim": math.prod(prob.event_shape),
        "event_shape": list(prob.event_shape),
        "seed": seed,
        "eps": eps,
        "dtype": str(dtype).replace("torch.", ""),
        "reference_tol": reference_tol,
        "reference_nfe": ref_nfe,
        "reference_seconds": ref_seconds,
        "n_ref": n_ref,
        "floor_pairs": FLOOR_PAIRS,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    target = target.reshape(shape).detach().cpu()
    return ComparisonTable(rows, floor, fns, meta, kept, target, prob)


def _run_one(sde, score_fn, name, options, steps, eps, x_T, seed, fns, target, ref):
    """(row, samples or None) of one run; failures become the row's ``error``."""
    row: dict[str, Any] = {
        "steps": steps,
        "rtol": options.get("rtol") if _is_adaptive(name, options) else None,
        "nfe": None,
        "seconds": None,
        "deterministic": _is_deterministic(name, options),
        **{m: None for m in fns},
        "ref_rms": None,
        "ref_median": None,
        "error": None,
    }
    t0 = time.perf_counter()
    try:
        res = sample(
            sde,
            score_fn,
            tuple(x_T.shape),
            solver=name,
            steps=steps,
            eps=eps,
            x_T=x_T,
            generator=torch.Generator(device=x_T.device).manual_seed(seed + 2),
            **options,
        )
    except (ValueError, TypeError, RuntimeError, FloatingPointError) as err:
        row["error"] = f"{type(err).__name__}: {err}"
        return row, None
    row["seconds"] = time.perf_counter() - t0
    row["nfe"] = res.nfe
    x = res.samples
    for m, fn in fns.items():
        row[m] = float(fn(x.reshape(len(x), -1), target))
    if row["deterministic"]:
        per_sample = (x[: ref.shape[0]].to(F64) - ref.to(F64)).reshape(len(ref), -1).pow(2).mean(1)
        row["ref_rms"] = float(per_sample.mean().sqrt())
        row["ref_median"] = float(per_sample.sqrt().median())
    return row, x.detach().cpu()


# ----------------------------------------------------------------------------------------------
# outputs and the command line


def write_outputs(table: ComparisonTable, out: str | Path, trajectory: bool = True) -> list[Path]:
    """table.md, table.csv, table.json and the PNG plots of ``table`` into ``out``.

    Plots: error_vs_nfe_<metric>.png per metric, error_vs_nfe_ref_rms.png (deterministic
    solvers), time_vs_error.png, samples.png (each solver's largest step count / tightest
    tolerance, the reference set first: scatters of the first two coordinates for vectors, image
    grids for (C, H, W) images with 1 or 3 channels) and, for 2-D problems, trajectories.png
    (ode_heun's PF-ODE paths of 8 samples from the table's x_T seed).
    """
    from . import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table.to_markdown() + "\n")
    files = [
        out / "table.md",
        table.save_csv(out / "table.csv"),
        table.save_json(out / "table.json"),
    ]
    ok = [r for r in table.rows if not r["error"]]
    for m in table.metrics:
        if any(r[m] is not None and math.isfinite(r[m]) for r in ok):
            files.append(plots.plot_error_vs_nfe(table, out / f"error_vs_nfe_{m}.png", m))
        else:
            say(f"compare: no error_vs_nfe_{m}.png: no run has a finite {m}")
    if any(r["ref_rms"] for r in ok):
        files.append(plots.plot_error_vs_nfe(table, out / "error_vs_nfe_ref_rms.png", "ref_rms"))
    if ok and table.metrics:
        files.append(plots.plot_time_vs_error(table, out / "time_vs_error.png", table.metrics[0]))
    best: dict[str, tuple] = {}
    for label, key in table.samples:  # largest steps (or smallest rtol) per solver
        adaptive = isinstance(key, float)
        rank = -key if adaptive else key
        if label not in best or rank > best[label][0]:
            best[label] = (rank, key)
    event = tuple(table.meta.get("event_shape", (table.meta["dim"],)))
    if best and (len(event) == 1 or (len(event) == 3 and event[0] in (1, 3))):
        styles = plots.solver_styles(table.solvers)
        panels, colors = {}, {}
        for label, (_, k) in best.items():
            name = f"{label} ({'rtol ' if isinstance(k, float) else 'steps '}{k:g})"
            panels[name], colors[name] = table.samples[(label, k)], styles[label]["color"]
        files.append(
            plots.plot_samples_grid(
                panels,
                out / "samples.png",
                reference=table.target,
                reference_label=table.meta.get("target", "exact"),
                colors=colors,
            )
        )
    prob = table.problem
    if trajectory and prob is not None and prob.event_shape == (2,):
        g = torch.Generator().manual_seed(table.meta["seed"] + 1)
        x_T = torch.randn(8, 2, generator=g, dtype=F64) * prob.sde.prior_std
        res = sample(
            prob.sde,
            prob.reference_score_fn or prob.score_fn,
            (8, 2),
            solver="ode_heun",
            steps=50,
            x_T=x_T.to(prob.device),
            eps=table.meta["eps"],
            return_trajectory=True,
        )
        files.append(
            plots.plot_trajectories(
                res.trajectory,
                res.times,
                out / "trajectories.png",
                title=plots.figure_title(table, "PF-ODE paths (ode_heun, 50 steps)"),
            )
        )
    return files


def cmd_compare(args: argparse.Namespace) -> int:
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = args.problem or "ring"
    if args.checkpoint is None and args.data is not None:
        raise SystemExit("scoresde: --data goes with --checkpoint (a --problem brings its own)")
    if args.checkpoint is not None:
        if args.sde is not None:
            raise SystemExit("scoresde: --sde cannot be given with --checkpoint (it has its SDE)")
        if args.data is None:
            raise SystemExit("scoresde: --checkpoint needs --data (the reference data set)")
        meta = load_checkpoint_model(args.checkpoint)[1]  # a clear error for an unreadable file
        if meta.get("standardize"):
            raise ValueError(
                f"{args.checkpoint} was trained with --standardize; compare runs in the data's "
                "own units and does not undo it yet (sample it with 'scoresde sample')"
            )
        problem = checkpoint_problem(args.checkpoint, args.data, device=args.device)
    table = compare(
        problem,
        args.sde,
        split_solvers(args.solvers),
        args.steps,
        n=args.n,
        seed=args.seed,
        metrics=[m for m in args.metrics.split(",") if m] if args.metrics else None,
        rtols=args.rtols,
        reference_tol=args.reference_tol,
        n_ref=args.n_ref,
        device=args.device if args.checkpoint is None else None,
        progress=True,
    )
    print(table)
    files = write_outputs(table, args.out)
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0


#: The demo's solvers: SDE, PC, ODE and exponential-integrator families (pc and annealed
#: Langevin with the batch step-size norm, which is stable in 2-D; see benchmarks/samplers.py).
DEMO_SOLVERS = (
    "euler_maruyama",
    "ancestral",
    "pc:step_norm=batch",
    "ode_euler",
    "ode_heun",
    "ddim",
    "dpm_solver:order=2",
    "dpm_solver:order=3",
    "unipc",
    "ode_rk45",
)
DEMO_STEPS = (5, 10, 20, 50, 100)


def cmd_demo(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.quick:
        solvers, steps, n, rtols = DEMO_SOLVERS[3:6] + ("ode_rk45",), (5, 10), 500, (1e-3,)
    else:
        solvers, steps, n, rtols = DEMO_SOLVERS, DEMO_STEPS, args.n, (1e-2, 1e-3, 1e-4)
    print(
        f"scoresde demo: sampling the 8-Gaussian ring (exact score, VP SDE) with {len(solvers)} "
        f"solvers at steps {', '.join(map(str, steps))}, n = {n} ...\n"
    )
    table = compare("ring", "vp", solvers, steps, n=n, seed=args.seed, rtols=rtols, progress=True)
    print(table)
    files = write_outputs(table, args.out)
    print(f"\nwrote {len(files)} files into {Path(args.out).resolve()}:")
    for f in files:
        print(f"  {f.name}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0


def add_compare_parser(
    subparsers, formatter_class=argparse.HelpFormatter
) -> argparse.ArgumentParser:
    """Register ``scoresde compare`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "compare",
        help="compare solvers x step counts on an exact-score problem or a trained checkpoint",
        description="Run every solver at every step count from one shared x_T and score the "
        "samples against exact samples (--problem) or data (--checkpoint with --data), with the "
        "noise floor between independent reference sets. Writes table.md/csv/json and PNG plots "
        f"into --out. Problems: {', '.join(PROBLEMS)}; solvers: {', '.join(SOLVERS)}.",
        formatter_class=formatter_class,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--problem",
        default=None,
        choices=tuple(PROBLEMS),
        help="exact-score Gaussian-mixture preset (default: ring)",
    )
    which.add_argument(
        "--checkpoint",
        default=None,
        help="a trained checkpoint, path without suffix, with --data (default: none, a --problem)",
    )
    p.add_argument(
        "--data",
        default=None,
        help="reference data for --checkpoint: a toy set name, 'digits', a .npy/.npz file or an "
        "image folder (default: none; required with --checkpoint)",
    )
    p.add_argument(
        "--sde", default=None, choices=tuple(SDES), help="SDE for --problem (default: vp)"
    )
    p.add_argument(
        "--solvers",
        default="ode_heun,dpm_solver,pc",
        help="comma-separated; options as name:key=val,key=val (e.g. dpm_solver:order=3)",
    )
    p.add_argument(
        "--steps",
        type=list_of(POSITIVE_INT),
        default="5,10,20,50",
        metavar="N,N,...",
        help="comma-separated step counts for fixed-step solvers",
    )
    p.add_argument("--out", default="compare_results", help="output folder")
    p.add_argument("--n", type=int_at_least(2), default=4000, help="samples per run")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T, the noise and the metrics")
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, of {METRICS} (default mmd2,frechet, plus mode_tv,width for a "
        "--problem)",
    )
    p.add_argument(
        "--rtols",
        type=list_of(POSITIVE_FLOAT),
        default=",".join(f"{r:g}" for r in DEFAULT_RTOLS),
        metavar="TOL,TOL,...",
        help="tolerances for adaptive solvers (ode_rk45, scipy), which take no step counts",
    )
    p.add_argument(
        "--reference-tol",
        type=POSITIVE_FLOAT,
        default=1e-7,
        help="rtol = atol of the float64 ode_rk45 reference solve behind ref_rms (the slow part)",
    )
    p.add_argument(
        "--n-ref",
        type=POSITIVE_INT,
        default=None,
        help="samples that get a reference solve (default: all --n)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument(
        "--threads",
        type=NONNEGATIVE_INT,
        default=0,
        help=f"torch threads, 0: leave as is; {THREADS_HINT}",
    )
    p.set_defaults(func=cmd_compare)
    return p


def add_demo_parser(subparsers, formatter_class=argparse.HelpFormatter) -> argparse.ArgumentParser:
    """Register ``scoresde demo`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "demo",
        help="a seconds-long tour: compare solvers on the 2-D ring, write plots",
        description=f"Compare {len(DEMO_SOLVERS)} solvers ({', '.join(DEMO_SOLVERS)}) at steps "
        f"{', '.join(map(str, DEMO_STEPS))} on the 8-Gaussian ring with the exact score (VP "
        "SDE): a table on stdout, PNG plots in --out. Seconds on idle cores; measured 33 s on "
        "one thread of a 2-core CPU under load 9, where two threads took 271 s.",
        formatter_class=formatter_class,
    )
    p.add_argument("--out", default=".", help="folder for the table and PNGs")
    p.add_argument("--n", type=int_at_least(2), default=2000, help="samples per run")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T, the noise and the metrics")
    p.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=1,
        help="torch threads: the demo's tensors are small, and more threads only help on idle "
        "cores",
    )
    p.add_argument("--quick", action="store_true", help="a smaller grid (4 solvers, n = 500)")
    p.set_defaults(func=cmd_demo)
    return p
