"""Opt-in torch.compile and CUDA graphs: the options' checks, compiled == eager to float32
rounding on CPU (sampling and training), checkpoints unaffected; CUDA-graph runs on a GPU.

"To float32 rounding" is measured where a float64 run of the same computation exists (sampling
from a shared x_T with a deterministic solver): eager float32 is off the float64 result by its
own rounding error e, and the compiled float32 run must be within 2 e of it (both are float32
roundings of one computation; fusion only reorders the operations). Training draws its noise in
the data's dtype, so there the bound is a few float32 ulps per step (see the test).
"""

from __future__ import annotations

import copy

import pytest
import torch

import scoresde as sd
from scoresde import cli
from scoresde.checkpoint import load_checkpoint
from scoresde.compile import COMPILE_MODES, CUDAGraphScore, check_compile
from scoresde.data import checkerboard
from scoresde.model import ScoreModel
from scoresde.nets import ResidualMLP
from scoresde.training import TrainConfig, Trainer

DATA = checkerboard(1024, torch.Generator().manual_seed(0))
F64 = torch.float64


def tiny_model(sde=None, parameterization="eps", seed=0) -> ScoreModel:
    torch.manual_seed(seed)
    net = ResidualMLP(2, hidden=32, depth=2, embed_dim=16)
    return ScoreModel(net, sde or sd.VPSDE(), parameterization)


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# -- the options' checks ---------------------------------------------------------------------


def test_compile_option_values():
    assert check_compile(False) is None
    assert check_compile(True) == "default"
    for mode in COMPILE_MODES:
        assert check_compile(mode) == mode
    for bad in ("fast", 1, None, "Default"):
        with pytest.raises(ValueError, match="reduce-overhead"):  # the error lists the modes
            check_compile(bad)


def test_sample_refuses_bad_compile_and_cuda_graph_requests():
    sde = sd.VPSDE()
    score = sd.exact_score(sde, sd.GaussianMixture([[0.0, 0.0]], 1.0))
    with pytest.raises(ValueError, match="compile must be"):
        sd.sample(sde, score, (4, 2), steps=2, compile="fastest")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sd.sample(sde, score, (4, 2), steps=2, compile="reduce-overhead")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sd.sample(sde, score, (4, 2), steps=2, cuda_graph=True)  # no silent fallback on CPU
    with pytest.raises(ValueError, match="cuda_graph must be True or False"):
        sd.sample(sde, score, (4, 2), steps=2, cuda_graph="yes")
    for adaptive in ("ode_rk45", "scipy"):  # they choose their steps: nothing fixed to capture
        with pytest.raises(ValueError, match="fixed-step solver"):
            sd.sample(sde, score, (4, 2), adaptive, cuda_graph=True)


def test_cuda_graph_score_refuses_cpu_tensors():
    assert sd.COMPILE_MODES == COMPILE_MODES and sd.CUDAGraphScore is CUDAGraphScore
    graphed = CUDAGraphScore(lambda x, t: -x)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        graphed(torch.zeros(2, 3), torch.ones(2))


def test_train_config_and_trainer_refuse_bad_requests():
    with pytest.raises(ValueError, match="compile must be"):
        TrainConfig(compile="fastest")
    with pytest.raises(ValueError, match="cuda_graph must be True or False"):
        TrainConfig(cuda_graph=1)
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(cuda_graph=True, compile="max-autotune-no-cudagraphs")
    for cfg in (TrainConfig(cuda_graph=True), TrainConfig(compile="reduce-overhead")):
        with pytest.raises(ValueError, match="needs a CUDA device"):
            Trainer(tiny_model(), DATA, cfg)


# -- compiled == eager to float32 rounding, on CPU ---------------------------------------------


@pytest.mark.parametrize("solver", ["dpm_solver", "ode_heun"])
def test_compiled_sampling_equals_eager_to_float32_rounding(solver):
    sde = sd.VPSDE()
    model = tiny_model(sde).eval()
    model64 = copy.deepcopy(model).double()
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)

    def run(m, dtype, compile=False):
        with torch.no_grad():
            return sd.sample(sde, m, (256, 2), solver, steps=5, x_T=x_T.to(dtype), compile=compile)

    reference = run(model64, F64).samples
    eager = run(model, torch.float32)
    compiled = run(model, torch.float32, compile=True)
    assert compiled.nfe == eager.nfe
    err_eager = (eager.samples.double() - reference).abs().max()
    err_compiled = (compiled.samples.double() - reference).abs().max()
    assert 0 < err_eager < 1e-4  # the float32 rounding envelope is small and real
    assert err_compiled <= 2 * err_eager


