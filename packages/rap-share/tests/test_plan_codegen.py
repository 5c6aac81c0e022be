"""A plan's fused kernels equal the line-by-line CPU reference; the generated program runs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rap_share import plan as plan_cli
from rap_share.codegen import ModelConfig, render_program
from rap_share.columns import Column, assert_columns_equal
from rap_share.constants import STAGES
from rap_share.planner import make_plan
from rap_share.runtime import RawSource, load_env, reference_features, run_tasks

SMALL = """
df["int_0"] = df["int_0"].fill_null(0)
df["b0"] = functional.bucketize(df["int_0"], [0.5, 1.0, 1.5])
df["int_0"] = functional.logit(df["int_0"], 1e-5)
df["int_1"] = df["int_1"].fill_null(0)
df["int_1"] = functional.boxcox(df["int_1"], 0.0)
df["int_2"] = df["int_2"].fill_null(1.0)
df["int_2"] = functional.clamp(df["int_2"], 0, 50)
df["cat_0"] = df["cat_0"].fill_null(0)
df["cat_0"] = functional.sigrid_hash(df["cat_0"], 0, 100)
df["cat_0"] = functional.firstx(df["cat_0"], 1)
df["cat_1"] = df["cat_1"].fill_null(0)
df["cat_1"] = functional.sigrid_hash(df["cat_1"], 1, 50)
df["n2"] = df["int_3"].fill_null(0)
df["n2"] = functional.onehot(df["n2"], 0, 16, 8)
df["n2"] = functional.ngram(df["n2"], 4)
df["n2"] = functional.firstx(df["n2"], 20)
df["n2"] = functional.sigrid_hash(df["n2"], 2, 64)
df["m"] = df["cat_2"].fill_null(3)
df["m"] = functional.sigrid_hash(df["m"], 5, 10)
df["m"] = functional.mapid(df["m"], [9, 8, 7, 6, 5, 4, 3, 2])
"""


def random_source(rows: int, seed: int = 0) -> RawSource:
    rng = np.random.default_rng(seed)
    cols = {}
    for i in range(13):
        cols[f"int_{i}"] = Column(rng.integers(-2, 40, rows), None, rng.random(rows) > 0.1)
    for i in range(26):
        cols[f"cat_{i}"] = Column(rng.integers(0, 2**32, rows), None, rng.random(rows) > 0.1)
    return RawSource(cols, (rng.random(rows) < 0.3).astype(np.float32))


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("script") / "PRE.py"
    p.write_text(SMALL)
    return p


@pytest.mark.parametrize("n_gpus", [1, 3])
def test_plan_kernels_equal_reference(script, n_gpus):
    batch = 40
    plan = make_plan(str(script), n_gpus, batch)
    src = random_source(500)
    step = 2
    idx_g = src.rows(step, batch, n_gpus)
    want_global = reference_features(plan.graph, src.take(plan.graph.raw_columns, idx_g))
    for gp in plan.gpus:
        idx_l = src.rows(step, batch, n_gpus, gp.graph.gpu)
        want_local = reference_features(plan.graph, src.take(plan.graph.raw_columns, idx_l))
        env = load_env(
            src.take(gp.graph.raw_local, idx_l), src.take(gp.graph.raw_global, idx_g), None
        )
        for s in STAGES:  # the scheduled order, shards included
            for p in gp.schedule.kernels(s):
                run_tasks(p.kernel.op, p.kernel.tasks, env)
        feats = {f.name: f for f in plan.graph.features}
        for f in gp.graph.dense_features:
            assert_columns_equal(env[f"l{feats[f.name].node}"], want_local[f.name], f.name,
                                 rtol=2e-6, atol=2e-6)  # fmt: skip
        for f in gp.graph.sparse_features:
            assert_columns_equal(env[f"g{feats[f.name].node}"], want_global[f.name], f.name)
    owned = sorted(f.name for gp in plan.gpus for f in gp.graph.sparse_features)
    assert owned == sorted(f.name for f in plan.graph.sparse_features)


def test_program_is_valid_python_for_every_builtin_plan():
    for name, n, solver in (("plan0", 4, "highs"), ("plan1", 1, "highs"), ("plan3", 8, "greedy")):
        text = render_program(make_plan(name, n, 4096, solver=solver))
        ast.parse(text)
        assert f"N_GPUS = {n}" in text
        for g in range(n):
            for s in STAGES:
                assert f"def gpu{g}_{s}(env):" in text


def test_plan_cli_writes_everything(tmp_path, capsys):
    out = tmp_path / "out"
    rc = plan_cli.main(["--script", "plan0", "--gpus", "2", "--batch", "1024", "--out", str(out)])
    assert rc == 0
    for f in ("plan.json", "summary.txt", "plan.dot", "train.py"):
        assert (out / f).is_file(), f
    d = json.loads((out / "plan.json").read_text())
    assert d["n_gpus"] == 2 and len(d["gpus"]) == 2
    assert all(g["milp"]["global"]["num_vars"] > 0 for g in d["gpus"])
    assert "wrote" in capsys.readouterr().out


def test_plan_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text('df["a"] = df["a"].fill_null(0)\ndf["b"] = functional.ngram(df["a"], 0)\n')
    rc = plan_cli.main(
        ["--script", str(bad), "--gpus", "2", "--batch", "8", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "bad.py:2:" in err and "n must be >= 1" in err
    rc = plan_cli.main(
        ["--script", "nope.py", "--gpus", "2", "--batch", "8", "--out", str(tmp_path)]
    )
    assert rc == 1 and "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        plan_cli.main(
            ["--script", "plan0", "--gpus", "2", "--batch", "8", "--out", "x", "--placement", "a,b"]
        )
    assert exc.value.code == 2


def test_generated_program_trains_two_processes_on_cpu(script, tmp_path):
    plan = make_plan(str(script), 2, 32)
    prog = tmp_path / "train.py"
    prog.write_text(
        render_program(
            plan, ModelConfig(embedding_dim=8, bottom_mlp="16", top_mlp="16-1", steps=4, warmup=1)
        )
    )
    data = tmp_path / "raw.npz"
    random_source(400).save(data)
    out = tmp_path / "result.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(prog), "--device", "cpu", "--data", str(data), "--out", str(out), "--check-inputs",
         "--timeout", "120"],
        capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text().splitlines()[-1])
    assert row["gpus"] == 2 and row["steps"] == 4 and np.isfinite(row["loss_last"])
    assert row["samples_per_s"] > 0


@pytest.mark.parametrize("ranks", [2, 4, 8])  # 4 and 8: the paper's GPU counts (issue 12)
def test_ranks_train_like_one_rank_on_the_same_global_batch(script, tmp_path, ranks):
    """Data-parallel MLPs, table-wise sharded embeddings: N ranks x 64/N rows step like 1 rank
    x 64 rows (same seed, same rows): equal initial replicas on every rank (the tables are drawn
    per table, not from the generator the MLPs use), gradients averaged over the ranks."""
    import torch

    data = tmp_path / "raw.npz"
    random_source(400).save(data)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {}
    for n, batch in [(1, 64), (ranks, 64 // ranks)]:
        prog = tmp_path / f"train{n}.py"
        model = ModelConfig(embedding_dim=8, bottom_mlp="16", top_mlp="16-1", steps=3, warmup=1)
        prog.write_text(render_program(make_plan(str(script), n, batch), model))
        state = tmp_path / f"state{n}"
        proc = subprocess.run(
            [sys.executable, str(prog), "--device", "cpu", "--data", str(data), "--lr", "0.01",
             "--save-state", str(state), "--timeout", "120"],
            capture_output=True, text=True, timeout=240, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[n] = [torch.load(state / f"rank{r}.pt") for r in range(n)]
    (one,), two = runs[1], runs[ranks]
    # a rank's loss is the mean over its own rows: the ranks' mean is the global batch's loss
    np.testing.assert_allclose(np.mean([r["losses"] for r in two], 0), one["losses"], rtol=1e-5)
    for name, want in one["state"].items():
        if name.startswith("table."):
            (got,) = [r["state"][name] for r in two if name in r["state"]]
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)  # fmt: skip
        else:
            for r in two:
                np.testing.assert_allclose(r["state"][name].numpy(), want.numpy(), rtol=1e-5,
                                           atol=1e-6, err_msg=f"rank {r['rank']} {name}")  # fmt: skip
