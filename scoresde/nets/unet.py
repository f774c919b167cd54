"""A small U-Net score network for images (batch, C, H, W), in the DDPM / DDPM++ mould.

Ronneberger et al. 2015 (U-Net), with the residual blocks, GroupNorm, self-attention and time
embedding of DDPM (Ho et al. 2020, App. B) and the scale-shift conditioning of guided diffusion
(Dhariwal & Nichol 2021, Sec. 3). Sized for 8x8 digits on a CPU, and works unchanged for 28x28
and 32x32 inputs.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .embeddings import (
    ConditionEmbedding,
    FiLM,
    batch_time,
    check_dropout,
    check_image,
    check_int,
    check_labels,
    check_num_classes,
    check_time_embed,
)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = Conv(SiLU(GN(x))); h = Conv(Dropout(SiLU(FiLM(GN(h), c)))); return skip(x) + h.

    DDPM's residual block (Ho et al. 2020, App. B) with guided diffusion's scale-shift norm
    (Dhariwal & Nichol 2021, Sec. 3). The second conv is zero-initialised, so the block starts
    as its skip path. skip is a 1x1 conv when the width changes, else the identity.

    Shapes: x (batch, in_ch, H, W), c (batch, cond_dim) -> (batch, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.film = FiLM(cond_dim, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.film(self.norm2(h), c))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of one image, plus a residual.

    Vaswani et al. 2017, Eq. 1, as placed in DDPM's U-Net (Ho et al. 2020, App. B), computed by
    ``F.scaled_dot_product_attention``. Each sample attends only to its own positions. The
    output projection is zero-initialised, so the layer starts as the identity.

    Shapes: x (batch, channels, H, W) -> same.
    """

    def __init__(self, channels: int, groups: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, ch, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, ch // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (b, heads, h*w, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, ch, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (DDPM, Ho et al. 2020, App. B)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling then a 3x3 conv (DDPM, App. B)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Time- (and optionally class-) conditional U-Net: (x, t, y) -> tensor of x's shape.

    Level i (i = 0 .. L-1, L = len(channel_mults)) works at resolution image_size / 2^i with
    width channels * channel_mults[i]. The encoder runs ``num_res_blocks`` residual blocks per
    level (each followed by self-attention if that resolution is in ``attention_resolutions``)
    and a stride-2 conv between levels; the middle is ResBlock - attention - ResBlock; the decoder
    mirrors the encoder with ``num_res_blocks + 1`` blocks per level, each taking one skip
    connection. Conditioning c = SiLU(MLP(embed(t)) + E[y]) enters every ResBlock by FiLM.
    The output conv is zero-initialised, so the network outputs 0 at initialisation.

    Args:
        in_channels: image channels C (the output has the same number).
        channels: base width; level i has ``channels * channel_mults[i]`` channels.
        channel_mults: width multipliers, one per resolution level.
        num_res_blocks: residual blocks per level in the encoder.
        attention_resolutions: resolutions, in pixels, that get self-attention (e.g. (4,)
            attends at 4x4 for 8x8 images); each must be one of the levels' resolutions.
            None (default) means (image_size // 2,) when there are two or more levels, as DDPM
            attends at 16x16 for 32x32 images. The middle block always has attention.
        image_size: H = W of the inputs; must be divisible by 2^(L-1).
        dropout: dropout probability inside the residual blocks.
        num_classes: number of classes for class conditioning, or None. Label ``num_classes``
            is the null label; ``y=None`` in ``forward`` means the null label for all samples.
        groups: GroupNorm groups; must divide every level's width.
        time_embed: "sinusoidal" (of 1000 t) or "fourier" (Gaussian Fourier features of t).
        num_heads: attention heads; must divide every attended level's width.

    ``self.config`` holds the constructor arguments (tuples stored as lists, so it equals its own
    JSON round trip), and ``UNet(**net.config)`` rebuilds the network.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] | None = None,
        image_size: int = 8,
        dropout: float = 0.0,
        num_classes: int | None = None,
        groups: int = 8,
        time_embed: str = "sinusoidal",
        num_heads: int = 1,
    ):
        super().__init__()
        if not isinstance(channel_mults, tuple | list) or not channel_mults:
            raise ValueError(
                f"channel_mults must be a non-empty tuple of ints, got {channel_mults!r}"
            )
        # Sequences are kept as lists, so self.config equals its own JSON round trip.
        mults = [check_int("channel_mults", m) for m in channel_mults]
        levels = len(mults)
        check_int("image_size", image_size)
        if image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**(len(channel_mults)-1)="
                f"{2 ** (levels - 1)}: each of the {levels - 1} downsamplings halves it"
            )
        resolutions = [image_size // 2**i for i in range(levels)]
        if attention_resolutions is not None:
            if not isinstance(attention_resolutions, tuple | list):
                raise ValueError(
                    f"attention_resolutions must be a tuple of ints or None, "
                    f"got {attention_resolutions!r}"
                )
            attn_res = [check_int("attention_resolutions", r) for r in attention_resolutions]
            unknown = sorted(set(attn_res) - set(resolutions))
            if unknown:
                raise ValueError(
                    f"attention_resolutions {unknown} are not among this net's resolutions "
                    f"{resolutions} (image_size={image_size}, channel_mults={mults})"
                )
        self.config = dict(
            in_channels=check_int("in_channels", in_channels),
            channels=check_int("channels", channels),
            channel_mults=mults,
            num_res_blocks=check_int("num_res_blocks", num_res_blocks),
            attention_resolutions=attn_res if attention_resolutions is not None else None,
            image_size=image_size,
            dropout=check_dropout(dropout),
            num_classes=check_num_classes(num_classes),
            groups=check_int("groups", groups),
            time_embed=check_time_embed(time_embed),
            num_heads=check_int("num_heads", num_heads),
        )
        if attention_resolutions is None:  # DDPM's choice: attend at half the input resolution
            attn_res = resolutions[1:2]
        widths = [channels * m for m in mults]
        if any(w % groups for w in widths):
            raise ValueError(
                f"groups={groups} must divide every level width channels * channel_mults = {widths}"
            )
        attended = [r in attn_res for r in resolutions[:-1]] + [True]  # mid block
        if any(w % num_heads for w, a in zip(widths, attended, strict=True) if a):
            raise ValueError(f"num_heads={num_heads} must divide the width of every attended level")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.attention_resolutions = attn_res

        cond_dim = 4 * channels
        embed_dim = channels + channels % 2  # DDPM: sinusoidal of width ch, MLP to 4 ch
        self.cond = ConditionEmbedding(time_embed, embed_dim, cond_dim, num_classes)
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)

        def block(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, cond_dim, groups, dropout)

        def attention(width: int, res: int) -> nn.Module:
            if res in attn_res:
                return SelfAttention(width, groups, num_heads)
            return nn.Identity()

        # Encoder: each module below pushes one skip tensor; their widths are `skips`.
        self.down = nn.ModuleList()
        skips, width = [channels], channels
        for i, (w, res) in enumerate(zip(widths, resolutions, strict=True)):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([block(width, w), attention(w, res)]))
                skips.append(width := w)
            if i < levels - 1:
                self.down.append(Downsample(width))
                skips.append(width)

        self.mid = nn.ModuleList(
            [block(width, width), SelfAttention(width, groups, num_heads), block(width, width)]
        )

        # Decoder: each block pops one skip tensor and concatenates it to its input.
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            w, res = widths[i], resolutions[i]
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([block(width + skips.pop(), w), attention(w, res)]))
                width = w
            if i > 0:
                self.up.append(Upsample(width))

        self.out_norm = nn.GroupNorm(groups, width)
        self.out = _zero(nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """x (batch, C, H, W), t (batch,) or scalar, y (batch,) long or None -> x's shape."""
        check_image(x, self.in_channels, self.image_size)
        c = self.cond(batch_time(t, x), check_labels(y, x))

        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, Downsample):
                h = layer(h)
            else:
                res_block, attn = cast(nn.ModuleList, layer)
                h = attn(res_block(h, c))
            skips.append(h)

        res_a, attn, res_b = self.mid
        h = res_b(attn(res_a(h, c)), c)

        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                res_block, attn = cast(nn.ModuleList, layer)
                h = attn(res_block(torch.cat([h, skips.pop()], dim=1), c))
        return self.out(F.silu(self.out_norm(h)))
