"""Moving rejected shots out of the way, whole, under the undo journal.

`plan_moves` decides where every file of every rejected shot goes (with its sidecars) and
changes nothing, so a dry run prints the plan. `execute` carries it out under a
`journal.Journal`; `undo.undo` reads the journal back and restores the tree.

A person's judgement wins: a rejected shot that a person rated (1 star or more), gave a pick
label or a color label stays where it is unless `keep_judged=False` (`--overwrite`), and the
plan says why. A shot moves whole or not at all: when one of its files cannot move, the files
already moved go back.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import xmp
from .discover import is_photo_name
from .fsutil import fsync_dir, move_file, why
from .journal import STATE_DIR, Journal, back_temp_path
from .result import ShotResult

REJECTED_DIR = "_rejected"


class CullError(Exception):
    """The cull cannot start as asked (the message says what to change)."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# ---------------------------------------------------------------------------------------------
# A person's judgement

_PICK_NAMES = {number: label.capitalize() for label, number in xmp.PICK_LABELS.items()}
_COLOR_NAMES = {1: "red", 2: "orange", 3: "yellow", 4: "green", 5: "blue", 6: "magenta",
                7: "gray", 8: "black", 9: "white"}


def person_judgement(labels: dict) -> str | None:
    """What a person decided about a photo, in words ("rated 5 stars by you"), from
    xmp.read_labels; None when the labels present are unset or the ones iqs wrote."""
    person = xmp.set_by_person(labels)
    rating = person.get("rating")
    if isinstance(rating, (int, float)) and rating >= 1:
        stars = int(rating)
        return f"rated {stars} star{'s' if stars != 1 else ''} by you"
    if "pick" in person:
        return f"pick label {_PICK_NAMES.get(person['pick'], person['pick'])} set by you"
    if "color" in person:
        return f"color label {_COLOR_NAMES.get(person['color'], person['color'])} set by you"
    if "label" in person:
        return f"color label {person['label']} set by you"
    return None


def _judged(files: list[Path]) -> str | None:
    """Why the shot made of `files` (photos and sidecars) stays: a person's labels in a sidecar
    or in a photo's own XMP. XMP that cannot be parsed holds no label any app could show (it
    travels with the shot)."""
    for path in files:
        if path.suffix.lower() == ".xmp" or xmp.writes_in_file(path, True):
            try:
                labels = xmp.read_labels(path)
            except xmp.XmpError:
                continue
            why_kept = person_judgement(labels)
            if why_kept:
                return why_kept
    return None


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
    kept: list[tuple[Path, str]] = field(default_factory=list)  # (shot, why a person keeps it)

    def __len__(self) -> int:
        return len(self.moves)

    def __iter__(self):
        return iter(self.moves)

    def show(self, path: Path) -> str:
        """`path` relative to the folder being culled, when inside it."""
        return path.relative_to(self.root).as_posix() if _inside(path, self.root) else str(path)

    def lines(self) -> list[str]:
        """One 'src -> dst' line per move (paths relative to the folder being culled)."""
        return [f"{self.show(m.src)} -> {self.show(m.dst)}"
                + ("  (renamed: name taken)" if m.renamed else "") for m in self.moves]

    def kept_lines(self) -> list[str]:
        """One 'SHOT: why' line per rejected shot a person's labels keep in place."""
        return [f"{self.show(shot)}: {reason}" for shot, reason in self.kept]

    def shots(self) -> list[list[Move]]:
        """The moves grouped by shot, in plan order (a shot moves whole or not at all)."""
        groups: dict[Path, list[Move]] = {}
        for move in self.moves:
            groups.setdefault(move.shot, []).append(move)
        return list(groups.values())


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


