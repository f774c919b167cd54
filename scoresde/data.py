"""Data sets: 2-D toy distributions generated in torch, a synthetic table with heterogeneous
column scales, 8x8 digits, user arrays and image folders.

Every generator takes ``n`` and a ``torch.Generator`` and returns a float tensor; nothing is
downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .validation import check_bool, check_choice, check_generator, check_int, check_real


def _check_n(n, generator) -> int:
    check_generator("generator", generator)
    return check_int("n", n, 1)


def _rand(n, generator, *shape):
    return torch.rand(n, *shape, generator=generator, dtype=torch.float64)


def _randn(n, generator, *shape):
    return torch.randn(n, *shape, generator=generator, dtype=torch.float64)


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.5) -> Tensor:
    """The 2-D swiss roll (sklearn's make_swiss_roll projected to (x, z)), scaled by 1/5."""
    n = _check_n(n, generator)
    noise = check_real("noise", noise, 0.0)
    t = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + noise * _randn(n, generator, 2)
    return (x / 5).float()


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> Tensor:
    """Two interleaved half circles (sklearn's make_moons), centred."""
    n = _check_n(n, generator)
    noise = check_real("noise", noise, 0.0)
    upper = torch.rand(n, generator=generator) < 0.5
    a = math.pi * _rand(n, generator)
    x = torch.where(
        upper[:, None],
        torch.stack([torch.cos(a), torch.sin(a)], 1),
        torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1),
    )
    x = x + noise * _randn(n, generator, 2) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    return (2 * x).float()


def eight_gaussians(n: int, generator: torch.Generator | None = None, std: float = 0.1) -> Tensor:
    """Eight Gaussians of std ``std`` on a circle of radius 2 (like FFJORD's "8gaussians")."""
    n = _check_n(n, generator)
    std = check_real("std", std, 0.0)
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.double() * (2 * math.pi / 8)
    centres = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return (centres + std * _randn(n, generator, 2)).float()


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the black squares of a 4x4 checkerboard on [-2, 2]^2 (FFJORD)."""
    n = _check_n(n, generator)
    x1 = 4 * _rand(n, generator) - 2
    offset = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 2
    x2 = _rand(n, generator) + offset + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1).float()


def pinwheel(n: int, generator: torch.Generator | None = None, arms: int = 5) -> Tensor:
    """A pinwheel of ``arms`` spiral arms of stretched Gaussians (after FFJORD's, with radial std
    0.3 and tangential std 0.05)."""
    n = _check_n(n, generator)
    arms = check_int("arms", arms, 1)
    k = torch.randint(0, arms, (n,), generator=generator).double()
    feats = _randn(n, generator, 2) * torch.tensor([0.3, 0.05], dtype=torch.float64)
    feats[:, 0] += 1.0
    angle = k * (2 * math.pi / arms) + 0.25 * torch.exp(feats[:, 0])
    rot = torch.stack(
        [torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], 1
    ).reshape(n, 2, 2)
    return (2 * (rot @ feats[:, :, None]).squeeze(-1)).float()


def rings(n: int, generator: torch.Generator | None = None, noise: float = 0.08) -> Tensor:
    """Four concentric rings of radii 0.5, 1, 1.5, 2, uniform in angle."""
    n = _check_n(n, generator)
    noise = check_real("noise", noise, 0.0)
    radius = 0.5 * (torch.randint(0, 4, (n,), generator=generator).double() + 1)
    angle = 2 * math.pi * _rand(n, generator)
    x = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return (x + noise * _randn(n, generator, 2)).float()


TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "swiss_roll": swiss_roll,
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "rings": rings,
}


#: ``tabular_mixture``'s columns, a rate, a fraction, an age, a count and an income (scales from
#: 1e-3 to 1e4), in three sub-populations: (means, stds) per component, and the weights.
TABULAR_MEANS = (
    (0.004, 0.30, 35.0, 1200.0, 42_000.0),
    (0.009, 0.55, 52.0, 3500.0, 68_000.0),
    (0.002, 0.80, 68.0, 600.0, 25_000.0),
)
TABULAR_STDS = (
    (0.001, 0.05, 6.0, 300.0, 8_000.0),
    (0.002, 0.08, 5.0, 500.0, 12_000.0),
    (0.0005, 0.05, 4.0, 150.0, 5_000.0),
)
TABULAR_WEIGHTS = (0.5, 0.3, 0.2)


def tabular_mixture_density():
    """The exact distribution of ``tabular_mixture``: a ``GaussianMixture`` (float64) of three
    diagonal Gaussians in 5 columns, so ``exact_score`` / ``exact_log_prob`` give its diffused
    scores and densities, in the data's units or (affinely mapped) standardised ones."""
    from .oracle import GaussianMixture

    f64 = torch.float64
    return GaussianMixture(
        torch.tensor(TABULAR_MEANS, dtype=f64),
        torch.tensor(TABULAR_STDS, dtype=f64),
        torch.tensor(TABULAR_WEIGHTS, dtype=f64),
    )


