"""What the scheduler knows about a job: memory estimate, compute intensity and class, and
standalone speed, per device kind, from the profile cache written by ``python -m rmixer.profile``.

A profile entry is measured, never typed in: per (config, device kind) it holds the
per-iteration time, the set-up time, the measured peak memory beside the analytic estimate,
and the intensity (device busy %, see :mod:`rmixer.profile`). A job whose exact config was
not profiled borrows the mean correction and intensity of profiled configs of the same model;
failing that it gets the analytic estimate and intensity 0 ("low"), and its knowledge says so
(``source``), which the server logs.

Profiles are taken alone; a job placed beside others runs slower. :meth:`Knowledge.record_corun`
keeps, per device kind, the ratio of observed to predicted duration of the jobs that finished
there, and :meth:`Knowledge.corun_slowdown` (their median, 1.0 before any) corrects the
predictions that decide placement (the CPU gate). They are saved with the profiles, so a later
run starts from them.

>>> k = Knowledge({})
>>> from rmixer.configs import normalize
>>> info = k.info(normalize({"model": "deepfm", "batch_size": 64, "rows": 100}, "d"), "cpu")
>>> info.source, info.klass, info.mem_mb > 0
('analytic', 'low', True)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rmixer import constants
from rmixer.configs import config_key
from rmixer.memory import estimate


def default_cache() -> Path:
    env = os.environ.get("RMIXER_PROFILES")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmixer" / "profiles.json"


def classify(intensity: float, peak_mb: float, compute_high: float = constants.COMPUTE_HIGH_PCT,
             memory_high: float = constants.MEMORY_HIGH_MB) -> str:  # fmt: skip
    """The artifact's three classes: compute first, then memory, else low.

    >>> classify(60, 100), classify(10, 9000), classify(10, 100)
    ('compute', 'memory', 'low')
    """
    if intensity >= compute_high:
        return "compute"
    if peak_mb >= memory_high:
        return "memory"
    return "low"


def device_kind(device: str) -> str:
    """``"cuda"`` for ``cuda:i`` devices, else ``"cpu"``."""
    return "cuda" if device.startswith("cuda") else "cpu"


@dataclass(frozen=True)
class JobInfo:
    """Knowledge of one job on one device kind."""

    key: str
    model: str
    mem_mb: float  # corrected peak estimate, before the dispatch margin
    analytic_mb: float
    intensity: float  # device busy %, 0..100
    klass: str
    iter_s: float | None  # standalone seconds per iteration, None when not profiled
    setup_s: float | None  # process start to first iteration, standalone
    source: str  # "profile", "model-profile" (same model, other config) or "analytic"

    def standalone_s(self, iterations: int) -> float | None:
        if self.iter_s is None:
            return None
        return (self.setup_s or 0.0) + iterations * self.iter_s

    def as_dict(self) -> dict:
        return asdict(self)


class Knowledge:
    """Profile entries keyed ``"<kind>/<config key>"``; see :func:`load`."""

    def __init__(self, entries: dict[str, dict], path: Path | None = None) -> None:
        self.entries = dict(entries)
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Knowledge:
        path = Path(path) if path is not None else default_cache()
        if not path.exists():
            return cls({}, path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: the profile cache is not valid JSON ({exc}); "
                             "delete it and run python -m rmixer.profile again") from None  # fmt: skip
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise ValueError(f"{path}: expected {{'entries': {{...}}}} in the profile cache")
        return cls(data["entries"], path)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        path = Path(path) if path is not None else (self.path or default_cache())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".profiles-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"entries": self.entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        self.path = path
        return path

    def put(self, kind: str, entry: dict) -> None:
        self.entries[f"{kind}/{entry['key']}"] = entry

    def get(self, kind: str, key: str) -> dict | None:
        return self.entries.get(f"{kind}/{key}")

    def record_corun(self, kind: str, observed_s: float, predicted_s: float | None) -> None:
        """One finished job on ``kind``: its observed duration against the standalone
        prediction (ignored without a prediction). The last CORUN_KEEP ratios are kept."""
        if not predicted_s or predicted_s <= 0 or observed_s <= 0:
            return
        e = self.entries.get(f"corun/{kind}") or {"key": kind, "ratios": []}
        ratios = [*e["ratios"], round(observed_s / predicted_s, 4)][-constants.CORUN_KEEP :]
        self.entries[f"corun/{kind}"] = {"key": kind, "ratios": ratios}

    def corun_slowdown(self, kind: str) -> float:
        """Median observed / predicted duration of the jobs finished on ``kind``, at least
        1.0 (1.0 before any)."""
        ratios = sorted((self.entries.get(f"corun/{kind}") or {}).get("ratios", []))
        if not ratios:
            return 1.0
        mid = len(ratios) // 2
        med = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
        return max(1.0, med)

    def info(self, cfg: dict, kind: str) -> JobInfo:
        """Knowledge of config ``cfg`` on device kind ``kind`` (``"cuda"`` or ``"cpu"``)."""
        key = config_key(cfg)
        analytic = estimate(cfg, kind).total_mb
        entry = self.get(kind, key)
        if entry is not None:
            return JobInfo(key, cfg["model"], max(analytic * entry["correction"], 1.0), analytic,
                           entry["intensity"], entry["klass"], entry["iter_s"], entry["setup_s"],
                           "profile")  # fmt: skip
        same = [e for k, e in self.entries.items()
                if k.startswith(f"{kind}/") and e.get("model") == cfg["model"]]  # fmt: skip
        if same:
            corr = sum(e["correction"] for e in same) / len(same)
            inten = sum(e["intensity"] for e in same) / len(same)
            mem = analytic * corr
            return JobInfo(key, cfg["model"], mem, analytic, inten, classify(inten, mem), None,
                           None, "model-profile")  # fmt: skip
        return JobInfo(key, cfg["model"], analytic, analytic, 0.0, classify(0.0, analytic), None,
                       None, "analytic")  # fmt: skip
