"""Criteo click logs (Kaggle ``train.txt``, Terabyte ``day_N``) -> memory-mappable ``.npy`` arrays.

The format, exactly as read here (one line per ad impression, plain or gzip-compressed; gzip is
recognized by its magic bytes, whatever the file name)::

    label <TAB> I1 <TAB> ... <TAB> I13 <TAB> C1 <TAB> ... <TAB> C26 <LF or CR LF>

* exactly 40 tab-separated fields; any other count is a bad line ("expected 40 tab-separated
  fields (label, I1-I13, C1-C26), found 27");
* ``label``: ``0`` or ``1`` (never empty);
* ``I1``-``I13``: empty, or an optional ``-`` followed by decimal digits, any number of them
  (values beyond int64 are parsed as float64, correctly rounded; beyond float64's range, over
  308 digits, they become inf); no ``+``, spaces, or decimal points;
* ``C1``-``C26``: empty, or 1 to 16 hex digits ``[0-9a-fA-F]`` (Criteo's are 8: 32-bit hashes);
* lines end with ``\\n`` or ``\\r\\n``; the last line may lack its line break; a blank line is a bad
  line (it has one field); line numbers (1-based, per file) count every line break, bad lines too;
* a line longer than 1 MiB is an error even with ``on_bad_line="skip"``: such a file is not
  Criteo TSV, and reading it would break the memory bound;
* an empty file (or one that decompresses to nothing) is valid and gives 0 rows.

The output directory (read back by :class:`rec_common.dataset.CriteoDataset`):

* ``dense.npy``  float32 ``[N, 13]``: ``log(1 + max(x, 0))``, empty as 0 (computed in float64);
* ``sparse.npy`` int32 ``[N, 26]`` (int64 if a table has 2**31 rows or more), ids in
  ``0 .. table_size - 1``. Either modulo hashing, ``int(hex, 16) % table_size`` with an empty
  field taken as the value 0 (as Meta's DLRM does), or, with ``min_count=K``, contiguous ids:
  per feature the values seen at least K times get ids ``1..V`` in increasing hex-value order,
  rarer values and empty fields get 0, and the table size is ``V + 1`` (two passes: count, map);
* ``labels.npy`` float32 ``[N]``;
* ``meta.json``, written last and atomically, so its presence means the directory is complete:
  table sizes, row and line counts (per source too), dtypes, the options, the number of skipped
  bad lines with a few examples, and every source's path, size and sha256.

The work is cut into chunks of ``chunk_rows`` lines. The main process streams each file once
(sha256, chunk boundaries; for gzip also the decompressed text) and a pool of worker processes
parses the chunks with the vectorized parser in :mod:`rec_common._tsv`; memory stays bounded
whatever the file size. Workers write their rows straight into the output arrays, which keep
temporary names (``dense.npy.tmp`` ...) until the end, at the row where the chunk's first line
would land (with skipped lines the rows are moved down at the end). A finished chunk leaves a
record in ``DIR/.criteo-work/`` (written atomically after its rows): its source file, byte and
line range, the sha256 of the file up to the chunk's end, the options, and a CRC of the rows it
wrote. A rerun reuses exactly the chunks whose record matches and whose rows still check out, so
an interrupted or failed run resumes where it stopped. The records are removed once ``meta.json``
is written, unless ``keep_chunks=True``. With ``min_count`` the count pass already writes dense
and labels and parks each chunk's raw categorical values (as uint32, when they fit, as Criteo's
8-digit hashes do) in the chunk's rows of ``sparse.npy.tmp``; the map pass reads them back,
checks their CRC and overwrites them with ids, and parses the text again only when they do not
fit or no longer check out.

Example::

    python -m rec_common.criteo preprocess train.txt --out data/kaggle --table-sizes kaggle
    python -m rec_common.criteo preprocess day_0.gz day_1.gz --out data/tb --min-count 15

>>> meta = preprocess(["train.txt"], "data/kaggle", table_sizes="kaggle")  # doctest: +SKIP
>>> meta["num_rows"], meta["table_sizes"][:3]  # doctest: +SKIP
(45840617, [1460, 583, 10131227])
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rec_common.__about__ import __version__
from rec_common._tsv import PAD, SUB_BLOCK_BYTES, CriteoFormatError, parse_block
from rec_common.criteo_tables import (
    DENSE_NAMES,
    NUM_DENSE,
    NUM_SPARSE,
    PRESETS,
    SPARSE_NAMES,
    resolve_table_sizes,
)

__all__ = ["DEFAULT_CHUNK_ROWS", "META_FILE", "CriteoFormatError", "main", "preprocess"]

DEFAULT_CHUNK_ROWS = 500_000  # lines per chunk: ~120 MB of text, ~80 MB of output
MAX_LINE_BYTES = 1 << 20  # longer lines are not Criteo TSV (real ones are ~250 bytes)
READ_BYTES = 8 << 20  # the main process reads the inputs in blocks of this size
META_FILE = "meta.json"
WORK_DIR = ".criteo-work"
ARRAY_FILES = {"dense": "dense.npy", "sparse": "sparse.npy", "labels": "labels.npy"}
FORMAT = "rec-common/criteo-npy"
FORMAT_VERSION = 1
ON_BAD_LINE = ("error", "skip")
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_EXAMPLES = 10
_RAW_EMPTY = 0xFFFFFFFF  # an empty field among the raw 32-bit values the count pass parks
_U32_EMPTY = np.uint64(_RAW_EMPTY)


# ---------------------------------------------------------------------------- sources and chunks
@dataclass
class _Source:
    index: int
    path: str  # absolute
    shown: str  # as the user gave it (used in messages and meta.json)
    size: int
    gzip: bool
    sha256: str | None = None
    lines: int = 0


@dataclass(frozen=True)
class _Chunk:
    """Lines ``first_line .. first_line+lines-1`` of one source: text bytes ``start..end``."""

    index: int
    source: int
    path: str
    shown: str
    gzip: bool
    start: int  # offsets in the (decompressed) text
    end: int
    first_line: int
    lines: int
    row_offset: int  # lines of all sources before this chunk: where its rows are written
    prefix_sha256: str  # sha256 of the file's bytes read up to this chunk's end
    progress: int  # file bytes consumed since the previous chunk (progress bar only)
    data: bytes | None = None  # the text, for gzip sources (workers cannot seek into gzip)

    def key(self) -> dict:
        return {
            "index": self.index, "source": self.source, "path": self.path, "gzip": self.gzip,
            "start": self.start, "end": self.end, "first_line": self.first_line,
            "lines": self.lines, "row_offset": self.row_offset,
            "prefix_sha256": self.prefix_sha256,
        }  # fmt: skip


class _HashingReader:
    """A read-only file wrapper that feeds every byte read to a hash (for gzip sources)."""

    def __init__(self, raw, hasher) -> None:
        self.raw, self.hasher, self.mode = raw, hasher, "rb"

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hasher.update(data)
        return data


def _long_line_error(shown: str, line: int) -> CriteoFormatError:
    return CriteoFormatError(
        shown, line, None,
        f"line is longer than {MAX_LINE_BYTES} bytes; a Criteo line has 40 short fields "
        "(is this a Criteo TSV file?)",
    )  # fmt: skip


def _scan_source(src: _Source, chunk_rows: int, first_index: int, row_offset: int
                 ) -> Iterator[_Chunk]:  # fmt: skip
    """Read one source once, in blocks; yield its chunks of ``chunk_rows`` lines in order.

    Computes the file's sha256 on the way (stored in ``src``). Memory is one block, plus for
    gzip sources the decompressed text of the chunk being cut (it is handed to a worker).
    """
    hasher = hashlib.sha256()
    block = bytearray(READ_BYTES)
    view = memoryview(block)
    index = first_index
    pos = 0  # text offset of the current block
    chunk_start = 0
    chunk_lines = 0  # complete lines in the chunk being cut
    done_lines = 0  # lines in chunks already yielded
    line_begin = 0  # text offset where the current (unfinished) line starts
    reported = 0  # file bytes already counted in progress
    parts: list[bytes] = []
    with open(src.path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=_HashingReader(raw, hasher), mode="rb") if src.gzip else raw

        def emit(end: int, lines: int, tail: memoryview) -> _Chunk:
            nonlocal index, reported, parts
            data = None
            if src.gzip:
                parts.append(bytes(tail))
                data = b"".join(parts)
                parts = []
            else:
                hasher.update(tail)
            consumed = raw.tell() if src.gzip else end
            chunk = _Chunk(index, src.index, src.path, src.shown, src.gzip, chunk_start, end,
                           done_lines + 1, lines, row_offset + done_lines,
                           hasher.copy().hexdigest(), consumed - reported, data)  # fmt: skip
            reported = consumed
            index += 1
            return chunk

        while True:
            n = stream.readinto(view)
            if not n:
                break
            count = block.count(b"\n", 0, n)
            o = 0  # block offset where the part not yet handed out starts
            if count >= chunk_rows - chunk_lines:
                newlines = np.flatnonzero(np.frombuffer(block, np.uint8, n) == 10)
                used = 0
                while count - used >= chunk_rows - chunk_lines:
                    used += chunk_rows - chunk_lines
                    cut = int(newlines[used - 1]) + 1
                    yield emit(pos + cut, chunk_rows, view[o:cut])
                    done_lines += chunk_rows
                    chunk_lines, chunk_start, o = 0, pos + cut, cut
                chunk_lines = count - used
            else:
                chunk_lines += count
            if o < n:
                if src.gzip:
                    parts.append(bytes(view[o:n]))
                else:
                    hasher.update(view[o:n])
            if count:
                line_begin = pos + block.rfind(b"\n", 0, n) + 1
            pos += n
            if pos - line_begin > MAX_LINE_BYTES:
                raise _long_line_error(src.shown, done_lines + chunk_lines + 1)
        if pos > chunk_start:
            lines = chunk_lines + (1 if pos > line_begin else 0)  # last line without line break
            yield emit(pos, lines, view[0:0])
            done_lines += lines
    src.sha256 = hasher.hexdigest()
    src.lines = done_lines


def _open_sources(inputs: Sequence[str | os.PathLike]) -> list[_Source]:
    sources = []
    for i, p in enumerate(inputs):
        path = Path(p)
        if not path.exists():
            raise ValueError(f"input {str(p)!r}: no such file")
        if not path.is_file():
            raise ValueError(
                f"input {str(p)!r}: expected a Criteo TSV file, got a directory or device"
            )
        with open(path, "rb") as f:
            is_gzip = f.read(2) == _GZIP_MAGIC
        sources.append(_Source(i, str(path.resolve()), str(p), path.stat().st_size, is_gzip))
    return sources


# ---------------------------------------------------------------------------- output arrays
_HEADER_BYTES = 128  # every output .npy has a header of exactly this size (a multiple of 64)
_ROW_SHAPE = {"dense": (NUM_DENSE,), "sparse": (NUM_SPARSE,), "labels": ()}


def _dtypes(sparse_dtype: str) -> dict[str, np.dtype]:
    return {"dense": np.dtype(np.float32), "sparse": np.dtype(sparse_dtype),
            "labels": np.dtype(np.float32)}  # fmt: skip


def _row_bytes(sparse_dtype: str) -> dict[str, int]:
    return {name: dt.itemsize * int(np.prod(_ROW_SHAPE[name], dtype=np.int64))
            for name, dt in _dtypes(sparse_dtype).items()}  # fmt: skip


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """An .npy (version 1.0) header of exactly ``_HEADER_BYTES`` bytes."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": shape})  # fmt: skip
    body = text.encode("latin1").ljust(_HEADER_BYTES - 10 - 1) + b"\n"
    if len(body) != _HEADER_BYTES - 10:
        raise AssertionError(f"npy header too long: {text}")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def _tmp_array(out: Path | str, name: str) -> Path:
    return Path(out) / f"{ARRAY_FILES[name]}.tmp"


