"""The end-to-end mode of the benchmark (lookup + MLP 1024-256-128-1) on the CPU."""

from __future__ import annotations

import pytest
import torch

from rec_common.results import check_row, read_rows, write_rows
from recflex import baselines, bench, e2e, models


def test_mlp_shape_and_same_weights():
    a, b = e2e.make_mlp(96), e2e.make_mlp(96)
    assert a.sizes == (96, 1024, 256, 128, 1)
    relus = [m for m in a.layers if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 3 and not isinstance(a.layers[-1], torch.nn.ReLU)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a.layers[0].weight, e2e.make_mlp(96, seed=1).layers[0].weight)
    with pytest.raises(ValueError, match="sum_dims"):
        e2e.make_mlp(0)


def test_e2e_rows_on_cpu(tmp_path):
    args = bench.parser().parse_args(
        ["--e2e", "--model", "test", "--variants", "recflex,torch,fbgemm-tbe",
         "--batches", "2", "--repeats", "1"]
    )  # fmt: skip
    logs = []
    rows = bench.bench_e2e("test", args, logs.append, device="cpu")
    text = "\n".join(logs)
    tbe = baselines.available("fbgemm-tbe") is None
    # every variant that runs here passed the check against embedding_bag + the same MLP
    assert [r["variant"] for r in rows] == ["recflex", "torch"] + ["fbgemm-tbe"] * tbe, text
    for r in rows:
        check_row(r)
        assert r["benchmark"] == "e2e" and r["metric"] == "e2e_latency" and r["unit"] == "us"
        assert r["workload"] == "recflex-test" and r["n"] == 2 and r["value"] > 0
        assert r["mlp"].endswith("-1024-256-128-1") and r["batches"] == 2
    base = "fbgemm-tbe" if tbe else "torch"
    for r in rows:
        if r["variant"] != base:
            assert r["baseline"] == base and r["ratio"] > 0
    out = write_rows(tmp_path / "e2e.jsonl", rows)
    assert len(read_rows(out)) == len(rows)


def test_e2e_outputs_agree_across_variants():
    from recflex.inputs import pack

    w = models.workload("test")
    tables = w.make_tables()
    plan = models.plan_for(w, "default")
    mlp = e2e.make_mlp(w.sum_dims)
    p = pack(next(w.batches(1, seed=models.seed_for(w, "test"))))
    outs = []
    for name in ("recflex", "recflex-feature-order", "recflex-forward",
                 "recflex-forward-sync-free", "torch"):  # fmt: skip
        prepare, lookup, _ = bench.make_variant(name, tables, plan)
        outs.append(e2e.forward_fn(lookup, mlp)(prepare(p)))
    assert outs[0].shape == (p.batch_size, 1)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=1e-4, rtol=1e-4)


def test_default_variant_runs_the_heuristic_plan_beside_another():
    """``recflex-default`` runs the heuristic plan whatever ``--plan`` names, gives the same
    output, needs that plan passed in, and is dropped when ``--plan default`` (a duplicate)."""
    import argparse

    from recflex.inputs import pack

    w = models.workload("test")
    tables = w.make_tables()
    default = models.plan_for(w, "default")
    other = default.with_occupancy(1 if default.occupancy != 1 else 2)
    p = pack(next(w.batches(1, seed=models.seed_for(w, "test"))))
    outs = []
    for name, plan in (("recflex", other), ("recflex-default", other)):
        prepare, lookup, emb = bench.make_variant(name, tables, plan, default_plan=default)
        outs.append(lookup(prepare(p)))
        assert emb.plan == (other if name == "recflex" else default)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="recflex-default needs default_plan"):
        bench.make_variant("recflex-default", tables, other)
    names = ["recflex", "recflex-default", "torch"]
    same = argparse.Namespace(plan="default", variants=names)
    assert bench._variants(same) == ["recflex", "torch"]
    tuned = argparse.Namespace(plan="plans/{model}.json", variants=names)
    assert bench._variants(tuned) == names