class _Folders:
    """What plan_moves knows of each folder: its names, by lower-case name and stem."""

    def __init__(self):
        self._names: dict[Path, dict[str, list[str]]] = {}
        self._stems: dict[Path, dict[str, list[str]]] = {}

    def names(self, folder: Path) -> dict[str, list[str]]:
        """Names in `folder` by lower-case name (sidecar names match case-insensitively)."""
        if folder not in self._names:
            names: dict[str, list[str]] = {}
            try:
                for entry in os.listdir(folder):
                    names.setdefault(entry.lower(), []).append(entry)
            except OSError:
                pass
            self._names[folder] = names
        return self._names[folder]

    def same_stem(self, photo: Path) -> list[str]:
        """Photos in the folder whose stem matches `photo`'s case-insensitively (itself too)."""
        if photo.parent not in self._stems:
            by_stem: dict[str, list[str]] = {}
            for lower, names in self.names(photo.parent).items():
                if is_photo_name(lower):
                    by_stem.setdefault(Path(lower).stem, []).extend(names)
            self._stems[photo.parent] = by_stem
        return self._stems[photo.parent].get(photo.stem.lower(), [])

    def sidecars(self, photo: Path, moving: set[Path], problems: list[str]) -> list[Path]:
        """The sidecars that belong to `photo` alone: `photo.ext.xmp` (its own; a name that
        differs only in case counts when no other photo could own it) and `photo.xmp` (shared
        by every photo of the stem, so only when all of them move)."""
        names = self.names(photo.parent)
        found = []
        own = photo.name + ".xmp"
        for name in names.get(own.lower(), []):
            if name != own:
                # IMG_1.jpg.xmp beside IMG_1.JPG: ours unless IMG_1.jpg (or another case)
                # is a photo here too, which it then belongs to.
                twins = [p for p in names.get(photo.name.lower(), []) if p != photo.name]
                if twins:
                    if name[:-4] not in twins:
                        problems.append(f"{photo.parent / name}: could be the sidecar of "
                                        f"{photo.name} or of {twins[0]}; left in place")
                    continue
            found.append(photo.parent / name)
        for name in names.get((photo.stem + ".xmp").lower(), []):
            path = photo.parent / name
            staying = [n for n in self.same_stem(photo) if photo.parent / n not in moving]
            if staying:
                problems.append(f"{path}: shared with {staying[0]}, which is not rejected; "
                                "left in place")
                continue
            found.append(path)
        return [path for path in found if _movable(path, problems)]


