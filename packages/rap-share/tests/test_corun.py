"""The co-run runtime and every baseline on CPU: trained-on inputs equal the reference."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from rap_share.corun import VARIANTS, Config, Helpers, Trainer, input_all_to_all, rank_main
from rap_share.figures import main as figures_main
from rap_share.mps import MpsDaemon
from rap_share.runtime import RawSource

SMALL = dict(batch=32, steps=2, warmup=1, embedding_dim=8, bottom_mlp="16", top_mlp="16-1",
             max_table_rows=500, solver="greedy")  # fmt: skip


def _raw(tmp_path, seed=0, name="raw.npz"):
    p = os.path.join(tmp_path, name)
    RawSource.synthetic(512, seed=seed).save(p)
    return p


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_every_variant_trains_on_the_preprocessed_batches(tmp_path, graphs):
    """Both paths: the CUDA-graph one (the default; eager fallback of its runner on CPU) and
    the eager one (``graphs=False``, the way out)."""
    path = _raw(tmp_path)
    # every batch is compared with the numpy reference
    cfg = Config(**SMALL, check=True, graphs=graphs)
    helpers = Helpers(torch.device("cpu"), path, 0, cpu_workers=2)
    try:
        tr = Trainer(cfg, 0, torch.device("cpu"), path, helpers)
        for v in VARIANTS:
            res = tr.run(v)
            assert len(res["losses"]) == 3 and res["iterations_per_s"] > 0, v
            assert res["launches"] > 0
        assert tr.progs["mps"].launches > tr.progs["rap"].launches  # fusion: fewer launches
    finally:
        helpers.close()


def test_rap_process_launches_stage_kernels_only_when_signalled(tmp_path):
    """The process makes batch ``it + depth`` only as the trainer's counter passes iteration
    ``it``'s stages, and the batches equal in-process preprocessing of the same rows."""
    from rap_share.constants import STAGES
    from rap_share.corun import preprocess

    path = _raw(tmp_path)
    cfg = Config(**SMALL)
    tr = Trainer(cfg, 0, torch.device("cpu"), path)
    prog = tr.progs["rap_process"]
    assert sum(len(v) for k, v in prog.stages.items() if k != STAGES[0]) > 0
    helpers = Helpers(torch.device("cpu"), path, 0, cpu_workers=0)
    try:
        helpers.signal.value = 0
        helpers.gpu_cmd.put(("staged", cfg, prog, 3, 1))
        got = [helpers.get(helpers.gpu_out, 0, timeout=60)]
        with pytest.raises(RuntimeError, match="no preprocessed batch 1"):
            helpers.get(helpers.gpu_out, 1, timeout=1.0)  # no stage signalled yet
        helpers.signal.value = len(STAGES) - 1  # iteration 0 up to emb_bwd: still not done
        with pytest.raises(RuntimeError, match="no preprocessed batch 1"):
            helpers.get(helpers.gpu_out, 1, timeout=1.0)
        helpers.signal.value = len(STAGES)  # grad_comm of iteration 0
        got.append(helpers.get(helpers.gpu_out, 1, timeout=60))
        helpers.signal.value = 2 * len(STAGES)
        got.append(helpers.get(helpers.gpu_out, 2, timeout=60))
        for it, out in enumerate(got):
            want = preprocess(tr.raw, prog, it, cfg, 0, torch.device("cpu"))
            assert torch.equal(out["dense"], want["dense"])
            assert torch.equal(out["labels"], want["labels"])
            for (v, o), (wv, wo) in zip(out["sparse"], want["sparse"], strict=True):
                assert torch.equal(v, wv) and torch.equal(o, wo)
        # a negative counter stops a run that waits for signals; the process serves on
        helpers.signal.value = 0
        helpers.gpu_cmd.put(("staged", cfg, prog, 3, 1))
        helpers.get(helpers.gpu_out, 0, timeout=60)
        helpers.signal.value = -1
        res = tr.run("ideal")  # unrelated run in between: nothing to do with the helpers
        assert len(res["losses"]) == 3
        tr.helpers = helpers
        assert len(tr.run("rap_process")["losses"]) == 3
    finally:
        helpers.close()


def test_changing_the_raw_data_changes_the_loss(tmp_path):
    cfg = Config(**SMALL)
    losses = []
    for seed in (0, 1):
        tr = Trainer(cfg, 0, torch.device("cpu"), _raw(tmp_path, seed, f"r{seed}.npz"))
        losses.append(tr.run("rap")["losses"])
    assert losses[0] != losses[1]
    again = Trainer(cfg, 0, torch.device("cpu"), _raw(tmp_path, 0, "r0b.npz")).run("rap")
    assert again["losses"] == pytest.approx(losses[0], rel=1e-5)


