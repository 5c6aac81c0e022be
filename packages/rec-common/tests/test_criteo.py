"""rec_common.criteo against a deliberately simple line-by-line reference parser."""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rec_common.criteo import META_FILE, WORK_DIR, CriteoFormatError, preprocess
from rec_common.criteo_tables import FIELD_NAMES, KAGGLE_TABLE_SIZES

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "criteo_sample.txt"


# ---------------------------------------------------------------------------- the reference
class RefBadLine(Exception):
    def __init__(self, line, column, what):
        super().__init__(line, column, what)
        self.line, self.column, self.what = line, column, what


def ref_parse_line(text: bytes, lineno: int):
    """One line -> (label, 13 ints or None, 26 hex values or None); RefBadLine if invalid."""
    if text.endswith(b"\r"):
        text = text[:-1]
    fields = text.split(b"\t")
    if len(fields) != 40:
        raise RefBadLine(lineno, None, f"found {len(fields)}")
    if fields[0] not in (b"0", b"1"):
        raise RefBadLine(lineno, "label", "label")
    ints = []  # as float64: negatives and empty fields count as 0
    for i, f in enumerate(fields[1:14]):
        if f == b"":
            ints.append(0.0)
        elif re.fullmatch(rb"-?[0-9]+", f):
            ints.append(0.0 if f.startswith(b"-") else min(float(f), sys.float_info.max))
        else:
            raise RefBadLine(lineno, f"I{i + 1}", "integer")
    cats = []
    for i, f in enumerate(fields[14:]):
        if f == b"":
            cats.append(None)
        elif re.fullmatch(rb"[0-9a-fA-F]{1,16}", f):
            cats.append(int(f, 16))
        else:
            raise RefBadLine(lineno, f"C{i + 1}", "hex")
    return int(fields[0]), ints, cats


def ref_lines(data: bytes) -> list[bytes]:
    if not data:
        return []
    lines = data.split(b"\n")
    return lines[:-1] if data.endswith(b"\n") else lines


def ref_parse(files: list[bytes], skip: bool = False):
    """All files -> (labels, ints, cats, skipped) of the good lines, in order."""
    labels, ints, cats, skipped = [], [], [], 0
    for data in files:
        for lineno, text in enumerate(ref_lines(data), 1):
            try:
                lab, i, c = ref_parse_line(text, lineno)
            except RefBadLine:
                if not skip:
                    raise
                skipped += 1
                continue
            labels.append(lab)
            ints.append(i)
            cats.append(c)
    return labels, ints, cats, skipped


def ref_dense(ints) -> np.ndarray:
    return np.log1p(np.array(ints, dtype=np.float64).reshape(-1, 13)).astype(np.float32)


def ref_hash(cats, sizes) -> np.ndarray:
    out = [[(0 if v is None else v) % sizes[f] for f, v in enumerate(row)] for row in cats]
    return np.array(out, dtype=np.int64).reshape(-1, 26)


def ref_min_count(cats, min_count):
    counts = [Counter(row[f] for row in cats if row[f] is not None) for f in range(26)]
    vocabs = [sorted(v for v, c in counts[f].items() if c >= min_count) for f in range(26)]
    index = [{v: i + 1 for i, v in enumerate(vocab)} for vocab in vocabs]
    ids = [[0 if v is None else index[f].get(v, 0) for f, v in enumerate(row)] for row in cats]
    return np.array(ids, dtype=np.int64).reshape(-1, 26), [len(v) + 1 for v in vocabs]


def load(out: Path):
    return (np.load(out / "dense.npy"), np.load(out / "sparse.npy"), np.load(out / "labels.npy"),
            json.loads((out / META_FILE).read_text()))  # fmt: skip


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.argwhere(actual != expected)
    assert diff.size == 0, (
        f"{what}: {len(diff)} entries differ, first at {tuple(diff[0])}: "
        f"{actual[tuple(diff[0])]!r} != {expected[tuple(diff[0])]!r}"
    )


def check_against_reference(out: Path, files: list[bytes], sizes=KAGGLE_TABLE_SIZES, skip=False):
    labels, ints, cats, skipped = ref_parse(files, skip=skip)
    dense, sparse, lab, meta = load(out)
    assert_same(lab, np.array(labels, np.float32), "labels")
    assert_same(dense, ref_dense(ints), "dense")
    assert_same(sparse.astype(np.int64), ref_hash(cats, sizes), "sparse")
    assert meta["num_rows"] == len(labels)
    assert meta["skipped_lines"] == skipped
    assert meta["table_sizes"] == list(sizes)
    return meta