def _movable(path: Path, problems: list[str]) -> bool:
    """Only regular files and symbolic links travel: a FIFO or device named like a sidecar
    would block or never end when copied to another filesystem."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return True
    problems.append(f"{path}: not a regular file (a pipe, device or folder); left in place")
    return False


def plan_moves(results: list[ShotResult], root: Path | str, dest: Path | str | None = None,
               keep_judged: bool = True) -> CullPlan:
    """Where every file of every rejected shot goes, with its sidecars; changes nothing.

    Files keep their subfolder under `dest` (default ROOT/_rejected). A name already taken at
    the destination is never overwritten: the whole shot (RAW, JPEG and sidecars alike) gets
    the first free ' (n)' stem, e.g. 'IMG_1 (1).CR2' + 'IMG_1 (1).JPG' + 'IMG_1 (1).CR2.xmp'.
    With `keep_judged`, a shot a person rated or labelled stays (in `plan.kept`, with why).
    Raises CullError when `dest` lies inside the folder being culled.
    """
    root = Path(root).expanduser().resolve()
    dest = check_destination(root, dest)
    plan = CullPlan(root, dest)
    known = _Folders()
    taken: set[Path] = set()

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
            for path in known.sidecars(photo, moving, plan.problems):
                if path not in seen:
                    seen.add(path)
                    files.append((path, photo))
        if keep_judged:
            reason = _judged([path for path, _ in files])
            if reason:
                plan.kept.append((shot, reason))
                continue

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
    returned: list[Move] = field(default_factory=list)  # moved, then put back: shot not whole

    def unmoved_shots(self) -> int:
        """Shots that stay where they were because one of their files could not move."""
        return len({move.shot for move in self.returned}
                   | {move.shot for move, _ in self.failed if os.path.lexists(move.src)})


class _HardLinks:
    """Other names of a file inside the folder being culled (found once, when first asked)."""

    def __init__(self, root: Path):
        self.root = root
        self._by_inode: dict[tuple[int, int], list[Path]] | None = None

    def of(self, path: Path) -> list[Path]:
        try:
            st = os.lstat(path)
        except OSError:
            return []
        if st.st_nlink < 2 or os.path.islink(path):
            return []
        if self._by_inode is None:
            self._by_inode = {}
            for folder, subfolders, names in os.walk(self.root):
                subfolders[:] = [d for d in subfolders if d != STATE_DIR]
                for name in names:
                    other = Path(folder) / name
                    try:
                        info = os.lstat(other)
                    except OSError:
                        continue
                    if info.st_nlink > 1:
                        self._by_inode.setdefault((info.st_dev, info.st_ino), []).append(other)
        return [p for p in self._by_inode.get((st.st_dev, st.st_ino), []) if p != path]


def _make_folders(folder: Path, journal: Journal) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        step = journal.record_mkdir(folder)
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        journal.record_done(step)


def _move_one(move: Move, journal: Journal, links: _HardLinks,
              moved_inodes: dict[tuple[int, int], Path]) -> tuple[int, str | None, bool]:
    """Journal and do one move: (its step, None or why it failed, whether the file is gone:
    deleted since scoring, so the rest of its shot is still the whole shot)."""
    others = links.of(move.src)
    identity = None
    if others:
        st = os.lstat(move.src)
        identity = (st.st_dev, st.st_ino)
    step, tmp = journal.record_move(move.src, move.dst, others)
    try:
        if not os.path.lexists(move.src):
            raise FileNotFoundError(errno.ENOENT, "not found", str(move.src))
        move_file(move.src, move.dst, tmp, link_to=moved_inodes.get(identity))
    except FileNotFoundError:
        return step, f"{move.src}: not found (moved or deleted since scoring); not moved", True
    except FileExistsError:
        return step, (f"{move.src}: {move.dst} appeared meanwhile; not moved (nothing is ever "
                      "overwritten) — re-run to pick a free name"), False
    except OSError as exc:
        return step, f"{move.src}: cannot move to {move.dst} ({why(exc)}); left in place", False
    if identity is not None:
        moved_inodes[identity] = move.dst  # its other names link to this copy
    return step, None, False


def _put_back(moves: list[tuple[int, Move]], journal: Journal, report: MoveReport) -> None:
    """Return the already-moved files of a shot that cannot move whole (newest first)."""
    for step, move in reversed(moves):
        journal.record_reverting(step)
        try:
            move_file(move.dst, move.src, back_temp_path(move.src))
        except OSError as exc:
            report.failed.append((move, f"{move.src}: moved to {move.dst} but cannot be put back "
                                        f"({why(exc)}); `iqs undo` moves it back"))
            report.moved.append(move)
            continue
        journal.record_returned(step)
        report.returned.append(move)


def execute(plan: CullPlan, journal: Journal) -> MoveReport:
    """Carry out the plan, shot by shot; each move is journaled before it happens. A shot
    moves whole or not at all: when one of its files cannot move (vanished, name taken
    meanwhile, permission, disk full) the files already moved go back, the shot is reported
    and the run goes on. JournalError (the journal cannot be written) stops the run before
    the next change."""
    report = MoveReport()
    touched: set[Path] = set()
    links = _HardLinks(plan.root)
    moved_inodes: dict[tuple[int, int], Path] = {}
    for shot_moves in plan.shots():
        done: list[tuple[int, Move]] = []
        for move in shot_moves:
            try:
                _make_folders(move.dst.parent, journal)
            except OSError as exc:
                message = (f"{move.src}: cannot create {move.dst.parent} ({why(exc)}); "
                           "not moved")
                step, gone = None, False
            else:
                step, message, gone = _move_one(move, journal, links, moved_inodes)
            if message is None:
                journal.record_done(step)
                done.append((step, move))
                touched.update((move.src.parent, move.dst.parent))
                continue
            if step is not None:
                journal.record_failed(step, message)
            report.failed.append((move, message))
            if gone:
                continue
            _put_back(done, journal, report)
            done = []
            break
        report.moved.extend(move for _, move in done)
    for folder in touched:  # make the renames durable, not just the journal
        fsync_dir(folder)
    return report
