"""Trainer: exact resume, EMA and warm-up recurrences, safe checkpoints, DDP on gloo, CLI."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import scoresde as sd
from scoresde import cli
from scoresde.checkpoint import load_checkpoint
from scoresde.data import checkerboard
from scoresde.model import ScoreModel
from scoresde.nets import ResidualMLP
from scoresde.training import TrainConfig, Trainer, load_model, train_config_from

DATA = checkerboard(4096, torch.Generator().manual_seed(0))


#: Reflow-style pairs for coupling="pairs": noise coupled to each example of DATA.
PAIRED_NOISE = torch.randn(DATA.shape, generator=torch.Generator().manual_seed(1))


def make_trainer(out_dir=None, seed=0, parameterization="eps", sde=None, **config) -> Trainer:
    torch.manual_seed(seed)
    net = ResidualMLP(2, hidden=32, depth=2, embed_dim=16)
    model = ScoreModel(net, sde or sd.VPSDE(), parameterization)
    cfg = TrainConfig(**{"batch_size": 64, "log_every": 10, "warmup": 5, **config})
    noise = PAIRED_NOISE if cfg.coupling == "pairs" else None
    return Trainer(model, DATA, cfg, out_dir=out_dir, noise=noise)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


RESUME_CASES = {
    "dsm": {},
    "dsm-cosine": {"decay_steps": 40},
    "fm": {"loss": "fm", "parameterization": "velocity"},
    "fm-ot": {"loss": "fm", "coupling": "ot", "parameterization": "velocity"},
    "fm-pairs": {"loss": "fm", "coupling": "pairs", "parameterization": "velocity"},
    "fm-rf": {"loss": "fm", "parameterization": "velocity", "sde": sd.RectifiedFlow()},
    "fm-eps": {"loss": "fm", "coupling": "ot", "decay_steps": 40},
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_continues_bit_for_bit(tmp_path, case):
    kw = RESUME_CASES[case]
    straight = make_trainer(**kw)
    straight.train(40, progress=False)

    first = make_trainer(tmp_path, **kw)
    first.train(20, progress=False)
    first.save()
    # a different initialisation, overwritten by the checkpoint
    resumed = make_trainer(seed=123, **kw)
    resumed.load(tmp_path / "checkpoint")
    assert resumed.step == 20
    resumed.train(20, progress=False)
    assert train_config_from(load_checkpoint(tmp_path / "checkpoint")[1]) == first.config
    for a, b in zip(params(straight.model), params(resumed.model), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(params(straight.ema), params(resumed.ema), strict=True):
        assert torch.equal(a, b)


def test_cosine_decay_follows_its_closed_form():
    # lr_k = lr min(1, (k+1)/w) (1 + cos(pi clip((k - w) / (D - w), 0, 1))) / 2
    # (Loshchilov & Hutter 2017, no restarts).
    tr = make_trainer(warmup=4, lr=1e-2, decay_steps=24)
    for k in range(30):
        tr.train_step()
        progress = min(1.0, max(0.0, (k - 4) / 20))
        expected = 1e-2 * min(1, (k + 1) / 4) * 0.5 * (1 + math.cos(math.pi * progress))
        assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-15)
    assert tr.optimizer.param_groups[0]["lr"] == 0.0  # decayed to zero and held there
    with pytest.raises(ValueError, match="decay_steps"):
        TrainConfig(warmup=10, decay_steps=10)


def test_ema_and_learning_rate_follow_their_recurrences():
    # EMA: e_{k+1} = d_k e_k + (1 - d_k) p_{k+1} with d_k = min(decay, (1 + k) / (10 + k));
    # lr_k = lr * min(1, (k + 1) / warmup). Checked against the trainer, step by step.
    tr = make_trainer(ema_decay=0.9, warmup=4, lr=1e-2)
    ema = params(tr.model)
    for k in range(12):
        tr.train_step()
        assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * min(1, (k + 1) / 4))
        d = min(0.9, (1 + k) / (10 + k))
        ema = [d * e + (1 - d) * p for e, p in zip(ema, params(tr.model), strict=True)]
        for e, got in zip(ema, params(tr.ema), strict=True):
            torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-7)


def test_loss_decreases_on_checkerboard():
    tr = make_trainer(lr=3e-3)
    losses = tr.train(200, progress=False)
    assert losses[-1] < 0.75 * losses[0]


def test_checkpoint_round_trip_and_model_rebuild(tmp_path):
    tr = make_trainer(tmp_path)
    tr.train(5, progress=False)
    path = tr.save()
    model, meta = load_model(path)
    assert meta["step"] == 5 and meta["net"]["class"] == "ResidualMLP"
    assert meta["sde"] == sd.VPSDE().config()
    x, t = DATA[:8], torch.full((8,), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), tr.ema(x, t), rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors", "loss.csv"]


@pytest.mark.parametrize(
    "field, values",
    [
        ("batch_size", [0, 1.5, True]),
        ("lr", [0, -1e-3, math.nan, math.inf, "1e-3"]),
        ("warmup", [-5, 2.0]),
        ("decay_steps", [-1]),
        ("grad_clip", [-1, math.nan, math.inf]),
        ("ema_decay", [1.5, 1.0, -0.1, math.nan]),
        ("weighting", ["sigma", None]),
        ("loss", ["flow", None]),
        ("coupling", ["sinkhorn"]),
        ("time_sampling", ["sobol"]),
        ("eps", [-0.5, 0, 1.0, math.nan]),
        ("p_uncond", [1.5, 1.0, -0.1]),
        ("seed", [-1, 0.5]),
        ("bf16", ["yes", 1]),
        ("log_every", [0]),
        ("ckpt_every", [-1]),
        ("sample_every", [-1]),
    ],
)
def test_every_config_field_is_checked_naming_it(field, values):
    for value in values:
        with pytest.raises(ValueError, match=f"^{field} must") as info:
            TrainConfig(**{field: value})
        assert repr(value) in str(info.value)


def test_config_edges_are_accepted_and_trainer_checks_need_the_data():
    TrainConfig(warmup=0, grad_clip=0, ema_decay=0, p_uncond=0, ckpt_every=0, sample_every=0)
    with pytest.raises(ValueError, match="batch_size"):
        make_trainer(batch_size=10_000)
    with pytest.raises(ValueError, match="p_uncond"):
        make_trainer(p_uncond=0.1)  # an unconditional net
    with pytest.raises(ValueError, match='coupling .ot. needs loss="fm"'):
        TrainConfig(coupling="ot")
    with pytest.raises(ValueError, match='noise= .reflow pairs. and coupling="pairs" go together'):
        Trainer(make_trainer().model, DATA, TrainConfig(loss="fm"), noise=PAIRED_NOISE)
    with pytest.raises(ValueError, match='noise= .reflow pairs. and coupling="pairs" go together'):
        Trainer(make_trainer().model, DATA, TrainConfig(loss="fm", coupling="pairs"))
    with pytest.raises(ValueError, match="noise must have the data's shape"):
        cfg = TrainConfig(loss="fm", coupling="pairs")
        Trainer(make_trainer().model, DATA, cfg, noise=PAIRED_NOISE[:10])
    with pytest.raises(ValueError, match="decay_steps must exceed warmup"):
        TrainConfig(warmup=10, decay_steps=5)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        make_trainer().train(-1)
    bad = DATA.clone()
    bad[17, 1] = math.nan
    with pytest.raises(ValueError, match="data must be finite: example 17"):
        Trainer(ScoreModel(ResidualMLP(2, hidden=8, depth=1), sd.VPSDE()), bad)


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_step_stops_training_and_keeps_the_last_checkpoint(tmp_path, where, grad_clip):
    # Step 7 goes non-finite; checkpoints every 5 steps, loss read every 10: the error comes at
    # step 10 naming step 7, the step-10 checkpoint is never written and step 5's stays.
    tr = make_trainer(tmp_path, ckpt_every=5, log_every=10, grad_clip=grad_clip)
    if where == "loss":
        loss_at = tr.loss_at
        tr.loss_at = lambda step: loss_at(step) * (math.nan if step == 7 else 1.0)
    else:  # a finite loss whose gradient overflows
        weight = next(tr.model.parameters())
        weight.register_hook(lambda g: g * (math.inf if tr.step == 7 else 1.0))
    with pytest.raises(sd.NonFiniteError, match="step 7 was NaN or inf"):
        tr.train(20, progress=False)
    assert tr.step == 10
    model, meta = load_model(tmp_path / "checkpoint")
    assert meta["step"] == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(sd.NonFiniteError):
        tr.save()


def test_progress_bar_shows_the_loss_and_one_rate(capsys):
    make_trainer().train(10, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "it/s" in err and "its=" not in err


# ---------------------------------------------------------------------------------------------
# DDP: two gloo ranks give the same update as one process averaging the two ranks' losses.


def _gmm_score():
    data = sd.GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64), 0.3)
    return sd.exact_score(sd.VPSDE(), data)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        with make_trainer(out_dir) as tr:
            assert (tr.rank, tr.world) == (rank, world)
            tr.train(6, progress=False)
            tr.save()
        with pytest.raises(RuntimeError, match="closed"):
            tr.train_step()
        # sharded sampling: each rank draws its slice with per-sample seeds, all gather
        res = sd.sample_sharded(
            sd.VPSDE(),
            _gmm_score(),
            (7, 2),
            seed=5,
            solver="ddim",
            steps=10,
            eta=1.0,
            dtype=torch.float64,
        )
        if rank == 0:
            torch.save(res.samples, f"{out_dir}/sharded.pt")
    finally:
        gc.collect()  # as Trainer.close does: cyclic garbage freed at exit can abort a gloo rank
        dist.destroy_process_group()


def test_ddp_on_gloo_matches_single_process_average(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model, meta = load_model(tmp_path / "checkpoint", ema=False)
    assert meta["world_size"] == 2 and meta["step"] == 6

    ref = make_trainer()
    ranks = []
    for r in range(2):  # the per-rank view: its shard of each epoch, its own noise seeds
        view = make_trainer()
        view.model, view.rank, view.world = ref.model, r, 2
        view.steps_per_epoch = len(range(r, DATA.shape[0], 2)) // view.config.batch_size
        ranks.append(view)
    ref.loss_at = lambda step: 0.5 * (ranks[0].loss_at(step) + ranks[1].loss_at(step))
    for _ in range(6):
        ref.train_step()
    for a, b in zip(params(model), params(ref.model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # sharded sampling equals one process drawing the whole batch with the same per-sample seeds
    whole = sd.sample(
        sd.VPSDE(),
        _gmm_score(),
        (7, 2),
        solver="ddim",
        steps=10,
        eta=1.0,
        dtype=torch.float64,
        seeds=list(range(5, 12)),
    ).samples
    assert torch.equal(torch.load(tmp_path / "sharded.pt"), whole)


def _train_argv(out, steps: int, *extra: str) -> list[str]:
    """``scoresde train`` on two moons with a small net: the CLI tests' common flags."""
    return [
        "train",
        "--data",
        "two_moons",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--quiet",
        "--n-data",
        "2000",
        "--batch-size",
        "64",
        "--width",
        "32",
        "--depth",
        "1",
        *extra,
    ]


