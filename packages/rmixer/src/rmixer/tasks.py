"""Task files: the jobs a client submits.

Two formats. The artifact's, one job per line, exactly three whitespace-separated fields
(``#`` starts a comment)::

    # <model> <config: path or shipped name> <identifier>
    criteo_dlrm  dlrm_small   job-1
    dcn          configs/dcn.yaml   7

and YAML (``.yaml``/``.yml``)::

    jobs:
      - {model: dlrm, config: dlrm_small, name: job-1, iterations: 200}
      - {model: din, config: {model: din, batch_size: 32, seq_len: 20}, count: 3}

The model field is the artifact's ``<dataset>_<model>`` label: its last ``_`` part must name
the config's model. A malformed line is an error naming the file and the line; nothing is
ever skipped silently (the artifact dropped lines with another field count).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
>>> _ = p.write_text("deepfm deepfm_small a\\ndeepfm deepfm_small b extra\\n")
>>> try:
...     read_tasks(p)
... except TaskError as e:
...     print(str(e).split(": ")[0].endswith("t.txt:2"))
True
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rmixer.configs import ConfigError, load, normalize


class TaskError(ValueError):
    """A task file that cannot be used; the message starts with ``file:line``."""


@dataclass(frozen=True)
class TaskSpec:
    """One job to submit: a label, a normalized model config, an iteration count."""

    name: str
    model: str
    config: dict
    iterations: int
    source: str  # file:line it came from

    def as_request(self) -> dict:
        return asdict(self)


def read_tasks(path: str | os.PathLike, iterations: int | None = None) -> list[TaskSpec]:
    """Jobs of a task file (three-field lines, or YAML by suffix); ``iterations`` overrides
    every job's count."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: task file not found")
    if path.suffix in (".yaml", ".yml"):
        specs = _read_yaml(path)
    else:
        specs = _read_lines(path)
    if not specs:
        raise TaskError(f"{path}: no jobs in the task file")
    if iterations is not None:
        if iterations < 1:
            raise TaskError(f"iterations: expected >= 1, got {iterations}")
        specs = [TaskSpec(s.name, s.model, s.config, iterations, s.source) for s in specs]
    return specs


def _check_model(label: str, cfg: dict, where: str) -> None:
    if label.split("_")[-1] != cfg["model"]:
        raise TaskError(
            f"{where}: model field {label!r} does not match the config's model {cfg['model']!r} "
            f"(write {cfg['model']!r} or '<dataset>_{cfg['model']}')"
        )


def _read_lines(path: Path) -> list[TaskSpec]:
    specs = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{path}:{no}"
        fields = text.split()
        if len(fields) != 3:
            raise TaskError(
                f"{where}: expected 3 fields '<model> <config> <identifier>', got {len(fields)} "
                f"in {line.strip()!r}"
            )
        label, ref, ident = fields
        try:
            cfg, _ = load(ref, path.parent)
        except ConfigError as exc:
            raise TaskError(f"{where}: {exc}") from None
        _check_model(label, cfg, where)
        specs.append(TaskSpec(ident, label, cfg, cfg["iterations"], where))
    return specs


def _yaml_loader():
    import yaml

    class LineLoader(yaml.SafeLoader):
        """Records each mapping's line as ``__line__``."""

        def construct_mapping(self, node, deep=False):
            mapping = super().construct_mapping(node, deep=deep)
            mapping["__line__"] = node.start_mark.line + 1
            return mapping

    return yaml, LineLoader


def _read_yaml(path: Path) -> list[TaskSpec]:
    try:
        yaml, loader = _yaml_loader()
    except ImportError:
        raise TaskError(f"{path}: YAML task files need pyyaml (pip install pyyaml)") from None
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML ({exc})") from None
    if isinstance(doc, dict):
        extra = sorted(set(doc) - {"jobs", "__line__"})
        if extra:
            raise TaskError(f"{path}: unknown top-level key(s) {extra}; expected 'jobs'")
        doc = doc.get("jobs")
    if not isinstance(doc, list):
        raise TaskError(f"{path}: expected a list of jobs (or 'jobs:' with a list)")
    specs = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise TaskError(f"{path}: job {i + 1}: expected a mapping, got {item!r}")
        where = f"{path}:{item.pop('__line__', '?')}"
        unknown = sorted(set(item) - {"model", "config", "name", "iterations", "count"})
        if unknown:
            raise TaskError(
                f"{where}: unknown key(s) {unknown}; a job has model, config, name, iterations, count"
            )
        if "model" not in item or "config" not in item:
            raise TaskError(f"{where}: a job needs 'model' and 'config'")
        ref = item["config"]
        try:
            if isinstance(ref, dict):
                ref.pop("__line__", None)
                cfg = normalize(ref, where)
            elif isinstance(ref, str):
                cfg, _ = load(ref, path.parent)
            else:
                raise ConfigError(
                    f"'config' must be a path, a shipped name or a mapping, got {ref!r}"
                )
        except ConfigError as exc:
            raise TaskError(f"{where}: {exc}") from None
        label = str(item["model"])
        _check_model(label, cfg, where)
        iters = item.get("iterations", cfg["iterations"])
        count = item.get("count", 1)
        for key, v in (("iterations", iters), ("count", count)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise TaskError(f"{where}: {key!r} must be a positive integer, got {v!r}")
        name = str(item.get("name", f"{label}-{i + 1}"))
        for c in range(count):
            specs.append(
                TaskSpec(name if count == 1 else f"{name}.{c + 1}", label, cfg, iters, where)
            )
    return specs
