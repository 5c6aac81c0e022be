"""Job state in SQLite, so a server restart loses no job.

One row per job: what to run (config, iterations), where it is (state, device, pid and the
pid's start time, to tell a live worker from a reused pid) and what came of it (result,
error, attempts). States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``;
an out-of-memory retry goes back to ``queued``.

>>> s = Store(":memory:")
>>> batch, ids = s.submit([{"name": "a", "model": "dlrm", "config": {"model": "dlrm"},
...                          "iterations": 5, "source": "t.txt:1"}])
>>> s.get(ids[0])["state"]
'queued'
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    config TEXT NOT NULL,
    iterations INTEGER NOT NULL,
    source TEXT,
    state TEXT NOT NULL,
    device TEXT,
    pid INTEGER,
    pid_start TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    exclude TEXT NOT NULL DEFAULT '[]',
    mem_bump REAL NOT NULL DEFAULT 1.0,
    reserved_mb REAL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT,
    history TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, submitted_at REAL);
"""
_JSON_FIELDS = ("config", "exclude", "result", "history")


class Store:
    """Thread-safe access to the jobs table (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, r: sqlite3.Row | None) -> dict | None:
        if r is None:
            return None
        d = dict(r)
        for k in _JSON_FIELDS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return d

    def submit(self, jobs: list[dict]) -> tuple[int, list[int]]:
        """Insert jobs as one batch; returns the batch id and job ids (in order)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                batch = self._db.execute(
                    "INSERT INTO batches (submitted_at) VALUES (?)", (now,)
                ).lastrowid
                ids = []
                for j in jobs:
                    cur = self._db.execute(
                        "INSERT INTO jobs (batch, name, model, config, iterations, source, state,"
                        " submitted_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                        (batch, j["name"], j["model"], json.dumps(j["config"]), j["iterations"],
                         j.get("source"), now),
                    )  # fmt: skip
                    ids.append(cur.lastrowid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return batch, ids

    def get(self, job_id: int) -> dict | None:
        with self._lock:
            return self._row(
                self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            )

    def list(self, state: str | None = None, batch: int | None = None) -> list[dict]:
        q, args = "SELECT * FROM jobs", []
        conds = []
        if state is not None:
            conds.append("state = ?")
            args.append(state)
        if batch is not None:
            conds.append("batch = ?")
            args.append(batch)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        with self._lock:
            return [self._row(r) for r in self._db.execute(q + " ORDER BY id", args).fetchall()]

    def update(self, job_id: int, **fields) -> None:
        if not fields:
            return
        for k in _JSON_FIELDS:
            if k in fields and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"state: expected one of {STATES}, got {fields['state']!r}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def add_history(self, job_id: int, entry: dict) -> None:
        with self._lock:
            job = self.get(job_id)
            if job is None:
                return
            self.update(job_id, history=[*job["history"], entry])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}
