"""Figures with matplotlib (headless: the Agg backend, PNG files)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .sde_names import SDE_CLASSES  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out, write as PNG (creating the folder), close; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def image_grid(x: Tensor, ncol: int | None = None, pad: int = 1) -> Tensor:
    """(N, C, H, W) images in [-1, 1] -> one (H', W', C) grid in [0, 1] for imshow."""
    n, c, h, w = x.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for k in range(n):
        r, q = divmod(k, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = x[k].detach().cpu().float()
    return ((grid.clamp(-1, 1) + 1) / 2).permute(1, 2, 0)


def save_samples(x: Tensor, path: str | Path, title: str = "", limit: float | None = None) -> Path:
    """Save samples as a PNG: a scatter plot for (N, 2) points, an image grid for (N, C, H, W)."""
    if x.dim() == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        pts = x.detach().cpu().float()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        lim = limit or float(pts.abs().quantile(0.995)) * 1.1
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
    elif x.dim() == 4:
        fig, ax = plt.subplots(figsize=(4, 4))
        grid = image_grid(x[:64])
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray")
        ax.axis("off")
    else:
        raise ValueError(
            f"save_samples takes (N, 2) points or (N, C, H, W) images, got {tuple(x.shape)}"
        )
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_class_grid(
    x: Tensor, labels: Tensor, path: str | Path, title: str = "", ncol: int = 10
) -> Path:
    """Samples of several classes as a PNG: for (N, C, H, W) images one row per class (its first
    ``ncol`` samples, class index on the left); for (N, 2) points one colour per class."""
    classes = sorted({int(c) for c in labels.tolist()})
    if x.dim() == 4:
        rows = [x[labels == c][:ncol] for c in classes]
        ncol = max(len(r) for r in rows)
        grid = image_grid(torch.cat(rows), ncol=ncol) if all(len(r) == ncol for r in rows) else None
        if grid is None:
            raise ValueError("save_class_grid needs the same number of samples of each class")
        fig, ax = plt.subplots(figsize=(0.45 * ncol + 0.8, 0.45 * len(classes) + 0.7))
        ax.imshow((grid.squeeze(-1) if grid.shape[-1] == 1 else grid).numpy(), cmap="gray")
        h = x.shape[-2] + 1  # image_grid's pad of 1
        ax.set_yticks([1 + h * k + h / 2 for k in range(len(classes))], [str(c) for c in classes])
        ax.set_xticks([])
        ax.set_ylabel("class")
    elif x.dim() == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        pts = x.detach().cpu().float()
        for c in classes:
            sel = pts[labels == c]
            ax.scatter(sel[:, 0], sel[:, 1], s=1, alpha=0.5, label=str(c))
        ax.legend(title="class", fontsize=7, markerscale=6)
        ax.set(aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
    else:
        raise ValueError(
            f"save_class_grid takes (N, 2) points or (N, C, H, W) images, got {tuple(x.shape)}"
        )
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# sampler comparison (``scoresde.comparison``)

_METRIC_LABELS = {
    "mmd2": "MMD$^2$ to exact samples",
    "frechet": "Fréchet distance to exact samples",
    "sliced_w2": "sliced $W_2$ to exact samples",
    "energy": "energy distance to exact samples",
    "ref_rms": "RMS distance to the reference PF-ODE solution",
}


def _series(table, x_key: str, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """solver label -> (x, y) of its successful runs, sorted by x; ``x_key`` and ``metric`` are
    columns of the table's rows (``Row.value``: ``"nfe"``, ``"seconds"``, a metric, ...)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in table.rows:
        if r.error:
            continue
        x, y = r.value(x_key), r.value(metric)
        if x is None or y is None or not math.isfinite(y):
            continue
        xs, ys = out.setdefault(r.solver, ([], []))
        xs.append(float(x))
        ys.append(float(y))
    for k, (xs, ys) in out.items():
        order = sorted(range(len(xs)), key=xs.__getitem__)
        out[k] = ([xs[i] for i in order], [ys[i] for i in order])
    return out