# ---------------------------------------------------------------------------- random lines
def rand_int(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:
        return ""
    if kind < 0.55:
        return str(rng.randint(0, 99))
    if kind < 0.65:
        return "-" + str(rng.randint(0, 5000))
    if kind < 0.72:
        return "0" * rng.randint(1, 4) + str(rng.randint(0, 999))  # leading zeros
    if kind < 0.82:
        return str(rng.randint(10**8, 10**16 - 1))  # 9-16 digits: two words
    if kind < 0.9:
        return str(rng.randint(10**16, 10**30))  # beyond int64
    if kind < 0.95:
        return "-" + str(rng.randint(10**8, 10**25))
    return str(rng.randint(0, 10**8 - 1))


def rand_hex(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:
        return ""
    n = rng.choice([8, 8, 8, 1, 3, 7, 9, 12, 16])
    s = "".join(rng.choice("0123456789abcdef") for _ in range(n))
    if kind < 0.35:
        s = s.upper()
    elif kind < 0.4:
        s = "".join(c.upper() if rng.random() < 0.5 else c for c in s)
    return s


def rand_line(rng: random.Random) -> str:
    return "\t".join([rng.choice("01")] + [rand_int(rng) for _ in range(13)]
                     + [rand_hex(rng) for _ in range(26)])  # fmt: skip


def rand_file(
    rng: random.Random, n: int, *, crlf: float = 0.0, final_newline: bool = True
) -> bytes:
    lines = [rand_line(rng) + ("\r\n" if rng.random() < crlf else "\n") for _ in range(n)]
    data = "".join(lines).encode()
    if not final_newline and data:
        data = data.rstrip(b"\n").rstrip(b"\r")
    return data


BAD_LINES = {
    # (line, column, field number, words in the message)
    "missing trailing fields": ("0\t1\t2", None, None, "found 3"),
    "extra field": (None, None, None, "found 41"),
    "blank line": ("", None, None, "found 1"),
    "bad label": ("2" + "\t" * 39, "label", 1, "0 or 1"),
    "empty label": ("\t" * 39, "label", 1, "an empty field"),
    "non-hex categorical": (None, "C5", 19, "'12g4'"),
    "17 hex digits": (None, "C26", 40, "at most 16 hex digits"),
    "decimal point": (None, "I3", 4, "'1.5'"),
    "plus sign": (None, "I1", 2, "'+3'"),
    "lone minus": (None, "I13", 14, "'-'"),
    "space in integer": (None, "I7", 8, "' 5'"),
    "non-ascii": (None, "C2", 16, "hex digits"),
    "long non-digit integer": (None, "I2", 3, "integer"),
}


def bad_line(kind: str, rng: random.Random) -> str:
    text = BAD_LINES[kind][0]
    if text is not None:
        return text
    fields = rand_line(rng).split("\t")
    if kind == "extra field":
        fields.append("ab")
    elif kind == "non-hex categorical":
        fields[18] = "12g4"
    elif kind == "17 hex digits":
        fields[39] = "a" * 17
    elif kind == "decimal point":
        fields[3] = "1.5"
    elif kind == "plus sign":
        fields[1] = "+3"
    elif kind == "lone minus":
        fields[13] = "-"
    elif kind == "space in integer":
        fields[7] = " 5"
    elif kind == "non-ascii":
        fields[15] = "ab\u00e9"
    elif kind == "long non-digit integer":
        fields[2] = "1234567890123456789x"
    return "\t".join(fields)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_random_lines_match_reference(tmp_path, chunk_rows):
    rng = random.Random(chunk_rows)
    data = rand_file(rng, 300, crlf=0.3)
    src = write(tmp_path / "train.txt", data)
    meta = preprocess([src], tmp_path / "out", chunk_rows=chunk_rows, workers=1, progress=False)
    check_against_reference(tmp_path / "out", [data])
    assert meta["run"]["chunks"] == -(-300 // chunk_rows)
    assert not (tmp_path / "out" / WORK_DIR).exists()


def test_many_lines_cross_parser_blocks(tmp_path):
    # ~1.3 MB: several 256 KB parser blocks inside one chunk, and several chunks
    rng = random.Random(5)
    data = rand_file(rng, 6000, crlf=0.1)
    src = write(tmp_path / "train.txt", data)
    preprocess(src, tmp_path / "out", chunk_rows=2500, workers=1, progress=False)
    check_against_reference(tmp_path / "out", [data])


def test_real_sample_lines(tmp_path):
    data = SAMPLE.read_bytes()
    preprocess([SAMPLE], tmp_path / "out", workers=1, progress=False)
    meta = check_against_reference(tmp_path / "out", [data])
    dense, sparse, labels, _ = load(tmp_path / "out")
    # line 1 of Kaggle train.txt, worked out by hand
    i = [1, 1, 5, 0, 1382, 4, 15, 2, 181, 1, 2, 0, 2]  # I12 is empty
    assert_same(dense[0], np.log1p(np.array(i, np.float64)).astype(np.float32), "dense row 0")
    assert sparse[0, 0] == 0x68FD1E64 % 1460
    assert sparse[0, 21] == 0  # C22 is empty
    assert sparse[0, 25] == 0x9727DD16 % KAGGLE_TABLE_SIZES[25]
    assert labels.tolist() == [0, 1, 0, 0, 1, 0]
    assert dense[1, 0] == 0  # I1 is empty on the second line
    src = meta["sources"][0]
    assert src["size"] == len(data) and src["lines"] == 6 and src["rows"] == 6
    import hashlib

    assert src["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["dtypes"] == {"dense": "float32", "sparse": "int32", "labels": "float32"}


def test_empty_fields_everywhere_and_extremes(tmp_path):
    lines = [
        "1" + "\t" * 39,  # every feature empty
        "0\t" + "\t".join(["-5"] * 13) + "\t" + "\t".join(["0"] * 26),  # negatives, zero hex
        "0\t" + "\t".join(["9" * 40] * 13) + "\t" + "\t".join(["ffffffffffffffff"] * 26),
        "1\t" + "\t".join(["00000000000000000000123"] * 13) + "\t" + "\t".join(["FfFf"] * 26),
        "0\t"
        + "\t".join(["-99999999999999999999999"] * 13)
        + "\t"
        + "\t".join(["0000000000000001"] * 26),
        "1\t"
        + "\t".join(["9" * 400, "-" + "9" * 400, "18446744073709551616"] + [""] * 10)
        + "\t" * 26,  # beyond float64 (saturates), its negative (0), 2**64
    ]
    data = "\n".join(lines).encode()  # and no final newline
    src = write(tmp_path / "x.txt", data)
    preprocess(src, tmp_path / "out", workers=1, progress=False)
    check_against_reference(tmp_path / "out", [data])
    dense, sparse, _, _ = load(tmp_path / "out")
    assert (dense[0] == 0).all() and (sparse[0] == 0).all() and (dense[1] == 0).all()
    assert np.allclose(dense[2], np.log1p(1e40 - 1))
    assert np.isfinite(dense).all()
    assert dense[5, 0] == np.float32(np.log1p(sys.float_info.max)) and dense[5, 1] == 0
    assert dense[5, 2] == np.float32(np.log1p(2.0**64))


def test_no_trailing_newline_and_crlf(tmp_path):
    rng = random.Random(3)
    for k, (crlf, final) in enumerate([(1.0, False), (0.5, False), (0.0, False), (1.0, True)]):
        data = rand_file(rng, 20, crlf=crlf, final_newline=final)
        src = write(tmp_path / f"x{k}.txt", data)
        preprocess(src, tmp_path / f"out{k}", chunk_rows=6, workers=1, progress=False)
        check_against_reference(tmp_path / f"out{k}", [data])


def test_empty_file_gives_zero_rows(tmp_path):
    src = write(tmp_path / "empty.txt", b"")
    meta = preprocess(src, tmp_path / "out", workers=1, progress=False)
    dense, sparse, labels, meta = load(tmp_path / "out")
    assert dense.shape == (0, 13) and sparse.shape == (0, 26) and labels.shape == (0,)
    assert meta["num_rows"] == 0 and meta["lines"] == 0
    gz = write(tmp_path / "empty.gz", gzip.compress(b""))
    assert preprocess(gz, tmp_path / "out2", min_count=1, progress=False)["table_sizes"] == [1] * 26


def test_gzip_input_equals_plain(tmp_path):
    rng = random.Random(11)
    data = rand_file(rng, 400, crlf=0.2, final_newline=False)
    plain = write(tmp_path / "day_0", data)
    gz = write(tmp_path / "day_0.gz", gzip.compress(data))
    a = preprocess(plain, tmp_path / "a", chunk_rows=64, workers=1, progress=False)
    b = preprocess(gz, tmp_path / "b", chunk_rows=64, workers=2, progress=False)
    for x, y in zip(load(tmp_path / "a")[:3], load(tmp_path / "b")[:3]):
        assert_same(y, x, "gzip vs plain")
    assert b["sources"][0]["gzip"] and not a["sources"][0]["gzip"]
    import hashlib

    assert b["sources"][0]["sha256"] == hashlib.sha256(gz.read_bytes()).hexdigest()


def test_multiple_inputs_are_concatenated(tmp_path):
    rng = random.Random(2)
    datas = [rand_file(rng, n, final_newline=n != 13) for n in (13, 0, 40, 7)]
    srcs = [write(tmp_path / f"day_{i}", d) for i, d in enumerate(datas)]
    srcs[2] = write(tmp_path / "day_2.gz", gzip.compress(datas[2]))
    meta = preprocess(srcs, tmp_path / "out", chunk_rows=5, workers=2, progress=False)
    check_against_reference(tmp_path / "out", datas)
    assert [s["rows"] for s in meta["sources"]] == [13, 0, 40, 7]
    assert [s["first_row"] for s in meta["sources"]] == [0, 13, 13, 53]
    assert [s["path"] for s in meta["sources"]] == [str(s) for s in srcs]


def test_workers_one_and_two_give_identical_output(tmp_path):
    rng = random.Random(8)
    data = rand_file(rng, 500, crlf=0.1)
    src = write(tmp_path / "t.txt", data)
    preprocess(src, tmp_path / "w1", chunk_rows=37, workers=1, progress=False)
    meta = preprocess(src, tmp_path / "w2", chunk_rows=37, workers=2, progress=False)
    assert meta["run"]["workers"] == 2
    for x, y in zip(load(tmp_path / "w1")[:3], load(tmp_path / "w2")[:3]):
        assert_same(y, x, "workers=2 vs workers=1")


@pytest.mark.parametrize("min_count", [1, 2, 3])
def test_min_count_ids_are_contiguous(tmp_path, min_count):
    rng = random.Random(min_count)
    # few distinct values, so some are frequent and some rare
    lines = []
    for _ in range(300):
        cats = [rng.choice(["", "a", "B", "0c", "ffff", "12345678", "0", "00000000"])
                if rng.random() < 0.9 else format(rng.getrandbits(32), "x") for _ in range(26)]  # fmt: skip
        lines.append("\t".join([rng.choice("01")] + [rand_int(rng) for _ in range(13)] + cats))
    data = ("\n".join(lines) + "\n").encode()
    src = write(tmp_path / "t.txt", data)
    meta = preprocess(src, tmp_path / "out", min_count=min_count, chunk_rows=41, workers=2,
                      progress=False)  # fmt: skip
    _, _, cats, _ = ref_parse([data])
    ids, sizes = ref_min_count(cats, min_count)
    dense, sparse, _, meta = load(tmp_path / "out")
    assert_same(sparse.astype(np.int64), ids, "min-count ids")
    assert meta["table_sizes"] == sizes
    assert meta["options"]["categorical"] == "min_count"
    assert meta["options"]["min_count"] == min_count
    for f in range(26):  # every id 1..V is used, nothing beyond
        used = np.unique(sparse[:, f])
        assert set(used.tolist()) - {0} == set(range(1, sizes[f]))
    # "0" and "00000000" are the same value; the empty field is not a value
    assert_same(dense, ref_dense(ref_parse([data])[1]), "dense in min-count mode")


def test_min_count_workers_and_chunks_agree(tmp_path):
    rng = random.Random(21)
    data = rand_file(rng, 400)
    src = write(tmp_path / "t.txt", data)
    preprocess(src, tmp_path / "a", min_count=1, chunk_rows=1000, workers=1, progress=False)
    preprocess(src, tmp_path / "b", min_count=1, chunk_rows=9, workers=2, progress=False)
    for x, y in zip(load(tmp_path / "a")[:3], load(tmp_path / "b")[:3]):
        assert_same(y, x, "min-count with other chunks/workers")
    _, _, cats, _ = ref_parse([data])
    assert_same(load(tmp_path / "a")[1].astype(np.int64), ref_min_count(cats, 1)[0], "ids")


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_error_names_file_line_and_column(tmp_path, kind):
    rng = random.Random(hash(kind) % 1000)
    good = [rand_line(rng) for _ in range(30)]
    lines = [*good[:17], bad_line(kind, rng), *good[17:]]
    src = write(tmp_path / "day_3.txt", ("\n".join(lines) + "\n").encode())
    with pytest.raises(CriteoFormatError) as info:
        preprocess(src, tmp_path / "out", chunk_rows=5, workers=1, progress=False)
    err = info.value
    _, column, field, words = BAD_LINES[kind]
    assert err.path == str(src) and err.line == 18
    assert err.column == column and err.field == field
    msg = str(err)
    assert msg.startswith(f"{src}: line 18") and words in msg
    if column is not None:
        assert f"column {column} (field {field} of 40)" in msg
        assert FIELD_NAMES[field - 1] == column
    else:
        assert "expected 40 tab-separated fields (label, I1-I13, C1-C26)" in msg
    assert isinstance(err, ValueError)
    assert not (tmp_path / "out" / META_FILE).exists()


def test_error_line_numbers_per_file_and_first_bad_line_wins(tmp_path):
    rng = random.Random(4)
    first = write(tmp_path / "day_0", rand_file(rng, 50))
    lines = [rand_line(rng) for _ in range(200)]
    lines[123] = "0\tx" + "\t" * 38  # I1 bad at line 124 ...
    lines[170] = "3" + "\t" * 39  # ... and a later one in another chunk
    second = write(tmp_path / "day_1", ("\n".join(lines) + "\n").encode())
    with pytest.raises(CriteoFormatError) as info:
        preprocess([first, second], tmp_path / "out", chunk_rows=10, workers=2, progress=False)
    assert (info.value.path, info.value.line, info.value.column) == (str(second), 124, "I1")


def test_skip_counts_and_drops_bad_lines(tmp_path):
    rng = random.Random(9)
    lines = [rand_line(rng) for _ in range(120)]
    bad_at = sorted(rng.sample(range(120), len(BAD_LINES)))
    for pos, kind in zip(bad_at, sorted(BAD_LINES)):
        lines[pos] = bad_line(kind, rng)
    data = ("\r\n".join(lines)).encode()
    src = write(tmp_path / "t.txt", data)
    meta = preprocess(src, tmp_path / "out", on_bad_line="skip", chunk_rows=16, workers=2,
                      progress=False)  # fmt: skip
    check_against_reference(tmp_path / "out", [data], skip=True)
    assert meta["skipped_lines"] == len(BAD_LINES)
    assert meta["lines"] == 120 and meta["num_rows"] == 120 - len(BAD_LINES)
    assert [e["line"] for e in meta["skipped_examples"]] == [p + 1 for p in bad_at[:10]]
    assert all(e["path"] == str(src) and e["reason"] for e in meta["skipped_examples"])
    # the same in min-count mode
    meta2 = preprocess(src, tmp_path / "mc", on_bad_line="skip", min_count=1, chunk_rows=16,
                       workers=1, progress=False)  # fmt: skip
    assert meta2["skipped_lines"] == len(BAD_LINES) and meta2["num_rows"] == meta["num_rows"]
    assert_same(load(tmp_path / "mc")[2], load(tmp_path / "out")[2], "labels with min-count")


def test_failure_never_looks_complete(tmp_path):
    rng = random.Random(6)
    good = write(tmp_path / "good.txt", rand_file(rng, 100))
    out = tmp_path / "out"
    preprocess(good, out, chunk_rows=10, workers=1, progress=False)
    assert (out / META_FILE).exists()
    lines = [rand_line(rng) for _ in range(100)]
    lines[95] = lines[95] + "\tabc"
    bad = write(tmp_path / "bad.txt", ("\n".join(lines) + "\n").encode())
    with pytest.raises(CriteoFormatError):
        preprocess(bad, out, chunk_rows=10, workers=2, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert META_FILE not in names
    assert not any(n in names for n in ("dense.npy", "sparse.npy", "labels.npy")), names
    assert {"dense.npy.tmp", "sparse.npy.tmp", "labels.npy.tmp"} <= set(names)
    with pytest.raises(ValueError, match="preprocessing did not finish"):
        from rec_common.dataset import CriteoDataset

        CriteoDataset(out)


def _records(out: Path, stage: str = "hash") -> list[str]:
    return sorted(p.name for p in (out / WORK_DIR / stage).glob("*.json"))


def test_resume_reuses_finished_chunks(tmp_path):
    rng = random.Random(12)
    data = rand_file(rng, 200)
    src = write(tmp_path / "t.txt", data)
    out = tmp_path / "out"
    first = preprocess(src, out, chunk_rows=20, workers=1, progress=False, keep_chunks=True)
    assert first["run"]["chunks"] == 10 and first["run"]["chunks_reused"] == 0
    expected = load(out)[:3]
    assert len(_records(out)) == 10
    # lose two chunk records, corrupt the rows of a third, leave half-written debris behind
    (out / WORK_DIR / "hash" / "000003.json").unlink()
    (out / WORK_DIR / "hash" / "000007.json").unlink()
    with open(out / "dense.npy", "r+b") as f:
        f.seek(128 + 5 * 20 * 13 * 4 + 8)  # inside chunk 5's dense rows
        f.write(b"\xff\xff")
    (out / WORK_DIR / "hash" / "000008.json.tmp-999").write_text("{half a reco")
    meta = preprocess(src, out, chunk_rows=20, workers=2, progress=False, keep_chunks=True)
    assert meta["run"]["chunks_reused"] == 7
    for x, y in zip(load(out)[:3], expected):
        assert_same(x, y, "resumed output")
    assert not list((out / WORK_DIR).rglob("*.tmp-*"))
    # a temporary array that is not what the records describe: every chunk is redone
    (out / "sparse.npy.tmp").write_bytes(b"junk")
    meta = preprocess(src, out, chunk_rows=20, workers=1, progress=False, keep_chunks=True)
    assert meta["run"]["chunks_reused"] == 0
    for x, y in zip(load(out)[:3], expected):
        assert_same(x, y, "output after a junk temporary array")
    # an identical rerun reuses everything and removes the records at the end
    meta = preprocess(src, out, chunk_rows=20, workers=1, progress=False)
    assert meta["run"]["chunks_reused"] == 10
    assert not (out / WORK_DIR).exists()
    check_against_reference(out, [data])


def test_resume_after_a_bad_line_is_fixed(tmp_path):
    rng = random.Random(13)
    lines = [rand_line(rng) for _ in range(100)]
    good_last = lines[95]
    lines[95] = good_last.replace("\t", "\tzz\t", 1)  # bad, in the last chunk
    src = write(tmp_path / "t.txt", ("\n".join(lines) + "\n").encode())
    out = tmp_path / "out"
    with pytest.raises(CriteoFormatError, match="line 96"):
        preprocess(src, out, chunk_rows=30, workers=2, progress=False)
    assert len(_records(out)) == 3  # chunks 0-2 finished and were kept
    lines[95] = good_last
    data = ("\n".join(lines) + "\n").encode()
    write(src, data)
    meta = preprocess(src, out, chunk_rows=30, workers=2, progress=False)
    assert meta["run"]["chunks_reused"] == 3 and meta["run"]["chunks"] == 4
    check_against_reference(out, [data])


def test_changed_options_or_file_invalidate_chunks(tmp_path):
    rng = random.Random(14)
    data = rand_file(rng, 90)
    src = write(tmp_path / "t.txt", data)
    out = tmp_path / "out"
    kw = dict(chunk_rows=30, workers=1, progress=False, keep_chunks=True)
    preprocess(src, out, table_sizes="kaggle", **kw)
    sizes = [7 + f for f in range(26)]
    meta = preprocess(src, out, table_sizes=sizes, **kw)
    assert meta["run"]["chunks_reused"] == 0
    check_against_reference(out, [data], sizes=sizes)
    assert preprocess(src, out, table_sizes=sizes, **kw)["run"]["chunks_reused"] == 3
    meta = preprocess(src, out, table_sizes=sizes, on_bad_line="skip", **kw)
    assert meta["run"]["chunks_reused"] == 0
    # one byte changed in the first chunk: the sha256 of every prefix changes
    changed = bytearray(data)
    changed[0] = ord("1") if changed[0] == ord("0") else ord("0")
    write(src, bytes(changed))
    meta = preprocess(src, out, table_sizes=sizes, on_bad_line="skip", **kw)
    assert meta["run"]["chunks_reused"] == 0
    check_against_reference(out, [bytes(changed)], sizes=sizes)
    # min-count mode reuses its count and map chunks too
    a = preprocess(src, tmp_path / "mc", min_count=2, **kw)
    b = preprocess(src, tmp_path / "mc", min_count=2, **kw)
    assert a["run"]["chunks_reused"] == 0 and b["run"]["chunks_reused"] == 6
    c = preprocess(src, tmp_path / "mc", min_count=3, **kw)
    assert c["run"]["chunks_reused"] == 3  # counts reused, ids redone
    _, _, cats, _ = ref_parse([bytes(changed)])
    assert_same(load(tmp_path / "mc")[1].astype(np.int64), ref_min_count(cats, 3)[0], "ids")


def test_sparse_is_int64_for_huge_tables(tmp_path):
    rng = random.Random(15)
    data = rand_file(rng, 50)
    src = write(tmp_path / "t.txt", data)
    sizes = [2**31 + 11] + [2**40 + 7] * 25
    meta = preprocess(src, tmp_path / "out", table_sizes=sizes, workers=1, progress=False)
    assert meta["dtypes"]["sparse"] == "int64"
    assert load(tmp_path / "out")[1].dtype == np.int64
    check_against_reference(tmp_path / "out", [data], sizes=sizes)


def test_table_sizes_from_file_and_meta(tmp_path):
    rng = random.Random(16)
    data = rand_file(rng, 30)
    src = write(tmp_path / "t.txt", data)
    sizes = [100 + f for f in range(26)]
    (tmp_path / "sizes.txt").write_text(",".join(map(str, sizes)))
    preprocess(src, tmp_path / "a", table_sizes=tmp_path / "sizes.txt", workers=1, progress=False)
    check_against_reference(tmp_path / "a", [data], sizes=sizes)
    preprocess(src, tmp_path / "b", table_sizes=str(tmp_path / "a" / META_FILE), workers=1,
               progress=False)  # fmt: skip
    check_against_reference(tmp_path / "b", [data], sizes=sizes)


def test_line_longer_than_limit_is_an_error_even_when_skipping(tmp_path):
    from rec_common.criteo import MAX_LINE_BYTES

    rng = random.Random(17)
    lines = [rand_line(rng) for _ in range(5)]
    lines[3] = "0\t" + "1" * (MAX_LINE_BYTES + 10)
    src = write(tmp_path / "t.txt", ("\n".join(lines) + "\n").encode())
    for workers in (1, 2):
        with pytest.raises(CriteoFormatError, match="longer than") as info:
            preprocess(src, tmp_path / "out", on_bad_line="skip", workers=workers, progress=False)
        assert info.value.line == 4
    gz = write(tmp_path / "t.gz", gzip.compress(b"1" * (3 * MAX_LINE_BYTES)))
    with pytest.raises(CriteoFormatError, match="line 1: line is longer"):
        preprocess(gz, tmp_path / "out", on_bad_line="skip", workers=1, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"table_sizes": "kaggle", "min_count": 2}, "mutually exclusive"),
        ({"min_count": 0}, "min_count: expected an integer >= 1"),
        ({"chunk_rows": 0}, "chunk_rows: expected an integer >= 1"),
        ({"on_bad_line": "warn"}, "on_bad_line: expected 'error' or 'skip'"),
        ({"workers": 0}, "workers: expected an integer >= 1"),
        ({"table_sizes": "huge"}, "expected one of kaggle"),
        ({"table_sizes": [5] * 25}, "expected 26 sizes"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, words):
    src = write(tmp_path / "t.txt", SAMPLE.read_bytes())
    with pytest.raises(ValueError, match=re.escape(words)):
        preprocess(src, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out" / META_FILE).exists()


def test_missing_input_and_bad_output(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        preprocess(tmp_path / "nope.txt", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="expected a Criteo TSV file"):
        preprocess(tmp_path, tmp_path / "out", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        preprocess(SAMPLE, tmp_path / "file", progress=False)
    with pytest.raises(ValueError, match="at least one"):
        preprocess([], tmp_path / "out", progress=False)


def test_error_pickles_with_its_attributes():
    import pickle

    err = CriteoFormatError("f.txt", 3, "C7", "expected hex digits", 21)
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.line, back.column, back.field, str(back)) == (
        "f.txt", 3, "C7", 21, "f.txt: line 3: column C7 (field 21 of 40): expected hex digits",
    )  # fmt: skip


def test_small_read_blocks_and_lines_longer_than_a_parser_block(tmp_path, monkeypatch):
    import rec_common.criteo as criteo

    monkeypatch.setattr(criteo, "READ_BYTES", 3000)
    monkeypatch.setattr(criteo, "SUB_BLOCK_BYTES", 700)
    monkeypatch.setattr(criteo, "MAX_LINE_BYTES", 2500)
    rng = random.Random(30)
    lines = []
    for i in range(300):
        fields = rand_line(rng).split("\t")
        if i % 17 == 0:
            fields[5] = "9" * rng.randint(700, 2300)  # longer than a parser block
        lines.append("\t".join(fields))
    data = "\r\n".join(lines).encode()
    src = write(tmp_path / "t.txt", data)
    for workers in (1, 2):
        preprocess(src, tmp_path / f"out{workers}", chunk_rows=23, workers=workers, progress=False)
        check_against_reference(tmp_path / f"out{workers}", [data])
    gz = write(tmp_path / "t.gz", gzip.compress(data))
    preprocess(gz, tmp_path / "gz", chunk_rows=50, workers=1, progress=False)
    check_against_reference(tmp_path / "gz", [data])
    lines[200] = "0\t" + "1" * 2600
    src = write(tmp_path / "long.txt", "\n".join(lines).encode())
    with pytest.raises(CriteoFormatError, match="line 201: line is longer than 2500 bytes"):
        preprocess(src, tmp_path / "out3", chunk_rows=1000, workers=1, progress=False)


def test_min_count_values_beyond_32_bits_are_parsed_again(tmp_path):
    rng = random.Random(31)
    lines = [rand_line(rng).split("\t")[:14] + [rng.choice(["", "a1", "ff00ff00", "0"])
             for _ in range(26)] for _ in range(30)]  # fmt: skip
    lines[12][20] = "ffffffff"  # the value that marks empty fields among raw 32-bit values
    lines[25][30] = "123456789"  # 9 hex digits
    data = "".join("\t".join(f) + "\n" for f in lines).encode()
    src = write(tmp_path / "t.txt", data)
    out = tmp_path / "out"
    preprocess(src, out, min_count=1, chunk_rows=10, workers=1, progress=False, keep_chunks=True)
    raw = [json.loads((out / WORK_DIR / "count" / f"{k:06d}" / "record.json").read_text())
           ["result"]["raw_crc"] for k in range(3)]  # fmt: skip
    assert raw[0] is not None and raw[1] is None and raw[2] is None
    _, _, cats, _ = ref_parse([data])
    ids, sizes = ref_min_count(cats, 1)
    assert_same(load(out)[1].astype(np.int64), ids, "ids")
    assert load(out)[3]["table_sizes"] == sizes


def test_min_count_rerun_does_not_mistake_ids_for_parked_values(tmp_path):
    rng = random.Random(32)
    lines = [rand_line(rng).split("\t")[:14] + [rng.choice(["", "a1", "ff00ff00", "0", "b2"])
             for _ in range(26)] for _ in range(40)]  # fmt: skip
    data = "".join("\t".join(f) + "\n" for f in lines).encode()
    src = write(tmp_path / "t.txt", data)
    out = tmp_path / "out"
    kw = dict(chunk_rows=10, workers=2, progress=False, keep_chunks=True)
    preprocess(src, out, min_count=1, **kw)
    # the count chunks are reused, but their parked values were overwritten by the first map
    meta = preprocess(src, out, min_count=9, **kw)
    assert meta["run"]["chunks_reused"] == 4
    _, _, cats, _ = ref_parse([data])
    assert_same(load(out)[1].astype(np.int64), ref_min_count(cats, 9)[0], "ids")
