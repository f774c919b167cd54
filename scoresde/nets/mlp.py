"""Residual MLP score network for vector data, event shape (dim,)."""

from __future__ import annotations

from torch import Tensor, nn

from .embeddings import (
    ConditionEmbedding,
    FiLM,
    batch_time,
    check_dropout,
    check_even,
    check_int,
    check_labels,
    check_num_classes,
    check_time_embed,
)

TABULAR_PRESET = dict(hidden=512, depth=4, dropout=0.1)
"""``ResidualMLP.tabular``: wider than the 2-D default, with dropout against overfitting small
tables; every block is pre-LayerNorm already. Tabular diffusion (e.g. TabDDPM, Kotelnikov et al.
2023) likewise trains a plain MLP on per-column normalised features."""


class ResidualBlock(nn.Module):
    """Pre-norm residual block: x + Linear(Dropout(SiLU(Linear(SiLU(FiLM(LayerNorm(x), c)))))).

    The pre-activation ordering of He et al. 2016 ("Identity Mappings in Deep Residual Networks",
    Fig. 4e) with FiLM conditioning after the norm (Dhariwal & Nichol 2021, Sec. 3). The norm has
    no affine parameters of its own: FiLM supplies them, per sample.

    Shapes: x (batch, hidden), c (batch, cond_dim) -> (batch, hidden).
    """

    def __init__(self, hidden: int, cond_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = FiLM(cond_dim, hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = nn.functional.silu(self.film(self.norm(x), c))
        h = self.fc2(self.dropout(nn.functional.silu(self.fc1(h))))
        return x + h


class ResidualMLP(nn.Module):
    """Time- (and optionally class-) conditional residual MLP: (x, t, y) -> tensor of x's shape.

    x (batch, dim) -> Linear -> ``depth`` residual blocks conditioned by FiLM on
    c = SiLU(MLP(embed(t)) + E[y]) -> LayerNorm -> SiLU -> Linear (zero-initialised, so the
    network outputs 0 at initialisation). What the output means (noise, score, x0, v) is set by
    the wrapping ``ScoreModel``, not here.

    Args:
        dim: event size of the data.
        hidden: width of the residual stream and of the conditioning vector.
        depth: number of residual blocks.
        time_embed: "fourier" (Gaussian Fourier features of t, scale 16) or "sinusoidal"
            (of 1000 t).
        embed_dim: size of the raw time embedding (even).
        num_classes: number of classes for class conditioning, or None. Label ``num_classes``
            is the null label; ``y=None`` in ``forward`` means the null label for all samples.
        dropout: dropout probability inside the residual blocks.

    ``self.config`` holds the constructor arguments, so ``ResidualMLP(**net.config)`` rebuilds it.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 4,
        time_embed: str = "fourier",
        embed_dim: int = 128,
        num_classes: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config = dict(
            dim=check_int("dim", dim),
            hidden=check_int("hidden", hidden),
            depth=check_int("depth", depth),
            time_embed=check_time_embed(time_embed),
            embed_dim=check_even("embed_dim", embed_dim),
            num_classes=check_num_classes(num_classes),
            dropout=check_dropout(dropout),
        )
        self.dim, self.num_classes = dim, num_classes
        self.cond = ConditionEmbedding(time_embed, embed_dim, hidden, num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, hidden, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @classmethod
    def tabular(cls, dim: int, **overrides) -> ResidualMLP:
        """Preset for tabular vectors: ``TABULAR_PRESET`` (wider, dropout), with overrides.

        Meant for data standardised per column first (``scoresde train --net tabular`` does it
        and stores the mean/std in the checkpoint, so samples come back in the data's scale).
        """
        return cls(dim, **{**TABULAR_PRESET, **overrides})

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """x (batch, dim), t (batch,) or scalar, y (batch,) long or None -> (batch, dim)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        c = self.cond(batch_time(t, x), check_labels(y, x))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(nn.functional.silu(self.out_norm(h)))
