"""The undo journal: every change iqs makes to a photo folder is written here before it happens.

The journal is `ROOT/.iqs/journal-<UTC time>-<pid>.jsonl` (a hidden folder: discovery skips
it), JSON lines, one per step. Each intent line is fsync'd BEFORE its action; completion lines
follow it. A line is written whole or not at all (a short write is retried; one that cannot
finish is cut off again and the run stops before its action), so a cut line can only be the
last one, left by a crash, and its action never started. Undo trusts what it finds on disk
over completion lines, so a run killed at any instant can still be undone:

    {"op": "begin", "version": 1, "root": ..., "pid": ..., "host": ..., "time": ...}
    {"op": "write", "id": n, "path": P, "existed": bool, "backup": B, "tmp": T}
                                                 a file iqs will change (T: its temp files' prefix)
    {"op": "written", "id": n, "sha256": ...}    ... and what it wrote
    {"op": "mkdir", "id": n, "path": P}          a folder iqs will create
    {"op": "move", "id": n, "src": P, "dst": P, "tmp": P, "links": [P...]}
                                                 a file iqs will move (links: its hard links)
    {"op": "done", "id": n} / {"op": "failed", "id": n, "error": ...}
    {"op": "returned", "id": n}                  moved back at once (its shot could not move whole)
    {"op": "end", "time": ...}
    {"op": "reverting", "id": n} / {"op": "reverted", "id": n}   undo's own progress
    {"op": "undone", "time": ...}                undo restored this run

Paths inside ROOT are stored relative to it, so undo still works after the whole folder moved;
names that are not valid UTF-8 are stored as their own bytes (surrogateescape). Backups of files
iqs changed (sidecars, or photos with --in-file) are byte copies in
`ROOT/.iqs/backups/<journal name>/`, made and fsync'd before the intent line.

`FolderLock` keeps two runs from changing one folder at once: the folder is locked exclusively
and every folder above it shared, so a run over a parent and one over its child exclude each
other too.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from .fsutil import (TEMP_TOKEN_LENGTH, copy_verified, describe_os_error, fitting_name,
                     fsync_dir, temp_path, temp_prefix, why)

STATE_DIR = ".iqs"
JOURNAL_VERSION = 1


class JournalError(Exception):
    """The undo journal cannot be written or read; nothing further is changed."""


class FolderBusy(Exception):
    """Another iqs run is changing the folder (the message says which and what to do)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def back_temp_path(target: Path) -> Path:
    """The one temporary name used to put `target` back (by undo, or when a shot cannot move
    whole), free: a leftover from an interrupted attempt is removed first. Raises OSError."""
    tmp = temp_path(target, "back".ljust(TEMP_TOKEN_LENGTH, "0"))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    return tmp


def encode_line(entry: dict) -> bytes:
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")


def append_whole(fd: int, data: bytes, size: int) -> int:
    """Append `data` to the file open as `fd` (O_APPEND) whose length is `size`, whole or not at
    all: short writes are continued; on failure what was written is cut off again. Returns the
    new length; raises OSError."""
    written = 0
    try:
        while written < len(data):
            count = os.write(fd, data[written:])
            if count <= 0:
                raise OSError(errno.EIO, "the disk accepted no more bytes")
            written += count
    except OSError:
        try:
            os.ftruncate(fd, size)  # whatever part of the line reached the file goes again
        except OSError:
            pass  # the line stays cut: readers skip a cut last line
        raise
    return size + written


