"""Folders and file lists -> shots: one photo each, RAW+JPEG siblings kept together.

A shot is what a photographer culls as one: `IMG_1.CR2` with the `IMG_1.JPG` the camera wrote
beside it (same folder, same name up to case, at least one of them RAW). The JPEG is the file
iqs decodes (it is what the camera rendered, and faster than a RAW preview); every file of the
shot gets the label.

Order is deterministic: inputs in the order given; inside a folder, its photos sorted by name
first (a shot sits where its first file name sorts), then its subfolders sorted by name, each
walked the same way (depth first).

Walking skips names that start with "." (hidden files and folders, macOS "._" files), folders
named `_rejected` (where `iqs cull` moves rejects), folders in `skip_dirs`, and every file that
is not a photo iqs can read (sidecars such as .xmp, .pp3, .dop, videos, notes) without a word;
a caller that passes a `skipped` Counter learns how many photos in formats iqs cannot read
(SKIPPED_PHOTO_EXTENSIONS, e.g. .jxl) were passed over, to tell the user (`skipped_summary`).
Symbolic links are followed; a folder reached twice (a link loop, a link to a folder already
walked, or overlapping inputs) is walked once, and a file reached twice is scored once.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from iqs_cli.decode import IMAGE_EXTENSIONS, RAW_EXTENSIONS
from iqs_cli.fsutil import LINK_LOOP, os_error_note

PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS
# Preferred file to decode in a RAW+JPEG shot: the camera's JPEG, then any other image.
_JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe"})

# Photos iqs cannot read, counted (not reported one by one) when a walk passes them over, so a
# folder that yields nothing can be explained. Still images only: videos (a phone's Live Photo
# .MOV beside each HEIC) and sidecars are not photos that were missed.
SKIPPED_PHOTO_EXTENSIONS = frozenset(
    {
        ".jxl",  # JPEG XL
        ".gif", ".bmp", ".psd", ".psb", ".xcf", ".kra",  # graphics and editors' layered files
        ".jp2", ".j2k", ".jpf", ".jpx", ".jxr", ".wdp", ".hdp",  # JPEG 2000, JPEG XR
        ".exr", ".hdr",  # HDR renderings
        ".x3f", ".raw", ".rwl", ".mrw", ".dcr", ".kdc", ".erf", ".mef", ".mos", ".srf",
        ".fff", ".gpr", ".cap",  # camera RAW formats iqs has no preview reader for
    }
) - PHOTO_EXTENSIONS  # fmt: skip


@dataclass
class Shot:
    """One photo: `primary` is the file to decode, `files` every file of the shot (sorted)."""

    primary: Path
    files: list[Path] = field(default_factory=list)


@dataclass
class DiscoveryError:
    """An input or a found entry that cannot be scored, with the reason for the user."""

    path: str
    message: str


def supported_list() -> str:
    """The supported extensions, for messages."""
    images = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    raws = " ".join(sorted(e.lstrip(".").upper() for e in RAW_EXTENSIONS))
    return f"{images}, and camera RAW ({raws})"


def is_photo_name(name: str | os.PathLike) -> bool:
    return Path(name).suffix.lower() in PHOTO_EXTENSIONS


def skipped_summary(skipped: Counter[str]) -> str:
    """One line for what `discover` / `discover_files` passed over, e.g. "2 .jxl files skipped
    (...)"; "" when nothing was skipped. Photo formats iqs cannot read come first (most
    frequent first), then folders, hidden and other files from a list."""
    def files(n: int, what: str) -> str:
        return f"{n} {what} file{'' if n == 1 else 's'}"

    kinds = {SKIPPED_FOLDER, SKIPPED_HIDDEN, SKIPPED_OTHER}
    counts = sorted(((n, ext) for ext, n in skipped.items() if n > 0 and ext not in kinds),
                    key=lambda c: (-c[0], c[1]))
    parts = []
    if counts:
        listed = [files(n, ext) for n, ext in counts]
        images = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        parts.append(_and(listed) + f" skipped (iqs reads {images} and camera RAW; export them "
                     "as JPEG to score them)")
    other = []
    if skipped.get(SKIPPED_FOLDER):
        n = skipped[SKIPPED_FOLDER]
        other.append(f"{n} folder{'' if n == 1 else 's'} (give folders as arguments to walk "
                     "them)")
    if skipped.get(SKIPPED_HIDDEN):
        other.append(files(skipped[SKIPPED_HIDDEN], "hidden"))
    if skipped.get(SKIPPED_OTHER):
        other.append(files(skipped[SKIPPED_OTHER], "non-photo"))
    if other:
        parts.append("from the list: " + _and(other) + " skipped, as a walk skips them")
    return "; ".join(parts)


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def discover(
    inputs: Iterable[str | Path],
    recursive: bool = True,
    skip_dirs: Iterable[Path] = (),
    rejected_dirname: str = "_rejected",
    skipped: Counter[str] | None = None,
) -> Iterator[Shot | DiscoveryError]:
    """Shots (and errors) for command-line inputs: folders are walked, files taken as given.

    Explicit files are shots of their own, except that a RAW and its JPEG passed together
    (same folder and name) form one shot. An explicit file that is not a supported photo, a
    path that does not exist and a folder that cannot be read give a DiscoveryError.
    `recursive=False` takes only each folder's own files. Folders named `rejected_dirname`
    and hidden ones are skipped while walking (an input folder is walked even so); folders in
    `skip_dirs` are never walked.

    `skipped`, when given, counts by extension (".jxl": 2) the files with an extension in
    SKIPPED_PHOTO_EXTENSIONS that walking passed over; it is complete once the generator is
    exhausted. Explicit files are not counted: they give a DiscoveryError instead.
    """
    walker = _Walker(recursive, skip_dirs, rejected_dirname, skipped)
    inputs = [os.fspath(p) for p in inputs]
    explicit_files: list[str] = []
    kinds: list[tuple[str, str]] = []  # (input, "file" | "folder" | error message)
    for raw in inputs:
        kind = _classify_input(raw)
        kinds.append((raw, kind))
        if kind == "file":
            explicit_files.append(raw)
    groups = _group_paths([_absolute(p) for p in explicit_files])
    group_of = {path: key for key, paths in groups.items() for path in paths}
    emitted: set = set()
    for raw, kind in kinds:
        if kind == "folder":
            yield from walker.walk(Path(_absolute(raw)))
        elif kind == "file":
            key = group_of[_absolute(raw)]
            if key not in emitted:
                emitted.add(key)
                yield from walker.shot_of(groups[key])
        else:
            yield DiscoveryError(raw, kind)


# Keys of the `skipped` Counter for list entries that are not photos at all (photo formats iqs
# cannot read are counted by their extension, ".jxl").
SKIPPED_FOLDER, SKIPPED_HIDDEN, SKIPPED_OTHER = "folder", "hidden", "other"


def discover_files(
    paths: Iterable[str], skipped: Counter[str] | None = None
) -> Iterator[Shot | DiscoveryError]:
    """Shots for a list of files (from `paths_from_stdin`), RAW+JPEG siblings grouped.

    Entries are treated as a walk treats what it finds: hidden names, files that are not
    photos (sidecars, notes) and photos iqs cannot read are skipped, and so are folders
    (`find DIR` lists folders as well as their files: walking them would score the files
    twice). `skipped` counts all of those (SKIPPED_FOLDER, SKIPPED_HIDDEN, SKIPPED_OTHER, or the
    extension of a photo iqs cannot read), for one note. Missing files and broken links are
    errors.
    """
    walker = _Walker(recursive=False, skip_dirs=(), rejected_dirname="")
    skipped = Counter() if skipped is None else skipped
    accepted: list[str] = []
    order: list[tuple[str, str | None]] = []  # (entry, error message or None)
    for raw in paths:
        if _is_hidden(os.path.basename(raw.rstrip(os.sep))):
            skipped[SKIPPED_HIDDEN] += 1
            continue
        kind = _classify_input(raw)
        if kind == "folder":
            skipped[SKIPPED_FOLDER] += 1
        elif kind == "file":
            accepted.append(_absolute(raw))
            order.append((raw, None))
        elif kind.startswith("not a photo iqs can read"):
            skipped[_skipped_extension(raw) or SKIPPED_OTHER] += 1
        else:
            order.append((raw, kind))
    groups = _group_paths(accepted)
    group_of = {path: key for key, paths in groups.items() for path in paths}
    emitted: set = set()
    for raw, error in order:
        if error is not None:
            yield DiscoveryError(raw, error)
            continue
        key = group_of[_absolute(raw)]
        if key not in emitted:
            emitted.add(key)
            yield from walker.shot_of(groups[key])


def paths_from_stdin(stream: BinaryIO | TextIO) -> Iterator[str]:
    """Paths from `find ... | iqs score -`: one per line, or NUL-separated (`find -print0`).

    Bytes are decoded with os.fsdecode, so names that are not valid UTF-8 survive. Only the
    line ending is removed (names may have spaces at either end); blank lines are skipped.
    """
    binary = getattr(stream, "buffer", stream)
    data = binary.read()
    if isinstance(data, str):
        data = os.fsencode(data)
    if b"\0" in data:
        entries = data.split(b"\0")
    else:
        entries = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    for entry in entries:
        if entry:
            yield os.fsdecode(entry)


# --- internals --------------------------------------------------------------------------------


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _skipped_extension(name: str) -> str:
    """The extension of a photo iqs cannot read (".jxl"), "" for anything else."""
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in SKIPPED_PHOTO_EXTENSIONS else ""


def _classify_input(raw: str) -> str:
    """"file", "folder", or the message of a DiscoveryError for an input path."""
    if raw == "":
        return "empty path"
    try:
        st = os.stat(raw)
    except FileNotFoundError:
        if os.path.islink(raw):
            return "broken symbolic link: its target does not exist"
        return "no such file or folder"
    except OSError as exc:
        return _os_message(exc)
    if stat.S_ISDIR(st.st_mode):
        return "folder"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, pipe or socket), so not a photo"
    if not is_photo_name(raw):
        suffix = Path(raw).suffix.lower() or "none"
        return f"not a photo iqs can read (extension {suffix}); supported: {supported_list()}"
    return "file"


def _os_message(exc: OSError) -> str:
    return os_error_note(exc, "reach this path",
                         missing="no such file or folder (moved or deleted?)",
                         check="check the permissions of its folders")


def _group_key(path: str) -> tuple[str, str]:
    folder, name = os.path.split(path)
    return folder, os.path.splitext(name)[0].casefold()


def _group_paths(paths: list[str]) -> dict[tuple, list[str]]:
    """Group absolute paths into shots: same folder and stem, only when a RAW is among them.

    Keys are in first-seen order; a group without a RAW splits into one group per file."""
    by_stem: dict[tuple[str, str], list[str]] = {}
    for path in paths:
        by_stem.setdefault(_group_key(path), []).append(path)
    groups: dict[tuple, list[str]] = {}
    for key, members in by_stem.items():
        members = sorted(dict.fromkeys(members))
        if len(members) > 1 and any(_is_raw(m) for m in members):
            groups[key] = members
        else:
            for member in members:
                groups[(key, member)] = [member]
    return groups


def _is_raw(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in RAW_EXTENSIONS


def _primary(files: list[str]) -> str:
    def rank(path: str) -> tuple[int, str]:
        suffix = os.path.splitext(path)[1].lower()
        if suffix in _JPEG_EXTENSIONS:
            return 0, path
        return (1 if suffix in IMAGE_EXTENSIONS else 2), path

    return min(files, key=rank)


class _Walker:
    def __init__(
        self,
        recursive: bool,
        skip_dirs: Iterable[Path],
        rejected_dirname: str,
        skipped: Counter[str] | None = None,
    ) -> None:
        self.recursive = recursive
        self.rejected_dirname = rejected_dirname
        self.skipped = skipped
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[tuple[int, int]] = set()
        self.skip_dirs: set[tuple[int, int]] = set()
        for folder in skip_dirs:
            try:
                st = os.stat(folder)
            except OSError:
                continue  # a folder that does not exist cannot be walked into anyway
            self.skip_dirs.add((st.st_dev, st.st_ino))

    def shot_of(self, files: list[str]) -> Iterator[Shot | DiscoveryError]:
        """The shot made of `files` (absolute paths), minus files already scored."""
        fresh = []
        for path in files:
            try:
                st = os.stat(path)
            except OSError as exc:
                yield DiscoveryError(path, _os_message(exc))
                continue
            identity = (st.st_dev, st.st_ino)
            if identity not in self.seen_files:
                self.seen_files.add(identity)
                fresh.append(path)
        if fresh:
            yield Shot(primary=Path(_primary(fresh)), files=[Path(p) for p in sorted(fresh)])

    def walk(self, root: Path) -> Iterator[Shot | DiscoveryError]:
        stack = [str(root)]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError as exc:
                yield DiscoveryError(folder, _folder_error(exc))
                continue
            identity = (st.st_dev, st.st_ino)
            if identity in self.seen_dirs or identity in self.skip_dirs:
                continue
            self.seen_dirs.add(identity)
            try:
                files, subfolders, errors = self._list(folder)
            except OSError as exc:
                yield DiscoveryError(folder, _folder_error(exc))
                continue
            yield from errors
            for group in _group_paths(files).values():
                yield from self.shot_of(group)
            if self.recursive:
                stack.extend(reversed(subfolders))

    def _list(self, folder: str) -> tuple[list[str], list[str], list[DiscoveryError]]:
        """Photo files and subfolders of `folder` (sorted by name) and errors for broken links."""
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        files, subfolders, errors = [], [], []
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir()  # follows symbolic links
            except OSError:
                is_dir = False
            if is_dir:
                if entry.name != self.rejected_dirname:
                    subfolders.append(entry.path)
                continue
            photo = is_photo_name(entry.name)
            if entry.is_symlink() and not os.path.exists(entry.path):
                # A dangling link to a photo, or to what may be a folder of photos (no
                # extension), is worth a word; one to a sidecar or a note is not.
                if photo or not os.path.splitext(entry.name)[1]:
                    errors.append(DiscoveryError(entry.path, _dangling_message(entry.path)))
                continue
            if photo and _is_regular(entry):
                files.append(entry.path)
            elif self.skipped is not None and (ext := _skipped_extension(entry.name)):
                if _is_regular(entry):
                    self.skipped[ext] += 1
        return files, subfolders, errors


def _is_regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()  # follows symbolic links; FIFOs and devices are not files
    except OSError:
        return False


def _dangling_message(path: str) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return LINK_LOOP
    return "broken symbolic link: its target does not exist"


def _folder_error(exc: OSError) -> str:
    if isinstance(exc, NotADirectoryError):
        return "not a folder any more (replaced while iqs was reading?)"
    return os_error_note(exc, "list this folder",
                         missing="folder not found (moved or deleted while iqs was reading?)")
