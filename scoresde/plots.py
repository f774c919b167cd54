"""Figures with matplotlib (headless: the Agg backend, PNG files)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
