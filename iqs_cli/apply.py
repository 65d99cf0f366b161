"""`iqs apply CHANGES.json`: the labels a person chose on the report page, written as XMP.

The report page (html_report.py) offers the labels changed on it as a small JSON file:

    {"format": "iqs-changes", "version": 1, "made": "2026-11-30T10:00:00Z",
     "roots": ["/photos/trip"],                  the folders the report covered
     "changes": [{"path": "/photos/trip/IMG_1.JPG",          the shot's scored file
                  "files": ["/photos/trip/IMG_1.CR2", ...],  every file of the shot
                  "label": "accepted", "stars": 4}]}         stars: optional, 1-5

Each shot's files get the label as a person's (`xmp.write_person_labels`: pick label, rating
-1 for rejected or the stars held inside the label's range, no `iqs:written*` record), so later
iqs runs keep them. Writes are journaled in the journal of the root that holds the file
(`journal.RootJournals`, which takes each root's FolderLock), so `iqs undo ROOT` takes them
back. A bad entry (missing file, a path outside the roots, an unknown label) is one error and
the rest go on; a file that is not a changes file at all is a ChangesError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from iqs_cli import xmp
from iqs_cli.discover import is_photo_name
from iqs_cli.fsutil import why
from iqs_cli.journal import FolderBusy, JournalError, RootJournals
from iqs_cli.verdict import STARS_BY_LABEL
from iqs_cli.vocabulary import CLASSES

CHANGES_FORMAT = "iqs-changes"
CHANGES_VERSION = 1
MAX_CHANGES_BYTES = 64 * 1024 * 1024  # a page with 100,000 changes writes about 20 MB


class ChangesError(Exception):
    """The file is not a changes file iqs can read (the message says why and what to do)."""


@dataclass
class Change:
    path: Path  # the shot's scored file
    files: list[Path]  # every file of the shot (labels go to each)
    label: str
    stars: int | None


@dataclass
class ApplyReport:
    applied: int = 0  # shots whose every file got the labels
    files: int = 0  # files labelled
    errors: list[str] = field(default_factory=list)  # one per entry or file that failed
    changed: list[Path] = field(default_factory=list)  # roots whose journal can undo this
    stopped: str | None = None  # the journal could not be written: nothing more was
    busy: bool = False  # ... because another iqs run holds a root's lock (FolderBusy)

    @property
    def ok(self) -> bool:
        return not self.errors and self.stopped is None


def rating_for(label: str, stars: int | None) -> int:
    """The xmp:Rating for a person's label: -1 for rejected (what darktable and Lightroom
    read as rejected), else the stars held inside the label's range (verdict.STARS_BY_LABEL;
    no stars: the range's lowest)."""
    if label == "rejected":
        return xmp.REJECTED_RATING
    low, high = STARS_BY_LABEL[label]
    return low if stars is None else min(high, max(low, int(stars)))


def read_changes(path: Path) -> tuple[list[Path], list]:
    """(roots, raw entries) of a changes file; ChangesError when it is not one."""
    try:
        size = path.stat().st_size
        if size > MAX_CHANGES_BYTES:
            raise ChangesError(f"{path}: {size // (1024 * 1024)} MiB is too large for a changes "
                               "file; give the file the report page saved")
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise ChangesError(f"{path}: cannot read it ({why(exc)})") from None
    except ValueError as exc:
        raise ChangesError(f"{path}: not JSON ({exc}); give the file the report page saved "
                           "(Save changes)") from None
    if not isinstance(data, dict) or data.get("format") != CHANGES_FORMAT:
        raise ChangesError(f"{path}: not an iqs changes file (no \"format\": "
                           f"\"{CHANGES_FORMAT}\"); give the file the report page saved")
    version = data.get("version")
    if version != CHANGES_VERSION:
        raise ChangesError(f"{path}: changes file version {version!r}, this iqs reads version "
                           f"{CHANGES_VERSION}; update iqs, or save the changes again from a page "
                           "this iqs made")
    roots, entries = data.get("roots"), data.get("changes")
    if not isinstance(roots, list) or not roots or not all(
            isinstance(r, str) and os.path.isabs(r) for r in roots):
        raise ChangesError(f"{path}: \"roots\" must list the report's folders as absolute paths")
    if not isinstance(entries, list):
        raise ChangesError(f"{path}: \"changes\" must be a list")
    return [Path(os.path.abspath(r)) for r in roots], entries


def _inside(path: Path, roots: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == Path(os.path.realpath(r)) or Path(os.path.realpath(r)) in real.parents
               for r in roots)


def parse_entry(entry: object, number: int, roots: list[Path]) -> Change:
    """One entry as a Change; ValueError with a message for people when it is not one."""
    where = f"change {number}"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError(f"{where}: not an entry with a \"path\"; skipped")
    path = Path(entry["path"])
    where = f"{path} ({where})"
    label = entry.get("label")
    if label not in CLASSES:
        raise ValueError(f"{where}: label {label!r} is not one of {', '.join(CLASSES)}; "
                         "skipped")
    stars = entry.get("stars")
    if stars is not None and (isinstance(stars, bool) or not isinstance(stars, int)
                              or not 1 <= stars <= 5):
        raise ValueError(f"{where}: stars {stars!r} is not a whole number from 1 to 5; skipped")
    files = entry.get("files") or [entry["path"]]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{where}: \"files\" must be a list of paths; skipped")
    paths = [Path(f) for f in files]
    for file in paths:
        if not file.is_absolute():
            raise ValueError(f"{where}: {file} is not an absolute path; skipped")
        if not is_photo_name(file):
            raise ValueError(f"{where}: {file} is not a photo iqs labels; skipped")
        if not _inside(file, roots):
            raise ValueError(f"{where}: {file} is outside the report's folders "
                             f"({', '.join(map(str, roots))}); skipped")
        if not file.is_file():
            raise ValueError(f"{where}: {file} not found (moved or deleted since the report?); "
                             "skipped — make the report again to label it where it is now")
    return Change(path, paths, label, stars)


def apply_changes(path: Path, style: str = "digikam") -> ApplyReport:
    """Write every change of the changes file at `path` as a person's labels (module
    docstring). ChangesError when the file cannot be read as a whole."""
    roots, entries = read_changes(Path(path))
    report = ApplyReport()
    changes = []
    for number, entry in enumerate(entries, 1):
        try:
            changes.append(parse_entry(entry, number, roots))
        except ValueError as exc:
            report.errors.append(str(exc))
    journals = RootJournals(roots)
    try:
        for change in changes:
            rating = rating_for(change.label, change.stars)
            whole = True
            for file in change.files:
                try:
                    xmp.write_person_labels(file, change.label, rating, style=style,
                                            recorder=journals)
                    report.files += 1
                except xmp.XmpError as exc:
                    report.errors.append(str(exc))
                    whole = False
                except (JournalError, FolderBusy) as exc:
                    report.stopped = f"{exc}; no more labels were written"
                    report.busy = isinstance(exc, FolderBusy)
                    return report
            report.applied += whole
    finally:
        journals.close()
        report.changed = journals.changed_roots()
    return report