def test_compiled_training_matches_eager_and_checkpoints_are_unchanged(tmp_path):
    """Compiled training follows eager training to float32 rounding, the checkpoint has the eager
    keys (no ``_orig_mod.``), and a compiled run resumed from a checkpoint continues bit for bit.

    Bound on the weights: an Adam step moves a weight by at most ~lr whatever the gradient, and a
    rounding-level change of the gradient changes that move by a relative O(u), u = 2^-24; over
    ``steps`` steps of weights of size ~1 the runs may part by a few ulps per step, so
    atol = 16 u per step (measured: 3.7e-7 after 6 steps, against 5.7e-6 allowed).
    """
    steps, half = 6, 3
    u = torch.finfo(torch.float32).eps / 2

    def trainer(out_dir=None, **cfg):
        config = TrainConfig(batch_size=64, log_every=1, warmup=2, lr=1e-2, **cfg)
        return Trainer(tiny_model(), DATA, config, out_dir=out_dir)

    eager, compiled = trainer(), trainer(compile=True)
    losses_e = eager.train(steps, progress=False)
    losses_c = compiled.train(steps, progress=False)
    for a, b in zip(losses_c, losses_e, strict=True):
        assert a == pytest.approx(b, rel=16 * u * steps)
    for m in ("model", "ema"):
        pairs = zip(params(getattr(compiled, m)), params(getattr(eager, m)), strict=True)
        for a, b in pairs:
            torch.testing.assert_close(a, b, rtol=0, atol=16 * u * steps)

    # Checkpoints: same keys as eager, loadable either way, and resume is exact.
    first = trainer(out_dir=tmp_path / "c", compile=True)
    first.train(half, progress=False)
    first.save()
    eager_first = trainer(out_dir=tmp_path / "e")
    eager_first.train(half, progress=False)
    eager_first.save()
    keys_c = set(load_checkpoint(tmp_path / "c" / "checkpoint")[0])
    assert keys_c == set(load_checkpoint(tmp_path / "e" / "checkpoint")[0])
    assert not any("_orig_mod" in k for k in keys_c)
    resumed = trainer(compile=True)
    resumed.load(tmp_path / "c" / "checkpoint")
    resumed.train(steps - half, progress=False)
    for a, b in zip(params(resumed.model), params(compiled.model), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(params(resumed.ema), params(compiled.ema), strict=True):
        assert torch.equal(a, b)
    eager_resumed = trainer()  # a compiled run's checkpoint loads into an eager trainer
    eager_resumed.load(tmp_path / "c" / "checkpoint")
    assert eager_resumed.step == half


def test_compiled_training_with_dropout_is_seeded_and_resumes_exactly(tmp_path):
    """Dropout inside the compiled region draws from the per-step seed: two compiled runs agree
    bit for bit, and one resumed from a checkpoint continues exactly."""

    def trainer():
        torch.manual_seed(0)
        net = ResidualMLP(2, hidden=32, depth=2, embed_dim=16, dropout=0.3)
        config = TrainConfig(batch_size=64, log_every=1, compile=True)
        return Trainer(ScoreModel(net, sd.VPSDE()), DATA, config, out_dir=tmp_path)

    straight, again, first = trainer(), trainer(), trainer()
    assert straight.train(4, progress=False) == again.train(4, progress=False)
    first.train(2, progress=False)
    first.save()
    resumed = trainer()
    resumed.load(tmp_path / "checkpoint")
    resumed.train(2, progress=False)
    for a, b, c in zip(
        params(straight.model), params(again.model), params(resumed.model), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_compiled_flow_matching_training_step():
    """The flow-matching loss accepts the compiled model (torch.compile's wrapper)."""
    sde = sd.RectifiedFlow()
    cfg = TrainConfig(batch_size=64, loss="fm")
    eager = Trainer(tiny_model(sde, "velocity"), DATA, cfg)
    compiled = Trainer(
        tiny_model(sde, "velocity"), DATA, TrainConfig(**{**vars(cfg), "compile": True})
    )
    a, b = eager.loss_at(0), compiled.loss_at(0)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=0)  # one forward: float32 rounding


def test_cli_compile_and_cuda_graph_flags(tmp_path):
    """``--compile`` trains and samples (checkpoint as without it); ``--cuda-graph`` on CPU stops
    with the ValueError's message, before any training."""
    out = tmp_path / "run"
    train = ["train", "--data", "two_moons", "--n-data", "500", "--batch-size", "64"]
    train += ["--width", "16", "--depth", "1", "--quiet", "--threads", "1", "--out", str(out)]
    assert cli.main([*train, "--steps", "3", "--compile"]) == 0
    meta = load_checkpoint(out / "checkpoint")[1]
    assert meta["train"]["compile"] == "default" and meta["step"] == 3
    npy = tmp_path / "s.npy"
    sample = ["sample", "--checkpoint", str(out / "checkpoint"), "--out", str(npy), "--n", "8"]
    assert cli.main([*sample, "--steps", "3", "--compile", "default"]) == 0
    for argv in ([*train, "--steps", "3", "--cuda-graph"], [*sample, "--cuda-graph"]):
        with pytest.raises(SystemExit, match="needs a CUDA device"):
            cli.main(argv)
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        cli.main([*sample, "--compile", "reduce-overhead"])


# -- CUDA graphs (GPU sessions) ------------------------------------------------------------------


def _unet_model(sde) -> ScoreModel:
    torch.manual_seed(0)
    net = sd.nets.UNet(in_channels=1, channels=16, image_size=8)
    return ScoreModel(net, sde).cuda().eval()


@pytest.mark.gpu
@pytest.mark.parametrize("solver", ["dpm_solver", "ancestral", "pc"])
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_sampling_equals_eager(solver, compile):
    """Replaying the captured network runs the same kernels on the same inputs: the samples equal
    eager ones to float32 rounding of one network call per step (cuDNN may pick another
    convolution algorithm under capture), and the NFE is counted as in eager."""
    sde = sd.VPSDE()
    model = _unet_model(sde)

    def run(cuda_graph, compile=False):
        g = torch.Generator(device="cuda").manual_seed(0)
        with torch.no_grad():
            return sd.sample(
                sde,
                model,
                (32, 1, 8, 8),
                solver,
                steps=10,
                device="cuda",
                generator=g,
                cuda_graph=cuda_graph,
                compile=compile,
            )

    eager, graphed = run(False), run(True, compile)
    assert graphed.nfe == eager.nfe
    torch.testing.assert_close(graphed.samples, eager.samples, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_graph_score_is_reused_across_calls():
    sde = sd.VPSDE()
    model = _unet_model(sde)
    graphed = CUDAGraphScore(model)
    x = torch.randn(8, 1, 8, 8, device="cuda")
    t = torch.full((8,), 0.5, device="cuda")
    with torch.no_grad():
        first = graphed(x, t)
        again = graphed(2 * x, t)  # a replay on new inputs, not a stale output
        assert len(graphed.graphs) == 1
        torch.testing.assert_close(first, model(x, t), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(again, model(2 * x, t), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("config", [{"cuda_graph": True}, {"compile": "reduce-overhead"}])
def test_cuda_graph_training_follows_the_eager_loss_trajectory(config):
    """Forward and backward replayed as CUDA graphs follow eager training to float32 rounding
    (the bound of the CPU test above: 16 ulps per step on weights of size ~1)."""
    steps = 20
    u = torch.finfo(torch.float32).eps / 2

    def run(**cfg):
        tc = TrainConfig(batch_size=64, log_every=1, warmup=2, lr=1e-2, **cfg)
        tr = Trainer(tiny_model(), DATA.cuda(), tc, device="cuda")
        return tr.train(steps, progress=False), params(tr.model)

    (eager, w_eager), (graphed, w_graphed) = run(), run(**config)
    for a, b in zip(graphed, eager, strict=True):
        assert a == pytest.approx(b, rel=16 * u * steps)
    for a, b in zip(w_graphed, w_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=16 * u * steps)
