"""Predicted latency of a fused kernel, and the latency budget of each training stage.

The kernel model follows RAP: one regressor per op group (:data:`GROUPS`) trained on the
standalone latency of fused kernels at the reference batch (4096 rows); features are
``[op index, fuse degree, per-column width]`` (for the 1-D group ``[op index, degree * width,
1]``), with the width transformed per op (firstx -> min(w, x), ngram -> (w - n' + 1) * n',
onehot -> num_classes). Other batch sizes scale linearly: ``lat(B) = lat(4096) * (w0 * r + w1)``
with ``r = B / 4096`` and ``(w0, w1)`` fitted per op from the profile.

The default backend, ``nnls``, is one small model per op fitted on every profiled batch:
``lat = a + b * degree + c * values + d * degree * rows`` (launch overhead, per-column
work, per-value bandwidth, per-row work; ``values = degree * width' * rows``), coefficients
kept >= 0 and fitted for *relative* error with an L1-like reweighting, because RAP's metric
is the share within +-10 %. On the committed H200 profile (host-bound fused launches, noisy
at --quick's 8 iterations) it scores 64 % of a 20 % held-out split against 35 % for the
per-group log-space regressors with linear batch scaling (``lstsq``) and 54 % for xgboost
on the same features. ``xgboost`` (``reg:squarederror``, depth 5, lr 0.05, <= 300 rounds,
early stop 10) and ``lstsq`` remain selectable; :attr:`CostModel.backend` says which.
Accuracy is the share of held-out predictions within +-10 % (RAP's metric), per op group
(:attr:`CostModel.accuracy`) and over all held-out rows (:attr:`CostModel.held_out`).

Stage budgets come from the profile's capacity measurement (:mod:`rap_share.profile`) and
must be positive (:func:`stage_budgets_from_profile`, :meth:`CostModel.stage_budgets`). With
no profile at all, :func:`analytic_model` gives a bandwidth + launch-overhead estimate and the
paper's A100 stage times, and says it is a fallback.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rap_share.constants import A100_STAGE_MS, REF_BATCH, STAGES
from rap_share.ops import OP_NAMES, spec

GROUPS = ("1d", "bucketize", "firstx", "ngram", "onehot")
BACKENDS = ("nnls", "xgboost", "lstsq")
HELD_OUT = 0.2  # share of a profile's kernel rows kept out of the fit and scored
BUDGET_SOURCES = ("stretch", "idle")  # where stage budgets come from (see fit)
IDLE_SHARE = 0.5  # the share of a stage's idle GPU time the schedule may fill
MIN_BUDGET_MS = 1e-3  # a stage with no idle time keeps a token budget (budgets must be > 0)
PROFILE_DIR = Path(__file__).parent / "profiles"


def cost_width(op: str, params: dict, width: float) -> float:
    """The width feature of an op (see module docstring)."""
    if op == "firstx":
        return float(min(width, params.get("x", width)))
    if op == "ngram":
        n = min(params.get("n", 1), width)
        return float((width - n + 1) * n)
    if op == "onehot":
        return float(params.get("num_classes", width))
    return float(width)


def features(op: str, degree: int, width: float) -> list[float]:
    if spec(op).group == "1d":
        return [float(OP_NAMES.index(op)), float(degree) * float(width), 1.0]
    return [float(OP_NAMES.index(op)), float(degree), float(width)]


def within(pred: np.ndarray, true: np.ndarray, tol: float = 0.10) -> float:
    """Share of predictions within +-tol relative error."""
    if len(true) == 0:
        return float("nan")
    return float(np.mean(np.abs(pred - true) <= tol * np.abs(true)))


@dataclass
class CostModel:
    """Kernel latency (ms) and stage budgets (ms) for one GPU type."""

    backend: str  # "nnls" | "xgboost" | "lstsq" | "analytic"
    device: str
    models: dict = field(default_factory=dict)  # group -> serialized model
    scaling: dict = field(default_factory=dict)  # op -> [w0, w1]
    stage_ms: dict = field(default_factory=dict)  # stage -> base latency at stage_batch
    capacity_ms: dict = field(default_factory=dict)  # stage -> budget (ms) at stage_batch
    # stages whose budget is a measured capacity point; the others' budgets are extrapolated
    # from a probe that already stretched the stage, and the schedule fills them last
    measured_stages: list = field(default_factory=list)
    stage_batch: int = REF_BATCH
    accuracy: dict = field(default_factory=dict)  # group -> share within 10 %
    held_out: dict = field(default_factory=dict)  # {"within_10pct", "n", "median_rel_err"}
    note: str = ""
    _boosters: dict = field(default_factory=dict, repr=False)
    unprofiled: set = field(default_factory=set, repr=False)  # ops costed analytically

    # ------------------------------------------------------------------ predict
    def kernel_ms(
        self, op: str, degree: int, width: float, rows: int, params: dict | None = None
    ) -> float:
        """Predicted latency (ms) of one fused launch of ``op`` over ``degree`` columns."""
        if degree <= 0:
            return 0.0
        w = cost_width(op, params or {}, width)
        if self.backend == "analytic":
            return _analytic_ms(op, degree, w, rows)
        if self.backend == "nnls":
            if op not in self.models:
                self.unprofiled.add(op)
                return _analytic_ms(op, degree, w, rows)
            x = np.array(nnls_features(degree, w, rows))
            return max(float(x @ np.array(self.models[op])), 1e-4)
        if spec(op).group not in self.models:  # op group never profiled: say so, estimate
            self.unprofiled.add(op)
            return _analytic_ms(op, degree, w, rows)
        base = float(self._predict_ref(spec(op).group, np.array([features(op, degree, w)]))[0])
        w0, w1 = self.scaling.get(op, (1.0, 0.0))
        return max(base * (w0 * rows / REF_BATCH + w1), 1e-4)

    def _predict_ref(self, group: str, x: np.ndarray) -> np.ndarray:
        if group not in self.models:
            raise KeyError(f"cost model has no regressor for op group {group!r} (profile it)")
        m = self.models[group]
        if self.backend == "xgboost":
            bst = self._boosters.get(group)
            if bst is None:
                import xgboost as xgb

                bst = xgb.Booster()
                bst.load_model(bytearray(base64.b64decode(m)))
                self._boosters[group] = bst
            import xgboost as xgb

            return np.exp(bst.predict(xgb.DMatrix(x)))
        coef = np.array(m)
        return np.exp(_design(x) @ coef)

    def stage_budgets(self, batch: int) -> dict[str, float]:
        """Budget (ms) of each stage at per-GPU batch ``batch`` (linear in batch).

        Raises ValueError when a budget is missing, zero, negative or not finite: packing
        against it would silently overflow every kernel into the last stage."""
        check_budgets(self.capacity_ms, f"cost model of {self.device}")
        r = batch / self.stage_batch
        return {s: self.capacity_ms[s] * r for s in STAGES}

    def stage_times(self, batch: int) -> dict[str, float]:
        r = batch / self.stage_batch
        return {s: self.stage_ms.get(s, 0.0) * r for s in STAGES}

    # ------------------------------------------------------------------ io
    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in (
            "backend", "device", "models", "scaling", "stage_ms", "capacity_ms",
            "measured_stages", "stage_batch", "accuracy", "held_out", "note")}  # fmt: skip

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> CostModel:
        d = json.loads(Path(path).read_text())
        if d.get("backend") == "xgboost":
            try:
                import xgboost  # noqa: F401
            except ImportError:
                raise ImportError(
                    f"{path}: this cost model was trained with xgboost, which is not installed; "
                    "pip install 'rap-share[costmodel]', or refit with python -m "
                    "rap_share.costmodel fit PROFILE --backend lstsq"
                ) from None
        return cls(**d)


def check_budgets(budgets: dict, where: str) -> None:
    """Raise ValueError naming every stage whose budget is missing, <= 0 or not finite."""
    bad = {s: budgets.get(s) for s in STAGES}
    bad = {s: v for s, v in bad.items() if not (isinstance(v, (int, float)) and math.isfinite(v)
                                                 and v > 0)}  # fmt: skip
    if bad:
        raise ValueError(
            f"{where}: stage budgets must be positive finite ms, got "
            + ", ".join(f"{s}={v!r}" for s, v in bad.items())
            + " (re-profile with python -m rap_share.profile, or plan with the analytic fallback)"
        )


def _stage_base(stages: dict, s: str) -> tuple[dict, float]:
    """A profile stage's entry and its base time; ValueError if missing or not positive."""
    st = stages.get(s)
    if st is None:
        raise ValueError(f"profile stages: stage {s!r} is missing (have {sorted(stages)})")
    base = st.get("base_ms", 0.0)
    if not (base > 0 and math.isfinite(base)):
        raise ValueError(f"profile stages: {s} base_ms must be > 0, got {base!r}")
    return st, base


