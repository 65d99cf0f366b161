"""Putting a folder back the way it was before an iqs run, from that run's journal.

Undo works through the journal backwards. It records its own progress in the same journal
(`reverting` before a step, `reverted` after), so an undo that was itself interrupted can be
run again and finishes the job: steps already reverted are skipped, and a move that was being
copied back across filesystems is completed without leaving a second copy behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import (TEMP_TOKEN_LENGTH, copy_verified, move_file, replace_durably, same_content,
                     sha256_file, why)
from .journal import (FolderLock, JournalError, JournalFile, back_temp_path, journals, now,
                      read_journal, running)


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


class _Undo:
    def __init__(self, root: Path, report: UndoReport):
        self.root = root
        self.report = report

    def path(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def move_back(self, entry: dict, done: bool, failed: bool, resumed: bool) -> None:
        """`resumed`: an earlier undo started this step and was interrupted."""
        src, dst, tmp = self.path(entry["src"]), self.path(entry["dst"]), self.path(entry["tmp"])
        if os.path.lexists(tmp):  # an unfinished cross-filesystem copy; the source is intact
            os.unlink(tmp)
        if failed:
            return
        back_tmp = back_temp_path(src)  # (a leftover of an interrupted undo is removed)
        at_src, at_dst = os.path.lexists(src), os.path.lexists(dst)
        if at_dst and not at_src:
            src.parent.mkdir(parents=True, exist_ok=True)
            links = [self.path(p) for p in entry.get("links") or []]
            link_to = next((p for p in links if os.path.lexists(p)), None)
            move_file(dst, src, back_tmp, link_to=link_to)
            self.report.restored.append(src)
        elif at_dst and at_src:
            if (resumed or not done) and same_content(src, dst):
                # Killed between the verified copy and deleting the other one.
                os.unlink(dst)
                self.report.restored.append(src)
            else:
                self.report.kept.append(f"{src}: a file is there again; the moved one stays at "
                                        f"{dst} (both kept)")
        elif not at_src and not resumed:
            self.report.errors.append(f"{src}: not found at {src} nor at {dst}; nothing to "
                                      "move back")

    def rewrite(self, entry: dict, written: str | None) -> None:
        path = self.path(entry["path"])
        self.remove_temps(entry)
        current = sha256_file(path) if path.is_file() and not path.is_symlink() else None
        if entry.get("existed"):
            backup = self.path(entry["backup"]) if entry.get("backup") else None
            if backup is None or not backup.is_file():
                self.report.errors.append(f"{path}: its backup {backup} is missing; left as is")
                return
            original = sha256_file(backup)
            if current == original:
                return  # already the original
            if written is not None and current is not None and current != written:
                self.report.kept.append(f"{path}: changed since iqs wrote it; left as is (the "
                                        f"original is in {backup})")
                return
            tmp = back_temp_path(path)
            copy_verified(backup, tmp)
            replace_durably(tmp, path)
            self.report.restored.append(path)
        elif current is not None:
            if written is not None and current != written:
                self.report.kept.append(f"{path}: changed since iqs created it; left in place")
                return
            os.unlink(path)
            self.report.removed.append(path)

    def remove_temps(self, entry: dict) -> None:
        """Temporary files a killed write left beside its target."""
        if not entry.get("tmp"):
            return
        prefix = self.path(entry["tmp"])
        try:
            names = os.listdir(prefix.parent)
        except OSError:
            return
        for name in names:
            token = name[len(prefix.name):]
            if name.startswith(prefix.name) and len(token) == TEMP_TOKEN_LENGTH:
                os.unlink(prefix.parent / name)

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


def _pending(root: Path) -> Path | None:
    """The newest journal over `root` not undone yet (empty ones left by a failed start are
    passed over: they recorded no change)."""
    for candidate in reversed(journals(root)):
        entries = read_journal(candidate)
        if entries and not any(e.get("op") == "undone" for e in entries):
            return candidate
    return None


def pending_above(folder: Path | str) -> Path | None:
    """The nearest folder above `folder` with a run not undone yet that changed something
    inside `folder` (to tell someone who asked to undo a subfolder of a culled folder)."""
    folder = Path(folder).expanduser().resolve()
    for above in folder.parents:
        candidate = _pending(above)
        if candidate is None:
            continue
        inside = folder.relative_to(above).as_posix() + "/"
        for entry in read_journal(candidate):
            stored = entry.get("path") or entry.get("src") or ""
            if isinstance(stored, str) and (stored + "/").startswith(inside):
                return above
    return None


def undo(root: Path | str, journal: Path | str | None = None) -> UndoReport:
    """Undo the newest run over `root` not undone yet (or the given journal).

    Moved files go back, sidecars iqs created are removed, files it changed get their original
    bytes back, folders it created are removed when empty. A file that appeared at an original
    place since, or a sidecar changed since iqs wrote it, is left alone and reported (both
    kept). Runs undo like a stack: a second undo undoes the run before. When a step fails the
    journal is not marked undone, so undo can be run again once the cause is fixed; an undo
    that was interrupted can be run again too. Raises FolderBusy while another run holds the
    folder.
    """
    root = Path(root).expanduser().resolve()
    with FolderLock(root, action="undo a run in"):
        return _undo_locked(root, journal)


def _undo_locked(root: Path, journal: Path | str | None) -> UndoReport:
    report = UndoReport()
    journal = _pending(root) if journal is None else Path(journal)
    if journal is None:
        return report
    entries = read_journal(journal)
    if not entries or any(e.get("op") == "undone" for e in entries):
        return report
    begin = entries[0]
    if not any(e.get("op") == "end" for e in entries) and running(begin):
        raise JournalError(f"the run recorded in {journal} (process {begin.get('pid')}) is still "
                           "going; wait for it to finish (or stop it), then undo")
    report.journal, report.started = journal, begin.get("time")

    def ids(op: str) -> set:
        return {e.get("id") for e in entries if e.get("op") == op}

    done, failed, returned = ids("done"), ids("failed"), ids("returned")
    reverting, reverted = ids("reverting"), ids("reverted")
    written = {e.get("id"): e.get("sha256") for e in entries if e.get("op") == "written"}
    worker = _Undo(root, report)
    progress = JournalFile.reopen(journal)
    then = "undo stopped — free some space, then run undo again"
    try:
        for entry in reversed(entries):
            op, step = entry.get("op"), entry.get("id")
            if op not in ("move", "write", "mkdir") or step in reverted:
                continue
            errors = len(report.errors)
            if op != "mkdir":
                progress.append({"op": "reverting", "id": step}, sync=True, then=then)
            try:
                if op == "move":
                    worker.move_back(entry, step in done, step in failed or step in returned,
                                     resumed=step in reverting)
                elif op == "write":
                    worker.rewrite(entry, written.get(step))
                else:
                    worker.rmdir(entry)
            except (OSError, KeyError, TypeError) as exc:
                what = entry.get("src") or entry.get("path")
                reason = why(exc) if isinstance(exc, OSError) else f"bad journal entry ({exc})"
                report.errors.append(f"{what}: cannot undo {op} ({reason})")
            if len(report.errors) == errors:
                progress.append({"op": "reverted", "id": step}, sync=False, then=then)
        if not report.errors:
            progress.append({"op": "undone", "time": now()}, sync=True, then=then)
    finally:
        progress.close()
    return report