class JournalFile:
    """A journal open for appending whole lines (`append_whole`), fsync'd when asked."""

    def __init__(self, path: Path, fd: int, size: int = 0):
        self.path = path
        self.fd = fd
        self.size = size

    @classmethod
    def reopen(cls, path: Path) -> "JournalFile":
        """An existing journal, its cut last line (if a crash left one) removed first: that
        line's action never started."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        data = path.read_bytes()
        size = data.rfind(b"\n") + 1
        if size != len(data):
            os.ftruncate(fd, size)
        return cls(path, fd, size)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def append(self, entry: dict, sync: bool, then: str) -> None:
        """Append one entry; JournalError (saying `then`: what happens now) when it cannot."""
        if self.fd < 0:
            raise JournalError(f"the journal {self.path} is already closed")
        try:
            self.size = append_whole(self.fd, encode_line(entry), self.size)
            if sync:
                os.fsync(self.fd)
        except OSError as exc:
            raise JournalError(describe_os_error(exc, f"write the undo journal {self.path}",
                                                 then)) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Journal:
    """The record of one run: every change is written here before it happens.

    Implements xmp.WriteRecorder (`before_write` / `after_write`), so pass it to
    xmp.write_shot(..., recorder=journal) and then to cull.execute(plan, journal).
    """

    def __init__(self, root: Path, path: Path, fd: int, made_folder: bool):
        self.root = root
        self.path = path
        self._file = JournalFile(path, fd)
        self._next_id = 0
        self._steps = 0
        self._made_folder = made_folder
        self._write_ids: dict[Path, int] = {}
        self.backups = path.parent / "backups" / path.stem

    @property
    def steps(self) -> int:
        """Changes recorded so far."""
        return self._steps

    @classmethod
    def create(cls, root: Path | str) -> "Journal":
        """Start a journal for a run over `root` (in ROOT/.iqs/)."""
        root = Path(root).resolve()
        folder = root / STATE_DIR
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = folder / f"journal-{stamp}-{os.getpid()}.jsonl"
        made_folder = False
        try:
            if not folder.is_dir():
                folder.mkdir()
                made_folder = True
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise JournalError(describe_os_error(
                exc, f"create the undo journal in {folder}", "iqs changes nothing it could not "
                "undo — make the folder writable, then re-run")) from None
        journal = cls(root, path, fd, made_folder)
        try:
            journal._append({"op": "begin", "version": JOURNAL_VERSION, "root": str(root),
                             "pid": os.getpid(), "host": socket.gethostname(), "time": now()},
                            sync=True)
        except JournalError:
            journal._discard()  # an empty journal must not block later undos
            raise
        fsync_dir(folder)
        return journal

    # -- writing entries

    def _append(self, entry: dict, sync: bool) -> None:
        self._file.append(entry, sync, then="stopping before the next change")

    def _new_id(self) -> int:
        self._next_id += 1
        self._steps += 1
        return self._next_id

    def _rel(self, path: Path) -> str:
        path = Path(os.path.abspath(path))
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def before_write(self, path: Path, existed: bool) -> None:
        """Back up `path` (if it exists) and record that iqs is about to create/change it."""
        step = self._new_id()
        backup = None
        if existed:
            backup = self.backups / fitting_name(f"{step}-", Path(path).name, "")
            try:
                self.backups.mkdir(parents=True, exist_ok=True)
                copy_verified(Path(path), backup)
            except OSError as exc:
                raise JournalError(describe_os_error(exc, f"back up {path} to {backup}",
                                                     "it was not changed")) from None
            fsync_dir(self.backups)
        self._append({"op": "write", "id": step, "path": self._rel(path), "existed": existed,
                      "backup": self._rel(backup) if backup else None,
                      "tmp": self._rel(temp_prefix(Path(path)))}, sync=True)
        self._write_ids[Path(os.path.abspath(path))] = step

    def after_write(self, path: Path, sha256: str) -> None:
        """Record the hash of what iqs wrote (undo leaves the file alone if it changed since)."""
        step = self._write_ids.pop(Path(os.path.abspath(path)), None)
        if step is not None:
            self._append({"op": "written", "id": step, "sha256": sha256}, sync=False)

    def record_mkdir(self, folder: Path) -> int:
        step = self._new_id()
        self._append({"op": "mkdir", "id": step, "path": self._rel(folder)}, sync=True)
        return step

    def record_move(self, src: Path, dst: Path, links: list[Path] = ()) -> tuple[int, Path]:
        """Record a move about to happen; returns its step id and the temp name a copy across
        filesystems uses (beside dst). `links`: other names of the same file (hard links)."""
        step = self._new_id()
        tmp = temp_path(dst, f"{step:0{TEMP_TOKEN_LENGTH}d}"[-TEMP_TOKEN_LENGTH:])
        entry = {"op": "move", "id": step, "src": self._rel(src), "dst": self._rel(dst),
                 "tmp": self._rel(tmp)}
        if links:
            entry["links"] = [self._rel(link) for link in links]
        self._append(entry, sync=True)
        return step, tmp

    def record_done(self, step: int) -> None:
        self._append({"op": "done", "id": step}, sync=False)

    def record_failed(self, step: int, error: str) -> None:
        self._append({"op": "failed", "id": step, "error": error}, sync=False)

    def record_reverting(self, step: int) -> None:
        """A done move is about to be put back (its shot could not move whole)."""
        self._append({"op": "reverting", "id": step}, sync=True)

    def record_returned(self, step: int) -> None:
        self._append({"op": "returned", "id": step}, sync=True)

    def close(self) -> None:
        """Finish the run; a journal that recorded no change is deleted (with the .iqs folder
        when this run made it and nothing else is in it)."""
        if self._file.closed:
            return
        try:
            if self._steps:
                self._append({"op": "end", "time": now()}, sync=True)
        finally:
            if not self._steps:
                self._discard()
            else:
                self._file.close()

    def _discard(self) -> None:
        self._file.close()
        try:
            self.path.unlink()
            if self._made_folder:
                self.path.parent.rmdir()
        except OSError:
            pass

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Reading


def read_journal(path: Path) -> list[dict]:
    """The entries of a journal; [] for one that holds no complete begin line (its creation
    failed, so it recorded no change). Raises JournalError for a damaged one."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path} ({why(exc)})") from None
    complete, cut = lines[:-1], lines[-1]  # a last piece without "\n" was cut by a crash
    entries = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8", "surrogateescape"))
        except ValueError:
            raise JournalError(f"the journal {path} is damaged at line {number}; undo would "
                               "guess — restore the files by hand from its entries") from None
        if isinstance(entry, dict):
            entries.append(entry)
    del cut
    if not entries:
        return []
    if entries[0].get("op") != "begin":
        raise JournalError(f"{path} is not an iqs journal (no begin entry)")
    return entries


