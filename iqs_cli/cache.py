"""Results cache: raw model outputs per file in SQLite, so a re-run scores only what changed.

Keyed by absolute path, size, mtime_ns and the model's sha256. Raw outputs (not labels) are
stored, so changing thresholds takes effect without re-scoring. WAL mode plus a busy timeout
let two runs share the cache; any cache trouble degrades to "no cache", never to a failed run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FileKey:
    path: bytes  # os.fsencode(absolute path): non-UTF-8 names stay exact
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "FileKey":
        absolute = os.path.abspath(path)
        st = os.stat(absolute)
        return cls(os.fsencode(absolute), st.st_size, st.st_mtime_ns)


def default_cache_path() -> Path:
    folder = os.environ.get("IQS_CACHE_DIR") or user_cache_dir("iqs", appauthor=False)
    return Path(folder) / "results.sqlite3"


class ResultCache:
    """get/put raw outputs ({"probabilities", "mos", "attributes"}) for a file and model."""

    def __init__(self, path: Path | None = None, model_sha256: str = ""):
        self.path = path or default_cache_path()
        self.model_sha256 = model_sha256
        self.warning: str | None = None
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS results ("
                " path BLOB NOT NULL, model TEXT NOT NULL, size INTEGER NOT NULL,"
                " mtime_ns INTEGER NOT NULL, schema INTEGER NOT NULL, outputs TEXT NOT NULL,"
                " PRIMARY KEY (path, model))"
            )
            self._db = db
        except sqlite3.Error as exc:
            self.warning = f"results cache {self.path} unusable ({exc}); scoring without it"

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def get(self, key: FileKey) -> dict | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT size, mtime_ns, schema, outputs FROM results WHERE path=? AND model=?",
                (key.path, self.model_sha256),
            ).fetchone()
        except sqlite3.Error as exc:
            self._disable(exc)
            return None
        if row is None or (row[0], row[1], row[2]) != (key.size, key.mtime_ns, SCHEMA_VERSION):
            return None
        try:
            return json.loads(row[3])
        except ValueError:
            return None

    def put_many(self, entries: list[tuple[FileKey, dict]]) -> None:
        if self._db is None or not entries:
            return
        rows = [
            (k.path, self.model_sha256, k.size, k.mtime_ns, SCHEMA_VERSION, json.dumps(v))
            for k, v in entries
        ]
        try:
            with self._db:  # one transaction per batch
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        self.warning = f"results cache {self.path} failed ({exc}); going on without it"
        self.close()

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None
