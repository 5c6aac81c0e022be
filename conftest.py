"""Workspace-wide pytest hooks: seeding and the `gpu` marker's skip."""

from __future__ import annotations

import random

import numpy as np
import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seeds, so a failure reproduces."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds legacy-API users too
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass
