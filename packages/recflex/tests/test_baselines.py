"""Baselines agree with the reference on the CPU (FBGEMM/TorchRec when they import)."""

from __future__ import annotations

import pytest

from recflex import baselines
from recflex.inputs import pack
from recflex.reference import embedding_bag_reference
from recflex.testing import assert_close, random_batch, tables_for


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_baseline_matches_reference(name):
    reason = baselines.available(name)
    if reason:
        pytest.skip(reason)
    rows = [3, 50, 7, 1, 20, 9, 11, 4, 30, 2, 8, 16]  # 12 tables: t1 vs t11 names
    dims = [4, 8, 16, 4, 32, 8, 4, 64, 8, 4, 16, 8]
    tables = tables_for(rows, dims)
    prepare, run = baselines.build(name, tables)
    for b in (1, 9):
        p = pack(random_batch(rows, b, absent=(2,), seed=b))
        assert_close(run(prepare(p)), embedding_bag_reference(tables, p))


def test_unknown_baseline():
    with pytest.raises(ValueError, match="expected one of"):
        baselines.available("tf")