def test_cli_train_with_a_seed_gives_bit_identical_checkpoints(tmp_path):
    # The network is built after seeding: the global generator's state before the call (moved
    # on between the runs here) does not matter, and another seed gives another checkpoint.
    files = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        torch.rand(5)
        assert cli.main(_train_argv(tmp_path / run, 15, "--seed", str(seed), "--threads", "1")) == 0
        files[run] = (tmp_path / run / "checkpoint.safetensors").read_bytes()
    assert files["a"] == files["b"] and files["a"] != files["c"]


def test_cli_train_under_torchrun_exits_cleanly(tmp_path):
    # The documented multi-process entry point, end to end: two gloo ranks, rank 0 writes, and
    # both processes exit 0 (the Trainer destroys the process group it initialised).
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.run(
        [*launcher, "--nproc_per_node=2", "-m", "scoresde.cli", *_train_argv(out, 20)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = load_checkpoint(out / "checkpoint")[1]
    assert (meta["world_size"], meta["step"]) == (2, 20)


# ---------------------------------------------------------------------------------------------


def test_cli_train_sample_likelihood(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_train_argv(out, 30)) == 0
    assert (out / "checkpoint.safetensors").exists() and (out / "loss.csv").exists()
    # --resume continues from the checkpoint up to --steps
    assert cli.main(_train_argv(out, 40, "--resume")) == 0
    assert load_checkpoint(out / "checkpoint")[1]["step"] == 40
    npy = tmp_path / "s.npy"
    assert (
        cli.main(
            [
                "sample",
                "--checkpoint",
                str(out / "checkpoint"),
                "--solver",
                "dpm_solver",
                "--steps",
                "5",
                "--option",
                "order=2",
                "--n",
                "50",
                "--out",
                str(npy),
            ]
        )
        == 0
    )
    x = np.load(npy)
    assert x.shape == (50, 2) and np.isfinite(x).all()
    assert (
        cli.main(
            [
                "likelihood",
                "--checkpoint",
                str(out / "checkpoint"),
                "--data",
                "two_moons",
                "--n",
                "4",
                "--tol",
                "1e-3",
            ]
        )
        == 0
    )
    assert "bits/dim" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "nonexistent", "--out", str(out)])
    with pytest.raises(SystemExit) as usage:  # a bad flag value is a usage error: exit 2
        cli.main(_train_argv(tmp_path / "bad", 5, "--ema-decay", "1.5"))
    assert usage.value.code == 2 and "--ema-decay: must be in [0, 1), got 1.5" in (
        capsys.readouterr().err
    )
    nan_data = tmp_path / "nan.npy"
    np.save(nan_data, np.array([[0.0, 1.0], [np.nan, 0.0]] * 64, dtype=np.float32))
    with pytest.raises(SystemExit, match="scoresde: data .* holds NaN or infinite values"):
        cli.main(_train_argv(tmp_path / "bad", 5, "--data", str(nan_data)))
    assert not (tmp_path / "bad").exists()
    # library errors reach the user as one line, not a traceback
    ckpt = str(out / "checkpoint")
    # no --steps: the solver's default steps (issue 20), not an error
    assert cli.main(["sample", "--checkpoint", ckpt, "--out", str(npy), "--n", "4"]) == 0
    with pytest.raises(SystemExit, match="no checkpoint"):
        cli.main(["sample", "--checkpoint", str(tmp_path / "missing"), "--out", str(npy)])
    with pytest.raises(SystemExit, match="scoresde: option 'eta' given to --option is not key"):
        cli.main(
            ["sample", "--checkpoint", ckpt, "--out", str(npy), "--steps", "5", "--option", "eta"]
        )