def journals(root: Path | str) -> list[Path]:
    """The journals of runs over `root`, oldest first."""
    folder = Path(root).expanduser().resolve() / STATE_DIR
    return sorted(folder.glob("journal-*.jsonl")) if folder.is_dir() else []


def process_start(pid: int) -> float | None:
    """When process `pid` started (Unix time), where /proc tells; else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: starttime
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def running(begin: dict) -> bool:
    """Whether the process that wrote this journal is still at work."""
    pid = begin.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or begin.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # exists, owned by someone else
    started = process_start(pid)
    try:
        began = datetime.fromisoformat(begin["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return True
    # A pid reused by a process that started after the run began is not that run.
    return started is None or started <= began + 2


# ---------------------------------------------------------------------------------------------
# One run at a time


class FolderLock:
    """Exclusive on `root`, shared on every folder above it (flock on the folders themselves,
    so no lock file is left behind). Released on exit; raises FolderBusy at once when another
    run holds it. Where the system has no flock (Windows, some network filesystems) runs are
    not kept apart."""

    def __init__(self, root: Path | str, action: str = "change"):
        self.root = Path(root).expanduser().resolve()
        self.action = action
        self._fds: list[int] = []

    def __enter__(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:
            return self
        folders = [self.root, *self.root.parents]
        for index, folder in enumerate(folders):
            try:
                fd = os.open(folder, os.O_RDONLY)
            except OSError:
                continue  # a folder above we cannot open: no run can lock it either
            self._fds.append(fd)
            mode = fcntl.LOCK_EX if index == 0 else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # no locks on this filesystem
                self.release()
                raise FolderBusy(
                    f"another iqs run is changing {folder} right now, so iqs cannot {self.action} "
                    f"{self.root} safely; wait for it to finish, then re-run") from None
        return self

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing releases the flock
        self._fds = []

    def __exit__(self, *exc_info) -> None:
        self.release()


class RootJournals:
    """Journals for writes spread over several folders (`iqs score --write-xmp` on folders and
    files): each file goes to the journal of the outermost given root that holds it, made and
    locked when its first write comes, so a run that changes nothing leaves nothing behind.

    Implements xmp.WriteRecorder. Raises FolderBusy or JournalError from `before_write` (then
    nothing was written to that file)."""

    def __init__(self, roots: list[Path]):
        resolved = sorted({Path(r).resolve() for r in roots}, key=lambda p: len(p.parts))
        self.roots: list[Path] = []
        for root in resolved:  # nested roots would lock against each other: keep the outer
            if not any(r == root or r in root.parents for r in self.roots):
                self.roots.append(root)
        self.opened: dict[Path, Journal] = {}
        self._locks: dict[Path, FolderLock] = {}

    def root_of(self, path: Path) -> Path:
        absolute = Path(os.path.abspath(path))
        for root in self.roots:
            if root in absolute.parents:
                return root
        return absolute.parent.resolve()

    def journal_for(self, path: Path) -> Journal:
        root = self.root_of(path)
        if root not in self.opened:
            lock = FolderLock(root, action="write labels in").__enter__()
            try:
                self.opened[root] = Journal.create(root)
            except JournalError:
                lock.release()
                raise
            self._locks[root] = lock
        return self.opened[root]

    def before_write(self, path: Path, existed: bool) -> None:
        self.journal_for(path).before_write(path, existed)

    def after_write(self, path: Path, sha256: str) -> None:
        journal = self.opened.get(self.root_of(path))
        if journal is not None:
            journal.after_write(path, sha256)

    def changed_roots(self) -> list[Path]:
        """The folders whose runs can be undone (`iqs undo ROOT`)."""
        return [root for root, journal in self.opened.items() if journal.steps]

    def close(self) -> None:
        for journal in self.opened.values():
            journal.close()
        for lock in self._locks.values():
            lock.release()

    def __enter__(self) -> "RootJournals":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
