"""The CUDA-graph path, the default (``Config.graphs`` / ``--graphs`` / ``RAP_SHARE_GRAPHS``),
and its way out, the eager path (``Config(graphs=False)`` / ``--no-graphs`` /
``RAP_SHARE_GRAPHS=0``): the switch (default on), the stage runner (CUDA graphs, eager
fallback), cached constants, packed raw loading and the preprocessing diagnostics. CPU tests
run the graph path's eager fallback against the eager path; the gpu-marked ones its CUDA
graphs (skipped without a CUDA GPU or with ``RAP_SHARE_GRAPHS=0``)."""

import os

import numpy as np
import pytest
import torch

from rap_share import corun, figures, fused, graphs
from rap_share.columns import Column
from rap_share.constants import STAGES
from rap_share.graphs import StagedRunner
from rap_share.runtime import RawSource, pack_columns, unpack_columns

SMALL = dict(batch=32, steps=2, warmup=1, embedding_dim=8, bottom_mlp="16", top_mlp="16-1",
             max_table_rows=500, solver="greedy")  # fmt: skip


@pytest.fixture(scope="module")
def setup():
    cfg = corun.Config(plan="plan0", batch=64, solver="greedy", graphs=False)
    _, progs = corun.build_programs(cfg, 0)
    raw = RawSource.synthetic(512, table_sizes="kaggle")
    return cfg, progs, raw


@pytest.fixture
def raw_path(tmp_path):
    p = os.path.join(tmp_path, "raw.npz")
    RawSource.synthetic(512, seed=0).save(p)
    return p


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(fused, "_CONST", {})
    return fused._CONST


def _same(a: dict, b: dict) -> None:
    assert torch.equal(a["dense"].cpu(), b["dense"].cpu())
    assert torch.equal(torch.as_tensor(a["labels"]).cpu(), torch.as_tensor(b["labels"]).cpu())
    assert len(a["sparse"]) == len(b["sparse"])
    for (va, oa), (vb, ob) in zip(a["sparse"], b["sparse"]):
        assert torch.equal(va.cpu(), vb.cpu()) and torch.equal(oa.cpu(), ob.cpu())


# ------------------------------------------------------------------ the switch
def test_switch_is_on_by_default_and_read_from_env(monkeypatch):
    monkeypatch.delenv(graphs.ENV, raising=False)
    assert graphs.enabled() is True and corun.Config().graphs is True
    assert fused.constants_cached() is False  # the cache is on only around a graph-path run
    args = figures.parser().parse_args(["figure9"])
    assert args.graphs is None and graphs.enabled(args.graphs) is True
    assert figures.parser().parse_args(["figure9", "--graphs"]).graphs is True
    assert figures.parser().parse_args(["figure9", "--no-graphs"]).graphs is False
    for off in ("0", "off", " OFF ", "false", "No"):
        monkeypatch.setenv(graphs.ENV, off)
        assert graphs.enabled() is False and corun.Config().graphs is False, off
        # an explicit flag beats the variable
        assert graphs.enabled(True) is True and corun.Config(graphs=True).graphs is True
        assert graphs.enabled(figures.parser().parse_args(["figure9", "--graphs"]).graphs)
    for on in ("1", "on", "true", ""):
        monkeypatch.setenv(graphs.ENV, on)
        assert graphs.enabled() is True and corun.Config().graphs is True, on
        assert graphs.enabled(False) is False and corun.Config(graphs=False).graphs is False
        no = figures.parser().parse_args(["figure9", "--no-graphs"]).graphs
        assert graphs.enabled(no) is False


def test_eager_path_uses_neither_runner_nor_cache_nor_packing(raw_path, fresh_cache,
                                                                monkeypatch):  # fmt: skip
    """Off (the eager path): ``rap`` runs the eager loop (no StagedRunner, no cached constants,
    per-column copies); on (the default): the runner, the cache and the packed copies; the
    same losses either way."""
    from rap_share import runtime

    packs = []
    real_pack = runtime.pack_columns
    monkeypatch.setattr(runtime, "pack_columns", lambda c: packs.append(1) or real_pack(c))
    losses = {}
    for on in (False, True):
        tr = corun.Trainer(corun.Config(**SMALL, graphs=on), 0, torch.device("cpu"), raw_path)
        packs.clear()
        losses[on] = tr.run("rap")["losses"]
        assert (getattr(tr, "_runner", None) is not None) is on
        assert bool(fresh_cache) is on and bool(packs) is on
        if on:
            assert tr._runner.note == "eager (not a CUDA device)"
    np.testing.assert_array_equal(losses[False], losses[True])
    assert fused.constants_cached() is False  # restored after the run


