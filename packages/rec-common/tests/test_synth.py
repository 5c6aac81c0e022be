"""Synthetic Criteo TSV: exact format, determinism, the planted signal, and the CLI."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rec_common.criteo_tables import KAGGLE_TABLE_SIZES, NUM_FIELDS
from rec_common.synth import CHUNK_ROWS, synth_criteo, write_criteo_tsv

HEX8 = re.compile(r"[0-9a-f]{8}")
INT = re.compile(r"-?[0-9]+")


def parse_tsv(data: bytes):
    """A plain-Python Criteo reader, independent of the generator's vectorized writer."""
    assert data.endswith(b"\n")
    labels, dense, cats = [], [], []
    for line in data.decode("ascii").split("\n")[:-1]:
        fields = line.split("\t")
        assert len(fields) == NUM_FIELDS, f"{len(fields)} fields in {line!r}"
        labels.append(int(fields[0]))
        dense.append([None if f == "" else int(f) for f in fields[1:14]])
        cats.append([None if f == "" else int(f, 16) for f in fields[14:]])
    return labels, dense, cats


@pytest.fixture(scope="module")
def sample():
    return synth_criteo(20_000, seed=3)


def test_lines_have_the_criteo_format(sample):
    lines = sample.lines()
    assert len(lines) == 20_000
    for line in lines[:3000]:
        f = line.split("\t")
        assert len(f) == 40
        assert f[0] in ("0", "1")  # label never null
        for j, x in enumerate(f[1:14]):
            assert x == "" or INT.fullmatch(x), x
            if x.startswith("-"):
                assert j == 1 and x in ("-1", "-2"), (j, x)  # only I2 goes negative
        for x in f[14:]:
            assert x == "" or HEX8.fullmatch(x), x


def test_null_rate_and_label_rate(sample):
    _, dense, cats = parse_tsv(sample.to_bytes())
    dn = np.array([[v is None for v in row] for row in dense])
    cn = np.array([[v is None for v in row] for row in cats])
    # 20,000 rows: per-field rate within ~4.5 sigma, overall within 0.002
    assert np.all(np.abs(dn.mean(axis=0) - 0.05) < 0.007)
    assert np.all(np.abs(cn.mean(axis=0) - 0.05) < 0.007)
    assert abs(np.concatenate([dn, cn], axis=1).mean() - 0.05) < 0.002
    assert abs(sample.labels.mean() - 0.25) < 0.015


def test_tsv_round_trips_through_a_plain_parser(sample):
    labels, dense, cats = parse_tsv(sample.to_bytes())
    assert labels == sample.labels.tolist()
    want_dense = [
        [None if n else int(x) for x, n in zip(r, nr)]
        for r, nr in zip(sample.dense, sample.dense_null)
    ]
    assert dense == want_dense
    want_cats = [
        [None if n else int(x) for x, n in zip(r, nr)]
        for r, nr in zip(sample.cat_hex, sample.cat_null)
    ]
    assert cats == want_cats


def test_dense_counts_are_small_with_a_heavy_tail(sample):
    x = sample.dense[~sample.dense_null[:, 0], 0]
    assert np.median(x) <= 3  # I1: mostly small
    i5 = sample.dense[~sample.dense_null[:, 4], 4]
    assert i5.max() > 100 * np.median(i5)  # heavy tail
    assert sample.dense.max() <= 999_999_999


def test_categoricals_follow_a_power_law_with_bounded_vocabularies(sample):
    s = synth_criteo(60_000, seed=0, max_distinct=50_000)
    for c, size in enumerate(KAGGLE_TABLE_SIZES):
        assert s.cat_ids[:, c].max() < min(size, 50_000)
    # rank 0 vs rank 1 of C3 (10M rows, capped at 50K values): ratio 2^1.05
    counts = np.bincount(s.cat_ids[:, 2], minlength=2)
    assert abs(counts[0] / counts[1] - 2**1.05) < 0.25
    # the hex value is a bijection of the id: distinct ids give distinct strings
    ids, first = np.unique(s.cat_ids[:, 2], return_index=True)
    assert np.unique(s.cat_hex[first, 2]).size == ids.size


def test_hex_codes_spread_over_the_table():
    s = synth_criteo(30_000, seed=0)
    buckets = s.cat_hex[:, 2].astype(np.int64) % KAGGLE_TABLE_SIZES[2]
    # consecutive ids land far apart: the hot ids are not a block at the start of the table
    assert np.median(buckets) > KAGGLE_TABLE_SIZES[2] / 10


def test_deterministic_bytes_and_prefix_stability():
    a = synth_criteo(CHUNK_ROWS + 500, seed=11).to_bytes()
    assert a == synth_criteo(CHUNK_ROWS + 500, seed=11).to_bytes()
    head = synth_criteo(300, seed=11).to_bytes()
    assert a.startswith(head)
    assert synth_criteo(300, seed=12).to_bytes() != head


def test_same_world_across_seeds_different_world_across_world_seeds():
    a, b = synth_criteo(200, seed=0), synth_criteo(200, seed=1)
    assert a.world is b.world
    assert synth_criteo(200, seed=0, world_seed=1).world is not a.world
    assert np.array_equal(a.world.hex_value[0], synth_criteo(10, world_seed=5).world.hex_value[0])


