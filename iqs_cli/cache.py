"""Results cache: raw model outputs per file in SQLite, so a re-run scores only what changed.

Keyed by absolute path, size, mtime_ns and the model's sha256. Raw outputs (not labels) are
stored, so changing thresholds takes effect without re-scoring. WAL mode plus a busy timeout
let two runs share the cache; any cache trouble degrades to "no cache", never to a failed run:
a cache that cannot be opened or fails later is dropped with one warning, and an entry of the
wrong shape (damaged, or written by another iqs) is a miss, so the file is scored again and
its entry replaced.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

from iqs_cli.capture import CLOCKS, is_descriptor
from iqs_cli.vocabulary import CLASSES
from iqs_cli.fsutil import why

SCHEMA_VERSION = 1
_WHAT_TO_DO = ("fix or delete it, or point IQS_CACHE_DIR at a writable folder "
               "(--no-cache skips the cache)")


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


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)  # JSON integers have no size limit; the verdict works in floats
    except OverflowError:
        return False
    return True


def _is_scores(value: object, required: tuple[str, ...] = ()) -> bool:
    """A {name: number} dict holding at least the `required` names."""
    return (isinstance(value, dict)
            and all(isinstance(k, str) and _is_number(v) for k, v in value.items())
            and all(name in value for name in required))


def valid_outputs(outputs: object) -> bool:
    """Whether `outputs` has the shape scoring reads: {"probabilities": {class: number},
    "mos": number, "attributes"?: {name: number}, "focus"?: None or {"probabilities",
    "attributes"?}, "descriptor"?: capture.descriptor's hex, "taken"?: None or seconds, "clock"?: None, "exif"
    or "file"}.
    Anything else in the cache (damaged, or another iqs's format) is a miss."""
    if not isinstance(outputs, dict):
        return False
    if not (_is_scores(outputs.get("probabilities"), CLASSES) and _is_number(outputs.get("mos"))):
        return False
    if "attributes" in outputs and not _is_scores(outputs["attributes"]):
        return False
    focus = outputs.get("focus")
    if focus is not None and not (
            isinstance(focus, dict) and _is_scores(focus.get("probabilities"), CLASSES)
            and ("attributes" not in focus or _is_scores(focus["attributes"]))):
        return False
    if "descriptor" in outputs and not is_descriptor(outputs["descriptor"]):
        return False
    taken = outputs.get("taken")
    if taken is not None and not (_is_number(taken) and math.isfinite(taken)):
        return False
    if outputs.get("clock") not in (None, *CLOCKS):
        return False
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return why(exc, with_path=True)
    return str(exc) or type(exc).__name__


class ResultCache:
    """get/put raw outputs ({"probabilities", "mos", "attributes"}) for a file and model.

    Never raises for cache trouble: `take_warning()` returns what went wrong (once), and the
    cache then works as an empty one or not at all."""

    def __init__(self, path: Path | None = None, model_sha256: str = ""):
        self.path = path or default_cache_path()
        self.model_sha256 = model_sha256
        self.warning: str | None = None  # not yet reported; read it with take_warning()
        self._bad_entries_noted = False
        self._db: sqlite3.Connection | None = None
        db = None
        try:
            # A regular file where a folder should be, or no permission: OSError, not sqlite's.
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
            # Pooled features (float16, ~10 KB a photo) only for photos `iqs learn` looked at:
            # kept apart from the results so a plain `score` never pays for them.
            db.execute(
                "CREATE TABLE IF NOT EXISTS features ("
                " path BLOB NOT NULL, model TEXT NOT NULL, size INTEGER NOT NULL,"
                " mtime_ns INTEGER NOT NULL, dim INTEGER NOT NULL, data BLOB NOT NULL,"
                " PRIMARY KEY (path, model))"
            )
            self._db = db
        except (sqlite3.Error, OSError, ValueError) as exc:
            if db is not None:
                self._close_quietly(db)
            reason = _reason(exc)
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                reason = f"a file is in the way of its folder {self.path.parent}"
            self.warning = (f"results cache {self.path} cannot be used ({reason}); "
                            f"scoring without it — {_WHAT_TO_DO}")

    def take_warning(self) -> str | None:
        """What went wrong with the cache since the last call, or None: each problem once."""
        warning, self.warning = self.warning, None
        return warning

    def get(self, key: FileKey) -> dict | None:
        """The stored outputs for `key`, or None (not cached, changed, or a bad entry)."""
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
            outputs = json.loads(row[3])
        except (ValueError, TypeError, RecursionError):  # not JSON, not text, absurdly nested
            outputs = None
        if not valid_outputs(outputs):
            self._note_bad_entry(key)
            return None
        return outputs

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

    def get_features(self, key: FileKey, dim: int) -> np.ndarray | None:
        """The stored pooled features (float32 [dim]) for `key`, or None."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT size, mtime_ns, dim, data FROM features WHERE path=? AND model=?",
                (key.path, self.model_sha256),
            ).fetchone()
        except sqlite3.Error as exc:
            self._disable(exc)
            return None
        if (row is None or (row[0], row[1], row[2]) != (key.size, key.mtime_ns, dim)
                or not isinstance(row[3], bytes) or len(row[3]) != 2 * dim):
            return None
        features = np.frombuffer(row[3], dtype="<f2").astype(np.float32)
        return features if np.isfinite(features).all() else None

    def put_features(self, entries: list[tuple[FileKey, np.ndarray]]) -> None:
        if self._db is None or not entries:
            return
        rows = [(k.path, self.model_sha256, k.size, k.mtime_ns, int(v.size),
                 np.asarray(v, "<f2").tobytes()) for k, v in entries]
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            self._disable(exc)

    def copy_entries(self, moves: list[tuple[Path, Path]]) -> None:
        """Give each file moved from `src` to `dst` the entries (every model's results and
        features) `src` has. They are found again only while size and mtime still match."""
        if self._db is None or not moves:
            return
        pairs = [(os.fsencode(os.path.abspath(dst)), os.fsencode(os.path.abspath(src)))
                 for src, dst in moves]
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO results SELECT ?, model, size, mtime_ns, schema, outputs"
                    " FROM results WHERE path=?", pairs)
                self._db.executemany(
                    "INSERT OR REPLACE INTO features SELECT ?, model, size, mtime_ns, dim, data"
                    " FROM features WHERE path=?", pairs)
        except sqlite3.Error as exc:
            self._disable(exc)

    def _note_bad_entry(self, key: FileKey) -> None:
        # Once per cache: a damaged cache may hold many, and each is healed by re-scoring.
        if self._bad_entries_noted:
            return
        self._bad_entries_noted = True
        if self.warning is None:
            self.warning = (f"results cache {self.path} held entries iqs cannot use (first: "
                            f"{os.fsdecode(key.path)}; damaged, or from another iqs version); "
                            "those files are scored again and their entries replaced")

    def _disable(self, exc: Exception) -> None:
        # The bigger news: it replaces a pending note about bad entries.
        self.warning = (f"results cache {self.path} failed ({_reason(exc)}); going on without "
                        f"it — {_WHAT_TO_DO}")
        self.close()

    @staticmethod
    def _close_quietly(db: sqlite3.Connection) -> None:
        try:
            db.close()
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            self._close_quietly(db)