def _prepare_outputs(out: Path) -> None:
    """Make sure the temporary output arrays exist; a finished array becomes the resume base."""
    for name in ARRAY_FILES:
        tmp, final = _tmp_array(out, name), out / ARRAY_FILES[name]
        if not tmp.exists():
            if final.exists():
                os.replace(final, tmp)
            else:
                tmp.touch()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _crc_of_region(fd: int, offset: int, size: int) -> int | None:
    """CRC32 of ``size`` bytes at ``offset``, or None if the file is shorter."""
    crc = 0
    while size > 0:
        data = os.pread(fd, min(size, READ_BYTES), offset)
        if not data:
            return None
        crc = zlib.crc32(data, crc)
        offset, size = offset + len(data), size - len(data)
    return crc


def _finalize_outputs(out: Path, chunks: list[_Chunk], results: list[dict], sparse_dtype: str
                      ) -> int:  # fmt: skip
    """Close the gaps left by skipped lines, write the headers, and rename the arrays into place."""
    rows = sum(r["rows"] for r in results)
    row_bytes = _row_bytes(sparse_dtype)
    for name, dtype in _dtypes(sparse_dtype).items():
        tmp, rb = _tmp_array(out, name), row_bytes[name]
        fd = os.open(tmp, os.O_RDWR)
        try:
            dest = 0
            for chunk, result in zip(chunks, results):
                if chunk.row_offset != dest:  # rows move down over the skipped lines' gap
                    src, dst, size = chunk.row_offset * rb, dest * rb, result["rows"] * rb
                    while size > 0:
                        data = os.pread(fd, min(size, READ_BYTES), _HEADER_BYTES + src)
                        _pwrite_all(fd, memoryview(data), _HEADER_BYTES + dst)
                        src, dst, size = src + len(data), dst + len(data), size - len(data)
                dest += result["rows"]
            os.ftruncate(fd, _HEADER_BYTES + rows * rb)
            _pwrite_all(fd, memoryview(_npy_header(dtype, (rows, *_ROW_SHAPE[name]))), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out / ARRAY_FILES[name])
    return rows


