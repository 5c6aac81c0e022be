"""The figures on the CPU from synthetic reports and rows (matplotlib Agg): the data each
figure plots, read back from the drawn axes, and the PNG files the CLI writes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from rec_common.results import make_row
from recflex import ablations, figures


def report(model="A", mutation=True, **kw) -> dict:
    r = {
        "model": model,
        "cost_source": "synthetic",
        "stage": "done",
        "occupancy": 4,
        "cost": 100.0,
        "global_curve": {"2": 120.0, "4": 100.0, "8": None},
        "cluster_info": [
            {"cluster": 0, "features": ["f0", "f1"], "dim": 16, "multi_hot": True,
             "scores_at_optimum": [2.0, 8.0, None, 4.0]},
            {"cluster": 1, "features": ["f2"], "dim": 8, "multi_hot": False,
             "scores_at_optimum": [3.0, 3.3]},
            {"cluster": 2, "features": ["f3"], "dim": 4, "multi_hot": False,
             "scores_at_optimum": [None, None]},
        ],
        "ablations": {
            "naive": {"cost": 125.0},
            "binding": {"runtime": 100.0, "static-mean": 200.0, "static-max": 400.0},
            "dispatch": {"if-else": 100.0, "jump-table": 110.0},
        },
    }  # fmt: skip
    if mutation:
        r["ablations"]["mutation"] = [
            {"cluster": 0, "feature": "f0", "dim": 16, "of": 4, "candidates": ["a", "b", "c"],
             "costs": [100.0, None, 50.0], "chosen": 2, "rank_of_chosen": 0},
        ]  # fmt: skip
    r.update(kw)
    return r


def bars(ax) -> dict[str, list[float]]:
    """Bar heights per legend label."""
    return {c.get_label(): [b.get_height() for b in c] for c in ax.containers}


def test_ablation_data_and_bars():
    rows = ablations.rows("B", 50.0, {"naive": {"cost": 100.0},
                                      "dispatch": {"if-else": 50.0, "jump-table": 25.0}},
                          "us", "dev")  # fmt: skip
    data = figures.ablation_data([report("A")], rows)
    assert data["A"] == {"two-stage": 1.0, "naive": 0.8, "static-mean": 0.5,
                         "static-max": 0.25, "jump-table": 100 / 110}  # fmt: skip
    assert data["B"] == {"two-stage": 1.0, "naive": 0.5, "jump-table": 2.0}
    fig = figures.draw_ablations(data)
    got = bars(fig.axes[0])
    assert list(got) == ["two-stage", "naive", "static-mean", "static-max", "jump-table"]
    assert got["naive"] == [0.8, 0.5] and got["static-max"] == [0.25, 0.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["A", "B"]
    # a failed (infinite) variant is left out, a report without ablations gives nothing
    inf = report("C", ablations={"binding": {"static-mean": float("inf"), "static-max": 200.0}})
    assert figures.ablation_data([inf, report("D", ablations={})]) == {
        "C": {"two-stage": 1.0, "static-max": 0.5}
    }
    with pytest.raises(ValueError, match="no ablation results"):
        figures.draw_ablations({})


def test_opportunity_data_and_points():
    data = figures.opportunity_data(report())
    assert [d["cluster"] for d in data] == [0, 1]  # by spread; all-failed cluster 2 dropped
    assert data[0]["normalized"] == [1.0, 0.5, 0.25] and data[0]["spread"] == 4.0
    assert data[0]["failed"] == 1 and data[0]["label"] == "f0 (dim 16)"
    fig = figures.draw_opportunity(data)
    pts = sorted(tuple(p) for p in fig.axes[0].collections[0].get_offsets())
    assert pts == [(0, 0.25), (0, 0.5), (0, 1.0)]
    assert list(fig.axes[1].lines[0].get_xdata()) == pytest.approx([1.1, 4.0])
    # a run cut before the global stage: local_scores at the most measured occupancy
    cut = {"model": "A", "stage": "global", "local_scores": [
        {"cluster": 0, "occupancy": 4, "scores": [1.0, 3.0]},
        {"cluster": 1, "occupancy": 4, "scores": [2.0, None]},
        {"cluster": 0, "occupancy": 8, "scores": [5.0, 1.0]},
    ]}  # fmt: skip
    d = figures.opportunity_data(cut)
    assert [(x["cluster"], x["occupancy"], x["spread"]) for x in d] == [(0, 4, 3.0), (1, 4, 1.0)]


def test_mutation_data_and_lines():
    data = figures.mutation_data(report())
    assert data == [{"feature": "f0", "dim": 16, "normalized": [0.5, None, 1.0], "chosen": 2,
                     "rank_of_chosen": 0, "of": 4}]  # fmt: skip
    fig = figures.draw_mutation(data)
    ax = fig.axes[0]
    assert list(ax.lines[0].get_xdata()) == [0, 2] and list(ax.lines[0].get_ydata()) == [0.5, 1.0]
    assert [tuple(p) for p in ax.collections[0].get_offsets()] == [(2, 1.0)]  # circled choice
    assert figures.mutation_data(report(mutation=False)) == []


def test_e2e_rows_are_normalized_apart_from_kernel_rows():
    rows = [
        make_row(package="recflex", benchmark="e2e", workload="recflex-A", variant=v,
                 metric="e2e_latency", unit="us", value=t)
        for v, t in [("recflex", 200.0), ("fbgemm-tbe", 300.0), ("torch", 800.0)]
    ] + [make_row(package="recflex", benchmark="kernel", workload="recflex-A", variant="recflex",
                  metric="kernel_time", unit="us", value=1.0)]  # fmt: skip
    assert figures.normalized(rows, "e2e_latency") == {
        "recflex-A": {"recflex": 1.0, "fbgemm-tbe": 200 / 300, "torch": 0.25}
    }
    assert figures.normalized(rows) == {"recflex-A": {"recflex": 1.0}}
    tuned = make_row(package="recflex", benchmark="kernel", workload="recflex-A",
                     variant="recflex", metric="kernel_time", unit="us", value=0.5,
                     plan="/tmp/recflex-tune/tuned-A.json")  # fmt: skip
    assert figures.normalized([*rows, tuned]) == {
        "recflex-A": {"recflex": 1.0, "recflex-tuned": 2.0}
    }
    assert figures.normalized([tuned]) == {"recflex-A": {"recflex-tuned": 1.0}}
    beside = make_row(package="recflex", benchmark="kernel", workload="recflex-A",
                      variant="recflex-default", metric="kernel_time", unit="us", value=0.8,
                      plan="/tmp/recflex-tune/tuned-A.json")  # fmt: skip
    assert figures.normalized([tuned, beside]) == {  # the heuristic plan keeps its name
        "recflex-A": {"recflex-tuned": 1.0, "recflex-default": 0.5 / 0.8}
    }


def test_cli_draws_every_figure(tmp_path, capsys):
    res = tmp_path / "kernel.jsonl"
    rows = [
        make_row(package="recflex", benchmark=b, workload="recflex-A", variant=v, metric=m,
                 unit="us", value=t)
        for b, m in (("kernel", "kernel_time"), ("e2e", "e2e_latency"))
        for v, t in (("recflex", 100.0), ("fbgemm-tbe", 150.0))
    ]  # fmt: skip
    res.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tuned-A.report.json").write_text(json.dumps(report()))
    (tmp_path / "tuned-B.report.json").write_text(json.dumps(report("B", mutation=False)))
    figs = ["kernel", "e2e", "tuning", "ablations", "opportunity", "mutation"]
    argv = [*figs, "--results", str(res), "--out-dir", str(tmp_path / "png")]
    assert figures.main(argv) == 0
    out = capsys.readouterr().out
    assert "skip mutation" in out and "tuned-B" in out
    want = ["recflex-kernel.png", "recflex-e2e.png", "recflex-ablations.png",
            "recflex-tuning-tuned-A.png", "recflex-tuning-tuned-B.png",
            "recflex-opportunity-tuned-A.png", "recflex-opportunity-tuned-B.png",
            "recflex-mutation-tuned-A.png"]  # fmt: skip
    import matplotlib.image as mpimg

    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(want)
    for name in want:
        img = mpimg.imread(tmp_path / "png" / name)
        assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.05, name
    # one report given explicitly; a missing one is an error
    assert figures.main(["opportunity", "--report", str(tmp_path / "none.json")]) == 1
    assert "not found" in capsys.readouterr().err
    only_rows = ["e2e", "--results", str(tmp_path / "none.jsonl")]
    assert figures.main(only_rows) == 1
