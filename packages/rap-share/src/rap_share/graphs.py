"""RAP's staged preprocessing replayed as CUDA graphs: one graph per stage slice (the default).

The default path since the 2 x H200 measurement of 2026-11-30: figure 9 RAP 210-226 it/s vs
134-164 it/s eager, figure 10 RAP / Ideal 0.74-0.86 vs 0.40-0.56 eager. :func:`enabled` is
the one place the switch is read: ``Config.graphs`` (``python -m rap_share.figures ...
--graphs/--no-graphs``) or, when that is not given, the environment variable
``RAP_SHARE_GRAPHS`` (unset: on). On, a figures run (every variant) takes its constant tensors
from :mod:`rap_share.fused`'s cache (:func:`rap_share.fused.cached_constants`) and copies the
raw columns packed (:func:`rap_share.runtime.pack_columns`), and ``rap`` replays its stages
through :class:`StagedRunner`. The eager path is the way out: ``RAP_SHARE_GRAPHS=0``,
``--no-graphs`` or ``Config(graphs=False)`` (no cache, one copy per column, ``rap`` launches
each stage's kernels eagerly). Its first GPU run (H200 run 2) gave NaN losses, fixed since (one
graph pool per slot).

A 4096-row batch makes each preprocessing kernel a few microseconds of GPU work but ~10 us of
Python + launch on the host; in the ``rap`` variant that host work runs on a thread sharing the
trainer's GIL, so it stretches the trainer's own (host-bound) stages. Captured once per stage,
a stage costs one ``replay()`` call.

:class:`StagedRunner` keeps two slots (batch ``i`` uses slot ``i % 2``) of static buffers:
raw inputs packed as :func:`rap_share.runtime.pack_columns` lays them out, the intermediate
columns and the outputs (with ``fold``, also the trainer's ids modulo its table sizes, so the
trainer launches nothing per batch). Every distinct batch of raw rows is packed into pinned
host memory once, as one byte buffer per batch (:func:`blob_layout`), and
:meth:`StagedRunner.load` copies a batch's raw rows into its slot in one asynchronous copy
(after the trainer's stream has finished with the batch that used the slot before). Packing
each batch at its load took 1.0-3.0 ms per step on 2 x H200, host time on a thread that
shared the trainer's GIL. Then
:meth:`StagedRunner.stage` replays one stage (the last also builds the outputs), and
:meth:`StagedRunner.outputs` returns the slot's static outputs. Where capture is impossible
(CPU, an op with a host sync such as a list op on list input, a capture error) the runner
falls back to eager launches and says why in :attr:`StagedRunner.note`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence

import torch

from rap_share import fused
from rap_share.constants import STAGES

# where no flag says: unset or anything but "0" / "false" / "no" / "off" -> the CUDA-graph path
# (the default since the H200 measurement of 2026-11-30); those values -> the eager path
ENV = "RAP_SHARE_GRAPHS"
_OFF = ("0", "false", "no", "off")
# pinned host memory the runner may take for the raw rows of every distinct batch
PREPACK_MAX_BYTES = 2 << 30


def batch_period(num_rows: int, batch: int, world: int) -> int:
    """Steps after which :meth:`rap_share.runtime.RawSource.rows` repeats: global batches of
    ``batch * world`` rows taken in turn from ``num_rows`` rows, wrapping around.

    >>> batch_period(65536, 4096, 2), batch_period(65536, 8192, 2), batch_period(10, 4, 1)
    (8, 4, 5)
    """
    return num_rows // math.gcd(num_rows, batch * world)


def enabled(flag: bool | None = None) -> bool:
    """The switch: ``flag`` when given, else ``RAP_SHARE_GRAPHS`` (default on; ``0`` / ``false``
    / ``no`` / ``off``, any case, give the eager path).

    >>> enabled(True), enabled(False)
    (True, False)
    """
    if flag is not None:
        return bool(flag)
    return os.environ.get(ENV, "").strip().lower() not in _OFF


def blob_layout(tensors: Sequence[torch.Tensor], align: int = 256) -> tuple[list[int], int]:
    """Byte offsets (each a multiple of ``align``) of ``tensors`` packed one after another into
    one byte buffer, and its size: a batch's raw columns then travel in a single copy.

    >>> blob_layout([torch.zeros(3, dtype=torch.int64), torch.zeros(5, dtype=torch.bool)])
    ([0, 256], 261)
    """
    offsets, n = [], 0
    for t in tensors:
        n = -(-n // align) * align
        offsets.append(n)
        n += t.numel() * t.element_size()
    return offsets, n


def blob_views(blob: torch.Tensor, offsets: Sequence[int], like: Sequence[torch.Tensor]):
    """Views of the byte tensor ``blob`` at ``offsets`` with the dtypes and shapes of
    ``like`` (:func:`blob_layout`'s layout)."""
    return [blob[o : o + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
            for o, t in zip(offsets, like)]  # fmt: skip


class StagedRunner:
    """Stage-by-stage preprocessing of one :class:`~rap_share.corun.Program` (see module doc)."""

    def __init__(self, raw, prog, cfg, rank: int, device: torch.device,
                 graphs: bool = True, fold: Sequence[int] | None = None) -> None:  # fmt: skip
        self.raw, self.prog, self.cfg, self.rank = raw, prog, cfg, rank
        self.device = device
        self.fold = None if fold is None else [int(n) for n in fold]
        if self.fold is not None and len(self.fold) != len(prog.sparse_keys):
            raise ValueError(f"fold: {len(self.fold)} table sizes for "
                             f"{len(prog.sparse_keys)} sparse outputs")  # fmt: skip
        self.graphed = False
        self.note = "eager"
        self._env: dict = {}
        self._slots: list[dict] = []
        self._pinned: list[torch.Tensor] = []  # every distinct batch, packed, pinned
        if not graphs:
            self.note = "eager (graphs off)"
        elif device.type != "cuda":
            self.note = "eager (not a CUDA device)"
        else:
            try:
                with fused.cached_constants(True):  # capture needs constants made beforehand
                    self._capture()
                self.graphed = True
                self.note = "cuda graphs"
            except Exception as e:
                self._slots = []
                self.note = f"eager (capture failed: {type(e).__name__}: {str(e)[:160]})"
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize(device)
        if self.graphed:
            self._prepack()

    # ------------------------------------------------------------------ capture
    def _capture(self) -> None:
        from rap_share.corun import env_columns, outputs, run_launches
        from rap_share.runtime import pack_columns, unpack_columns

        dev = self.device
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        for k in range(2):
            # One private memory pool per slot, and the slot's env (every stage's output) kept
            # alive: with one pool shared by both slots, slot 0's inter-stage tensors, freed
            # once its capture ended, were handed to slot 1's captured outputs, so replaying
            # batch i + 2 (slot 0) overwrote batch i + 1's outputs while the trainer read them
            # (NaN losses from the second step on, H200 run 2).
            pool = torch.cuda.graph_pool_handle()
            host, layout = pack_columns(env_columns(self.raw, self.prog, k, self.cfg, self.rank))
            with torch.cuda.stream(side):
                offsets, nbytes = blob_layout(host)
                blob = torch.empty(nbytes, dtype=torch.uint8, device=dev)
                static = blob_views(blob, offsets, host)
                for dst, h in zip(static, host):
                    dst.copy_(h)
                env = unpack_columns(static, layout)
                env["labels"] = env["labels"].values
                warm = dict(env)  # eager warm-up: fills fused's constant cache, checks the ops
                run_launches(self.prog.all_launches(), warm)
                outputs(warm, self.prog)
            side.synchronize()
            graphs = {}
            for s in [*STAGES, "outputs"]:
                if s != "outputs" and not self.prog.stages.get(s):
                    graphs[s] = None  # nothing to launch in this stage
                    continue
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool, stream=side, capture_error_mode="thread_local"):
                    if s == "outputs":
                        out = outputs(env, self.prog)
                        if self.fold is not None:  # the trainer's ids: modulo its tables
                            out["folded"] = [torch.remainder(v, n) for (v, _), n
                                             in zip(out["sparse"], self.fold)]  # fmt: skip
                    else:
                        run_launches(self.prog.stages.get(s, []), env)
                graphs[s] = g
            self._slots.append({"blob": blob, "offsets": offsets, "layout": layout,
                                "static": static, "graphs": graphs,
                                "env": env, "out": out, "pool": pool})  # fmt: skip
        torch.cuda.synchronize(dev)

    # ------------------------------------------------------------------ per batch
    def load(self, it: int, free_event=None) -> None:
        """Batch ``it``'s raw rows on the device (current stream). ``free_event``: recorded on
        the trainer's stream once it no longer reads the batch that used this slot before."""
        from rap_share.corun import make_env

        if not self.graphed:
            self._env[it % 2] = make_env(self.raw, self.prog, it, self.cfg, self.rank,
                                         self.device, non_blocking=True, packed=True)  # fmt: skip
            return
        slot = self._slots[it % 2]
        host = self._pinned[it % len(self._pinned)] if self._pinned else self._pack(it)
        if free_event is not None:
            torch.cuda.current_stream(self.device).wait_event(free_event)
        slot["blob"].copy_(host, non_blocking=True)

    def _prepack(self) -> None:
        """Every distinct batch of the raw rows (they repeat after :func:`batch_period`
        steps), packed as the slots lay them out, in pinned host memory, once: a load is then
        one asynchronous copy and no host work, as when a data loader has already read
        the raw rows into pinned buffers. Above ``PREPACK_MAX_BYTES`` each load packs its
        batch instead (said in :attr:`note`)."""
        period = batch_period(self.raw.num_rows, self.cfg.batch, self.cfg.world)
        per_batch = self._slots[0]["blob"].numel()
        mb = period * per_batch / 2**20
        if period * per_batch > PREPACK_MAX_BYTES:
            self.note += f"; raw rows packed per batch ({period} batches, {mb:.0f} MB)"
            return
        self._pinned = [self._pack(i) for i in range(period)]
        self.note += f"; raw rows pinned ({period} batches, {mb:.1f} MB)"

    def _pack(self, it: int) -> torch.Tensor:
        """Batch ``it``'s raw rows as one pinned byte buffer laid out as the slots' ``blob``."""
        from rap_share.corun import env_columns
        from rap_share.runtime import pack_columns

        slot = self._slots[it % 2]
        host, layout = pack_columns(env_columns(self.raw, self.prog, it, self.cfg, self.rank))
        if layout != slot["layout"]:
            raise RuntimeError(f"batch {it}: raw layout differs from the captured one")
        blob = torch.empty(slot["blob"].numel(), dtype=torch.uint8, pin_memory=True)
        for dst, h in zip(blob_views(blob, slot["offsets"], host), host):
            dst.copy_(h)
        return blob

    def stage(self, stage: str, it: int) -> None:
        """Stage ``stage``'s kernels of batch ``it`` (the last stage also makes the outputs)."""
        from rap_share.corun import outputs, run_launches

        last = stage == STAGES[-1]
        if self.graphed:
            g = self._slots[it % 2]["graphs"]
            if g[stage] is not None:
                g[stage].replay()
            if last:
                g["outputs"].replay()
            return
        env = self._env[it % 2]
        with fused.cached_constants(True):
            run_launches(self.prog.stages.get(stage, []), env)
            if last:
                env["__out__"] = outputs(env, self.prog)

    def run_all(self, it: int) -> dict:
        """Load and every stage of batch ``it`` at once; its outputs."""
        self.load(it)
        for s in STAGES:
            self.stage(s, it)
        return self.outputs(it)

    def outputs(self, it: int) -> dict:
        """Batch ``it``'s outputs (static buffers of its slot when graphed: valid until batch
        ``it + 2`` is loaded)."""
        if self.graphed:
            return self._slots[it % 2]["out"]
        return self._env[it % 2]["__out__"]
