"""Moving rejected shots out of the way, with a journal that makes every change undoable.

`plan_moves` decides where every file of every rejected shot goes (with its sidecars) and
changes nothing, so a dry run prints the plan. `execute` carries it out under a `Journal`;
`undo` reads the journal back and restores the tree.

The journal is `ROOT/.iqs/journal-<UTC time>-<pid>.jsonl` (a hidden folder: discovery skips
it), JSON lines, one per step. Each intent line is fsync'd BEFORE its action; completion lines
follow it. Undo trusts what it finds on disk over completion lines, so a run killed at any
instant can still be undone:

    {"op": "begin", "version": 1, "root": ..., "pid": ..., "host": ..., "time": ...}
    {"op": "write", "id": n, "path": P, "existed": bool, "backup": B}  a file iqs will change
    {"op": "written", "id": n, "sha256": ...}                         ... and what it wrote
    {"op": "mkdir", "id": n, "path": P}                               a folder iqs will create
    {"op": "move", "id": n, "src": P, "dst": P, "tmp": P}             a file iqs will move
    {"op": "done", "id": n} / {"op": "failed", "id": n, "error": ...}
    {"op": "end", "time": ...}
    {"op": "undone", "time": ...}                                     undo restored this run

Paths inside ROOT are stored relative to it, so undo still works after the whole folder moved.
Backups of files iqs changed (sidecars, or photos with --in-file) are byte copies in
`ROOT/.iqs/backups/<journal name>/`, made and fsync'd before the intent line.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .fsutil import fsync_dir, replace_durably
from .result import ShotResult

REJECTED_DIR = "_rejected"
STATE_DIR = ".iqs"
JOURNAL_VERSION = 1
_CHUNK = 1 << 20


class CullError(Exception):
    """The cull cannot start as asked (the message says what to change)."""


class JournalError(Exception):
    """The undo journal cannot be written or read; nothing further is changed."""


# ---------------------------------------------------------------------------------------------
# Low-level file operations


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(src: Path, dst: Path) -> None:
    """os.rename that never replaces an existing `dst` (FileExistsError), atomically on Linux.

    Raises OSError(EXDEV) when src and dst are on different filesystems.
    """
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    # Elsewhere (or a filesystem without the flag): check, then rename. Windows refuses to
    # replace on its own; on POSIX a file created in this instant could still be replaced.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_verified(src: Path, tmp: Path) -> None:
    """Copy src to a new file tmp, fsync, and check size + sha256 against the source."""
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as source, open(tmp, "xb") as target:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            target.write(chunk)
        target.flush()
        os.fsync(target.fileno())
    shutil.copystat(src, tmp)
    if os.path.getsize(tmp) != size or _sha256(tmp) != digest.hexdigest():
        raise OSError(errno.EIO, "the copy does not match the original (size or sha256)", str(tmp))


def _move_file(src: Path, dst: Path, tmp: Path) -> None:
    """Move without ever replacing dst; across filesystems copy, fsync, verify, then delete."""
    try:
        _rename_noreplace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    try:
        _copy_verified(src, tmp)
        _rename_noreplace(tmp, dst)  # same folder as dst: same filesystem
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(dst.parent)
    os.unlink(src)
    fsync_dir(src.parent)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


# ---------------------------------------------------------------------------------------------
# The journal


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Journal:
    """The record of one run: every change is written here before it happens.

    Implements xmp.WriteRecorder (`before_write` / `after_write`), so pass it to
    xmp.write_shot(..., recorder=journal) and then to execute(plan, journal).
    """

    def __init__(self, root: Path, path: Path, fd: int):
        self.root = root
        self.path = path
        self._fd = fd
        self._next_id = 0
        self._steps = 0
        self._write_ids: dict[Path, int] = {}
        self.backups = path.parent / "backups" / path.stem

    @classmethod
    def create(cls, root: Path | str) -> "Journal":
        """Start a journal for a run over `root` (in ROOT/.iqs/)."""
        root = Path(root).resolve()
        folder = root / STATE_DIR
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = folder / f"journal-{stamp}-{os.getpid()}.jsonl"
        try:
            folder.mkdir(exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot create the undo journal in {folder} ({_why(exc)}); iqs "
                               "changes nothing it could not undo — make the folder writable, "
                               "then re-run") from None
        journal = cls(root, path, fd)
        journal._append({"op": "begin", "version": JOURNAL_VERSION, "root": str(root),
                         "pid": os.getpid(), "host": socket.gethostname(), "time": _now()},
                        sync=True)
        fsync_dir(folder)
        return journal

    # -- writing entries

    def _append(self, entry: dict, sync: bool) -> None:
        if self._fd < 0:
            raise JournalError(f"the journal {self.path} is already closed")
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            os.write(self._fd, line)
            if sync:
                os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write the undo journal {self.path} ({_why(exc)}); "
                               "stopping before the next change") from None

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
            backup = self.backups / f"{step}-{Path(path).name}"
            try:
                self.backups.mkdir(parents=True, exist_ok=True)
                _copy_verified(Path(path), backup)
            except OSError as exc:
                raise JournalError(f"cannot back up {path} to {backup} ({_why(exc)}); it was not "
                                   "changed") from None
            fsync_dir(self.backups)
        self._append({"op": "write", "id": step, "path": self._rel(path), "existed": existed,
                      "backup": self._rel(backup) if backup else None}, sync=True)
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

    def record_move(self, src: Path, dst: Path) -> tuple[int, Path]:
        """Record a move about to happen; returns its step id and the temp name a copy across
        filesystems uses (beside dst)."""
        step = self._new_id()
        tmp = dst.parent / f".{dst.name}.iqs-tmp-{step}"
        self._append({"op": "move", "id": step, "src": self._rel(src), "dst": self._rel(dst),
                      "tmp": self._rel(tmp)}, sync=True)
        return step, tmp

    def record_done(self, step: int) -> None:
        self._append({"op": "done", "id": step}, sync=False)

    def record_failed(self, step: int, error: str) -> None:
        self._append({"op": "failed", "id": step, "error": error}, sync=False)

    def close(self) -> None:
        """Finish the run; a journal that recorded no change is deleted."""
        if self._fd < 0:
            return
        try:
            if self._steps:
                self._append({"op": "end", "time": _now()}, sync=True)
        finally:
            os.close(self._fd)
            self._fd = -1
        if not self._steps:
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Move:
    src: Path
    dst: Path
    shot: Path  # the scored file of the shot this file belongs to
    sidecar: bool = False
    renamed: bool = False  # a name clash at the destination gave the shot a ' (n)' name


@dataclass
class CullPlan:
    root: Path
    dest: Path
    moves: list[Move] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files left where they are, and why

    def __len__(self) -> int:
        return len(self.moves)

    def __iter__(self):
        return iter(self.moves)

    def lines(self) -> list[str]:
        """One 'src -> dst' line per move (paths relative to the folder being culled)."""
        def show(path: Path) -> str:
            return path.relative_to(self.root).as_posix() if _inside(path, self.root) else str(path)

        return [f"{show(m.src)} -> {show(m.dst)}" + ("  (renamed: name taken)" if m.renamed else "")
                for m in self.moves]


def _numbered(name: str, stem: str, n: int) -> str:
    """IMG_1.CR2 -> 'IMG_1 (2).CR2' (the part after the stem is kept as it is)."""
    return name if n == 0 else f"{stem} ({n}){name[len(stem):]}"


def check_destination(root: Path | str, dest: Path | str | None = None) -> Path:
    """The folder rejected shots go to (default ROOT/_rejected), resolved; CullError when it
    lies inside the folder being culled (it would be scanned next time) or is a file."""
    root = Path(root).expanduser().resolve()
    default = root / REJECTED_DIR
    dest = default if dest is None else Path(dest).expanduser().resolve()
    if _inside(dest, root) and not _inside(dest, default):
        raise CullError(f"--to must not be inside the folder being culled ({dest} is inside "
                        f"{root}), or it would be scanned next time: pick a folder outside")
    if dest.exists() and not dest.is_dir():
        raise CullError(f"--to {dest} is a file, not a folder: pick a folder")
    return dest


def plan_moves(results: list[ShotResult], root: Path | str,
               dest: Path | str | None = None) -> CullPlan:
    """Where every file of every rejected shot goes, with its sidecars; changes nothing.

    Files keep their subfolder under `dest` (default ROOT/_rejected). A name already taken at
    the destination is never overwritten: the whole shot (RAW, JPEG and sidecars alike) gets
    the first free ' (n)' stem, e.g. 'IMG_1 (1).CR2' + 'IMG_1 (1).JPG' + 'IMG_1 (1).CR2.xmp'.
    Raises CullError when `dest` lies inside the folder being culled.
    """
    root = Path(root).expanduser().resolve()
    dest = check_destination(root, dest)
    plan = CullPlan(root, dest)
    indexes: dict[Path, dict[str, list[str]]] = {}
    taken: set[Path] = set()

    def index(folder: Path) -> dict[str, list[str]]:
        """Names in `folder` by lower-case name (sidecar names match case-insensitively)."""
        if folder not in indexes:
            names: dict[str, list[str]] = {}
            try:
                for entry in os.listdir(folder):
                    names.setdefault(entry.lower(), []).append(entry)
            except OSError:
                pass
            indexes[folder] = names
        return indexes[folder]

    stems: dict[Path, dict[str, list[str]]] = {}

    def kept_siblings(photo: Path, moving: set[Path]) -> list[str]:
        """Other photos with the same stem that stay (they share a `stem.xmp` sidecar)."""
        if photo.parent not in stems:
            by_stem: dict[str, list[str]] = {}
            for lower, names in index(photo.parent).items():
                if not lower.endswith(".xmp"):
                    by_stem.setdefault(Path(lower).stem, []).extend(names)
            stems[photo.parent] = by_stem
        return [name for name in stems[photo.parent].get(photo.stem.lower(), [])
                if photo.parent / name not in moving]

    for result in results:
        if not result.ok or result.label != "rejected":
            continue
        shot = Path(result.path)
        photos: list[Path] = []
        for name in result.files or [result.path]:
            photo = Path(name).expanduser().absolute()
            photo = photo.parent.resolve() / photo.name  # resolve the folder, not a symlinked file
            if _inside(photo, dest):
                continue  # already moved
            if not _inside(photo, root):
                plan.problems.append(f"{photo}: not inside {root}; not moved")
            elif not os.path.lexists(photo):
                plan.problems.append(f"{photo}: not found (moved or deleted since scoring); "
                                     "not moved")
            elif photo not in photos:
                photos.append(photo)
        if not photos:
            continue
        moving = set(photos)
        files: list[tuple[Path, Path]] = [(p, p) for p in photos]  # (file, its photo)
        seen = set(moving)
        for photo in photos:
            names = index(photo.parent)
            sidecars = [(n, False) for n in names.get((photo.name + ".xmp").lower(), [])]
            sidecars += [(n, True) for n in names.get((photo.stem + ".xmp").lower(), [])]
            for name, stem_style in sidecars:
                path = photo.parent / name
                if path in seen:
                    continue
                others = kept_siblings(photo, moving) if stem_style else []
                if others:
                    plan.problems.append(f"{path}: shared with {others[0]}, which is not "
                                         "rejected; left in place")
                    continue
                seen.add(path)
                files.append((path, photo))

        def destination(path: Path, photo: Path, n: int) -> Path:
            # Every file of the shot starts with the photo's stem: number that part alike.
            return dest / path.parent.relative_to(root) / _numbered(
                path.name, path.name[:len(photo.stem)], n)

        for n in range(10000):
            targets = [destination(path, photo, n) for path, photo in files]
            if len(set(targets)) == len(targets) and not any(
                    t in taken or os.path.lexists(t) for t in targets):
                break
        else:
            plan.problems.append(f"{shot}: no free name in {targets[0].parent}; not moved")
            continue
        taken.update(targets)
        for (path, photo), target in zip(files, targets):
            plan.moves.append(Move(path, target, shot, sidecar=path != photo, renamed=n > 0))
    return plan


# ---------------------------------------------------------------------------------------------
# Executing


@dataclass
class MoveReport:
    moved: list[Move] = field(default_factory=list)
    failed: list[tuple[Move, str]] = field(default_factory=list)  # (move, clear message)


def execute(plan: CullPlan, journal: Journal) -> MoveReport:
    """Carry out the plan; each move is journaled before it happens. A file that cannot be
    moved (vanished, name taken meanwhile, permission) is reported and the run goes on.
    JournalError (the journal cannot be written) stops the run before the next change."""
    report = MoveReport()
    touched: set[Path] = set()
    for move in plan.moves:
        missing = []
        folder = move.dst.parent
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        try:
            for folder in reversed(missing):
                step = journal.record_mkdir(folder)
                try:
                    folder.mkdir()
                except FileExistsError:
                    pass
                journal.record_done(step)
        except OSError as exc:
            report.failed.append((move, f"{move.src}: cannot create {folder} ({_why(exc)}); "
                                        "not moved"))
            continue
        step, tmp = journal.record_move(move.src, move.dst)
        try:
            if not os.path.lexists(move.src):
                raise FileNotFoundError(errno.ENOENT, "not found", str(move.src))
            _move_file(move.src, move.dst, tmp)
        except FileNotFoundError:
            message = f"{move.src}: not found (moved or deleted since scoring); not moved"
        except FileExistsError:
            message = (f"{move.src}: {move.dst} appeared meanwhile; not moved (nothing is ever "
                       "overwritten) — re-run to pick a free name")
        except OSError as exc:
            message = f"{move.src}: cannot move to {move.dst} ({_why(exc)}); left in place"
        else:
            journal.record_done(step)
            report.moved.append(move)
            touched.update((move.src.parent, move.dst.parent))
            continue
        journal.record_failed(step, message)
        report.failed.append((move, message))
    for folder in touched:  # make the renames durable, not just the journal
        fsync_dir(folder)
    return report


# ---------------------------------------------------------------------------------------------
# Undo


@dataclass
class UndoReport:
    journal: Path | None = None  # the journal undone (None: nothing to undo)
    started: str | None = None  # when the undone run began
    restored: list[Path] = field(default_factory=list)  # moved back, or original bytes restored
    removed: list[Path] = field(default_factory=list)  # files and folders iqs had created
    kept: list[str] = field(default_factory=list)  # conflicts left for the user, both kept
    errors: list[str] = field(default_factory=list)  # steps that failed (re-run undo later)

    @property
    def nothing_to_undo(self) -> bool:
        return self.journal is None


def _read_journal(path: Path) -> list[dict]:
    entries = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise JournalError(f"cannot read the journal {path} ({_why(exc)})") from None
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # the last line was cut off by a crash: its action never started
            raise JournalError(f"the journal {path} is damaged at line {number}; undo would "
                               "guess — restore the files by hand from its entries") from None
        if isinstance(entry, dict):
            entries.append(entry)
    if not entries or entries[0].get("op") != "begin":
        raise JournalError(f"{path} is not an iqs journal (no begin entry)")
    return entries


def journals(root: Path | str) -> list[Path]:
    """The journals of runs over `root`, oldest first."""
    folder = Path(root).expanduser().resolve() / STATE_DIR
    return sorted(folder.glob("journal-*.jsonl")) if folder.is_dir() else []


def _process_start(pid: int) -> float | None:
    """When process `pid` started (Unix time), where /proc tells; else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: starttime
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _running(begin: dict) -> bool:
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
    started = _process_start(pid)
    try:
        began = datetime.fromisoformat(begin["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return True
    # A pid reused by a process that started after the run began is not that run.
    return started is None or started <= began + 2


class _Undo:
    def __init__(self, root: Path, report: UndoReport):
        self.root = root
        self.report = report

    def path(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def move_back(self, entry: dict, done: bool, failed: bool) -> None:
        src, dst, tmp = self.path(entry["src"]), self.path(entry["dst"]), self.path(entry["tmp"])
        if os.path.lexists(tmp):  # an unfinished cross-filesystem copy; the source is intact
            os.unlink(tmp)
        if failed:
            return
        at_src, at_dst = os.path.lexists(src), os.path.lexists(dst)
        if at_dst and not at_src:
            src.parent.mkdir(parents=True, exist_ok=True)
            back_tmp = src.parent / f".{src.name}.iqs-tmp-undo"
            if os.path.lexists(back_tmp):  # left by an undo that was itself interrupted
                os.unlink(back_tmp)
            _move_file(dst, src, back_tmp)
            self.report.restored.append(src)
        elif at_dst and at_src:
            if not done and _sha256(src) == _sha256(dst):
                os.unlink(dst)  # killed between the verified copy and deleting the source
                self.report.restored.append(src)
            else:
                self.report.kept.append(f"{src}: a file is there again; the moved one stays at "
                                        f"{dst} (both kept)")
        elif not at_src:
            self.report.errors.append(f"{src}: not found at {src} nor at {dst}; nothing to "
                                      "move back")

    def rewrite(self, entry: dict, written: str | None) -> None:
        path = self.path(entry["path"])
        current = _sha256(path) if path.is_file() else None
        if entry.get("existed"):
            backup = self.path(entry["backup"]) if entry.get("backup") else None
            if backup is None or not backup.is_file():
                self.report.errors.append(f"{path}: its backup {backup} is missing; left as is")
                return
            original = _sha256(backup)
            if current == original:
                return  # already the original
            if written is not None and current is not None and current != written:
                self.report.kept.append(f"{path}: changed since iqs wrote it; left as is (the "
                                        f"original is in {backup})")
                return
            tmp = path.parent / f".{path.name}.iqs-tmp-undo"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            _copy_verified(backup, tmp)
            replace_durably(tmp, path)
            self.report.restored.append(path)
        elif current is not None:
            if written is not None and current != written:
                self.report.kept.append(f"{path}: changed since iqs created it; left in place")
                return
            os.unlink(path)
            self.report.removed.append(path)

    def rmdir(self, entry: dict) -> None:
        folder = self.path(entry["path"])
        try:
            folder.rmdir()
            self.report.removed.append(folder)
        except FileNotFoundError:
            pass
        except OSError:
            if folder.is_dir() and any(folder.iterdir()):
                self.report.kept.append(f"{folder}: not empty; kept")
            else:
                raise


def undo(root: Path | str, journal: Path | str | None = None) -> UndoReport:
    """Undo the newest run over `root` not undone yet (or the given journal).

    Moved files go back, sidecars iqs created are removed, files it changed get their original
    bytes back, folders it created are removed when empty. A file that appeared at an original
    place since, or a sidecar changed since iqs wrote it, is left alone and reported (both
    kept). Runs undo like a stack: a second undo undoes the run before. When a step fails the
    journal is not marked undone, so undo can be run again once the cause is fixed.
    """
    root = Path(root).expanduser().resolve()
    report = UndoReport()
    if journal is None:
        for candidate in reversed(journals(root)):
            if not any(e.get("op") == "undone" for e in _read_journal(candidate)):
                journal = candidate
                break
        else:
            return report
    journal = Path(journal)
    entries = _read_journal(journal)
    if any(e.get("op") == "undone" for e in entries):
        return report
    begin = entries[0]
    if not any(e.get("op") == "end" for e in entries) and _running(begin):
        raise JournalError(f"the run recorded in {journal} (process {begin.get('pid')}) is still "
                           "going; wait for it to finish (or stop it), then undo")
    report.journal, report.started = journal, begin.get("time")
    done = {e.get("id") for e in entries if e.get("op") == "done"}
    failed = {e.get("id") for e in entries if e.get("op") == "failed"}
    written = {e.get("id"): e.get("sha256") for e in entries if e.get("op") == "written"}
    worker = _Undo(root, report)
    for entry in reversed(entries):
        op, step = entry.get("op"), entry.get("id")
        try:
            if op == "move":
                worker.move_back(entry, step in done, step in failed)
            elif op == "write":
                worker.rewrite(entry, written.get(step))
            elif op == "mkdir":
                worker.rmdir(entry)
        except (OSError, KeyError, TypeError) as exc:
            what = entry.get("src") or entry.get("path")
            reason = _why(exc) if isinstance(exc, OSError) else f"bad journal entry ({exc})"
            report.errors.append(f"{what}: cannot undo {op} ({reason})")
    if not report.errors:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (json.dumps({"op": "undone", "time": _now()}) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    return report
