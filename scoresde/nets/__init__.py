"""Score networks: time/class embeddings, a residual MLP for vectors, a U-Net
and a Diffusion Transformer (DiT) for images.

Every network is an ``nn.Module`` with ``forward(x, t, y=None) -> Tensor`` of x's shape and a
JSON-serialisable ``config`` dict of its constructor arguments, so ``NETWORKS[name](**config)``
rebuilds it. Networks know nothing of SDEs or solvers. ``NoisyClassifier`` (logits of
p(y | x_t, t), for classifier guidance) is not a score network and is not in ``NETWORKS``.
"""

from .classifier import NoisyClassifier
from .dit import DiT
from .embeddings import FiLM, GaussianFourierProjection, SinusoidalEmbedding
from .mlp import ResidualMLP
from .unet import UNet

NETWORKS = {"ResidualMLP": ResidualMLP, "UNet": UNet, "DiT": DiT}
"""Network classes by name, for rebuilding a net from a checkpoint's (class name, config)."""

__all__ = [
    "GaussianFourierProjection",
    "SinusoidalEmbedding",
    "FiLM",
    "ResidualMLP",
    "UNet",
    "DiT",
    "NoisyClassifier",
    "NETWORKS",
]