#: Display names of the SDEs in titles (a table's meta holds a name of ``SDE_CLASSES`` or a
#: class).
_SDE_NAMES = {k: c.label for n, c in SDE_CLASSES.items() for k in (n, c.__name__)}
_MARKERS = "osD^v<>ph*"


def solver_styles(labels) -> dict[str, dict[str, str]]:
    """One colour and marker per solver label, by first-seen order: the same in every figure of
    a table."""
    return {
        label: {"color": f"C{k % 10}", "marker": _MARKERS[k % len(_MARKERS)]}
        for k, label in enumerate(dict.fromkeys(labels))
    }


def _error_axes(ax, table, series, metric: str, xlabel: str) -> None:
    """Lines per solver on log-log axes, or a symlog y axis where a value is <= 0 (the unbiased
    MMD^2 is negative when a solver is as close to the target as the noise allows): every value
    is drawn where it is. The grey band is the noise floor up to mean + k sd, the same k as the
    table's ``*``."""
    floor = table.noise_floor.get(metric)
    kind = table.meta.get("target", "exact")  # "data" for a checkpoint with a data set
    k = table.floor_stds
    values = [y for _, ys in series.values() for y in ys]
    if not values:
        raise ValueError(f"no finite values of {metric!r} to plot")
    styles = solver_styles(table.solvers)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, ms=5, lw=1.5, label=label, **styles[label])
    top = None if floor is None else floor[0] + k * floor[1]
    if floor is not None:
        bottom = min(0.0, *values) * 1.1 if min(values) <= 0 else min(values + [top]) / 3
        ax.axhspan(
            bottom,
            top,
            color="0.8",
            alpha=0.6,
            zorder=0,
            label=f"noise floor ({kind} vs {kind}): up to mean + {k:g} sd = {top:.2g} "
            "(* in the table)",
        )
    ax.set_xscale("log")
    if min(values) > 0:
        ax.set_yscale("log")
    else:  # linear within +- one floor sd (or the smallest |value|), logarithmic beyond
        small = [abs(y) for y in values if y != 0]
        scale = floor[1] if floor is not None and floor[1] > 0 else min(small or [1.0])
        ax.set_yscale("symlog", linthresh=scale)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.text(
            0.01,
            0.01,
            f"symlog axis: linear in ±{scale:.2g}; values ≤ 0 are at or below the noise floor",
            transform=ax.transAxes,
            fontsize=7,
            color="0.3",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric).replace("exact", kind))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )  # beside, not over, the lines


def figure_title(table, what: str) -> str:
    """A figure title: what, the problem (or checkpoint and data), the SDE and n."""
    m = table.meta
    if "checkpoint" in m:
        where = f"checkpoint {'/'.join(Path(m['checkpoint']).parts[-2:])}, data {m['data']}"
    else:
        where = str(m["problem"])
    sde = _SDE_NAMES.get(str(m["sde"]), str(m["sde"]))
    return f"{what}: {where}, {sde} SDE, n = {m['n']}"


def plot_error_vs_nfe(table, path: str | Path, metric: str = "mmd2") -> Path:
    """Error vs number of score evaluations, log-log, one line per solver, noise floor shaded.

    ``metric`` is one of the table's metrics or ``"ref_rms"`` (deterministic solvers only)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = _series(table, "nfe", metric)
    _error_axes(ax, table, series, metric, "NFE (score evaluations)")
    nfes = [x for xs, _ in series.values() for x in xs]
    ticks = [b * 10**e for e in range(6) for b in (1, 2, 5) if min(nfes) <= b * 10**e <= max(nfes)]
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])  # 5, 10, 20, ... rather than 6 x 10^0
    ax.set_title(figure_title(table, "error vs NFE"))
    return save_figure(fig, path)


def plot_time_vs_error(table, path: str | Path, metric: str = "mmd2") -> Path:
    """Error vs wall-clock time per run, log-log, one line per solver, noise floor shaded."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _error_axes(ax, table, _series(table, "seconds", metric), metric, "wall time per run [s]")
    ax.set_title(figure_title(table, "error vs wall time"))
    return save_figure(fig, path)


