"""Benchmark result rows: one JSON object per line under ``results/<package>/<benchmark>.jsonl``.

Every row carries what it measured and where: ``package``, ``benchmark``, ``workload``,
``variant``, ``metric``, ``unit``, ``value`` (the median), ``p20``, ``p80``, ``n``, ``baseline``
and ``ratio`` (how many times better than the baseline; > 1 is better), plus the hardware
(``gpu``, ``gpus``, ``sm_count``), the versions (``torch``, ``cuda``, ``versions``), the exact
``command``, the git ``commit`` and a ``timestamp``. Workload parameters go in as extra fields.

>>> row = make_row(package="rec-common", benchmark="demo", workload="tiny", variant="torch",
...                metric="latency", unit="us", value=12.5)
>>> row["ratio"] is None and row["command"] != ""
True
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from rec_common.timing import Timing

REQUIRED_FIELDS = (
    "package", "benchmark", "workload", "variant", "metric", "unit", "value", "p20", "p80", "n",
    "baseline", "ratio", "gpu", "gpus", "sm_count", "torch", "cuda", "versions", "command",
    "commit", "timestamp",
)  # fmt: skip

_KNOWN_PACKAGES = ("rec-common", "emb-kernels", "recflex", "bagpipe", "rap-share", "rmixer")
# Throughput-like units are better when larger; everything else (time) when smaller.
_HIGHER_IS_BETTER_UNITS = ("/s", "x", "auc", "ratio", "speedup")


def higher_is_better(unit: str, metric: str = "") -> bool:
    u = unit.lower()
    return any(u.endswith(s) or u == s for s in _HIGHER_IS_BETTER_UNITS) or metric.lower() in (
        "throughput", "auc", "accuracy", "bandwidth", "speedup",
    )  # fmt: skip


def ratio(value: float, baseline_value: float, unit: str, metric: str = "") -> float:
    """How many times better ``value`` is than ``baseline_value`` (> 1 means better)."""
    if value <= 0 or baseline_value <= 0:
        raise ValueError(f"ratio needs positive values, got {value} and {baseline_value}")
    return value / baseline_value if higher_is_better(unit, metric) else baseline_value / value


@lru_cache(maxsize=1)
def hardware() -> dict:
    """GPU name, GPU count and SM count (``cpu`` and zeros without CUDA), torch and CUDA versions."""
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, gpus=torch.cuda.device_count(), sm_count=props.multi_processor_count
        )
    else:
        import platform

        info.update(gpu="cpu", gpus=0, sm_count=0, cpu=platform.processor() or platform.machine(),
                    cpu_count=os.cpu_count())  # fmt: skip
    return info


def package_versions() -> dict:
    """Versions of our packages that import here: installed metadata, else ``__about__``
    (a source checkout on PYTHONPATH, as on the GPU machine, has no metadata)."""
    import importlib
    from importlib import metadata

    out = {}
    for dist in _KNOWN_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
            continue
        except metadata.PackageNotFoundError:
            pass
        try:
            about = importlib.import_module(dist.replace("-", "_") + ".__about__")
        except ImportError:
            continue
        out[dist] = getattr(about, "__version__", "unknown")
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """``GIT_COMMIT`` when set (the GPU machine's copy of the tree may carry a stale ``.git``),
    else the checkout's commit (with ``-dirty`` when it has changes), or None outside git."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("GIT_COMMIT")
    return sha + ("-dirty" if dirty else "")


def current_command() -> str:
    """The command line that started this process, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", ".py")) and "-m" not in argv:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            name = spec.name.removesuffix(".__main__")
            return shlex.join(["python", "-m", name, *argv[1:]])
    return shlex.join(["python", *argv])


def make_row(
    *,
    package: str,
    benchmark: str,
    workload: str,
    variant: str,
    metric: str,
    unit: str,
    value: float | None = None,
    timing: Timing | None = None,
    p20: float | None = None,
    p80: float | None = None,
    n: int | None = None,
    baseline: str | None = None,
    baseline_value: float | None = None,
    command: str | None = None,
    **params,
) -> dict:
    """One result row; pass either ``value`` (+ optional p20/p80/n) or a :class:`Timing`.

    ``baseline`` names the variant compared against, and ``baseline_value`` its value in the
    same unit, from which ``ratio`` is computed (> 1 means this variant is better).
    """
    if timing is not None:
        if value is not None:
            raise ValueError("pass either value or timing, not both")
        value, p20, p80, n = timing.median, timing.p20, timing.p80, timing.n
    if value is None:
        raise ValueError("a result row needs a value (or a timing)")
    if (baseline is None) != (baseline_value is None) and baseline_value is not None:
        raise ValueError("baseline_value given without naming the baseline variant")
    row = {
        "package": package,
        "benchmark": benchmark,
        "workload": workload,
        "variant": variant,
        "metric": metric,
        "unit": unit,
        "value": float(value),
        "p20": None if p20 is None else float(p20),
        "p80": None if p80 is None else float(p80),
        "n": n,
        "baseline": baseline,
        "ratio": None
        if baseline_value is None
        else ratio(float(value), float(baseline_value), unit, metric),
    }
    hw = hardware()
    row.update({k: hw[k] for k in ("gpu", "gpus", "sm_count", "torch", "cuda")})
    row["versions"] = package_versions()
    row["command"] = command if command is not None else current_command()
    row["commit"] = git_commit()
    row["timestamp"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for k, v in params.items():
        if k in row:
            raise ValueError(f"workload parameter {k!r} clashes with a standard result field")
        row[k] = v
    return row


# Fields that describe a measurement, not what was measured: never used to match rows.
_VOLATILE = (
    "variant",
    "value",
    "p20",
    "p80",
    "n",
    "baseline",
    "ratio",
    "timestamp",
    "command",
    "commit",
    "versions",
    "torch",
    "cuda",
    "gpu",
    "gpus",
    "sm_count",
    "package",
)


def add_ratios(rows: list[dict], baseline: str, on: Sequence[str] | None = None) -> list[dict]:
    """Fill ``baseline``/``ratio`` of each row from the matching row of variant ``baseline``.

    Rows match when ``on`` fields (default: benchmark, workload, metric, unit) are equal and,
    when ``on`` is None, every other parameter present in *both* rows is equal too, so a
    variant's own knobs (``regcap``, ``prefetch``) do not stop it matching the baseline row.
    Among several matches the one sharing the most parameters wins; a tie leaves the row alone.
    """
    fixed = tuple(on) if on is not None else ("benchmark", "workload", "metric", "unit")
    skip = set(_VOLATILE) | set(fixed)

    def params(r):
        return {k: json.dumps(v, sort_keys=True) for k, v in r.items() if k not in skip}

    bases: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["variant"] == baseline:
            bases.setdefault(tuple(json.dumps(r.get(k)) for k in fixed), []).append(r)
    for r in rows:
        if r["variant"] == baseline:
            continue
        cands = bases.get(tuple(json.dumps(r.get(k)) for k in fixed), [])
        if on is None:
            mine = params(r)
            scored = []
            for b in cands:
                theirs = params(b)
                shared = mine.keys() & theirs.keys()
                if all(mine[k] == theirs[k] for k in shared):
                    scored.append((len(shared), b))
            scored.sort(key=lambda t: -t[0])
            if not scored or (len(scored) > 1 and scored[0][0] == scored[1][0]):
                continue
            b = scored[0][1]
        elif len(cands) == 1:
            b = cands[0]
        else:
            continue
        r["baseline"] = baseline
        r["ratio"] = ratio(r["value"], b["value"], r["unit"], r["metric"])
    return rows


def check_row(row: Mapping) -> None:
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        raise ValueError(f"result row lacks the fields {missing} (see rec_common.results)")


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping]) -> Path:
    """Append rows to a JSON-lines file (directories created); returns the path."""
    rows = list(rows)
    for r in rows:
        check_row(r)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON-lines file; a malformed line is an error naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{i}: not a JSON object ({exc})") from None
    return rows


def default_path(package: str, benchmark: str, root: str | os.PathLike = "results") -> Path:
    return Path(root) / package / f"{benchmark}.jsonl"
