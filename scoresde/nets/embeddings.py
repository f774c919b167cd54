"""Time and class conditioning for score networks: Fourier/sinusoidal embeddings and FiLM.

A score network s_theta(x, t, y) sees the diffusion time t in [0, T] through an embedding of the
scalar t into a vector, then a small MLP, then per-block FiLM layers (Perez et al. 2018) that
scale and shift the activations. Class labels (optional) are embedded with ``nn.Embedding`` and
added to the time embedding; index ``num_classes`` is the null label of classifier-free guidance
(Ho & Salimans 2022, Sec. 3.2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..validation import batch_time, check_config_choice, check_config_even, check_config_int

__all__ = [
    "ConditionEmbedding",
    "FiLM",
    "GaussianFourierProjection",
    "SinusoidalEmbedding",
    "batch_time",
    "check_dropout",
    "check_image",
    "check_even",
    "check_int",
    "check_labels",
    "check_num_classes",
    "check_time_embed",
]

TIME_EMBEDDINGS = ("fourier", "sinusoidal")

FOURIER_SCALE = 16.0
"""Std of the Fourier frequencies; 16 is NCSN++'s ``fourier_scale`` (Song et al. 2021, App. H)."""

SINUSOIDAL_INPUT_SCALE = 1000.0
"""Multiplier applied to t in [0, 1] before the sinusoidal embedding, so the frequencies see the
same range as DDPM's integer timesteps 0..999 (Ho et al. 2020, App. B)."""


# ---------------------------------------------------------------------------------------------
# Argument checks of the networks (each error names the offending argument): the configuration
# checks of ``scoresde.validation``, where every bad value is a ValueError.

check_int = check_config_int
check_even = check_config_even


def check_dropout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1), got {value!r}")
    return float(value)


def check_num_classes(value) -> int | None:
    return None if value is None else check_int("num_classes", value, 1)


def check_time_embed(value) -> str:
    return check_config_choice("time_embed", value, TIME_EMBEDDINGS)


# ---------------------------------------------------------------------------------------------
# Embeddings of a scalar.


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar: [sin(2 pi W t), cos(2 pi W t)], W ~ N(0, scale^2).

    Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency Functions", Eq. 5;
    used as the noise-level embedding of NCSN++ (Song et al. 2021, App. H, on log sigma) and of
    Song's continuous-time tutorial (on t). This module embeds whatever scalar it is given; the
    networks of this package feed it t in [0, T].

    The frequencies W are fixed, not trained. They are drawn from a local ``torch.Generator``
    seeded with ``seed`` (the global RNG is neither read nor advanced), so two constructions with
    the same seed agree, and they are registered as a buffer so they travel in ``state_dict``.

    Args:
        dim: output size (even); ``dim // 2`` frequencies.
        scale: standard deviation of the frequencies.
        seed: seed of the local generator that draws W.

    Shapes: t (batch,) -> (batch, dim), in t's dtype.
    """

    W: Tensor

    def __init__(self, dim: int, scale: float = FOURIER_SCALE, seed: int = 0):
        super().__init__()
        check_even("dim", dim)
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number, got {scale!r}")
        self.dim, self.scale, self.seed = dim, float(scale), int(seed)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        w = torch.randn(dim // 2, generator=gen, dtype=torch.float64) * self.scale
        self.register_buffer("W", w.to(torch.get_default_dtype()))

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t[:, None] * self.W.to(t.dtype)[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}, seed={self.seed}"


class SinusoidalEmbedding(nn.Module):
    """Transformer positional embedding of a scalar, as DDPM uses for its timestep.

    ``emb(s)_i = cos(s * w_i)``, ``emb(s)_{half+i} = sin(s * w_i)``,
    ``w_i = max_period^(-i / half)``, with s = input_scale * t (Vaswani et al. 2017, Sec. 3.5;
    Ho et al. 2020, App. B). DDPM feeds integer steps 0..999; with continuous t in [0, 1] the
    default ``input_scale=1000`` gives the same frequency range (the ``t * 999`` of
    score_sde_pytorch, made a named argument).

    Args:
        dim: output size (even).
        max_period: the slowest wavelength, in units of s.
        input_scale: multiplier applied to t before embedding.

    Shapes: t (batch,) -> (batch, dim), in t's dtype.
    """

    def __init__(
        self,
        dim: int,
        max_period: float = 10000.0,
        input_scale: float = SINUSOIDAL_INPUT_SCALE,
    ):
        super().__init__()
        check_even("dim", dim)
        if not (isinstance(max_period, int | float) and max_period > 1):
            raise ValueError(f"max_period must be a number > 1, got {max_period!r}")
        if not (isinstance(input_scale, int | float) and input_scale > 0):
            raise ValueError(f"input_scale must be a positive number, got {input_scale!r}")
        self.dim, self.max_period, self.input_scale = dim, float(max_period), float(input_scale)

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        exponent = torch.arange(half, dtype=t.dtype, device=t.device) / half
        freqs = torch.exp(-math.log(self.max_period) * exponent)
        angles = (self.input_scale * t)[:, None] * freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, input_scale={self.input_scale}"


# ---------------------------------------------------------------------------------------------
# Conditioning layers.


class FiLM(nn.Module):
    """Feature-wise linear modulation: x * (1 + scale) + shift, with (scale, shift) = Linear(c).

    Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning Layer", Eq. 2, in the
    ``1 + scale`` form of guided diffusion's scale-shift norm (Dhariwal & Nichol 2021, Sec. 3)
    and DiT's adaLN-Zero (Peebles & Xie 2023, Sec. 3.2). The linear map is zero-initialised, so
    the layer starts as the identity.

    Args:
        cond_dim: size of the conditioning vector c.
        channels: number of channels of x (its dim 1).

    Shapes: x (batch, channels, *spatial), c (batch, cond_dim) -> x's shape.
    """

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.channels = check_int("channels", channels)
        self.proj = nn.Linear(check_int("cond_dim", cond_dim), 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def scale_shift(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, shift), each (batch, channels)."""
        scale, shift = self.proj(c).chunk(2, dim=-1)
        return scale, shift

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.scale_shift(c)
        trailing = (1,) * (x.dim() - 2)
        scale = scale.reshape(*scale.shape, *trailing)
        shift = shift.reshape(*shift.shape, *trailing)
        return x * (1 + scale) + shift


