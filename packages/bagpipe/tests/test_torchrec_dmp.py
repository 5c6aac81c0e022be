"""TorchRec's own DistributedModelParallel as a baseline: 2 processes over gloo train the same
weights as the single-process reference; without TorchRec the mode stops with one clear
error and figure9 skips it with that reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from bagpipe.data import open_data
from bagpipe.models import dense_parameters
from bagpipe.training import run_reference, run_settings


def _torchrec_error() -> str | None:
    try:
        import torchrec  # noqa: F401
        from torchrec.distributed.model_parallel import DistributedModelParallel  # noqa: F401
    except Exception as exc:  # a broken native library can raise more than ImportError
        return f"torchrec does not import: {type(exc).__name__}: {exc}"
    return None


def _launch(args, timeout: float, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "bagpipe.launch", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


@pytest.fixture
def no_torchrec(tmp_path):
    """A PYTHONPATH whose ``torchrec`` fails to import, as on a machine without it."""
    d = tmp_path / "fake"
    (d / "torchrec").mkdir(parents=True)
    (d / "torchrec" / "__init__.py").write_text(
        "raise ImportError('torchrec blocked by the test')\n"
    )
    old = os.environ.get("PYTHONPATH")
    return str(d) + (os.pathsep + old if old else "")


@pytest.mark.slow
@pytest.mark.skipif(_torchrec_error() is not None, reason=str(_torchrec_error()))
def test_dmp_two_processes_match_reference(criteo_dir, tmp_path):
    """DeepFM (row width 9, padded to 12 for FBGEMM), Adagrad on rows and dense, 8 steps."""
    out = tmp_path / "out"
    steps = 8
    p = _launch(["--mode", "torchrec-dmp", "--trainers", "2", "--model", "deepfm", "--data",
                 str(criteo_dir), "--out", str(out), "--dump", "--stop-iter", str(steps),
                 "--mini-batch-size", "128", "--emb-size", "8", "--emb-optim", "adagrad",
                 "--emb-lr", "0.1", "--timeout", "150", "--trainer-args",
                 "--model-size small --dense-lr 0.05 --dense-optim adagrad"], timeout=180)  # fmt: skip
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "Traceback" not in text
    src = open_data(criteo_dir, 128)
    s = run_settings(src, stop_iter=steps, emb_optim="adagrad", emb_lr=0.1, dim=8, model="deepfm")
    ref = run_reference(src, s, model="deepfm", dense_optim="adagrad", dense_lr=0.05)
    tabs, owned = {}, []
    for t in range(2):
        part = torch.load(out / f"dmp_tables_{t}.pt")
        owned.append(sorted(part))
        tabs.update(part)
    assert all(owned) and sorted(owned[0] + owned[1]) == list(range(len(src.table_sizes)))
    full = torch.cat([tabs[f] for f in range(len(src.table_sizes))])
    assert full.shape == ref.tables.shape
    assert (full - ref.tables).abs().max() < 1e-4
    dense = torch.load(out / "dmp_dense.pt")
    for p_, q in zip(dense, dense_parameters(ref.model), strict=True):
        assert (p_ - q.detach()).abs().max() < 1e-4
    stats = [json.loads((out / f"trainer_{t}.json").read_text()) for t in range(2)]
    losses = [(a["loss"] + b["loss"]) / 2 for a, b in zip(stats[0]["steps"], stats[1]["steps"])]
    assert max(abs(x - y) for x, y in zip(losses, ref.losses, strict=True)) < 1e-5
    from bagpipe.figure9 import per_step

    per = per_step(stats[0], 2, "torchrec-dmp")
    assert len(per["total"]) == steps - 2 and all(x > 0 for x in per["total"])
    assert set(per["breakdown"]) == {"input", "forward", "backward", "dense_optim"}


def test_missing_torchrec_is_named(monkeypatch):
    from bagpipe.errors import BagpipeError
    from bagpipe.torchrec_dmp import missing, require

    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec -> ImportError
    why = missing("cpu")
    assert why is not None and "torchrec does not import" in why
    with pytest.raises(BagpipeError, match="torchrec-dmp: TorchRec's DistributedModelParallel"):
        require("cpu")


def test_missing_training_kernel_is_named(monkeypatch):
    """A TBE whose backward is absent (the GPU machine's forward-only pack) is named."""
    pytest.importorskip("fbgemm_gpu")
    if _torchrec_error() is not None:
        pytest.skip(str(_torchrec_error()))
    import fbgemm_gpu.split_table_batched_embeddings_ops_training as tr

    from bagpipe.torchrec_dmp import missing

    class NoBackward(torch.nn.Module):
        def __init__(self, *a, **kw):
            super().__init__()

        def forward(self, ids, offsets):
            raise NotImplementedError("no backward kernel in this build")

    monkeypatch.setattr(tr, "SplitTableBatchedEmbeddingBagsCodegen", NoBackward)
    why = missing("cpu", "adagrad")
    assert why == ("FBGEMM's training TBE (TorchRec's fused kernel) does not run on cpu with "
                   "adagrad: NotImplementedError: no backward kernel in this build")  # fmt: skip


@pytest.mark.slow
def test_launch_fails_fast_and_figure9_skips_without_torchrec(criteo_dir, no_torchrec, capsys,
                                                               monkeypatch):  # fmt: skip
    env = dict(os.environ, PYTHONPATH=no_torchrec)
    p = _launch(["--mode", "torchrec-dmp", "--trainers", "2", "--data", str(criteo_dir),
                 "--stop-iter", "5", "--mini-batch-size", "128", "--emb-size", "8",
                 "--timeout", "100"], timeout=120, env=env)  # fmt: skip
    text = p.stdout + p.stderr
    assert p.returncode == 1, text
    msg = ("error: torchrec-dmp: TorchRec's DistributedModelParallel cannot train here: "
           "torchrec does not import (ImportError: torchrec blocked by the test)")  # fmt: skip
    assert f"[trainer_0] {msg}" in text, text
    assert "Traceback" not in text
    from bagpipe import figure9

    monkeypatch.setenv("PYTHONPATH", no_torchrec)
    args = types.SimpleNamespace(device="cpu")
    assert figure9.run_variant(args, "dlrm", "torchrec-dmp", Path("unused"), Path("unused")) is None
    out = capsys.readouterr().out
    assert "figure9: dlrm / torchrec-dmp skipped: torchrec does not import" in out


def test_figure9_default_variants_leave_dmp_out():
    from bagpipe import figure9

    assert "torchrec-dmp" in figure9.VARIANTS and "torchrec-dmp" not in figure9.DEFAULT_VARIANTS
    assert figure9.parse_variant_steps("torchrec-dmp=120", figure9.VARIANTS) == {
        "torchrec-dmp": 120
    }
