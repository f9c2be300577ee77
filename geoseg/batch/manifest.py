"""The run manifest: one SQLite file in the output folder, one row per scene, one row per run.

SQLite in WAL mode: every status change is one transaction, so a run killed at any moment (even SIGKILL)
leaves the manifest consistent, and readers (a monitoring script, the tests) can look while a run writes.
Only the client process writes; workers never touch it. Inputs and reasons are stored redacted
(:func:`geoseg.remote.redact`): a scene URL's password or signature never lands in the file.

Tables: ``scenes`` (latest state of each scene), ``events`` (what each run did to each scene, including
skips) and ``runs``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.remote import redact

MANIFEST_NAME = "geoseg-batch.sqlite"

# scene statuses: pending -> running -> done | failed | quarantined; a stopped run puts running back to pending
DONE, FAILED, QUARANTINED, RUNNING, PENDING, SKIPPED = "done", "failed", "quarantined", "running", "pending", "skipped"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL NOT NULL, finished REAL, status TEXT NOT NULL, argv TEXT,
    model_sha256 TEXT, params TEXT, counts TEXT);
CREATE TABLE IF NOT EXISTS scenes (
    name TEXT PRIMARY KEY, input TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    fingerprint TEXT, input_fp TEXT, model_sha256 TEXT, params_sha256 TEXT,
    outputs TEXT, run_id TEXT, started REAL, finished REAL, seconds REAL, attempts INTEGER NOT NULL DEFAULT 0,
    stage_seconds TEXT);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, at REAL NOT NULL, seconds REAL);
"""


@dataclass
class SceneRow:
    name: str
    input: str
    status: str
    reason: str | None = None
    fingerprint: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # file name in the output folder -> sha256
    run_id: str | None = None
    seconds: float | None = None
    attempts: int = 0


class Manifest:
    """The manifest of one output folder."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST_NAME
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self, sql: str, *args: Any) -> None:
        with self.db:  # one transaction: committed whole or not at all
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, args)

    def scene(self, name: str) -> SceneRow | None:
        row = self.db.execute("SELECT name, input, status, reason, fingerprint, outputs, run_id, seconds, attempts "
                              "FROM scenes WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        name, source, status, reason, fingerprint, outputs, run_id, seconds, attempts = row
        return SceneRow(name, source, status, reason, fingerprint, json.loads(outputs or "{}"), run_id, seconds,
                        attempts)

    def start_run(self, run_id: str, argv: list[str], model_sha256: str, params: dict[str, Any]) -> None:
        self._tx("INSERT INTO runs (run_id, started, status, argv, model_sha256, params) VALUES (?, ?, ?, ?, ?, ?)",
                 run_id, time.time(), RUNNING, redact(json.dumps(argv)), model_sha256,
                 json.dumps(params, sort_keys=True))

    def finish_run(self, run_id: str, status: str, counts: dict[str, int]) -> None:
        self._tx("UPDATE runs SET finished = ?, status = ?, counts = ? WHERE run_id = ?",
                 time.time(), status, json.dumps(counts), run_id)

    def abandon_stale_runs(self) -> int:
        """Runs still marked running (their client was killed) become ``killed``; their running scenes pending."""
        n = self.db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (RUNNING,)).fetchone()[0]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE runs SET status = 'killed' WHERE status = ?", (RUNNING,))
            self.db.execute("UPDATE scenes SET status = ? WHERE status = ?", (PENDING, RUNNING))
        return n

    def event(self, run_id: str, name: str, status: str, reason: str | None = None,
              seconds: float | None = None) -> None:
        self._tx("INSERT INTO events (run_id, name, status, reason, at, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                 run_id, name, status, _shown(reason), time.time(), seconds)

    def mark_running(self, run_id: str, name: str, input_path: str, fingerprint: str, input_fp: str,
                     model_sha256: str, params_sha256: str) -> None:
        self._tx("""INSERT INTO scenes (name, input, status, fingerprint, input_fp, model_sha256, params_sha256,
                    run_id, started, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                    ON CONFLICT(name) DO UPDATE SET input = excluded.input, status = excluded.status, reason = NULL,
                    fingerprint = excluded.fingerprint, input_fp = excluded.input_fp,
                    model_sha256 = excluded.model_sha256, params_sha256 = excluded.params_sha256,
                    outputs = NULL, run_id = excluded.run_id, started = excluded.started, finished = NULL,
                    seconds = NULL, attempts = scenes.attempts + 1""",
                 name, redact(input_path), RUNNING, fingerprint, input_fp, model_sha256, params_sha256, run_id,
                 time.time())

    def mark_finished(self, run_id: str, name: str, status: str, seconds: float, reason: str | None = None,
                      outputs: dict[str, str] | None = None, stage_seconds: dict[str, float] | None = None) -> None:
        """The scene's final state in this run and its event, in one transaction."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE scenes SET status = ?, reason = ?, outputs = ?, finished = ?, seconds = ?, "
                            "stage_seconds = ? WHERE name = ?",
                            (status, _shown(reason), json.dumps(outputs or {}), now, seconds,
                             json.dumps(stage_seconds or {}), name))
            self.db.execute("INSERT INTO events (run_id, name, status, reason, at, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                            (run_id, name, status, _shown(reason), now, seconds))

    def record_unrunnable(self, run_id: str, name: str, input_path: str, reason: str) -> None:
        """A scene that failed before it could start (missing file, STAC item without the asset)."""
        now, input_path, reason = time.time(), redact(input_path), redact(reason)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("""INSERT INTO scenes (name, input, status, reason, run_id, started, finished, seconds,
                               attempts, fingerprint, outputs) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 1, NULL, '{}')
                               ON CONFLICT(name) DO UPDATE SET input = excluded.input, status = excluded.status,
                               reason = excluded.reason, run_id = excluded.run_id, started = excluded.started,
                               finished = excluded.finished, seconds = 0, fingerprint = NULL, outputs = '{}',
                               attempts = scenes.attempts + 1""",
                            (name, input_path, FAILED, reason, run_id, now, now))
            self.db.execute("INSERT INTO events (run_id, name, status, reason, at, seconds) VALUES (?, ?, ?, ?, ?, 0)",
                            (run_id, name, FAILED, reason, now))

    def revert_to_pending(self, name: str) -> None:
        """A scene stopped mid-run: its outputs were removed, so it is simply not done."""
        self._tx("UPDATE scenes SET status = ?, outputs = NULL, finished = NULL, seconds = NULL WHERE name = ?",
                 PENDING, name)


def _shown(reason: str | None) -> str | None:
    return None if reason is None else redact(reason)
