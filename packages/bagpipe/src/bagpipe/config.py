"""A run's shape, the checks every role applies to it, and the start-up handshake comparison.

Every role builds a ``dict`` of the settings it was given (:func:`settings`); the oracle
compares them (:func:`compare`) and the first disagreement stops every role with an error
naming the setting and both values. A setting a role was not given (``None``) is taken from the
oracle. Gradient scale: embedding rows receive the SUM over trainers of each trainer's
gradient of its own mean loss (the reference's convention: ``N x`` the gradient of the global
mean loss); dense parameters receive the AVERAGE (as DDP does).
"""

from __future__ import annotations

from collections.abc import Mapping

from bagpipe.errors import BagpipeError, ConfigMismatch
from bagpipe.plan import MODES, cleanup_interval

# Settings the roles must agree on, in the order they are compared.
SHARED = (
    "mode", "table_sizes", "num_dense", "dim", "row_width", "lookahead", "cleanup_proportion",
    "global_batch", "num_trainers", "num_servers", "stop_iter", "cache_size", "emb_optim",
    "emb_optim_params", "seed",
)  # fmt: skip


def validate(s: Mapping) -> None:
    """Raise :class:`BagpipeError` naming the flag for a setting out of range."""

    def bad(flag: str, value, expected: str) -> BagpipeError:
        return BagpipeError(f"--{flag} {value!r}: expected {expected}")

    def get(key):
        return s.get(key)

    for key, flag in (("lookahead", "lookahead-value"), ("global_batch", "mini-batch-size"),
                      ("num_trainers", "world-size-trainers"), ("num_servers", "num-servers"),
                      ("stop_iter", "stop-iter"), ("cache_size", "cache-size"),
                      ("dim", "emb-size")):  # fmt: skip
        v = get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise bad(flag, v, "an integer >= 1")
    p = get("cleanup_proportion")
    if p is not None and not (isinstance(p, (int, float)) and 0.0 < p <= 1.0):
        raise bad("cleanup-batch-proportion", p, "a fraction in (0, 1]")
    mode = get("mode")
    if mode is not None and mode not in MODES:
        raise bad("mode", mode, f"one of {', '.join(MODES)}")
    b, n = get("global_batch"), get("num_trainers")
    if b is not None and n is not None and b % n:
        raise BagpipeError(
            f"--mini-batch-size {b} (the global batch) is not divisible by "
            f"--world-size-trainers {n}; every trainer takes an equal shard, so pick a multiple "
            f"of {n} (e.g. {b - b % n or n})"
        )
    sizes = get("table_sizes")
    if sizes is not None:
        for i, t in enumerate(sizes):
            if not isinstance(t, int) or t < 1:
                raise bad("ln-emb", list(sizes), f"positive row counts (table {i} has {t!r})")


def settings(**values) -> dict:
    """The shared settings a role was given (``None`` = not given), validated."""
    unknown = set(values) - set(SHARED)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    out = {k: values.get(k) for k in SHARED}
    if out["table_sizes"] is not None:
        out["table_sizes"] = [int(x) for x in out["table_sizes"]]
    if out["emb_optim_params"] is not None:
        out["emb_optim_params"] = dict(sorted(out["emb_optim_params"].items()))
    validate(out)
    return out


def compare(reference_role: str, reference: Mapping, role: str, other: Mapping) -> None:
    """Raise :class:`ConfigMismatch` on the first shared setting both give differently."""
    for key in SHARED:
        a, b = reference.get(key), other.get(key)
        if a is None or b is None:
            continue
        if key == "cleanup_proportion":
            same = abs(float(a) - float(b)) < 1e-12
        else:
            same = a == b
        if not same:
            raise ConfigMismatch(key, reference_role, a, role, b)


def merge(reference: Mapping, other: Mapping) -> dict:
    """``other`` with every setting it lacks taken from ``reference``."""
    return {k: (other.get(k) if other.get(k) is not None else reference.get(k)) for k in SHARED}


def interval(s: Mapping) -> int:
    """The cleanup interval C of these settings (1 for the per-step baselines)."""
    if s["mode"] != "bagpipe":
        return 1
    return cleanup_interval(int(s["lookahead"]), float(s["cleanup_proportion"]))