def test_rap_builds_model_inputs_once_per_static_slot(raw_path, monkeypatch):
    """On the CUDA-graph path the runner's outputs are static buffers, one set per slot, with
    the trainer's ids already folded (``fold``): the loop builds each slot's model inputs once
    and trains on the buffers' new contents every step. A spy runner on the CPU copies each
    batch into two static sets, as the graphs write into theirs; the losses equal the eager
    path's, so the reused inputs do see every new batch. The jobs (load, stage replays) run
    on the trainer's own thread, no worker thread."""
    import threading

    tr = corun.Trainer(corun.Config(**SMALL, graphs=True), 0, torch.device("cpu"), raw_path)
    real = tr.rap_runner()
    static: dict[int, dict] = {}
    threads = set()

    class Spy:
        graphed = True  # the loop takes the outputs as static buffers, jobs inline

        def load(self, it, free=None):
            threads.add(threading.current_thread().name)
            real.load(it, free)

        def stage(self, s, it):
            threads.add(threading.current_thread().name)
            real.stage(s, it)

        def outputs(self, it):
            out = dict(real.outputs(it))
            out["folded"] = [torch.remainder(v, n) for (v, _), n
                             in zip(out["sparse"], tr.owned_sizes)]  # fmt: skip
            mine = static.get(it % 2)
            if mine is None:
                static[it % 2] = mine = {k: None for k in out}
            for k, v in out.items():
                if mine[k] is None:
                    mine[k] = torch.utils._pytree.tree_map(torch.clone, v)
                else:  # same shapes every batch: write in place, as a graph replay does
                    for d, x in zip(torch.utils._pytree.tree_leaves(mine[k]),
                                    torch.utils._pytree.tree_leaves(v)):  # fmt: skip
                        d.copy_(x)
            return mine

    built = []
    real_inputs = tr.model_inputs
    monkeypatch.setattr(
        tr, "model_inputs", lambda out, it, mapped: built.append(it) or real_inputs(out, it, mapped)
    )
    monkeypatch.setattr(tr, "rap_runner", lambda: Spy())
    got = tr.run("rap")["losses"]
    assert built == [0, 1]  # one per slot, then reused
    assert threads == {threading.current_thread().name}
    eager = corun.Trainer(corun.Config(**SMALL, graphs=False), 0, torch.device("cpu"), raw_path)
    np.testing.assert_allclose(got, eager.run("rap")["losses"], rtol=1e-6)
    with pytest.raises(ValueError, match="fold: 1 table sizes"):
        StagedRunner(tr.raw, tr.progs["rap"], tr.cfg, 0, torch.device("cpu"), fold=[7])


def test_batch_period_is_when_the_raw_rows_repeat():
    """The runner pins every distinct batch once: batch ``it`` and ``it + period`` are the same
    rows (local and global), and no earlier batch repeats batch 0."""
    raw = RawSource.synthetic(96, table_sizes="kaggle")
    for batch, world in [(8, 2), (12, 1), (20, 3), (96, 1), (7, 2)]:
        period = graphs.batch_period(raw.num_rows, batch, world)
        for it in range(3):
            np.testing.assert_array_equal(raw.rows(it, batch, world),
                                          raw.rows(it + period, batch, world))  # fmt: skip
        firsts = [tuple(raw.rows(k, batch, world)) for k in range(period)]
        assert tuple(raw.rows(0, batch, world)) not in firsts[1:]


@pytest.mark.parametrize("variant", ["ideal", "rap", "cuda_stream"])
def test_graph_path_variants_train_on_the_reference_batches(raw_path, variant):
    """check=True on the CUDA-graph path: every trained-on batch equals the numpy reference,
    and the losses equal the eager path's."""
    got = {}
    for on in (False, True):
        tr = corun.Trainer(corun.Config(**SMALL, check=True, graphs=on), 0, torch.device("cpu"),
                           raw_path)  # fmt: skip
        got[on] = tr.run(variant)["losses"]
    np.testing.assert_array_equal(got[False], got[True])


def test_graph_path_two_process_variants(raw_path):
    """The preprocessing process takes the switch from each command's Config."""
    helpers = corun.Helpers(torch.device("cpu"), raw_path, 0, cpu_workers=0)
    try:
        got = {}
        for on in (False, True):
            tr = corun.Trainer(corun.Config(**SMALL, check=True, graphs=on), 0,
                               torch.device("cpu"), raw_path, helpers)  # fmt: skip
            got[on] = [tr.run(v)["losses"] for v in ("rap_process", "rap_no_mapping")]
        np.testing.assert_array_equal(got[False], got[True])
    finally:
        helpers.close()


