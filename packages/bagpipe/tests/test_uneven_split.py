"""Model parallel with uneven table shards across real gloo processes: the all-to-alls carry
pieces of different widths per rank (1 vs 2 tables, Kaggle's 23 vs 3), which the in-process
thread collective never exercised. The trained tables and dense weights must equal the
single-process reference."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from bagpipe.model_parallel import assign_tables
from bagpipe.models import dense_parameters
from bagpipe.synthetic import synthetic_source
from bagpipe.training import run_reference, run_settings

pytestmark = pytest.mark.slow

KAGGLE = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
          14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]  # fmt: skip
KAGGLE_SMALL = [max(2, n // 10_000) for n in KAGGLE]  # the same LPT split: 23 vs 3 tables
STEPS = 12

WORKER = (
    textwrap.dedent("""
    import sys
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    from bagpipe.model_parallel import ModelParallelTrainer, _staged_all_to_all
    from bagpipe.models import dense_parameters
    from bagpipe.synthetic import synthetic_source
    from bagpipe.trainer import StagedCollective
    from bagpipe.training import run_settings
    from bagpipe.transport import DistCollective

    staged = StagedCollective(torch.device("cpu"))  # the shared-GPU path, with CPU tensors
    staged.all_to_all = _staged_all_to_all(staged)
    res = []
    for case in sys.argv[4:]:
      sizes = [int(x) for x in case.split(",")]
      for coll in (DistCollective(), staged):
        # raw exchange: rank r sends rank j a [b_j, w_r] piece; widths and batches differ
        for widths in ([3 * 4, 23 * 4], [1 * 4, 2 * 4]):
            b = [3, 5]
            def piece(src, dst):
                n = b[dst] * widths[src]
                return (torch.arange(n, dtype=torch.float32) + 1000 * src + 100 * dst).view(
                    b[dst], widths[src])
            outs = [torch.empty(b[rank], widths[j]) for j in range(2)]
            coll.all_to_all(outs, [piece(rank, j) for j in range(2)])
            for j in range(2):
                assert torch.equal(outs[j], piece(j, rank)), (widths, j)
        src = synthetic_source(64 * {steps}, sizes, global_batch=64, seed=5)
        s = run_settings(src, stop_iter={steps}, emb_optim="adagrad", emb_lr=0.1)
        tr = ModelParallelTrainer(src, s, coll, rank, dense_optim="adagrad")
        tr.run({steps})
        res.append({{"tables": tr.tables(), "owner": tr.owner,
                    "dense": [p.detach() for p in dense_parameters(tr.model)]}})
    torch.save(res, out)
    dist.barrier()
    dist.destroy_process_group()
""")
    .replace("{steps}", str(STEPS))
    .replace("{{", "{")
    .replace("}}", "}")
)


CASES = [(KAGGLE_SMALL, (23, 3)), ([400, 100, 100], (1, 2))]


def test_uneven_split_matches_reference(tmp_path):
    """One pair of processes runs every case, through gloo and through the staged path."""
    for sizes, counts in CASES:
        owner = assign_tables(sizes, 2)
        assert (owner.count(0), owner.count(1)) == counts
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    store = tmp_path / "store"
    outs = [tmp_path / f"out{r}.pt" for r in range(2)]
    cases = [",".join(map(str, sizes)) for sizes, _ in CASES]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(store), str(outs[r]),
                               *cases], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for r in range(2)]  # fmt: skip
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    res = [torch.load(o) for o in outs]
    for c, (sizes, _) in enumerate(CASES):
        src = synthetic_source(64 * STEPS, sizes, global_batch=64, seed=5)
        s = run_settings(src, stop_iter=STEPS, emb_optim="adagrad", emb_lr=0.1)
        ref = run_reference(src, s, dense_optim="adagrad")
        for path in range(2):  # DistCollective, then the staged (shared-GPU) collective
            got = [res[r][2 * c + path] for r in range(2)]
            tabs = {**got[0]["tables"], **got[1]["tables"]}
            assert sorted(tabs) == list(range(len(sizes)))
            full = torch.cat([tabs[f] for f in range(len(sizes))])
            assert float((full - ref.tables).abs().max()) < 2e-4, (sizes, path)
            for g in got:
                assert g["owner"] == assign_tables(sizes, 2)
                for p, q in zip(g["dense"], dense_parameters(ref.model)):
                    assert float((p - q.detach()).abs().max()) < 2e-4, (sizes, path)


def test_assign_tables_balances_bytes():
    owner = assign_tables(KAGGLE, 2)
    load = [sum(n for n, o in zip(KAGGLE, owner) if o == t) for t in range(2)]
    assert (owner.count(0), owner.count(1)) == (23, 3)
    assert max(load) <= 1.05 * sum(KAGGLE) / 2  # within 5% of an even split of the bytes
    # rows x dim: a narrow big table weighs less than a wide smaller one
    assert assign_tables([100, 60, 60], 2, dims=[1, 4, 4]) == [0, 0, 1]
    with pytest.raises(ValueError, match="dims: expected 3"):
        assign_tables([1, 2, 3], 2, dims=[4])