def stage_budgets_from_profile(stages: dict) -> dict[str, float]:
    """Budget (ms) per stage from a profile's ``stages`` entry.

    A stage whose smallest probe already stretched it by >= 5 % has no measured capacity
    point; its budget is then interpolated linearly from zero: the probe's latency scaled by
    ``0.05 * base / (stage_ms - base)`` (the probe size at which the stretch would be 5 %).
    Raises ValueError when a stage is missing or has no positive base time or co-run."""
    from rap_share.constants import CAPACITY_STRETCH

    out = {}
    for s in STAGES:
        st, base = _stage_base(stages, s)
        if st.get("capacity_ms", 0.0) > 0:
            out[s] = float(st["capacity_ms"])
            continue
        runs = [c for c in st.get("corun", []) if c.get("probe_ms", 0) > 0]
        if not runs:
            raise ValueError(f"profile stages: {s} has no capacity and no co-run measurement")
        first = min(runs, key=lambda c: c["units"])
        extra = first["stage_ms"] - base
        out[s] = float(first["probe_ms"]) * (
            1.0 if extra <= 0 else min(1.0, CAPACITY_STRETCH * base / extra)
        )
    check_budgets(out, "profile stages")
    return out


def nnls_features(degree: int, width: float, rows: int) -> list[float]:
    """``[1, degree, values / 1e6, degree * rows / 1e6]`` of the nnls backend."""
    return [1.0, float(degree), degree * max(width, 1.0) * rows / 1e6, degree * rows / 1e6]


