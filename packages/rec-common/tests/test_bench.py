"""``python -m rec_common.bench preprocess``: it runs, prints rates and writes result rows."""

from __future__ import annotations

import subprocess
import sys

from rec_common.results import REQUIRED_FIELDS, read_rows


def test_preprocess_benchmark_writes_rows(tmp_path):
    out = tmp_path / "results" / "preprocess.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "rec_common.bench", "preprocess", "--rows", "3000", "--workers", "2",
         "--chunk-rows", "1000", "--repeats", "2", "--out", str(out), "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hash: 3000 rows" in r.stdout and "min_count: 3000 rows" in r.stdout
    assert "rows/s" in r.stdout and "MB/s" in r.stdout
    rows = read_rows(out)
    assert [row["variant"] for row in rows] == ["hash", "min_count"]
    for row in rows:
        assert all(k in row for k in REQUIRED_FIELDS)
        assert row["package"] == "rec-common" and row["benchmark"] == "preprocess"
        assert row["unit"] == "rows/s" and row["value"] > 0 and row["n"] == 2
        assert row["rows"] == 3000 and row["workers"] == 2 and row["mb_per_s"] > 0
        assert row["workload"] == "criteo-synthetic-3000"
    assert (tmp_path / "w" / "criteo-synthetic.tsv").exists()  # --work-dir is kept


def test_preprocess_benchmark_on_a_given_file(tmp_path):
    from pathlib import Path

    sample = Path(__file__).parent / "data" / "criteo_sample.txt"
    out = tmp_path / "r.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "rec_common.bench", "preprocess", "--input", str(sample),
         "--workers", "1", "--variants", "hash", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = read_rows(out)
    assert row["workload"] == "criteo-file-criteo_sample.txt" and row["rows"] == 6
    r = subprocess.run([sys.executable, "-m", "rec_common.bench", "preprocess", "--input",
                        str(tmp_path / "missing.txt")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("error: --input")
