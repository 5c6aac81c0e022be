"""Parser errors name the line; graph widths, features, mapping and table ownership."""

from __future__ import annotations

import pytest

from rap_share.errors import PlanError, ScriptError
from rap_share.graph import PrepGraph, balance_tables
from rap_share.plans import PLANS, plan_placement, plan_script
from rap_share.script import parse, render

GOOD = """
# comment line
from torcharrow import functional
df["int_0"] = df["int_0"].fill_null(0)   # trailing comment
df["b"] = functional.bucketize(df["int_0"], [0.5, 1.0,
                                             1.5])
df["int_0"] = functional.logit(df["int_0"], eps=1e-5)
df["c"] = functional.sigrid_hash(df["cat_0"], 0, max_value=100)
df["c"] = functional.firstx(df["c"], 1)
df["o"] = functional.onehot(df["int_1"], 0, 16, 8)
df["o"] = functional.ngram(df["o"], 4)
df["o"] = functional.firstx(df["o"], 3)
df["o"] = functional.mapid(df["o"], [3, 1])
"""


def test_parse_good_script():
    st = parse(GOOD)
    assert [s.op for s in st] == [
        "fill_null",
        "bucketize",
        "logit",
        "sigrid_hash",
        "firstx",
        "onehot",
        "ngram",
        "firstx",
        "mapid",
    ]
    assert st[1].params == {"borders": [0.5, 1.0, 1.5]} and st[1].line == 5
    assert st[3].params == {"salt": 0, "max_value": 100}
    again = parse(render(st))
    assert [(s.out, s.op, s.input, s.params) for s in again] == [
        (s.out, s.op, s.input, s.params) for s in st
    ]


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (
            'df["a"] = df["a"].fill_null(0)\ndf["b"] = functional.logit(df["a"], 1e-5\n',
            2,
            "syntax error",
        ),
        (
            'df["a"] = df["a"].fill_null(0)\n\ndf["b"] = functional.nope(df["a"])\n',
            3,
            "unknown op 'nope'",
        ),
        ('df["b"] = functional.bucketize(df["a"], [2, 1])\n', 1, "borders must be sorted"),
        ("x = 3\n", 1, "must be a column like"),
        ('df["b"] = functional.clamp(df["a"], 5, 1)\n', 1, "clamp on column 'b': lo must be <= hi"),
        ('df["b"] = functional.ngram(df["a"], n=0)\n', 1, "ngram on column 'b': n must be >= 1"),
        ('df["b"] = functional.logit(df["a"], "x")\n', 1, "is not a number"),
        ('df["b"] = functional.logit(df["a"], 0.1, 0.2)\n', 1, "takes 1 arguments"),
        ('df["b"] = other.logit(df["a"])\n', 1, "unknown call"),
        ("# only comments\n", 0, "no preprocessing statements"),
    ],
)
def test_parse_errors_name_the_line(text, line, match):
    with pytest.raises(ScriptError, match=match) as exc:
        parse(text, source="PRE.py")
    assert exc.value.line == line
    assert str(exc.value).startswith(f"PRE.py:{line}:")


def test_graph_widths_features_and_ranges():
    g = PrepGraph(parse(GOOD))
    by_out = {n.out: n for n in g.nodes}  # last writer of each column
    assert by_out["o"].op == "mapid" and by_out["o"].width == 3  # mapid keeps firstx(3)'s width
    widths = [n.width for n in g.nodes]
    assert widths == [1, 1, 1, 1, 1, 8, 20, 3, 3]
    assert [f.name for f in g.dense_features] == ["int_0"]
    sparse = {f.name: f for f in g.sparse_features}
    assert sparse["b"].table_size == 4 and sparse["c"].table_size == 100
    assert sparse["o"].table_size == 4 and sparse["o"].width == 3
    assert g.raw_columns == ["cat_0", "int_0", "int_1"]


def test_dense_feature_must_be_scalar():
    with pytest.raises(PlanError, match="dense features need one value per row"):
        PrepGraph(
            parse(
                'df["x"] = functional.onehot(df["int_0"], 0, 4, 4)\n'
                'df["x"] = functional.mapid(df["x"], [-1, 1])\n'
            )
        )  # no id range


def test_mapping_dense_everywhere_sparse_on_owner():
    g = PrepGraph(parse(GOOD))
    gpus = g.map_to_gpus(2, placement=[1, 0, 1])  # b -> 1, c -> 0, o -> 1
    local = [{t.node.id for t in gg.tasks if t.batch == "local"} for gg in gpus]
    assert local[0] == local[1] == {0, 2}  # fill_null + logit of int_0 on both
    glob = [{t.node.id for t in gg.tasks if t.batch == "global"} for gg in gpus]
    assert glob[0] == {3, 4}  # c's chain only on GPU 0
    assert glob[1] == {0, 1, 5, 6, 7, 8}  # fill_null duplicated for bucketize on GPU 1
    assert gpus[1].raw_global == ["int_0", "int_1"] and gpus[0].raw_global == ["cat_0"]
    assert [f.name for f in gpus[1].sparse_features] == ["b", "o"]


def test_artifact_plan0_mapping_matches_the_paper():
    g = PrepGraph(parse(plan_script("plan0")))
    assert len(g.dense_features) == 13 and len(g.sparse_features) == 27
    gpus = g.map_to_gpus(4, plan_placement("plan0", 4))
    kinds = {}
    for t in gpus[0].tasks:
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    assert kinds == {
        "fill_null@local": 13,
        "logit@local": 13,
        "fill_null@global": 7,
        "bucketize@global": 1,
        "sigrid_hash@global": 6,
        "firstx@global": 6,
    }
    assert sorted(len(gg.sparse_features) for gg in gpus) == [6, 7, 7, 7]


@pytest.mark.parametrize("name", PLANS)
def test_builtin_plans_parse(name):
    g = PrepGraph(parse(plan_script(name)))
    assert len(g.sparse_features) == {"plan0": 27, "plan1": 27, "plan2": 52, "plan3": 104}[name]


def test_balance_tables_and_placement_errors():
    assert balance_tables([5, 5, 5, 5], 2) == [0, 1, 0, 1]
    sizes = [1000, 10, 10, 990, 500, 500]
    p = balance_tables(sizes, 2)
    loads = [sum(s for s, q in zip(sizes, p) if q == g) for g in range(2)]
    assert abs(loads[0] - loads[1]) <= 20
    g = PrepGraph(parse(GOOD))
    with pytest.raises(PlanError, match="placement: 2 entries for 3"):
        g.map_to_gpus(2, [0, 1])
    with pytest.raises(PlanError, match=r"placement\[1\] = 5"):
        g.map_to_gpus(2, [0, 5, 1])
