"""``emb_kernels.embedding_bag``: torch's EmbeddingBag with a kernel variant chosen per call.

Variants (see docs/emb-kernels/NOTES.md for what each changes and why):

============  ==================================================================
``baseline``  our copy of PyTorch 2.1's kernel (grid 1024 x (32, 8), one lookup at a time)
``optmt``     baseline compiled with a register cap (``max_registers``, default: the device's)
``rpf``       baseline with register prefetch (``prefetch_distance``, default 2)
``l2p``       baseline, after pinning ``hot_rows`` in L2 (prefetch with evict_last)
``combined``  l2p + rpf + optmt (the default, as in the paper; distance chosen with the cap)
``fast``      our design: 16-byte loads, 8 rows in flight, warp or block per bag
============  ==================================================================

``max_registers`` and ``prefetch_distance`` override the paper variants' defaults
(``max_registers=0`` means no cap). ``combined``'s default distance is ``"device"``: 1 when
the cap leaves no register for a second row in flight (32 on an H100/H200), else what
Little's law asks (:func:`emb_kernels.occupancy.pick_prefetch_distance`). The default cap is ``"device"``: the paper's 42 where it
reaches the fewest waves of the fixed 1024-block grid (A100), else the largest cap that
does (32 on an H100/H200); see :mod:`emb_kernels.occupancy`. ``l2p``/``combined`` pin only when ``hot_rows`` is given
(pick them with :func:`emb_kernels.l2p.select_hot_rows`); without it they run their lookup
alone. ``mode="max"`` runs the baseline max loop for every paper variant (no prefetch).

On CPU tensors every variant runs the plain-torch reference (:mod:`emb_kernels.reference`):
the package imports and computes the same function without a GPU or cuda-python. Outputs
have the weight's dtype; accumulation is in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from emb_kernels import errors, kernels, occupancy
from emb_kernels import validate as _val
from emb_kernels.autograd import EmbeddingBagFunction
from emb_kernels.constants import (
    DEFAULT_PREFETCH_DISTANCE,
    DEVICE_CAP,
    DEVICE_PREFETCH,
    PREFETCH_DISTANCES,
    VARIANTS,
)
from emb_kernels.nvrtc_build import check_cap
from emb_kernels.reference import embedding_bag_reference

_PAPER_DEFAULTS = {  # variant: (register cap, prefetch distance, pins hot rows)
    "baseline": (None, 0, False),
    "optmt": (DEVICE_CAP, 0, False),
    "rpf": (None, DEFAULT_PREFETCH_DISTANCE, False),
    "l2p": (None, 0, True),
    "combined": (DEVICE_CAP, DEVICE_PREFETCH, True),
}


@dataclass(frozen=True)
class VariantConfig:
    """What a variant name plus overrides resolve to."""

    variant: str
    max_registers: int | str | None  # None: no cap; "device": chosen per GPU at launch
    prefetch: int | str  # 0: one lookup at a time; "device": chosen with the cap at launch
    pins: bool  # launches the L2 pin kernel first (when hot rows are given)

    @property
    def is_fast(self) -> bool:
        return self.variant == "fast"


def resolve_variant(
    variant: str, max_registers: int | str | None = None, prefetch_distance: int | None = None
) -> VariantConfig:
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if variant == "fast":
        if max_registers is not None or prefetch_distance is not None:
            raise ValueError(
                "variant 'fast' takes no max_registers or prefetch_distance (they tune the "
                "paper's kernel: use 'optmt', 'rpf' or 'combined')"
            )
        return VariantConfig("fast", None, 0, False)
    cap, dist, pins = _PAPER_DEFAULTS[variant]
    if max_registers is not None:
        cap = DEVICE_CAP if max_registers == DEVICE_CAP else check_cap(max_registers)
    if prefetch_distance == DEVICE_PREFETCH:
        dist = DEVICE_PREFETCH
    elif prefetch_distance is not None:
        if prefetch_distance != 0 and prefetch_distance not in PREFETCH_DISTANCES:
            raise ValueError(
                f"prefetch_distance must be 0 or one of {PREFETCH_DISTANCES}, got {prefetch_distance!r}"
            )
        dist = int(prefetch_distance)
    return VariantConfig(variant, cap, dist, pins)


def on_device(config: VariantConfig, device: torch.device) -> VariantConfig:
    """``config`` with a ``"device"`` register cap replaced by the cap chosen for ``device``,
    then a ``"device"`` prefetch distance by the one that goes with that cap
    (:func:`emb_kernels.occupancy.pick_prefetch_distance`)."""
    if config.max_registers != DEVICE_CAP and config.prefetch != DEVICE_PREFETCH:
        return config
    index = device.index if device.index is not None else torch.cuda.current_device()
    if config.max_registers == DEVICE_CAP:
        config = replace(config, max_registers=occupancy.device_register_cap(index))
    if config.prefetch == DEVICE_PREFETCH:
        cap = config.max_registers or None
        config = replace(config, prefetch=occupancy.device_prefetch_distance(index, cap))
    return config


def _hot_rows_tensor(hot_rows, device: torch.device) -> Tensor:
    if isinstance(hot_rows, Tensor):
        t = hot_rows
    else:
        t = torch.as_tensor(np.asarray(hot_rows, dtype=np.int64))
    if t.dim() != 1:
        raise ValueError(f"hot_rows: expected a 1-D list of row ids, got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.int64)


class Launcher:
    """A prepared lookup: fixed inputs and output, ``launcher()`` enqueues only the kernel.

    The benchmark times ``launcher()``; ``launcher.pin()`` enqueues the L2 pin step (or does
    nothing). Build one with :func:`make_launcher`.
    """

    def __init__(
        self,
        inputs: _val.BagInputs,
        config: VariantConfig,
        out: Tensor,
        aux: kernels.AuxOutputs | None,
        hot_rows: Tensor | None,
        fast: dict | None,
        table: int = 0,
    ) -> None:
        self.inputs = inputs
        self.config = config
        self.out = out
        self.aux = aux
        self.hot_rows = hot_rows
        self.err = errors.error_word(out.device)
        self._run: Callable[[], None]
        b = inputs
        if config.is_fast:
            weight = b.weight.contiguous()
            self._fast_weight = weight
            plan = kernels.plan_fast(
                dtype=weight.dtype,
                index_dtype=b.indices.dtype,
                rows=[b.rows],
                dims=[b.dim],
                weight_offsets=[0],
                out_cols=[0],
                out_stride=b.dim,
                batch=b.batch_size,
                mode=b.mode,
                mean_pooling=b.num_ids / max(b.batch_size, 1),
                device=out.device,
                **(fast or {}),
                pointer_align=kernels.pointer_alignment(weight, out),
            )
            self.plan = plan

            def run() -> None:
                kernels.launch_fast(
                    plan,
                    b.indices,
                    b.offsets,
                    weight,
                    b.per_sample_weights,
                    out,
                    num_tables=1,
                    batch=b.batch_size,
                    out_stride=b.dim,
                    mode=b.mode,
                    padding_idx=b.padding_idx,
                    err=self.err,
                )
        else:

            def run() -> None:
                kernels.launch_baseline(
                    b.weight,
                    b.indices,
                    b.offsets,
                    out,
                    b.mode,
                    b.per_sample_weights,
                    b.padding_idx,
                    self.err,
                    max_registers=config.max_registers,
                    prefetch=config.prefetch,
                    aux=aux,
                    table=table,
                )

        self._run = run

    def __call__(self) -> Tensor:
        if self.inputs.batch_size > 0:
            self._run()
        return self.out

    def pin(self) -> None:
        if self.config.pins and self.hot_rows is not None:
            kernels.launch_pin(self.inputs.weight, self.hot_rows)


def make_launcher(
    weight: Tensor,
    indices: Tensor,
    offsets: Tensor | None = None,
    mode: str = "sum",
    per_sample_weights: Tensor | None = None,
    padding_idx: int | None = None,
    variant: str = "combined",
    *,
    max_registers: int | str | None = None,
    prefetch_distance: int | None = None,
    hot_rows=None,
    validate_input: bool = True,
    include_last_offset: bool = False,
    out: Tensor | None = None,
    aux: bool = False,
    fast: dict | None = None,
    table: int = 0,
) -> Launcher:
    """Check, normalize and plan once; return a :class:`Launcher` (CUDA tensors only).

    ``aux=True`` makes the paper variants also write PyTorch's offset2bag / bag_size (and
    max_indices for max), as the original kernel always does. ``fast`` passes tuning knobs to
    :func:`emb_kernels.kernels.plan_fast` (``unroll``, ``block_warps``, ``hint``, ``coop``,
    ``split``, ``split_min_pooling``, ``seg_unroll``, ...).
    """
    config = resolve_variant(variant, max_registers, prefetch_distance)
    _check_hot_rows_variant(hot_rows, variant)
    b = _val.prepare(
        weight, indices, offsets, mode, per_sample_weights, padding_idx, include_last_offset
    )
    return _launcher(b, config, hot_rows, validate_input, out, aux, fast, table)


def _check_hot_rows_variant(hot_rows, variant: str) -> None:
    if hot_rows is not None and variant not in ("l2p", "combined"):
        raise ValueError(
            f"hot_rows: only the 'l2p' and 'combined' variants pin rows, not {variant!r}"
        )


def _launcher(
    b: _val.BagInputs,
    config: VariantConfig,
    hot_rows,
    validate_input: bool,
    out: Tensor | None,
    aux: bool,
    fast: dict | None,
    table: int = 0,
) -> Launcher:
    if b.weight.device.type != "cuda":
        raise ValueError("make_launcher: the kernels need CUDA tensors (use embedding_bag on CPU)")
    if b.weight.dtype not in _val.GPU_WEIGHT_DTYPES:
        raise TypeError(
            f"weight: the GPU kernels take float32, float16 or bfloat16, got {b.weight.dtype}"
        )
    if aux and config.is_fast:
        raise ValueError(
            "aux outputs (offset2bag, bag_size) come from the paper variants, not 'fast'"
        )
    config = on_device(config, b.weight.device)
    out = _check_out(out, b)
    if validate_input:
        _val.check_contents(b)
    aux_out = kernels.make_aux(b.indices, b.batch_size, b.dim, b.mode) if aux else None
    hot = None if hot_rows is None else _hot_rows_tensor(hot_rows, b.weight.device)
    return Launcher(b, config, out, aux_out, hot, fast, table)


def _check_out(out: Tensor | None, b: _val.BagInputs) -> Tensor:
    shape = (b.batch_size, b.dim)
    if out is None:
        return torch.empty(shape, dtype=b.weight.dtype, device=b.weight.device)
    if not isinstance(out, Tensor):
        raise TypeError(f"out: expected a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != shape or out.dtype != b.weight.dtype or out.device != b.weight.device:
        raise ValueError(
            f"out: expected a {shape} {b.weight.dtype} tensor on {b.weight.device}, got "
            f"{tuple(out.shape)} {out.dtype} on {out.device}"
        )
    if not out.is_contiguous():
        raise ValueError("out: must be contiguous")
    return out


def embedding_bag(
    weight: Tensor,
    indices: Tensor,
    offsets: Tensor | None = None,
    mode: str = "sum",
    per_sample_weights: Tensor | None = None,
    padding_idx: int | None = None,
    variant: str = "combined",
    *,
    max_registers: int | str | None = None,
    prefetch_distance: int | None = None,
    hot_rows=None,
    validate: bool = True,
    include_last_offset: bool = False,
    out: Tensor | None = None,
) -> Tensor:
    """``torch.nn.functional.embedding_bag(indices, weight, offsets, ...)`` with our kernels.

    Note the argument order (weight first, as the kernels see it). ``offsets`` has B entries,
    or B+1 with ``include_last_offset=True``; a 2-D ``indices`` ``[B, L]`` needs no offsets.
    ``validate=True`` checks offsets and ids in a separate pass before any launch and raises
    ``ValueError`` naming position and value; ``validate=False`` skips that pass, and a bad id
    is then skipped by the kernel (never read) and reported by the next emb_kernels call or
    :func:`emb_kernels.check_errors` (the CPU reference path always validates: it cannot skip
    ids). ``out`` (an extension) receives the result in place.

    Differentiable: when ``weight`` (or ``per_sample_weights``) requires grad, the call goes
    through :class:`emb_kernels.autograd.EmbeddingBagFunction` (same forward, torch-code
    backward, any mode); otherwise nothing is added to the inference path.

    >>> w = torch.arange(8.0).view(4, 2)
    >>> embedding_bag(w, torch.tensor([1, 3, 0]), torch.tensor([0, 2, 2]), variant="baseline")
    tensor([[ 8., 10.],
            [ 0.,  0.],
            [ 0.,  1.]])
    """
    errors.check_errors(sync=False)
    config = resolve_variant(variant, max_registers, prefetch_distance)
    _check_hot_rows_variant(hot_rows, variant)
    b = _val.prepare(
        weight, indices, offsets, mode, per_sample_weights, padding_idx, include_last_offset
    )
    psw = b.per_sample_weights
    if torch.is_grad_enabled() and (
        b.weight.requires_grad or (psw is not None and psw.requires_grad)
    ):
        if out is not None:
            raise ValueError(
                "out: not supported when a gradient is needed (weight or per_sample_weights "
                "requires grad); drop out= or run under torch.no_grad()"
            )
        # autograd runs the forward with grad off and records one node for the backward
        run = lambda: _forward(b, config, hot_rows, validate, None)  # noqa: E731
        return EmbeddingBagFunction.apply(b.weight, psw, b, run)
    return _forward(b, config, hot_rows, validate, out)


def _forward(
    b: _val.BagInputs, config: VariantConfig, hot_rows, validate: bool, out: Tensor | None
) -> Tensor:
    """The lookup itself: the reference on CPU, the chosen kernel on CUDA (no autograd)."""
    if b.weight.device.type != "cuda":
        # The reference path cannot skip bad ids as the kernels do, so it always validates.
        _val.check_contents(b)
        result = embedding_bag_reference(
            b.weight, b.indices, b.offsets, b.mode, b.per_sample_weights, b.padding_idx
        )
        if out is not None:
            _check_out(out, b).copy_(result)
            return out
        return result
    launcher = _launcher(b, config, hot_rows, validate, out, False, None)
    launcher.pin()
    result = launcher()
    if not validate:
        errors.watch(
            result.device,
            lambda table, pos: (
                _val.describe_bad_id(b.indices, b.offsets, b.rows, None, b.shape_2d, pos)
                + " (found by the kernel with validate=False; the id contributed nothing)"
            ),
        )
    return result
