"""The main job, end to end on CPU: synthetic Criteo TSV -> preprocess -> DLRM -> AUC.

    python -m rec_common.quickstart --out quickstart-out

1. writes ``--rows`` rows of Criteo-format TSV with a planted label signal,
2. preprocesses them with the real reader (frequency threshold, so tables fit the data),
3. trains DLRM on 80% of the rows for ``--epochs`` with a progress bar,
4. prints AUC and log loss on the held-out 10% next to a constant-prediction baseline
   (the training click rate), and saves a loss curve PNG and a ``summary.json``.

Steps 1-2 are skipped on a rerun when their outputs are complete.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rec_common import metrics
from rec_common.criteo import preprocess
from rec_common.dataset import CriteoDataset
from rec_common.models import DLRM
from rec_common.synth import write_criteo_tsv


def train_dlrm(
    train,
    *,
    table_sizes,
    epochs: int,
    batch_size: int,
    lr: float,
    embedding_dim: int,
    seed: int,
    progress: bool,
) -> tuple[DLRM, list[float]]:
    torch.manual_seed(seed)
    model = DLRM(
        num_dense=13,
        table_sizes=table_sizes,
        embedding_dim=embedding_dim,
        bottom_mlp=f"13-128-64-{embedding_dim}",
        top_mlp="256-64-1",
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    steps = epochs * (len(train) // batch_size)
    # In a log (not a terminal) a bar line every 15 s instead of every step.
    every = 0.1 if sys.stderr.isatty() else 15.0
    bar = tqdm(
        total=steps, desc="train DLRM", unit="batch", disable=not progress, mininterval=every
    )
    model.train()
    for epoch in range(epochs):
        for dense, sparse, labels in train.batches(
            batch_size, shuffle=True, seed=seed + epoch, drop_last=True
        ):
            loss = loss_fn(model(dense, sparse), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    return model, losses


@torch.no_grad()
def predict(model: DLRM, data, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    probs, labels = [], []
    for dense, sparse, y in data.batches(batch_size, shuffle=False):
        probs.append(torch.sigmoid(model(dense, sparse)).numpy())
        labels.append(y.numpy())
    return np.concatenate(labels), np.concatenate(probs)


def save_loss_curve(losses: list[float], baseline_loss: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=0.5, alpha=0.35, label="batch loss")
    ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving mean ({window} batches)")
    ax.axhline(baseline_loss, color="grey", ls="--", lw=1, label="constant prediction")
    ax.set_xlabel("step")
    ax.set_ylabel("binary cross-entropy")
    ax.set_title("DLRM on synthetic Criteo (CPU)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rec_common.quickstart",
        description="Synthesize Criteo TSV, preprocess it, train DLRM on CPU, report AUC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python -m rec_common.quickstart --out quickstart-out --rows 200000",
    )
    parser.add_argument("--out", default="quickstart-out", help="working directory")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows to write")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--min-count", type=int, default=3, help="rarer categories map to id 0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error(
            f"--rows must be at least 1000 to split train/validation/test, got {args.rows}"
        )
    progress = not args.quiet
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()

    tsv = out / "criteo_synth.tsv"
    stamp = out / "criteo_synth.done.json"
    want = {"rows": args.rows, "seed": args.seed}
    if not (tsv.exists() and stamp.exists() and json.loads(stamp.read_text()) == want):
        write_criteo_tsv(tsv, args.rows, seed=args.seed, progress=progress)
        stamp.write_text(json.dumps(want))
    t_synth = time.perf_counter()
    print(f"[1/4] synthetic Criteo TSV: {tsv} ({tsv.stat().st_size / 2**20:.1f} MiB)")

    data_dir = out / "preprocessed"
    meta = preprocess([tsv], data_dir, min_count=args.min_count, progress=progress)
    t_pre = time.perf_counter()
    print(
        f"[2/4] preprocessed {meta['num_rows']:,} rows into {data_dir} in {t_pre - t_synth:.1f} s"
    )

    data = CriteoDataset(data_dir)
    train, valid, test = data.split([0.8, 0.1, 0.1])
    model, losses = train_dlrm(
        train,
        table_sizes=data.table_sizes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        embedding_dim=args.embedding_dim,
        seed=args.seed,
        progress=progress,
    )
    t_train = time.perf_counter()
    print(f"[3/4] trained DLRM for {len(losses)} steps in {t_train - t_pre:.1f} s")

    train_rate = float(np.mean(np.asarray(train.labels)))
    report = {}
    for name, split in (("validation", valid), ("test", test)):
        y, p = predict(model, split)
        const = np.full_like(p, train_rate)
        report[name] = {
            "rows": len(y),
            "auc": metrics.auc(y, p),
            "log_loss": metrics.log_loss(y, p),
            "baseline_auc": metrics.auc(y, const),
            "baseline_log_loss": metrics.log_loss(y, const),
        }
    curve = out / "loss_curve.png"
    save_loss_curve(losses, report["test"]["baseline_log_loss"], curve)
    summary = {"args": vars(args), "seconds": round(time.perf_counter() - t0, 1), **report}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    r = report["test"]
    print(
        f"[4/4] held-out test ({r['rows']:,} rows): AUC {r['auc']:.4f} (constant {r['baseline_auc']:.4f}), "
        f"log loss {r['log_loss']:.4f} (constant {r['baseline_log_loss']:.4f})"
    )
    print(f"done in {summary['seconds']:.0f} s: wrote {curve} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
