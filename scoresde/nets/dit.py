"""Diffusion Transformer (DiT) score network for images (batch, C, H, W).

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (Sec. 3.2, Fig. 3): patchify
the image into (H/p)(W/p) tokens with a p x p stride-p conv plus a fixed 2-D sin-cos positional
embedding, run N transformer blocks conditioned by adaLN-Zero on c = SiLU(MLP(embed(t)) + E[y]),
then a final adaptive LayerNorm, a linear layer to p*p*C values per token and unpatchify.
The adaLN modulation linears and the final linear are zero-initialised, so every block starts as
the identity and the network outputs exactly 0 at initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..validation import check_config_real
from .embeddings import (
    ConditionEmbedding,
    batch_time,
    check_dropout,
    check_image,
    check_int,
    check_labels,
    check_num_classes,
    check_time_embed,
)

DIT_PRESETS: dict[str, dict] = {
    # 8x8 digits: 16 tokens of 2x2 patches; 0.48M parameters (the default U-Net: 0.44M).
    "digits": dict(in_channels=1, image_size=8, patch_size=2, hidden=64, depth=6, num_heads=4),
    # 32x32 images (CIFAR-like): 64 tokens of 4x4 patches; 9.8M parameters (DiT-S/4: 384 x 12).
    "32x32": dict(in_channels=3, image_size=32, patch_size=4, hidden=256, depth=8, num_heads=4),
}
"""Named configurations for ``DiT.preset``: 8x8 one-channel digits and 32x32 RGB images."""


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos positional embedding (MAE/DiT): (grid * grid, dim), rows in raster order.

    Half the channels embed the row index, half the column index, each with the 1-D embedding
    [sin(pos w_k), cos(pos w_k)], w_k = 10000^(-k / (dim/4)), k = 0..dim/4-1 (Vaswani et al. 2017).
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def one_d(p: Tensor) -> Tensor:
        angles = p.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([one_d(rows), one_d(cols)], dim=1).float()


def patchify(x: Tensor, p: int) -> Tensor:
    """(batch, C, H, W) -> (batch, (H/p)(W/p), p*p*C): raster-ordered non-overlapping patches."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Tensor, p: int, channels: int, size: int) -> Tensor:
    """Inverse of ``patchify``: (batch, (size/p)^2, p*p*C) -> (batch, C, size, size)."""
    b, g = tokens.shape[0], size // p
    x = tokens.reshape(b, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, size, size)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, with (batch, dim) shift/scale broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class DiTBlock(nn.Module):
    """DiT block with adaLN-Zero (Peebles & Xie 2023, Sec. 3.2, Fig. 3 right).

    (shift1, scale1, gate1, shift2, scale2, gate2) = Linear(c), zero-initialised;
    x = x + gate1 * Attn(modulate(LN(x), shift1, scale1));
    x = x + gate2 * MLP(modulate(LN(x), shift2, scale2)). At initialisation the gates are 0,
    so the block is the identity.

    Shapes: x (batch, tokens, hidden), c (batch, hidden) -> (batch, tokens, hidden).
    """

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, width),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(width, hidden),
        )
        self.ada = _zero(nn.Linear(hidden, 6 * hidden))

    def attention(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        qkv = self.qkv(h).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (b, heads, n, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attention(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """(shift, scale) = Linear(c); out = Linear(modulate(LN(x), shift, scale)), both zero-init.

    Shapes: x (batch, tokens, hidden), c (batch, hidden) -> (batch, tokens, p*p*C).
    """

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = _zero(nn.Linear(hidden, 2 * hidden))
        self.linear = _zero(nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Time- (and optionally class-) conditional Diffusion Transformer: (x, t, y) -> x's shape.

    x (batch, C, S, S) -> Conv2d(C, hidden, p, stride p) -> tokens (batch, (S/p)^2, hidden)
    + fixed 2-D sin-cos positions -> ``depth`` adaLN-Zero blocks conditioned on
    c = SiLU(MLP(embed(t)) + E[y]) -> final adaLN + Linear -> unpatchify (Peebles & Xie 2023,
    Fig. 3). Outputs exactly 0 at initialisation.

    Args:
        in_channels: image channels C (the output has the same number).
        image_size: S = H = W of the inputs; must be divisible by ``patch_size``.
        patch_size: side p of the square patches.
        hidden: token width; must be divisible by ``num_heads`` and by 4 (sin-cos positions).
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width / hidden (DiT uses 4).
        dropout: dropout probability inside the MLPs.
        num_classes: number of classes for class conditioning, or None. Label ``num_classes``
            is the null label; ``y=None`` in ``forward`` means the null label for all samples.
        time_embed: "sinusoidal" (of 1000 t, as DiT) or "fourier".

    ``self.config`` holds the constructor arguments, so ``DiT(**net.config)`` rebuilds it;
    ``DiT.preset("digits")`` / ``DiT.preset("32x32")`` build the configurations of
    ``DIT_PRESETS``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        patch_size: int = 2,
        hidden: int = 64,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        num_classes: int | None = None,
        time_embed: str = "sinusoidal",
    ):
        super().__init__()
        check_config_real("mlp_ratio", mlp_ratio, 0.0, float("inf"), "(0, inf)")
        self.config = dict(
            in_channels=check_int("in_channels", in_channels),
            image_size=check_int("image_size", image_size),
            patch_size=check_int("patch_size", patch_size),
            hidden=check_int("hidden", hidden),
            depth=check_int("depth", depth),
            num_heads=check_int("num_heads", num_heads),
            mlp_ratio=float(mlp_ratio),
            dropout=check_dropout(dropout),
            num_classes=check_num_classes(num_classes),
            time_embed=check_time_embed(time_embed),
        )
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} must be divisible by patch_size={patch_size}"
            )
        if hidden % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden={hidden}")
        if hidden % 4:
            raise ValueError(f"hidden={hidden} must be divisible by 4 (2-D sin-cos positions)")
        self.in_channels, self.image_size, self.patch_size = in_channels, image_size, patch_size
        self.num_classes = num_classes
        self.embed = nn.Conv2d(in_channels, hidden, patch_size, stride=patch_size)
        self.register_buffer("pos", sincos_2d(hidden, image_size // patch_size), persistent=False)
        embed_dim = 256 if time_embed == "sinusoidal" else hidden  # DiT: 256 frequencies
        self.cond = ConditionEmbedding(time_embed, embed_dim, hidden, num_classes)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.final = FinalLayer(hidden, patch_size * patch_size * in_channels)

    @classmethod
    def preset(cls, name: str, **overrides) -> DiT:
        """Build a named configuration of ``DIT_PRESETS``, with keyword overrides."""
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; known: {sorted(DIT_PRESETS)}")
        return cls(**{**DIT_PRESETS[name], **overrides})

    def tokens(self, x: Tensor) -> Tensor:
        """Patch embedding plus positions: (batch, C, S, S) -> (batch, (S/p)^2, hidden)."""
        h = self.embed(x).flatten(2).transpose(1, 2)
        return h + self.pos.to(h.dtype)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """x (batch, C, S, S), t (batch,) or scalar, y (batch,) long or None -> x's shape."""
        check_image(x, self.in_channels, self.image_size)
        c = self.cond(batch_time(t, x), check_labels(y, x))
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h, c)
        out = self.final(h, c)
        return unpatchify(out, self.patch_size, self.in_channels, self.image_size)
