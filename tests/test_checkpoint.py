"""Checkpoints: one commit point under faults at every step of a save, checksums, forged configs."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
import torch
from safetensors.torch import save as save_bytes
from test_training import make_trainer, params

import scoresde as sd
import scoresde.checkpoint as ckpt
from scoresde.checkpoint import (
    META_KEY,
    load_checkpoint,
    save_checkpoint,
    upgrade_checkpoint,
)
from scoresde.model import ScoreModel
from scoresde.nets import ResidualMLP
from scoresde.training import TrainConfig, Trainer, load_model

# -- faults at each step of a save -------------------------------------------------------------


class Killed(BaseException):
    """The process dying: raised at the fault and by every system call after it."""


class FaultyOS:
    """Stands in for the ``os`` module inside ``scoresde.checkpoint``: records the calls a save
    makes (``trace``) and makes call number ``fail_at`` fail, either with ENOSPC (the save's
    own clean-up then runs) or as a kill (a torn half-write for ``write``; no call after it
    succeeds, so nothing is cleaned up)."""

    OPS = ("open", "write", "fsync", "close", "replace", "unlink")

    def __init__(self, fail_at: int | None = None, how: str = "enospc"):
        self.fail_at, self.how, self.trace, self.dead = fail_at, how, [], False

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.OPS:
            return real

        def call(*args):
            if self.dead:
                raise Killed(name)
            if name != "unlink":  # the clean-up after a fault is not itself a step of the save
                self.trace.append(name)
            if len(self.trace) - 1 == self.fail_at and name != "unlink":
                if self.how == "enospc":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.dead = True
                if name == "write":
                    fd, data = args
                    real(fd, data[: len(data) // 2])
                raise Killed(name)
            return real(*args)

        return call


SAVE_STEPS = ["open", "write", "fsync", "close", "replace", "open", "fsync", "close"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 30-step run; a trainer at step 20; the files of its saves at 10 and 20."""
    out = tmp_path_factory.mktemp("runs")
    straight = make_trainer()
    straight.train(30, progress=False)
    tr = make_trainer()
    tr.train(10, progress=False)
    old = tr.save(out / "old").read_bytes()
    tr.train(10, progress=False)
    new = tr.save(out / "new").read_bytes()
    return straight, tr, old, new


def test_a_save_is_write_fsync_rename_fsync_dir(tmp_path, monkeypatch, runs):
    # The file's bytes are on disk before the rename (the one commit point) and the directory
    # entry after it; the fault-injection test below interrupts each of these calls.
    fake = FaultyOS()
    monkeypatch.setattr(ckpt, "os", fake)
    runs[1].save(tmp_path / "checkpoint")
    assert fake.trace == SAVE_STEPS


@pytest.mark.parametrize("how", ["enospc", "kill"])
def test_a_save_interrupted_at_any_step_leaves_the_old_or_the_new_checkpoint(
    tmp_path, monkeypatch, runs, how
):
    straight, tr, old, new = runs
    file = tmp_path / "checkpoint.safetensors"
    for fail_at in range(len(SAVE_STEPS)):
        file.write_bytes(old)
        with monkeypatch.context() as m, open(file, "rb"):  # the old file held open meanwhile
            m.setattr(ckpt, "os", FaultyOS(fail_at, how))
            with pytest.raises(OSError if how == "enospc" else Killed):
                tr.save(file)
        committed = fail_at > SAVE_STEPS.index("replace")
        assert file.read_bytes() == (new if committed else old), (how, fail_at)
        # resuming from whichever checkpoint survived ends bit-exact with the straight run
        resumed = make_trainer(seed=123)
        resumed.load(file)
        assert resumed.step == (20 if committed else 10)
        resumed.train(30 - resumed.step, progress=False)
        for a, b in zip(
            params(straight.model) + params(straight.ema),
            params(resumed.model) + params(resumed.ema),
            strict=True,
        ):
            assert torch.equal(a, b), (how, fail_at)
        leftovers = sorted(p.name for p in tmp_path.iterdir() if p != file)
        if how == "enospc" or committed or fail_at == 0:
            assert leftovers == [], (how, fail_at)
        else:  # a killed save leaves its temporary file; the next save removes it
            assert len(leftovers) == 1 and leftovers[0].endswith(".tmp"), leftovers
            tr.save(file)
            assert [p.name for p in tmp_path.iterdir()] == [file.name]
            assert file.read_bytes() == new


