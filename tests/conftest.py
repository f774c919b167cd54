"""Shared pytest configuration.

- One intra-op thread for the whole run: the tests make many tiny tensor ops (oracle scores on
  (batch, K) tensors), for which OpenMP start-up costs far more than it saves, and it is ruinous
  when another process shares the cores.
- GPU-marked tests are skipped cleanly where CUDA is absent.
- The shared test data (``from conftest import SDES, GAUSS, RING, fitted_slope``): the three SDEs
  with their default parameters, the two exact-oracle targets the solver tests use and the
  log-log slope fit of the order tests, defined once instead of in every file.
"""

import math

import numpy as np
import pytest
import torch

import scoresde as sd

F64 = torch.float64
#: Song et al.'s three SDEs with their default parameters, and the rectified-flow path.
SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(), "rf": sd.RectifiedFlow()}
#: One anisotropic 3-D Gaussian: the reverse SDE with its exact score is linear and the PF-ODE's
#: flow map is known in closed form (``sd.gaussian_flow_map(sde, GAUSS_MEAN, GAUSS_STD)``).
GAUSS_MEAN = torch.tensor([[1.0, -0.5, 2.0]], dtype=F64)
GAUSS_STD = torch.tensor([[0.5, 0.3, 1.5]], dtype=F64)
GAUSS = sd.GaussianMixture(GAUSS_MEAN, GAUSS_STD)
#: Eight Gaussians of std 0.2 on a ring of radius 2: a multimodal 2-D target.
RING_ANGLES = 2 * math.pi * torch.arange(8, dtype=F64) / 8
RING_MEANS = 2 * torch.stack([RING_ANGLES.cos(), RING_ANGLES.sin()], 1)
RING_STD = 0.2
RING = sd.GaussianMixture(RING_MEANS, RING_STD)


def fitted_slope(step_sizes, errors, floor: float = 0.0) -> float:
    """Least-squares slope of log2(error) against log2(step size), over the errors above
    ``floor`` (float64 round-off, not truncation error; at least three must be left)."""
    keep = [(h, e) for h, e in zip(step_sizes, errors, strict=True) if e > floor]
    assert len(keep) >= 3, f"too few errors above the floor {floor}: {errors}"
    h, e = np.log2(np.array(keep, dtype=float)).T
    return float(np.polyfit(h, e, 1)[0])


def pytest_configure(config):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
