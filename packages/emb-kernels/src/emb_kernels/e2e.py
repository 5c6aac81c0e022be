"""DLRM inference end to end, with each embedding kernel plugged into rec-common's DLRM.

The artifact's model (MICRO'24 section 4 of docs/emb-kernels/NOTES.md): 256 dense features,
bottom MLP 256-128-128, 12 tables of 500K x 128 fp32 looked up with bags of 150 ids (the
micro24 hotness traces), dot interaction, top MLP 128-64-1, batch 2048. The embedding module
is swapped per variant on one model (same MLP weights, same tables, same inputs):

* ``torch``: rec-common's default ``TorchEmbeddingBags`` (one ``nn.EmbeddingBag`` per table);
* ``baseline``, ``optmt``, ``combined`` (pin + RPF + device cap, the pin inside the forward),
  ``fast``: :class:`emb_kernels.TableBatchedEmbeddingBags` over the same weights.

Time: CUDA events around ``model(dense, sparse)`` under ``inference_mode``, after a GPU spin
that hides the host's enqueue, so the number is the forward's device time (MLPs, lookups,
interaction, pins) without Python overhead; ``embedding_latency`` is the same for the
embedding module alone. Run it with ``python -m emb_kernels.bench --workload dlrm``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from emb_kernels import bench as B
from emb_kernels import kernels, l2p
from emb_kernels.batched import TableBatchedEmbeddingBags
from rec_common import results
from rec_common.generators import BatchGenerator, FeatureSpec, micro24_hot_rows
from rec_common.models import DLRM, TorchEmbeddingBags
from rec_common.timing import summarize

NUM_DENSE = 256
BOTTOM_MLP = "256-128-128"
TOP_MLP = "128-64-1"
E2E_VARIANTS = ("baseline", "torch", "optmt", "combined", "fast")  # baseline first: ratios
TIME_INCLUDES = (
    "device time of the whole forward (bottom MLP, 12 lookups incl. L2 pins for combined, "
    "interaction, top MLP) between CUDA events; host enqueue hidden by a spin kernel"
)


def build(tables: list[torch.Tensor], hot: np.ndarray) -> tuple[DLRM, dict]:
    """The model (torch embedding plugged) and the embedding module of every variant, on
    the tables' device (one copy of the tables shared by our variants, one for torch)."""
    device = tables[0].device
    sizes = [t.shape[0] for t in tables]
    dim = tables[0].shape[1]
    torch.manual_seed(0)
    ours = TableBatchedEmbeddingBags(
        sizes, dim, variant="combined", device=device, validate=False,
        hot_rows=[hot] * len(sizes),
    )  # fmt: skip
    ref = TorchEmbeddingBags(sizes, dim, check_ids=False).to(device)
    with torch.no_grad():
        for t, w in enumerate(tables):
            ours.table(t).copy_(w)
            ref.bags[t].weight.copy_(w)
    model = DLRM(
        num_dense=NUM_DENSE, embedding=ref, bottom_mlp=BOTTOM_MLP, top_mlp=TOP_MLP
    ).to(device).eval()  # fmt: skip
    modules = {"torch": ref, "combined": ours}
    for v in ("baseline", "optmt", "fast"):
        modules[v] = ours.sharing(v)
    return model, modules


def time_forward(fn, inputs: list, repeats: int, spin_us: float) -> list[float]:
    """Device time (us) of ``fn(*inputs[i])`` per call, the first (warm-up) call dropped."""
    order = [i for _ in range(repeats) for i in range(len(inputs))]
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in order]  # fmt: skip
    with torch.inference_mode():
        fn(*inputs[0])
        torch.cuda.synchronize()
        for (a, b), i in zip(ev, order):
            kernels.launch_spin(int(spin_us * 1000))
            a.record()
            fn(*inputs[i])
            b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) * 1e3 for a, b in ev][1:]


