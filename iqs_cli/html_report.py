"""The report page (`iqs report`, `iqs cull --report`): one self-contained HTML file to look at
the verdicts and correct them.

Every shot is a tile (thumbnail, label as a word and an icon, MOS, stars, reasons, burst
group, where `iqs cull` moved it); the page filters, sorts, shows one photo large, and lets a
person set labels with the keyboard and save them as a changes file for `iqs apply`
(apply.py holds its format). Everything is inline: thumbnails are small JPEG data URIs, the
style and script come from `report_page/` (package data); the page makes no requests. The
large view shows the thumbnail at once and the original through a file:// link when the
browser can show it (JPEG, PNG, WebP), so the page stays small.

What goes in: the results where the files are now (`ReportShot`), made by workflow.py from
the normal scoring path (the results cache). Shots `iqs cull` moved out of a folder's walk
are found in its journals (`moved_files`); a person's labels in the sidecars (`person_label`)
are shown over iqs's, as every iqs run keeps them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from iqs_cli import xmp
from iqs_cli.apply import CHANGES_FORMAT, CHANGES_VERSION
from iqs_cli.decode import DecodeError, load_rgb
from iqs_cli.fsutil import write_atomic
from iqs_cli.journal import JournalError, journals, read_journal
from iqs_cli.result import ShotResult
from iqs_cli.verdict import STARS_BY_LABEL
from iqs_cli.vocabulary import CLASSES

# Long side in pixels: the tiles' ~180 CSS px on a 1x screen; 2,000 varied photos make an
# 18 MB page (256 px: 28 MB; bench/report_size.py).
THUMB_SIZE = 192
THUMB_QUALITY = 70
# What a browser shows from a file:// link (the large view loads the original for these).
BROWSER_VIEWABLE = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".avif"})
PAGE_ASSETS = "report_page"


@dataclass
class ReportShot:
    result: ShotResult  # paths are where the files are now
    moved_from: str | None = None  # where the scored file was before `iqs cull` moved it
    person: dict | None = None  # a person's label in the sidecar: {"label", "rating"}


@dataclass
class Page:
    html: str
    shots: int
    thumbnail_errors: list[str] = field(default_factory=list)  # one message per failed thumbnail


# ---------------------------------------------------------------------------------------------
# Where shots went, and whose labels they carry


def moved_files(root: Path | str) -> tuple[dict[str, str], list[str]]:
    """Files `iqs cull` moved under `root` (to _rejected/ or --to) that are still where it put
    them: ({current absolute path: original absolute path}, warnings about journals that
    cannot be read). Runs undone, moves that failed, were put back or reverted are left out;
    a later run's move of the same file wins."""
    root = Path(root).expanduser().resolve()
    moved: dict[str, str] = {}
    warnings = []
    for path in journals(root):
        try:
            entries = read_journal(path)
        except JournalError as exc:
            warnings.append(f"{exc}; the report does not show the shots that run moved")
            continue
        if any(e.get("op") == "undone" for e in entries):
            continue
        ended = {op: {e.get("id") for e in entries if e.get("op") == op}
                 for op in ("done", "returned", "reverted")}
        for entry in entries:
            step = entry.get("id")
            if entry.get("op") != "move" or step not in ended["done"] \
                    or step in ended["returned"] or step in ended["reverted"]:
                continue
            src, dst = entry.get("src"), entry.get("dst")
            if not isinstance(src, str) or not isinstance(dst, str):
                continue
            src, dst = (os.path.normpath(os.path.join(root, p)) for p in (src, dst))
            moved[dst] = moved.pop(src, src)  # moved twice: keep where it first was
    return {dst: src for dst, src in moved.items() if os.path.lexists(dst)}, warnings


def after_moves(results: list[ShotResult], moves: dict[str, str]) -> list[ReportShot]:
    """`results` scored before a cull moved some of their files (`moves`: original path ->
    new path), as shots where the files are now."""
    shots = []
    for result in results:
        if result.path in moves:
            moved = replace(result, path=moves[result.path],
                            files=[moves.get(f, f) for f in result.files])
            shots.append(ReportShot(moved, moved_from=result.path))
        else:
            shots.append(ReportShot(result))
    return shots


def person_label(result: ShotResult) -> dict | None:
    """A pick label a person set for the shot (in digiKam, or with `iqs apply`), read from the
    sidecar of its first file that has one; None when the labels there are iqs's own, or when
    none can be read (the page then shows iqs's verdict)."""
    for name in result.files or [result.path]:
        for sidecar in xmp.existing_sidecars(name):
            try:
                labels = xmp.read_labels(sidecar)
            except xmp.XmpError:
                continue
            pick = labels.get("pick")
            if not labels.get("by_iqs") and pick in (1, 2, 3):
                return {"label": CLASSES[int(pick) - 1], "rating": labels.get("rating")}
            return None
    return None


# ---------------------------------------------------------------------------------------------
# Thumbnails


