"""Label tables: the generic CSV reader (path, mos[, class]) and the table helpers that every
dataset reader shares: finding the label file and image folder, UTF-8 BOMs, the header row,
rows without an image or listing one again, bad rows reported with their line numbers, and the
one missing-images check.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from iqs_cli.vocabulary import CLASS_INDEX

from .base import DatasetError, Record

MAX_LISTED = 8  # bad rows listed in one message; the rest are counted
MAX_NAMED = 5  # missing images named in one message


class DatasetWarning(UserWarning):
    """Something was skipped on request (allow_missing=True, strict=False); says what and why."""


def resolve_under(root: Path, path: Path | str) -> Path:
    """`path` as given when absolute, else relative to `root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def _find_under(
    dataset: str,
    root: Path,
    given: Path | str | None,
    candidates: Sequence[str],
    *,
    exists: Callable[[Path], bool],
    what: str,
    option: str,
    looked_for: str,
    hint: str,
) -> Path:
    """`given` (relative to root) when named, which must pass `exists`; else the first of the
    known `candidates` under root that does. `what` and `option` name the thing and the config
    key that names it, for the errors."""
    if given is not None:
        path = resolve_under(root, given)
        if not exists(path):
            raise DatasetError(f"{dataset}: {what} {path} not found; check \"{option}\"")
        return path
    for name in candidates:
        if exists(root / name):
            return root / name
    raise DatasetError(f"{dataset}: no {what} in {root} (looked for {looked_for}); {hint}")


def find_labels(
    dataset: str, root: Path, labels: Path | str | None, candidates: Sequence[str]
) -> Path:
    """The label file: `labels` when given (relative to root), else the first known name found."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(
            f"{dataset}: folder {root} not found; point --data-root at the folder that holds "
            f"{root.name}/"
        )
    return _find_under(
        dataset, root, labels, candidates, exists=Path.is_file, what="label file",
        option="labels", looked_for=", ".join(candidates),
        hint="copy the dataset's label file there, or name it with \"labels\"",
    )


def find_images_dir(
    dataset: str, root: Path, images: Path | str | None, candidates: Sequence[str]
) -> Path:
    """The image folder: `images` when given (relative to root), else the first known name found."""
    root = Path(root).expanduser().absolute()
    return _find_under(
        dataset, root, images, candidates, exists=Path.is_dir, what="image folder",
        option="images", looked_for=f"{', '.join(candidates)}/",
        hint="unpack the images there, or name their folder with \"images\"",
    )


def find_dataset_files(
    dataset: str,
    root: Path,
    labels: Path | str | None,
    images: Path | str | None,
    label_files: Sequence[str],
    image_folders: Sequence[str],
) -> tuple[Path, Path]:
    """A dataset's label file and image folder under `root` (see find_labels, find_images_dir)."""
    return (
        find_labels(dataset, root, labels, label_files),
        find_images_dir(dataset, root, images, image_folders),
    )


def check_min_votes(dataset: str, min_votes: int) -> None:
    """A reader's min_votes option must allow at least one vote."""
    if int(min_votes) < 1:
        raise DatasetError(f"{dataset}: min_votes must be at least 1, got {min_votes}")


class RowProblems:
    """Bad rows of one label file, each with its line number, reported together at the end."""

    def __init__(self, dataset: str, source: Path, unit: str = "line") -> None:
        self.dataset = dataset
        self.source = source
        self.unit = unit
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def listing(self) -> str:
        lines = [f"  {self.unit} {n}: {message}" for n, message in self.items[:MAX_LISTED]]
        if len(self.items) > MAX_LISTED:
            lines.append(f"  ... and {len(self.items) - MAX_LISTED} more")
        return "\n".join(lines)

    def settle(self, strict: bool) -> None:
        """Raise one DatasetError listing every bad row (strict), or warn that they were skipped."""
        if not self.items:
            return
        count = len(self.items)
        rows = "row" if count == 1 else "rows"
        if strict:
            raise DatasetError(
                f"{self.dataset}: {count} bad {rows} in {self.source}:\n{self.listing()}\n"
                "Fix or delete these rows, or pass strict=False (\"options\": {\"strict\": false} "
                "in a config) to skip them with a warning."
            )
        warnings.warn(
            f"{self.dataset}: skipped {count} bad {rows} in {self.source}:\n{self.listing()}",
            DatasetWarning,
            stacklevel=3,
        )


def parse_number(
    text: str,
    what: str,
    line: int,
    problems: RowProblems,
    low: float | None = None,
    high: float | None = None,
) -> float | None:
    """A finite float within [low, high], or None after noting the problem on `line`."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        problems.add(line, f"{what} {text!r} is not a number")
        return None
    if not math.isfinite(value):
        problems.add(line, f"{what} {text!r} is not a finite number")
        return None
    if low is not None and high is not None and not low <= value <= high:
        problems.add(line, f"{what} {value:g} is outside {low:g}-{high:g}")
        return None
    return value


def read_text(dataset: str, path: Path) -> str:
    """The whole label file as text; a UTF-8 BOM (SPAQ's CSV starts with one) is dropped."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{dataset}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise DatasetError(f"{dataset}: cannot read {path} ({exc.strerror or exc})") from exc


def read_rows(dataset: str, path: Path, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """Non-blank rows of a delimited file, each with the line number it ends on (1-based)."""
    text = read_text(dataset, path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetError(
            f"{dataset}: {path} line {reader.line_num} cannot be parsed ({exc}); fix that line"
        ) from exc
    return rows


def find_columns(
    dataset: str,
    source: Path,
    header: Sequence[str],
    wanted: dict[str, Sequence[str]],
    required: Iterable[str],
) -> dict[str, int]:
    """Column index for each wanted key, matching header names case- and space-insensitively."""
    normalized = [cell.strip().lower() for cell in header]
    found: dict[str, int] = {}
    for key, aliases in wanted.items():
        for alias in aliases:
            if alias.lower() in normalized:
                found[key] = normalized.index(alias.lower())
                break
    for key in required:
        if key not in found:
            raise DatasetError(
                f"{dataset}: {source.name} has no {wanted[key][0]!r} column (its header is "
                f"{', '.join(repr(cell) for cell in header)}); is this the right label file?"
            )
    return found


def header_columns(
    dataset: str,
    source: Path,
    rows: list[tuple[int, list[str]]],
    wanted: dict[str, Sequence[str]],
    required: Iterable[str],
    empty_hint: str = "",
) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The column indices named by a table's header row (find_columns), and the rows below it;
    a table without even a header is an error."""
    if not rows:
        raise DatasetError(f"{dataset}: {source} is empty{empty_hint}")
    return find_columns(dataset, source, rows[0][1], wanted, required), rows[1:]


def cell(row: Sequence[str], index: int | None) -> str:
    """The cell at `index`, or "" when the row is short or the column absent."""
    if index is None or index >= len(row):
        return ""
    return row[index].strip()


class FirstListing:
    """The line each image was first listed on; a later listing of the same image is a bad
    row."""

    def __init__(self, problems: RowProblems) -> None:
        self.problems = problems
        self.lines: dict[str, int] = {}

    def repeated(self, line: int, name: str) -> bool:
        """True, with the problem noted, when `name` was listed before; else remembers `line`."""
        if name in self.lines:
            self.problems.add(
                line,
                f"image {name!r} is listed again (first on {self.problems.unit} "
                f"{self.lines[name]})",
            )
            return True
        self.lines[name] = line
        return False


def image_rows(
    rows: Iterable[tuple[int, list[str]]],
    column: int | None,
    problems: RowProblems,
    missing: str = "no image name",
    unique: bool = True,
) -> Iterator[tuple[int, str, list[str]]]:
    """(line, image name, row) for each row that names an image in `column`; a row without one
    (noted as `missing`) or, when `unique`, naming an image listed before is noted in
    `problems` and left out."""
    listed = FirstListing(problems)
    for line, row in rows:
        name = cell(row, column)
        if not name:
            problems.add(line, missing)
            continue
        if unique and listed.repeated(line, name):
            continue
        yield line, name, row


class FileIndex:
    """Answers "does this file exist" with one directory listing per folder, not one stat per
    image (AVA lists 255,000 images)."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        names = self._names.get(path.parent)
        if names is None:
            try:
                names = set(os.listdir(path.parent))
            except OSError:
                names = set()
            self._names[path.parent] = names
        return path.name in names


def drop_missing(
    dataset: str,
    records: list[Record],
    where: Path,
    listed_in: str,
    allow_missing: bool,
    exists: Callable[[Path], bool] | None = None,
) -> list[Record]:
    """The records whose image exists. Missing images raise one DatasetError with the count and
    the first few names, or (allow_missing) are dropped with a warning; when none exists at all
    the folder is wrong, and that is an error either way."""
    exists = exists or FileIndex().exists
    found = [exists(record.path) for record in records]
    present = [record for record, ok in zip(records, found) if ok]
    missing = [record for record, ok in zip(records, found) if not ok]
    if not missing:
        return records

    def shown(path: Path) -> str:
        try:
            return path.relative_to(where).as_posix()
        except ValueError:
            return str(path)

    names = ", ".join(shown(record.path) for record in missing[:MAX_NAMED])
    if len(missing) > MAX_NAMED:
        names += ", ..."
    hint = "point --data-root at the folder that holds them"
    if not present:
        raise DatasetError(
            f"{dataset}: none of the {len(records)} images listed in {listed_in} is under "
            f"{where} (first: {names}); {hint}"
        )
    message = (
        f"{dataset}: {len(missing)} of {len(records)} images listed in {listed_in} are missing "
        f"under {where} (first: {names})"
    )
    if not allow_missing:
        raise DatasetError(
            f"{message}; {hint}, or pass allow_missing=True (\"allow_missing\": true in a config) "
            "to train without them"
        )
    warnings.warn(f"{message}; going on without them", DatasetWarning, stacklevel=3)
    return present


def class_index(text: str) -> int | None:
    """A class given as a name (rejected, pending, accepted) or as 0/1/2; None if neither."""
    value = text.strip().lower()
    if value in CLASS_INDEX:
        return CLASS_INDEX[value]
    if value in ("0", "1", "2"):
        return int(value)
    return None


CSV_COLUMNS = {
    "path": ("path", "image", "file", "filename", "image_name"),
    "mos": ("mos", "score"),
    "class": ("class", "label"),
}


def read_csv(
    root: Path,
    labels: Path | str | None = None,
    *,
    images: Path | str | None = None,
    mos_range: Sequence[float] = (0.0, 100.0),
    dataset: str = "csv",
    allow_missing: bool = False,
    strict: bool = True,
) -> list[Record]:
    """A generic label table with a header: `path,mos[,class]` (a row may leave mos or class
    empty, not both). Paths are relative to `images` (default: root). MOS is mapped linearly
    from `mos_range` (what the file's scale runs from and to) onto 0-100; class is rejected,
    pending or accepted, by name or as 0/1/2."""
    root = Path(root).expanduser().absolute()
    source = find_labels(dataset, root, labels, ("labels.csv",))
    base = root if images is None else find_images_dir(dataset, root, images, ())
    try:
        low, high = (float(value) for value in mos_range)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{dataset}: mos_range must be two numbers, got {mos_range!r}") from exc
    if not low < high:
        raise DatasetError(f"{dataset}: mos_range {low:g}-{high:g} must run from low to high")

    columns, body = header_columns(
        dataset, source, read_rows(dataset, source), CSV_COLUMNS, ("path",),
        empty_hint="; it needs a header path,mos[,class]",
    )
    if "mos" not in columns and "class" not in columns:
        raise DatasetError(
            f"{dataset}: {source.name} has neither a 'mos' nor a 'class' column; the header must "
            "be path,mos[,class]"
        )
    problems = RowProblems(dataset, source)
    records: list[Record] = []
    for line, name, row in image_rows(body, columns.get("path"), problems, "no image path"):
        mos_text = cell(row, columns.get("mos"))
        class_text = cell(row, columns.get("class"))
        if not mos_text and not class_text:
            problems.add(line, f"{name}: neither a MOS nor a class")
            continue
        raw = mos = None
        if mos_text:
            raw = parse_number(mos_text, "MOS", line, problems, low, high)
            if raw is None:
                continue
            mos = (raw - low) / (high - low) * 100.0
        label = None
        if class_text:
            label = class_index(class_text)
            if label is None:
                problems.add(
                    line,
                    f"class {class_text!r} is not one of rejected, pending, accepted (or 0, 1, 2)",
                )
                continue
        records.append(
            Record(path=resolve_under(base, name), dataset=dataset, mos=mos, label=label,
                   raw_score=raw)
        )
    problems.settle(strict)
    return drop_missing(dataset, records, base, source.name, allow_missing)
