"""The exceptions rap-share raises, so callers (and the CLIs) can tell our errors apart."""

from __future__ import annotations


class OpError(ValueError):
    """A preprocessing op got bad parameters or input; the message names op and column."""

    def __init__(self, op: str, column: str, message: str) -> None:
        self.op, self.column = op, column
        super().__init__(f"{op} on column {column!r}: {message}")


class ScriptError(ValueError):
    """A preprocessing script line could not be read; the message names file and line."""

    def __init__(self, line: int, message: str, source: str = "<script>", text: str = "") -> None:
        self.line, self.source = line, source
        shown = f"\n    {text.strip()}" if text.strip() else ""
        super().__init__(f"{source}:{line}: {message}{shown}")


class PlanError(ValueError):
    """The planner cannot build a plan from what it was given (graph, placement, solver)."""