def test_bayes_auc_of_the_planted_signal():
    s = synth_criteo(60_000, seed=5)
    auc = roc_auc_score(s.labels, s.true_prob)
    assert auc > 0.75, auc
    assert abs(s.true_prob.mean() - 0.25) < 0.01
    assert abs(s.labels.mean() - s.true_prob.mean()) < 0.01  # calibrated


def test_signal_survives_the_readers_preprocessing():
    """A plain logistic model on the hashed, log-transformed view learns most of the signal."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    train, test = synth_criteo(30_000, seed=0), synth_criteo(20_000, seed=1)
    enc = OneHotEncoder(handle_unknown="ignore", min_frequency=5)
    cats = [0, 1, 5, 8, 10, 13, 16, 19, 21, 22]
    d_train, _ = train.preprocessed("kaggle")
    mu, sd = d_train.mean(axis=0), d_train.std(axis=0) + 1e-6

    def features(s, fit):
        dense, sparse = s.preprocessed("kaggle")
        z = (dense - mu) / sd
        oh = enc.fit_transform(sparse[:, cats]) if fit else enc.transform(sparse[:, cats])
        return hstack([oh, csr_matrix(np.hstack([z, z**2 - 1]))]).tocsr()

    model = LogisticRegression(max_iter=2000, C=0.5).fit(features(train, True), train.labels)
    auc = roc_auc_score(test.labels, model.predict_proba(features(test, False))[:, 1])
    bayes = roc_auc_score(test.labels, test.true_prob)
    assert auc > 0.78, (auc, bayes)  # measured 0.836 (Bayes 0.844)
    assert bayes - auc < 0.03, (auc, bayes)


def test_the_package_reader_sees_exactly_the_preprocessed_view(tmp_path):
    """rec_common.criteo turns the TSV into what `preprocessed` (and so true_prob) assumes."""
    from rec_common.criteo import preprocess

    write_criteo_tsv(tmp_path / "s.tsv.gz", 3000, seed=8, progress=False)
    preprocess(
        tmp_path / "s.tsv.gz", tmp_path / "pre", table_sizes="kaggle", workers=1, progress=False
    )
    dense, sparse = synth_criteo(3000, seed=8).preprocessed("kaggle")
    assert np.array_equal(np.load(tmp_path / "pre" / "dense.npy"), dense)
    assert np.array_equal(np.load(tmp_path / "pre" / "sparse.npy"), sparse)
    labels = np.load(tmp_path / "pre" / "labels.npy")
    assert np.array_equal(labels, synth_criteo(3000, seed=8).labels)


def test_write_matches_synth_and_gzip_is_deterministic(tmp_path):
    plain, gz = tmp_path / "a.tsv", tmp_path / "a.tsv.gz"
    res = write_criteo_tsv(plain, 1000, seed=2, progress=False, true_prob_out=tmp_path / "p.npy")
    s = synth_criteo(1000, seed=2)
    assert plain.read_bytes() == s.to_bytes()
    assert res.rows == 1000 and res.positives == int(s.labels.sum())
    assert np.array_equal(np.load(tmp_path / "p.npy"), s.true_prob)
    write_criteo_tsv(gz, 1000, seed=2, progress=False)
    first = gz.read_bytes()
    assert gzip.decompress(first) == plain.read_bytes()
    write_criteo_tsv(gz, 1000, seed=2, progress=False)
    assert gz.read_bytes() == first
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": -1}, "rows"),
        ({"rows": 10, "seed": -2}, "seed"),
        ({"rows": 10, "table_sizes": "nope"}, "table sizes"),
        ({"rows": 10, "null_rate": 1.0}, "null_rate"),
        ({"rows": 10, "skew": 0.0}, "skew"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synth_criteo(**kwargs)


def test_zero_rows():
    s = synth_criteo(0)
    assert len(s) == 0 and s.to_bytes() == b""


# ---------------------------------------------------------------------------- CLI
def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "rec_common.synth", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_help_shows_defaults_and_an_example():
    r = _cli("criteo", "--help")
    assert r.returncode == 0
    assert "example:" in r.stdout and "default: kaggle" in r.stdout


def test_cli_writes_a_file(tmp_path):
    out = tmp_path / "x.tsv.gz"
    r = _cli("criteo", "--rows", "500", "--out", str(out), "--seed", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "500 rows" in r.stdout
    assert gzip.decompress(out.read_bytes()) == synth_criteo(500, seed=4).to_bytes()


def test_cli_table_sizes_from_a_file(tmp_path):
    sizes = tmp_path / "sizes.txt"
    sizes.write_text(",".join(["50"] * 26))
    out = tmp_path / "y.tsv"
    r = _cli("criteo", "--rows", "200", "--out", str(out), "--table-sizes", str(sizes), "--quiet")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == synth_criteo(200, table_sizes=[50] * 26).to_bytes()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["criteo", "--rows", "10", "--out", "o.tsv", "--table-sizes", "nope"], 2, "--table-sizes"),
        (["criteo", "--rows", "0", "--out", "o.tsv"], 2, "--rows"),
        (["criteo", "--rows", "10", "--out", "o.tsv", "--null-rate", "1.5"], 2, "--null-rate"),
        (["criteo", "--out", "o.tsv"], 2, "--rows"),
        ([], 2, "required"),
        (["criteo", "--rows", "10", "--out", "no/such/dir/o.tsv"], 1, "does not exist"),
    ],
)
def test_cli_errors(tmp_path, args, code, message):
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
