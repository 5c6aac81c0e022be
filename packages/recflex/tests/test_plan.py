"""Plans: JSON with table shapes, shape checks, the heuristic default plan."""

from __future__ import annotations

import json

import pytest

from rec_common import workloads
from recflex import models
from recflex.module import default_plan_for
from recflex.plan import Plan, default_plan, default_schedule
from recflex.schedules import Schedule


def test_save_load_roundtrip(tmp_path):
    p = default_plan([4, 16, 128], [10, 20, 30], [1, 20, None], occupancy=3)
    path = p.save(tmp_path / "plan.json")
    q = Plan.load(path, rows=[10, 20, 30], dims=[4, 16, 128])
    assert q == p and q.occupancy == 3 and q.names == ("f0", "f1", "f2")
    d = json.loads(path.read_text())
    assert d["features"][1]["rows"] == 20 and d["features"][1]["dim"] == 16


def test_load_for_other_shapes_names_the_feature(tmp_path):
    path = default_plan([4, 16, 8], [10, 20, 30]).save(tmp_path / "p.json")
    with pytest.raises(
        ValueError, match=r"feature 2 \('f2'\) has 31 rows, the plan was made for 30"
    ):
        Plan.load(path, rows=[10, 20, 31], dims=[4, 16, 8])
    with pytest.raises(ValueError, match=r"feature 1 \('f1'\) has dim 32"):
        Plan.load(path, rows=[10, 20, 30], dims=[4, 32, 8])
    with pytest.raises(ValueError, match="the plan has 3 features, the tables 2"):
        Plan.load(path, rows=[10, 20], dims=[4, 16])


def test_bad_plans_are_explained(tmp_path):
    with pytest.raises(ValueError, match="not valid for feature 'f0'"):
        Plan([Schedule("OneHot", {"unroll": 3})], [16], [10])
    with pytest.raises(ValueError, match="occupancy must be None or 1..8"):
        Plan([Schedule("OneHot", {"unroll": 1})], [16], [10], occupancy=9)
    with pytest.raises(ValueError, match="2 dims for 1 schedules"):
        Plan([Schedule("OneHot", {"unroll": 1})], [16, 8], [10])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Plan.load(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Plan.load(tmp_path / "missing.json")


@pytest.mark.parametrize("model", models.MODELS)
def test_default_plan_is_valid_for_every_model(model):
    w = models.workload(model)
    p = default_plan_for(w)
    assert p.num_features == w.num_features and p.sum_dims == w.sum_dims
    assert p.col_offsets[-1] + p.dims[-1] == p.sum_dims
    onehot = [i for i, f in enumerate(w.features) if f.pooling.kind == "one-hot"]
    assert all(p.schedules[i]["items"] == 1 for i in onehot if p.dims[i] > 2)


@pytest.mark.parametrize("dim", range(1, 130))
def test_default_schedule_any_dim(dim):
    for pooling in (None, 1, 3, 50):
        default_schedule(dim, pooling).validate(dim)


def test_models_seeds():
    assert [models.seed_for(models.workload(m), "tune") for m in "ABCDE"] == [
        1000,
        2000,
        3000,
        4000,
        4000,
    ]
    assert [models.seed_for(models.workload(m), "test") for m in "ABCDE"] == [
        5000,
        6000,
        7000,
        8000,
        8000,
    ]
    with pytest.raises(ValueError, match="expected one of A, B"):
        models.workload("Z")
    assert workloads.load("recflex-E").dims[0] == 32
