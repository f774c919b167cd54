"""A time-conditioned classifier p_phi(y | x_t, t) for classifier guidance.

It is trained by ``scoresde.training.train_classifier`` and turned into the guidance term by
``scoresde.guidance.classifier_log_prob``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..validation import check_int
from .embeddings import ConditionEmbedding, batch_time
from .mlp import ResidualBlock


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
