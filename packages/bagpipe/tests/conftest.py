"""Shared fixtures: small skewed data, one thread per torch op (2-core CI)."""

from __future__ import annotations

import pytest
import torch

from bagpipe.synthetic import synthetic_source, write_criteo_dir

SIZES = [40] * 8 + [200] * 4  # 12 tables, 1120 rows: hot rows recur, many rows do not


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def source():
    return synthetic_source(3200, SIZES, global_batch=64, seed=3)


@pytest.fixture(scope="session")
def criteo_dir(tmp_path_factory):
    return write_criteo_dir(tmp_path_factory.mktemp("data") / "criteo", 2048,
                            [30] * 20 + [150] * 6, seed=1)  # fmt: skip