def test_fused_ops_equal_with_the_cache_on(setup, fresh_cache):
    cfg, progs, raw = setup
    for name in ("rap", "mps"):
        want = corun.preprocess(raw, progs[name], 1, cfg, 0, torch.device("cpu"))
        with fused.cached_constants(True):
            got = corun.preprocess(raw, progs[name], 1, cfg, 0, torch.device("cpu"))
            again = corun.preprocess(raw, progs[name], 1, cfg, 0, torch.device("cpu"))
        _same(got, want)
        _same(again, want)
    assert fresh_cache


def test_profiler_keeps_fresh_constants_when_timing_eagerly(fresh_cache):
    """Timed eagerly (``--no-graphs``, or no CUDA device even with ``graphs``), the cost-model
    profiler's fused calls build their constants per call, as on the eager path; only a CUDA
    capture turns the cache on, as the stage runner does."""
    from rap_share import profile

    for graphs_on in (False, True):
        rows = profile.profile_kernels(["sigrid_hash"], [2], [1], [16], torch.device("cpu"),
                                       0, 1, progress=False, graphs=graphs_on)  # fmt: skip
        assert not rows[0]["graph"]
    assert not fresh_cache and fused.constants_cached() is False
    fused.run("sigrid_hash", [Column(torch.arange(8))], [{"salt": 0, "max_value": 10}])
    assert not fresh_cache


# ------------------------------------------------------------------ packing, runner
def test_pack_roundtrip():
    cols = {"a": Column(np.arange(4), None, np.array([1, 0, 1, 1], bool)),
            "b": Column(np.arange(4) * 2), "c": Column(np.ones(4, np.float32))}  # fmt: skip
    host, layout = pack_columns(cols)
    assert len(host) == 3  # int64 values, their masks, float32 values
    env = unpack_columns(host, layout)
    for k, c in cols.items():
        assert np.array_equal(env[k].values.numpy(), c.values)
        assert (env[k].valid is None) == (c.valid is None)
    assert env["a"].valid.tolist() == [True, False, True, True]


def test_packed_load_env_equals_the_default(setup):
    from rap_share.runtime import load_env

    _, progs, raw = setup
    idx = raw.rows(0, 64, 1, 0)
    loc, glo = raw.take(progs["rap"].raw_local, idx), raw.take(progs["rap"].raw_global, idx)
    a, b = load_env(loc, glo, "cpu"), load_env(loc, glo, "cpu", packed=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].values, b[k].values)
        assert (a[k].valid is None) == (b[k].valid is None)
        if a[k].valid is not None:
            assert torch.equal(a[k].valid, b[k].valid)


def test_runner_cpu_falls_back_and_equals_preprocess(setup):
    cfg, progs, raw = setup
    r = StagedRunner(raw, progs["rap"], cfg, 0, torch.device("cpu"))
    assert not r.graphed and "not a CUDA device" in r.note
    for it in range(3):
        _same(r.run_all(it), corun.preprocess(raw, progs["rap"], it, cfg, 0, torch.device("cpu")))
    off = StagedRunner(raw, progs["rap"], cfg, 0, torch.device("cpu"), graphs=False)
    assert off.note == "eager (graphs off)"


def test_runner_capture_failure_falls_back(setup, monkeypatch):
    cfg, progs, raw = setup

    def boom(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StagedRunner, "_capture", boom)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    r = StagedRunner(raw, progs["rap"], cfg, 0, torch.device("cuda", 0))
    assert not r.graphed and r.note.startswith("eager (capture failed: RuntimeError")


