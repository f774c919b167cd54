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
    DiT,
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
    if kind == "dit":
        return DiT(**{"hidden": 32, "depth": 2, "num_heads": 2, **kwargs})
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


KINDS = ["mlp", "unet", "dit"]


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
        DiT(in_channels=3, image_size=16, patch_size=4, hidden=32, depth=2, num_classes=10),
    ],
    ids=["mlp", "unet", "dit"],
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
    assert NETWORKS == {"ResidualMLP": ResidualMLP, "UNet": UNet, "DiT": DiT}


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
        (DiT, dict(image_size=9), "image_size"),
        (DiT, dict(hidden=30, num_heads=4), "num_heads"),
        (DiT, dict(hidden=6, num_heads=1), "hidden"),
        (DiT, dict(patch_size=0), "patch_size"),
        (DiT, dict(mlp_ratio=0), "mlp_ratio"),
        (DiT, dict(num_classes=0), "num_classes"),
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


# --- DiT (Peebles & Xie 2023) -----------------------------------------------------------------


@pytest.mark.parametrize("preset, shape", [("digits", (1, 8, 8)), ("32x32", (3, 32, 32))])
def test_dit_presets_shapes_and_exact_zero_at_init(preset, shape):
    torch.manual_seed(0)
    net = DiT.preset(preset, num_classes=10, depth=2)  # fewer blocks: same shapes, faster
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, *shape, generator=gen)
    out = net(x, torch.rand(3, generator=gen), torch.tensor([0, 7, 10]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(x))


@pytest.mark.parametrize("p, channels, size", [(2, 1, 8), (4, 3, 32), (1, 2, 4)])
def test_dit_patchify_unpatchify_round_trip(p, channels, size):
    from scoresde.nets.dit import patchify, unpatchify

    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    tokens = patchify(x, p)
    assert tokens.shape == (2, (size // p) ** 2, p * p * channels)
    assert torch.equal(unpatchify(tokens, p, channels, size), x)
    # token k holds pixel block (k // g, k % g) in raster order, channels last
    g = size // p
    k = g + 1 if g > 1 else 0
    block = x[0, :, (k // g) * p : (k // g + 1) * p, (k % g) * p : (k % g + 1) * p]
    assert torch.equal(tokens[0, k], block.permute(1, 2, 0).reshape(-1))


def test_dit_patch_embedding_is_a_linear_map_of_patchify():
    from scoresde.nets.dit import patchify

    net = DiT(hidden=32, depth=1, num_heads=2).to(F64)
    x = torch.randn(2, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    w = net.embed.weight.permute(0, 2, 3, 1).reshape(32, -1)  # (hidden, p*p*C), channels last
    assert_close(net.tokens(x), patchify(x, 2) @ w.T + net.embed.bias + net.pos.to(F64))


def test_dit_blocks_are_the_identity_at_init():
    net = DiT(hidden=32, depth=3, num_heads=2, num_classes=4)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(5, 16, 32, generator=gen)
    c = torch.randn(5, 32, generator=gen)
    for block in net.blocks:
        assert torch.equal(block(h, c), h)


def test_dit_sincos_positions_are_distinct_and_fixed():
    from scoresde.nets.dit import sincos_2d

    net = DiT(hidden=32, depth=1, num_heads=2)
    pos = net.pos
    assert pos.shape == (16, 32) and "pos" not in net.state_dict()
    assert torch.cdist(pos, pos).add(torch.eye(16)).min() > 0.1
    # row r, col c: the first half embeds r, the second c; sin(0) = 0, cos(0) = 1 at (0, 0)
    assert torch.equal(pos[0], torch.cat([torch.zeros(8), torch.ones(8)] * 2))
    assert torch.equal(sincos_2d(32, 4), pos)


def test_dit_trains_out_of_its_zero_init():
    """The zero-initialised layers get gradients: one Adam step makes the output non-zero,
    and a second moves the blocks' residual branches (their gates are no longer 0)."""
    torch.manual_seed(0)
    net = DiT(hidden=32, depth=2, num_heads=2, num_classes=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(8, 1, 8, 8, generator=gen), torch.rand(8, generator=gen)
    y = torch.randint(0, 4, (8,), generator=gen)
    target = torch.randn(8, 1, 8, 8, generator=gen)
    for _ in range(2):
        opt.zero_grad()
        (net(x, t, y) - target).square().mean().backward()
        opt.step()
    assert net(x, t, y).abs().min() > 0
    assert net.final.linear.weight.abs().sum() > 0
    for block in net.blocks:
        assert block.ada.weight.abs().sum() > 0
        h = torch.randn(2, 16, 32, generator=gen)
        assert not torch.equal(block(h, torch.randn(2, 32, generator=gen)), h)


def test_dit_checkpoint_round_trip(tmp_path):
    import scoresde as sd
    from scoresde.model import ScoreModel
    from scoresde.training import TrainConfig, Trainer, load_model

    torch.manual_seed(0)
    net = DiT(hidden=32, depth=2, num_heads=2, num_classes=3)
    data = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(32) % 3
    config = TrainConfig(batch_size=8, log_every=1, ema_decay=0.5, p_uncond=0.2)
    trainer = Trainer(ScoreModel(net, sd.VPSDE(), "eps"), data, config, labels=labels)
    trainer.train(2, progress=False)
    path = trainer.save(tmp_path / "checkpoint")
    model, meta = load_model(path)
    assert meta["net"] == {"class": "DiT", "config": net.config}
    assert isinstance(model.net, DiT) and model.net.config == net.config
    x, t = data[:4], torch.full((4,), 0.5)
    for y in (torch.tensor([0, 1, 2, 3]), None):  # 3 is the null label, None means null
        assert torch.equal(model.net(x, t, y), trainer.ema.net(x, t, y))
    assert torch.equal(model.net(x, t), model.net(x, t, torch.full((4,), 3)))
    assert model.net(x, t).abs().max() > 0
    assert ckpt_event_shape(meta) == (1, 8, 8)


def ckpt_event_shape(meta):
    from scoresde.checkpoint import event_shape

    return event_shape(meta)


def test_presets_build_their_configs_and_reject_unknown_names():
    from scoresde.nets.dit import DIT_PRESETS
    from scoresde.nets.mlp import TABULAR_PRESET

    net = ResidualMLP.tabular(7, num_classes=2)
    assert net.config == {**ResidualMLP(7, num_classes=2).config, **TABULAR_PRESET}
    assert isinstance(net.blocks[0].dropout, nn.Dropout) and net.blocks[0].dropout.p == 0.1
    dit = DiT.preset("digits", depth=1)
    assert dit.config == {**DiT().config, **DIT_PRESETS["digits"], "depth": 1}
    with pytest.raises(ValueError, match="unknown DiT preset"):
        DiT.preset("64x64")
