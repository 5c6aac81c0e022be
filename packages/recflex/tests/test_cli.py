"""The command-line tools: help, exit codes, outputs (CPU)."""

from __future__ import annotations

import json

import pytest

from recflex import bench, build, run
from recflex import compile as compile_cli
from recflex.plan import default_plan


@pytest.mark.parametrize("mod", [compile_cli, run, bench])
def test_help_shows_defaults_and_example(mod, capsys):
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "example: python -m recflex." in text and "(default:" in text


def test_run_on_cpu_checks_the_output(capsys):
    assert run.main(["--model", "test", "--batches", "3", "--check"]) == 0
    out = capsys.readouterr().out
    assert "model test: 3 batches" in out and "max |diff| vs embedding_bag" in out


def test_run_rejects_a_plan_for_other_tables(tmp_path, capsys):
    path = default_plan([16] * 6, [5] * 6).save(tmp_path / "p.json")
    assert run.main(["--model", "test", "--plan", str(path), "--batches", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "feature 0 ('f0') has 1024 rows" in err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(["--model", "Z"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        bench.main(["--variants", "recflex,nope"])
    assert exc.value.code == 2


def test_bench_without_gpu_explains(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench.main(["--model", "test", "--batches", "1"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc is not on PATH")
def test_compile_prints_kernel_stats(capsys, tmp_path):
    src = tmp_path / "k.cu"
    assert (
        compile_cli.main(
            ["--model", "test", "--compiler", "nvcc", "--json", "--source-out", str(src)]
        )
        == 0
    )
    stats = json.loads(capsys.readouterr().out)
    assert stats["features"] == 6 and stats["registers"] > 0
    assert 1 <= stats["occupancy_blocks_per_sm"] <= 8
    assert "recflex_fused" in src.read_text()


def test_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import json

    from rec_common.results import make_row
    from recflex import figures

    rows = [
        make_row(package="recflex", benchmark="kernel", workload=f"recflex-{m}", variant=v,
                 metric="kernel_time", unit="us", value=t)
        for m, v, t in [("A", "recflex", 100.0), ("A", "fbgemm-tbe", 150.0), ("B", "recflex", 80.0),
                        ("B", "torch", 40.0)]
    ]  # fmt: skip
    res = tmp_path / "k.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in rows))
    norm = figures.normalized(rows)
    assert norm["recflex-A"] == {"recflex": 1.0, "fbgemm-tbe": 100 / 150}
    assert norm["recflex-B"]["torch"] == 2.0
    assert figures.main(["kernel", "--results", str(res), "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "recflex-kernel.png").stat().st_size > 1000
    assert figures.main(["kernel", "--results", str(tmp_path / "none.jsonl")]) == 1
    with pytest.raises(SystemExit):
        figures.main(["nope"])