@pytest.mark.gpu
def test_bf16_training_step_on_gpu():
    torch.manual_seed(0)
    model = ScoreModel(ResidualMLP(2, hidden=32, depth=2), sd.VPSDE())
    tr = Trainer(model, DATA.cuda(), TrainConfig(batch_size=64, bf16=True), device="cuda")
    losses = tr.train(20, progress=False)
    assert all(np.isfinite(losses))


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["dsm", "fm"])
def test_training_steps_do_not_synchronise_with_the_host(loss):
    # CUDA's sync detector warns on every synchronising call; between two loss logs a step must
    # queue its kernels without waiting (batches indexed on the device, EMA and clipping fused).
    # Flow matching with the independent coupling too (coupling="ot" syncs: scipy on the host).
    import warnings

    sde, p = (sd.RectifiedFlow(), "velocity") if loss == "fm" else (sd.VPSDE(), "eps")
    model = ScoreModel(ResidualMLP(2, hidden=32, depth=2), sde, p)
    cfg = TrainConfig(batch_size=64, log_every=10**6, loss=loss)
    tr = Trainer(model, DATA.cuda(), cfg, device="cuda")
    tr.train(3, progress=False)  # one-off initialisation (optimizer state, first shuffle)

    def syncs(steps: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                tr.train(steps, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(30) == syncs(5)


@pytest.mark.parametrize("coupling", ["independent", "ot", "pairs"])
def test_a_flow_matching_step_is_flow_matching_loss_on_its_batch(coupling):
    """Trainer.loss_at(k) with loss="fm" == flow_matching_loss on batch k with step k's generator
    (and, for "pairs", the noise coupled to the batch's examples)."""
    from scoresde.training import _seed

    tr = make_trainer(loss="fm", coupling=coupling, parameterization="velocity")
    idx = tr._batch_indices(3)
    g = torch.Generator().manual_seed(_seed(tr.config.seed, 0, 3))
    noise = PAIRED_NOISE[idx] if coupling == "pairs" else None
    expected = sd.flow_matching_loss(
        tr.model.sde, tr.model, DATA[idx], coupling, noise=noise, generator=g
    )
    assert torch.equal(tr.loss_at(3), expected)


def test_flow_matching_training_lowers_the_loss_and_old_configs_mean_dsm():
    """200 steps of flow matching on the straight path lower the loss on 4096 fixed draws by
    more than 4 standard errors of the paired difference (the irreducible conditional variance
    of eps - x0 dominates the loss itself, so its logged values barely move)."""
    sde = sd.RectifiedFlow()
    tr = make_trainer(lr=3e-3, loss="fm", parameterization="velocity", sde=sde)

    def losses():
        g = torch.Generator().manual_seed(9)
        with torch.no_grad():
            return sd.flow_matching_loss(sde, tr.ema, DATA, generator=g, reduction="none")

    before = losses()
    tr.train(200, progress=False)
    gain = before - losses()
    assert float(gain.mean()) > 4 * float(gain.std()) / math.sqrt(len(gain))
    # a checkpoint written before flow matching has no "loss"/"coupling": it trained with DSM
    old = {k: v for k, v in vars(TrainConfig()).items() if k not in ("loss", "coupling")}
    assert train_config_from({"train": old}).loss == "dsm"


def test_cli_train_flow_matching_resumes_to_the_same_checkpoint(tmp_path):
    """``scoresde train --loss fm --coupling ot --sde rf``: the config (loss, coupling, the
    velocity parameterization by default) is in the checkpoint, and 10 steps + ``--resume`` to 20
    write the same file, byte for byte, as 20 steps straight."""
    flags = ("--sde", "rf", "--loss", "fm", "--coupling", "ot", "--threads", "1")
    assert cli.main(_train_argv(tmp_path / "straight", 20, *flags)) == 0
    assert cli.main(_train_argv(tmp_path / "resumed", 10, *flags)) == 0
    assert cli.main(_train_argv(tmp_path / "resumed", 20, *flags, "--resume")) == 0
    files = [
        (tmp_path / r / "checkpoint.safetensors").read_bytes() for r in ("straight", "resumed")
    ]
    assert files[0] == files[1]
    model, meta = load_model(tmp_path / "straight" / "checkpoint")
    assert (meta["train"]["loss"], meta["train"]["coupling"]) == ("fm", "ot")
    assert meta["parameterization"] == "velocity" and meta["sde"] == sd.RectifiedFlow().config()
    assert train_config_from(meta).coupling == "ot"
    with pytest.raises(SystemExit, match="--coupling ot needs --loss fm"):
        cli.main(_train_argv(tmp_path / "bad", 5, "--coupling", "ot"))
