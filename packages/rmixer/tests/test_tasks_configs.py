"""Task files and model configs: both formats, and every malformed input named precisely."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import rmixer
from rmixer.configs import ConfigError, builtin_names, config_key, load, normalize
from rmixer.tasks import TaskError, read_tasks

TASKLISTS = Path(rmixer.__file__).parent / "tasklists"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_three_field_lines_with_comments_and_paths(tmp_path):
    write(tmp_path, "my.yaml", "model: dcn\nbatch_size: 64\nrows: 500\n")
    p = write(tmp_path, "t.txt", "# header\n\ncriteo_dlrm tiny_dlrm a  # trailing\ndcn my.yaml b\n")
    specs = read_tasks(p)
    assert [(s.name, s.model, s.config["model"]) for s in specs] == [
        ("a", "criteo_dlrm", "dlrm"), ("b", "dcn", "dcn")]  # fmt: skip
    assert specs[1].config["batch_size"] == 64
    assert specs[0].iterations == 20 and specs[0].source == f"{p}:3"
    assert read_tasks(p, iterations=7)[0].iterations == 7


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("dlrm tiny_dlrm a\ndlrm tiny_dlrm\n", 2, "expected 3 fields"),
        ("dlrm tiny_dlrm a extra\n", 1, "got 4"),
        ("dlrm no_such_config a\n", 1, "not found"),
        ("dcn tiny_dlrm a\n", 1, "does not match the config's model 'dlrm'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, text, line, match):
    p = write(tmp_path, "bad.txt", text)
    with pytest.raises(TaskError, match=match) as err:
        read_tasks(p)
    assert str(err.value).startswith(f"{p}:{line}: ")


def test_yaml_task_file(tmp_path):
    p = write(tmp_path, "t.yaml", """
jobs:
  - {model: dlrm, config: tiny_dlrm, name: one, iterations: 5}
  - model: din
    config: {model: din, batch_size: 16, rows: 50, num_items: 100, seq_len: 4}
    count: 3
""")  # fmt: skip
    specs = read_tasks(p)
    assert [s.name for s in specs] == ["one", "din-2.1", "din-2.2", "din-2.3"]
    assert specs[0].iterations == 5 and specs[1].config["seq_len"] == 4
    assert specs[1].source == f"{p}:4"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("jobs:\n  - {model: dlrm, config: tiny_dlrm, iters: 5}\n", r"t.yaml:2: unknown key"),
        ("jobs:\n  - {model: dlrm}\n", r"t.yaml:2: a job needs 'model' and 'config'"),
        ("jobs:\n  - {model: dlrm, config: tiny_dlrm, count: 0}\n", r"'count' must be a positive"),
        ("jobs:\n  - {model: din, config: {model: din, seq_len: -1}}\n", r"t.yaml:2: .*'seq_len'"),
        ("jobs: [\n", "not valid YAML"),
        ("tasks: []\n", "unknown top-level key"),
    ],
)
def test_malformed_yaml(tmp_path, text, match):
    with pytest.raises(TaskError, match=match):
        read_tasks(write(tmp_path, "t.yaml", text))


def test_empty_and_missing_task_files(tmp_path):
    with pytest.raises(TaskError, match="no jobs"):
        read_tasks(write(tmp_path, "e.txt", "# nothing\n"))
    with pytest.raises(TaskError, match="not found"):
        read_tasks(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"model": "bert"}, "'model' must be one of"),
        ({"model": "dlrm", "bottom": "1-2"}, r"unknown key\(s\) \['bottom'\]"),
        ({"model": "dlrm", "batch_size": 0}, "'batch_size' must be a positive integer"),
        ({"model": "dlrm", "rows": [1, 2]}, "needs 26 positive integers"),
        ({"model": "dlrm", "optimizer": "lamb"}, "'optimizer' must be one of"),
        ({"model": "dlrm", "lr": -1}, "'lr' must be a positive number"),
        ({"model": "dcn", "low_rank": 0}, "'low_rank' must be a positive integer or null"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_config_errors(raw, match):
    with pytest.raises(ConfigError, match=match):
        normalize(raw, "cfg")


def test_config_key_ignores_iterations_only():
    a = normalize({"model": "dlrm", "iterations": 5}, "a")
    b = normalize({"model": "dlrm", "iterations": 900}, "b")
    c = normalize({"model": "dlrm", "batch_size": 8}, "c")
    assert config_key(a) == config_key(b) != config_key(c)


def test_shipped_configs_load_and_lists_keep_the_artifacts_proportions():
    for name in builtin_names():
        load(name)
    roles = {"dcn_wide": "compute", "widedeep_large": "compute", "dlrm_mlperf": "compute",
             "din_long": "memory", "dlrm_bigemb": "memory", "deepfm_multihot": "bandwidth",
             "din_small": "low", "dcn_small": "low", "deepfm_small": "low"}  # fmt: skip
    for mix in ("balance", "compute", "memory", "bandwidth"):
        for n in (24, 72):
            specs = read_tasks(TASKLISTS / f"{mix}_{n}.txt")
            assert len(specs) == n
            assert len({s.name for s in specs}) == n, "identifiers must be unique"
            text = (TASKLISTS / f"{mix}_{n}.txt").read_text().split()
            counts = Counter(roles[w] for w in text if w in roles)
            if mix == "balance":
                assert counts == {"compute": n // 3, "memory": 7 * n // 24, "low": 9 * n // 24}
            elif mix == "bandwidth":  # multi-hot DeepFM and big-table DLRM, about 2:1
                assert counts["bandwidth"] + counts["memory"] == 2 * n // 3
                assert counts["bandwidth"] > counts["memory"] > 0
                assert counts["compute"] == counts["low"] == n // 6
            else:
                assert counts[mix] == 2 * n // 3 and counts["low"] == n // 6
