"""Generate the one fused CUDA kernel of a plan.

One device function per distinct (schedule, dim, output alignment) of the plan, dispatched
per block by an if-else chain over function ids (default, bodies inlined) or through a table
of ``__noinline__`` function pointers. Shared memory is one static buffer sized for the
largest schedule (the union). Occupancy is forced by ``__launch_bounds__(256, o)``
(with ``exact_occupancy`` the launcher also pads shared memory so exactly ``o`` fit). With
``timing=True`` every block records ``clock64()`` at entry and exit and its SM id, for the
tuner::

    >>> from recflex.plan import default_plan
    >>> k = generate(default_plan([16, 64], [100, 100], [1, 30], occupancy=4))
    >>> k.name, k.num_functions, "__launch_bounds__(256, 4)" in k.source
    ('recflex_fused', 2, True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

from recflex.constants import BLOCK_THREADS
from recflex.plan import Plan
from recflex.schedules import Schedule

KERNEL_NAME = "recflex_fused"
DISPATCH_MODES = ("if-else", "jump-table")
_INDEX_TYPES = {"int32": "int", "int64": "long long"}
_WEIGHT_TYPES = {"float32": "float", "float16": "unsigned short"}


@cache
def templates_source() -> str:
    return resources.files("recflex").joinpath("csrc/templates.cuh").read_text()


@dataclass(frozen=True)
class Kernel:
    """Generated source plus what the launcher needs: the function id of every feature,
    static shared memory, and the build options that went into the source."""

    source: str
    fn_ids: tuple[int, ...]
    functions: tuple[str, ...]
    smem_bytes: int
    occupancy: int | None
    index_dtype: str
    weight_dtype: str
    dispatch: str
    timing: bool
    exact_occupancy: bool = False
    name: str = KERNEL_NAME

    @property
    def num_functions(self) -> int:
        return len(self.functions)

    @property
    def key(self) -> str:
        """sha256 of the source (the disk cache's key, with the compiler options), plus
        the occupancy padding flag (a launch setting, not part of the source)."""
        return hashlib.sha256(self.source.encode()).hexdigest() + (
            "-exact" if self.exact_occupancy else ""
        )


def _out_align(plan: Plan, cols: list[int]) -> int:
    """Output alignment (floats) all these columns share with the row stride."""
    g = plan.sum_dims
    for c in cols:
        g = math.gcd(g, c)
    return 4 if g % 4 == 0 else (2 if g % 2 == 0 else 1)


def instantiation(s: Schedule, dim: int, oa: int) -> str:
    """The C++ template instantiation that runs schedule ``s`` on a ``dim``-wide feature."""
    p = s.params
    t = s.template
    if t in ("OneHot", "OneHotMultiBlock"):
        multi = "true" if t == "OneHotMultiBlock" else "false"
        return f"t_onehot<{dim}, {p['unroll']}, {multi}, {oa}>"
    if t == "WarpPerSample":
        return f"t_wps<{dim}, {p['v']}, {p['items']}, {p['x']}, {oa}>"
    if t == "OneBlockMultiSample":
        return f"t_obms<{dim}, {p['v']}, {p['items']}, {p['x']}, {p['y']}, {oa}>"
    if t == "MultiBlockPerSample":
        return f"t_mbps<{dim}, {p['v']}, {p['items']}, {p['x']}>"
    return f"t_rbk<{dim}, {p['scan_dim']}, {p['items']}, {oa}>"


def generate(
    plan: Plan,
    *,
    index_dtype: str = "int64",
    weight_dtype: str = "float32",
    dispatch: str = "if-else",
    timing: bool = False,
    exact_occupancy: bool = False,
) -> Kernel:
    """The fused kernel of ``plan`` (see the module docstring).

    ``exact_occupancy``: the launcher pads dynamic shared memory so that exactly the plan's
    occupancy fits an SM (the tuner's probes); otherwise it is only a lower bound.
    """
    if index_dtype not in _INDEX_TYPES:
        raise ValueError(f"index_dtype: expected one of {list(_INDEX_TYPES)}, got {index_dtype!r}")
    if weight_dtype not in _WEIGHT_TYPES:
        raise ValueError(
            f"weight_dtype: expected one of {list(_WEIGHT_TYPES)}, got {weight_dtype!r}"
        )
    if dispatch not in DISPATCH_MODES:
        raise ValueError(f"dispatch: expected one of {DISPATCH_MODES}, got {dispatch!r}")
    cols = plan.col_offsets
    # group features by (schedule, dim), then split by output alignment
    groups: dict[tuple[Schedule, int], list[int]] = {}
    for f, key in enumerate(zip(plan.schedules, plan.dims)):
        groups.setdefault(key, []).append(f)
    functions: list[str] = []
    fn_of: dict[str, int] = {}
    fn_ids = [0] * plan.num_features
    smem = 0
    for (s, d), feats in groups.items():
        oa = _out_align(plan, [cols[f] for f in feats])
        inst = instantiation(s, d, oa)
        if inst not in fn_of:
            fn_of[inst] = len(functions)
            functions.append(inst)
            smem = max(smem, s.smem_bytes(d))
        for f in feats:
            fn_ids[f] = fn_of[inst]
    occ = plan.occupancy
    bounds = (
        f"__launch_bounds__({BLOCK_THREADS}, {occ})"
        if occ
        else f"__launch_bounds__({BLOCK_THREADS})"
    )
    lines = [
        "// generated by recflex.codegen: one fused embedding kernel for one plan",
        f"// features: {plan.num_features}, distinct schedule functions: {len(functions)}, "
        f"templates: {plan.template_counts()}",
        f"typedef {_INDEX_TYPES[index_dtype]} idx_t;",
        f"typedef {_WEIGHT_TYPES[weight_dtype]} w_t;",
        f"#define RECFLEX_S {plan.sum_dims}LL",
        f"#define RECFLEX_TIMING {int(timing)}",
        f"#define RECFLEX_SMEM {max(smem, 16)}",
        templates_source(),
        "typedef void (*rf_fn_t)(const Feat&, unsigned char*);",
    ]
    if dispatch == "jump-table":
        for i, inst in enumerate(functions):
            lines.append(
                f"__device__ __noinline__ void rf_fn{i}(const Feat& F, unsigned char* smem) "
                f"{{ {inst}(F, smem); }}"
            )
        table = ", ".join(f"rf_fn{i}" for i in range(len(functions)))
        lines.append(f"__device__ rf_fn_t const rf_table[{len(functions)}] = {{{table}}};")
        body = "        rf_table[fn](ft, smem);"
    else:
        chain = []
        for i, inst in enumerate(functions):
            kw = "if" if i == 0 else "else if"
            chain.append(f"        {kw} (fn == {i}) {inst}(ft, smem);")
        body = "\n".join(chain)
    lines.append(
        f"""
extern "C" __global__ void {bounds} {KERNEL_NAME}(
    const w_t* const* __restrict__ tables, const long long* __restrict__ rows,
    const int* __restrict__ col_off, const int* __restrict__ fn_id, const int* __restrict__ dims,
    const idx_t* __restrict__ indices, const idx_t* __restrict__ offsets,
    const int2* __restrict__ tasks, const int* __restrict__ nblocks,
    const int* __restrict__ work_start, const int2* __restrict__ work,
    float* __restrict__ out, int B, int* err, long long* timing)
{{
    __shared__ __align__(16) unsigned char smem[RECFLEX_SMEM];
#if RECFLEX_TIMING
    __syncthreads();
    const long long rf_t0 = clock64();
#endif
    const int2 task = tasks[blockIdx.x];
    const int f = task.x;
    if (f < 0) return;  // past the batch's blocks in a bounded (sync-free) grid
    Feat ft;
    ft.table = tables[f];
    ft.rows = rows[f];
    ft.offs = offsets + (long long)f * B;
    ft.idx = indices;
    ft.out = out + col_off[f];
    ft.err = err;
    ft.B = B;
    ft.bid = task.y;
    ft.nblocks = nblocks[f];
    ft.dim = dims[f];
    ft.work = work_start ? work + work_start[f] : work;
    ft.work_n = work_start ? work_start[f + 1] - work_start[f] : 0;
    int fn = fn_id[f];
    if (ft.offs[B] == ft.offs[0]) fn = -1;  // no lookups in this batch: zeros only
    if (fn < 0) {{
        rf_zero(ft);
    }} else {{
{body}
    }}
#if RECFLEX_TIMING
    __syncthreads();
    if (threadIdx.x == 0) {{
        unsigned int smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        timing[3 * blockIdx.x] = rf_t0;
        timing[3 * blockIdx.x + 1] = clock64();
        timing[3 * blockIdx.x + 2] = smid;
    }}
#endif
}}
"""
    )
    return Kernel(
        source="\n".join(lines),
        fn_ids=tuple(fn_ids),
        functions=tuple(functions),
        smem_bytes=smem,
        occupancy=occ,
        index_dtype=index_dtype,
        weight_dtype=weight_dtype,
        dispatch=dispatch,
        timing=timing,
        exact_occupancy=exact_occupancy,
    )