def _nnls_rel(a: np.ndarray, y: np.ndarray, rounds: int = 30) -> np.ndarray:
    """Coefficients >= 0 minimizing relative error ~ L1 (reweighted), by active-set lstsq."""
    ar = a / y[:, None]
    wt = np.ones(len(y))
    coef = np.zeros(a.shape[1])
    for _ in range(rounds):
        active = list(range(a.shape[1]))
        while True:
            c = np.zeros(a.shape[1])
            sol, *_ = np.linalg.lstsq(ar[:, active] * wt[:, None], wt, rcond=None)
            c[active] = sol
            if (sol >= 0).all() or len(active) == 1:
                c = np.maximum(c, 0.0)
                break
            active.pop(int(np.argmin(sol)))
        coef = c
        wt = 1.0 / np.sqrt(np.maximum(np.abs(ar @ coef - 1.0), 0.02))
    return coef


def _design(x: np.ndarray) -> np.ndarray:
    """Least-squares features: per-op intercepts and slopes on log(degree), log(width)."""
    n_ops = len(OP_NAMES)
    op = x[:, 0].astype(int)
    ld, lw = np.log(np.maximum(x[:, 1], 1e-9)), np.log(np.maximum(x[:, 2], 1e-9))
    cols = []
    for o in range(n_ops):
        m = (op == o).astype(float)
        cols += [m, m * ld, m * lw, m * ld * lw, m * ld * ld]
    return np.stack(cols, 1)