def test_input_all_to_all_single_rank_keeps_owned():
    s = [
        (torch.tensor([1, 2]), torch.tensor([0, 1, 2])),
        (torch.tensor([3]), torch.tensor([0, 0, 1])),
    ]
    out = input_all_to_all(s, [1, 0], rank=0, world=1)
    assert len(out) == 1 and out[0][0].tolist() == [3]


@pytest.mark.parametrize("world", [2, 4, 8])  # 4 and 8: the paper's GPU counts (issue 12)
def test_ranks_on_gloo(tmp_path, world):
    """N processes, sharded tables; cuda_stream is unmapped: the ids go through the input
    all-to-all, and check=True compares them with the owner's reference."""
    import json

    import torch.multiprocessing as mp

    from rap_share.figures import _free_port

    path = _raw(tmp_path)
    out = os.path.join(tmp_path, "runs.jsonl")
    cfg = Config(**{**SMALL, "world": world}, check=True)
    ctx = mp.start_processes(rank_main, args=(world, [cfg], ["rap", "rap_process", "cuda_stream",
                                              "ideal"],
                                              {"plan0": path}, out, "cpu", 1, _free_port()),
                             nprocs=world, join=False, start_method="spawn")  # fmt: skip
    import time

    t0 = time.time()
    while not ctx.join(timeout=5):
        if time.time() - t0 > 300:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{world}-rank run timed out")
    with open(out, encoding="utf-8") as f:
        runs = [json.loads(x) for x in f]
    assert [r["variant"] for r in runs] == ["rap", "rap_process", "cuda_stream", "ideal"]
    assert all(r["config"]["world"] == world and len(r["losses"]) == 3 for r in runs)


def test_mps_helper_says_why_it_cannot_start():
    d = MpsDaemon()
    if shutil.which("nvidia-cuda-mps-control") is None:
        assert d.start() is False and "not on PATH" in d.reason
        assert d.env() == {}
    d.stop()


def test_figures_cli_rejects_bad_usage(capsys):
    with pytest.raises(SystemExit) as e:
        figures_main(["figure9", "--plans", "plan7"])
    assert e.value.code == 2
    assert figures_main(["figure9", "--data", "/nonexistent.npz", "--device", "cpu"]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        figures_main(["figure10", "--rounds", "0"])
    assert e.value.code == 2 and "--rounds must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        figures_main(["figure10", "--cpu-threads", "-1"])
    assert e.value.code == 2 and "--cpu-threads must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        figures_main(["figure9", "--variants", "rap,ideal"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--variants: ideal not in figure9's variants" in err


def test_figures_cli_runs_only_the_variants_asked_for(tmp_path, capsys):
    args = [
        "figure10",
        "--variants",
        "rap,ideal",
        "--device",
        "cpu",
        "--plans",
        "plan0",
        "--batches",
        "32",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--rows",
        "256",
        "--embedding-dim",
        "8",
        "--max-table-rows",
        "500",
        "--no-diagnostics",
        "--out-dir",
        str(tmp_path / "res"),
        "--docs",
        str(tmp_path / "docs" / "figures.md"),
    ]
    assert figures_main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "res" / "figure10.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"ideal", "rap"}
    out = capsys.readouterr().out
    assert "RAP / Ideal:" in out and "RAP / Sequential" not in out


def test_rank_threads_split_the_host_among_ranks():
    from rap_share.corun import rank_threads

    # half the cores over the ranks, 1..4; an explicit count wins; a negative one is refused
    assert [rank_threads(Config(world=w), cores=32) for w in (1, 2, 4, 8)] == [4, 4, 4, 2]
    assert rank_threads(Config(world=1), cores=2) == 1
    assert rank_threads(Config(world=2, cpu_threads=3), cores=2) == 3
    with pytest.raises(ValueError, match="cpu_threads"):
        Config(cpu_threads=-1)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="batch"):
        Config(batch=0)
    with pytest.raises(ValueError, match="trainer_priority.*normal, high.*'urgent'"):
        Config(trainer_priority="urgent")


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_rap_reports_its_worker_time(tmp_path, graphs):
    """rap's worker jobs (load, stage) and the trainer's end-of-step wait are timed over the
    measured iterations and reach the rows and the page; other variants report none."""
    from rap_share.figures import diagnostics

    tr = Trainer(Config(**SMALL, graphs=graphs), 0, torch.device("cpu"), _raw(tmp_path), None)
    res = tr.run("rap")
    wk = res["worker_ms"]
    assert set(wk) == {"load", "stage", "wait"} and all(v >= 0 for v in wk.values())
    assert wk["load"] > 0 and wk["stage"] > 0
    assert tr.run("ideal")["worker_ms"] is None
    line = diagnostics([{"workload": "w", "variant": "rap", "worker_ms": wk}])
    assert any("RAP preprocessing jobs, host ms per iteration: load" in x for x in line)


