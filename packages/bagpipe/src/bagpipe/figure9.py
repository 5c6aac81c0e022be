"""Figure 9 analogue: per-iteration training time of Bagpipe and its baselines, same run,
same machine, same data, for DLRM, Wide&Deep, DCN and DeepFM.

Every variant is a real multi-process run through ``bagpipe.launch`` (oracle, embedding
servers, trainers on this host over loopback); the trainers' own timings give the median and
mean +- std per iteration after warm-up, the breakdown (prefetch wait, lookup, forward,
backward, sync-now, sync-later wait, optimizer), rows and bytes fetched and written back per
step, rows all-reduced now / later / never, and the oracle's decision time per batch.

How this differs from the paper (8 x V100, one trainer per p3.2xlarge, 10 Gbps between the
trainers, the oracle and the embedding server): here every role shares one host, so row
traffic goes over loopback (tens of GB/s instead of ~1.2 GB/s) and the trainers' all-reduce
over NVLink/PCIe; fetches are therefore far cheaper than in the paper and the speedup of
caching over the no-cache parameter server is a lower bound of what a 10 Gbps cluster shows.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bagpipe.cli import parser

VARIANTS = ("bagpipe", "ps", "static", "model-parallel", "torchrec-dmp")
# torchrec-dmp (TorchRec's own DistributedModelParallel) is opt-in: it needs FBGEMM's training
# TBE forward and backward on the device, which the lent GPU machine's FBGEMM pack lacks.
DEFAULT_VARIANTS = ("bagpipe", "ps", "static", "model-parallel")
TRAINER_ONLY = ("model-parallel", "torchrec-dmp")  # per-step fields: the whole step, summed
BREAKDOWN = ("prefetch_wait", "lookup", "forward", "backward", "sync_now", "sync_later_wait",
             "emb_optim", "dense_sync", "dense_optim", "cleanup")  # fmt: skip
NOTE = "How this differs" + __doc__.split("How this differs")[1].rstrip()
EXAMPLE = "python -m bagpipe.figure9 --models dlrm --steps 100 --warmup 20"


def make_data(path: Path, rows: int, tables: str, alpha: float, seed: int) -> Path:
    from bagpipe.synthetic import write_criteo_dir
    from rec_common.criteo_tables import PRESETS

    if (path / "meta.json").exists():
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("num_rows") == rows:
            return path
    sizes = list(PRESETS[tables]) if tables in PRESETS else [int(x) for x in tables.split(",")]
    print(f"figure9: writing {rows} synthetic rows ({tables} tables, alpha {alpha}) to {path}",
          flush=True)  # fmt: skip
    return write_criteo_dir(path, rows, sizes, seed=seed, alpha=alpha)


def per_step(stats: dict, warmup: int, variant: str) -> dict:
    """Per-step seconds (and breakdown) of one trainer, warm-up steps dropped."""
    steps = stats["steps"][warmup:]
    if variant in TRAINER_ONLY:
        total = [sum(v for k, v in r.items() if k not in ("step", "loss")) for r in steps]
        br = {k: float(np.mean([r[k] for r in steps]))
              for k in steps[0] if k not in ("step", "loss")}  # fmt: skip
        return {"total": total, "breakdown": br}
    cache = stats["cache"][warmup:]
    total = [r["next_batch"] + r["forward"] + r["backward"] + r["dense_sync"] + r["dense_optim"]
             for r in steps]  # fmt: skip
    br = {}
    for k in BREAKDOWN:
        src = steps if k in steps[0] else cache
        br[k] = float(np.mean([r.get(k, 0.0) for r in src]))
    row_bytes = stats["summary"]["row_bytes"]
    for k in ("fetched_rows", "written_rows", "rows_now", "rows_later", "rows_private"):
        br[k] = float(np.mean([r.get(k, 0.0) for r in cache]))
    br["fetched_bytes"] = br["fetched_rows"] * row_bytes
    br["written_bytes"] = br["written_rows"] * row_bytes
    br["hit_rate"] = stats["summary"]["hit_rate"]
    br["peak_resident"] = stats["summary"]["peak_resident"]
    br["oracle_decide_ms_per_batch"] = 1e3 * stats["decide_seconds_per_batch"]
    return {"total": total, "breakdown": br}


def parse_variant_steps(text: str, variants) -> dict[str, int]:
    """``"ps=150,static=300"`` -> ``{"ps": 150, "static": 300}`` (only known variants).

    >>> parse_variant_steps("ps=150", ["bagpipe", "ps"])
    {'ps': 150}
    """
    out: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, val = part.partition("=")
        if not sep or name not in variants or not val.isdigit() or int(val) < 1:
            raise ValueError(f"--variant-steps: expected VARIANT=STEPS with VARIANT one of "
                             f"{', '.join(variants)} and STEPS >= 1, got {part!r}")  # fmt: skip
        out[name] = int(val)
    return out


def steps_of(args, variant: str) -> int:
    return args.variant_steps.get(variant, args.steps)


def run_variant(args, model: str, variant: str, data: Path, work: Path) -> dict | None:
    from bagpipe.launch import main as launch_main

    if variant == "torchrec-dmp":
        why = _dmp_missing(args)
        if why is not None:
            print(f"figure9: {model} / {variant} skipped: {why}", flush=True)
            return None
    out = work / f"{model}-{variant}"
    cmd = ["--trainers", str(args.trainers), "--servers", str(args.servers), "--model", model,
           "--data", str(data), "--device", args.device, "--out", str(out),
           "--mode", variant, "--mini-batch-size", str(args.global_batch),
           "--stop-iter", str(steps_of(args, variant)), "--emb-size", str(args.emb_size),
           "--cache-size", str(args.cache_size), "--timeout", str(args.timeout),
           "--trainer-args", f"--model-size {args.model_size}"]  # fmt: skip
    if variant == "bagpipe":
        cmd += ["--lookahead-value", str(args.lookahead), "--cleanup-batch-proportion",
                str(args.cleanup)]  # fmt: skip
    print(f"figure9: {model} / {variant}: python -m bagpipe.launch {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = launch_main(cmd)
    if rc != 0:
        print(f"figure9: {model} / {variant} failed (exit {rc}); skipped", flush=True)
        return None
    per = [per_step(json.loads((out / f"trainer_{t}.json").read_text()), args.warmup, variant)
           for t in range(args.trainers)]  # fmt: skip
    total = [max(xs) for xs in zip(*(p["total"] for p in per))]  # the slowest trainer per step
    return {"times_ms": [1e3 * x for x in total], "breakdown": per[0]["breakdown"],
            "wall_s": time.perf_counter() - t0}  # fmt: skip


def _dmp_missing(args) -> str | None:
    """Why TorchRec's DMP cannot train on ``args.device`` (probed once, in a fresh process)."""
    if not hasattr(args, "_dmp_missing"):
        from bagpipe.torchrec_dmp import missing_in_subprocess

        args._dmp_missing = missing_in_subprocess(args.device)
    return args._dmp_missing


