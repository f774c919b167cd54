"""Crash safety of ``scoresde train --resume``: SIGKILL at random instants, then load and compare.

    python benchmarks/kill_resume.py --kills 40 --seed 0

A reference run (in this process, one thread) records the checkpoint file after every save. Then
``python -m scoresde.cli train ... --resume`` runs in a subprocess (one thread) and is SIGKILLed
after a random delay, over and over, each time resuming from what the last one left: the delay is
uniform between a run's start-up time (import, build, one step) and its expected end, start-up plus
the remaining share of the steps times one full run's training time. After each kill the checkpoint
must load, and its bytes must equal the reference's checkpoint of the same step. A run that finishes
before its kill ends an episode: its final checkpoint is compared with the reference's and the next
episode starts from an empty folder; so does a resume that fails (exit code != 0). The tiny net
saves every step, so some kills land while a save writes its file (counted by the temporary file
it leaves). Prints a Markdown table and the command.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import scoresde.training
from scoresde import cli
from scoresde.checkpoint import load_checkpoint

TRAIN = (
    "train --data two_moons --n-data 2000 --batch-size 64 --width 32 --depth 1 --warmup 10 "
    "--log-every 50 --ckpt-every 1 --threads 1 --quiet --seed 0"
).split()


def reference(out: Path, steps: int) -> dict[int, bytes]:
    """The checkpoint file of each saved step of one uninterrupted run, made in this process."""
    saved: dict[int, bytes] = {}
    save = scoresde.training.save_checkpoint

    def recording_save(path, tensors, meta):
        file = save(path, tensors, meta)
        saved[meta["step"]] = Path(file).read_bytes()
        return file

    scoresde.training.save_checkpoint = recording_save
    try:
        cli.main([*TRAIN, "--out", str(out), "--steps", str(steps)])
    finally:
        scoresde.training.save_checkpoint = save
    return saved


def launch(out: Path, steps: int) -> subprocess.Popen:
    """``scoresde train --resume`` in a subprocess; its stderr goes to ``OUT.stderr``."""
    argv = [*TRAIN, "--out", str(out), "--steps", str(steps), "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # -m imports from the working folder first: run where this process found scoresde, so both
    # use the same code whatever the caller's folder and PYTHONPATH
    code = Path(scoresde.training.__file__).parents[1]
    with open(out.with_suffix(".stderr"), "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "scoresde.cli", *argv],
            cwd=code,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def timed_run(out: Path, steps: int) -> float:
    start = time.perf_counter()
    if launch(out, steps).wait() != 0:
        raise SystemExit(f"an uninterrupted run failed:\n{out.with_suffix('.stderr').read_text()}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    ref = reference(root / "reference", args.steps)
    startup = timed_run(root / "startup", 1)  # import, build, one step and its save
    full = timed_run(root / "full", args.steps)
    print(f"start-up {startup:.2f} s, full run {full:.2f} s, {len(ref)} saves in the reference")
    print(flush=True)

    names = ["kills", "in_save", "present", "loadable", "bit_exact", "failed", "runs", "final"]
    counts = dict.fromkeys([*names, "leftover"], 0)
    seen_tmp: set[str] = set()
    episode, done = 0, 0  # done: the step of the last checkpoint seen
    out = root / f"episode{episode}"
    while counts["kills"] < args.kills:
        file = out / "checkpoint.safetensors"
        remaining = 1 - done / args.steps
        finished, returncode = True, 0  # killed after its final save: nothing is left to run
        if remaining > 0:
            proc = launch(out, args.steps)
            try:
                returncode = proc.wait(
                    timeout=rng.uniform(startup, startup + (full - startup) * remaining)
                )
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                finished = False
        tmp = {p.name for p in out.glob(".checkpoint.*") if p.name.endswith(".tmp")}
        if finished:
            if returncode == 0:
                final = out.joinpath("checkpoint.safetensors").read_bytes()
                counts["runs"] += 1
                counts["final"] += final == ref[args.steps]
                counts["leftover"] += len(tmp)
            else:
                counts["failed"] += 1
                err = out.with_suffix(".stderr").read_text()
                print(f"resume failed in episode {episode}: {err.strip()[-300:]}", flush=True)
            episode, done = episode + 1, 0
            out = root / f"episode{episode}"
            continue
        counts["kills"] += 1
        in_save = bool(tmp - seen_tmp)  # a save killed half-way left a new temporary file
        counts["in_save"] += in_save
        seen_tmp |= tmp
        note = f"kill {counts['kills']} (episode {episode}){', inside a save' if in_save else ''}"
        if not file.exists():
            print(f"{note}: no checkpoint yet", flush=True)
            continue
        counts["present"] += 1
        try:
            _, meta = load_checkpoint(file)
        except ValueError as err:
            print(f"{note}: unloadable checkpoint: {err}", flush=True)
            continue
        counts["loadable"] += 1
        done = meta["step"]
        exact = file.read_bytes() == ref[meta["step"]]
        counts["bit_exact"] += exact
        print(f"{note}: step {meta['step']}, {'bit-exact' if exact else 'DIFFERS'}", flush=True)

    print()
    print(
        "| kills | inside a save | checkpoint present | loadable | bit-exact vs uninterrupted "
        "| failed resumes | finished runs | finished bit-exact | temp files left at the end |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("| " + " | ".join(str(counts[k]) for k in [*names, "leftover"]) + " |")
    print(
        f"\n`python benchmarks/kill_resume.py --kills {args.kills} --steps {args.steps} "
        f"--seed {args.seed}` (work folder {root})"
    )


if __name__ == "__main__":
    main()
