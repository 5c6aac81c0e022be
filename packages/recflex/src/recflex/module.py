"""``FusedEmbedding``: every feature's pooled (sum) embedding in one fused kernel launch.

On a GPU the plan's generated kernel runs (compiled on first use, cached on disk); on the
CPU the module runs the kernel's work decomposition in torch (:mod:`recflex.reference`),
so the same plan and binding are exercised everywhere::

    >>> import torch
    >>> from rec_common import workloads
    >>> w = workloads.load("recflex-test")
    >>> emb = FusedEmbedding(w.make_tables(), default_plan_for(w))
    >>> out = emb(next(w.batches(1, batch_size=8)))
    >>> out.shape
    torch.Size([8, 96])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recflex import launch
from recflex.binding import Binder, Binding
from recflex.codegen import Kernel, generate
from recflex.constants import DEFAULT_SM_COUNT, MAX_OCCUPANCY
from recflex.inputs import Packed, pack, validate_ids
from recflex.plan import DEFAULT_OCCUPANCY, Plan, default_plan
from recflex.reference import embedding_bag_reference, emulate

BACKENDS = ("auto", "kernel", "emulate", "torch")
_WEIGHT_DTYPES = {torch.float32: "float32", torch.float16: "float16"}


def default_plan_for(workload, occupancy: int | None = DEFAULT_OCCUPANCY) -> Plan:
    """The heuristic plan of a rec-common workload (uses each feature's mean pooling)."""
    pooling = [
        f.pooling.expected_length() if f.pooling.kind != "one-hot" else 1.0
        for f in workload.features
    ]
    return default_plan(
        workload.dims, workload.table_sizes, pooling, occupancy=occupancy, names=workload.keys
    )


class FusedEmbedding(nn.Module):
    """Sum-pooled lookups of every feature into ``[B, sum of dims]`` (fp32), one kernel.

    ``tables``: one ``[rows, dim]`` tensor per feature (fp32, or fp16 accumulated in fp32),
    matching ``plan``'s shapes. ``backend``: ``auto`` (kernel on CUDA tables, emulation on
    CPU), ``kernel``, ``emulate`` or ``torch`` (per-feature ``embedding_bag``).
    ``validate``: check every id against its table before launching (one vectorized pass);
    the kernel itself never reads outside a table either (a bad id is skipped and flagged,
    see :meth:`check_errors`). ``exact_occupancy``: pad shared memory so exactly the plan's
    occupancy fits an SM (else it is a lower bound); ``index_dtype``: the kernel's id type
    (default: the batch's); ``task_order``: the block order of the launch (see
    :class:`~recflex.binding.Binder`). ``sync_free``: bind each batch without reading the
    device (:meth:`~recflex.binding.Binder.bind` with ``num_ids``): the launch grid is an
    upper bound from the batch size and id count, and the extra blocks exit at once, so a
    batch already on the GPU costs no host sync; with ``validate=False`` too, a forward
    never waits for the GPU (bad ids are still skipped and flagged: a later forward raises
    once the flag of a finished launch reads set, or :meth:`check_errors` waits and raises).
    """

    def __init__(
        self,
        tables: Sequence[torch.Tensor],
        plan: Plan,
        *,
        dispatch: str = "if-else",
        backend: str = "auto",
        validate: bool = True,
        index_dtype: torch.dtype | None = None,
        exact_occupancy: bool = False,
        task_order: str = "heavy-first",
        sync_free: bool = False,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        tables = list(tables)
        for i, t in enumerate(tables):
            if not isinstance(t, torch.Tensor) or t.dim() != 2:
                raise ValueError(f"tables[{i}]: expected a 2-D [rows, dim] tensor")
            if t.dtype not in _WEIGHT_DTYPES:
                raise TypeError(f"tables[{i}]: dtype {t.dtype}; expected float32 or float16")
        dtypes = {t.dtype for t in tables}
        if len(dtypes) > 1:
            raise TypeError(
                f"tables: every table needs the same dtype, got {sorted(map(str, dtypes))}"
            )
        plan.check_shapes([t.shape[0] for t in tables], [t.shape[1] for t in tables])
        self.plan = plan
        self.dispatch = dispatch
        self.backend = backend
        self.validate = validate
        self.index_dtype = index_dtype
        self.exact_occupancy = exact_occupancy
        self.task_order = task_order
        self.sync_free = bool(sync_free)
        self.tables = nn.ParameterList(
            [nn.Parameter(t.contiguous(), requires_grad=False) for t in tables]
        )
        self._rows_cpu = torch.tensor(plan.rows, dtype=torch.int64)
        self._state: dict = {}
        self.last_binding: Binding | None = None

    # ------------------------------------------------------------------ helpers
    # rec-common's embedding contract (rec_common.models): a model asks these to size its layers.
    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.plan.dims)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.plan.names)

    positional_keys = False  # a keyed batch must carry the plan's feature names, in order

    def _table_list(self) -> list[torch.Tensor]:
        """The tables in feature order. Iterating the ParameterList itself costs ~4 us per
        table (``__getitem__`` by string key); its dict of values is 30x cheaper, and still
        sees a table replaced through ``self.tables[i] = ...``."""
        return list(self.tables._parameters.values())

    @property
    def device(self) -> torch.device:
        return self.tables[0].device

    @property
    def weight_dtype(self) -> str:
        return _WEIGHT_DTYPES[self.tables[0].dtype]

    def kernel_source(self, index_dtype: str = "int64", timing: bool = False) -> Kernel:
        return generate(
            self.plan,
            index_dtype=index_dtype,
            weight_dtype=self.weight_dtype,
            dispatch=self.dispatch,
            timing=timing,
            exact_occupancy=self.exact_occupancy,
        )

    def max_concurrent(self) -> int:
        """Blocks resident at once: from the occupancy API on a GPU, else an H100 guess."""
        if self.device.type == "cuda" and self._resolved_backend() == "kernel":
            return self._gpu_state("int64")["kernel"].max_concurrent
        return DEFAULT_SM_COUNT * (self.plan.occupancy or MAX_OCCUPANCY)

    def _resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "kernel" if self.device.type == "cuda" else "emulate"

    def _gpu_state(self, index_dtype: str, timing: bool = False) -> dict:
        dev = self.device
        # The tables' addresses are part of the key (a moved or replaced table gets fresh
        # state), read on every launch. Iterating the ParameterList costs ~1 us per table
        # (1 ms per launch on the 1000-feature models).
        ptrs = tuple(map(torch.Tensor.data_ptr, self._table_list()))
        key = (dev, index_dtype, timing, ptrs)
        st = self._state.get(key)
        if st is not None:
            return st
        for i, p in enumerate(ptrs):
            if p % 16:
                raise ValueError(
                    f"tables[{i}] is not 16-byte aligned; pass a fresh contiguous tensor"
                )
        k = self.kernel_source(index_dtype, timing)
        lk = launch.load(k, dev)
        plan = self.plan
        st = {
            "kernel": lk,
            "tables": torch.tensor(ptrs, dtype=torch.int64, device=dev),
            "rows": torch.tensor(plan.rows, dtype=torch.int64, device=dev),
            "cols": torch.tensor(plan.col_offsets, dtype=torch.int32, device=dev),
            "fn": torch.tensor(k.fn_ids, dtype=torch.int32, device=dev),
            "dims": torch.tensor(plan.dims, dtype=torch.int32, device=dev),
            "err": torch.zeros(1, dtype=torch.int32, device=dev),
            "binder": Binder(plan, lk.max_concurrent, self.task_order),
        }
        self._state[key] = st
        return st

    def check_errors(self) -> None:
        """Raise if any launch so far skipped an out-of-range id (then clear the flag)."""
        for st in self._state.values():
            if int(st["err"].item()):
                st["err"].zero_()
                if "err_watch" in st:
                    st["err_watch"]["host"].zero_()
                raise ValueError(
                    "the fused kernel met ids outside their tables and skipped them "
                    "(construct with validate=True to find feature and sample)"
                )

    def _watch_errors(self, st: dict) -> None:
        """``sync_free``: the kernel's error flag copied to pinned host memory behind each
        launch (no wait); a set flag raises at a later forward (:meth:`_raise_flagged`)."""
        w = st.get("err_watch")
        if w is None:
            host = torch.zeros(1, dtype=torch.int32).pin_memory()
            w = st["err_watch"] = {"host": host, "event": torch.cuda.Event()}
        w["host"].copy_(st["err"], non_blocking=True)
        w["event"].record()

    def _raise_flagged(self) -> None:
        """Raise if a finished earlier launch flagged an out-of-range id (sync_free: the
        error surfaces a batch or so late instead of costing a host sync per batch)."""
        for st in self._state.values():
            w = st.get("err_watch")
            if w is not None and w["event"].query() and int(w["host"][0]):
                w["host"].zero_()
                st["err"].zero_()
                raise ValueError(
                    "an earlier batch had ids outside their tables; the fused kernel skipped "
                    "them (sync_free reports this a batch or so late; validate=True names "
                    "feature and sample)"
                )

    # ------------------------------------------------------------------ forward
    def pack(self, batch) -> Packed:
        return pack(batch, keys=self.plan.names if _has_keys(batch) else None)

    def forward(self, batch, *, timing: torch.Tensor | None = None) -> torch.Tensor:
        """``batch``: JaggedBatch, KeyedJaggedTensor or :class:`~recflex.inputs.Packed`.

        ``timing`` (kernel backend): a ``[total_blocks, 3]`` int64 CUDA tensor that receives
        each block's clock64 at entry and exit and its SM id (built with the timing variant).
        """
        packed = self.pack(batch)
        nf = self.plan.num_features
        if packed.offsets.numel() != nf * packed.batch_size + 1:
            raise ValueError(
                f"batch: {packed.offsets.numel() - 1} bags for {nf} features x "
                f"{packed.batch_size} samples"
            )
        backend = self._resolved_backend()
        if backend == "torch":
            if self.validate:
                validate_ids(packed, self._rows_cpu.to(packed.offsets.device), self.plan.names)
            return embedding_bag_reference(self._table_list(), packed.to(self.device))
        if backend == "emulate":
            packed = packed.to("cpu")
            if self.validate:
                validate_ids(packed, self._rows_cpu, self.plan.names)
            binder = Binder(self.plan, self.max_concurrent(), self.task_order)
            binding = binder.bind(packed.offsets, packed.batch_size, self._num_ids(packed))
            self.last_binding = binding
            return emulate(
                self.plan, [t.detach().cpu() for t in self._table_list()], packed, binding
            )
        return self._forward_kernel(packed, timing)

    def prepare(self, batch) -> tuple[Packed, Binding, dict]:
        """Host work of one batch (packing, binding, copies): what :meth:`run_prepared`
        then launches. Split so benchmarks can time the kernel alone."""
        dev = self.device
        if dev.type != "cuda":
            raise RuntimeError("the kernel backend needs the tables on a CUDA device")
        packed = self.pack(batch)
        idt = self.index_dtype or packed.indices.dtype
        idt_name = "int32" if idt == torch.int32 else "int64"
        st = self._gpu_state(idt_name)
        # on the batch's device; sync_free: a bounded grid, no device read
        binding = st["binder"].bind(packed.offsets, packed.batch_size, self._num_ids(packed))
        meta, offs = binding.pack()
        gpu = packed.to(dev, idt, non_blocking=True)
        if self.validate:
            validate_ids(gpu, st["rows"], self.plan.names)
        meta = meta.to(dev, non_blocking=True)
        return gpu, binding, {"meta": meta, "offs": offs, "index_dtype": idt_name}

    def _num_ids(self, packed: Packed) -> int | None:
        """The id count a sync-free binding bounds its grid with (None: exact binding)."""
        return packed.indices.numel() if self.sync_free else None

    def run_prepared(
        self, gpu: Packed, binding: Binding, extra: dict, timing: torch.Tensor | None = None
    ) -> torch.Tensor:
        st = self._gpu_state(extra["index_dtype"], timing is not None)
        b = gpu.batch_size
        s = self.plan.sum_dims
        alloc = torch.zeros if self.plan.needs_zeroed_output else torch.empty
        out = alloc(b, s, dtype=torch.float32, device=self.device)
        if binding.total_blocks == 0:
            return out.zero_()
        meta, offs = extra["meta"], extra["offs"]
        tasks = meta[offs["tasks"] :]
        nblocks = meta[offs["blocks"] :]
        has_work = self.plan.needs_zeroed_output
        work_start = meta[offs["work_start"] :] if has_work else None
        work = meta[offs["work"] :] if has_work and binding.work.numel() else None
        if timing is not None and (timing.shape[0] < binding.total_blocks or not timing.is_cuda):
            raise ValueError(f"timing: expected a CUDA tensor of >= {binding.total_blocks} rows")
        p = launch.ptr
        args = [
            p(st["tables"]),
            p(st["rows"]),
            p(st["cols"]),
            p(st["fn"]),
            p(st["dims"]),
            p(gpu.indices),
            p(gpu.offsets),
            p(tasks),
            p(nblocks),
            p(work_start),
            p(work if work is not None else tasks),
            p(out),
            launch.i32(b),
            p(st["err"]),
            p(timing),
        ]
        st["kernel"].launch(binding.total_blocks, args)
        return out

    def _forward_kernel(self, packed: Packed, timing: torch.Tensor | None) -> torch.Tensor:
        if self.sync_free:
            self._raise_flagged()
        gpu, binding, extra = self.prepare(packed)
        self.last_binding = binding
        out = self.run_prepared(gpu, binding, extra, timing)
        if self.sync_free:
            self._watch_errors(self._gpu_state(extra["index_dtype"], timing is not None))
        return out

    def kernel_stats(self, index_dtype: str = "int64") -> dict:
        """Registers, shared memory, occupancy of the compiled kernel (GPU only)."""
        return self._gpu_state(index_dtype)["kernel"].stats()


def _has_keys(batch) -> bool:
    if isinstance(batch, Packed):
        return batch.keys is not None
    return True