def plot_samples_grid(
    samples_by_solver: dict[str, Tensor],
    path: str | Path,
    reference: Tensor | None = None,
    ncol: int | None = None,
    limit: float | None = None,
    max_points: int = 2000,
    reference_label: str = "exact",
    colors: dict[str, str] | None = None,
) -> Path:
    """One panel per solver: a scatter for (N, d) points (first two coordinates; ``reference``
    drawn faintly behind and as its own first panel, titled ``reference_label``), an image grid
    for (N, C, H, W) images. ``colors`` maps panel names to the points' colour (default C0)."""
    panels = dict(samples_by_solver)
    if reference is not None:
        panels = {reference_label: reference, **panels}
    if not panels:
        raise ValueError("plot_samples_grid needs at least one set of samples")
    ncol = ncol or min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 3 * nrow), squeeze=False)
    first = next(iter(panels.values()))
    if first.dim() == 2 and limit is None:
        base = reference if reference is not None else first
        limit = float(base[:, :2].detach().cpu().float().abs().quantile(0.995)) * 1.15
    for ax, (name, x) in zip(axes.flat, panels.items(), strict=False):
        if x.dim() == 4:
            g = image_grid(x[:64])
            ax.imshow((g.squeeze(-1) if g.shape[-1] == 1 else g).numpy(), cmap="gray")
            ax.axis("off")
        elif x.dim() == 2 and x.shape[1] >= 2:
            if limit is None:  # set above from the first panel when that one holds points
                raise ValueError("plotting points after an image panel needs an explicit limit")
            if reference is not None and name != reference_label:
                r = reference[:max_points].detach().cpu().float()
                ax.scatter(r[:, 0], r[:, 1], s=1, c="0.8", alpha=0.5)
            pts = x[:max_points].detach().cpu().float()
            ref = reference is not None and name == reference_label
            color = "0.2" if ref else (colors or {}).get(name, "C0")
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5, c=color)
            ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
            ax.tick_params(labelsize=7)
        else:
            raise ValueError(f"cannot plot samples of shape {tuple(x.shape)} for {name!r}")
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return save_figure(fig, path)


def plot_trajectories(
    traj: Tensor, times: Tensor, path: str | Path, n_paths: int = 8, title: str = ""
) -> Path:
    """Reverse-time trajectories of a few 2-D samples: each coordinate against t (t runs from T
    on the left to eps on the right) and the paths in the plane (dot = x_T, square = end)."""
    if traj.dim() != 3 or traj.shape[-1] != 2 or traj.shape[0] != len(times):
        raise ValueError(
            f"traj must be (len(times), N, 2), got {tuple(traj.shape)} with {len(times)} times"
        )
    tr = traj[:, :n_paths].detach().cpu().float()
    ts = torch.as_tensor(times).detach().cpu().double()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for j in range(tr.shape[1]):
        c = f"C{j % 10}"
        axes[0].plot(ts, tr[:, j, 0], c=c, lw=1)
        axes[1].plot(ts, tr[:, j, 1], c=c, lw=1)
        axes[2].plot(tr[:, j, 0], tr[:, j, 1], c=c, lw=1)
        axes[2].plot(tr[0, j, 0], tr[0, j, 1], "o", c=c, ms=4)
        axes[2].plot(tr[-1, j, 0], tr[-1, j, 1], "s", c=c, ms=5)
    for k, ax in enumerate(axes[:2]):
        ax.set(xlabel="t (reverse time: T → eps)", ylabel=f"$x_{k + 1}(t)$")
        ax.set_xlim(float(ts[0]), float(ts[-1]))
        ax.grid(alpha=0.3)
    axes[2].set(xlabel="$x_1$", ylabel="$x_2$", aspect="equal", title="paths (● $x_T$, ■ end)")
    axes[2].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