def _stop(signum, frame):
    raise SystemExit(128 + signum)


def rows_of(args, model: str, res: dict) -> tuple[list[dict], list[tuple]]:
    """Result rows of one model's finished variants (ratios against the others) and the
    printed table's lines."""
    from rec_common.results import make_row

    rows, table = [], []
    for variant, r in res.items():
        xs = r["times_ms"]
        med = statistics.median(xs)
        common = dict(package="bagpipe", benchmark="figure9", workload=f"{model}-{args.tables}",
                      variant=variant, metric="iteration_time", unit="ms", value=med,
                      p20=float(np.percentile(xs, 20)), p80=float(np.percentile(xs, 80)),
                      n=len(xs), model=model, mean=statistics.fmean(xs),
                      std=statistics.pstdev(xs), breakdown_s=r["breakdown"], wall_s=r["wall_s"],
                      batch=args.global_batch, trainers=args.trainers, servers=args.servers,
                      emb_size=args.emb_size, steps=steps_of(args, variant), warmup=args.warmup,
                      lookahead=args.lookahead if variant == "bagpipe" else 1,
                      device=args.device, setup_note=NOTE)  # fmt: skip
        bases = [b for b in res if b != variant] if variant == "bagpipe" else (
            ["ps"] if "ps" in res and variant != "ps" else [])  # fmt: skip
        if not bases:
            rows.append(make_row(**common))
        for b in bases:
            rows.append(make_row(**common, baseline=b,
                                 baseline_value=statistics.median(res[b]["times_ms"])))  # fmt: skip
        table.append((model, variant, med, statistics.fmean(xs), statistics.pstdev(xs),
                      r["breakdown"]))  # fmt: skip
    return rows, table