@pytest.mark.parametrize("on", [False, True])
def test_diagnostics_rows_and_summary(setup, tmp_path, on):
    _, _, raw = setup
    path = str(tmp_path / "raw.npz")
    raw.save(path)
    tr = corun.Trainer(corun.Config(plan="plan0", batch=64, steps=2, warmup=1, solver="greedy",
                                    embedding_dim=8, max_table_rows=1000, graphs=on), 0,
                       torch.device("cpu"), path)  # fmt: skip
    diag = tr.prep_diagnostics(n=1)
    assert diag["unfused"]["wall_ms"] > 0 and diag["graphs"] is on
    assert diag["unfused_launches"] > diag["fused_launches"]
    assert ("fused_runner" in diag) is on and (getattr(tr, "_runner", None) is not None) is on
    runs = []
    for v in ("ideal", "rap"):
        res = tr.run(v)
        res.update(config=corun.config_dict(tr.cfg), device="cpu", mps=False, prep=diag)
        runs.append(res)
    rows = figures.to_rows(runs, "figure10", "none")
    thr = [r for r in rows if r["metric"] == "throughput"]
    assert all(r["prep"] == diag and set(r["stage_ms"]) == set(STAGES) for r in thr)
    assert all(r["graphs"] is on for r in thr)
    text = "\n".join(figures.diagnostics(thr))
    assert "preprocessing alone" in text and "Ideal -> RAP" in text
    assert ("stage runner" in text) is on
    # the docs page says which path the run used, for either value
    from rec_common.results import write_rows

    write_rows(tmp_path / "out" / "figure10.jsonl", rows)
    page = figures.write_page(tmp_path / "out", tmp_path / "figures.md").read_text()
    want = "CUDA-graph path (default)" if on else "eager path (`--no-graphs`)"
    other = "eager path (`--no-graphs`)" if on else "CUDA-graph path (default)"
    assert f"; preprocessing: {want}; trainer on high-priority streams" in page  # defaults
    assert other not in page
    assert figures.path_note([{"graphs": True}, {"graphs": False}]) == (
        "CUDA-graph path (default) and eager path (`--no-graphs`)")  # fmt: skip
    # a regenerated page keeps the notes a person added below the figures, once
    notes = "## Runs of some day\n\nwhat was learned\n"
    (tmp_path / "figures.md").write_text(page + notes)
    again = figures.write_page(tmp_path / "out", tmp_path / "figures.md").read_text()
    assert again == page + notes and again.count("## figure10") == 1
    assert figures.path_note([{"variant": "rap"}]) == ""  # rows older than the switch


def test_const_cache_never_frees_a_cached_tensor(monkeypatch):
    """Run 2: the cache was cleared when full, freeing tensors that captured graphs and other
    streams still read. Full now means: keep every entry, hand out uncached tensors."""
    monkeypatch.setattr(fused, "_CONST", {})
    monkeypatch.setattr(fused, "_CONST_MAX", 3)
    with fused.cached_constants(True):
        first = [fused._cid([i + 1], torch.device("cpu")) for i in range(3)]
        extra = fused._cid([99], torch.device("cpu"))
        assert extra.tolist() == [0] * 99 and len(fused._CONST) == 3
        for i, t in enumerate(first):  # the same objects: nothing was dropped
            assert fused._cid([i + 1], torch.device("cpu")) is t
    assert fused._cid([1], torch.device("cpu")) is not first[0]  # off: a fresh tensor


# ------------------------------------------------------------------ GPU
# The default path's GPU tests: a plain ``pytest -m gpu`` (gpu_check.sh's tests step) runs
# them; skipped without a CUDA GPU or where ``RAP_SHARE_GRAPHS=0`` selects the eager path.
gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or not graphs.enabled(),
    reason="needs a CUDA GPU, and RAP_SHARE_GRAPHS not 0 (the CUDA-graph path's GPU tests)",
)


@pytest.mark.gpu
@gpu
def test_runner_graphs_equal_eager_on_gpu(setup):
    cfg, progs, raw = setup
    dev = torch.device("cuda", 0)
    r = StagedRunner(raw, progs["rap"], cfg, 0, dev)
    assert r.graphed, r.note
    for it in range(4):  # both slots, twice
        r.load(it)
        for s in STAGES:
            r.stage(s, it)
        torch.cuda.synchronize()
        _same(r.outputs(it), corun.preprocess(raw, progs["rap"], it, cfg, 0, dev))


@pytest.mark.gpu
@gpu
def test_runner_outputs_survive_the_other_slot_on_gpu(setup):
    """Run 2: both slots shared one graph pool, so replaying batch i + 1 (other slot) wrote
    into batch i's outputs; check batch i after batch i + 1 ran, as the trainer reads it."""
    cfg, progs, raw = setup
    dev = torch.device("cuda", 0)
    r = StagedRunner(raw, progs["rap"], cfg, 0, dev)
    assert r.graphed, r.note
    pools = {id(s["pool"]) for s in r._slots}
    assert len(pools) == 2
    r.run_all(0)
    for it in range(5):
        r.run_all(it + 1)
        torch.cuda.synchronize()
        _same(r.outputs(it), corun.preprocess(raw, progs["rap"], it, cfg, 0, dev))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("plan", ["plan0", "plan1"])