# ---------------------------------------------------------------------------- worker side
@dataclass(frozen=True)
class _Job:
    """What a worker does with a chunk; ``options`` goes into every chunk record."""

    stage: str  # "hash": parse + modulo; "count": parse + count values; "map": vocabulary ids
    work: str  # directory of this stage's chunk records
    out: str  # output directory (holds the temporary arrays)
    on_bad_line: str
    options: dict
    table_sizes: tuple[int, ...] | None = None  # hash
    sparse_dtype: str = "int32"  # hash, map
    vocab_dir: str | None = None  # map

    def record_path(self, chunk: _Chunk) -> Path:
        name = f"{chunk.index:06d}"
        return Path(self.work) / (name if self.stage == "count" else f"{name}.json")


def _pieces(chunk: _Chunk) -> Iterator[tuple[np.ndarray, int]]:
    """The chunk's text as parser blocks of ~SUB_BLOCK_BYTES of whole lines, with line numbers.

    The text is read READ_BYTES at a time (> MAX_LINE_BYTES, so a window always holds a whole
    line or proves it too long); a block is padded in front for the parser.
    """
    if chunk.data is not None:
        text = memoryview(chunk.data)

        def read(pos: int, size: int) -> bytes:
            return bytes(text[pos - chunk.start : pos - chunk.start + size])

        fd = None
    else:
        fd = os.open(chunk.path, os.O_RDONLY)

        def read(pos: int, size: int) -> bytes:
            data = os.pread(fd, size, pos)
            if len(data) < size:
                raise RuntimeError(f"{chunk.shown}: the file shrank while it was being read")
            return data

    try:
        pos, line = chunk.start, chunk.first_line
        while pos < chunk.end:
            data = read(pos, min(READ_BYTES, chunk.end - pos))
            at_end = pos + len(data) == chunk.end
            o = 0
            while o < len(data):
                if at_end and len(data) - o <= SUB_BLOCK_BYTES:
                    cut = len(data)
                else:
                    cut = data.rfind(b"\n", o, o + SUB_BLOCK_BYTES) + 1
                    if cut == 0:  # a line longer than a block
                        cut = data.find(b"\n", o) + 1
                        if cut == 0:
                            if at_end:
                                cut = len(data)
                            elif len(data) - o > MAX_LINE_BYTES:
                                raise _long_line_error(chunk.shown, line)
                            else:
                                break  # read again from this line's start
                    if cut - o - 1 > MAX_LINE_BYTES:
                        raise _long_line_error(chunk.shown, line)
                buf = np.empty(PAD + cut - o + 1, np.uint8)
                buf[:PAD] = 0
                buf[PAD : PAD + cut - o] = np.frombuffer(data, np.uint8, cut - o, o)
                if buf[PAD + cut - o - 1] == 10:
                    buf = buf[:-1]
                else:  # the file's last line has no line break
                    buf[-1] = 10
                yield buf, line
                line += data.count(b"\n", o, cut) + (0 if data[cut - 1] == 10 else 1)
                o = cut
            pos += o
    finally:
        if fd is not None:
            os.close(fd)