def test_checkpoint_files_respect_the_umask(tmp_path):
    # A checkpoint is an ordinary file: 0666 less the umask (mkstemp's 0600 surprised users).
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck", {"w": torch.ones(3)}, {"step": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no sidecar any more


# -- checksums ---------------------------------------------------------------------------------


def _small_checkpoint(tmp_path):
    tensors = {"a": torch.linspace(-1, 1, 12).reshape(3, 4), "b": torch.arange(5.0)}
    path = save_checkpoint(tmp_path / "ck", tensors, {"step": 3, "sde": sd.VPSDE().config()})
    return path, path.read_bytes(), tensors


def test_round_trip_returns_the_saved_tensors_and_config(tmp_path):
    path, _, tensors = _small_checkpoint(tmp_path)
    got, meta = load_checkpoint(tmp_path / "ck")
    assert got.keys() == tensors.keys()
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert meta["step"] == 3 and meta["sde"] == sd.VPSDE().config()


def test_every_flipped_bit_in_the_header_is_refused_naming_the_file(tmp_path):
    path, data, _ = _small_checkpoint(tmp_path)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for pos in range(header_end):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[pos] ^= bit
            path.write_bytes(flipped)
            with pytest.raises(ValueError, match=str(path)):
                load_checkpoint(path)


def test_every_flipped_byte_in_the_tensor_data_fails_the_checksum(tmp_path):
    path, data, _ = _small_checkpoint(tmp_path)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for pos in range(header_end, len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        path.write_bytes(flipped)
        with pytest.raises(ValueError, match=f"{path}: checksum mismatch"):
            load_checkpoint(path)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path, data, tensors = _small_checkpoint(tmp_path)
    for n in (0, 7, 8, 100, len(data) - 1):
        path.write_bytes(data[:n])
        with pytest.raises(ValueError, match=f"{path} is not a readable safetensors file"):
            load_checkpoint(path)
    path.write_bytes(save_bytes(tensors))
    with pytest.raises(ValueError, match="not a scoresde checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def _rewrite_header(path, edit, rehash: bool):
    """Rewrite a checkpoint's config with ``edit(meta)``, keeping the stored checksum unless
    ``rehash``: a hand edit, or a forgery that recomputes the hash (save_checkpoint does)."""
    tensors, meta = load_checkpoint(path)
    stored = ckpt.content_hash(meta, tensors)  # verified by the load
    edit(meta)
    if rehash:
        save_checkpoint(path, tensors, meta)
    else:
        metadata = {META_KEY: json.dumps({**meta, "sha256": stored})}
        path.write_bytes(save_bytes(tensors, metadata=metadata))


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(step=7),
        lambda m: m.update(sde=sd.VESDE().config()),
        lambda m: m.update(parameterization="x0"),
    ],
    ids=["step", "sde", "parameterization"],
)
def test_a_hand_edited_config_fails_the_checksum(tmp_path, runs, edit):
    path = runs[1].save(tmp_path / "checkpoint")
    _rewrite_header(path, edit, rehash=False)
    with pytest.raises(ValueError, match=f"{path}: checksum mismatch"):
        load_model(path)