def main(argv=None) -> int:
    p = parser("python -m bagpipe.figure9", __doc__, EXAMPLE)
    p.add_argument(
        "--models",
        default="dlrm,wide-deep,dcn,deepfm",
        help="comma-separated: dlrm, wide-deep, dcn, deepfm",
    )
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"bagpipe and baselines to run, some of {', '.join(VARIANTS)} "
                        "(torchrec-dmp: TorchRec's own DMP, opt-in)")  # fmt: skip
    p.add_argument("--steps", type=int, default=550, help="training steps per run")
    p.add_argument("--warmup", type=int, default=50, help="steps dropped from the statistics")
    p.add_argument(
        "--variant-steps",
        default="",
        help="per-variant step counts, e.g. ps=150 (the no-cache PS is ~20x slower per step)",
    )
    p.add_argument(
        "--global-batch", type=int, default=16384, help="global batch (split over the trainers)"
    )
    p.add_argument("--trainers", type=int, default=None, help="default: GPUs (at least 2)")
    p.add_argument("--servers", type=int, default=2, help="embedding servers")
    p.add_argument("--emb-size", type=int, default=48, help="embedding dim")
    p.add_argument("--tables", default="kaggle", help="kaggle or comma-separated sizes")
    p.add_argument("--alpha", type=float, default=1.05, help="power-law skew of the ids")
    p.add_argument("--lookahead", type=int, default=200, help="bagpipe's lookahead L")
    p.add_argument("--cleanup", type=float, default=0.25, help="bagpipe's cleanup proportion")
    p.add_argument("--cache-size", type=int, default=15_000_000, help="rows per trainer")
    p.add_argument("--model-size", default="paper", choices=("paper", "small"), help="MLP sizes")
    p.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    p.add_argument("--data", default=None, help="Criteo directory (default: synthetic)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bagpipe-figure9"),
                   help="synthetic data and per-run statistics")  # fmt: skip
    p.add_argument(
        "--out", default="results/bagpipe/figure9.jsonl", help="result rows (JSON lines)"
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="per run")
    args = p.parse_args(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.trainers is None:
        args.trainers = max(2, torch.cuda.device_count() if args.device == "cuda" else 2)
    try:
        args.variant_steps = parse_variant_steps(args.variant_steps, VARIANTS)
    except ValueError as exc:
        p.error(str(exc))
    for v in args.variants.split(","):
        if v not in VARIANTS:
            p.error(f"--variants: unknown variant {v!r}; expected some of {', '.join(VARIANTS)}")
        if steps_of(args, v) <= args.warmup:
            p.error(f"{v}: {steps_of(args, v)} steps must exceed --warmup {args.warmup}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else make_data(
        work / "data", args.global_batch * args.steps, args.tables, args.alpha, 0)  # fmt: skip
    from rec_common.results import write_rows

    rows, table = [], []
    path = Path(args.out)
    old_handler = signal.signal(signal.SIGTERM, _stop)  # a timeout still writes rows
    try:
        for model in args.models.split(","):
            res = {}
            try:
                for variant in args.variants.split(","):
                    r = run_variant(args, model, variant, data, work)
                    if r is not None:
                        res[variant] = r
            finally:  # rows per model, also when stopped mid-model: nothing finished is lost
                if res:
                    model_rows, lines = rows_of(args, model, res)
                    write_rows(path, model_rows)
                    rows += model_rows
                    table += lines
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    if not rows:
        print("error: figure9: no variant finished", file=sys.stderr)
        return 1
    print(
        f"\n{'model':10s} {'variant':15s} {'median ms':>10s} {'mean±std ms':>16s}  breakdown (ms)"
    )
    for model, variant, med, mean, std, br in table:
        parts = " ".join(f"{k}={1e3 * br[k]:.1f}" for k in BREAKDOWN if k in br)
        extra = ""
        if "fetched_rows" in br:
            extra = (f" | fetched {br['fetched_rows']:.0f} rows ({br['fetched_bytes'] / 1e6:.1f} MB)"
                     f"/step, written {br['written_rows']:.0f}, all-reduce now/later/never "
                     f"{br['rows_now']:.0f}/{br['rows_later']:.0f}/{br['rows_private']:.0f}, "
                     f"oracle {br['oracle_decide_ms_per_batch']:.1f} ms/batch")  # fmt: skip
        print(f"{model:10s} {variant:15s} {med:10.2f} {mean:9.2f}±{std:<6.2f}  {parts}{extra}")
    for r in rows:
        if r["variant"] == "bagpipe" and r["ratio"] is not None:
            print(
                f"{r['model']}: bagpipe is {r['ratio']:.2f}x faster per iteration than {r['baseline']}"
            )
    print(f"\nnote: {' '.join(NOTE.split())}")
    print(f"figure9: wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
