"""RAP figures 9 and 10 on the GPUs present: ``python -m rap_share.figures figure9|figure10``.

Figure 9: end-to-end throughput of CPU workers, CUDA stream, MPS and RAP. Figure 10: the
ablation (Sequential, MPS, RAP w/o Mapping, RAP w/o Fusion, Ideal, RAP) normalized to
Sequential, plus the trainer's per-stage times co-running vs Ideal. Every (plan, batch) runs
all its variants in one set of rank processes (see :func:`rap_share.corun.rank_main`); the
MPS daemon (:mod:`rap_share.mps`) is on for every variant but Sequential, which runs after it
with MPS off. Writes rec_common.results rows under ``results/rap-share/``, PNG plots next to
them and ``docs/rap-share/figures.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rap_share.corun import Config
from rap_share.graphs import ENV as GRAPHS_ENV
from rap_share.graphs import enabled as graphs_enabled

FIGURES = {
    "figure9": ("cpu_workers", "cuda_stream", "mps", "rap"),
    "figure10": (
        "sequential",
        "mps",
        "rap_no_mapping",
        "rap_no_fusion",
        "ideal",
        "rap",
        "rap_process",
    ),
}
LABELS = {"cpu_workers": "CPU workers", "cuda_stream": "CUDA stream", "mps": "MPS",
          "sequential": "Sequential", "rap_no_mapping": "RAP w/o Mapping",
          "rap_no_fusion": "RAP w/o Fusion", "ideal": "Ideal", "rap": "RAP",
          "rap_process": "RAP (process)"}  # fmt: skip
RAP_VARIANTS = ("rap", "rap_process")  # the thread and the process form of the staged program
TABLES = {"plan0": "kaggle", "plan1": "terabyte"}


def load_criteo_tsv(path: str, rows: int):
    """The first ``rows`` lines of a Criteo TSV (label, 13 ints, 26 hex; empty = null)."""
    import gzip

    from rap_share.columns import Column
    from rap_share.runtime import RawSource

    opener = gzip.open if path.endswith(".gz") else open
    lab, dense, dmask, cat, cmask = [], [], [], [], []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= rows:
                break
            p = line.rstrip("\n").split("\t")
            if len(p) != 40:
                raise ValueError(f"{path} line {n + 1}: {len(p)} tab-separated fields, expected 40")
            lab.append(int(p[0]))
            dense.append([int(x) if x else 0 for x in p[1:14]])
            dmask.append([x != "" for x in p[1:14]])
            cat.append([int(x, 16) if x else 0 for x in p[14:40]])
            cmask.append([x != "" for x in p[14:40]])
    if not lab:
        raise ValueError(f"{path}: no rows")
    d, dm, c, cm = (np.array(a) for a in (dense, dmask, cat, cmask))
    cols = {f"int_{i}": Column(d[:, i].astype(np.int64), None, dm[:, i]) for i in range(13)}
    cols.update({f"cat_{i}": Column(c[:, i].astype(np.int64), None, cm[:, i]) for i in range(26)})
    return RawSource(cols, np.array(lab, dtype=np.float32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world, cfgs, variants, raw_paths, out_path, args, env: dict) -> None:
    import torch.multiprocessing as mp

    from rap_share.corun import rank_main

    saved = {k: os.environ.get(k) for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        mp.spawn(
            rank_main,
            args=(
                world,
                cfgs,
                list(variants),
                raw_paths,
                out_path,
                args.device,
                args.cpu_workers,
                _free_port(),
                not getattr(args, "no_diagnostics", False),
                getattr(args, "rounds", 1),
            ),
            nprocs=world,
            join=True,
        )
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def measure(args, variants) -> tuple[list[dict], str]:
    """Run every config; the raw per-run records (rank 0) and the MPS note."""
    import torch

    from rap_share.mps import MpsDaemon
    from rap_share.runtime import RawSource

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    world = args.gpus or (min(2, torch.cuda.device_count()) if cuda else 1)
    tmp = tempfile.mkdtemp(prefix="rap-fig-")
    raw_paths = {}
    for plan in args.plans:
        path = os.path.join(tmp, f"{plan}.npz")
        if args.data:
            src = (RawSource.load(args.data) if args.data.endswith(".npz")
                   else load_criteo_tsv(args.data, args.rows))  # fmt: skip
        else:
            src = RawSource.synthetic(args.rows, seed=args.seed, table_sizes=TABLES[plan])
        src.save(path)
        raw_paths[plan] = path
    cfgs = [Config(plan=p, batch=b, world=world, steps=args.steps, warmup=args.warmup,
                   embedding_dim=args.embedding_dim, max_table_rows=args.max_table_rows,
                   cpu_workers=args.cpu_workers, check=args.check, seed=args.seed,
                   solver=args.solver, cost_model=args.cost_model,
                   graphs=graphs_enabled(getattr(args, "graphs", None)),
                   trainer_priority=getattr(args, "trainer_priority", "high"),
                   cpu_threads=getattr(args, "cpu_threads", 0))
            for p in args.plans for b in args.batches]  # fmt: skip
    out_path = os.path.join(tmp, "runs.jsonl")
    mps = MpsDaemon()
    use_mps = cuda and not args.no_mps and any(v != "sequential" for v in variants)
    if use_mps:
        mps.start()
    note = mps.reason if use_mps else "MPS not used (--no-mps or no CUDA)"
    print(f"[figures] {world} rank(s), MPS: {note}", file=sys.stderr)
    was_active = mps.active
    try:
        first = [v for v in variants if not (v == "sequential" and was_active)]
        _spawn(world, cfgs, first, raw_paths, out_path, args, mps.env())
    finally:
        mps.stop()
    if was_active and "sequential" in variants:  # the MPS program without MPS
        _spawn(world, cfgs, ["sequential"], raw_paths, out_path, args, {})
    runs = [json.loads(x) for x in Path(out_path).read_text().splitlines() if x.strip()]
    return runs, note


def median_runs(runs: list[dict]) -> list[dict]:
    """One run per (plan, batch, variant): with several rounds, the run of median throughput
    (the lower middle one for an even count), with ``rounds`` and the throughput ``spread``
    (min, max) over the rounds added; single runs pass through with ``rounds`` = 1."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        c = r["config"]
        groups.setdefault((c["plan"], c["batch"], r["variant"]), []).append(r)
    out = []
    for group in groups.values():
        ranked = sorted(group, key=lambda r: r["total_iterations_per_s"])
        pick = dict(ranked[(len(ranked) - 1) // 2])
        speeds = [r["total_iterations_per_s"] for r in ranked]
        pick.update(rounds=len(group), spread=[speeds[0], speeds[-1]])
        out.append(pick)
    return out


def to_rows(runs: list[dict], figure: str, note: str) -> list[dict]:
    from rec_common.results import add_ratios, make_row

    rows = []
    for r in median_runs(runs):
        c = r["config"]
        common = dict(package="rap-share", benchmark=figure, workload=f"{c['plan']}-b{c['batch']}",
                      variant=r["variant"], plan=c["plan"], batch=c["batch"], ranks=c["world"],
                      steps=c["steps"], warmup=c["warmup"], embedding_dim=c["embedding_dim"],
                      max_table_rows=c["max_table_rows"], mps=r["mps"], mps_note=note,
                      device=r["device"],
                      trainer_priority=c.get("trainer_priority", "normal"))  # fmt: skip
        rows.append(make_row(**common, metric="throughput", unit="iterations/s",
                             value=r["total_iterations_per_s"], n=c["steps"],
                             samples_per_s=r["samples_per_s"], launches=r["launches"],
                             loss_first=r["losses"][0], loss_last=r["losses"][-1],
                             stage_ms=r.get("stage_ms"), prep=r.get("prep"),
                             worker_ms=r.get("worker_ms"), rounds=r["rounds"],
                             spread=r["spread"],
                             graphs=bool(c.get("graphs", False)),
                             timing_includes="whole iterations incl. preprocessing, all ranks"))  # fmt: skip
        if figure == "figure10" and r["variant"] in ("ideal", *RAP_VARIANTS):
            for stage, ms in r["stage_ms"].items():
                rows.append(
                    make_row(
                        **common,
                        metric=f"stage_time_{stage}",
                        unit="ms",
                        value=ms,
                        n=c["steps"],
                        timing_includes="rank 0 trainer, CUDA events",
                    )
                )
    # match on the workload alone: each variant's own fields (launches, losses, prep, mps)
    # differ, and with them add_ratios found no baseline (empty figure-10 bars on the H200)
    on = ("benchmark", "workload", "metric", "unit")
    add_ratios(rows, "sequential" if figure == "figure10" else "cpu_workers", on=on)
    stage_rows = [r for r in rows if r["metric"].startswith("stage_time_")]
    add_ratios(stage_rows, "ideal", on=on)
    return rows


def summary(rows: list[dict], figure: str) -> list[str]:
    """Markdown lines: the throughput table and the targets, met or missed."""
    thr = [r for r in rows if r["metric"] == "throughput"]
    loads = sorted({r["workload"] for r in thr})
    variants = FIGURES[figure]
    val = {(r["workload"], r["variant"]): r["value"] for r in thr}
    out = ["| workload | " + " | ".join(LABELS[v] for v in variants) + " |",
           "|---" * (len(variants) + 1) + "|"]  # fmt: skip
    for w in loads:
        cells = [f"{val[(w, v)]:.2f}" if (w, v) in val else "-" for v in variants]
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("(iterations/s summed over ranks)")
    out.append("")

    def ratios(a, b):
        return [val[(w, a)] / val[(w, b)] for w in loads if (w, a) in val and (w, b) in val]

    if figure == "figure10":
        for v in RAP_VARIANTS:
            name = LABELS[v]
            seq = ratios(v, "sequential")
            ide = ratios(v, "ideal")
            if seq:
                m = float(np.mean(seq))
                out.append(f"- {name} / Sequential: mean {m:.2f}x (target >= 1.99x): "
                           f"{'met' if m >= 1.99 else 'MISSED'}")  # fmt: skip
            if ide:
                worst = min(ide)
                out.append(f"- {name} / Ideal: {', '.join(f'{x:.3f}' for x in ide)} "
                           f"(target >= 0.95 each): {'met' if worst >= 0.95 else 'MISSED'}")  # fmt: skip
            st = [r for r in rows if r["metric"].startswith("stage_time_") and r["variant"] == v
                  and r.get("ratio")]  # fmt: skip
            if st:
                bad = [f"{r['workload']} {r['metric'][11:]} {1 / r['ratio']:.2f}x" for r in st
                       if 1 / r["ratio"] > 1.05]  # fmt: skip
                out.append(
                    f"- {name}: trainer stage times co-running vs Ideal within 5%: "
                    + ("met" if not bad else "MISSED (" + "; ".join(bad) + ")")
                )
        out.extend(diagnostics(thr))
    else:
        out.extend(diagnostics(thr))
        for base in ("mps", "cuda_stream", "cpu_workers"):
            r = ratios("rap", base)
            if r:
                ok = all(x > 1 for x in r) if base != "cpu_workers" else True
                out.append(f"- RAP / {LABELS[base]}: {', '.join(f'{x:.2f}' for x in r)}"
                           + ("" if base == "cpu_workers" else
                              f" (target > 1 everywhere): {'met' if ok else 'MISSED'}"))  # fmt: skip
    return out


def diagnostics(thr: list[dict]) -> list[str]:
    """Per workload: preprocessing alone per batch (unfused, fused eager and, on the CUDA-graph
    path, fused through the stage runner) and the trainer's stage times of RAP vs Ideal."""
    out = []
    for w in sorted({r["workload"] for r in thr}):
        rs = {r["variant"]: r for r in thr if r["workload"] == w}
        prep = next((r["prep"] for r in rs.values() if r.get("prep")), None)
        if prep and "error" not in prep:

            def ms(k, prep=prep):
                d = prep.get(k) or {}
                span = d.get("gpu_span_ms")
                return f"{d.get('wall_ms', float('nan')):.2f}" + (
                    f" (stream span {span:.2f})" if span is not None else ""
                )

            line = (f"- {w} preprocessing alone, ms/batch: unfused {ms('unfused')} "
                    f"[{prep.get('unfused_launches')} launches], fused {ms('fused')} "
                    f"[{prep.get('fused_launches')}]")  # fmt: skip
            if "fused_runner" in prep:
                line += f", fused via stage runner ({prep.get('runner')}) {ms('fused_runner')}"
            out.append(line)
        elif prep:
            out.append(f"- {w} preprocessing diagnostics failed: {prep['error']}")
        wk = rs.get("rap", {}).get("worker_ms")
        if wk:
            out.append(f"- {w} RAP preprocessing jobs, host ms per iteration: load {wk['load']:.2f}"
                       f", stage jobs {wk['stage']:.2f}; the trainer waited "
                       f"{wk['wait']:.2f} for them at the end of each step")  # fmt: skip
        ide, rap = (rs.get(v, {}).get("stage_ms") for v in ("ideal", "rap"))
        if ide and rap:
            out.append(f"- {w} trainer stage ms, Ideal -> RAP: " + ", ".join(
                f"{s} {ide[s]:.2f} -> {rap[s]:.2f}" for s in ide if s in rap))  # fmt: skip
    return out


def path_note(rows: list[dict]) -> str:
    """Which preprocessing path the rows' runs used, from their ``graphs`` field ("" when no
    row says): the CUDA-graph path (the default) or the eager path (``--no-graphs``)."""
    names = {True: "CUDA-graph path (default)", False: "eager path (`--no-graphs`)"}
    used = {bool(r["graphs"]) for r in rows if r.get("graphs") is not None}
    return " and ".join(names[g] for g in (True, False) if g in used)


def hand_sections(text: str) -> str:
    r"""The ``## `` sections of a figures page other than the generated ones (``## figure9``,
    ``## figure10``), in order: the notes a person added, which :func:`write_page` keeps.

    >>> hand_sections("# t\n\nintro\n\n## figure9\n\nx\n\n## Runs of today\n\nnote\n")
    '## Runs of today\n\nnote\n'
    """
    kept, keep = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            keep = line.strip() not in ("## figure9", "## figure10")
        if keep:
            kept.append(line)
    return "".join(kept)


def write_page(out_dir: Path, docs: Path) -> Path:
    """docs/rap-share/figures.md from the latest rows of both figures found in ``out_dir``;
    the page's other ``## `` sections (notes on earlier runs) are kept after them."""
    from rec_common.results import read_rows

    lines = ["# rap-share: RAP figures 9 and 10, reproduced", "",
             "Paper: 8 x NVIDIA A100 (AWS p4d, CUDA 11.7), nGPU in {2, 4, 8}, 1024 warm-up + "
             "1024 measured iterations. Ours: see each section (GPU name, count, steps). "
             "Model: rec-common DLRM, embedding dim 128 by default, tables capped at "
             "`max_table_rows` rows (ids taken modulo), data: rec-common's synthetic Criteo "
             "generator with Kaggle (plan0) / Terabyte (plan1) table sizes unless `--data` "
             "was given.", "",
             "**On one GPU** there is no table sharding and no input all-to-all, so mapping "
             "removes nothing: the RAP w/o Mapping bar then differs from RAP only by the "
             "process split and the stage schedule, and the mapping effect itself is empty. "
             "When the MPS daemon could not be started, MPS runs time-sliced and equals "
             "Sequential (the `mps_note` field says which).", "",
             "RAP here runs its preprocessing inside the trainer process on its own CUDA "
             "stream: on the CUDA-graph path (the default) the trainer's thread replays each "
             "stage's captured kernels as it reaches the stage, on the eager path a thread "
             "launches them (list ops need host syncs, which would stall the trainer's "
             "launches if done on its thread); RAP (process) runs the same staged program in "
             "a separate process per GPU, paced by a shared stage counter the trainer writes "
             "(the paper's design); the MPS, Sequential and both ablations use a "
             "separate preprocessing process per GPU (CUDA IPC to the trainer). The input "
             "all-to-all of unmapped variants is an all_gather of lengths and ids.", ""]  # fmt: skip
    for fig in ("figure9", "figure10"):
        path = out_dir / f"{fig}.jsonl"
        if not path.is_file():
            lines += [f"## {fig}", "", "not run yet", ""]
            continue
        rows = read_rows(path)
        r0 = rows[0]
        used = path_note(rows)
        lines += [f"## {fig}", "",
                  f"Hardware: {r0['gpus']} x {r0['gpu']} ({r0['ranks']} rank(s) used), "
                  f"torch {r0['torch']}, {r0['steps']} measured after {r0['warmup']} warm-up "
                  f"iterations; MPS: {r0['mps_note']}"
                  + (f"; preprocessing: {used}" if used else "")
                  + ("; trainer on high-priority streams (`--trainer-priority high`)"
                     if any(r.get("trainer_priority") == "high" for r in rows) else "")
                  + (f"; each bar the median of {r0['rounds']} interleaved rounds "
                     "(`--rounds`; the rows' `spread` is the min and max)"
                     if r0.get("rounds", 1) > 1 else "")
                  + ".", "",
                  f"![{fig}]({fig}.png)", ""]  # fmt: skip
        lines += [*summary(rows, fig), ""]
    keep = hand_sections(docs.read_text(encoding="utf-8")) if docs.is_file() else ""
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text("\n".join(lines) + "\n" + keep, encoding="utf-8")
    return docs


def _csv(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rap_share.figures", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rap_share.figures figure10 --steps 100 --batches 4096",
    )  # fmt: skip
    p.add_argument("figure", choices=sorted(FIGURES))
    p.add_argument("--plans", type=_csv(str), default=["plan0", "plan1"], help="plan0,plan1")
    p.add_argument("--batches", type=_csv(int), default=[4096, 8192], help="rows per GPU")
    p.add_argument("--variants", type=_csv(str), default=[],
                   help="only these of the figure's variants, e.g. ideal,rap (default: all; "
                        "ratios to a baseline left out are not computed)")  # fmt: skip
    p.add_argument("--gpus", type=int, default=0, help="ranks (0: the GPUs present, at most 2)")
    p.add_argument("--steps", type=int, default=100,
                   help="measured iterations per run (2 x H200, batch 4096: Ideal's 35-step runs "
                        "spread 268-421 it/s)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, interleaved, and report each one's median "
        "run with its spread (the ratios are then between medians)",
    )
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument(
        "--max-table-rows",
        type=int,
        default=1_000_000,
        help="cap on embedding table rows (0: the plan's full sizes)",
    )
    p.add_argument("--rows", type=int, default=65536, help="raw rows (wrapped around)")
    p.add_argument("--data", default="", help="raw data: a RawSource .npz or a Criteo TSV (.gz)")
    p.add_argument("--cpu-workers", type=int, default=4, help="CPU worker processes per GPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-mps", action="store_true", help="do not start the MPS daemon")
    p.add_argument(
        "--check",
        action="store_true",
        help="compare every trained-on batch with the numpy reference (slow)",
    )
    p.add_argument("--solver", default="highs", choices=["highs", "gurobi", "greedy"])
    p.add_argument("--cost-model", default="", help="model.json (default: shipped/analytic)")
    p.add_argument(
        "--graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the CUDA-graph path (the default): cached device constants and packed raw copies "
        "for every variant, CUDA-graph replay of rap's stages; --no-graphs: the eager path; "
        f"unset: on unless {GRAPHS_ENV}=0 (or false/no/off)",
    )
    p.add_argument(
        "--trainer-priority",
        choices=["normal", "high"],
        default="high",
        help="high (default): the trainer's and NCCL's kernels on high-priority CUDA streams, "
        "above the preprocessing kernels of the same process (every variant); normal: one "
        "priority for both",
    )
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=0,
        help="torch CPU threads per rank (0: half the cores split among the ranks, 1 to 4)",
    )
    p.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip timing preprocessing alone before each config's runs (the rows' prep field)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="results/rap-share")
    p.add_argument("--docs", default="docs/rap-share/figures.md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("steps", "rows", "cpu_workers", "embedding_dim", "rounds"):
        if getattr(args, name) < 1:
            parser().error(f"--{name.replace('_', '-')} must be >= 1")
    if args.cpu_threads < 0:
        parser().error("--cpu-threads must be >= 0 (0: automatic)")
    bad = [p for p in args.plans if p not in TABLES]
    if bad or not args.plans or not args.batches or any(b < 1 for b in args.batches):
        parser().error(f"--plans must be from {sorted(TABLES)} and --batches positive")
    unknown = [v for v in args.variants if v not in FIGURES[args.figure]]
    if unknown:
        parser().error(f"--variants: {', '.join(unknown)} not in {args.figure}'s variants "
                       f"{', '.join(FIGURES[args.figure])}")  # fmt: skip
    variants = [v for v in FIGURES[args.figure] if v in args.variants or not args.variants]
    if args.data and not os.path.isfile(args.data):
        print(f"error: --data {args.data}: no such file", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    try:
        runs, note = measure(args, variants)
    except Exception as e:
        print(f"error: {args.figure} failed: {e}", file=sys.stderr)
        return 1
    from rec_common.results import write_rows

    rows = to_rows(runs, args.figure, note)
    out_dir = Path(args.out_dir)
    path = out_dir / f"{args.figure}.jsonl"
    if path.exists():
        path.unlink()
    write_rows(path, rows)
    try:
        from rec_common.plot import plot_rows

        thr = [r for r in rows if r["metric"] == "throughput"]
        if args.figure == "figure10":
            plot_rows([r for r in thr if r["variant"] != "sequential"], out_dir / "figure10.png",
                      y="ratio", title="RAP figure 10: throughput / Sequential")  # fmt: skip
        else:
            plot_rows(thr, out_dir / "figure9.png", title="RAP figure 9: iterations/s")
    except ImportError as e:
        print(f"[figures] no plot: {e}", file=sys.stderr)
    page = write_page(out_dir, Path(args.docs))
    if (out_dir / f"{args.figure}.png").exists() and page.parent.resolve() != out_dir.resolve():
        import shutil

        shutil.copy(out_dir / f"{args.figure}.png", page.parent / f"{args.figure}.png")
    for line in summary(rows, args.figure):
        print(line)
    print(f"[figures] {len(runs)} runs in {time.perf_counter() - t0:.0f} s -> {path}, {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