def test_old_format_is_a_clear_error_and_can_be_upgraded(tmp_path):
    tensors = {"w": torch.ones(3)}
    meta = {"format": ckpt.FORMAT, "version": 1, "step": 4}
    path = tmp_path / "old.safetensors"
    path.write_bytes(save_bytes(tensors, metadata={META_KEY: json.dumps(meta)}))
    with pytest.raises(ValueError, match="older scoresde.*version 1.*upgrade_checkpoint"):
        load_checkpoint(path)
    upgrade_checkpoint(path)
    got, meta = load_checkpoint(path)
    assert (
        meta["step"] == 4
        and meta["version"] == ckpt.VERSION
        and torch.equal(got["w"], tensors["w"])
    )


# -- configs that disagree with the tensors or the trainer ------------------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(step=7), "config says step 7 but the optimiser state optim.0.step"),
        (lambda m: m.update(step=0), r"missing \[\], unexpected \['optim.0.exp_avg'"),
        (lambda m: m.update(step="20"), "step must be an integer"),
        (lambda m: m.update(sde=sd.VESDE().config()), "sde .* differs"),
        (lambda m: m.update(parameterization="x0"), "parameterization 'x0' differs"),
        (lambda m: m.pop("net"), "net None differs"),
        (lambda m: m["train"].update(loss="fm"), "trained with loss 'fm', this trainer's config"),
        (
            lambda m: m["train"].update(coupling="ot"),
            "trained with coupling 'ot', this trainer's config has 'independent'",
        ),
    ],
    ids=["step", "step-zero", "step-type", "sde", "parameterization", "no-net", "loss", "coupling"],
)
def test_resume_rejects_a_rehashed_config_that_disagrees(tmp_path, runs, edit, message):
    path = runs[1].save(tmp_path / "checkpoint")
    _rewrite_header(path, edit, rehash=True)
    with pytest.raises(ValueError, match=message):
        make_trainer().load(path)


def _rename(path, old: str, new: str) -> None:
    tensors, meta = load_checkpoint(path)
    tensors[new] = tensors.pop(old)
    save_checkpoint(path, tensors, meta)


@pytest.mark.parametrize(
    "old, new",
    [("optim.0.exp_avg", "optim.0.exp_avgX"), ("model.net.out.weight", "model.net.out.w")],
)
def test_resume_names_a_renamed_tensor(tmp_path, runs, old, new):
    path = runs[1].save(tmp_path / "checkpoint")
    _rename(path, old, new)
    with pytest.raises(ValueError, match=rf"{path}.*missing \['{old}'\].*unexpected \['{new}'\]"):
        make_trainer().load(path)


def test_resume_rejects_a_mis_shaped_optimiser_state(tmp_path, runs):
    path = runs[1].save(tmp_path / "checkpoint")
    tensors, meta = load_checkpoint(path)
    tensors["optim.1.exp_avg_sq"] = tensors["optim.1.exp_avg_sq"][:1]
    save_checkpoint(path, tensors, meta)
    with pytest.raises(ValueError, match=r"optim.1.exp_avg_sq has shape"):
        make_trainer().load(path)


def test_loading_never_rebuilds_unknown_classes_or_mismatched_weights(tmp_path, runs):
    path = runs[1].save(tmp_path / "checkpoint")
    tensors, meta = load_checkpoint(path)
    # an unknown network class is refused: nets are rebuilt from a fixed table, never unpickled
    save_checkpoint(
        tmp_path / "evil", tensors, {**meta, "net": {"class": "os.system", "config": {}}}
    )
    with pytest.raises(ValueError, match="unknown network class"):
        load_model(tmp_path / "evil")
    save_checkpoint(tmp_path / "bad", {"ema.net.out.weight": torch.ones(1)}, meta)
    with pytest.raises(ValueError, match="do not match"):
        load_model(tmp_path / "bad")
    other = Trainer(
        ScoreModel(ResidualMLP(2, hidden=16, depth=1), sd.VPSDE()),
        runs[0].data,
        TrainConfig(batch_size=64),
    )
    with pytest.raises(ValueError, match="net .* differs"):
        other.load(path)
