"""GPU paths (skipped without CUDA): the cache on the GPU, NCCL or shared-GPU gloo, and the
model-parallel baseline, each against the CPU reference."""

from __future__ import annotations

import pytest
import torch

from bagpipe.data import open_data
from bagpipe.models import dense_parameters
from bagpipe.training import run_local, run_reference, run_settings

pytestmark = pytest.mark.gpu


def test_in_process_run_on_gpu(source):
    s = run_settings(source, lookahead=5, cleanup_proportion=0.3, stop_iter=30,
                     emb_optim="adagrad", emb_lr=0.1, num_servers=2)  # fmt: skip
    run = run_local(source, s, device="cuda")
    ref = run_reference(source, s)
    assert (run.tables() - ref.tables).abs().max() < 5e-4
    for p, q in zip(dense_parameters(run.models[0]), dense_parameters(ref.model)):
        assert (p.detach().cpu() - q.detach()).abs().max() < 5e-4
    assert all(b.cache.misses == 0 and b.cache.weight.is_cuda for b in run.caches)


@pytest.mark.parametrize("mode", ["bagpipe", "model-parallel"])
def test_launch_on_gpus(criteo_dir, tmp_path, mode):
    from bagpipe.launch import main as launch_main

    out = tmp_path / "out"
    args = ["--trainers", "2", "--servers", "2", "--data", str(criteo_dir), "--device", "cuda",
            "--out", str(out), "--dump", "--mode", mode, "--mini-batch-size", "128", "--stop-iter", "30",
            "--emb-size", "8", "--emb-lr", "0.1", "--lookahead-value", "5", "--timeout", "240",
            "--trainer-args", "--model-size small --dense-lr 0.05"]  # fmt: skip
    assert launch_main(args) == 0
    src = open_data(criteo_dir, 128)
    s = run_settings(src, lookahead=5, stop_iter=30, num_servers=2, emb_lr=0.1)
    ref = run_reference(src, s, dense_lr=0.05)
    if mode == "bagpipe":
        tables = torch.empty(sum(src.table_sizes), 8)
        for j in range(2):
            tables[j::2] = torch.load(out / f"server_{j}.pt")["weight"]
        assert (tables - ref.tables).abs().max() < 5e-4
        dense = torch.load(out / "dense.pt")
        names = [n for n, _ in ref.model.named_parameters() if not n.startswith("embedding")]
        for name, q in zip(names, dense_parameters(ref.model)):
            assert (dense[name] - q.detach()).abs().max() < 5e-4, name
