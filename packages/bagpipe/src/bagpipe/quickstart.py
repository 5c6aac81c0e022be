"""Quickstart step: Bagpipe trains DLRM on a Criteo directory with 2 trainers and 2 embedding
servers on CPU, through the launcher, then the no-cache parameter server does the same; the
per-iteration times are printed side by side.

With no data at ``--data``, synthetic Criteo rows are written there first (rec-common's TSV
synthesizer and real preprocessing)."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bagpipe.cli import parser

EXAMPLE = "python -m bagpipe.quickstart --data quickstart-out/preprocessed"


def ensure_data(path: Path, rows: int) -> Path:
    if (path / "meta.json").exists():
        return path
    from rec_common.criteo import preprocess
    from rec_common.synth import write_criteo_tsv

    path.mkdir(parents=True, exist_ok=True)
    tsv = path.parent / f"{path.name}_synth.tsv"
    write_criteo_tsv(tsv, rows, seed=1, progress=False)
    preprocess([tsv], path, min_count=4, progress=False, workers=1)
    return path


def main(argv=None) -> int:
    p = parser("python -m bagpipe.quickstart", __doc__, EXAMPLE)
    p.add_argument("--data", default="quickstart-out/preprocessed", help="Criteo directory")
    p.add_argument("--rows", type=int, default=20000, help="synthetic rows if --data is empty")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=512, help="global batch")
    p.add_argument("--lookahead", type=int, default=10)
    args = p.parse_args(argv)
    from bagpipe.launch import main as launch_main

    t0 = time.perf_counter()
    data = ensure_data(Path(args.data), args.rows)
    meta = json.loads((data / "meta.json").read_text())
    total = sum(meta["table_sizes"])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("bagpipe", "ps"):
            out = Path(tmp) / mode
            cmd = ["--trainers", "2", "--servers", "2", "--model", "dlrm", "--data", str(data),
                   "--out", str(out), "--mode", mode, "--mini-batch-size", str(args.batch),
                   "--stop-iter", str(args.steps), "--emb-size", "16", "--cache-size",
                   str(total), "--lookahead-value", str(args.lookahead), "--timeout", "300",
                   "--trainer-args", "--model-size small --dense-lr 0.05"]  # fmt: skip
            print(f"quickstart: python -m bagpipe.launch {' '.join(cmd)}", flush=True)
            if launch_main(cmd) != 0:
                print(f"error: quickstart: the {mode} run failed (see its log above)",
                      file=sys.stderr)  # fmt: skip
                return 1
            st = json.loads((out / "trainer_0.json").read_text())
            steps = st["steps"][3:]
            times = [r["next_batch"] + r["forward"] + r["backward"] + r["dense_sync"]
                     + r["dense_optim"] for r in steps]  # fmt: skip
            results[mode] = (statistics.median(times), st["steps"][-1]["loss"],
                             st["summary"]["hit_rate"])  # fmt: skip
    print(f"\n{'variant':28s} {'ms/iteration':>12s} {'last loss':>10s} {'hit rate':>9s}")
    names = {"bagpipe": f"bagpipe (lookahead {args.lookahead})", "ps": "no-cache PS (lookahead 1)"}
    for mode, (med, loss, hit) in results.items():
        print(f"{names[mode]:28s} {1e3 * med:12.2f} {loss:10.4f} {hit:9.3f}")
    ratio = results["ps"][0] / results["bagpipe"][0]
    print(
        f"bagpipe vs no-cache PS: {ratio:.2f}x per iteration (CPU, loopback; "
        f"done in {time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
