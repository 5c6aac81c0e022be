"""Model configs: which rec-common model a job trains, how big, on what synthetic data.

A config is a flat mapping (a YAML or JSON file, or a dict inside a YAML task file)::

    model: dlrm            # dlrm | dcn | deepfm | widedeep | din
    batch_size: 512
    num_tables: 26         # sparse features
    rows: 100000           # rows per table (an int, or one per table)
    embedding_dim: 16
    bottom_mlp: 512-256-16 # model-specific keys, see MODEL_KEYS
    top_mlp: 512-256-1

Unknown keys are errors (a typo must not silently train the default). :func:`config_key`
hashes the normalized config, so two files with the same content share one profile.

>>> cfg = normalize({"model": "deepfm", "batch_size": 64, "rows": 100}, "demo")
>>> cfg["deep_mlp"], cfg["num_tables"]
('400-400-1', 26)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

COMMON = {
    "model": None,
    "batch_size": 512,
    "num_dense": 13,
    "num_tables": 26,
    "rows": 100_000,
    "embedding_dim": 16,
    "pooling": 1,  # ids per bag
    "optimizer": "sgd",  # sgd | adam | adagrad
    "lr": 0.01,
    "iterations": 500,  # default when the task does not say
}
MODEL_KEYS: dict[str, dict[str, Any]] = {
    "dlrm": {"bottom_mlp": "512-256-16", "top_mlp": "512-256-1"},
    "dcn": {"num_cross_layers": 3, "low_rank": None, "deep_mlp": "512-256"},
    "deepfm": {"deep_mlp": "400-400-1"},
    "widedeep": {"deep_mlp": "256-128-1"},
    "din": {
        "seq_len": 50,
        "num_items": 100_000,
        "item_dim": 32,
        "attention_mlp": "80-40",
        "deep_mlp": "200-80-1",
    },
}
MODELS = tuple(MODEL_KEYS)
OPTIMIZERS = ("sgd", "adam", "adagrad")
_INT_KEYS = ("batch_size", "num_dense", "num_tables", "embedding_dim", "pooling", "iterations",
             "num_cross_layers", "seq_len", "num_items", "item_dim")  # fmt: skip


class ConfigError(ValueError):
    """A model config that cannot be used; the message names the source and the key."""


def normalize(raw: dict, source: str = "config") -> dict:
    """Defaults filled in, types checked; raises :class:`ConfigError` naming ``source``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a model config must be a mapping, got {type(raw).__name__}")
    model = raw.get("model")
    if model not in MODEL_KEYS:
        raise ConfigError(f"{source}: 'model' must be one of {list(MODELS)}, got {model!r}")
    allowed = {**COMMON, **MODEL_KEYS[model]}
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown} for model {model!r}; allowed: {sorted(allowed)}"
        )
    cfg = {**allowed, **raw}
    for key in _INT_KEYS:
        if key in cfg and cfg[key] is not None:
            v = cfg[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{source}: {key!r} must be a positive integer, got {v!r}")
    rows = cfg["rows"]
    if isinstance(rows, int) and not isinstance(rows, bool):
        if rows < 1:
            raise ConfigError(f"{source}: 'rows' must be >= 1, got {rows}")
    elif isinstance(rows, list):
        if len(rows) != cfg["num_tables"] or not all(
            isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rows
        ):
            raise ConfigError(
                f"{source}: 'rows' as a list needs {cfg['num_tables']} positive integers "
                f"(one per table), got {rows!r}"
            )
    else:
        raise ConfigError(f"{source}: 'rows' must be an int or a list of ints, got {rows!r}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise ConfigError(
            f"{source}: 'optimizer' must be one of {list(OPTIMIZERS)}, got {cfg['optimizer']!r}"
        )
    lr = cfg["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"{source}: 'lr' must be a positive number, got {lr!r}")
    if model == "dcn" and cfg["low_rank"] is not None:
        lr_ = cfg["low_rank"]
        if isinstance(lr_, bool) or not isinstance(lr_, int) or lr_ < 1:
            raise ConfigError(
                f"{source}: 'low_rank' must be a positive integer or null, got {lr_!r}"
            )
    return cfg


def table_sizes(cfg: dict) -> list[int]:
    rows = cfg["rows"]
    return list(rows) if isinstance(rows, list) else [int(rows)] * cfg["num_tables"]


def config_key(cfg: dict) -> str:
    """Short stable hash of a normalized config, without ``iterations`` (it does not change
    per-iteration cost or memory)."""
    body = {k: v for k, v in cfg.items() if k != "iterations"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return f"{cfg['model']}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def read_mapping(path: str | os.PathLike) -> Any:
    """A JSON file, or YAML (``.yaml``/``.yml``, needs pyyaml)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"{path}: reading YAML needs pyyaml (pip install pyyaml); or write the file as JSON"
            ) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def builtin_dir() -> Path:
    """Where the shipped model configs live (``rmixer/configs``)."""
    return Path(__file__).resolve().parent / "configs"


def resolve_path(ref: str, base: Path | None = None) -> Path:
    """A config reference from a task line: a path (relative to the task file), or the name of
    a shipped config (``dlrm_small`` or ``dlrm_small.json``)."""
    p = Path(ref)
    candidates = [p] if p.is_absolute() else ([base / p] if base else []) + [p]
    stem = p.name if p.suffix else p.name + ".json"
    candidates.append(builtin_dir() / stem)
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(
        f"config {ref!r} not found (looked at {[str(c) for c in candidates]}); give a path to a "
        f"YAML/JSON model config or one of the shipped names {sorted(builtin_names())}"
    )


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.json"))


def load(ref: str, base: Path | None = None) -> tuple[dict, Path]:
    """Normalized config from a path or shipped name, and the file it came from."""
    path = resolve_path(ref, base)
    return normalize(read_mapping(path), str(path)), path