def tabular_mixture(n: int, generator: torch.Generator | None = None) -> Tensor:
    """``(n, 5)`` float32 rows of a synthetic table whose column scales differ by 1e7.

    Columns: a rate (~5e-3), a fraction (~0.5), an age (~45), a count (~2e3) and an income
    (~5e4), from three sub-populations (``TABULAR_MEANS``, ``TABULAR_STDS``,
    ``TABULAR_WEIGHTS``); the exact density is ``tabular_mixture_density()``. Data for the
    tabular preset (``scoresde train --data tabular_mixture --net tabular``, which standardises
    each column, as TabDDPM does, Kotelnikov et al. 2023); unstandardised, the SDEs' unit-scale
    prior cannot fit it.
    """
    n = _check_n(n, generator)
    return tabular_mixture_density().sample(n, generator).float()


#: Vector data sets of more than two columns (generated, no download), by name.
TABULAR_DATASETS: dict[str, Callable[..., Tensor]] = {"tabular_mixture": tabular_mixture}


def digits(return_labels: bool = False):
    """scikit-learn's 8x8 digits (1797 images) as (N, 1, 8, 8) float32 in [-1, 1].

    Needs the optional ``scikit-learn`` package (``pip install scoresde[digits]``); the data ship
    with it, nothing is downloaded. The 17 grey levels 0..16 map linearly to [-1, 1].
    """
    check_bool("return_labels", return_labels)
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("digits() needs scikit-learn: pip install scikit-learn") from err
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    if return_labels:
        return x, torch.from_numpy(d.target).long()
    return x


def load_array(path: str | Path, key: str | None = None) -> Tensor:
    """A user's ``.npy`` or ``.npz`` array as a float32 tensor (first axis = samples).

    Loaded with ``allow_pickle=False``: object arrays are refused rather than unpickled.
    """
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = list(z.keys())
            if key is None and len(names) != 1:
                raise ValueError(f"{path} holds arrays {names}; choose one with key=")
            if key is not None and key not in names:
                raise ValueError(f"{path} has no array {key!r}; it holds {names}")
            arr = z[key or names[0]]
    else:
        raise ValueError(f"expected a .npy or .npz file, got {path}")
    if arr.ndim < 2:
        raise ValueError(f"the array must have shape (N, ...), got {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).float()


def load_image_folder(path: str | Path, size: int | None = None, channels: int = 3) -> Tensor:
    """All PNG/JPEG images in a folder as (N, C, H, W) float32 in [-1, 1] (sorted by name).

    ``size`` resizes to size x size (bilinear); without it all images must have one size.
    """
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[check_choice("channels", channels, (1, 3))]
    if size is not None:
        size = check_int("size", size, 1)
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"no .png/.jpg images in {path}")
    images = []
    for f in files:
        with Image.open(f) as file:
            im = file.convert(mode)
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(im, dtype=np.float32).reshape(im.height, im.width, channels))
    if len({a.shape for a in images}) != 1:
        raise ValueError("images differ in size; pass size= to resize them")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0