def run(args, bench: str) -> tuple[list[dict], list[str]]:
    """Every variant on every hotness of ``args.hotness``; rows and failures."""
    rows: list[dict] = []
    failed: list[str] = []
    names = [v.strip() for v in args.variants.split(",")] if args.variants else list(E2E_VARIANTS)
    unknown = [v for v in names if v not in E2E_VARIANTS]
    if unknown:
        raise ValueError(f"dlrm: unknown variants {unknown}; known: {', '.join(E2E_VARIANTS)}")
    tables = B.gpu_tables(args.num_embeddings, args.embedding_dim, args.num_tables, 512)
    row_bytes = args.embedding_dim * 4
    n_hot = args.hot_rows or l2p.hot_row_count(row_bytes, l2p.persisting_l2_max_bytes())
    for h in B._hotness_list(args.hotness):
        trace = B.TRACES[h]
        hot = micro24_hot_rows(trace, min(n_hot, args.num_embeddings))
        hot = hot[hot < args.num_embeddings]
        model, modules = build(tables, hot)
        feats = [
            FeatureSpec(f"table{i}", rows=args.num_embeddings, dim=args.embedding_dim,
                        pooling=f"fixed:{args.bag_size}", skew=f"trace:{trace}")
            for i in range(args.num_tables)
        ]  # fmt: skip
        gen = BatchGenerator(feats, seed=0, index_dtype=torch.int64)
        g = torch.Generator(device="cuda").manual_seed(1)
        inputs = [
            (torch.rand(args.batch_size, NUM_DENSE, device="cuda", generator=g),
             gen.batch(args.batch_size, b).to("cuda"))
            for b in range(args.batches)
        ]  # fmt: skip
        with torch.inference_mode():
            ref = model(*inputs[0]).clone()
        base: dict = {}
        workload = f"dlrm-micro24-{h}"
        params = dict(
            hotness=h, trace=trace, tables=args.num_tables, rows=args.num_embeddings,
            dim=args.embedding_dim, batch=args.batch_size, pooling=args.bag_size,
            num_dense=NUM_DENSE, bottom_mlp=BOTTOM_MLP, top_mlp=TOP_MLP, interaction="dot",
            hot_rows=int(hot.size), batches=args.batches, time_includes=TIME_INCLUDES,
        )  # fmt: skip
        for v in names:
            t0 = time.perf_counter()
            model.embedding = modules[v]
            try:
                with torch.inference_mode():
                    out = model(*inputs[0])
                err = float((out.double() - ref.double()).norm() / ref.double().norm())
                if not err <= 1e-4:
                    raise B.MismatchError(f"logits differ from the torch model's by {err:.2e}")
                e2e = time_forward(model, inputs, args.repeats, args.spin_us)
                emb = time_forward(modules[v], [(s,) for _, s in inputs], args.repeats,
                                   args.spin_us)  # fmt: skip
            except (B.MismatchError, RuntimeError, ValueError) as exc:
                msg = f"dlrm {v} on {h}: {exc}"
                print(f"error: {msg}", file=sys.stderr, flush=True)
                failed.append(msg)
                continue
            for metric, samples in (("e2e_latency", e2e), ("embedding_latency", emb)):
                t = summarize(samples, torch.cuda.get_device_name())
                key = (workload, metric)
                r = results.make_row(
                    package=B.PACKAGE, benchmark=bench, workload=workload, variant=v,
                    metric=metric, unit="us", timing=t,
                    baseline="baseline" if key in base and v != "baseline" else None,
                    baseline_value=base.get(key) if v != "baseline" else None,
                    check_rel_error=float(f"{err:.3e}"), **params,
                )  # fmt: skip
                if v == "baseline":
                    base[key] = t.median
                if v == "torch":
                    base[(workload, metric, "torch")] = t.median
                torch_t = base.get((workload, metric, "torch"))
                if torch_t and v != "torch":
                    r["speedup_vs_torch"] = round(torch_t / t.median, 4)
                rows.append(B.fill_versions(r))
            e2e_med = rows[-2]["value"]
            emb_med = rows[-1]["value"]
            ratio = f" ({rows[-2]['ratio']:.2f}x baseline)" if rows[-2]["ratio"] else ""
            print(
                f"{workload:24s} {v:10s} forward {e2e_med:9.1f} us{ratio}, embedding "
                f"{emb_med:9.1f} us ({emb_med / e2e_med:.0%})  [{time.perf_counter() - t0:.1f} s]",
                flush=True,
            )
        model.embedding = modules["torch"]
        del model, modules, inputs
        torch.cuda.empty_cache()
    return rows, failed
