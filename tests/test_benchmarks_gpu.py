"""``benchmarks/gpu.py --device cpu --smoke`` runs end to end (its tables, not its numbers): the
GPU speed sections of issue 21 stay runnable where no GPU is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_on_cpu():
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--smoke"]
    argv += ["--modes", "eager", "--threads", "1"]  # compiling is tested in test_compile.py
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "## train_speed" in out and "## sample_speed" in out
    for row in ("U-Net (smoke)", "DiT (smoke)", "scoresde ddim", "scoresde dpm_solver"):
        assert row in out
    assert "diffusers DDIMScheduler" in out and "diffusers DPMSolverMultistepScheduler" in out


def test_gpu_benchmark_refuses_cuda_sections_on_cpu():
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu"]
    argv += ["--sections", "training"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert proc.returncode == 2 and "runs only the sections" in proc.stderr