def test_graph_outputs_and_losses_equal_the_eager_path_on_gpu(raw_path, plan):
    """CUDA-graph vs eager path on the GPU, over a few steps: the preprocessed batches (graph
    replay vs eager launches) are equal and every checked batch equals the numpy reference;
    the losses of rap, ideal and cuda_stream agree (the same inputs; only the trainer's own
    atomics may differ in the last bits)."""
    dev = torch.device("cuda", 0)
    cfgs = {on: corun.Config(**{**SMALL, "batch": 512, "steps": 4, "warmup": 2}, plan=plan,
                             graphs=on) for on in (False, True)}  # fmt: skip
    trs = {on: corun.Trainer(cfgs[on], 0, dev, raw_path) for on in (False, True)}
    runner = trs[True].rap_runner()
    assert runner.graphed, runner.note
    prog = trs[False].progs["rap"]
    for it in range(4):
        got = runner.run_all(it)
        torch.cuda.synchronize()
        _same(got, corun.preprocess(trs[False].raw, prog, it, cfgs[False], 0, dev))
    for v in ("rap", "ideal", "cuda_stream"):  # unchecked: no host syncs between the steps
        a, b = (trs[on].run(v)["losses"] for on in (False, True))
        assert np.all(np.isfinite(b)), (v, b)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=v)
    trs[True].cfg.check = True  # and every batch the graphed rap trains on == the reference
    assert np.all(np.isfinite(trs[True].run("rap")["losses"]))


@pytest.mark.gpu
@gpu
def test_runner_pins_every_distinct_batch_and_folds_ids_on_gpu(setup, monkeypatch):
    """The graphed runner packs the raw rows of each of the ``batch_period`` distinct batches
    into pinned memory once; batches past the period reuse them and still equal the eager
    path, and with ``fold`` the captured outputs also carry the ids modulo the table sizes."""
    cfg, progs, raw = setup
    dev = torch.device("cuda", 0)
    fold = [3 + i for i in range(len(progs["rap"].sparse_keys))]
    r = StagedRunner(raw, progs["rap"], cfg, 0, dev, fold=fold)
    assert r.graphed, r.note
    period = graphs.batch_period(raw.num_rows, cfg.batch, cfg.world)
    assert len(r._pinned) == period and f"raw rows pinned ({period} batches" in r.note
    assert all(b.is_pinned() and b.dtype == torch.uint8 for b in r._pinned)
    for it in (0, period - 1, period, period + 1):
        got = r.run_all(it)
        torch.cuda.synchronize()
        want = corun.preprocess(raw, progs["rap"], it, cfg, 0, dev)
        _same(got, want)
        for (v, _), f, n in zip(want["sparse"], got["folded"], fold):
            torch.testing.assert_close(f, torch.remainder(v.to(torch.int64), n))
    # above the pinned-memory limit each load packs its own batch, with the same outputs
    monkeypatch.setattr(graphs, "PREPACK_MAX_BYTES", 0)
    r = StagedRunner(raw, progs["rap"], cfg, 0, dev)
    assert r.graphed and not r._pinned and "raw rows packed per batch" in r.note, r.note
    for it in (0, 1, 2):
        got = r.run_all(it)
        torch.cuda.synchronize()
        _same(got, corun.preprocess(raw, progs["rap"], it, cfg, 0, dev))


def test_blob_views_round_trip_the_packed_columns(setup):
    """A batch's packed raw columns (several dtypes) written into one byte buffer at
    :func:`graphs.blob_layout`'s offsets read back unchanged through :func:`graphs.blob_views`,
    every view aligned for its dtype; a second buffer with the same layout takes the next
    batch in one copy."""
    cfg, progs, raw = setup
    host, _ = pack_columns(corun.env_columns(raw, progs["rap"], 0, cfg, 0))
    assert len({h.dtype for h in host}) > 1
    offsets, nbytes = graphs.blob_layout(host)
    assert nbytes >= sum(h.numel() * h.element_size() for h in host)
    assert all(o % 256 == 0 for o in offsets)
    blob = torch.zeros(nbytes, dtype=torch.uint8)
    views = graphs.blob_views(blob, offsets, host)
    for v, h in zip(views, host):
        v.copy_(h)
    for v, h in zip(graphs.blob_views(blob, offsets, host), host):
        assert v.dtype == h.dtype and torch.equal(v, h)
    nxt, _ = pack_columns(corun.env_columns(raw, progs["rap"], 1, cfg, 0))
    other = torch.zeros_like(blob)
    for v, h in zip(graphs.blob_views(other, offsets, nxt), nxt):
        v.copy_(h)
    blob.copy_(other)
    assert all(torch.equal(v, h) for v, h in zip(views, nxt))  # the old views see the new batch