_VOCAB_CACHE: dict[tuple[str, str], list[np.ndarray]] = {}


def _vocab(job: _Job) -> list[np.ndarray]:
    """The per-feature sorted vocabularies (memory-mapped once per process and vocabulary)."""
    key = (job.vocab_dir, job.options["vocab_sha256"])
    if key not in _VOCAB_CACHE:
        _VOCAB_CACHE.clear()
        _VOCAB_CACHE[key] = [
            np.load(Path(job.vocab_dir) / f"{name}.npy", mmap_mode="r") for name in SPARSE_NAMES
        ]
    return _VOCAB_CACHE[key]


def _lookup(vocab: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1 + the position of each value in the sorted ``vocab``, or 0 when it is not there."""
    if vocab.size == 0:
        return np.zeros(values.size, np.int64)
    if vocab.size > 4096 and values.size > 4096:
        # binary search with sorted keys walks a big table in order: far fewer cache misses
        order = np.argsort(values)
        pos = np.empty(values.size, np.int64)
        pos[order] = np.searchsorted(vocab, values[order])
    else:
        pos = np.searchsorted(vocab, values)
    found = vocab[np.minimum(pos, vocab.size - 1)] == values
    return np.where(found, pos + 1, 0)


def _save_dir(final: Path, arrays: dict[str, np.ndarray], record: dict) -> None:
    """Write arrays + record.json into a temporary directory, then rename it into place."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    (tmp / "record.json").write_text(json.dumps(record))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _write_json(path: Path, obj: dict, *, sync: bool = False) -> None:
    """Write JSON under a temporary name, then rename it into place (atomic)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class _RowWriter:
    """Writes a chunk's rows into the temporary output arrays and keeps their CRC32s."""

    def __init__(self, job: _Job, row: int) -> None:
        self.row_bytes = _row_bytes(job.sparse_dtype)
        self.fds = {name: os.open(_tmp_array(job.out, name), os.O_WRONLY) for name in ARRAY_FILES}
        self.crc = dict.fromkeys(ARRAY_FILES, 0)
        self.first_row = row

    def write(self, name: str, arr: np.ndarray, row: int) -> None:
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        _pwrite_all(self.fds[name], data, _HEADER_BYTES + row * self.row_bytes[name])
        self.crc[name] = zlib.crc32(data, self.crc[name])

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def _parse_chunk(job: _Job, chunk: _Chunk, writer: _RowWriter, on_block) -> dict:
    """Parse a chunk's text; write its dense and label rows; hand each block to ``on_block``."""
    rows = lines = skipped = 0
    examples: list[dict] = []
    for buf, first_line in _pieces(chunk):
        block = parse_block(buf, path=chunk.shown, first_line=first_line,
                            on_bad_line=job.on_bad_line)  # fmt: skip
        lines += block.lines
        skipped += block.skipped
        examples += block.examples[: _MAX_EXAMPLES - len(examples)]
        row = chunk.row_offset + rows
        writer.write("dense", block.dense, row)
        writer.write("labels", block.labels, row)
        on_block(block, row)
        rows += block.labels.size
    if lines != chunk.lines:
        raise RuntimeError(
            f"{chunk.shown}: lines {chunk.first_line}..: the main process counted "
            f"{chunk.lines} lines but the worker read {lines}; did the file change?"
        )
    return {"rows": rows, "lines": lines, "skipped": skipped, "examples": examples}


def _parse_categoricals(job: _Job, chunk: _Chunk, writer: _RowWriter
                        ) -> tuple[dict, np.ndarray, np.ndarray]:  # fmt: skip
    """Parse a chunk (writing dense and labels); returns (result, values, empty), [26, rows]."""
    cats, empties = [], []

    def keep(block, row) -> None:
        cats.append(block.cat.T)
        empties.append(block.cat_empty.T)

    result = _parse_chunk(job, chunk, writer, keep)
    if not cats:
        return result, np.zeros((NUM_SPARSE, 0), np.uint64), np.zeros((NUM_SPARSE, 0), bool)
    return result, np.concatenate(cats, axis=1), np.concatenate(empties, axis=1)


def _hash_chunk(job: _Job, chunk: _Chunk, writer: _RowWriter) -> dict:
    sizes = np.asarray(job.table_sizes, np.uint64)

    def write_ids(block, row) -> None:
        writer.write("sparse", (block.cat % sizes).astype(job.sparse_dtype), row)

    result = _parse_chunk(job, chunk, writer, write_ids)
    result["crc"] = dict(writer.crc)
    _write_json(job.record_path(chunk), {"key": _record_key(job, chunk), "result": result})
    return result


def _count_chunk(job: _Job, chunk: _Chunk, writer: _RowWriter) -> dict:
    """Count each feature's values; write dense, labels and (when they fit) the raw values.

    The raw values go into the chunk's rows of ``sparse.npy.tmp`` as uint32 (an empty field as
    ``_RAW_EMPTY``), so that the map pass can usually skip parsing the text again.
    """
    result, cat, empty = _parse_categoricals(job, chunk, writer)
    values, counts, offsets = [], [], [0]
    for f in range(NUM_SPARSE):
        u, c = np.unique(cat[f][~empty[f]], return_counts=True)
        values.append(u)
        counts.append(c.astype(np.int64))
        offsets.append(offsets[-1] + u.size)
    result["crc"] = {"dense": writer.crc["dense"], "labels": writer.crc["labels"]}
    result["raw_crc"] = None
    if not cat.size or np.where(empty, 0, cat).max() < _RAW_EMPTY:
        raw = np.where(empty, _U32_EMPTY, cat).astype(np.uint32)
        writer.write("sparse", raw.T, chunk.row_offset)
        result["raw_crc"] = writer.crc["sparse"]
    arrays = {"values": np.concatenate(values), "counts": np.concatenate(counts),
              "offsets": np.asarray(offsets, np.int64)}  # fmt: skip
    _save_dir(job.record_path(chunk), arrays, {"key": _record_key(job, chunk), "result": result})
    return result


def _read_raw(job: _Job, chunk: _Chunk, counted: dict | None) -> np.ndarray | None:
    """The raw values the count pass parked for this chunk, if still intact ([26, rows])."""
    if counted is None or counted.get("raw_crc") is None or job.sparse_dtype != "int32":
        return None
    size = counted["rows"] * NUM_SPARSE * 4
    fd = os.open(_tmp_array(job.out, "sparse"), os.O_RDONLY)
    try:
        parts, offset = [], _HEADER_BYTES + chunk.row_offset * NUM_SPARSE * 4
        while size > 0:
            data = os.pread(fd, min(size, READ_BYTES), offset)
            if not data:
                return None
            parts.append(data)
            offset, size = offset + len(data), size - len(data)
    finally:
        os.close(fd)
    data = b"".join(parts)
    if zlib.crc32(data) != counted["raw_crc"]:
        return None
    return np.frombuffer(data, np.uint32).reshape(-1, NUM_SPARSE).T.astype(np.uint64)


def _map_chunk(job: _Job, chunk: _Chunk, writer: _RowWriter, counted: dict | None) -> dict:
    """Give each value its vocabulary id (0 for rare values and empty fields)."""
    cat = _read_raw(job, chunk, counted)
    if cat is not None:  # dense and labels are already in place from the count pass
        empty = cat == _RAW_EMPTY
        result = {k: counted[k] for k in ("rows", "lines", "skipped", "examples")}
        result["crc"] = {"dense": counted["crc"]["dense"], "labels": counted["crc"]["labels"]}
    else:
        result, cat, empty = _parse_categoricals(job, chunk, writer)
        result["crc"] = {"dense": writer.crc["dense"], "labels": writer.crc["labels"]}
    vocab = _vocab(job)
    ids = np.empty(cat.shape, job.sparse_dtype)
    for f in range(NUM_SPARSE):
        found = _lookup(vocab[f], cat[f])
        found[empty[f]] = 0
        ids[f] = found
    writer.write("sparse", ids.T, chunk.row_offset)
    result["crc"]["sparse"] = writer.crc["sparse"]
    _write_json(job.record_path(chunk), {"key": _record_key(job, chunk), "result": result})
    return result


def _record_key(job: _Job, chunk: _Chunk) -> dict:
    return {"chunk": chunk.key(), "options": job.options}


def _process_chunk(job: _Job, chunk: _Chunk, counted: dict | None = None) -> dict:
    """Do the job's stage for one chunk; writes rows, then the chunk's record; returns its result.

    ``counted`` is the chunk's count-pass result (map stage only).
    """
    writer = _RowWriter(job, chunk.row_offset)
    try:
        if job.stage == "hash":
            return _hash_chunk(job, chunk, writer)
        if job.stage == "count":
            return _count_chunk(job, chunk, writer)
        return _map_chunk(job, chunk, writer, counted)
    finally:
        writer.close()


def _merge_counts(count_dirs: list[str], f: int, min_count: int) -> np.ndarray:
    """The sorted values of feature ``f`` seen at least ``min_count`` times over all chunks."""
    values, counts = [], []
    for d in count_dirs:
        off = np.load(Path(d) / "offsets.npy")
        values.append(np.load(Path(d) / "values.npy", mmap_mode="r")[off[f] : off[f + 1]])
        counts.append(np.load(Path(d) / "counts.npy", mmap_mode="r")[off[f] : off[f + 1]])
    v = np.concatenate(values) if values else np.zeros(0, np.uint64)
    if v.size == 0:
        return v.astype(np.uint64)
    c = np.concatenate(counts)
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    first = np.empty(v.size, bool)
    first[0] = True
    np.not_equal(v[1:], v[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    total = np.add.reduceat(c, starts)
    return np.ascontiguousarray(v[starts][total >= min_count])


# ---------------------------------------------------------------------------- main side
def _executor(workers: int) -> Executor | None:
    """A process pool, or None for ``workers=1`` (work runs in this process).

    Workers are forked where fork exists (Linux): they start in milliseconds and, unlike spawn
    or forkserver, do not re-import the caller's ``__main__`` (a script without a main guard, or
    code piped to python, keeps working). They only run numpy code, so threads of the parent
    (torch's pools) do not matter; Python 3.12's warning about forking them is silenced.
    """
    if workers <= 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _submit(executor: Executor, fn, *args) -> Future:
    with warnings.catch_warnings():  # a worker may be forked here
        warnings.filterwarnings(
            "ignore", ".*use of fork.* may lead to deadlocks", DeprecationWarning
        )
        return executor.submit(fn, *args)


def _reusable(job: _Job, chunk: _Chunk) -> dict | None:
    """The stored result of this chunk if a previous run finished it with the same inputs.

    The rows it wrote must still be in the temporary arrays (CRC check).
    """
    path = job.record_path(chunk)
    try:
        record = json.loads((path / "record.json" if job.stage == "count" else path).read_text())
        if record.get("key") != json.loads(json.dumps(_record_key(job, chunk))):
            return None
        result = record["result"]
        if job.stage == "count" and not all(
            (path / f"{n}.npy").is_file() for n in ("values", "counts", "offsets")
        ):
            return None
        row_bytes = _row_bytes(job.sparse_dtype)
        for name, want in result["crc"].items():
            fd = os.open(_tmp_array(job.out, name), os.O_RDONLY)
            try:
                crc = _crc_of_region(fd, _HEADER_BYTES + chunk.row_offset * row_bytes[name],
                                     result["rows"] * row_bytes[name])  # fmt: skip
            finally:
                os.close(fd)
            if crc != want:
                return None
        return result
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _progress_bar(enabled: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not (enabled and sys.stderr.isatty()), leave=False)  # fmt: skip


def _run_stage(job: _Job, chunks: Iterable[_Chunk], executor: Executor | None, workers: int,
               bar, counted: list[dict] | None = None) -> tuple[list[dict], int]:  # fmt: skip
    """Process chunks (reusing finished ones) in order; returns (results by chunk, reused).

    On a bad line the earliest failing chunk's error is raised, after in-flight work settles.
    """
    Path(job.work).mkdir(parents=True, exist_ok=True)
    results: dict[int, dict] = {}
    reused = 0
    inflight: dict[Future, _Chunk] = {}
    failures: list[tuple[int, BaseException]] = []

    def extra(chunk: _Chunk) -> dict | None:
        return None if counted is None else counted[chunk.index]

    def settle(futures) -> None:
        for fut in futures:
            chunk = inflight.pop(fut)
            try:
                results[chunk.index] = fut.result()
                bar.update(chunk.progress)
            except BaseException as exc:  # reported below, earliest chunk first
                failures.append((chunk.index, exc))

    try:
        for chunk in chunks:
            done = _reusable(job, chunk)
            if done is not None:
                results[chunk.index] = done
                reused += 1
                bar.update(chunk.progress)
            elif executor is None:
                results[chunk.index] = _process_chunk(job, chunk, extra(chunk))
                bar.update(chunk.progress)
            else:
                while len(inflight) >= 2 * workers:
                    settle(wait(inflight, return_when=FIRST_COMPLETED).done)
                if failures:
                    break
                inflight[_submit(executor, _process_chunk, job, chunk, extra(chunk))] = chunk
    except BaseException as exc:
        failures.append((sys.maxsize, exc))  # the scan is past every submitted chunk
    finally:
        if inflight:
            settle(wait(inflight).done)
    if failures:
        raise min(failures, key=lambda x: x[0])[1]
    return [results[i] for i in sorted(results)], reused


def _mark_incomplete(out: Path) -> None:
    """Before new work: remove meta.json (the mark of completeness) and stale temporary files."""
    (out / META_FILE).unlink(missing_ok=True)
    work = out / WORK_DIR
    if work.is_dir():
        for p in [*work.glob("*.tmp-*"), *work.glob("*/*.tmp-*")]:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _check_options(inputs, table_sizes, min_count, chunk_rows, on_bad_line, workers):
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise ValueError("inputs: expected at least one Criteo TSV file, got none")
    if min_count is not None and table_sizes is not None:
        raise ValueError("table_sizes and min_count are mutually exclusive: pick modulo hashing "
                         "to given table sizes, or a frequency threshold")  # fmt: skip
    if min_count is not None and (isinstance(min_count, bool) or not isinstance(min_count, int)
                                  or min_count < 1):  # fmt: skip
        raise ValueError(f"min_count: expected an integer >= 1, got {min_count!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected an integer >= 1, got {chunk_rows!r}")
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line: expected 'error' or 'skip', got {on_bad_line!r}")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    return inputs, workers


def preprocess(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    table_sizes: str | os.PathLike | Sequence[int] | None = None,
    min_count: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_bad_line: str = "error",
    workers: int | None = None,
    progress: bool = True,
    keep_chunks: bool = False,
) -> dict:
    """Convert Criteo TSV files (concatenated in the given order) into ``out_dir``; returns meta.

    ``table_sizes`` (``kaggle`` by default, ``terabyte``, ``mlperf``, a file or 26 integers)
    selects modulo hashing; ``min_count`` selects the frequency threshold instead. ``workers``
    defaults to ``os.cpu_count()`` (1 runs everything in this process). Bad lines raise
    :class:`CriteoFormatError` (``on_bad_line="error"``) or are dropped and counted (``"skip"``).
    A rerun into the same ``out_dir`` reuses every chunk an earlier run finished with the same
    source bytes and options; ``keep_chunks`` keeps the chunk records after success too.
    """
    t0 = time.perf_counter()
    inputs, workers = _check_options(inputs, table_sizes, min_count, chunk_rows, on_bad_line,
                                     workers)  # fmt: skip
    mode = "hash" if min_count is None else "min_count"
    sizes = table_sizes_option = None
    if mode == "hash":
        spec = "kaggle" if table_sizes is None else table_sizes
        sizes = resolve_table_sizes(
            list(spec) if not isinstance(spec, (str, os.PathLike)) else spec
        )
        table_sizes_option = spec if isinstance(spec, str) and spec in PRESETS else list(sizes)
    sources = _open_sources(inputs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _mark_incomplete(out)
    work = out / WORK_DIR
    total_bytes = sum(s.size for s in sources)
    chunk_list: list[_Chunk] = []

    def all_chunks(first_pass: bool) -> Iterator[_Chunk]:
        """Every source's chunks, in order (the second pass reads only gzip sources again)."""
        index = row = 0
        for src in sources:
            if first_pass or src.gzip:
                sha = src.sha256
                for chunk in _scan_source(src, chunk_rows, index, row):
                    if first_pass:
                        chunk_list.append(replace(chunk, data=None))
                    yield chunk
                    index += 1
                if sha is not None and src.sha256 != sha:
                    raise RuntimeError(f"{src.shown}: the file changed during preprocessing")
            else:
                for chunk in chunk_list:
                    if chunk.source == src.index:
                        yield chunk
                        index += 1
            row += src.lines

    executor = _executor(workers)
    try:
        options = {"on_bad_line": on_bad_line, "format_version": FORMAT_VERSION}
        if mode == "hash":
            sparse_dtype = "int32" if max(sizes) < 2**31 else "int64"
            job = _Job("hash", str(work / "hash"), str(out), on_bad_line,
                       {**options, "stage": "hash", "table_sizes": list(sizes),
                        "sparse_dtype": sparse_dtype},
                       table_sizes=sizes, sparse_dtype=sparse_dtype)  # fmt: skip
            _prepare_outputs(out)
            with _progress_bar(progress, total_bytes, "preprocess") as bar:
                results, reused = _run_stage(job, all_chunks(True), executor, workers, bar)
        else:
            count_job = _Job("count", str(work / "count"), str(out), on_bad_line,
                             {**options, "stage": "count"}, sparse_dtype="int32")  # fmt: skip
            _prepare_outputs(out)
            with _progress_bar(progress, total_bytes, "count") as bar:
                counted, reused_count = _run_stage(count_job, all_chunks(True), executor,
                                                   workers, bar)  # fmt: skip
            count_dirs = [str(count_job.record_path(c)) for c in chunk_list]
            vocab_dir, vocab_sha, vocab_sizes = _build_vocab(work, count_dirs, chunk_list,
                                                             min_count, executor, options)  # fmt: skip
            sizes = tuple(n + 1 for n in vocab_sizes)
            sparse_dtype = "int32" if max(sizes) < 2**31 else "int64"
            job = _Job("map", str(work / "map"), str(out), on_bad_line,
                       {**options, "stage": "map", "min_count": min_count,
                        "vocab_sha256": vocab_sha, "sparse_dtype": sparse_dtype},
                       sparse_dtype=sparse_dtype, vocab_dir=str(vocab_dir))  # fmt: skip
            with _progress_bar(progress, total_bytes, "map") as bar:
                results, reused = _run_stage(job, all_chunks(False), executor, workers, bar,
                                             counted)  # fmt: skip
            reused += reused_count
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    _finalize_outputs(out, chunk_list, results, sparse_dtype)
    meta = _meta(sources, chunk_list, results, sizes, sparse_dtype, mode, min_count,
                 table_sizes_option, chunk_rows, on_bad_line)  # fmt: skip
    meta["run"] = {
        "seconds": round(time.perf_counter() - t0, 3), "workers": workers,
        "chunks": len(chunk_list), "chunks_reused": reused,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    _write_json(out / META_FILE, meta, sync=True)
    if not keep_chunks:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _build_vocab(work: Path, count_dirs: list[str], chunks: list[_Chunk], min_count: int,
                 executor: Executor | None, options: dict) -> tuple[Path, str, list[int]]:  # fmt: skip
    """Merge the per-chunk counts into one sorted vocabulary per feature (reused when unchanged)."""
    vocab_dir = work / "vocab"
    key = {"min_count": min_count, "options": options,
           "chunks": hashlib.sha256(json.dumps([c.key() for c in chunks]).encode()).hexdigest()}  # fmt: skip
    try:
        record = json.loads((vocab_dir / "record.json").read_text())
        if record.get("key") != key or not all(
            (vocab_dir / f"{n}.npy").is_file() for n in SPARSE_NAMES
        ):
            record = None
    except (OSError, ValueError):
        record = None
    if record is None:
        if executor is None:
            vocabs = [_merge_counts(count_dirs, f, min_count) for f in range(NUM_SPARSE)]
        else:
            futures = [_submit(executor, _merge_counts, count_dirs, f, min_count)
                       for f in range(NUM_SPARSE)]  # fmt: skip
            vocabs = [fut.result() for fut in futures]
        digest = hashlib.sha256()
        for v in vocabs:
            digest.update(np.int64(v.size).tobytes())
            digest.update(v.tobytes())
        record = {"key": key, "sha256": digest.hexdigest(), "sizes": [int(v.size) for v in vocabs]}
        _save_dir(vocab_dir, dict(zip(SPARSE_NAMES, vocabs)), record)
    return vocab_dir, record["sha256"], record["sizes"]


def _meta(sources, chunks, results, sizes, sparse_dtype, mode, min_count, table_sizes_option,
          chunk_rows, on_bad_line) -> dict:  # fmt: skip
    per_source = {s.index: {"rows": 0, "skipped": 0} for s in sources}
    examples = []
    for c, r in zip(chunks, results):
        per_source[c.source]["rows"] += r["rows"]
        per_source[c.source]["skipped"] += r["skipped"]
        examples += [{"path": c.shown, **e} for e in r["examples"]][: _MAX_EXAMPLES - len(examples)]
    first_row = 0
    source_meta = []
    for s in sources:
        source_meta.append({"path": s.shown, "abspath": s.path, "size": s.size, "sha256": s.sha256,
                            "gzip": s.gzip, "lines": s.lines, "first_row": first_row,
                            **per_source[s.index]})  # fmt: skip
        first_row += per_source[s.index]["rows"]
    if mode == "hash":
        rule = "int(hex, 16) % table_size; an empty field is the value 0"
    else:
        rule = (f"values seen >= {min_count} times get ids 1..V in increasing hex order; "
                "rarer values and empty fields get 0")  # fmt: skip
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rec_common_version": __version__,
        "num_rows": first_row,
        "num_dense": NUM_DENSE,
        "num_sparse": NUM_SPARSE,
        "dense_names": list(DENSE_NAMES),
        "sparse_names": list(SPARSE_NAMES),
        "table_sizes": [int(n) for n in sizes],
        "dtypes": {"dense": "float32", "sparse": sparse_dtype, "labels": "float32"},
        "files": dict(ARRAY_FILES),
        "options": {
            "categorical": mode,
            "table_sizes": table_sizes_option,
            "min_count": min_count,
            "categorical_rule": rule,
            "dense_rule": "log(1 + max(x, 0)); an empty field is 0",
            "on_bad_line": on_bad_line,
            "chunk_rows": chunk_rows,
        },
        "lines": sum(s.lines for s in sources),
        "skipped_lines": sum(r["skipped"] for r in results),
        "skipped_examples": examples,
        "sources": source_meta,
    }


# ---------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m rec_common.criteo",
        description="Criteo TSV (Kaggle train.txt, Terabyte day_N, plain or .gz) tools.",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "preprocess",
        help="convert Criteo TSV files into dense/sparse/labels .npy arrays + meta.json",
        description="Convert Criteo TSV files, concatenated in the order given, into a directory "
        "of dense.npy (float32 log1p), sparse.npy (ids per table), labels.npy and meta.json "
        "(written last). Resumable: a rerun reuses the chunks a previous run finished.",
        formatter_class=fmt,
        epilog="example: python -m rec_common.criteo preprocess day_0.gz day_1.gz "
        "--out data/tb --table-sizes terabyte --workers 8",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="Criteo TSV files (plain or gzip)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    cat = p.add_mutually_exclusive_group()
    cat.add_argument("--table-sizes", default=None, metavar="kaggle|terabyte|mlperf|FILE",
                     help="modulo-hash categoricals to these table sizes (default: kaggle)")  # fmt: skip
    cat.add_argument("--min-count", type=int, default=None, metavar="N",
                     help="instead, give values seen >= N times ids 1..V and the rest 0")  # fmt: skip
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                   help="lines per chunk (the unit of parallel work and of resuming)")  # fmt: skip
    p.add_argument("--on-bad-line", choices=ON_BAD_LINE, default="error",
                   help="stop at the first bad line, or drop bad lines and count them")  # fmt: skip
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes (1 = parse in this process)")  # fmt: skip
    p.add_argument("--keep-chunks", action="store_true",
                   help="keep the per-chunk files after success (for later reruns)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        meta = preprocess(
            args.inputs, args.out, table_sizes=args.table_sizes, min_count=args.min_count,
            chunk_rows=args.chunk_rows, on_bad_line=args.on_bad_line, workers=args.workers,
            progress=not args.quiet, keep_chunks=args.keep_chunks,
        )  # fmt: skip
    except (CriteoFormatError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    skipped = meta["skipped_lines"]
    if skipped:
        first = meta["skipped_examples"][0]
        print(f"warning: skipped {skipped} bad line{'s' * (skipped != 1)} (first: {first['path']}: "
              f"line {first['line']}: {first['reason']}); see skipped_examples in "
              f"{Path(args.out) / META_FILE}", file=sys.stderr)  # fmt: skip
    if not args.quiet:
        secs = meta["run"]["seconds"]
        rate = meta["num_rows"] / secs if secs > 0 else float("nan")
        print(f"wrote {meta['num_rows']} rows ({meta['lines']} lines read, {skipped} skipped) "
              f"to {args.out} in {secs:.1f} s ({rate:,.0f} rows/s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    # Re-enter through the package name so worker processes can unpickle this module's functions.
    from rec_common.criteo import main as _main

    sys.exit(_main())
