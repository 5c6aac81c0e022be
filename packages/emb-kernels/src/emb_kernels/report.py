"""Per-variant kernel resources: registers, local (spill) bytes, static shared memory, max
threads per block and theoretical occupancy, read from the loaded CUBINs on the GPU
(cuFuncGetAttribute + cuOccupancyMaxActiveBlocksPerMultiprocessor). ``--static`` reads the
same numbers (but occupancy) from ``nvcc -Xptxas -v`` instead, without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from emb_kernels import kernels
from emb_kernels.constants import (
    BASELINE_BLOCK,
    DEFAULT_MAX_REGISTERS,
    FAST_ASYNC_ROWS,
    FAST_ASYNC_WARPS,
    PREFETCH_DISTANCES,
    SWEEP_REGISTER_CAPS,
)

EXAMPLE = "example: python -m emb_kernels.report --dtype float32 --index int64 --json report.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_INDEX = {"int32": torch.int32, "int64": torch.int64}


def entries(dtype: torch.dtype, index_dtype: torch.dtype) -> list[dict]:
    """(label, source, kernel name, register cap, block threads) of each reported kernel."""
    base = kernels.baseline_name(dtype, index_dtype, "sum")
    rows = [
        ("baseline", base, None),
        (f"optmt (cap {DEFAULT_MAX_REGISTERS})", base, DEFAULT_MAX_REGISTERS),
    ]
    for p in PREFETCH_DISTANCES:
        name = kernels.baseline_name(dtype, index_dtype, "sum", p)
        rows.append((f"rpf{p}", name, None))
        rows.append((f"rpf{p}+optmt", name, DEFAULT_MAX_REGISTERS))
    for cap in SWEEP_REGISTER_CAPS:
        if cap not in (None, DEFAULT_MAX_REGISTERS):
            rows.append((f"baseline cap {cap}", base, cap))
    rows.append(("baseline max", kernels.baseline_name(dtype, index_dtype, "max"), None))
    out = [
        dict(
            label=lab,
            source=kernels.BASELINE_SOURCE,
            kernel=k,
            cap=c,
            block_threads=BASELINE_BLOCK[0] * BASELINE_BLOCK[1],
        )
        for lab, k, c in rows
    ]
    vb = kernels.vec_widths(dtype)[0]
    fast = [("fast warp", kernels.fast_name(dtype, index_dtype, False, vb, 4), 256)]
    fast += [
        ("fast seg", kernels.fast_name(dtype, index_dtype, False, vb, 4, segmented=True), 256),
        ("fast coop", kernels.fast_name(dtype, index_dtype, False, vb, 4, coop=True), 256),
        ("fast split", kernels.fast_name(dtype, index_dtype, False, vb, 4, split=True), 256),
        ("fast coop split",
         kernels.fast_name(dtype, index_dtype, False, vb, 4, coop=True, split=True), 256),
    ]  # fmt: skip
    if dtype == torch.float32:
        fast += [
            ("fast seg u8", kernels.fast_name(dtype, index_dtype, False, vb, 4, segmented=True,
                                              seg_unroll=8), 256),
            ("fast coop seg u8", kernels.fast_name(dtype, index_dtype, False, vb, 4, coop=True,
                                                   seg_unroll=8), 256),
        ]  # fmt: skip
        fast += [
            (f"fast async{d}", kernels.fast_name(dtype, index_dtype, False, 16, 4, async_rows=d),
             32 * FAST_ASYNC_WARPS)
            for d in FAST_ASYNC_ROWS
        ]  # fmt: skip
    fast += [
        (f"fast block{wb}", kernels.fast_name(dtype, index_dtype, False, vb, 4, wb), 32 * wb)
        for wb in (2, 4, 8)
    ]
    if dtype == torch.float32:
        fast += [
            (f"fast warp u{u}", kernels.fast_name(dtype, index_dtype, False, 16, u), 256)
            for u in (2, 8, 16)
        ]
        fast += [
            ("fast warp u4 hint", kernels.fast_name(dtype, index_dtype, False, 16, 4, 0, True), 256)
        ]
    for label, name, threads in fast:
        out.append(
            dict(
                label=label,
                source=kernels.fast_source(name),
                kernel=name,
                cap=None,
                block_threads=threads,
            )
        )
    out.append(
        dict(
            label="l2p pin",
            source=kernels.L2P_SOURCE,
            kernel="ek_l2p_prefetch",
            cap=None,
            block_threads=256,
        )
    )
    return out


def gpu_report(dtype: torch.dtype, index_dtype: torch.dtype) -> list[dict]:
    from emb_kernels import launch as L

    max_threads_sm = L.device_attribute("MAX_THREADS_PER_MULTIPROCESSOR")
    rows = []
    for e in entries(dtype, index_dtype):
        fn = L.get_function(e["source"], e["kernel"], e["cap"])
        attrs = L.function_attributes(fn)
        blocks = L.max_active_blocks(fn, e["block_threads"])
        rows.append(
            {
                **e,
                **attrs,
                "blocks_per_sm": blocks,
                "occupancy": blocks * e["block_threads"] / max_threads_sm,
            }
        )
    return rows


def static_report(dtype: torch.dtype, index_dtype: torch.dtype, arch: str) -> list[dict]:
    from emb_kernels import ptxas_usage

    usage: dict[tuple, dict] = {}
    rows = []
    for e in entries(dtype, index_dtype):
        key = (e["source"], e["cap"])
        if key not in usage:
            usage[key] = ptxas_usage.compile_with_nvcc(e["source"], arch, e["cap"])
        u = usage[key][e["kernel"]]
        rows.append(
            {
                **e,
                "registers": u["registers"],
                "local_bytes": u.get("stack_bytes", 0),
                "spill_stores": u.get("spill_stores", 0),
                "static_smem_bytes": u.get("smem_bytes", 0),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [
        ("label", 22),
        ("kernel", 34),
        ("registers", 9),
        ("local_bytes", 11),
        ("static_smem_bytes", 17),
        ("max_threads_per_block", 21),
        ("blocks_per_sm", 13),
        ("occupancy", 9),
    ]
    cols = [(c, w) for c, w in cols if any(c in r for r in rows)]
    lines = [" ".join(c.ljust(w) for c, w in cols)]
    for r in rows:
        cells = []
        for c, w in cols:
            v = r.get(c, "")
            v = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(v.ljust(w))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emb_kernels.report",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    parser.add_argument("--index", choices=sorted(_INDEX), default="int64")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--static", action="store_true", help="use nvcc's ptxas report (no GPU)")
    parser.add_argument("--arch", default="sm_90", help="architecture for --static")
    args = parser.parse_args(argv)
    dtype, index = _DTYPES[args.dtype], _INDEX[args.index]
    try:
        if args.static:
            rows = static_report(dtype, index, args.arch)
            where = f"nvcc/ptxas, {args.arch}"
        else:
            if not torch.cuda.is_available():
                print(
                    "error: no GPU here; use --static for the compiler's numbers", file=sys.stderr
                )
                return 1
            rows = gpu_report(dtype, index)
            where = torch.cuda.get_device_name()
    except (ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"# kernel resources, {args.dtype} weights, {args.index} ids ({where})")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"device": where, "dtype": args.dtype, "index": args.index, "rows": rows},
                f,
                indent=1,
            )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
