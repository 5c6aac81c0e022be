"""Benchmarks of rec-common's own tools; for now the Criteo preprocessor.

``python -m rec_common.bench preprocess --rows 2000000`` writes synthetic Criteo TSV with
:mod:`rec_common.synth` (the real Kaggle layout: label, 13 integers, 26 hex categoricals,
empty fields), preprocesses it with modulo hashing (``hash``, Kaggle table sizes) and with a
frequency threshold (``min_count``), prints rows/s and MB/s, and appends one result row per
variant to ``results/rec-common/preprocess.jsonl``. A timing is end to end, as a user sees it:
reading and checksumming the input, parsing, writing the arrays, ``meta.json`` and fsync; the
input file is usually in the page cache, having just been written. ``--input FILE`` times a
real file (e.g. Kaggle ``train.txt``) instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rec_common.criteo import DEFAULT_CHUNK_ROWS, preprocess
from rec_common.results import default_path, make_row, write_rows
from rec_common.timing import quantile

VARIANTS = ("hash", "min_count")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m rec_common.bench", formatter_class=fmt,
                                     description="Benchmarks of rec-common's tools.")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "preprocess",
        formatter_class=fmt,
        help="time python -m rec_common.criteo preprocess end to end",
        description="Time Criteo preprocessing (modulo hashing and min-count) on synthetic "
        "Criteo TSV or a given file, print rows/s and MB/s, and append result rows.",
        epilog="example: python -m rec_common.bench preprocess --rows 2000000 --workers 2",
    )
    p.add_argument("--rows", type=_positive, default=2_000_000, help="synthetic rows to write")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="time this Criteo TSV file instead of synthetic rows")  # fmt: skip
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                   help="worker processes of the preprocessor")  # fmt: skip
    p.add_argument("--chunk-rows", type=_positive, default=DEFAULT_CHUNK_ROWS,
                   help="lines per chunk")  # fmt: skip
    p.add_argument("--min-count", type=_positive, default=2,
                   help="threshold of the min_count variant")  # fmt: skip
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                   help="what to time")  # fmt: skip
    p.add_argument("--repeats", type=_positive, default=1, help="timed runs per variant")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows")
    p.add_argument("--max-distinct", type=_positive, default=None,
                   help="distinct values per categorical of the synthetic rows "
                   "(default: rec_common.synth's)")  # fmt: skip
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="where the input and outputs go (default: a temporary directory, removed)")  # fmt: skip
    p.add_argument("--out", default=str(default_path("rec-common", "preprocess")),
                   help="JSON-lines file the result rows are appended to")  # fmt: skip
    return parser


def _write_input(args, work: Path) -> tuple[Path, str]:
    from rec_common.synth import write_criteo_tsv

    path = work / "criteo-synthetic.tsv"
    kw = {} if args.max_distinct is None else {"max_distinct": args.max_distinct}
    t0 = time.perf_counter()
    write_criteo_tsv(path, args.rows, seed=args.seed, progress=False, **kw)
    print(f"wrote {args.rows} synthetic rows ({path.stat().st_size / 1e6:.0f} MB) to {path} "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return path, f"criteo-synthetic-{args.rows}"


def bench_preprocess(args) -> list[dict]:
    """Time each variant ``args.repeats`` times; returns the result rows."""
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="rec-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows_out = []
    try:
        if args.input:
            src, workload = Path(args.input), f"criteo-file-{Path(args.input).name}"
        else:
            src, workload = _write_input(args, work)
        size = src.stat().st_size
        for variant in args.variants:
            seconds, meta = [], None
            for _ in range(args.repeats):
                out = work / f"out-{variant}"
                shutil.rmtree(out, ignore_errors=True)
                kw = {"min_count": args.min_count} if variant == "min_count" else {}
                t0 = time.perf_counter()
                meta = preprocess([src], out, chunk_rows=args.chunk_rows, workers=args.workers,
                                  progress=False, **kw)  # fmt: skip
                seconds.append(time.perf_counter() - t0)
                shutil.rmtree(out, ignore_errors=True)
            n = meta["num_rows"]
            rates = [n / s for s in seconds]
            rate = statistics.median(rates)
            mb_s = statistics.median(size / 1e6 / s for s in seconds)
            print(f"{variant:>9}: {n} rows, {size / 1e6:.0f} MB in {statistics.median(seconds):.2f} s"
                  f" = {rate:,.0f} rows/s, {mb_s:,.1f} MB/s ({args.workers} workers)")  # fmt: skip
            rows_out.append(make_row(
                package="rec-common", benchmark="preprocess", workload=workload, variant=variant,
                metric="throughput", unit="rows/s", value=rate, p20=quantile(rates, 0.2),
                p80=quantile(rates, 0.8), n=len(rates), rows=n, input_bytes=size,
                mb_per_s=mb_s, seconds=statistics.median(seconds), workers=args.workers,
                chunk_rows=args.chunk_rows,
                min_count=args.min_count if variant == "min_count" else None,
                table_sizes="kaggle" if variant == "hash" else None,
                includes="read + sha256 + parse + write arrays + meta.json, fsync; end to end",
            ))  # fmt: skip
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return rows_out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.input and not Path(args.input).is_file():
        print(f"error: --input {args.input!r}: no such file", file=sys.stderr)
        return 1
    try:
        rows = bench_preprocess(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path = write_rows(args.out, rows)
    print(f"appended {len(rows)} result rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
