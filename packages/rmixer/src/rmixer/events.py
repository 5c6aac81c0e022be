"""The event log: one JSON object per line with a millisecond timestamp.

Every line has ``ts`` (Unix seconds, 3 decimals), ``time`` (local ISO time with milliseconds)
and ``event``; the rest depends on the event. The tools (:mod:`rmixer.tools`) read
``job_end`` lines, which carry the job's device and the worker-side ``t_start``/``t_end``.

>>> import io
>>> buf = io.StringIO()
>>> EventLog(buf).emit("server_start", policy="rmixer")["event"]
'server_start'
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import IO


def iso_ms(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{round(t * 1000) % 1000:03d}"


class EventLog:
    """Appends events to a file (or a text stream); thread-safe; also keeps them in memory
    when ``keep=True`` (the benchmark reads them back)."""

    def __init__(self, target: str | os.PathLike | IO[str] | None, keep: bool = False) -> None:
        self._lock = threading.Lock()
        self._own = False
        if target is None:
            self._f = None
        elif isinstance(target, (str, os.PathLike)):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._own = True
        else:
            self._f = target
        self.kept: list[dict] | None = [] if keep else None

    def emit(self, event: str, **fields) -> dict:
        t = time.time()
        rec = {"ts": round(t, 3), "time": iso_ms(t), "event": event, **fields}
        line = json.dumps(rec, default=str)
        with self._lock:
            if self._f is not None:
                self._f.write(line + "\n")
                self._f.flush()
            if self.kept is not None:
                self.kept.append(rec)
        return rec

    def close(self) -> None:
        with self._lock:
            if self._own and self._f is not None:
                self._f.close()
            self._f = None


def read_events(path: str | os.PathLike) -> list[dict]:
    """Events of a log file; a malformed line is an error naming file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{i}: not a JSON event ({exc})") from None
    return out
