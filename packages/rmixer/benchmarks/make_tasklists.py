"""Write the shipped model configs and task lists (run from the repo root; output is committed).

The artifact's lists are not public; its log shows balance_24 = 8 high-compute, 7 high-memory
and 9 both-low jobs (4 DIFM, 1 DMR, 1 BERT4Rec, 1 Wide&Deep, 1 DPIN | 4 DIEN, 3 BST |
3 DIN, 3 DCN, 3 DeepFM). Ours keep those proportions with rec-common models sized so the
classes separate on a modern GPU; compute/memory/bandwidth mixes put 16 of 24 jobs in their
class and 4 in each of two others; the _72 lists are three times the _24 ones.

    python packages/rmixer/benchmarks/make_tasklists.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "rmixer"

CONFIGS = {
    # high compute: wide MLPs at a large batch (sized to keep the GPU busy about half the time
    # on a recent GPU in eager PyTorch, like the artifact's "high" models at 25-55 %)
    "dcn_wide": {"model": "dcn", "batch_size": 2048, "rows": 100000, "embedding_dim": 16,
                 "num_cross_layers": 3, "deep_mlp": "512-512-256", "lr": 0.01},
    "widedeep_large": {"model": "widedeep", "batch_size": 2048, "rows": 100000,
                       "embedding_dim": 32, "deep_mlp": "1024-512-256-1", "lr": 0.01},
    "dlrm_mlperf": {"model": "dlrm", "batch_size": 2048, "rows": 100000, "embedding_dim": 128,
                    "bottom_mlp": "512-256-128", "top_mlp": "1024-1024-512-256-1", "lr": 0.01},
    # high memory: big tables or long behaviour sequences
    "din_long": {"model": "din", "batch_size": 1024, "rows": 10000, "num_tables": 8,
                 "embedding_dim": 16, "num_items": 2000000, "item_dim": 64, "seq_len": 200,
                 "attention_mlp": "80-40", "deep_mlp": "200-80-1", "lr": 0.01},
    "dlrm_bigemb": {"model": "dlrm", "batch_size": 2048, "rows": 1000000, "embedding_dim": 32,
                    "bottom_mlp": "256-64-32", "top_mlp": "256-128-1", "lr": 0.05},
    # bandwidth: many ids per bag over large tables
    "deepfm_multihot": {"model": "deepfm", "batch_size": 2048, "rows": 500000,
                        "embedding_dim": 32, "pooling": 20, "deep_mlp": "400-400-1", "lr": 0.01},
    # both low: small models at small batch (launch-bound)
    "din_small": {"model": "din", "batch_size": 128, "rows": 10000, "num_tables": 4,
                  "embedding_dim": 8, "num_items": 50000, "item_dim": 16, "seq_len": 20,
                  "attention_mlp": "36", "deep_mlp": "80-1", "lr": 0.01},
    "dcn_small": {"model": "dcn", "batch_size": 256, "rows": 10000, "embedding_dim": 8,
                  "num_cross_layers": 2, "low_rank": 16, "deep_mlp": "128-64", "lr": 0.01},
    "deepfm_small": {"model": "deepfm", "batch_size": 256, "rows": 10000, "embedding_dim": 8,
                     "deep_mlp": "128-64-1", "lr": 0.01},
    # toys for tests and the README (CPU, milliseconds per iteration)
    "tiny_dlrm": {"model": "dlrm", "batch_size": 32, "rows": 200, "num_tables": 4,
                  "embedding_dim": 8, "bottom_mlp": "16-8", "top_mlp": "16-1", "iterations": 20},
    "tiny_dcn": {"model": "dcn", "batch_size": 32, "rows": 200, "num_tables": 4,
                 "embedding_dim": 8, "deep_mlp": "16", "iterations": 20},
    "tiny_deepfm": {"model": "deepfm", "batch_size": 32, "rows": 200, "num_tables": 4,
                    "embedding_dim": 8, "deep_mlp": "16-1", "iterations": 20},
    "tiny_widedeep": {"model": "widedeep", "batch_size": 32, "rows": 200, "num_tables": 4,
                      "embedding_dim": 8, "deep_mlp": "16-1", "iterations": 20},
    "tiny_din": {"model": "din", "batch_size": 32, "rows": 200, "num_tables": 2,
                 "embedding_dim": 8, "num_items": 500, "item_dim": 8, "seq_len": 10,
                 "attention_mlp": "16", "deep_mlp": "16-1", "iterations": 20},
}  # fmt: skip

COMPUTE = ["dcn_wide"] * 4 + ["widedeep_large", "dlrm_mlperf"] * 2
MEMORY = ["din_long"] * 4 + ["dlrm_bigemb"] * 3
LOW = ["din_small", "dcn_small", "deepfm_small"] * 3
BANDWIDTH = ["deepfm_multihot"] * 2 + ["dlrm_bigemb"]


def pick(pool: list[str], n: int) -> list[str]:
    return [pool[i % len(pool)] for i in range(n)]


MIXES = {
    "balance": COMPUTE + MEMORY + LOW,
    "compute": pick(COMPUTE, 16) + pick(MEMORY, 4) + pick(LOW, 4),
    "memory": pick(MEMORY, 16) + pick(COMPUTE, 4) + pick(LOW, 4),
    "bandwidth": pick(BANDWIDTH, 16) + pick(COMPUTE, 4) + pick(LOW, 4),
}


def write() -> None:
    (PKG / "configs").mkdir(exist_ok=True)
    (PKG / "tasklists").mkdir(exist_ok=True)
    for name, cfg in CONFIGS.items():
        (PKG / "configs" / f"{name}.json").write_text(json.dumps(cfg, indent=1) + "\n")
    for mix, names in MIXES.items():
        assert len(names) == 24, (mix, len(names))
        for n in (24, 72):
            jobs = names * (n // 24)
            random.Random(f"{mix}_{n}").shuffle(jobs)
            lines = [f"# {mix}_{n}: written by benchmarks/make_tasklists.py",
                     "# <model> <config> <identifier>"]  # fmt: skip
            for i, c in enumerate(jobs):
                model = CONFIGS[c]["model"]
                lines.append(f"{model:<9} {c:<16} {mix}{n}-{i + 1:02d}-{c}")
            (PKG / "tasklists" / f"{mix}_{n}.txt").write_text("\n".join(lines) + "\n")
    tiny = ["tiny_dlrm", "tiny_dcn", "tiny_deepfm", "tiny_widedeep", "tiny_din", "tiny_dlrm"]
    lines = ["# tiny_6: toy jobs for a CPU-only try of the server (seconds)"]
    lines += [f"{CONFIGS[c]['model']:<9} {c:<14} tiny-{i + 1}-{c}" for i, c in enumerate(tiny)]
    (PKG / "tasklists" / "tiny_6.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote configs and task lists under {PKG}")
