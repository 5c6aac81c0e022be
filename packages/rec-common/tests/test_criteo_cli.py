"""``python -m rec_common.criteo``: exit codes, messages and files, through a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "criteo_sample.txt"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rec_common.criteo", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)  # fmt: skip


def sample_lines() -> list[str]:
    return SAMPLE.read_text().splitlines()


def test_preprocess_writes_arrays_and_meta(tmp_path):
    out = tmp_path / "out"
    r = run("preprocess", SAMPLE, SAMPLE, "--out", out, "--workers", "2", "--chunk-rows", "4")
    assert r.returncode == 0, r.stderr
    assert f"wrote 12 rows (12 lines read, 0 skipped) to {out}" in r.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_rows"] == 12 and meta["options"]["table_sizes"] == "kaggle"
    assert np.load(out / "dense.npy").shape == (12, 13)
    assert np.load(out / "sparse.npy").dtype == np.int32
    assert not (out / ".criteo-work").exists()


def test_quiet_prints_nothing(tmp_path):
    r = run("preprocess", SAMPLE, "--out", tmp_path / "out", "--quiet", "--min-count", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["options"]["min_count"] == 2 and meta["table_sizes"][4] == 2  # C5: 25c83c98 x6


def test_bad_line_exits_1_naming_file_line_and_column(tmp_path):
    lines = sample_lines()
    fields = lines[4].split("\t")
    fields[20] = "not-hex"  # C7
    lines[4] = "\t".join(fields)
    src = tmp_path / "day_5"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = run("preprocess", src, "--out", out, "--workers", "1")
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {src}: line 5: column C7 (field 21 of 40): ")
    assert "expected hex digits [0-9a-fA-F] or an empty field, found 'not-hex'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "meta.json").exists() and not (out / "dense.npy").exists()


def test_wrong_field_count_message(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text(sample_lines()[0] + "\n" + "\t".join(["1"] * 27) + "\n")
    r = run("preprocess", src, "--out", tmp_path / "out")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: {src}: line 2: expected 40 tab-separated fields (label, I1-I13, C1-C26), found 27"
    )


def test_skip_reports_skipped_lines(tmp_path):
    lines = sample_lines()
    lines.insert(2, "")  # a blank line
    lines.insert(5, "x" + lines[0][1:])  # a bad label
    src = tmp_path / "t.txt"
    src.write_text("\n".join(lines))
    out = tmp_path / "out"
    r = run("preprocess", src, "--out", out, "--on-bad-line", "skip")
    assert r.returncode == 0, r.stderr
    assert "warning: skipped 2 bad lines (first: " in r.stderr and "line 3:" in r.stderr
    assert "wrote 6 rows (8 lines read, 2 skipped)" in r.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped_lines"] == 2
    assert [e["line"] for e in meta["skipped_examples"]] == [3, 6]


def test_usage_errors_exit_2(tmp_path):
    r = run("preprocess", SAMPLE, "--out", tmp_path / "o", "--table-sizes", "kaggle",
            "--min-count", "3")  # fmt: skip
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
    assert run("preprocess", SAMPLE).returncode == 2  # no --out
    assert run("preprocess", SAMPLE, "--out", tmp_path / "o", "--workers", "x").returncode == 2
    assert run().returncode == 2


def test_detected_bad_options_exit_1(tmp_path):
    r = run("preprocess", SAMPLE, "--out", tmp_path / "o", "--table-sizes", "nosuch")
    assert r.returncode == 1 and r.stderr.startswith("error: table sizes 'nosuch': expected one of")
    r = run("preprocess", tmp_path / "missing.txt", "--out", tmp_path / "o")
    assert r.returncode == 1 and "no such file" in r.stderr
    r = run("preprocess", SAMPLE, "--out", tmp_path / "o", "--chunk-rows", "0")
    assert r.returncode == 1 and "chunk_rows: expected an integer >= 1" in r.stderr


def test_help_shows_defaults_and_an_example():
    r = run("preprocess", "--help")
    assert r.returncode == 0
    assert "--chunk-rows N" in r.stdout and "(default: 500000)" in r.stdout
    assert "example: python -m rec_common.criteo preprocess" in r.stdout
    assert "--min-count" in r.stdout and "--on-bad-line" in r.stdout


def test_rerun_resumes_from_kept_chunks(tmp_path):
    out = tmp_path / "out"
    args = ("preprocess", SAMPLE, "--out", out, "--chunk-rows", "2", "--keep-chunks", "--quiet")
    assert run(*args).returncode == 0
    (out / ".criteo-work" / "hash" / "000001.json").unlink()
    assert run(*args).returncode == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["run"]["chunks"] == 3 and meta["run"]["chunks_reused"] == 2
