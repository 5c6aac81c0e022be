"""Timer, result rows, plots and the environment report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rec_common import results, timing


def test_quantile_matches_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100):
        xs = rng.random(n).tolist()
        for q in (0.0, 0.2, 0.5, 0.8, 1.0):
            assert timing.quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))
    with pytest.raises(ValueError, match="no samples"):
        timing.quantile([], 0.5)


def test_benchmark_cpu_counts_calls_and_orders_quantiles():
    calls = []
    t = timing.benchmark(lambda: calls.append(1), warmup=3, iters=11, device="cpu")
    assert len(calls) == 14
    assert t.n == 11 and len(t.samples) == 11 and t.device == "cpu"
    assert t.p20 <= t.median <= t.p80
    assert all(s >= 0 for s in t.samples)
    with pytest.raises(ValueError, match="iters must be >= 1"):
        timing.benchmark(lambda: None, iters=0, device="cpu")


def test_benchmark_setup_runs_outside_timing():
    import time

    t = timing.benchmark(
        lambda: None, warmup=0, iters=3, device="cpu", setup=lambda: time.sleep(0.01)
    )
    assert t.median < 5000  # the 10 ms sleep is not inside the timed region


@pytest.mark.gpu
def test_benchmark_cuda_with_flush():
    import torch

    x = torch.randn(1 << 20, device="cuda")
    t = timing.benchmark(lambda: x.mul_(1.0), warmup=2, iters=5, flush_l2=True, device="cuda")
    assert t.n == 5 and t.median > 0 and t.device != "cpu"


def test_make_row_has_every_field_and_ratio():
    t = timing.summarize([10.0, 20.0, 30.0], "cpu")
    row = results.make_row(
        package="rec-common", benchmark="b", workload="w", variant="fast", metric="latency",
        unit="us", timing=t, baseline="slow", baseline_value=40.0, batch=128,
    )  # fmt: skip
    results.check_row(row)
    assert row["value"] == 20.0 and row["p20"] == t.p20 and row["n"] == 3
    assert row["ratio"] == pytest.approx(2.0)  # time: baseline / value
    assert row["batch"] == 128 and row["gpu"] == "cpu"
    thr = results.make_row(package="p", benchmark="b", workload="w", variant="v",
                           metric="throughput", unit="rows/s", value=300.0,
                           baseline="base", baseline_value=100.0)  # fmt: skip
    assert thr["ratio"] == pytest.approx(3.0)  # throughput: value / baseline
    with pytest.raises(ValueError, match="clashes"):
        results.make_row(package="p", benchmark="b", workload="w", variant="v",
                         metric="m", unit="us", value=1.0, gpu="x")  # fmt: skip
    with pytest.raises(ValueError, match="needs a value"):
        results.make_row(
            package="p", benchmark="b", workload="w", variant="v", metric="m", unit="us"
        )


def test_add_ratios_pairs_matching_rows():
    def row(variant, value, batch):
        return results.make_row(package="p", benchmark="b", workload="w", variant=variant,
                                metric="latency", unit="us", value=value, batch=batch)  # fmt: skip

    rows = [
        row("torch", 100.0, 1),
        row("ours", 50.0, 1),
        row("torch", 10.0, 2),
        row("ours", 20.0, 2),
    ]
    results.add_ratios(rows, "torch")
    assert rows[1]["ratio"] == pytest.approx(2.0) and rows[1]["baseline"] == "torch"
    assert rows[3]["ratio"] == pytest.approx(0.5)
    assert rows[0]["ratio"] is None


def test_add_ratios_ignores_variant_only_knobs_and_explicit_keys():
    def row(variant, value, **kw):
        return results.make_row(package="p", benchmark="b", workload="w", variant=variant,
                                metric="latency", unit="us", value=value, **kw)  # fmt: skip

    rows = [
        row("baseline", 100.0, hotness="low"),
        row("baseline", 80.0, hotness="high"),
        row("optmt", 50.0, hotness="low", regcap=42),  # regcap only on the variant
        row("optmt", 40.0, hotness="high", regcap=32),
    ]
    results.add_ratios(rows, "baseline")
    assert rows[2]["ratio"] == pytest.approx(2.0)
    assert rows[3]["ratio"] == pytest.approx(2.0)
    # Explicit keys: without hotness in `on`, two baselines match -> ambiguous, left alone.
    fresh = [dict(r, ratio=None, baseline=None) for r in rows]
    results.add_ratios(fresh, "baseline", on=("workload", "metric"))
    assert fresh[2]["ratio"] is None
    results.add_ratios(fresh, "baseline", on=("workload", "metric", "hotness"))
    assert fresh[2]["ratio"] == pytest.approx(2.0)


def test_package_versions_fall_back_to_about(monkeypatch):
    from importlib import metadata

    def missing(dist):
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(metadata, "version", missing)
    import rec_common

    assert results.package_versions()["rec-common"] == rec_common.__version__


def test_write_and_read_rows(tmp_path):
    path = results.default_path("rec-common", "demo", root=tmp_path)
    rows = [results.make_row(package="rec-common", benchmark="demo", workload=f"w{i}", variant="v",
                             metric="latency", unit="us", value=float(i + 1)) for i in range(3)]  # fmt: skip
    results.write_rows(path, rows[:2])
    results.write_rows(path, rows[2:])
    back = results.read_rows(path)
    assert [r["workload"] for r in back] == ["w0", "w1", "w2"]
    with pytest.raises(ValueError, match="lacks the fields"):
        results.write_rows(path, [{"package": "x"}])
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"demo.jsonl:4: not a JSON object"):
        results.read_rows(path)


def test_plot_cli(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "r.jsonl"
    rows = []
    for batch in (1, 2, 4):
        for variant, v in (("torch", 10.0 * batch), ("ours", 4.0 * batch)):
            rows.append(results.make_row(package="p", benchmark="b", workload=f"b{batch}", variant=variant,
                                         metric="latency", unit="us", value=v, batch=batch))  # fmt: skip
    results.add_ratios(rows, "torch")
    results.write_rows(path, rows)
    from rec_common import plot

    out = tmp_path / "bar.png"
    assert plot.main([str(path), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    out2 = tmp_path / "line.png"
    assert (
        plot.main([str(path), "--out", str(out2), "--kind", "line", "--x", "batch", "--y", "ratio"])
        == 0
    )
    assert out2.exists()
    assert plot.main([str(path), "--out", str(out), "--metric", "nope"]) == 1
    assert plot.main([str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 1


def test_env_cli_json():
    proc = subprocess.run([sys.executable, "-m", "rec_common.env", "--json"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    report = json.loads(proc.stdout)
    assert report["packages"]["rec_common"] is not None
    assert "torchrec" in report["optional"] and report["cpu_count"] >= 1
    text = subprocess.run([sys.executable, "-m", "rec_common.env"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert "torch" in text and "optional:" in text


def test_git_commit_prefers_the_environment(monkeypatch):
    results.git_commit.cache_clear()
    monkeypatch.setenv("GIT_COMMIT", "abc1234")
    try:
        assert results.git_commit() == "abc1234"
    finally:
        results.git_commit.cache_clear()
