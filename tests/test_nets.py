"""Score networks (scoresde/nets): shapes, dtypes, conditioning, configs and determinism.

References: Tancik et al. 2020 (Fourier features), Vaswani et al. 2017 / Ho et al. 2020 App. B
(sinusoidal embedding, U-Net), Perez et al. 2018 (FiLM), Ho & Salimans 2022 (null label).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from scoresde.nets import (
    NETWORKS,
    FiLM,
    GaussianFourierProjection,
    ResidualMLP,
    SinusoidalEmbedding,
    UNet,
)

F64 = torch.float64
SMALL_UNET = dict(channels=16, groups=4)  # fast variants of the default architecture


def _make(kind: str, **kwargs) -> nn.Module:
    """A small network and the event shape it expects."""
    if kind == "mlp":
        return ResidualMLP(**{"dim": 3, "hidden": 32, "depth": 2, "embed_dim": 16, **kwargs})
    return UNet(**{**SMALL_UNET, **kwargs})


def _event(net: nn.Module) -> tuple[int, ...]:
    if isinstance(net, ResidualMLP):
        return (net.dim,)
    return (net.in_channels, net.image_size, net.image_size)


def _perturb(net: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Add noise to every parameter, so zero-initialised layers (output, FiLM) become active."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=F64).to(p.dtype))
    return net


def _inputs(net: nn.Module, batch: int = 4, dtype=torch.float32, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *_event(net), generator=gen, dtype=F64).to(dtype)
    t = torch.rand(batch, generator=gen, dtype=F64).to(dtype)
    return x, t


KINDS = ["mlp", "unet"]


# --- shapes and dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("dim", [2, 16])
def test_mlp_output_shape_and_dtype(dim, dtype):
    net = _perturb(ResidualMLP(dim, hidden=64, depth=2)).to(dtype)
    x, t = _inputs(net, batch=5, dtype=dtype)
    out = net(x, t)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=1, image_size=8),
        dict(in_channels=3, image_size=16, attention_resolutions=(8, 4)),
        dict(in_channels=1, image_size=28),  # 28 -> 14 -> 7
        dict(in_channels=3, image_size=32, num_heads=2),
    ],
    ids=["8x8x1", "16x16x3", "28x28x1", "32x32x3"],
)
def test_unet_output_shape_and_dtype(kwargs, dtype):
    net = _perturb(UNet(**SMALL_UNET, num_res_blocks=1, **kwargs)).to(dtype)
    x, t = _inputs(net, batch=2, dtype=dtype)
    out = net(x, t)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", KINDS)
def test_output_is_zero_at_initialisation(kind):
    net = _make(kind)
    x, t = _inputs(net)
    assert torch.equal(net(x, t), torch.zeros_like(x))


@pytest.mark.parametrize("kind", KINDS)
def test_scalar_time_is_broadcast(kind):
    net = _perturb(_make(kind)).to(F64)
    x, _ = _inputs(net, dtype=F64)
    assert_close(net(x, 0.3), net(x, torch.full((x.shape[0],), 0.3, dtype=F64)))


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_input_shape_raises(kind):
    net = _make(kind)
    x, t = _inputs(net)
    with pytest.raises(ValueError, match="x must have shape"):
        net(x[..., :-1], t)
    with pytest.raises(ValueError, match="t must be"):
        net(x, t[:-1])


# --- gradients, time and class conditioning ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_trainable_parameter(kind):
    net = _perturb(_make(kind, num_classes=3))
    x, t = _inputs(net)
    net(x, t, torch.tensor([0, 1, 2, 3])).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("time_embed", ["fourier", "sinusoidal"])
@pytest.mark.parametrize("kind", KINDS)
def test_time_embedding_separates_times(kind, time_embed):
    net = _perturb(_make(kind, time_embed=time_embed)).to(F64)
    x, _ = _inputs(net, batch=1, dtype=F64)
    out_early, out_late = net(x, 0.1), net(x, 0.9)
    assert (out_early - out_late).abs().max() > 1e-3 * out_early.abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_class_conditioning_and_null_label(kind):
    num_classes = 4
    net = _perturb(_make(kind, num_classes=num_classes)).to(F64)
    x, t = _inputs(net, batch=3, dtype=F64)
    out_a = net(x, t, torch.tensor([0, 1, 2]))
    out_b = net(x, t, torch.tensor([3, 3, 3]))
    assert ((out_a - out_b).flatten(1).abs().amax(1) > 1e-6).all()
    null = torch.full((3,), num_classes, dtype=torch.long)
    assert torch.equal(net(x, t), net(x, t, null))


@pytest.mark.parametrize("kind", KINDS)
def test_unconditional_net_rejects_labels(kind):
    net = _make(kind)
    x, t = _inputs(net, batch=2)
    with pytest.raises(ValueError, match="num_classes=None"):
        net(x, t, torch.tensor([0, 1]))


# --- configs and checkpoints ------------------------------------------------------------------


@pytest.mark.parametrize(
    "net",
    [
        ResidualMLP(5, hidden=32, depth=3, time_embed="sinusoidal", num_classes=2, dropout=0.1),
        UNet(
            in_channels=3,
            image_size=16,
            channel_mults=(1, 2),
            attention_resolutions=(16,),
            num_classes=10,
            time_embed="fourier",
            **SMALL_UNET,
        ),  # fmt: skip
    ],
    ids=["mlp", "unet"],
)
def test_config_round_trip_rebuilds_identical_network(net):
    _perturb(net)
    config = json.loads(json.dumps(net.config))
    assert config == net.config  # a checkpoint's JSON compares equal to the live config
    rebuilt = NETWORKS[type(net).__name__](**config)
    assert rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    net.eval(), rebuilt.eval()
    x, t = _inputs(net)
    y = torch.tensor([0, 1, 1, 0])
    assert torch.equal(rebuilt(x, t, y), net(x, t, y))


def test_default_configs_match_constructor_signature():
    import inspect

    for cls in NETWORKS.values():
        net = cls(dim=2) if cls is ResidualMLP else cls()
        assert list(net.config) == list(inspect.signature(cls).parameters)


def test_networks_mapping_names_the_classes():
    assert NETWORKS == {"ResidualMLP": ResidualMLP, "UNet": UNet}


@pytest.mark.parametrize(
    "cls, kwargs, argument",
    [
        (UNet, dict(channels=12, groups=8), "groups"),
        (UNet, dict(image_size=10, channel_mults=(1, 2, 2)), "image_size"),
        (UNet, dict(image_size=28, channel_mults=(1, 2, 2, 2)), "image_size"),
        (UNet, dict(attention_resolutions=(16,)), "attention_resolutions"),
        (UNet, dict(channel_mults=()), "channel_mults"),
        (UNet, dict(channels=32, num_heads=3), "num_heads"),
        (UNet, dict(time_embed="learned"), "time_embed"),
        (UNet, dict(dropout=1.0), "dropout"),
        (UNet, dict(num_classes=0), "num_classes"),
        (ResidualMLP, dict(dim=0), "dim"),
        (ResidualMLP, dict(dim=2, embed_dim=7), "embed_dim"),
        (ResidualMLP, dict(dim=2, depth=True), "depth"),
        (ResidualMLP, dict(dim=2, time_embed="none"), "time_embed"),
    ],
)
def test_bad_config_raises_naming_the_argument(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls(**kwargs)


# --- batch independence -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_do_not_depend_on_other_samples(kind):
    net = _perturb(_make(kind, num_classes=2)).to(F64)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x, t = _inputs(net, batch=4, dtype=F64)
    y = torch.tensor([0, 1, 2, 1])
    other, _ = _inputs(net, batch=4, dtype=F64, seed=7)
    for train in (True, False):
        net.train(train)
        full = net(x, t, y)
        alone = torch.cat([net(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(4)])
        mixed = net(torch.cat([x[:2], 10 * other[2:]]), t, y)
        assert_close(alone, full)
        assert_close(mixed[:2], full[:2])


# --- embeddings -------------------------------------------------------------------------------


def test_fourier_features_are_seeded_buffers_independent_of_global_rng():
    torch.manual_seed(1)
    a = GaussianFourierProjection(64, seed=3)
    torch.manual_seed(2)
    b = GaussianFourierProjection(64, seed=3)
    state = torch.get_rng_state()
    c = GaussianFourierProjection(64, seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not advanced
    assert torch.equal(a.W, b.W) and not torch.equal(a.W, c.W)
    assert "W" in a.state_dict() and not list(a.parameters())
    assert_close(a.W.double().std(), torch.tensor(16.0, dtype=F64), rtol=0.3, atol=0)


def test_fourier_features_formula():
    emb = GaussianFourierProjection(8, scale=2.0).double()
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    angles = 2 * math.pi * t[:, None] * emb.W[None, :]
    out = emb(t)
    assert out.shape == (3, 8)
    assert_close(out, torch.cat([angles.sin(), angles.cos()], dim=1))


def test_networks_with_fourier_time_are_identical_across_global_seeds():
    torch.manual_seed(0)
    a = ResidualMLP(2, hidden=8, depth=1, embed_dim=8)
    torch.manual_seed(1)
    b = ResidualMLP(2, hidden=8, depth=1, embed_dim=8)
    assert torch.equal(a.cond.time.W, b.cond.time.W)


def test_sinusoidal_embedding_formula():
    emb = SinusoidalEmbedding(6, max_period=100.0, input_scale=1000.0)
    t = torch.tensor([0.0, 0.002], dtype=F64)
    out = emb(t)
    assert out.shape == (2, 6)
    assert_close(out[0], torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=F64))
    s = 2.0  # 1000 * 0.002
    freqs = torch.tensor([1.0, 100 ** (-1 / 3), 100 ** (-2 / 3)], dtype=F64)
    assert_close(out[1], torch.cat([(s * freqs).cos(), (s * freqs).sin()]))


@pytest.mark.parametrize("cls", [GaussianFourierProjection, SinusoidalEmbedding])
def test_embeddings_reject_odd_dim(cls):
    with pytest.raises(ValueError, match="dim"):
        cls(7)


def test_film_starts_as_identity_and_applies_scale_shift():
    film = FiLM(cond_dim=5, channels=3).double()
    x = torch.randn(2, 3, 4, 4, dtype=F64)
    c = torch.randn(2, 5, dtype=F64)
    assert torch.equal(film(x, c), x)
    _perturb(film)
    scale, shift = film.scale_shift(c)
    assert scale.shape == shift.shape == (2, 3)
    assert_close(film(x, c), x * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
    assert_close(film(x[:, :, 0, 0], c), x[:, :, 0, 0] * (1 + scale) + shift)
