"""Numbers taken from the RAP artifact and paper, with their units, in one place."""

from __future__ import annotations

# Table rows per sparse feature in the artifact's plan 0 (Criteo Kaggle) and plan 1 (Terabyte,
# after the artifact's frequency threshold; not rec-common's raw Terabyte counts).
KAGGLE_PLAN_TABLES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
TERABYTE_PLAN_TABLES = (
    45833188, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 29275261, 1572176, 345138, 10, 2209,
    11267, 128, 4, 974, 14, 48937457, 11316796, 40094537, 452104, 12606, 104, 35,
)  # fmt: skip
PLAN_BUCKET_TABLE = 65_536  # rows of every plan-2/3 table (and of the artifact's bucketize table)

# Table -> GPU of plans 0/1 on 4 GPUs in the artifact: cat_0..cat_25, then the bucketize
# table on GPU 0. Our feature order puts bucketize_int_0 first (its chain is written first),
# so the entry is rotated: see ARTIFACT_PLACEMENT.
_ARTIFACT_4 = [1, 1, 3, 2, 2, 2, 3, 1, 1, 3, 1, 3, 0, 0, 1, 3, 1, 2, 3, 0, 0, 2, 2, 0, 0, 2, 0]
ARTIFACT_PLACEMENT = {
    ("plan0", 4): [_ARTIFACT_4[-1], *_ARTIFACT_4[:-1]],
    ("plan1", 4): [_ARTIFACT_4[-1], *_ARTIFACT_4[:-1]],
}

# Training stages in execution order (RAP section 5).
STAGES = ("emb_fwd", "mlp_fwd", "mlp_bwd", "emb_bwd", "grad_comm")

# Base stage latencies (ms) the paper's artifact measured on A100, plan 0, 4 GPUs, B=4096,
# and the capacity (probe units) of each stage; only used as a fallback profile and for
# comparison, never in place of a measurement on the GPU present.
A100_STAGE_MS = {
    "emb_fwd": 0.93,
    "mlp_fwd": 1.92,
    "mlp_bwd": 2.86,
    "emb_bwd": 0.99,
    "grad_comm": 1.37,
}
A100_STAGE_UNITS = {"emb_fwd": 24, "mlp_fwd": 26, "mlp_bwd": 52, "emb_bwd": 26, "grad_comm": 56}

# Cost-model reference batch (rows) and the probe kernel used for capacity (ngram, width 20,
# fuse degree 4 per unit), as in the artifact.
REF_BATCH = 4096
PROBE = {"op": "ngram", "width": 20, "n": 4, "degree_per_unit": 4}
CAPACITY_STRETCH = 0.05  # a stage "has room" while co-running stretches it by < 5 %
FUSION_LEVELS = 8  # levels of the fusion MILP (the artifact's 8)
MIP_GAP = 0.003  # relative MIP gap (the artifact's gurobi MIPGap)
