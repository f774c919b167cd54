"""The ``scoresde`` command line: help on every flag, one-line errors for bad command lines,
sampling without --steps, class grids with guidance, own data (.npz keys, labels, scale)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import cli, data
from scoresde.checkpoint import load_checkpoint
from scoresde.cli import data as cli_data
from scoresde.cli.train import TRAIN_DEFAULTS
from scoresde.training import load_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "8", "--depth", "1", "--batch-size", "32", "--warmup", "0", "--quiet"]


def _train(out: Path, data: str = "two_moons", *extra: str) -> str:
    argv = ["train", "--data", data, "--out", str(out), "--steps", "3", "--n-data", "256"]
    assert cli.main([*argv, *TINY, *extra]) == 0
    return str(out / "checkpoint")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return _train(tmp_path_factory.mktemp("cli") / "run")


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> str:
    pytest.importorskip("sklearn")
    return _train(tmp_path_factory.mktemp("cli") / "digits", "digits", "--conditional")


def _fail(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, everything the user saw on stderr) of a command line that must fail."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    code = info.value.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # SystemExit("msg") prints msg to stderr and exits with 1
        return 1, err + code + "\n"
    return code, err


# ---------------------------------------------------------------------------------------------
# help


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_flag_has_help_with_its_default():
    parser = cli.build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {"train", "sample", "likelihood", "compare", "demo"}
    for name, p in subs.items():
        text = p.format_help()
        for action in p._actions:
            flag = "/".join(action.option_strings)
            assert action.help, f"scoresde {name} {flag} has no help"
            if action.required or isinstance(action, argparse._HelpAction):
                continue
            if action.default is False:  # a switch: off unless given
                continue
            formatted = p.formatter_class(name)._get_help_string(action)
            assert "default" in formatted, f"scoresde {name} {flag}: help does not state a default"
        assert "--threads" in text, f"scoresde {name} has no --threads"
    assert "dpm_solver" in subs["sample"].format_help()  # the solvers are listed
    assert "checkerboard" in subs["train"].format_help()  # and the toy data sets
    assert "one-minute" not in subs["demo"].format_help()


# ---------------------------------------------------------------------------------------------
# bad command lines: one 'scoresde: ...' line, exit 2 for usage errors and 1 for the rest


def _bad_lines(ckpt: str, tmp: Path) -> list[tuple[list[str], int, str]]:
    blocker = tmp / "a_file"
    blocker.write_text("x")
    truncated = tmp / "trunc"
    raw = Path(ckpt + ".safetensors").read_bytes()
    truncated.with_suffix(".safetensors").write_bytes(raw[: len(raw) // 2])
    two = tmp / "two.npz"
    np.savez(two, x=np.zeros((64, 2), np.float32), y=np.zeros((64, 2), np.float32))
    nan = tmp / "nan.npy"
    np.save(nan, np.full((64, 2), np.nan, np.float32))
    train = ["train", "--data", "two_moons", "--out", str(tmp / "t"), "--n-data", "256", *TINY]
    sample = [
        "sample",
        "--checkpoint",
        ckpt,
        "--out",
        str(tmp / "s.npy"),
        "--n",
        "8",
        "--steps",
        "2",
    ]
    like = ["likelihood", "--checkpoint", ckpt, "--data", "two_moons", "--n", "4"]
    compare = ["compare", "--problem", "ring", "--n", "50", "--out", str(tmp / "c")]
    cases = [
        (["nonsense"], 2, "invalid choice"),
        (["train", "--data", "two_moons"], 2, "--out"),
        ([*train, "--steps", "-5"], 2, "--steps"),
        ([*train, "--steps", "0"], 2, "--steps"),
        ([*train, "--steps", "ten"], 2, "--steps"),
        ([*train, "--batch-size", "0"], 2, "--batch-size"),
        ([*train, "--lr", "0"], 2, "--lr"),
        ([*train, "--lr", "nan"], 2, "--lr"),
        ([*train, "--ema-decay", "1.5"], 2, "--ema-decay"),
        ([*train, "--p-uncond", "1.5"], 2, "--p-uncond"),
        ([*train, "--log-every", "0"], 2, "--log-every"),
        ([*train, "--ckpt-every", "-1"], 2, "--ckpt-every"),
        ([*train, "--threads", "-1"], 2, "--threads"),
        ([*train, "--width", "0"], 2, "--width"),
        ([*train, "--n-data", "1"], 2, "--n-data"),
        ([*train, "--sde", "vpp"], 2, "--sde"),
        ([*train, "--data", "nonexistent"], 1, "unknown data"),
        ([*train, "--device", "nodevice"], 1, "--device"),
        ([*train, "--conditional"], 1, "--conditional needs class labels"),
        ([*train, "--data", str(two)], 1, "--data-key"),
        ([*train, "--data-key", "x"], 1, ".npz"),
        ([*train, "--data", str(two), "--data-key", "z"], 1, "no array 'z'"),
        ([*train, "--data", str(nan)], 1, "NaN"),
        ([*train, "--batch-size", "1000"], 1, "batch_size"),
        ([*train, "--out", str(blocker / "sub")], 1, str(blocker)),
        ([*sample, "--checkpoint", str(tmp / "missing")], 1, "checkpoint"),
        ([*sample, "--checkpoint", str(truncated)], 1, "trunc"),
        ([*sample, "--option", "shape=3"], 1, "--option cannot set shape"),
        ([*sample, "--option", "eta"], 1, "not key=value"),
        ([*sample, "--option", "order=7"], 1, "order"),
        ([*sample, "--solver", "nope"], 2, "--solver"),
        ([*sample, "--steps", "0"], 2, "--steps"),
        ([*sample, "--inpaint-mask", "top"], 1, "shape (1, 8, 8)"),
        ([*sample, "--n", "0"], 2, "--n"),
        ([*sample, "--out", str(tmp / "s.txt")], 1, ".npy"),
        ([*sample, "--out", str(blocker / "s.npy")], 1, str(blocker)),
        ([*sample, "--class", "3"], 1, "class-conditional"),
        ([*sample, "--class", "three"], 2, "--class"),
        ([*sample, "--guidance", "2"], 1, "--guidance needs --class"),
        ([*sample, "--guidance", "inf"], 2, "--guidance"),
        ([*like, "--tol", "0"], 2, "--tol"),
        ([*like, "--chunk", "0"], 2, "--chunk"),
        ([*like, "--n", "-1"], 2, "--n"),
        ([*compare, "--steps", "0,5"], 2, "--steps"),
        ([*compare, "--steps", "a,b"], 2, "--steps"),
        ([*compare, "--n", "1"], 2, "--n"),
        ([*compare, "--rtols", "-1"], 2, "--rtols"),
        ([*compare, "--reference-tol", "0"], 2, "--reference-tol"),
        ([*compare, "--metrics", "nope"], 1, "metric"),
        ([*compare, "--solvers", "nope"], 1, "unknown solver"),
        ([*compare, "--device", "nodevice"], 1, "--device"),
        (["demo", "--threads", "0"], 2, "--threads"),
        (["demo", "--n", "1"], 2, "--n"),
    ]
    if not torch.cuda.is_available():
        cases += [
            ([*train, "--device", "cuda"], 1, "CUDA is not available"),
            ([*sample, "--device", "cuda"], 1, "CUDA is not available"),
        ]
    return cases


def test_bad_command_lines_give_one_line_each(ckpt, tmp_path, capsys):
    failures = []
    for argv, status, needle in _bad_lines(ckpt, tmp_path):
        code, err = _fail(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        ok = (
            code == status
            and len(lines) == 1
            and lines[0].startswith("scoresde: ")
            and needle in lines[0]
            and "Traceback" not in err
        )
        if not ok:
            failures.append(f"{argv[0]} {' '.join(argv[-2:])}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)


def test_exit_status_and_stderr_of_the_real_command(ckpt, tmp_path):
    # Through a real process: the status the shell sees and nothing but one line on stderr.
    raw = Path(ckpt + ".safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(raw[:100])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SCORESDE_DEBUG", None)
    for argv, status in (
        (["sample", "--checkpoint", str(tmp_path / "t"), "--out", str(tmp_path / "x.npy")], 1),
        (["train", "--data", "two_moons", "--out", str(tmp_path), "--steps", "-5"], 2),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "scoresde.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == status, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("scoresde: ")


# ---------------------------------------------------------------------------------------------
# sampling


def test_sample_needs_no_steps(ckpt, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli.main(["sample", "--checkpoint", ckpt, "--out", str(out), "--n", "16"]) == 0
    assert out.stat().st_size > 0 and f"to {out}" in capsys.readouterr().out


def test_out_is_the_file_written(ckpt, tmp_path, capsys):
    base = ["sample", "--checkpoint", ckpt, "--steps", "3", "--n", "16"]
    for name in ("x.jpg", "x.npy", "x.svg"):
        out = tmp_path / name
        assert cli.main([*base, "--out", str(out)]) == 0
        assert out.is_file() and f"to {out} " in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg", "x.npy", "x.svg"]
    assert (tmp_path / "x.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG, not a PNG renamed
    assert np.load(tmp_path / "x.npy").shape == (16, 2)


def test_class_grid_with_guidance(digits_ckpt, tmp_path, capsys):
    base = ["sample", "--checkpoint", digits_ckpt, "--steps", "2", "--class", "all"]
    out = tmp_path / "grid.png"
    assert cli.main([*base, "--guidance", "3", "--n", "30", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert cli.main([*base, "--guidance", "3", "--n", "20", "--out", str(tmp_path / "g.npy")]) == 0
    assert np.load(tmp_path / "g.npy").shape == (20, 1, 8, 8)
    code, err = _fail([*base, "--n", "25", "--out", str(out)], capsys)
    assert code == 1 and "multiple of 10" in err
    code, err = _fail([*base[:-1], "10", "--n", "5", "--out", str(out)], capsys)
    assert code == 1 and "0..9" in err


# ---------------------------------------------------------------------------------------------
# own data


def test_npz_keys_and_labels(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = data.two_moons(256, generator=g).numpy()
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", points=x, classes=y, other=np.zeros((3, 3)))
    path = str(tmp_path / "d.npz")
    ckpt = _train(
        tmp_path / "run", path, "--data-key", "points", "--label-key", "classes", "--conditional"
    )
    meta = load_checkpoint(ckpt)[1]
    assert meta["net"]["config"]["num_classes"] == 2


def test_badly_scaled_data_warns_and_standardize_undoes_itself(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = 100 * data.two_moons(512, generator=g) + torch.tensor([300.0, -50.0])
    np.save(tmp_path / "big.npy", x.numpy())
    _train(tmp_path / "plain", str(tmp_path / "big.npy"))
    assert "--standardize" in capsys.readouterr().err
    ckpt = _train(tmp_path / "std", str(tmp_path / "big.npy"), "--standardize")
    assert "--standardize" not in capsys.readouterr().err
    st = load_checkpoint(ckpt)[1]["standardize"]
    assert np.allclose(st["mean"], x.double().mean(0).numpy())
    assert np.allclose(st["std"], x.double().std(0).numpy())
    out = tmp_path / "s.npy"
    argv = ["sample", "--checkpoint", ckpt, "--steps", "5", "--n", "400", "--out", str(out)]
    assert cli.main(argv) == 0
    # The file holds the model's samples mapped back to the data's units: x = z * std + mean.
    model, _ = load_model(ckpt)
    with torch.no_grad():
        z = sd.sample(
            model.sde, model, (400, 2), "dpm_solver", 5, generator=torch.Generator().manual_seed(0)
        )
    expected = z.samples.double() * torch.tensor(st["std"]) + torch.tensor(st["mean"])
    assert np.allclose(np.load(out), expected.numpy(), rtol=1e-5, atol=1e-3)


def test_transform_round_trip():
    x = torch.randn(50, 3, dtype=torch.float64) * 7 + 2
    meta = {"standardize": cli_data.standardize(x)}
    z = cli_data.transform(meta, x)
    assert torch.allclose(z.mean(0), torch.zeros(3).double(), atol=1e-12)
    assert torch.allclose(z.std(0), torch.ones(3).double())
    assert torch.allclose(cli_data.transform(meta, z, inverse=True), x)


# ---------------------------------------------------------------------------------------------
# progress and defaults


def test_compare_and_likelihood_report_progress(ckpt, tmp_path, capsys):
    argv = ["compare", "--problem", "ring", "--solvers", "ode_heun", "--steps", "5"]
    assert cli.main([*argv, "--n", "50", "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "reference solve" in err and "--threads 1" in err
    like = ["likelihood", "--checkpoint", ckpt, "--data", "two_moons", "--n", "4", "--tol", "1e-3"]
    assert cli.main(like) == 0
    captured = capsys.readouterr()
    assert "bits/dim" in captured.out and "likelihood: 4 samples" in captured.err


def test_image_data_get_the_digits_recipe(digits_ckpt):
    meta = load_checkpoint(digits_ckpt)[1]
    assert meta["net"]["class"] == "UNet" and meta["train"]["lr"] == 1e-3
    assert TRAIN_DEFAULTS["images"]["width"] == 16  # the docs/training.md recipe


def test_train_net_dit_on_digits_round_trips_and_samples(tmp_path, capsys):
    pytest.importorskip("sklearn")
    path = _train(tmp_path / "dit", "digits", "--conditional", "--net", "dit")
    model, meta = load_model(path)
    assert meta["net"]["class"] == "DiT" and isinstance(model.net, sd.nets.DiT)
    assert meta["net"]["config"]["hidden"] == 32 and meta["net"]["config"]["depth"] == 1
    assert meta["net"]["config"]["patch_size"] == 2 and meta["net"]["config"]["num_classes"] == 10
    argv = [
        "sample",
        "--checkpoint",
        path,
        "--steps",
        "2",
        "--n",
        "4",
        "--out",
        str(tmp_path / "s.npy"),
    ]
    assert cli.main([*argv, "--class", "3", "--guidance", "2"]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (4, 1, 8, 8) and np.isfinite(samples).all()


def test_train_net_must_fit_the_data(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--net dit does not fit"):
        cli.main(["train", "--data", "two_moons", "--out", str(tmp_path), "--net", "dit", *TINY])