def thumbnail(path: str, size: int = THUMB_SIZE, quality: int = THUMB_QUALITY) -> str:
    """A JPEG data URI of `path`, its long side `size` pixels (decode.load_rgb: JPEG draft
    mode, EXIF orientation, RAW previews). Raises DecodeError."""
    image = load_rgb(Path(path), max(1, size * 2 // 3))
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnails(paths: list[str], size: int, workers: int | None) -> list[str | DecodeError | None]:
    def one(path: str):
        if not path:
            return None  # a shot that failed to score has nothing to show
        try:
            return thumbnail(path, size)
        except DecodeError as exc:
            return exc

    # Pillow decodes outside the GIL: threads use the cores.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(one, paths))


# ---------------------------------------------------------------------------------------------
# The page


def _relative(path: str, base: str | None) -> str:
    if base:
        try:
            relative = os.path.relpath(path, base)
        except ValueError:
            return path
        if not relative.startswith(".."):
            return Path(relative).as_posix()
    return path


def _groups(shots: list[ReportShot]) -> dict:
    """Burst group id -> number of shots in it (burst fields may not exist yet: getattr)."""
    sizes: dict = {}
    for shot in shots:
        group = getattr(shot.result, "group", None)
        if group is not None:
            sizes[group] = sizes.get(group, 0) + 1
    return sizes


def _record(index: int, shot: ReportShot, base: str | None, wording: dict[str, str],
            thumb, sizes: dict) -> dict:
    result = shot.result
    shown_from = shot.moved_from or result.path
    record = {
        "id": index,
        "name": _relative(shown_from, base),
        "path": result.path,
        "files": list(result.files or [result.path]),
        "others": [Path(f).suffix.lstrip(".").upper() for f in result.files
                   if f != result.path],
        "label": result.label,
        "mos": None if result.mos is None else round(float(result.mos), 1),
        "stars": result.stars,
        "reasons": [wording.get(r, r) for r in result.reasons],
        "probabilities": {k: round(float(v), 3) for k, v in result.probabilities.items()},
        "error": result.error,
        "thumb": thumb if isinstance(thumb, str) else None,
        "thumb_error": str(thumb) if isinstance(thumb, DecodeError) else None,
        "person": shot.person,
    }
    if Path(result.path).suffix.lower() in BROWSER_VIEWABLE:
        record["url"] = Path(result.path).as_uri()
    if shot.moved_from is not None:
        record["moved_to"] = _relative(result.path, base)
        record["moved_from"] = _relative(shot.moved_from, base)
    group = getattr(result, "group", None)
    if group is not None:
        best = getattr(result, "group_best", None)
        record.update(group=str(group), group_rank=getattr(result, "group_rank", None),
                      group_size=sizes.get(group),
                      group_best=_relative(best, base) if best else None)
    return record


def _asset(name: str) -> str:
    return resources.files("iqs_cli").joinpath(PAGE_ASSETS, name).read_text(encoding="utf-8")


def _script_json(data) -> str:
    """JSON safe inside <script>: no '</' can end the element, no '<!--' open a comment."""
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def build_page(shots: list[ReportShot], roots: list[Path], *, wording: dict[str, str] | None =
               None, thumb_size: int = THUMB_SIZE, workers: int | None = None,
               now: datetime | None = None) -> Page:
    """The report page for `shots` (the folders it covers: `roots`, which the changes file
    names for `iqs apply`)."""
    now = now or datetime.now(timezone.utc)
    roots = [Path(os.path.abspath(r)) for r in roots]
    try:
        base = os.path.commonpath([str(r) for r in roots]) if roots else None
    except ValueError:
        base = None
    thumbs = _thumbnails([s.result.path if s.result.ok else "" for s in shots], thumb_size,
                         workers)
    sizes = _groups(shots)
    records = [_record(i, shot, base, wording or {}, None if not shot.result.ok else thumb,
                       sizes) for i, (shot, thumb) in enumerate(zip(shots, thumbs))]
    errors = [f"{s.result.path}: no thumbnail ({t})" for s, t in zip(shots, thumbs)
              if s.result.ok and isinstance(t, DecodeError)]
    judged = next((s.result for s in shots if s.result.ok and s.result.model), None)
    model = (f"{judged.model} {judged.model_version or ''}".strip() if judged else "no model")
    title = f"iqs report: {len(shots)} shot{'s' if len(shots) != 1 else ''} in {base or 'several places'}"
    data = {
        "title": title,
        "model": model,
        "made": now.isoformat(timespec="seconds"),
        "roots": [str(r) for r in roots],
        "base": base,
        "cached": sum(1 for s in shots if s.result.cached),
        "format": CHANGES_FORMAT,
        "version": CHANGES_VERSION,
        "stars_by_label": STARS_BY_LABEL,
        "shots": records,
    }
    page = (_asset("page.html")
            .replace("{{TITLE}}", html.escape(title))
            .replace("/*{{CSS}}*/", _asset("page.css"))
            .replace("{{DATA}}", _script_json(data))
            .replace("/*{{JS}}*/", _asset("page.js")))
    return Page(page, len(shots), errors)


def write_page(page: Page, path: Path) -> None:
    """Write the page whole or not at all (raises OSError)."""
    write_atomic(Path(path), page.html)
