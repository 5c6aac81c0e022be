"""Runtime thread binding: how many blocks each feature gets for *this* batch.

The fused kernel reads ``tasks[blockIdx.x] = (feature, block of that feature)``. Block counts
come from the real batch (RecFlex's "runtime task mapping"): OneHot 1, OneHotMultiBlock
``min(ceil(B/256), max_concurrent)``, WarpPerSample ``ceil(B/y)``, OneBlockMultiSample
``ceil(B/z)``, MultiBlockPerSample and ReduceByKey ``min(tiles, max_concurrent)``. A feature
with no lookups gets no schedule blocks, only the few zero-fill blocks that write its zeros,
so a 1-sample batch launches a handful of blocks. Everything is a handful of torch ops over
all features at once, on the device the offsets live on: no Python loop over features or
samples.

Input layout (TBE's and ``KeyedJaggedTensor``'s): ``offsets`` has ``F*B + 1`` entries and
the ids of feature ``f``, sample ``b`` are ``indices[offsets[f*B + b] : offsets[f*B + b + 1]]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recflex.constants import ONEHOT_TILE, ZERO_FILL_FLOATS_PER_BLOCK
from recflex.plan import Plan

# template codes in the per-feature tables
_CODES = {
    "OneHot": 0,
    "OneHotMultiBlock": 1,
    "WarpPerSample": 2,
    "OneBlockMultiSample": 3,
    "MultiBlockPerSample": 4,
    "ReduceByKey": 5,
}


@dataclass(frozen=True)
class Binding:
    """The per-batch launch description.

    ``blocks[f]``: blocks of feature ``f``; ``tasks``: ``[total, 2]`` int32 (feature, block);
    ``work``: ``[W, 2]`` int32 (sample, tile) pairs of the MultiBlockPerSample features,
    feature ``f``'s at ``work[work_start[f]:work_start[f+1]]``; ``nnz[f]``: its lookups.
    """

    batch_size: int
    blocks: torch.Tensor
    tasks: torch.Tensor
    work: torch.Tensor
    work_start: torch.Tensor
    nnz: torch.Tensor
    total_blocks: int

    def pack(self) -> tuple[torch.Tensor, dict[str, int]]:
        """One int32 buffer [tasks | blocks | work_start | work] (8-byte aligned sections)
        and the element offset of each section: a single copy moves it to the GPU."""
        parts = [
            ("tasks", self.tasks.reshape(-1)),
            ("blocks", self.blocks),
            ("work_start", self.work_start),
            ("work", self.work.reshape(-1)),
        ]
        offs, chunks, pos = {}, [], 0
        for name, t in parts:
            offs[name] = pos
            chunks.append(t.to(torch.int32))
            pos += t.numel()
            if pos % 2:
                chunks.append(torch.zeros(1, dtype=torch.int32, device=t.device))
                pos += 1
        return torch.cat(chunks), offs


TASK_ORDERS = ("feature", "heavy-first")


class Binder:
    """Per-plan tables (template code, samples per block, lookups per tile) for :meth:`bind`.

    ``task_order``: ``heavy-first`` (default) lists the features whose blocks carry the most
    loads per block first (longest-processing-time order, so long blocks do not start last);
    ``feature`` lists each feature's blocks in feature order (the artifact's task mapping).
    Heavy-first measured 1.03-1.24x faster on models A-E (default plans, 128 test batches,
    H200, docs/recflex/figures.md).
    """

    def __init__(self, plan: Plan, max_concurrent: int, task_order: str = "heavy-first") -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 block, got {max_concurrent}")
        if task_order not in TASK_ORDERS:
            raise ValueError(f"task_order: expected one of {TASK_ORDERS}, got {task_order!r}")
        self.task_order = task_order
        self.plan = plan
        self.max_concurrent = int(max_concurrent)
        codes, spb, tile, dims = [], [], [], []
        for s, d in zip(plan.schedules, plan.dims):
            codes.append(_CODES[s.template])
            spb.append(s.samples_per_block or 1)
            tile.append(s.lookups_per_tile(d) or 1)
            dims.append(d)
        self._cpu = {
            "code": torch.tensor(codes, dtype=torch.int64),
            "spb": torch.tensor(spb, dtype=torch.int64),
            "tile": torch.tensor(tile, dtype=torch.int64),
            "dim": torch.tensor(dims, dtype=torch.int64),
        }
        self._mbps = torch.nonzero(self._cpu["code"] == _CODES["MultiBlockPerSample"]).flatten()
        self._dev: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        t = self._dev.get(device)
        if t is None:
            t = {k: v.to(device) for k, v in self._cpu.items()}
            t["mbps"] = self._mbps.to(device)
            self._dev[device] = t
        return t

    def _tasks(
        self, blocks: torch.Tensor, nnz: torch.Tensor, dims: torch.Tensor, total: int
    ) -> torch.Tensor:
        """``[total, 2]`` (feature, block within the feature) in launch order. ``total`` may
        exceed the blocks' sum (a bounded grid): the rows past it are ``(-1, 0)``, blocks
        the kernel ends at once. Found by a search in the running sums, so no host read."""
        dev = blocks.device
        nf = blocks.numel()
        if nf == 0 or total == 0:
            return torch.zeros(0, 2, dtype=torch.int32, device=dev)
        if self.task_order == "heavy-first":
            load = nnz.double() * dims / torch.clamp(blocks, min=1)
            order = torch.argsort(-load, stable=True)
        else:
            order = torch.arange(nf, device=dev)
        ob = blocks[order]
        ends = torch.cumsum(ob, 0)
        pos = torch.arange(total, device=dev, dtype=ends.dtype)
        k = torch.searchsorted(ends, pos, right=True)  # position in `order`; nf: past the end
        kk = torch.clamp(k, max=nf - 1)
        valid = k < nf
        feat = torch.where(valid, order[kk], -1)
        bid = torch.where(valid, pos - (ends - ob)[kk], 0)
        return torch.stack([feat, bid], dim=1).to(torch.int32)

    def grid_bound(self, batch_size: int, num_ids: int) -> int:
        """The most blocks :meth:`bind` can give a batch of ``batch_size`` samples and
        ``num_ids`` ids, from the host alone (the launch grid of a sync-free binding)."""
        b, n = int(batch_size), int(num_ids)
        if b <= 0 or self.plan.num_features == 0:
            return 0
        t, maxc = self._cpu, self.max_concurrent
        code, spb, tile, dim = t["code"], t["spb"], t["tile"], t["dim"]
        by_ids = -(-n // tile)  # tiles of every id, in one feature at the most
        ub = torch.ones_like(code)  # OneHot
        ub = torch.where(code == 1, torch.full_like(code, min(-(-b // ONEHOT_TILE), maxc)), ub)
        ub = torch.where((code == 2) | (code == 3), -(-b // spb), ub)
        ub = torch.where(code == 4, torch.clamp(by_ids + b, max=maxc), ub)
        ub = torch.where(code == 5, torch.clamp(by_ids, max=maxc), ub)
        zf = -(-b * dim // ZERO_FILL_FLOATS_PER_BLOCK)  # a feature without lookups
        return int(torch.maximum(ub, zf).sum())

    def work_bound(self, batch_size: int, num_ids: int) -> int:
        """The most MultiBlockPerSample (sample, tile) pairs a batch can make (host only):
        a feature's ``sum ceil(len / tile)`` is at most ``ceil(num_ids / tile) + B``."""
        b, n = int(batch_size), int(num_ids)
        if b <= 0 or self._mbps.numel() == 0:
            return 0
        tile = self._cpu["tile"][self._mbps]
        return int((-(-n // tile) + b).sum())

    def bind(self, offsets: torch.Tensor, batch_size: int, num_ids: int | None = None) -> Binding:
        """Block counts, task list and MultiBlockPerSample work list for one batch.

        ``num_ids`` (the batch's id count, known on the host) binds without reading the
        device, so a batch on the GPU costs no host sync: the launch grid is
        :meth:`grid_bound` (blocks past the batch's own total get the task ``(-1, 0)`` and
        exit at once) and the work list is :meth:`work_bound` long (only each feature's
        ``work_start`` range is read). Without it the grid and the work list are exact
        (two host reads)."""
        nf = self.plan.num_features
        b = int(batch_size)
        if b < 0:
            raise ValueError(f"batch_size must be >= 0, got {b}")
        if offsets.dim() != 1 or offsets.numel() != nf * b + 1:
            raise ValueError(
                f"offsets: expected {nf}*{b}+1 = {nf * b + 1} entries (features x batch + 1), "
                f"got shape {tuple(offsets.shape)}"
            )
        dev = offsets.device
        t = self._tables(dev)
        offs = offsets.to(torch.int64)
        code, maxc = t["code"], self.max_concurrent
        nnz = offs[b::b][:nf] - offs[0 : nf * b : b] if b else torch.zeros_like(code)
        zero = torch.zeros_like(code)
        blocks = torch.where(code == 0, torch.ones_like(code), zero)
        tiles_b = -(-b // ONEHOT_TILE)
        blocks = torch.where(code == 1, torch.full_like(code, min(tiles_b, maxc)), blocks)
        per_b = -torch.div(-b, t["spb"], rounding_mode="floor")
        blocks = torch.where((code == 2) | (code == 3), per_b, blocks)
        rbk = torch.clamp(-torch.div(-nnz, t["tile"], rounding_mode="floor"), max=maxc)
        blocks = torch.where(code == 5, rbk, blocks)
        # MultiBlockPerSample: (sample, tile) pairs from the per-sample lengths
        work = torch.zeros(0, 2, dtype=torch.int64, device=dev)
        work_start = torch.zeros(nf + 1, dtype=torch.int64, device=dev)
        mb = t["mbps"]
        if mb.numel() and b:
            lens = (offs[1:] - offs[:-1]).view(nf, b)[mb]  # [M, B]
            tl = t["tile"][mb].unsqueeze(1)
            ntiles = -torch.div(-lens, tl, rounding_mode="floor")  # [M, B]
            per_feat = ntiles.sum(dim=1)
            counts = torch.zeros_like(code).index_put_((mb,), per_feat)
            work_start[1:] = torch.cumsum(counts, 0)
            flat = ntiles.reshape(-1)  # [M * B]: tiles of (feature m, sample s) at m * B + s
            ends = torch.cumsum(flat, 0)
            size = int(ends[-1]) if num_ids is None else self.work_bound(b, num_ids)
            pos = torch.arange(size, device=dev)
            k = torch.searchsorted(ends, pos, right=True)
            kk = torch.clamp(k, max=flat.numel() - 1)
            valid = k < flat.numel()  # a bounded list's tail: never read by the kernel
            rep_sample = torch.where(valid, kk % b, 0)
            tile_idx = torch.where(valid, pos - (ends - flat)[kk], 0)
            work = torch.stack([rep_sample, tile_idx], dim=1)
            blocks = blocks.index_put_((mb,), torch.clamp(per_feat, max=maxc))
        # no lookups: no schedule blocks, only zero-fill blocks
        zf = -torch.div(-b * t["dim"], ZERO_FILL_FLOATS_PER_BLOCK, rounding_mode="floor")
        blocks = torch.where(nnz == 0, zf, blocks)
        if num_ids is None:
            total = int(blocks.sum()) if nf else 0
        else:
            total = self.grid_bound(b, num_ids)
        return Binding(
            batch_size=b,
            blocks=blocks.to(torch.int32),
            tasks=self._tasks(blocks, nnz, t["dim"], total),
            work=work.to(torch.int32),
            work_start=work_start.to(torch.int32),
            nnz=nnz,
            total_blocks=total,
        )


BINDINGS = ("runtime", "static-mean", "static-max")


class StaticBinder(Binder):
    """Static thread binding (the ablation): each feature's block count is fixed once,
    from the mean or the max of its runtime counts over sample batches, instead of
    following every batch.

    Templates whose blocks stride over their work (OneHot, OneHotMultiBlock,
    MultiBlockPerSample, ReduceByKey, zero fill) run with the fixed count, more blocks
    (idle ones exit) or fewer (each loops longer). WarpPerSample and OneBlockMultiSample
    map one block to a fixed slice of samples and cannot stride, so they get at least the
    batch's own count (a static kernel would have to be launched for the largest batch).
    """

    def __init__(
        self,
        plan: Plan,
        max_concurrent: int,
        sample_offsets: list[tuple[torch.Tensor, int]],
        mode: str = "static-max",
        task_order: str = "heavy-first",
    ) -> None:
        super().__init__(plan, max_concurrent, task_order)
        if mode not in ("static-mean", "static-max"):
            raise ValueError(f"mode: expected static-mean or static-max, got {mode!r}")
        if not sample_offsets:
            raise ValueError("sample_offsets: a static binding needs at least one sample batch")
        counts = torch.stack(
            [Binder.bind(self, o.cpu(), b).blocks.to(torch.float64) for o, b in sample_offsets]
        )
        fixed = counts.max(0).values if mode == "static-max" else counts.mean(0).round()
        self.mode = mode
        self.fixed = torch.clamp(fixed, min=1).to(torch.int64)

    def bind(self, offsets: torch.Tensor, batch_size: int) -> Binding:
        rt = super().bind(offsets, batch_size)
        dev = offsets.device
        code = self._tables(dev)["code"]
        fixed = self.fixed.to(dev)
        runtime = rt.blocks.to(torch.int64)
        strided = (code != 2) & (code != 3)
        blocks = torch.where(strided, fixed, torch.maximum(fixed, runtime))
        if batch_size == 0:
            blocks = torch.zeros_like(blocks)
        total = int(blocks.sum())
        return Binding(
            batch_size=rt.batch_size,
            blocks=blocks.to(torch.int32),
            tasks=self._tasks(blocks, rt.nnz, self._tables(dev)["dim"], total),
            work=rt.work,
            work_start=rt.work_start,
            nnz=rt.nnz,
            total_blocks=total,
        )