class ConditionEmbedding(nn.Module):
    """Time (and optional class) conditioning vector shared by all blocks of a network.

    c = SiLU(MLP(embed(t)) + E[y]), with MLP = Linear -> SiLU -> Linear as in DDPM's ``temb``
    (Ho et al. 2020, App. B) and E an ``nn.Embedding(num_classes + 1, cond_dim)`` whose last row
    (index ``num_classes``) is the null label of classifier-free guidance (Ho & Salimans 2022).
    ``y=None`` means the null label for the whole batch.

    Shapes: t (batch,), y (batch,) long or None -> (batch, cond_dim).
    """

    def __init__(
        self,
        time_embed: str,
        embed_dim: int,
        cond_dim: int,
        num_classes: int | None = None,
    ):
        super().__init__()
        check_time_embed(time_embed)
        check_even("embed_dim", embed_dim)
        self.num_classes = check_num_classes(num_classes)
        self.time: GaussianFourierProjection | SinusoidalEmbedding
        if time_embed == "fourier":
            self.time = GaussianFourierProjection(embed_dim)
        else:
            self.time = SinusoidalEmbedding(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )
        self.label = None if num_classes is None else nn.Embedding(num_classes + 1, cond_dim)

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.mlp(self.time(t))
        if self.label is not None:
            if y is None:  # the null label num_classes: the table's last row
                null = self.label.num_embeddings - 1
                y = torch.full((t.shape[0],), null, dtype=torch.long, device=t.device)
            c = c + self.label(y)
        elif y is not None:
            raise ValueError("y was given but the network was built with num_classes=None")
        return nn.functional.silu(c)


def check_image(x: Tensor, channels: int, size: int) -> None:
    """Check x is a (batch, channels, size, size) image batch, as the image networks take."""
    expected = (channels, size, size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"x must have shape (batch, {expected}), got {tuple(x.shape)}")


def check_labels(y: Tensor | None, x: Tensor) -> Tensor | None:
    """Check y is None or a (batch,) integer tensor (values are checked by nn.Embedding)."""
    if y is None:
        return None
    if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex():
        raise ValueError("y must be a (batch,) integer tensor of class labels or None")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    return y.to(device=x.device, dtype=torch.long)
