"""Every role's flags: --help, validation, and the errors that stop a run before it starts."""

from __future__ import annotations

import importlib
import json

import pytest

from bagpipe.cli import run_main
from bagpipe.data import open_data, write_json_lines
from bagpipe.synthetic import synthetic_source

ROLES = ["oracle_cacher", "embedding_server", "trainer", "launch", "model_parallel", "torchrec_dmp",
         "quickstart", "figure9"]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_help_shows_defaults_and_example(role, capsys):
    mod = importlib.import_module(f"bagpipe.{role}")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and "default" in out


def oracle(argv, capsys):
    from bagpipe.oracle_cacher import main

    rc = run_main(main, argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--lookahead-value", "0"),
                                        ("--cleanup-batch-proportion", "0"),
                                        ("--cleanup-batch-proportion", "1.5")])  # fmt: skip
def test_bad_flags_are_usage_errors(flag, value, capsys, tmp_path):
    from bagpipe.oracle_cacher import main

    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path), flag, value])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_batch_must_divide_by_trainers(capsys, criteo_dir):
    rc, err = oracle(["--data", str(criteo_dir), "--mini-batch-size", "100",
                      "--world-size-trainers", "3"], capsys)  # fmt: skip
    assert rc == 1 and "not divisible by --world-size-trainers 3" in err


def test_missing_data_directory(capsys, tmp_path):
    rc, err = oracle(["--data", str(tmp_path / "nope")], capsys)
    assert rc == 1 and err.count("error:") == 1 and "no such directory" in err


def test_corrupt_json_lines(capsys, tmp_path):
    (tmp_path / "part_0.txt").write_text('{"label": 1, "dense": [1.0], "sparse": [3]}\n{oops\n')
    rc, err = oracle(["--data", str(tmp_path)], capsys)
    assert rc == 1 and "corrupt data file" in err and "part_0.txt:2" in err


def test_corrupt_criteo_directory(capsys, criteo_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in criteo_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "sparse.npy").write_bytes(b"not numpy")
    rc, err = oracle(["--data", str(bad)], capsys)
    assert rc == 1 and "sparse.npy" in err


def test_json_lines_round_trip(tmp_path):
    src = synthetic_source(300, [20, 30, 40], global_batch=50, num_dense=4, seed=2)
    write_json_lines(src, tmp_path, parts=3)
    back = open_data(tmp_path, 50)
    assert back.table_sizes == (20, 30, 40) or all(
        a <= b for a, b in zip(back.table_sizes, src.table_sizes)
    )
    d1, s1, l1 = src.batch(3)
    d2, s2, l2 = back.batch(3)
    assert (d1 == d2).all() and (l1 == l2).all()
    assert all((a == b).all() for a, b in zip(s1.values, s2.values))


def test_ragged_json_lines(tmp_path):
    rows = [{"label": i % 2, "dense": [], "sparse": [[1, 2], [i % 5], []]} for i in range(8)]
    (tmp_path / "part_0.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = open_data(tmp_path, 4)
    _, sparse, _ = src.batch(1)
    assert sparse.values[0].tolist() == [1, 2] * 4 and sparse.offsets[2].tolist() == [0] * 5


def test_emb_info_file(tmp_path):
    from bagpipe.data import read_table_sizes
    from bagpipe.errors import BagpipeError

    (tmp_path / "sizes").write_text("10\n20\n")
    assert read_table_sizes(tmp_path / "sizes") == [10, 20]
    (tmp_path / "bad").write_text("10\nx\n")
    with pytest.raises(BagpipeError, match="bad:2"):
        read_table_sizes(tmp_path / "bad")


def test_row_optimizers_reject_inexact_settings():
    import torch

    from bagpipe.errors import BagpipeError
    from bagpipe.optim import row_optimizer

    with pytest.raises(BagpipeError, match="momentum"):
        row_optimizer(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})
    with pytest.raises(BagpipeError, match="not supported"):
        row_optimizer(torch.optim.Adam, {"lr": 0.1})
