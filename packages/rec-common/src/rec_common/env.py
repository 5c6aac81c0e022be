"""Environment report for bug reports: versions, CUDA, GPU, which optional extras import.

python -m rec_common.env          # human-readable
python -m rec_common.env --json   # one JSON object
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys

# Import name -> distribution name, for the extras our packages use when present.
OPTIONAL = {
    "torchrec": "torchrec",
    "fbgemm_gpu": "fbgemm-gpu",
    "triton": "triton",
    "matplotlib": "matplotlib",
    "highspy": "highspy",
    "gurobipy": "gurobipy",
    "xgboost": "xgboost",
    "cudf": "cudf",
    "cupy": "cupy",
    "sklearn": "scikit-learn",
}
OURS = ("rec_common", "emb_kernels", "recflex", "bagpipe", "rap_share", "rmixer")


def _probe(name: str) -> str | None:
    """Version string if ``name`` imports, else None (import errors are not fatal)."""
    try:
        mod = importlib.import_module(name)
    except Exception:  # a broken optional install is reported as absent
        return None
    version = getattr(mod, "__version__", None)
    return str(version) if version is not None else "installed"


def collect() -> dict:
    import numpy
    import torch

    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            report["gpus"].append({
                "index": i,
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "sm_count": p.multi_processor_count,
                "l2_mib": round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
            })  # fmt: skip
    report["packages"] = {m: _probe(m) for m in OURS}
    report["optional"] = {m: _probe(m) for m in OPTIONAL}
    return report


def format_report(report: dict) -> str:
    lines = [
        f"python      {report['python']} on {report['platform']} ({report['cpu_count']} cores)",
        f"numpy       {report['numpy']}",
        f"torch       {report['torch']} (CUDA {report['torch_cuda'] or 'none'}, "
        f"available: {report['cuda_available']})",
    ]
    for g in report["gpus"]:
        lines.append(
            f"gpu {g['index']}       {g['name']} sm_{g['capability'].replace('.', '')}, "
            f"{g['memory_gib']} GiB, {g['sm_count']} SMs, L2 {g['l2_mib']} MiB"
        )
    for m, v in report["packages"].items():
        lines.append(f"{m:<12}{v or '-'}")
    lines.append("optional:")
    for m, v in report["optional"].items():
        lines.append(f"  {m:<12}{v or 'not importable'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rec_common.env",
        description="Print versions, CUDA and GPU facts, and which optional extras import.",
        epilog="example: python -m rec_common.env --json > env.json",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