def test_trainer_priority_is_a_no_op_on_cpu_and_recorded(tmp_path):
    """On a CPU run the option changes nothing (same losses); rows and CLI carry it."""
    from rap_share.figures import parser, to_rows

    path = _raw(tmp_path)
    losses = {}
    for prio in ("normal", "high"):
        tr = Trainer(Config(**SMALL, trainer_priority=prio), 0, torch.device("cpu"), path, None)
        losses[prio] = tr.run("rap")["losses"]
    assert losses["normal"] == losses["high"]
    assert parser().parse_args(["figure9"]).trainer_priority == "high"
    assert Config().trainer_priority == "high"
    assert (
        parser().parse_args(["figure9", "--trainer-priority", "normal"]).trainer_priority
        == "normal"
    )
    assert parser().parse_args(["figure9", "--trainer-priority", "high"]).trainer_priority == "high"
    cfg = {"plan": "plan0", "batch": 32, "world": 1, "steps": 2, "warmup": 1,
           "embedding_dim": 8, "max_table_rows": 500, "trainer_priority": "high"}  # fmt: skip
    runs = [{"variant": v, "config": cfg, "mps": False, "device": "cpu", "launches": 1,
             "total_iterations_per_s": 1.0, "samples_per_s": 32.0, "losses": [0.7],
             "stage_ms": {"emb_fwd": 1.0}} for v in ("cpu_workers", "rap")]  # fmt: skip
    assert {r["trainer_priority"] for r in to_rows(runs, "figure9", "no MPS")} == {"high"}


@pytest.mark.gpu
@pytest.mark.parametrize("prio", ["normal", "high"])
def test_every_variant_on_the_gpu_trains_on_the_preprocessed_batches(tmp_path, prio):
    path = _raw(tmp_path)
    cfg = Config(**{**SMALL, "batch": 256}, check=True, trainer_priority=prio)
    dev = torch.device("cuda:0")
    helpers = Helpers(dev, path, 0, cpu_workers=1)
    try:
        tr = Trainer(cfg, 0, dev, path, helpers)
        for v in VARIANTS:
            res = tr.run(v)
            assert len(res["losses"]) == 3, v
            assert set(res["stage_ms"]) >= {"emb_fwd", "mlp_fwd", "mlp_bwd", "grad_comm"}
    finally:
        helpers.close()


def test_raw_take_of_consecutive_rows_is_a_view_with_the_same_rows():
    """rows() gives a run of consecutive rows unless it wraps: taken as views (no copy),
    equal to fancy indexing; a wrapping run and arbitrary rows are copied."""
    import numpy as np

    raw = RawSource.synthetic(100, seed=3)
    names = sorted(raw.columns)[:5]
    for step, batch in ((0, 10), (4, 30), (3, 30)):  # (3, 30): rows 90..99 then 0..19
        idx = raw.rows(step, batch, 1)
        got = raw.take(names, idx)
        for n in names:
            c = raw.columns[n]
            assert np.array_equal(got[n].values, c.values[idx])
            if c.valid is not None:
                assert np.array_equal(got[n].valid, c.valid[idx])
            wraps = idx[0] + batch > raw.num_rows
            assert np.shares_memory(got[n].values, c.values) is (not wraps)
    rows = np.array([5, 1, 7])
    assert np.array_equal(
        raw.take(names, rows)[names[0]].values, raw.columns[names[0]].values[rows]
    )


def test_criteo_tsv_reader(tmp_path):
    from rap_share.figures import load_criteo_tsv

    line = "1\t" + "\t".join(["3", ""] + ["1"] * 11) + "\t" + "\t".join(["68fd1e64", ""] * 13)
    p = tmp_path / "day.tsv"
    p.write_text(line + "\n" + line + "\n")
    raw = load_criteo_tsv(str(p), rows=5)
    assert raw.num_rows == 2 and raw.labels.tolist() == [1.0, 1.0]
    assert raw.columns["int_1"].valid.tolist() == [False, False]
    assert raw.columns["cat_0"].values[0] == 0x68FD1E64
    p.write_text("1\t2\n")
    with pytest.raises(ValueError, match="40"):
        load_criteo_tsv(str(p), rows=5)