def _analytic_ms(op: str, degree: int, width: float, rows: int) -> float:
    """Fallback: ~6 launches of 5 us plus 24 bytes per value at 1 TB/s."""
    values = degree * max(width, 1.0) * rows
    launches = 6 if spec(op).elementwise else 12
    return launches * 0.005 + values * 24 / 1e12 * 1e3


def analytic_model() -> CostModel:
    """The no-profile fallback: analytic kernel costs, the paper's A100 stage times, and a
    budget of half of each stage (the artifact measured 50-100 % spare in most stages)."""
    return CostModel(
        backend="analytic", device="analytic (no profile)",
        stage_ms=dict(A100_STAGE_MS), capacity_ms={s: v * 0.5 for s, v in A100_STAGE_MS.items()},
        note="analytic fallback: no profile of this GPU; run python -m rap_share.profile",
    )  # fmt: skip


# ---------------------------------------------------------------------- fitting
def fit(profile: dict, backend: str | None = None, seed: int = 0,
        budgets: str = "stretch") -> CostModel:  # fmt: skip
    """Train the kernel regressors and batch scaling from a profile dict (profile.json).
    ``budgets``: the stage budgets from the co-run stretch test (``stretch``) or from each
    stage's idle GPU time (``idle``, :func:`stage_budgets_from_idle`)."""
    if budgets not in BUDGET_SOURCES:
        raise ValueError(f"budgets: expected one of {BUDGET_SOURCES}, got {budgets!r}")
    rows = profile.get("kernels", [])
    if not rows:
        raise ValueError("the profile has no kernel measurements ('kernels' is empty)")
    backend = backend or "nnls"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "nnls":
        return _fit_nnls(profile, rows, seed, budgets)
    ref = [r for r in rows if r["batch"] == REF_BATCH]
    if not ref:
        raise ValueError(f"the profile has no kernels measured at the reference batch {REF_BATCH}")
    rng = np.random.default_rng(seed)
    cm = CostModel(backend=backend, device=profile.get("device", "?"))
    for group in GROUPS:
        g = [r for r in ref if spec(r["op"]).group == group]
        if not g:
            continue
        x = np.array(
            [
                features(r["op"], r["degree"], cost_width(r["op"], r["params"], r["width"]))
                for r in g
            ]
        )
        y = np.log(np.array([r["ms"] for r in g]))
        idx = rng.permutation(len(g))
        n_test = max(1, len(g) // 10) if len(g) >= 10 else 0
        test, train = idx[:n_test], idx[n_test:]
        if backend == "xgboost":
            import xgboost as xgb

            dtrain = xgb.DMatrix(x[train], label=y[train])
            evals = [(xgb.DMatrix(x[test], label=y[test]), "test")] if n_test else []
            bst = xgb.train(
                {"objective": "reg:squarederror", "max_depth": 5, "eta": 0.05, "seed": seed,
                 "nthread": 2},
                dtrain, num_boost_round=300, evals=evals,
                early_stopping_rounds=10 if evals else None, verbose_eval=False,
            )  # fmt: skip
            if evals:  # keep exactly the rounds early stopping chose
                bst = bst[: bst.best_iteration + 1]
            cm.models[group] = base64.b64encode(bytes(bst.save_raw("ubj"))).decode()
        else:
            coef, *_ = np.linalg.lstsq(_design(x[train]), y[train], rcond=None)
            cm.models[group] = coef.tolist()
        if n_test:
            pred = cm._predict_ref(group, x[test])
            cm.accuracy[group] = within(pred, np.exp(y[test]))
    cm.scaling = _fit_scaling(rows)
    return _add_stages(cm, profile, budgets)


def stage_budgets_from_idle(stages: dict, share: float = IDLE_SHARE) -> dict[str, float]:
    """Budget (ms) per stage: ``share`` of the GPU time the stage leaves idle, ``base_ms -
    busy_ms`` (:mod:`rap_share.stagetrace`), at least ``MIN_BUDGET_MS``. For a host-paced
    step, where the co-run stretch is mostly host jitter (docs/rap-share/figures.md).
    Raises ValueError naming a stage without ``busy_ms`` (profiles made before 2026-12-01, or
    on a CPU) or with a base time that is not positive."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    out = {}
    for s in STAGES:
        st, base = _stage_base(stages, s)
        busy = st.get("busy_ms")
        if busy is None or not (busy >= 0 and math.isfinite(busy)):
            raise ValueError(
                f"profile stages: {s} has no busy_ms (got {busy!r}); profile on a CUDA GPU "
                "with python -m rap_share.profile, or use --budgets stretch"
            )
        out[s] = max(share * (base - busy), MIN_BUDGET_MS)
    return out


def _add_stages(cm: CostModel, profile: dict, budgets: str = "stretch") -> CostModel:
    """Stage times and budgets from the profile (``budgets`` as :func:`fit` checked it)."""
    st = profile.get("stages", {})
    cm.stage_batch = int(profile.get("stage_batch", REF_BATCH))
    if not st:
        fb = analytic_model()
        cm.stage_ms, cm.capacity_ms = fb.stage_ms, fb.capacity_ms
        cm.note = "no stage capacity in the profile: stage budgets are the analytic fallback"
        return cm
    cm.stage_ms = {s: st[s]["base_ms"] for s in st}
    if budgets == "idle":
        cm.capacity_ms = stage_budgets_from_idle(st)
        cm.measured_stages = list(STAGES)
    else:
        cm.capacity_ms = stage_budgets_from_profile(st)
        cm.measured_stages = [s for s in STAGES if st[s].get("capacity_ms", 0.0) > 0]
    return cm


def _fit_nnls(profile: dict, rows: list[dict], seed: int, budgets: str = "stretch") -> CostModel:
    """Per-op nnls fit on all batches; HELD_OUT of the rows scored, per group and overall."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(rows))
    n_test = int(len(rows) * HELD_OUT) if len(rows) >= 10 else 0
    test = set(idx[:n_test].tolist())
    cm = CostModel(backend="nnls", device=profile.get("device", "?"))
    train = [r for i, r in enumerate(rows) if i not in test]
    for op in sorted({r["op"] for r in rows}):
        mine = [r for r in train if r["op"] == op] or [r for r in rows if r["op"] == op]
        a = np.array([nnls_features(r["degree"], cost_width(op, r["params"], r["width"]),
                                    r["batch"]) for r in mine])  # fmt: skip
        cm.models[op] = _nnls_rel(a, np.array([r["ms"] for r in mine])).tolist()
    held = [rows[i] for i in sorted(test)]
    if held:
        ev = evaluate(cm, {"kernels": held})
        cm.held_out = ev
        for group in GROUPS:
            g = [r for r in held if spec(r["op"]).group == group]
            if g:
                cm.accuracy[group] = evaluate(cm, {"kernels": g})["within_10pct"]
    return _add_stages(cm, profile, budgets)


def _fit_scaling(rows: list[dict]) -> dict[str, list[float]]:
    """Per op, least squares of lat(B)/lat(4096) on r = B/4096 over matching configs."""
    base = {(r["op"], r["degree"], r["width"]): r["ms"] for r in rows if r["batch"] == REF_BATCH}
    out = {}
    for op in OP_NAMES:
        rs, ys = [], []
        for r in rows:
            b = base.get((op, r["degree"], r["width"])) if r["op"] == op else None
            if b:
                rs.append(r["batch"] / REF_BATCH)
                ys.append(r["ms"] / b)
        if len(set(rs)) >= 2:
            a = np.stack([np.array(rs), np.ones(len(rs))], 1)
            w, *_ = np.linalg.lstsq(a, np.array(ys), rcond=None)
            out[op] = [float(w[0]), float(w[1])]
        else:
            out[op] = [1.0, 0.0]
    return out


def evaluate(cm: CostModel, profile: dict) -> dict:
    """Share within +-10 % of predictions for every kernel row of a profile (all batches)."""
    pred = np.array([cm.kernel_ms(r["op"], r["degree"], r["width"], r["batch"], r["params"])
                     for r in profile["kernels"]])  # fmt: skip
    true = np.array([r["ms"] for r in profile["kernels"]])
    return {
        "within_10pct": within(pred, true),
        "n": len(true),
        "median_rel_err": float(np.median(np.abs(pred - true) / true)) if len(true) else math.nan,
    }


def default_model(device_name: str | None = None) -> CostModel:
    """The shipped model for this GPU (matched by name) if the package has one, else one
    fitted now from a shipped ``<gpu>.profile.json``, else :func:`analytic_model`."""
    if device_name is None:
        import torch

        device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    slug = device_name.lower().replace(" ", "-")
    if PROFILE_DIR.is_dir():
        for p in sorted(PROFILE_DIR.glob("*.model.json")):
            if p.name.removesuffix(".model.json") in slug:
                try:
                    return CostModel.load(p)
                except ImportError:
                    continue  # an xgboost model without xgboost: refit from the profile
        for p in sorted(PROFILE_DIR.glob("*.profile.json")):
            if p.name.removesuffix(".profile.json") in slug:
                cm = fit(json.loads(p.read_text()))
                cm.note = f"fitted at load time from {p.name}"
                return cm
    return analytic_model()


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m rap_share.costmodel fit|evaluate``: (re)fit a profile, or score a model."""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m rap_share.costmodel", description=main.__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example:\n  python -m rap_share.costmodel fit prof/profile.json --out "
        "src/rap_share/profiles/nvidia-h200.model.json\n  python -m rap_share.costmodel evaluate "
        "prof/profile.json --model prof/nvidia-h200.model.json",
    )  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser(
        "fit",
        help="train the regressors of a profile",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    f.add_argument("profile")
    f.add_argument("--out", required=True, help="model JSON to write")
    f.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                   help="auto = nnls")  # fmt: skip
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--budgets", choices=BUDGET_SOURCES, default="stretch",
                   help="stage budgets from the co-run stretch test, or half of each stage's "
                        "idle GPU time (profiles with busy_ms, made on CUDA since 2026-12-01)")  # fmt: skip
    e = sub.add_parser(
        "evaluate",
        help="share of a profile's kernels predicted within 10 %%",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("profile")
    e.add_argument("--model", required=True)
    args = p.parse_args(argv)
    try:
        prof = json.loads(Path(args.profile).read_text())
        if args.cmd == "fit":
            cm = fit(prof, None if args.backend == "auto" else args.backend, args.seed,
                     args.budgets)  # fmt: skip
            cm.note = f"fit on {cm.device}; held-out within 10 %: " + ", ".join(
                f"{g} {a:.0%}" for g, a in cm.accuracy.items())  # fmt: skip
            if args.budgets == "idle":
                cm.note += f"; stage budgets: {IDLE_SHARE:.0%} of each stage's idle GPU time"
            cm.save(args.out)
            print(f"{cm.backend} model of {cm.device}: held-out within 10 %: "
                  + ", ".join(f"{g} {a:.0%}" for g, a in cm.accuracy.items())
                  + f"; wrote {args.out}")  # fmt: skip
        else:
            cm = CostModel.load(args.model)
            ev = evaluate(cm, prof)
            print(json.dumps(ev | {"accuracy_held_out": cm.accuracy, "held_out": cm.held_out,
                                   "backend": cm.backend}))  # fmt: skip
    except (OSError, ValueError, KeyError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
