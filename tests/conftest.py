"""Shared pytest configuration.

- One intra-op thread for the whole run: the tests make many tiny tensor ops (oracle scores on
  (batch, K) tensors), for which OpenMP start-up costs far more than it saves, and it is ruinous
  when another process shares the cores.
- GPU-marked tests are skipped cleanly where CUDA is absent.
"""

import pytest
import torch


def pytest_configure(config):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