def test_figure10_rows_and_summary_include_rap_process():
    from rap_share.figures import FIGURES, summary, to_rows

    assert FIGURES["figure10"].index("rap_process") == FIGURES["figure10"].index("rap") + 1
    cfg = {"plan": "plan0", "batch": 32, "world": 1, "steps": 2, "warmup": 1,
           "embedding_dim": 8, "max_table_rows": 500}  # fmt: skip
    speed = {"sequential": 1.0, "ideal": 4.0, "rap": 2.0, "rap_process": 3.9}
    stage = {"ideal": 1.0, "rap": 1.5, "rap_process": 1.01}
    # each variant's own fields differ (launches, losses, prep), as on a GPU run
    runs = [{"variant": v, "config": cfg, "mps": v == "mps", "device": "cpu", "launches": 3 + i,
             "total_iterations_per_s": s, "samples_per_s": 32 * s, "losses": [0.7, 0.6 - i / 10],
             "prep": {"fused_launches": i}, "stage_ms": {"emb_fwd": stage.get(v, 1.0)}}
            for i, (v, s) in enumerate(speed.items())]  # fmt: skip
    rows = to_rows(runs, "figure10", "no MPS")
    thr = {r["variant"]: r for r in rows if r["metric"] == "throughput"}
    assert thr["rap"]["ratio"] == pytest.approx(2.0) and thr["rap"]["baseline"] == "sequential"
    assert thr["ideal"]["ratio"] == pytest.approx(4.0)  # the figure-10 bars
    assert {r["variant"] for r in rows if r["metric"] == "stage_time_emb_fwd"} == {
        "ideal", "rap", "rap_process"}  # fmt: skip
    text = "\n".join(summary(rows, "figure10"))
    assert "RAP (process) |" in text and "| 3.90 |" in text
    assert "- RAP / Ideal: 0.500 (target >= 0.95 each): MISSED" in text
    assert "- RAP (process) / Ideal: 0.975 (target >= 0.95 each): met" in text
    assert "- RAP (process): trainer stage times co-running vs Ideal within 5%: met" in text
    assert "- RAP: trainer stage times co-running vs Ideal within 5%: MISSED" in text


def test_rounds_report_the_median_run_and_its_spread():
    from rap_share.figures import median_runs, parser, to_rows

    cfg = {"plan": "plan0", "batch": 32, "world": 1, "steps": 2, "warmup": 1,
           "embedding_dim": 8, "max_table_rows": 500}  # fmt: skip

    def run(v, s, rnd):
        return {"variant": v, "config": cfg, "mps": False, "device": "cpu", "launches": rnd,
                "total_iterations_per_s": s, "samples_per_s": 32 * s, "losses": [0.7, 0.6],
                "stage_ms": {"emb_fwd": 1.0}, "round": rnd}  # fmt: skip

    runs = [run("sequential", s, i) for i, s in enumerate([1.0, 3.0, 2.0])]
    runs += [run("rap", s, i) for i, s in enumerate([4.0, 8.0, 6.0, 5.0])]
    picked = {r["variant"]: r for r in median_runs(runs)}
    assert picked["sequential"]["total_iterations_per_s"] == 2.0
    assert picked["sequential"]["round"] == 2 and picked["sequential"]["rounds"] == 3
    assert picked["rap"]["total_iterations_per_s"] == 5.0  # even count: the lower middle
    assert picked["rap"]["spread"] == [4.0, 8.0]
    thr = {r["variant"]: r for r in to_rows(runs, "figure10", "no MPS")
           if r["metric"] == "throughput"}  # fmt: skip
    assert thr["rap"]["ratio"] == pytest.approx(2.5) and thr["rap"]["rounds"] == 4
    assert thr["sequential"]["spread"] == [1.0, 3.0]
    single = median_runs([run("ideal", 7.0, 0)])[0]
    assert single["rounds"] == 1 and single["spread"] == [7.0, 7.0]
    assert parser().parse_args(["figure10"]).rounds == 1
    assert parser().parse_args(["figure10", "--rounds", "3"]).rounds == 3


def test_rank_main_runs_the_rounds_interleaved(tmp_path):
    import json

    path = _raw(tmp_path)
    out = os.path.join(tmp_path, "runs.jsonl")
    cfg = Config(**SMALL)
    rank_main(0, 1, [cfg], ["ideal", "rap"], {"plan0": path}, out, "cpu", 0, 0, False, 2)
    with open(out, encoding="utf-8") as f:
        runs = [json.loads(x) for x in f]
    assert [(r["variant"], r["round"]) for r in runs] == [
        ("ideal", 0), ("rap", 0), ("ideal", 1), ("rap", 1)]  # fmt: skip
